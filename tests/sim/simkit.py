"""Host-side AN3155 frame builders and model helpers for the sim tests (protocols.md §1.4)."""

from __future__ import annotations

import time

import serial

from drivers.crc import xor8
from sim.an3155 import ACK, SYNC, An3155Hub, Emit, Output


def cmd(code: int) -> bytes:
    """A command and its complement."""
    return bytes([code, code ^ 0xFF])


def addr(address: int) -> bytes:
    """Four address bytes MSB first plus their XOR."""
    raw = address.to_bytes(4, "big")
    return raw + bytes([xor8(raw)])


def count(n: int) -> bytes:
    """A Read Memory length (N = n-1) and its complement."""
    return bytes([n - 1, (n - 1) ^ 0xFF])


def data_frame(data: bytes) -> bytes:
    """N, the data, XOR(N, data) as Write Memory sends them."""
    n = len(data) - 1
    return bytes([n]) + data + bytes([xor8(data, n)])


def write_frame(address: int, data: bytes) -> bytes:
    """A whole Write Memory exchange, host side."""
    return cmd(0x31) + addr(address) + data_frame(data)


def read_frame(address: int, n: int) -> bytes:
    """A whole Read Memory exchange, host side."""
    return cmd(0x11) + addr(address) + count(n)


def ext_erase_frame(pages: list[int]) -> bytes:
    """A whole Extended Erase of pages, host side."""
    body = (len(pages) - 1).to_bytes(2, "big") + b"".join(p.to_bytes(2, "big") for p in pages)
    return cmd(0x44) + body + bytes([xor8(body)])


def checksum_frame(address: int, length: int) -> bytes:
    """A whole Get Checksum exchange, host side (stm32flash framing)."""
    raw = length.to_bytes(4, "big")
    return cmd(0xA1) + addr(address) + raw + bytes([xor8(raw)])


def sent(outputs: list[Output]) -> bytes:
    """Everything the device put on the line."""
    return b"".join(o.data for o in outputs if isinstance(o, Emit))


def synced(device: An3155Hub | None = None) -> An3155Hub:
    """A powered, synchronised device."""
    device = device or An3155Hub()
    device.power_on()
    assert sent(device.feed(bytes([SYNC]))) == bytes([ACK])
    return device


# --- real serial ports -------------------------------------------------------------------------


def read_n(port: serial.Serial, n: int, timeout_s: float = 2.0) -> bytes:
    """Read until ``n`` bytes came or ``timeout_s`` passed (port opened with a short timeout)."""
    deadline = time.monotonic() + timeout_s
    got = bytearray()
    while len(got) < n and time.monotonic() < deadline:
        got += port.read(n - len(got))
    return bytes(got)


def read_line(port: serial.Serial, timeout_s: float = 2.0) -> bytes:
    """One line (up to LF) or whatever came before ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    got = bytearray()
    while not got.endswith(b"\n") and time.monotonic() < deadline:
        got += port.read_until(b"\n")
    return bytes(got)


def ask(port: serial.Serial, line: bytes, prefix: bytes, tries: int = 10) -> bytes:
    """Send a console line until an answer starting with ``prefix`` comes back.

    A hub whose application is still starting does not listen yet, so real hosts retry.
    """
    for _ in range(tries):
        port.write(line)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            answer = read_line(port, deadline - time.monotonic())
            if answer.startswith(prefix):
                return answer
    raise AssertionError(f"no answer starting {prefix!r} to {line!r}")


def open_port(path: str, parity: str = serial.PARITY_EVEN) -> serial.Serial:
    """Open a hub's port as a host would; a short timeout, never changed after opening
    (on Linux a pty refuses any later termios change that only re-requests PARENB)."""
    return serial.Serial(path, 115200, parity=parity, timeout=0.05)

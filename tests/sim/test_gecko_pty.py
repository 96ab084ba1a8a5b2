"""The simulated Gecko hub on a real pseudo-terminal: a plain program uploads through it, the
pacing is never faster than the wire, alarms and deaf waits are paced, and ``station sim
--protocol gecko`` serves it."""

from __future__ import annotations

import binascii
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator

import pytest

from sim.cli import rig_specs, start_rig, stop_hubs
from sim.gecko import APP_BASE, APP_MAX_SIZE, GeckoHub, demo_gbl, menu_text
from sim.pty import HubSpec, Pacer, SimHub

StartHub = Callable[..., SimHub]
MENU = menu_text()
NEW = 0x0105_0000
BT = 10 / 115200


# --- a plain program: raw os.read/os.write on the pty, its own XMODEM ----------------------


class PlainTerminal:
    """What any program does with a serial port: open it raw and move bytes."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        attrs[4] = attrs[5] = termios.B115200
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.buffer = b""

    def close(self) -> None:
        os.close(self.fd)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def until(self, marker: bytes, timeout_s: float = 5.0) -> bytes:
        """Read until ``marker`` has come; returns everything up to and including it."""
        deadline = time.monotonic() + timeout_s
        while marker not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} in {self.buffer[-200:]!r}")
            if select.select([self.fd], [], [], left)[0]:
                self.buffer += os.read(self.fd, 4096)
        end = self.buffer.index(marker) + len(marker)
        got, self.buffer = self.buffer[:end], self.buffer[end:]
        return got

    def byte(self, timeout_s: float = 5.0) -> int:
        if not self.buffer and select.select([self.fd], [], [], timeout_s)[0]:
            self.buffer += os.read(self.fd, 4096)
        assert self.buffer, "no answer"
        first, self.buffer = self.buffer[0], self.buffer[1:]
        return first


def plain_xmodem_send(term: PlainTerminal, data: bytes) -> None:
    """XMODEM-CRC as Forsberg describes it, written here from the spec, not our driver."""
    while term.byte() != 0x43:  # wait for 'C'
        pass
    padded = data + b"\x1a" * (-len(data) % 128)
    for index in range(len(padded) // 128):
        number = (index + 1) % 256
        chunk = padded[index * 128 : (index + 1) * 128]
        crc = binascii.crc_hqx(chunk, 0)  # CRC-CCITT, init 0: CRC-16/XMODEM
        term.send(bytes([0x01, number, 255 - number]) + chunk + crc.to_bytes(2, "big"))
        while (answer := term.byte()) == 0x43:  # a late 'C'
            pass
        assert answer == 0x06, f"block {index + 1}: answer 0x{answer:02X}"
    term.send(b"\x04")
    assert term.byte() == 0x06


@pytest.fixture
def terminal() -> Iterator[Callable[[str], PlainTerminal]]:
    opened: list[PlainTerminal] = []

    def open_terminal(path: str) -> PlainTerminal:
        term = PlainTerminal(path)
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def test_a_plain_program_uploads_and_runs_the_application(
    start_hub: StartHub, terminal: Callable[[str], PlainTerminal]
) -> None:
    hub = start_hub(protocol="gecko", paced=False, firmware=0x0101_0000, firmware_size=4096)
    assert hub.info()["profile"] == "demo-gecko" and hub.mode == "bootloader"
    term = terminal(hub.port)
    term.send(b"3")  # the probe universal-silabs-flasher uses
    assert term.until(b"BL > \x00").endswith(MENU)
    term.send(b"1")
    assert term.until(b"\r\nbegin upload\r\n\x00")
    plain_xmodem_send(term, demo_gbl(NEW, size=8192))
    assert term.until(b"BL > \x00") == b"\r\nSerial upload complete\r\n\x00" + MENU
    term.send(b"2")
    assert term.until(b"READY\r\n") == b"CHUB APP 0x01050000 READY\r\n"
    term.send(b"VER?\r\n")
    assert term.until(b"\r\n") == b"VER 0x01050000\r\n"


def test_paced_hub_is_never_faster_than_the_wire(
    start_hub: StartHub, terminal: Callable[[str], PlainTerminal]
) -> None:
    hub = start_hub(protocol="gecko", paced=True, firmware=None)
    term = terminal(hub.port)
    start = time.monotonic()
    term.send(b"\n")
    term.until(b"BL > \x00")
    assert time.monotonic() - start >= (1 + len(MENU)) * BT  # one byte in, the menu out
    term.send(b"1")
    term.until(b"C")
    frame_data = demo_gbl(NEW, size=1024)[:128]
    frame = bytes([1, 1, 254]) + frame_data + binascii.crc_hqx(frame_data, 0).to_bytes(2, "big")
    start = time.monotonic()
    term.send(frame)
    assert term.byte() == 0x06
    # 133 bytes in, the first page erased and the block's words written, the ACK out.
    words = (128 - 64) // 4  # HEADER, APP_INFO and the program tag's head: 64 bytes
    floor = 133 * BT + 15e-3 + words * 55e-6 + BT
    assert time.monotonic() - start >= floor


def test_pacer_alarms_repeat_c_and_give_way_to_input() -> None:
    device = GeckoHub()
    pacer = Pacer(device, baud=115200, latency_s=0.001, bits_per_byte=10)
    pacer.start(0.0)
    while (due := pacer.next_due()) is not None and due < 0.1:
        pacer.pop_due(due)
    pacer.receive(b"1", 1.0)
    got: list[tuple[float, bytes | None]] = []
    while (due := pacer.next_due()) is not None and due < 3.5:
        got += [(due, d) for d in pacer.pop_due(due)]
    cs = [t for t, d in got if d == b"C"]
    assert len(cs) == 3  # 5 ms after "begin upload", then every second
    assert cs[0] == pytest.approx(1.0 + BT + 0.005 + BT + 0.001)
    assert cs[2] - cs[1] == cs[1] - cs[0] == pytest.approx(1.0)
    # A byte that arrives before the alarm is due cancels it: no more 'C'.
    pacer.receive(b"\x01", 3.6)
    assert pacer.next_due() == pytest.approx(3.6 + BT + 3.0)


def test_unpaced_hub_keeps_protocol_timeouts(start_hub: StartHub) -> None:
    hub = start_hub(protocol="gecko", paced=False, firmware=None)
    term = PlainTerminal(hub.port)
    try:
        term.send(b"1")
        term.until(b"C")
        start = time.monotonic()
        term.until(b"C", timeout_s=3.0)
        assert time.monotonic() - start >= 0.9  # the second 'C' a second later
    finally:
        term.close()


def test_specs_and_validation() -> None:
    specs = rig_specs(2, protocol="gecko", firmware=7, start_in="app", paced=False)
    assert [(s.protocol, s.profile, s.bits_per_byte) for s in specs] == [
        ("gecko", "demo-gecko", 10)
    ] * 2
    assert HubSpec(slot=1, eui64="00-DB-12-34-56-78-90-A0", protocol="an3155").bits_per_byte == 11
    with pytest.raises(ValueError, match="protocol"):
        HubSpec(slot=1, eui64="00-DB-12-34-56-78-90-A0", protocol="dfu")
    with pytest.raises(ValueError, match=str(APP_MAX_SIZE)):
        HubSpec(slot=1, eui64="00-DB-12-34-56-78-90-A0", protocol="gecko", firmware_size=1 << 20)
    device = specs[0].build_device()
    assert isinstance(device, GeckoHub) and not device.start_in_bootloader
    assert device.application() is not None
    assert device.app_bytes(4) != b"\xff" * 4 and device.flash.read(0, 4) == b"\xff" * 4
    assert APP_BASE == 0x4000


def test_start_rig_gecko() -> None:
    hubs = start_rig(2, protocol="gecko", paced=False, firmware=0x0101_0000, start_in="app")
    try:
        assert [h.info()["profile"] for h in hubs] == ["demo-gecko"] * 2
        assert [h.mode for h in hubs] == ["app", "app"]
    finally:
        stop_hubs(hubs)


def test_station_sim_protocol_gecko() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "--protocol", "gecko", "--hubs", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["profile"] == "demo-gecko" and line["firmware"] is None
        term = PlainTerminal(line["port"])
        try:
            term.send(b"\n")
            assert term.until(b"BL > \x00").endswith(MENU)
        finally:
            term.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

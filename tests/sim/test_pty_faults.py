"""Every fault kind, observed the way a host sees it: through real pyserial."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
import serial
from simkit import cmd, read_frame, read_n, write_frame

from sim.an3155 import FLASH_BASE
from sim.pty import SimHub

Y, N = b"\x79", b"\x1f"
GET_ID = bytes.fromhex("79 01 04 62 79")
StartHub = Callable[..., SimHub]
OpenSerial = Callable[..., serial.Serial]


def block(i: int) -> bytes:
    return bytes([i]) * 256


def synced_port(hub: SimHub, open_serial: OpenSerial) -> serial.Serial:
    port = open_serial(hub.port)
    port.write(b"\x7f")
    assert read_n(port, 1) == Y
    return port


def test_nack_for_the_planned_blocks_only(start_hub: StartHub, open_serial: OpenSerial) -> None:
    hub = start_hub(paced=False, faults="nack=1x2")
    port = synced_port(hub, open_serial)
    port.write(write_frame(FLASH_BASE, block(0)))
    assert read_n(port, 3) == Y * 3
    for _ in range(2):
        port.write(write_frame(FLASH_BASE + 256, block(1)))
        assert read_n(port, 3) == Y + Y + N
    port.write(write_frame(FLASH_BASE + 256, block(1)))
    assert read_n(port, 3) == Y * 3
    port.write(read_frame(FLASH_BASE + 256, 256))
    assert read_n(port, 259) == Y * 3 + block(1)


def test_faults_for_another_slot_do_not_apply(start_hub: StartHub, open_serial: OpenSerial) -> None:
    hub = start_hub(paced=False, faults="2:nack=0")
    port = synced_port(hub, open_serial)
    port.write(write_frame(FLASH_BASE, block(0)))
    assert read_n(port, 3) == Y * 3


def test_lostack_programs_but_the_ack_never_comes(
    start_hub: StartHub, open_serial: OpenSerial
) -> None:
    hub = start_hub(paced=False, faults="lostack=0")
    port = synced_port(hub, open_serial)
    port.write(write_frame(FLASH_BASE, block(9)))
    assert read_n(port, 3, timeout_s=0.3) == Y + Y
    port.write(read_frame(FLASH_BASE, 256))
    assert read_n(port, 259) == Y * 3 + block(9)


def test_stall_ignores_input_then_recovers(start_hub: StartHub, open_serial: OpenSerial) -> None:
    hub = start_hub(paced=False, faults="stall=0:0.6")
    port = synced_port(hub, open_serial)
    stalled_at = time.monotonic()
    port.write(write_frame(FLASH_BASE, block(1)))
    assert read_n(port, 3, timeout_s=0.2) == Y + Y
    port.write(cmd(0x02))
    assert read_n(port, 5, timeout_s=0.2) == b""  # ignored, not queued
    answer = b""
    while not answer and time.monotonic() - stalled_at < 3.0:
        port.write(cmd(0x02))
        answer = read_n(port, 5, timeout_s=0.1)
    assert answer == GET_ID
    assert time.monotonic() - stalled_at >= 0.6
    port.write(read_frame(FLASH_BASE, 4))
    assert read_n(port, 7) == Y * 3 + b"\xff" * 4  # the stalled block was not programmed


def test_stall_forever(start_hub: StartHub, open_serial: OpenSerial) -> None:
    hub = start_hub(paced=False, faults="stall=0")
    port = synced_port(hub, open_serial)
    port.write(write_frame(FLASH_BASE, block(1)))
    assert read_n(port, 3, timeout_s=0.2) == Y + Y
    port.write(b"\x7f" + cmd(0x02))
    assert read_n(port, 1, timeout_s=0.3) == b""
    assert hub.alive


def test_powerloss_half_programs_and_the_next_sync_is_fresh(
    start_hub: StartHub, open_serial: OpenSerial
) -> None:
    hub = start_hub(paced=False, faults="powerloss=1")
    port = synced_port(hub, open_serial)
    port.write(write_frame(FLASH_BASE, block(1)))
    assert read_n(port, 3) == Y * 3
    port.write(write_frame(FLASH_BASE + 256, block(2)))
    assert read_n(port, 3, timeout_s=0.3) == Y + Y
    port.write(b"\x7f")
    assert read_n(port, 1) == Y  # a synced bootloader would wait for a complement instead
    port.write(read_frame(FLASH_BASE + 256, 256))
    assert read_n(port, 259) == Y * 3 + block(2)[:128] + b"\xff" * 128
    port.write(write_frame(FLASH_BASE + 256, block(2)))
    assert read_n(port, 3) == Y + Y + N  # half-programmed: must be erased first


def test_vanish_closes_the_port_under_the_host(
    start_hub: StartHub, open_serial: OpenSerial
) -> None:
    hub = start_hub(paced=False, faults="vanish=0")
    port = synced_port(hub, open_serial)
    port.write(write_frame(FLASH_BASE, block(1)))
    got = b""
    with pytest.raises((serial.SerialException, OSError)):
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            got += port.read(1)
    # The command and address ACKs left just before; like a pulled cable, the hangup may
    # take bytes still in the pty with it.
    assert (Y + Y).startswith(got)
    deadline = time.monotonic() + 3.0
    while (hub.alive or os.path.exists(hub.port)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not hub.alive
    assert not os.path.exists(hub.port)
    with pytest.raises(serial.SerialException):
        serial.Serial(hub.port, 115200)


@pytest.mark.parametrize("faults", ["drop=1", "corrupt=1"])
def test_byte_faults_break_the_sync(
    start_hub: StartHub, open_serial: OpenSerial, faults: str
) -> None:
    hub = start_hub(paced=False, faults=faults)
    port = open_serial(hub.port)
    port.write(b"\x7f" * 5)  # every 0x7F is lost or arrives with a bit flipped
    assert read_n(port, 1, timeout_s=0.3) == b""


def test_corruption_is_seeded(start_hub: StartHub, open_serial: OpenSerial) -> None:
    replies = []
    for slot in (1, 1):
        hub = start_hub(slot=slot, paced=False, faults="corrupt=0.5", seed=3)
        port = open_serial(hub.port)
        port.write(b"\x7f" * 40)
        replies.append(read_n(port, 64, timeout_s=0.3))
        hub.stop()
    assert replies[0] == replies[1]
    assert replies[0]  # some 0x7F got through and were answered

"""The simulated application: boots only from a valid descriptor and CRC; its console."""

from __future__ import annotations

import struct

import pytest
from simkit import addr, cmd, sent, synced, write_frame

from firmware_images.build import demo_payload
from firmware_images.descriptor import DESCRIPTOR_OFFSET
from sim.an3155 import (
    ACK,
    APP_START_S,
    FLASH_BASE,
    FLASH_SIZE,
    An3155Hub,
    Emit,
    Mode,
    Output,
    Timer,
)

VERSION = 0x01020304
BANNER = b"CHUB APP 0x01020304 READY\r\n"


def flash_through_bootloader(device: An3155Hub, payload: bytes) -> None:
    """Write ``payload`` at 0x08000000 with Write Memory blocks of 256 bytes."""
    for offset in range(0, len(payload), 256):
        out = device.feed(write_frame(FLASH_BASE + offset, payload[offset : offset + 256]))
        assert sent(out) == bytes([ACK]) * 3


def go(device: An3155Hub) -> list[Output]:
    return device.feed(cmd(0x21) + addr(FLASH_BASE))


def app_device(*, strapped: bool = True) -> An3155Hub:
    device = An3155Hub(boot_pin_strapped=strapped)
    device.flash.program(FLASH_BASE, demo_payload(VERSION, size=4096))
    return device


def test_go_starts_a_valid_application_after_its_start_time() -> None:
    device = synced()
    flash_through_bootloader(device, demo_payload(VERSION, size=4096))
    out = go(device)
    assert sent(out) == b"\x79\x79"
    timer = out[-1]
    assert isinstance(timer, Timer)
    assert timer.delay_s == APP_START_S
    assert device.mode is Mode.STARTING
    assert device.feed(b"VER?\r\n") == []  # not listening yet
    assert device.timer_expired(timer.token) == [Emit(-1, 0.0, BANNER)]
    assert device.mode is Mode.APP
    assert device.running_app is not None
    assert device.running_app.firmware_version == VERSION


@pytest.mark.parametrize("where", [0, 4, DESCRIPTOR_OFFSET + 12, DESCRIPTOR_OFFSET + 24, 4095])
def test_one_flipped_byte_means_no_boot_and_a_watchdog_reset(where: int) -> None:
    payload = bytearray(demo_payload(VERSION, size=4096))
    payload[where] ^= 0x01
    device = synced()
    flash_through_bootloader(device, bytes(payload))
    assert device.application() is None
    out = go(device)
    timer = out[-1]
    assert isinstance(timer, Timer) and timer.delay_s == pytest.approx(0.1)
    assert device.mode is Mode.FAULTED
    assert device.settle() == []
    assert device.mode is Mode.WAIT_SYNC  # back in the bootloader, not synced
    assert sent(device.feed(b"\x7f")) == b"\x79"


def test_descriptor_length_beyond_flash_never_boots() -> None:
    payload = bytearray(demo_payload(VERSION, size=4096))
    struct.pack_into("<I", payload, DESCRIPTOR_OFFSET + 20, FLASH_SIZE + 4)
    device = app_device()
    device.flash.mass_erase()
    device.flash.program(FLASH_BASE, bytes(payload))
    assert device.application() is None


def test_blank_flash_has_no_application() -> None:
    assert An3155Hub().application() is None


def test_reset_behaviour_follows_the_boot_pin() -> None:
    strapped = app_device(strapped=True)
    assert strapped.power_on() == []
    assert strapped.mode is Mode.WAIT_SYNC
    free = app_device(strapped=False)
    out = free.power_on()
    assert [type(o) for o in out] == [Timer]
    assert free.mode is Mode.STARTING
    assert sent(free.settle()) == BANNER
    blank = An3155Hub(boot_pin_strapped=False)
    assert blank.power_on() == []
    assert blank.mode is Mode.WAIT_SYNC


def running(strapped: bool = True) -> An3155Hub:
    device = app_device(strapped=strapped)
    device.power_on()
    device.feed(b"\x7f")
    device.feed(cmd(0x21) + addr(FLASH_BASE))
    device.settle()
    assert device.mode is Mode.APP
    return device


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        (b"VER?\r\n", b"VER 0x01020304\r\n"),
        (b"EUI?\n", b"EUI 00-DB-12-34-56-78-90-A0\r\n"),
        (b"HW?\r", b"HW 2\r\n"),
        (b"HELLO\r\n", b"ERR unknown command\r\n"),
        (b"\x00V\xffER?\x7f\r\n", b"VER 0x01020304\r\n"),  # non-printables are ignored
        (b"\r\n\r\n", b""),  # empty lines are no commands
    ],
)
def test_console_answers(line: bytes, answer: bytes) -> None:
    assert sent(running().feed(line)) == answer


def test_console_lines_in_one_chunk_are_answered_in_order() -> None:
    out = running().feed(b"VER?\rHW?\nEUI?\r\n")
    assert [o.data for o in out if isinstance(o, Emit)] == [
        b"VER 0x01020304\r\n",
        b"HW 2\r\n",
        b"EUI 00-DB-12-34-56-78-90-A0\r\n",
    ]
    assert [o.after_index for o in out] == [4, 8, 13]


def test_console_reports_the_identity_area() -> None:
    device = An3155Hub(eui64="00-DB-12-AA-BB-CC-DD-EE", hw_version=3)
    device.flash.program(FLASH_BASE, demo_payload(VERSION, size=4096))
    device.power_on()
    device.feed(b"\x7f" + cmd(0x21) + addr(FLASH_BASE))
    device.settle()
    assert sent(device.feed(b"EUI?\r\nHW?\r\n")) == b"EUI 00-DB-12-AA-BB-CC-DD-EE\r\nHW 3\r\n"


def test_boot_jumps_to_the_bootloader_not_synced() -> None:
    device = running(strapped=False)
    out = device.feed(b"BOOT\r\n\x7f" + cmd(0x02))
    assert sent(out) == b"OK BOOT\r\n" + b"\x79" + bytes.fromhex("79 01 04 62 79")
    assert device.mode is Mode.BOOTLOADER


def test_a_long_line_is_cut_and_rejected() -> None:
    assert sent(running().feed(b"V" * 1000 + b"\r\n")) == b"ERR unknown command\r\n"

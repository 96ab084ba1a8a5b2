"""The pure Gecko hub model: menu, XMODEM receiver, GBL checks, flash, console, faults."""

from __future__ import annotations

import struct

import pytest

from drivers.crc import crc32
from drivers.xmodem import ACK, CAN, EOT, NAK, encode_block, frames, pad_block
from firmware_images import gbl
from sim.an3155 import Emit, Timer, Vanish
from sim.faults import fault_plan
from sim.gecko import (
    APP_BASE,
    BEGIN_UPLOAD,
    PAGE_ERASE_S,
    PAGE_SIZE,
    START_REQUESTS,
    UPLOAD_COMPLETE,
    WORD_WRITE_S,
    Alarm,
    GeckoHub,
    Mode,
    abort_text,
    demo_app,
    demo_gbl,
    menu_text,
)
from tests.xmodemkit import sent

MENU = b"\r\nGecko Bootloader v2.04.02\r\n1. upload gbl\r\n2. run\r\n3. ebl info\r\nBL > \x00"
NEW = 0x0105_0000
APP = demo_app(NEW, size=2048)
FILE = demo_gbl(NEW, size=2048)


def menu_hub(**kwargs: object) -> GeckoHub:
    hub = GeckoHub(**kwargs)  # type: ignore[arg-type]
    hub.power_on()
    assert sent(hub.settle()) == MENU
    return hub


def receiving(**kwargs: object) -> GeckoHub:
    hub = menu_hub(**kwargs)
    assert sent(hub.feed(b"1")) == BEGIN_UPLOAD
    assert sent(hub.settle()) == b"C"
    assert hub.mode is Mode.RECEIVING
    return hub


def upload(hub: GeckoHub, data: bytes) -> bytes:
    """Every answer to the file's blocks, then to EOT, then the result text."""
    answers = b"".join(sent(hub.feed(frame)) for frame in frames(data))
    return answers + sent(hub.feed(bytes([EOT]))) + sent(hub.settle())


def with_gbl_crc(body: bytes) -> bytes:
    """``body`` (tags up to, not including, END) finished with a correct END tag."""
    head = body + struct.pack("<II", gbl.TAG_END, 4)
    return head + struct.pack("<I", crc32(head))


def test_menu_text_is_the_reference_text_and_its_nul() -> None:
    assert menu_text() == MENU
    assert MENU.startswith(
        b"\r\nGecko Bootloader v2.04.02\r\n1. upload gbl\r\n2. run\r\n3. ebl info\r\nBL > "
    )


def test_keys_other_than_1_and_2_show_the_menu_again() -> None:
    hub = menu_hub()
    assert sent(hub.feed(b"3")) == MENU
    assert sent(hub.feed(b"\r\n")) == MENU * 2
    assert sent(hub.feed(b"x")) == MENU


def test_a_whole_upload_programs_the_app_and_it_runs() -> None:
    hub = receiving()
    result = upload(hub, FILE)
    blocks = -(-len(FILE) // 128)
    assert result == bytes([ACK]) * (blocks + 1) + UPLOAD_COMPLETE + MENU
    assert hub.app_bytes(len(APP)) == APP
    assert hub.uploads_completed == 1
    assert hub.application() is not None
    hub.feed(b"2")
    assert sent(hub.settle()) == b"CHUB APP 0x01050000 READY\r\n"
    assert sent(hub.feed(b"VER?\r\nEUI?\r\nHW?\r\nNOPE\r\n")) == (
        b"VER 0x01050000\r\nEUI 00-DB-12-34-56-78-90-A0\r\nHW 2\r\nERR unknown command\r\n"
    )
    assert sent(hub.feed(b"BOOT\r\n")) == b"OK BOOT\r\n"
    assert sent(hub.settle()) == MENU


def test_start_requests_repeat_then_give_up_after_a_minute() -> None:
    hub = receiving()
    alarm = hub.pending_alarm
    assert alarm is not None and alarm.delay_s == 1.0
    for _ in range(START_REQUESTS - 1):
        assert sent(hub.expire()) == b"C"
    assert sent(hub.expire()) == bytes([CAN]) * 3 + MENU
    assert hub.mode is Mode.MENU


def test_input_right_after_begin_upload_is_discarded() -> None:
    hub = menu_hub()
    out = hub.feed(b"1" + bytes([EOT]))  # the EOT reaches a deaf bootloader
    assert sent(out) == BEGIN_UPLOAD and isinstance(out[-1], Timer)
    assert sent(hub.settle()) == b"C"
    assert hub.mode is Mode.RECEIVING


def test_repeated_block_is_acked_and_discarded() -> None:
    hub = receiving()
    first = next(frames(FILE))
    assert sent(hub.feed(first)) == bytes([ACK])
    assert sent(hub.feed(first)) == bytes([ACK])
    assert hub.gbl.received == 128  # parsed once


@pytest.mark.parametrize(("where", "code"), [(1, "22"), (2, "22"), (50, "24"), (132, "23")])
def test_damaged_blocks_are_naked(where: int, code: str) -> None:
    hub = receiving()
    frame = bytearray(next(frames(FILE)))
    frame[where] ^= 0x01
    assert sent(hub.feed(bytes(frame))) == bytes([NAK])
    assert hub.mode is Mode.RECEIVING
    # Ten in a row abort the upload with the last error's code.
    for _ in range(9):
        out = sent(hub.feed(bytes(frame)))
    assert out == bytes([CAN]) * 3
    assert sent(hub.settle()) == abort_text("block", int(code, 16)) + MENU


def test_out_of_sequence_block_is_fatal() -> None:
    hub = receiving()
    blocks = list(frames(FILE))
    assert sent(hub.feed(blocks[0])) == bytes([ACK])
    assert sent(hub.feed(blocks[2])) == bytes([CAN]) * 3
    assert sent(hub.settle()) == abort_text("block", 0x25) + MENU
    assert hub.last_error == "block number 3, expected 2"


@pytest.mark.parametrize(("first", "code"), [(CAN, 0x18), (0x43, 0x18), (0x03, 0x18), (0x55, 0x21)])
def test_a_byte_that_is_not_a_block_ends_the_upload(first: int, code: int) -> None:
    hub = receiving()
    assert sent(hub.feed(bytes([first]))) == bytes([CAN]) * 3
    assert sent(hub.settle()) == abort_text("block", code) + MENU


def test_timeouts_nak_and_a_cut_block_is_dropped() -> None:
    hub = receiving()
    frame = next(frames(FILE))
    hub.feed(frame[:50])
    alarm = hub.pending_alarm
    assert alarm is not None and alarm.delay_s == 3.0
    assert sent(hub.expire()) == bytes([NAK])  # the rest never came
    assert sent(hub.expire()) == bytes([NAK])  # no block at all
    assert sent(hub.feed(frame)) == bytes([ACK])


def test_eot_before_the_end_tag_is_refused() -> None:
    hub = receiving()
    assert sent(hub.feed(next(frames(FILE)))) == bytes([ACK])
    assert sent(hub.feed(bytes([EOT]))) == bytes([CAN]) * 3
    assert sent(hub.settle()) == abort_text("file", 0x4F) + MENU
    assert hub.application() is None  # first page erased, nothing bootable


def test_bad_end_crc_is_refused_at_the_block_that_holds_it() -> None:
    bad = bytearray(FILE)
    bad[-1] ^= 0xFF
    hub = receiving()
    answers = b"".join(sent(hub.feed(frame)) for frame in frames(bytes(bad)))
    assert answers.endswith(bytes([CAN]) * 3) and answers.count(ACK) == len(answers) - 3
    assert sent(hub.settle()) == abort_text("file", 0x43) + MENU
    assert "END CRC-32" in (hub.last_error or "")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (struct.pack("<II", gbl.TAG_APP_INFO, 0), 0x41),  # no HEADER first
        (struct.pack("<IIII", gbl.TAG_HEADER, 8, 0x0200_0000, 0), 0x41),  # version 2
        (
            struct.pack("<IIII", gbl.TAG_HEADER, 8, 0x0300_0000, 0)
            + struct.pack("<III", gbl.TAG_PROGRAM_DATA_LZ4, 4, APP_BASE),
            0x44,
        ),
        (
            struct.pack("<IIII", gbl.TAG_HEADER, 8, 0x0300_0000, 0)
            + struct.pack("<III", gbl.TAG_PROGRAM_DATA, 8, 0x0000_1000)
            + b"\0" * 4,
            0x4F,  # over the bootloader
        ),
    ],
    ids=["no-header", "gbl-v2", "lz4", "bootloader-area"],
)
def test_files_the_bootloader_refuses(body: bytes, code: int) -> None:
    hub = receiving(decompressors=())  # built without decompressors: LZ4 is an unknown tag
    file = with_gbl_crc(body)
    answers = b"".join(sent(hub.feed(frame)) for frame in frames(file))
    assert answers.endswith(bytes([CAN]) * 3)
    assert sent(hub.settle()) == abort_text("file", code) + MENU


def test_padding_after_end_is_ignored_and_odd_lengths_programmed_whole_words() -> None:
    payload = bytes(range(7))  # not a whole word: the rest of the word stays erased
    file = gbl.build_gbl([(APP_BASE + PAGE_SIZE, payload)]) + b"\xff" * 300
    hub = receiving()
    assert upload(hub, file).endswith(UPLOAD_COMPLETE + MENU)
    assert hub.flash.read(APP_BASE + PAGE_SIZE, 8) == payload + b"\xff"


def test_busy_time_is_page_erase_plus_word_writes() -> None:
    hub = receiving()
    blocks = list(frames(FILE))
    first = hub.feed(blocks[0])  # header tags, then program data: the first page is erased
    words = hub.gbl.program_bytes // 4
    ack = [o for o in first if isinstance(o, Emit) and o.data == bytes([ACK])]
    assert ack[0].busy_s == pytest.approx(PAGE_ERASE_S + words * WORD_WRITE_S)
    second = [o for o in hub.feed(blocks[1]) if isinstance(o, Emit)]
    assert second[0].busy_s == pytest.approx(32 * WORD_WRITE_S)


def test_run_without_a_valid_application_shows_the_menu_again() -> None:
    hub = menu_hub()
    assert sent(hub.feed(b"2")) == b""
    assert sent(hub.settle()) == MENU


def test_power_on_into_the_application_when_told() -> None:
    hub = GeckoHub(start_in_bootloader=False)
    hub.flash.program(APP_BASE, APP)
    hub.power_on()
    assert sent(hub.settle()) == b"CHUB APP 0x01050000 READY\r\n"
    assert hub.mode is Mode.APP and hub.running_app is not None


# --- faults --------------------------------------------------------------------------------


def test_nack_fault_refuses_the_block_whatever_it_holds() -> None:
    hub = receiving(faults=fault_plan("nack=1x2", 1))
    blocks = list(frames(FILE))
    assert sent(hub.feed(blocks[0])) == bytes([ACK])
    assert sent(hub.feed(blocks[1])) == bytes([NAK])
    assert sent(hub.feed(blocks[1])) == bytes([NAK])
    assert sent(hub.feed(blocks[1])) == bytes([ACK])


def test_lostack_programs_but_says_nothing_then_the_repeat_is_acked() -> None:
    hub = receiving(faults=fault_plan("lostack=0", 1))
    first = next(frames(FILE))
    assert sent(hub.feed(first)) == b""
    assert hub.gbl.received == 128
    assert sent(hub.feed(first)) == bytes([ACK])


def test_powerloss_leaves_half_a_block_and_a_hub_in_its_bootloader() -> None:
    hub = receiving(faults=fault_plan("powerloss=3", 1), start_in_bootloader=False)
    blocks = list(frames(FILE))
    for frame in blocks[:3]:
        assert sent(hub.feed(frame)) == bytes([ACK])
    before = hub.gbl.program_bytes
    out = hub.feed(blocks[3])
    assert isinstance(out[-1], Timer)  # restarting
    assert sent(hub.settle()) == MENU
    written = bytes(hub.app_bytes(before + 128))
    assert written[: before + 64] == APP[: before + 64]
    assert written[before + 64 :] == b"\xff" * 64
    assert hub.application() is None
    hub.feed(b"2")
    assert sent(hub.settle()) == MENU  # the partial application does not boot
    assert hub.packets == 0  # counted from power-on


def test_stall_then_the_block_is_waited_for_again() -> None:
    hub = receiving(faults=fault_plan("stall=1:2", 1))
    blocks = list(frames(FILE))
    assert sent(hub.feed(blocks[0])) == bytes([ACK])
    out = hub.feed(blocks[1])
    assert isinstance(out[-1], Timer) and out[-1].fault and out[-1].delay_s == 2.0
    assert hub.mode is Mode.STALLED
    assert sent(hub.settle()) == b""
    assert isinstance(hub.pending_alarm, Alarm)
    assert sent(hub.feed(blocks[1])) == bytes([ACK])


def test_vanish() -> None:
    hub = receiving(faults=fault_plan("vanish=0", 1))
    out = hub.feed(next(frames(FILE)))
    assert isinstance(out[-1], Vanish) and hub.mode is Mode.GONE
    assert hub.feed(b"\n") == []


def test_block_numbers_wrap() -> None:
    payload = bytes(range(256)) * 160  # 40 KiB: more than 255 blocks
    file = gbl.build_gbl([(APP_BASE, payload)])
    hub = receiving()
    result = upload(hub, file)
    assert result.endswith(UPLOAD_COMPLETE + MENU) and CAN not in result[:-200]
    assert hub.app_bytes(len(payload)) == payload
    assert encode_block(0, pad_block(b""))[1:3] == b"\x00\xff"

"""The pure AN3155 model, byte-exact to protocols.md §1.4 for every command."""

from __future__ import annotations

import pytest
from simkit import (
    addr,
    checksum_frame,
    cmd,
    count,
    data_frame,
    ext_erase_frame,
    read_frame,
    sent,
    synced,
    write_frame,
)

from drivers.crc import stm32_crc, xor8
from sim.an3155 import (
    ACK,
    CRC_WORD_S,
    FLASH_BASE,
    FLASH_SIZE,
    MASS_ERASE_S,
    NACK,
    OTP_BASE,
    PAGE_ERASE_S,
    PAGE_SIZE,
    SRAM_BASE,
    SRAM_SIZE,
    An3155Hub,
    Emit,
    Mode,
    Timer,
    identity_block,
    program_time_s,
)

Y, N = bytes([ACK]), bytes([NACK])
GET_REPLY = bytes.fromhex("79 0C 31 00 01 02 11 21 31 44 63 73 82 92 A1 79")


def test_waits_for_sync_and_ignores_noise_before_it() -> None:
    device = An3155Hub()
    assert device.power_on() == []
    assert device.mode is Mode.WAIT_SYNC
    out = device.feed(b"\x00\x55\xaa\x7f")
    assert out == [Emit(3, 0.0, Y)]
    assert device.at_command_boundary


def test_a_second_sync_is_a_command_byte_and_gets_a_nack() -> None:
    device = synced()
    assert sent(device.feed(b"\x7f")) == b""  # waits for the complement
    assert sent(device.feed(b"\x7f")) == N
    assert sent(device.feed(b"\x7f\x80")) == N  # 0x7F with its complement: unknown command
    assert device.at_command_boundary


def test_get_lists_extended_erase_and_get_checksum() -> None:
    assert sent(synced().feed(cmd(0x00))) == GET_REPLY


def test_get_lists_erase_when_configured_and_refuses_the_other() -> None:
    device = synced(An3155Hub(erase_command=0x43))
    assert sent(device.feed(cmd(0x00))) == bytes.fromhex(
        "79 0C 31 00 01 02 11 21 31 43 63 73 82 92 A1 79"
    )
    assert sent(device.feed(cmd(0x44))) == N


def test_get_version_and_get_id() -> None:
    device = synced()
    assert sent(device.feed(cmd(0x01))) == bytes.fromhex("79 31 00 00 79")
    assert sent(device.feed(cmd(0x02))) == bytes.fromhex("79 01 04 62 79")


@pytest.mark.parametrize("frame", [b"\x00\x00", b"\x11\xef", b"\x31\x31", b"\x05\xfa", b"\x50\xaf"])
def test_bad_complement_or_unknown_command_is_nacked(frame: bytes) -> None:
    device = synced()
    assert sent(device.feed(frame)) == N
    assert device.at_command_boundary


def test_outputs_name_the_input_byte_that_caused_them() -> None:
    device = synced()
    out = device.feed(b"\xee\x02" + cmd(0x02))  # a bad complement, then Get ID
    assert [(o.after_index, o.data) for o in out if isinstance(o, Emit)] == [
        (1, N),
        (3, bytes.fromhex("79 01 04 62 79")),
    ]


def test_read_memory_of_the_identity_area() -> None:
    device = synced(An3155Hub(eui64="00-DB-12-34-56-78-90-A0", hw_version=2))
    out = sent(device.feed(read_frame(OTP_BASE, 16)))
    assert out == Y + Y + Y + b"HBID" + bytes.fromhex("00DB1234567890A0") + b"\x02\x00\x00\x00"
    assert identity_block("00-DB-12-34-56-78-90-A0", 2)[:16] == out[3:]


def test_read_memory_exchange_is_split_as_the_protocol_says() -> None:
    device = synced()
    assert sent(device.feed(cmd(0x11))) == Y
    assert sent(device.feed(addr(FLASH_BASE))) == Y
    assert sent(device.feed(count(256))) == Y + b"\xff" * 256


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        (cmd(0x11) + addr(FLASH_BASE)[:4] + b"\x00", Y + N),  # bad address checksum
        (cmd(0x11) + addr(0x1000_0000), Y + N),  # nothing mapped there
        (cmd(0x11) + addr(FLASH_BASE) + b"\x0f\x0f", Y + Y + N),  # bad count complement
        (read_frame(FLASH_BASE + FLASH_SIZE - 4, 8), Y + Y + N),  # runs off the flash
        (read_frame(SRAM_BASE + SRAM_SIZE - 1, 2), Y + Y + N),  # runs off the SRAM
    ],
)
def test_read_memory_nacks(frame: bytes, reply: bytes) -> None:
    device = synced()
    assert sent(device.feed(frame)) == reply
    assert device.at_command_boundary


def test_write_memory_programs_and_reads_back_with_programming_time() -> None:
    device = synced()
    data = bytes(range(256))
    out = device.feed(write_frame(FLASH_BASE + 0x400, data))
    assert sent(out) == Y + Y + Y
    last = out[-1]
    assert isinstance(last, Emit)
    assert last.after_index == len(write_frame(FLASH_BASE, data)) - 1
    assert last.busy_s == pytest.approx(32 * 81.7e-6)
    assert sent(device.feed(read_frame(FLASH_BASE + 0x400, 256))) == Y + Y + Y + data
    assert device.write_blocks == 1


def test_write_memory_refuses_programmed_words_and_changes_nothing() -> None:
    device = synced()
    device.feed(write_frame(FLASH_BASE + 8, b"\x00\x00\x00\x00"))
    overlap = b"\x11" * 16  # covers the programmed word at +8
    assert sent(device.feed(write_frame(FLASH_BASE, overlap))) == Y + Y + N
    assert device.flash.read(FLASH_BASE, 16) == b"\xff" * 8 + b"\x00" * 4 + b"\xff" * 4
    # Even all-ones cannot go over a programmed word: it is not erased.
    assert sent(device.feed(write_frame(FLASH_BASE + 8, b"\xff" * 4))) == Y + Y + N


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        (cmd(0x31) + addr(FLASH_BASE + 2), Y + N),  # unaligned address
        (cmd(0x31) + addr(FLASH_BASE)[:4] + b"\x01", Y + N),  # bad address checksum
        (cmd(0x31) + addr(OTP_BASE), Y + N),  # read-only identity area
        (cmd(0x31) + addr(SRAM_BASE + 0x100), Y + N),  # the bootloader's own RAM
        (cmd(0x31) + addr(0x0900_0000), Y + N),  # nothing mapped
        (cmd(0x31) + addr(FLASH_BASE) + data_frame(b"\x01\x02\x03"), Y + Y + N),  # not 4n
        (cmd(0x31) + addr(FLASH_BASE) + b"\x03\x01\x02\x03\x04\x00", Y + Y + N),  # bad xor
        (write_frame(FLASH_BASE + FLASH_SIZE - 4, b"\0" * 8), Y + Y + N),  # off the end
    ],
)
def test_write_memory_nacks(frame: bytes, reply: bytes) -> None:
    device = synced()
    assert sent(device.feed(frame)) == reply
    assert device.at_command_boundary
    assert device.flash.data.count(0xFF) == FLASH_SIZE


def test_write_memory_to_user_sram() -> None:
    device = synced()
    assert sent(device.feed(write_frame(SRAM_BASE + 0x3000, b"abcd"))) == Y + Y + Y
    assert sent(device.feed(read_frame(SRAM_BASE + 0x3000, 4))) == Y + Y + Y + b"abcd"
    assert device.write_blocks == 0  # only main-flash writes count as write blocks


def test_extended_erase_pages_takes_page_erase_time() -> None:
    device = synced()
    device.feed(write_frame(FLASH_BASE, b"\0" * 4))
    device.feed(write_frame(FLASH_BASE + 3 * PAGE_SIZE, b"\0" * 4))
    out = device.feed(ext_erase_frame([0, 3]))
    assert sent(out) == Y + Y
    assert out[-1] == Emit(len(ext_erase_frame([0, 3])) - 1, 2 * PAGE_ERASE_S, Y)
    assert device.flash.data.count(0xFF) == FLASH_SIZE


@pytest.mark.parametrize(("special", "check"), [(b"\xff\xff", 0x00), (b"\xff\xfe", 0x01)])
def test_extended_erase_mass_and_bank_one(special: bytes, check: int) -> None:
    device = synced()
    device.feed(write_frame(FLASH_BASE + 0x7_0000, b"\0" * 4))
    out = device.feed(cmd(0x44) + special + bytes([check]))
    assert sent(out) == Y + Y
    assert out[-1].busy_s == pytest.approx(MASS_ERASE_S)
    assert device.flash.data.count(0xFF) == FLASH_SIZE


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfd\x02",  # bank 2: this part has one bank
        b"\xff\xf0\x0f",  # reserved code
        b"\xff\xff\x01",  # bad checksum of a special erase
        b"\x00\x00\x00\x00\x01",  # page 0 with a bad checksum
        b"\x00\x00\x01\x00\x01",  # page 256 does not exist
    ],
)
def test_extended_erase_nacks_and_erases_nothing(body: bytes) -> None:
    device = synced()
    device.feed(write_frame(FLASH_BASE, b"\0" * 4))
    assert sent(device.feed(cmd(0x44) + body)) == Y + N
    assert device.flash.read(FLASH_BASE, 4) == b"\0" * 4
    assert device.at_command_boundary


def test_legacy_erase_global_and_pages() -> None:
    device = synced(An3155Hub(erase_command=0x43))
    device.feed(write_frame(FLASH_BASE + PAGE_SIZE, b"\0" * 4))
    assert sent(device.feed(cmd(0x43) + b"\x00\x01\x01")) == Y + Y  # N=0, page 1, xor
    assert device.flash.data.count(0xFF) == FLASH_SIZE
    device.feed(write_frame(FLASH_BASE, b"\0" * 4))
    assert sent(device.feed(cmd(0x43) + b"\xff\x00")) == Y + Y
    assert device.flash.data.count(0xFF) == FLASH_SIZE
    assert sent(device.feed(cmd(0x43) + b"\xff\x01")) == Y + N
    assert sent(device.feed(cmd(0x43) + b"\x00\x01\x00")) == Y + N


def test_get_checksum_matches_the_stm32_crc_unit() -> None:
    device = synced()
    data = bytes(range(256)) * 4
    for offset in range(0, len(data), 256):
        device.feed(write_frame(FLASH_BASE + offset, data[offset : offset + 256]))
    # H A1 5E; D ACK; H addr+xor; D ACK; H length+xor; D ACK; D ACK; D CRC MSB first + xor.
    assert sent(device.feed(cmd(0xA1))) == Y
    assert sent(device.feed(addr(FLASH_BASE))) == Y
    length = len(data).to_bytes(4, "big")
    out = device.feed(length + bytes([xor8(length)]))
    crc = stm32_crc(data).to_bytes(4, "big")
    assert sent(out) == Y + Y + crc + bytes([xor8(crc)])
    assert out[-1].busy_s == pytest.approx(256 * CRC_WORD_S)


def test_get_checksum_of_one_erased_word() -> None:
    out = sent(synced().feed(checksum_frame(FLASH_BASE, 4)))
    crc = stm32_crc(b"\xff" * 4).to_bytes(4, "big")
    assert out == Y * 4 + crc + bytes([xor8(crc)])


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        (cmd(0xA1) + addr(FLASH_BASE + 1), Y + N),  # unaligned
        (cmd(0xA1) + addr(0x0900_0000), Y + N),  # unmapped
        (checksum_frame(FLASH_BASE, 6), Y + Y + N),  # not whole words
        (checksum_frame(FLASH_BASE, 0), Y + Y + N),  # nothing to sum
        (checksum_frame(FLASH_BASE, FLASH_SIZE + 4), Y + Y + N),  # off the end
        (cmd(0xA1) + addr(FLASH_BASE) + b"\x00\x00\x00\x04\x05", Y + Y + N),  # bad xor
    ],
)
def test_get_checksum_nacks(frame: bytes, reply: bytes) -> None:
    device = synced()
    assert sent(device.feed(frame)) == reply
    assert device.at_command_boundary


def test_go_to_an_unmapped_address_is_nacked() -> None:
    device = synced()
    assert sent(device.feed(cmd(0x21) + addr(0x1000_0000))) == Y + N
    assert sent(device.feed(cmd(0x21) + addr(OTP_BASE))) == Y + N
    assert sent(device.feed(cmd(0x21) + addr(FLASH_BASE)[:4] + b"\x00")) == Y + N
    assert device.at_command_boundary


def test_go_elsewhere_is_a_reset_request() -> None:
    device = synced()
    assert sent(device.feed(cmd(0x21) + addr(SRAM_BASE + 0x3000))) == Y + Y
    assert device.mode is Mode.WAIT_SYNC


def test_go_to_blank_flash_faults_then_the_watchdog_resets() -> None:
    device = synced()
    out = device.feed(cmd(0x21) + addr(FLASH_BASE) + b"\x7f")
    assert sent(out) == Y + Y
    timer = out[-1]
    assert isinstance(timer, Timer)
    assert (timer.after_index, timer.delay_s, timer.fault) == (6, 0.1, False)
    assert device.mode is Mode.FAULTED
    assert device.feed(b"\x7f") == []  # deaf while faulted
    assert device.timer_expired(timer.token + 1) == []  # stale tokens do nothing
    assert device.timer_expired(timer.token) == []
    assert device.mode is Mode.WAIT_SYNC
    assert sent(device.feed(b"\x7f")) == Y


def test_write_protect_then_unprotect() -> None:
    device = synced()
    out = device.feed(cmd(0x63) + b"\x00\x02\x02")  # N=0, page 2, xor
    assert sent(out) == Y + Y
    assert device.mode is Mode.WAIT_SYNC  # system reset after the option update
    assert device.write_protected == {2}
    device.feed(b"\x7f")
    assert sent(device.feed(write_frame(FLASH_BASE + 2 * PAGE_SIZE, b"\0" * 4))) == Y + Y + N
    assert sent(device.feed(ext_erase_frame([2]))) == Y + N
    assert sent(device.feed(cmd(0x44) + b"\xff\xff\x00")) == Y + N
    assert sent(device.feed(write_frame(FLASH_BASE, b"\0" * 4))) == Y + Y + Y
    assert sent(device.feed(cmd(0x73))) == Y + Y
    assert device.mode is Mode.WAIT_SYNC
    device.feed(b"\x7f")
    assert sent(device.feed(write_frame(FLASH_BASE + 2 * PAGE_SIZE, b"\0" * 4))) == Y + Y + Y


def test_write_protect_nacks_a_bad_frame() -> None:
    device = synced()
    assert sent(device.feed(cmd(0x63) + b"\x00\x02\x03")) == Y + N
    assert sent(device.feed(cmd(0x63) + b"\x00\xff\xff")) == Y + Y  # page 255 exists
    assert device.write_protected == {255}


def test_readout_protect_limits_commands_and_unprotect_mass_erases() -> None:
    device = synced()
    device.feed(write_frame(FLASH_BASE, b"\0" * 4))
    assert sent(device.feed(cmd(0x82))) == Y + Y
    assert device.mode is Mode.WAIT_SYNC
    device.feed(b"\x7f")
    assert sent(device.feed(cmd(0x00))) == GET_REPLY
    assert sent(device.feed(cmd(0x02))) == bytes.fromhex("79 01 04 62 79")
    for code in (0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0xA1):
        assert sent(device.feed(cmd(code))) == N
    out = device.feed(cmd(0x92))
    assert sent(out) == Y + Y
    assert device.flash.data.count(0xFF) == FLASH_SIZE
    assert not device.readout_protected
    assert device.mode is Mode.WAIT_SYNC


def test_program_time_counts_double_words() -> None:
    assert program_time_s(256) == pytest.approx(2.6144e-3)
    assert program_time_s(4) == pytest.approx(81.7e-6)

"""Stateful Hypothesis tests: random valid and invalid AN3155 frames against a reference.

The machine keeps its own picture of the first pages of flash; every exchange must give the
byte-exact reply the reference predicts, and the bootloader must always be back at a command
boundary. A second property feeds arbitrary bytes and checks chunking never matters.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from simkit import (
    addr,
    checksum_frame,
    cmd,
    ext_erase_frame,
    read_frame,
    sent,
    synced,
    write_frame,
)

from drivers.crc import stm32_crc, xor8
from sim.an3155 import (
    ACK,
    FLASH_BASE,
    NACK,
    PAGE_SIZE,
    An3155Hub,
    Emit,
    Mode,
    Timer,
    Vanish,
)

Y, N = bytes([ACK]), bytes([NACK])
PAGES = 3
REGION = PAGES * PAGE_SIZE  # the part of flash the machine writes to
GET_REPLY = bytes.fromhex("79 0C 31 00 01 02 11 21 31 44 63 73 82 92 A1 79")

words = st.integers(0, REGION // 4 - 1).map(lambda w: w * 4)


class BootloaderMachine(RuleBasedStateMachine):
    """Random command frames against a reference copy of the written flash."""

    def __init__(self) -> None:
        super().__init__()
        self.device = synced()
        self.ref = bytearray(b"\xff" * REGION)

    def x(self, frame: bytes) -> bytes:
        return sent(self.device.feed(frame))

    @rule(offset=words, data=st.binary(min_size=4, max_size=256))
    def write(self, offset: int, data: bytes) -> None:
        data = data[: min(len(data), REGION - offset) // 4 * 4]
        if not data:
            return
        erased = all(b == 0xFF for b in self.ref[offset : offset + len(data)])
        reply = self.x(write_frame(FLASH_BASE + offset, data))
        if erased:
            assert reply == Y * 3
            self.ref[offset : offset + len(data)] = data
        else:
            assert reply == Y + Y + N

    @rule(offset=st.integers(0, REGION - 1), n=st.integers(1, 256))
    def read(self, offset: int, n: int) -> None:
        n = min(n, REGION - offset)
        assert self.x(read_frame(FLASH_BASE + offset, n)) == Y * 3 + self.ref[offset : offset + n]

    @rule(pages=st.lists(st.integers(0, PAGES - 1), min_size=1, max_size=PAGES))
    def erase_pages(self, pages: list[int]) -> None:
        assert self.x(ext_erase_frame(pages)) == Y + Y
        for page in pages:
            self.ref[page * PAGE_SIZE : (page + 1) * PAGE_SIZE] = b"\xff" * PAGE_SIZE

    @rule()
    def mass_erase(self) -> None:
        assert self.x(cmd(0x44) + b"\xff\xff\x00") == Y + Y
        self.ref[:] = b"\xff" * REGION

    @rule(offset=words, n=st.integers(1, 512))
    def checksum(self, offset: int, n: int) -> None:
        length = min(n * 4, REGION - offset)
        crc = stm32_crc(self.ref[offset : offset + length]).to_bytes(4, "big")
        reply = self.x(checksum_frame(FLASH_BASE + offset, length))
        assert reply == Y * 4 + crc + bytes([xor8(crc)])

    @rule()
    def get(self) -> None:
        assert self.x(cmd(0x00)) == GET_REPLY

    @rule(code=st.integers(0, 255), check=st.integers(0, 255))
    def bad_complement(self, code: int, check: int) -> None:
        if code ^ check == 0xFF:
            check ^= 0x01
        assert self.x(bytes([code, check])) == N

    @rule(code=st.integers(0, 255).filter(lambda c: c not in An3155Hub().commands))
    def unknown_command(self, code: int) -> None:
        assert self.x(cmd(code)) == N

    @rule(code=st.sampled_from([0x11, 0x21, 0x31, 0xA1]), address=st.integers(0, 2**32 - 1))
    def bad_address_checksum(self, code: int, address: int) -> None:
        raw = addr(address)
        assert self.x(cmd(code) + raw[:4] + bytes([raw[4] ^ 0x5A])) == Y + N

    @rule(offset=words, data=st.binary(min_size=1, max_size=255))
    def bad_data_checksum(self, offset: int, data: bytes) -> None:
        frame = bytearray(write_frame(FLASH_BASE + offset, data))
        frame[-1] ^= 0x01
        assert self.x(bytes(frame)) == Y + Y + N

    @rule(offset=words, extra=st.integers(1, 3))
    def write_not_whole_words(self, offset: int, extra: int) -> None:
        assert self.x(write_frame(FLASH_BASE + offset, b"\0" * (4 + extra))) == Y + Y + N

    @rule()
    def go_to_sram_resets_and_resync(self) -> None:
        # A reset request lands in the bootloader (strapped), unsynced; memory is kept.
        assert self.x(cmd(0x21) + addr(0x2000_3000)) == Y + Y
        assert self.device.mode is Mode.WAIT_SYNC
        assert self.x(b"\x00\x7f") == Y

    @invariant()
    def at_a_command_boundary(self) -> None:
        assert self.device.mode is Mode.BOOTLOADER
        assert self.device.at_command_boundary
        assert self.device.pending_timer is None

    @invariant()
    def flash_matches_the_reference(self) -> None:
        assert self.device.flash.data[:REGION] == self.ref
        assert self.device.flash.data.count(0xFF, REGION) == len(self.device.flash.data) - REGION


BootloaderMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None
)
TestBootloaderMachine = BootloaderMachine.TestCase


def run_chunks(chunks: list[bytes]) -> tuple[bytes, list[tuple[int, int]], Mode, bytes]:
    """Feed chunks; returns output, (global input index, output length) pairs, mode, flash."""
    device = An3155Hub(boot_pin_strapped=False)
    device.power_on()
    out = bytearray()
    marks: list[tuple[int, int]] = []
    offset = 0
    for chunk in chunks:
        for o in device.feed(chunk):
            assert 0 <= o.after_index < len(chunk)
            if isinstance(o, Emit):
                out += o.data
                marks.append((offset + o.after_index, len(out)))
            else:
                assert isinstance(o, Timer | Vanish)
        offset += len(chunk)
    return bytes(out), marks, device.mode, bytes(device.flash.data[:REGION])


def merge_marks(marks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Where output stood after each input byte that produced some (chunk independent)."""
    merged: dict[int, int] = {}
    for index, length in marks:
        merged[index] = length
    return sorted(merged.items())


frames = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            cmd(0x00),
            cmd(0x02),
            read_frame(FLASH_BASE, 16),
            checksum_frame(FLASH_BASE, 64),
            ext_erase_frame([0, 1]),
            cmd(0x44) + b"\xff\xff\x00",
            cmd(0x73),
            cmd(0x82),
            cmd(0x92),
            cmd(0x21) + addr(FLASH_BASE),
            b"\x7f",
        ]
    ),
    st.builds(
        lambda w, d: write_frame(FLASH_BASE + w, d),
        words,
        st.binary(min_size=4, max_size=64).map(lambda b: b[: len(b) // 4 * 4]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, max_size=12), st.data())
def test_arbitrary_bytes_never_break_the_model_and_chunking_never_matters(
    chunks: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(chunks)
    # Bias toward real traffic: a sync byte first and plenty of valid command openings.
    whole = b"\x7f" + whole
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=8)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    one = run_chunks([whole])
    many = run_chunks([p for p in pieces if p])
    assert one[0] == many[0]
    assert merge_marks(one[1]) == merge_marks(many[1])
    assert one[2:] == many[2:]
    assert one[2] in set(Mode)

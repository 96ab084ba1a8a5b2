"""The simulated Gecko bootloader with compressed GBL program data (LZ4 / LZMA).

It decompresses as the XMODEM blocks arrive and programs what comes out before each ACK,
refuses a compressed tag as an unknown tag (``file error 0x44``) when built without that
decompressor, and aborts corrupt or oversized compressed data with the code its firmware
prints for decompressor errors (``file error 0x18``).
"""

from __future__ import annotations

import lzma
import struct

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.xmodem import ACK, CAN, frames
from firmware_images import gbl
from sim.decompress import DecompressError, Lz4Stream, LzmaStream
from sim.gecko import (
    APP_BASE,
    APP_MAX_SIZE,
    PAGE_ERASE_S,
    UPLOAD_COMPLETE,
    WORD_WRITE_S,
    Emit,
    abort_text,
    demo_app,
    demo_gbl,
)
from tests.sim.test_gecko_model import MENU, receiving, upload, with_gbl_crc
from tests.xmodemkit import sent

NEW = 0x0106_0000


@pytest.mark.parametrize("method", ["lz4", "lzma"])
def test_a_compressed_upload_programs_the_app_and_it_runs(method: str) -> None:
    app = demo_app(NEW, size=32 * 1024, compressible=True)
    file = demo_gbl(NEW, size=32 * 1024, compression=method, compressible=True)
    assert len(file) < len(app) * 0.65
    hub = receiving()
    result = upload(hub, file)
    assert result == bytes([ACK]) * (-(-len(file) // 128) + 1) + UPLOAD_COMPLETE + MENU
    assert hub.app_bytes(len(app)) == app
    assert hub.application() is not None and hub.application().firmware_version == NEW  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["lz4", "lzma"])
def test_a_bootloader_without_the_decompressor_refuses_it_as_an_unknown_tag(method: str) -> None:
    others = tuple(m for m in ("lz4", "lzma") if m != method)
    hub = receiving(decompressors=others)
    file = demo_gbl(NEW, size=4096, compression=method, compressible=True)
    answers = b"".join(sent(hub.feed(frame)) for frame in frames(file))
    assert answers.endswith(bytes([CAN]) * 3)
    assert sent(hub.settle()) == abort_text("file", 0x44) + MENU
    assert f"without the {method} decompressor" in (hub.last_error or "")


def compressed_tag(tag_id: int, address: int, packed: bytes) -> bytes:
    return struct.pack("<III", tag_id, 4 + len(packed), address) + packed


@pytest.mark.parametrize(
    ("tag_id", "packed", "why"),
    [
        (gbl.TAG_PROGRAM_DATA_LZ4, b"\x1f\x41\x00\x00" + b"\0" * 8, "reaches before the data"),
        (
            gbl.TAG_PROGRAM_DATA_LZ4,
            lz4.block.compress(b"ab" * 200, store_size=False)[:-2],
            "ends inside",
        ),
        (
            gbl.TAG_PROGRAM_DATA_LZMA,
            lzma.compress(b"ab" * 200, format=lzma.FORMAT_ALONE)[:-5],
            "end-of-stream",
        ),
        (gbl.TAG_PROGRAM_DATA_LZMA, b"\x5d\0\0\1\0" + b"\xff" * 8 + b"\xff" * 40, "LZMA"),
        # a bomb: more than the whole application area
        (
            gbl.TAG_PROGRAM_DATA_LZMA,
            lzma.compress(b"\0" * (APP_MAX_SIZE + 4096), format=lzma.FORMAT_ALONE),
            "more than",
        ),
    ],
    ids=["lz4-offset", "lz4-truncated", "lzma-truncated", "lzma-corrupt", "lzma-bomb"],
)
def test_corrupt_compressed_data_aborts_with_the_decompressor_code(
    tag_id: int, packed: bytes, why: str
) -> None:
    body = struct.pack("<IIII", gbl.TAG_HEADER, 8, 0x0300_0000, 0)
    file = with_gbl_crc(body + compressed_tag(tag_id, APP_BASE, packed))
    hub = receiving()
    answers = b"".join(sent(hub.feed(frame)) for frame in frames(file))
    assert answers.endswith(bytes([CAN]) * 3)
    assert sent(hub.settle()) == abort_text("file", 0x18) + MENU
    assert why in (hub.last_error or "")


def test_flash_time_is_spent_block_by_block_not_at_the_tag_end() -> None:
    file = demo_gbl(NEW, size=32 * 1024, compression="lz4", compressible=True)
    hub = receiving()
    busy = [sum(o.busy_s for o in hub.feed(frame) if isinstance(o, Emit)) for frame in frames(file)]
    total = 4 * PAGE_ERASE_S + 32 * 1024 // 4 * WORD_WRITE_S
    assert sum(busy) == pytest.approx(total)
    assert max(busy) < 0.1 * total  # no single block carries the tag's flash time


@settings(max_examples=80, deadline=None)
@given(
    data=st.binary(max_size=3000)
    | st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=7), st.integers(1, 900)),
    cuts=st.lists(st.integers(1, 200), max_size=20),
)
def test_the_streaming_decoders_match_the_reference_for_any_split(
    data: bytes, cuts: list[int]
) -> None:
    for stream, packed in (
        (Lz4Stream(len(data)), lz4.block.compress(data, store_size=False)),
        (LzmaStream(len(data)), lzma.compress(data, format=lzma.FORMAT_ALONE)),
    ):
        out, at = bytearray(), 0
        for cut in [*cuts, len(packed)]:
            out += stream.feed(packed[at : at + cut])
            at += cut
            if at >= len(packed):
                break
        out += stream.feed(packed[at:])
        stream.finish()
        assert bytes(out) == data


@given(data=st.binary(min_size=1, max_size=2000))
def test_the_streaming_decoders_stop_at_their_limit(data: bytes) -> None:
    for stream, packed in (
        (Lz4Stream(len(data) - 1), lz4.block.compress(data, store_size=False)),
        (LzmaStream(len(data) - 1), lzma.compress(data, format=lzma.FORMAT_ALONE)),
    ):
        with pytest.raises(DecompressError, match="more than"):
            stream.feed(packed)

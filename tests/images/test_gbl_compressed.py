"""Compressed GBL program data (PROGRAM_DATA_LZ4 / _LZMA): decompressed, capped, checked.

The file is hostile input: a decompression bomb is refused before it is inflated, every
stated size must agree with the data, and what the parser reports (segments, hash,
identity) is what lands in flash, derived only from bytes the signature's span covers.
"""

from __future__ import annotations

import json
import lzma
import struct
import tracemalloc
from pathlib import Path

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_images import gbl
from firmware_images.gbl import (
    GBL_TYPE_SIGNED,
    MAX_DECOMPRESSED,
    TAG_PROGRAM_DATA,
    TAG_PROGRAM_DATA_LZ4,
    TAG_PROGRAM_DATA_LZMA,
    TAG_SIGNATURE,
    build_gbl,
    parse_gbl,
)
from firmware_images.model import ImageFormatError, Segment
from sim.gecko import APP_BASE, demo_app
from station.cli import main

from .test_gbl import app_info, header, prog, seal, tag
from .test_hostile_files import station_error, station_limited


def lz4_block(data: bytes) -> bytes:
    return bytes(lz4.block.compress(data, store_size=False))


def lzma_alone(data: bytes, *, stated: int | None = None) -> bytes:
    packed = lzma.compress(data, format=lzma.FORMAT_ALONE, preset=0)
    if stated is not None:
        packed = packed[:5] + struct.pack("<Q", stated) + packed[13:]
    return packed


def compressed(data: bytes, method: str) -> tuple[int, bytes]:
    if method == "lz4":
        return TAG_PROGRAM_DATA_LZ4, lz4_block(data)
    return TAG_PROGRAM_DATA_LZMA, lzma_alone(data)


def refused(body: bytes) -> str:
    with pytest.raises(ImageFormatError) as info:
        parse_gbl(seal(body))
    return str(info.value)


@pytest.mark.parametrize("method", ["lz4", "lzma"])
def test_compressed_gbl_parses_to_what_lands_in_flash(method: str) -> None:
    app = demo_app(0x01020304, size=64 * 1024, compressible=True)
    plain = parse_gbl(build_gbl([(APP_BASE, app)], app_version=7))
    packed_file = build_gbl([(APP_BASE, app)], app_version=7, compression=method)
    image = parse_gbl(packed_file)
    assert image.segments == (Segment(APP_BASE, app, "program data"),)
    assert (image.sha256, image.crc32) == (plain.sha256, plain.crc32)
    assert image.problems == ()
    assert image.fields["compression"] == method
    assert image.fields["decompressed_bytes"] == len(app)
    # The demo app is half "code", half erased flash and text: about 2:1.
    assert 1.6 < len(app) / image.fields["compressed_bytes"] < 2.4
    assert len(packed_file) < len(app) * 0.65


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(
            st.sampled_from(["plain", "lz4", "lzma"]),
            st.binary(min_size=1, max_size=300)
            | st.builds(lambda n: b"\xff" * n, st.integers(1, 5000)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_mix_of_plain_and_compressed_tags_parses_to_the_flash_bytes(
    pieces: list[tuple[str, bytes]],
) -> None:
    body = header() + app_info()
    address = 0x8000
    for method, data in pieces:
        if method == "plain":
            body += prog(address, data)
        else:
            tag_id, packed = compressed(data, method)
            body += prog(address, packed, tag_id)
        address += len(data)
    image = parse_gbl(seal(body))
    assert image.segments == (Segment(0x8000, b"".join(d for _, d in pieces), "program data"),)
    methods = sorted({m for m, _ in pieces} - {"plain"})
    assert image.fields.get("compression") == ("+".join(methods) or None)


@pytest.mark.parametrize("method", ["lz4", "lzma"])
def test_a_decompression_bomb_is_refused_without_inflating_it(method: str) -> None:
    bomb = b"\0" * (MAX_DECOMPRESSED + 4096)
    tag_id, packed = compressed(bomb, method)
    assert len(packed) < MAX_DECOMPRESSED // 100
    tracemalloc.start()
    try:
        message = refused(header() + prog(0x8000, packed, tag_id))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"more than {MAX_DECOMPRESSED} bytes" in message and "bomb" in message
    assert peak < MAX_DECOMPRESSED + 4 * 1024 * 1024  # never the bomb's whole output


def test_the_cap_counts_every_compressed_tag_of_the_file() -> None:
    half = b"\0" * (MAX_DECOMPRESSED // 2 + 1)
    packed = lzma_alone(half)
    body = header() + prog(0x0, packed, TAG_PROGRAM_DATA_LZMA)
    body += prog(0x0100_0000, packed, TAG_PROGRAM_DATA_LZMA)
    assert "more than" in refused(body)


def test_lzma_stated_size_must_agree_with_the_data() -> None:
    data = b"firmware" * 100
    ok = parse_gbl(
        seal(header() + prog(0, lzma_alone(data, stated=len(data)), TAG_PROGRAM_DATA_LZMA))
    )
    assert ok.segments[0].data == data
    message = refused(
        header() + prog(0, lzma_alone(data, stated=len(data) + 4), TAG_PROGRAM_DATA_LZMA)
    )
    assert f"says {len(data) + 4} bytes" in message and f"decompresses to {len(data)}" in message


@pytest.mark.parametrize(
    ("packed", "words"),
    [
        (lzma_alone(b"x" * 500)[:-6], "end-of-stream marker"),  # cut short
        (lzma_alone(b"x" * 500) + b"\0\0", "follow the LZMA end-of-stream marker"),
        (lzma_alone(b"x")[:5] + b"\xff" * 8, "end-of-stream marker"),  # header only
        (b"\x5d\0\0", "too short for the 13-byte LZMA header"),
        (b"\xe1" + lzma_alone(b"x")[1:], "properties byte 0xE1"),
        # a 4 GiB dictionary: the header is not honoured, the memory limit refuses it
        (lzma_alone(b"x" * 50)[:1] + b"\xff\xff\xff\xff" + lzma_alone(b"x" * 50)[5:], "LZMA"),
    ],
    ids=["truncated", "trailing", "header-only", "short", "bad-props", "huge-dictionary"],
)
def test_bad_lzma_data_is_refused(packed: bytes, words: str) -> None:
    message = refused(header() + prog(0x8000, packed, TAG_PROGRAM_DATA_LZMA))
    assert words in message and "PROGRAM_DATA_LZMA" in message


@pytest.mark.parametrize(
    "packed",
    [b"", b"\xff", b"\x1f\x41\x00\x00", lz4_block(b"abcdefgh" * 20)[:-3]],
    ids=["empty", "cut-token", "offset-before-data", "truncated"],
)
def test_bad_lz4_data_is_refused(packed: bytes) -> None:
    message = refused(header() + prog(0x8000, packed, TAG_PROGRAM_DATA_LZ4))
    assert "LZ4" in message


def test_decompressed_data_must_stay_in_the_address_space() -> None:
    packed = lz4_block(b"\0" * 64)
    assert "32-bit address space" in refused(
        header() + prog(0xFFFF_FFF0, packed, TAG_PROGRAM_DATA_LZ4)
    )


def test_decompressed_data_overlapping_plain_data_is_a_problem() -> None:
    body = (
        header() + prog(0x100, b"A" * 64) + prog(0x120, lz4_block(b"B" * 64), TAG_PROGRAM_DATA_LZ4)
    )
    assert any("overlap" in p for p in parse_gbl(seal(body)).problems)


def test_the_signed_span_holds_the_compressed_bytes_the_segments_come_from() -> None:
    data = b"signed firmware " * 64
    packed = lz4_block(data)
    body = (
        header(gbl_type=GBL_TYPE_SIGNED) + app_info() + prog(0x8000, packed, TAG_PROGRAM_DATA_LZ4)
    )
    image = parse_gbl(seal(body + tag(TAG_SIGNATURE, b"\1" * 64)))
    assert image.signature is not None and image.signature.signed_data == body
    assert packed in image.signature.signed_data and image.segments[0].data == data


def test_build_gbl_refuses_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="lz4 or lzma"):
        build_gbl([(0, b"x")], compression="zstd")


def test_plain_tags_still_use_the_plain_tag() -> None:
    assert struct.pack("<I", TAG_PROGRAM_DATA) in build_gbl([(0, b"abcd")])
    assert gbl.tag_name(TAG_PROGRAM_DATA_LZ4) == "PROGRAM_DATA_LZ4"


def test_image_inspect_shows_the_compression_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.gbl"
    app = demo_app(0x01050000, size=32 * 1024, compressible=True)
    path.write_bytes(build_gbl([(APP_BASE, app)], app_version=0x01050000, compression="lzma"))
    assert main(["image", "inspect", "--json", str(path)]) == 0
    packed = json.loads(capsys.readouterr().out)["compression"]
    assert packed["method"] == "lzma" and packed["decompressed_bytes"] == len(app)
    assert packed["ratio"] == round(len(app) / packed["compressed_bytes"], 3) > 1.6
    assert main(["image", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"{len(app)} in flash (ratio {packed['ratio']:.2f}:1)" in text


def test_a_gbl_bomb_through_the_cli_is_one_line_under_the_memory_ceiling(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gbl"
    packed = lzma_alone(b"\0" * (4 * MAX_DECOMPRESSED))
    path.write_bytes(seal(header() + app_info() + prog(APP_BASE, packed, TAG_PROGRAM_DATA_LZMA)))
    line = station_error(station_limited("image", "inspect", str(path)))
    assert str(path) in line and "decompression bomb" in line


def test_image_build_compresses_a_gbl_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = tmp_path / "app.bin"
    payload.write_bytes(demo_app(0x01050000, size=16 * 1024, compressible=True))
    out = tmp_path / "app.gbl"
    build = ["image", "build", "--payload", str(payload), "--address", "0x4000"]
    assert main([*build, "--format", "gbl", "--compress", "lz4", "-o", str(out)]) == 0
    image = parse_gbl(out.read_bytes())
    assert image.fields["compression"] == "lz4" and image.segments[0].data == payload.read_bytes()
    capsys.readouterr()
    assert main([*build, "--format", "zigbee", "--compress", "lz4", "-o", str(out)]) == 2
    assert "--compress is for --format gbl only" in capsys.readouterr().err

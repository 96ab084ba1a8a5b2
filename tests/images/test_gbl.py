"""GBL files: build → parse round trips, known answers, refusals, and fuzzing."""

from __future__ import annotations

import itertools
import lzma
import struct
import zlib

import lz4.block
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.crc import crc32
from drivers.errors import ImageError
from firmware_images.gbl import (
    END_RESIDUE,
    GBL_TYPE_ENCRYPTED,
    GBL_TYPE_SIGNED,
    GBL_VERSION_3,
    MAX_TAGS,
    PROGRAM_CHUNK,
    TAG_APP_INFO,
    TAG_BOOTLOADER,
    TAG_ENC_GBL_DATA,
    TAG_ENC_INIT,
    TAG_END,
    TAG_HEADER,
    TAG_METADATA,
    TAG_PROGRAM_DATA,
    TAG_PROGRAM_DATA_LZ4,
    TAG_PROGRAM_DATA_LZMA,
    TAG_SE_UPGRADE,
    TAG_SIGNATURE,
    build_gbl,
    parse_gbl,
)
from firmware_images.model import ImageFormatError, ParsedImage, Segment, SigStatus

u32 = st.integers(0, 0xFFFFFFFF)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lzma_alone(data: bytes) -> bytes:
    """An .lzma stream as Gecko's decoder takes it (unknown size, end marker)."""
    return lzma.compress(data, format=lzma.FORMAT_ALONE)


def tag(tag_id: int, value: bytes) -> bytes:
    return struct.pack("<II", tag_id, len(value)) + value


def header(version: int = GBL_VERSION_3, gbl_type: int = 0) -> bytes:
    return tag(TAG_HEADER, struct.pack("<II", version, gbl_type))


def app_info(version: int = 0x01020304) -> bytes:
    return tag(TAG_APP_INFO, struct.pack("<III16s", 1, version, 0, b"P" * 16))


def prog(address: int, data: bytes, tag_id: int = TAG_PROGRAM_DATA) -> bytes:
    return tag(tag_id, struct.pack("<I", address) + data)


def seal(body: bytes) -> bytes:
    """Append an END tag with the right CRC."""
    head = body + struct.pack("<II", TAG_END, 4)
    return head + struct.pack("<I", zlib.crc32(head))


def merged(segments: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """What the parser gives back: segments that follow each other in the file and in
    address are one."""
    out: list[tuple[int, bytes]] = []
    for address, data in segments:
        if out and out[-1][0] + len(out[-1][1]) == address:
            out[-1] = (out[-1][0], out[-1][1] + data)
        else:
            out.append((address, data))
    return out


def overlapping(segments: list[tuple[int, bytes]]) -> bool:
    spans = sorted((a, a + len(d)) for a, d in segments if d)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def refused(data: bytes) -> ImageFormatError:
    with pytest.raises(ImageFormatError) as info:
        parse_gbl(data)
    return info.value


segment = st.tuples(u32, st.binary(max_size=300)).map(
    lambda s: (min(s[0], (1 << 32) - len(s[1])), s[1])
)


# --- round trips -------------------------------------------------------------------------


@given(
    segments=st.lists(segment, min_size=1, max_size=5),
    app_version=u32,
    product_id=st.binary(min_size=16, max_size=16),
    header_version=st.one_of(st.just(GBL_VERSION_3), u32),
    metadata=st.none() | st.binary(max_size=64),
)
@settings(max_examples=120, deadline=None)
def test_build_then_parse_round_trips(
    segments: list[tuple[int, bytes]],
    app_version: int,
    product_id: bytes,
    header_version: int,
    metadata: bytes | None,
) -> None:
    data = build_gbl(
        segments,
        app_version=app_version,
        product_id=product_id,
        header_version=header_version,
        metadata=metadata,
    )
    assert zlib.crc32(data) == END_RESIDUE
    image = parse_gbl(data, "x.gbl")
    assert isinstance(image, ParsedImage)
    assert (image.container, image.path) == ("gbl", "x.gbl")
    expected = merged(segments)
    assert image.segments == tuple(Segment(a, d, "program data") for a, d in expected)
    assert image.file_version == app_version
    assert image.fields["app_version"] == app_version
    assert image.fields["product_id"] == product_id
    assert image.fields["app_type_names"] == "zigbee"
    assert image.fields["gbl_version"] == header_version
    assert image.fields["end_crc"] == zlib.crc32(data[:-4])
    assert image.fields.get("metadata") == metadata
    assert image.signature is None and image.signature_status is SigStatus.UNSIGNED
    assert image.sha256 and image.crc32 == crc32(expected[0][1])
    major_problem = any("major version" in p for p in image.problems)
    assert major_problem == (header_version >> 24 != 3)
    assert any("overlap" in p for p in image.problems) == overlapping(expected)
    assert len(image.problems) == major_problem + overlapping(expected)


def test_a_long_segment_is_chunked_and_merged_back() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes: three program data tags
    image = parse_gbl(build_gbl([(0x4000, payload)]))
    tags = [t for t in image.fields["tags"] if "PROGRAM_DATA" in t]
    assert len(tags) == -(-len(payload) // PROGRAM_CHUNK) == 3
    assert image.segments == (Segment(0x4000, payload, "program data"),)
    assert image.problems == ()


def test_program_tags_apart_in_address_stay_apart() -> None:
    data = seal(header() + app_info() + prog(0x100, b"ab") + prog(0x200, b"cd"))
    image = parse_gbl(data)
    assert [(s.address, s.data) for s in image.segments] == [(0x100, b"ab"), (0x200, b"cd")]


def test_builder_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_gbl([])
    with pytest.raises(ValueError):
        build_gbl([(0, b"x")], product_id=b"short")
    with pytest.raises(ValueError):
        build_gbl([(0xFFFFFFFF, b"xy")])
    with pytest.raises(ValueError):
        build_gbl([(0, b"x")], app_version=1 << 32)


# --- known answers -----------------------------------------------------------------------


def test_crc32_and_end_residue_known_answers() -> None:
    assert crc32(b"123456789") == 0xCBF43926
    assert zlib.crc32(b"123456789" + struct.pack("<I", 0xCBF43926)) == END_RESIDUE == 0x2144DF1C
    data = build_gbl([(0, b"hello")])
    assert zlib.crc32(data) == 0x2144DF1C
    assert data[:4] == bytes.fromhex("EB17A603")
    assert data[-12:-4] == bytes.fromhex("FC0404FC04000000")
    assert int.from_bytes(data[-4:], "little") == zlib.crc32(data[:-4])


def test_flipped_payload_byte_is_refused_naming_both_crcs() -> None:
    payload = bytes(range(200))
    data = bytearray(build_gbl([(0x8000, payload)]))
    stored = int.from_bytes(data[-4:], "little")
    data[data.index(payload) + 77] ^= 0x01
    computed = zlib.crc32(bytes(data[:-4]))
    error = refused(bytes(data))
    assert "CRC" in str(error)
    assert f"0x{stored:08X}" in str(error) and f"0x{computed:08X}" in str(error)
    assert error.offset == len(data) - 4
    assert error.hint


@pytest.mark.parametrize("fill", [0x00, 0xFF, 0x1A])
@pytest.mark.parametrize("count", [1, 127])
def test_padding_after_end_is_accepted_with_a_problem(fill: int, count: int) -> None:
    data = build_gbl([(0x100, b"payload")])
    image = parse_gbl(data + bytes([fill]) * count)
    assert image.segments == (Segment(0x100, b"payload", "program data"),)
    assert image.fields["padding"] == count
    assert len(image.problems) == 1
    assert "padding" in image.problems[0] and f"0x{fill:02X}" in image.problems[0]


def test_trailing_bytes_that_are_not_padding_are_refused() -> None:
    data = build_gbl([(0x100, b"payload")])
    error = refused(data + b"\x00\xff\x00")
    assert "not padding" in str(error) and error.offset == len(data)


def test_a_tag_after_end_is_refused() -> None:
    data = build_gbl([(0x100, b"payload")])
    error = refused(data + tag(TAG_METADATA, b"late"))
    assert "not the last tag" in str(error) and error.offset == len(data)


def test_end_in_the_middle_is_refused() -> None:
    first = seal(header() + app_info() + prog(0, b"one"))
    error = refused(first + prog(3, b"two"))
    assert "not the last tag" in str(error) and "PROGRAM_DATA" in str(error)


# --- structure ---------------------------------------------------------------------------


def test_other_files_are_refused_with_a_hint() -> None:
    assert "EBL" in str(refused(b"\x00\x00\x00\x8c" + b"\0" * 60))
    assert "v4" in str(refused(struct.pack("<I", 0x84A617EB) + b"\0" * 12))
    error = refused(b"\x7fELF" + b"\0" * 20)
    assert "not a GBL" in str(error) and error.offset == 0 and error.hint
    assert "not a GBL" in str(refused(b""))
    first_not_header = seal(app_info() + header() + prog(0, b"x"))
    assert "not a GBL" in str(refused(first_not_header))


def test_every_truncation_is_refused_with_an_offset() -> None:
    data = build_gbl([(0x100, b"abcdef")], metadata=b"m")
    for size in range(len(data)):
        error = refused(data[:size])
        assert error.offset is not None and 0 <= error.offset <= size


def test_missing_end_and_overlong_tags_are_refused() -> None:
    body = header() + app_info() + prog(0, b"abc")
    assert "without an END" in str(refused(body))
    overlong = body + struct.pack("<II", TAG_METADATA, 1000) + b"x"
    error = refused(overlong)
    assert "only 1 bytes follow" in str(error) and error.offset == len(body)


def test_end_with_a_wrong_length_is_refused() -> None:
    body = header() + app_info() + prog(0, b"abc")
    data = body + struct.pack("<II", TAG_END, 2) + b"\0\0"
    assert "END tag holds 2 bytes" in str(refused(data))


def test_short_fixed_fields_are_refused() -> None:
    assert "too short" in str(refused(seal(tag(TAG_HEADER, b"\0" * 4) + prog(0, b"x"))))
    assert "too short" in str(refused(seal(header() + tag(TAG_APP_INFO, b"\0" * 27))))
    assert "too short" in str(refused(seal(header() + tag(TAG_PROGRAM_DATA, b"\0" * 3))))


def test_repeated_single_tags_are_refused() -> None:
    assert "second HEADER" in str(refused(seal(header() + header() + prog(0, b"x"))))
    twice = seal(header() + app_info() + app_info() + prog(0, b"x"))
    assert "more than one APP_INFO" in str(refused(twice))


def test_program_data_past_4_gib_is_refused() -> None:
    error = refused(seal(header() + prog(0xFFFFFFFF, b"ab")))
    assert "address space" in str(error)


def test_no_payload_is_refused() -> None:
    assert "no program data" in str(refused(seal(header() + app_info())))


def test_header_and_app_info_are_decoded() -> None:
    data = seal(header(0x03010000, 0) + app_info(0x0A0B0C0D) + prog(0x2000, b"\xaa" * 8))
    image = parse_gbl(data)
    assert image.fields["gbl_version"] == 0x03010000
    assert image.fields["gbl_version_major"] == 3
    assert image.fields["gbl_encrypted"] is False and image.fields["gbl_signed"] is False
    assert image.fields["app_version"] == image.file_version == 0x0A0B0C0D
    assert image.fields["product_id"] == b"P" * 16
    assert image.fields["app_info_raw"] == struct.pack("<III16s", 1, 0x0A0B0C0D, 0, b"P" * 16)
    assert image.manufacturer_code is None and image.image_type is None


def test_signature_is_kept_with_the_bytes_before_it() -> None:
    rs = bytes(range(64))
    body = header(gbl_type=GBL_TYPE_SIGNED) + app_info() + prog(0x100, b"signed code")
    image = parse_gbl(seal(body + tag(TAG_SIGNATURE, rs)))
    assert image.signature is not None
    assert image.signature.scheme == "gbl-ecdsa-p256"
    assert image.signature.value == rs
    assert image.signature.signed_data == body
    assert image.signature_status is SigStatus.UNSUPPORTED
    assert image.problems == ()


def test_signature_problems() -> None:
    body = header() + app_info() + prog(0x100, b"code")
    image = parse_gbl(seal(body + tag(TAG_SIGNATURE, b"\1" * 64)))
    assert any("does not say signed" in p for p in image.problems)
    unsigned = parse_gbl(seal(header(gbl_type=GBL_TYPE_SIGNED) + app_info() + prog(0, b"x")))
    assert any("no SIGNATURE" in p for p in unsigned.problems)
    assert "64" in str(refused(seal(body + tag(TAG_SIGNATURE, b"\1" * 63))))
    after = seal(body + tag(TAG_SIGNATURE, b"\1" * 64) + tag(TAG_METADATA, b"x"))
    assert "follows the SIGNATURE" in str(refused(after))


def test_bootloader_se_upgrade_metadata_and_unknown_tags() -> None:
    body = (
        header()
        + app_info()
        + tag(TAG_SE_UPGRADE, struct.pack("<II", 5, 0x00020001) + b"blob!")
        + tag(TAG_BOOTLOADER, struct.pack("<II", 0x0102, 0x0FE10000) + b"boot")
        + prog(0x4000, b"app")
        + tag(TAG_METADATA, b"meta")
        + tag(0x12345678, b"mystery")
    )
    image = parse_gbl(seal(body))
    assert image.segments == (
        Segment(0x4000, b"app", "program data"),
        Segment(None, b"blob!", "se upgrade"),
        Segment(0x0FE10000, b"boot", "bootloader"),
    )
    assert image.fields["bootloader_version"] == 0x0102
    assert image.fields["se_version"] == 0x00020001 and image.fields["se_blob_size"] == 5
    assert image.fields["metadata"] == b"meta"
    assert image.fields["unknown_tags"] == ((0x12345678, b"mystery"),)
    assert image.problems == (
        f"unknown GBL tag 0x12345678 at offset {body.index(struct.pack('<I', 0x12345678))} "
        "(7 bytes) is kept as it is",
    )


def test_se_upgrade_size_mismatch_and_overlap_are_problems() -> None:
    body = (
        header()
        + tag(TAG_SE_UPGRADE, struct.pack("<II", 9, 1) + b"blob")
        + prog(0x100, b"abcd")
        + tag(TAG_METADATA, b"")
        + prog(0x102, b"xy")
    )
    problems = parse_gbl(seal(body)).problems
    assert any("blob is 9 bytes but holds 4" in p for p in problems)
    assert any("overlap" in p for p in problems)


def test_encrypted_gbl_keeps_its_ciphertext() -> None:
    body = (
        header(gbl_type=GBL_TYPE_ENCRYPTED)
        + tag(TAG_ENC_INIT, struct.pack("<I", 8) + b"N" * 12)
        + tag(TAG_ENC_GBL_DATA, b"\x99" * 8)
    )
    image = parse_gbl(seal(body))
    assert image.segments == (Segment(None, b"\x99" * 8, "encrypted gbl data (aes-ccm)"),)
    assert image.fields["gbl_encrypted"] is True
    assert any("encrypted" in p for p in image.problems)


# --- fuzzing -----------------------------------------------------------------------------

BASES = [
    build_gbl([(0x100, bytes(range(40))), (0x200, b"x" * 10)], metadata=b"meta"),
    seal(
        header(gbl_type=GBL_TYPE_SIGNED)
        + app_info()
        + tag(TAG_BOOTLOADER, struct.pack("<II", 1, 0x0FE10000) + b"boot")
        + tag(TAG_SE_UPGRADE, struct.pack("<II", 2, 3) + b"se")
        + prog(0x1000, lzma_alone(b"lz" * 40), TAG_PROGRAM_DATA_LZMA)
        + prog(0x1800, lz4.block.compress(b"4" * 64, store_size=False), TAG_PROGRAM_DATA_LZ4)
        + prog(0x2000, b"plain data")
        + tag(0xABCDEF01, b"?")
        + tag(TAG_SIGNATURE, b"\7" * 64)
    ),
]


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            at = draw(st.integers(0, len(data) - 1))
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def parse_or_refuse(data: bytes) -> None:
    """The parser either succeeds or raises an ImageError that says where."""
    try:
        parse_gbl(data)
    except ImageError as exc:
        assert str(exc)
        if isinstance(exc, ImageFormatError) and exc.offset is not None:
            assert 0 <= exc.offset <= len(data)


@FUZZ
@given(st.sampled_from(BASES).flatmap(mutated))
def test_mutated_files_raise_only_image_errors(data: bytes) -> None:
    parse_or_refuse(data)


@FUZZ
@given(st.sampled_from(BASES).flatmap(lambda b: mutated(b[:-12])).map(seal))
def test_mutated_files_with_a_good_crc_raise_only_image_errors(data: bytes) -> None:
    parse_or_refuse(data)


@FUZZ
@given(st.binary(max_size=200).map(lambda b: seal(header() + b)))
def test_random_tags_raise_only_image_errors(data: bytes) -> None:
    parse_or_refuse(data)


# --- tag counts: capped while walking; merging stays linear ---------------------------------


def test_too_many_tags_are_refused_while_walking() -> None:
    body = header() + app_info() + b"".join(prog(0x1000 + i, b"x") for i in range(MAX_TAGS))
    error = refused(seal(body))
    assert error.message.startswith(f"GBL file has more than {MAX_TAGS} tags")
    assert error.offset == len(header() + app_info()) + 13 * (MAX_TAGS - 2)


def test_up_to_the_cap_parses_and_merges() -> None:
    count = MAX_TAGS - 3  # HEADER, APP_INFO and END are tags too
    body = header() + app_info() + b"".join(prog(0x1000 + i, b"x") for i in range(count))
    image = parse_gbl(seal(body))
    assert [(s.address, s.data) for s in image.segments] == [(0x1000, b"x" * count)]
    assert type(image.segments[0].data) is bytes


def test_merge_keeps_tag_order_and_breaks_on_other_tags() -> None:
    body = (
        header()
        + prog(0x100, b"ab")
        + prog(0x102, b"cd")
        + tag(TAG_METADATA, b"m")
        + prog(0x104, b"ef")
        + prog(0x106, b"gh")
        + prog(0x200, b"ij")
    )
    image = parse_gbl(seal(body))
    assert [(s.address, s.data) for s in image.segments] == [
        (0x100, b"abcd"),
        (0x104, b"efgh"),
        (0x200, b"ij"),
    ]


def test_errors_name_the_file() -> None:
    with pytest.raises(ImageFormatError) as info:
        parse_gbl(b"\x00" * 16, "radio.gbl")
    assert info.value.message.startswith("radio.gbl: not a GBL file")
    assert refused(b"\x00" * 16).message.startswith("not a GBL file")  # no path, no prefix

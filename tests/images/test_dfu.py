"""DFU and DfuSe files: build → parse round trips, known answers, refusals, and fuzzing."""

from __future__ import annotations

import itertools
import struct
import zlib

import crcmod.predefined
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import ImageError
from firmware_images.dfu import (
    BCD_DFU_DFUSE,
    BCD_DFU_PLAIN,
    MAX_ELEMENTS,
    build_dfu,
    build_dfuse,
    dfu_suffix_crc,
    parse_dfu,
)
from firmware_images.model import ImageFormatError, ParsedImage, Segment, SigStatus

u16 = st.integers(0, 0xFFFF)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
jamcrc = crcmod.predefined.mkCrcFun("jamcrc")

# Offsets inside a DfuSe file with one target (prefix 11 bytes, target prefix 274 bytes).
IMAGE_SIZE_AT = 6
TARGET_AT = 11
TARGET_SIZE_AT = TARGET_AT + 266
ELEMENTS_AT = TARGET_AT + 270
ELEMENT_AT = TARGET_AT + 274


def reseal(data: bytes) -> bytes:
    """Replace the last 4 bytes with the right dwCRC."""
    head = data[:-4]
    return head + struct.pack("<I", ~zlib.crc32(head) & 0xFFFFFFFF)


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Change one field and reseal, so the CRC does not hide the structural check."""
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return reseal(bytes(buf))


def refused(data: bytes) -> ImageFormatError:
    with pytest.raises(ImageFormatError) as info:
        parse_dfu(data)
    return info.value


def one_target(*elements: tuple[int, bytes], name: str = "Internal Flash") -> bytes:
    return build_dfuse([(0, name, list(elements))], vid=0x0483, pid=0xDF11)


# --- known answers -----------------------------------------------------------------------


def test_jamcrc_check_value() -> None:
    assert dfu_suffix_crc(b"123456789") == 0x340BC6D9
    assert jamcrc(b"123456789") == 0x340BC6D9
    assert ~zlib.crc32(b"123456789") & 0xFFFFFFFF == 0x340BC6D9


@given(st.binary(max_size=512))
def test_suffix_crc_is_jamcrc(data: bytes) -> None:
    assert dfu_suffix_crc(data) == jamcrc(data) == ~zlib.crc32(data) & 0xFFFFFFFF


def test_suffix_layout_and_crc_span() -> None:
    data = build_dfu(b"\x01\x02\x03", vid=0x0483, pid=0xDF11, bcd_device=0x2200)
    assert data[:3] == b"\x01\x02\x03" and len(data) == 3 + 16
    assert data[3:15] == bytes.fromhex("0022 11DF 8304 0001 554644 10")
    assert int.from_bytes(data[-4:], "little") == ~zlib.crc32(data[:-4]) & 0xFFFFFFFF
    dfuse = one_target((0x08000000, b"abc"))
    assert dfuse[-10:-8] == struct.pack("<H", BCD_DFU_DFUSE)
    assert int.from_bytes(dfuse[-4:], "little") == ~zlib.crc32(dfuse[:-4]) & 0xFFFFFFFF
    assert dfuse[:6] == b"DfuSe\x01" and dfuse[TARGET_AT : TARGET_AT + 6] == b"Target"


# --- round trips -------------------------------------------------------------------------


@given(payload=st.binary(min_size=1, max_size=600), vid=u16, pid=u16, bcd_device=u16)
@settings(max_examples=100, deadline=None)
def test_plain_dfu_round_trips(payload: bytes, vid: int, pid: int, bcd_device: int) -> None:
    image = parse_dfu(build_dfu(payload, vid=vid, pid=pid, bcd_device=bcd_device), "a.dfu")
    assert isinstance(image, ParsedImage)
    assert (image.container, image.path) == ("dfu", "a.dfu")
    assert image.segments == (Segment(None, payload, "payload"),)
    assert image.fields["idVendor"] == vid and image.fields["idProduct"] == pid
    assert image.fields["bcdDevice"] == bcd_device and image.fields["bcdDFU"] == BCD_DFU_PLAIN
    assert image.signature_status is SigStatus.UNSIGNED
    assert image.problems == () or payload.startswith(b"DfuSe")


def test_plain_dfu_defaults_to_any_device() -> None:
    image = parse_dfu(build_dfu(b"x"))
    assert (image.fields["idVendor"], image.fields["idProduct"]) == (0xFFFF, 0xFFFF)
    assert image.fields["bcdDevice"] == 0xFFFF


names = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40).filter(
    lambda n: len(n.encode()) <= 255
)
elements = st.lists(
    st.tuples(st.integers(0, 0xFFFFFFFF), st.binary(max_size=200)).map(
        lambda e: (min(e[0], (1 << 32) - len(e[1])), e[1])
    ),
    max_size=4,
)
targets = st.lists(st.tuples(st.integers(0, 255), names, elements), min_size=1, max_size=4).filter(
    lambda ts: any(es for _a, _n, es in ts)
)


@given(targets=targets, vid=u16, pid=u16, bcd_device=u16)
@settings(max_examples=100, deadline=None)
def test_dfuse_round_trips(
    targets: list[tuple[int, str, list[tuple[int, bytes]]]], vid: int, pid: int, bcd_device: int
) -> None:
    data = build_dfuse(targets, vid=vid, pid=pid, bcd_device=bcd_device)
    image = parse_dfu(data, "b.dfu")
    assert image.container == "dfuse"
    expected = tuple(
        Segment(address, payload, f"target {alt} {name}" if name else f"target {alt}")
        for alt, name, elems in targets
        for address, payload in elems
    )
    assert image.segments == expected
    fields = image.fields
    assert (fields["idVendor"], fields["idProduct"], fields["bcdDevice"]) == (vid, pid, bcd_device)
    assert fields["bcdDFU"] == BCD_DFU_DFUSE
    assert fields["dfu_image_size"] == len(data) - 16
    assert fields["target_count"] == len(targets) == len(fields["targets"])
    for (alt, name, elems), line in zip(targets, fields["targets"], strict=True):
        assert line.startswith(f"alt {alt}") and f"{len(elems)} element(s)" in line
        assert (repr(name) in line) == bool(name)
    spans = sorted((alt, a, a + len(d)) for alt, _n, es in targets for a, d in es if d)
    overlap = any(x[0] == y[0] and y[1] < x[2] for x, y in itertools.combinations(spans, 2))
    assert bool(image.problems) == overlap
    assert all(p.startswith("DfuSe elements overlap: target") for p in image.problems)


def test_builders_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_dfu(b"")
    with pytest.raises(ValueError):
        build_dfu(b"x", vid=0x10000)
    with pytest.raises(ValueError):
        build_dfuse([(0, "empty", [])], vid=1, pid=2)
    with pytest.raises(ValueError):
        build_dfuse([(256, "", [(0, b"x")])], vid=1, pid=2)
    with pytest.raises(ValueError):
        build_dfuse([(0, "x" * 256, [(0, b"x")])], vid=1, pid=2)
    with pytest.raises(ValueError):
        build_dfuse([(0, "a\0b", [(0, b"x")])], vid=1, pid=2)
    with pytest.raises(ValueError):
        build_dfuse([(0, "", [(0xFFFFFFFF, b"xy")])], vid=1, pid=2)


# --- suffix refusals ---------------------------------------------------------------------


def test_flipped_payload_byte_is_refused_naming_both_crcs() -> None:
    data = bytearray(build_dfu(bytes(range(100))))
    stored = int.from_bytes(data[-4:], "little")
    data[42] ^= 0x80
    computed = ~zlib.crc32(bytes(data[:-4])) & 0xFFFFFFFF
    error = refused(bytes(data))
    assert "CRC" in str(error)
    assert f"0x{stored:08X}" in str(error) and f"0x{computed:08X}" in str(error)
    assert error.offset == len(data) - 4 and error.hint


def test_flipped_dfuse_element_byte_is_refused_by_crc() -> None:
    data = bytearray(one_target((0x08000000, b"\x55" * 64)))
    data[ELEMENT_AT + 8 + 10] ^= 0x01
    assert "CRC" in str(refused(bytes(data)))


def test_missing_suffix_is_refused() -> None:
    error = refused(b"\0" * 64)
    assert "no DFU suffix" in str(error) and error.offset == 64 - 8 and error.hint
    assert "too short" in str(refused(b"UFD"))


def test_bad_suffix_lengths() -> None:
    data = build_dfu(b"payload")
    at = len(data) - 5
    error = refused(patched(data, at, "<B", 15))
    assert "bLength is 15" in str(error) and error.offset == at
    assert "longer than" in str(refused(patched(data, at, "<B", 200)))
    image = parse_dfu(patched(data, at, "<B", 18))
    assert image.segments[0].data == b"paylo"
    assert len(image.problems) == 1 and "18" in image.problems[0]


def test_unknown_bcd_dfu_is_refused() -> None:
    data = build_dfu(b"payload")
    error = refused(patched(data, len(data) - 10, "<H", 0x0110))
    assert "0x0110" in str(error) and error.offset == len(data) - 10


def test_plain_dfu_without_payload_is_refused() -> None:
    suffix = struct.pack("<HHHH3sBI", 0xFFFF, 0xFFFF, 0xFFFF, BCD_DFU_PLAIN, b"UFD", 16, 0)
    assert "no payload" in str(refused(reseal(suffix)))


def test_plain_payload_that_looks_like_dfuse_is_a_problem() -> None:
    image = parse_dfu(build_dfu(b"DfuSe and more"))
    assert image.container == "dfu" and "DfuSe" in image.problems[0]


# --- DfuSe refusals ----------------------------------------------------------------------


def test_dfuse_prefix_refusals() -> None:
    data = one_target((0x08000000, b"code"))
    assert "'DfuSe'" in str(refused(patched(data, 0, "<B", ord("d"))))
    error = refused(patched(data, 5, "<B", 2))
    assert "version is 2" in str(error) and error.offset == 5
    error = refused(patched(data, IMAGE_SIZE_AT, "<I", len(data) - 15))
    assert "DFUImageSize" in str(error) and error.offset == IMAGE_SIZE_AT


def test_dfuse_target_refusals() -> None:
    data = one_target((0x08000000, b"code"), (0x08001000, b"more"))
    error = refused(patched(data, TARGET_AT, "<B", ord("t")))
    assert "'Target'" in str(error) and error.offset == TARGET_AT
    assert "cut off" in str(refused(patched(data, 10, "<B", 2)))
    error = refused(patched(data, TARGET_SIZE_AT, "<I", 10_000))
    assert "10000 bytes" in str(error)
    error = refused(patched(data, ELEMENTS_AT, "<I", 1))
    assert "add up to 12 bytes" in str(error) and "says 24" in str(error)
    error = refused(patched(data, ELEMENTS_AT, "<I", 3))
    assert "element 2 of 3" in str(error)
    error = refused(patched(data, ELEMENT_AT + 4, "<I", 17))
    assert "element 0 says it is 17 bytes" in str(error) and error.offset == ELEMENT_AT + 4


def test_dfuse_sizes_that_do_not_add_up_are_refused() -> None:
    data = one_target((0x08000000, b"code"))
    body = data[:-16] + b"extra"
    grown = reseal(body + data[-16:])
    error = refused(patched(grown, IMAGE_SIZE_AT, "<I", len(body)))
    assert "5 bytes follow the last" in str(error) and error.offset == len(data) - 16


def test_dfuse_element_past_4_gib_is_refused() -> None:
    data = one_target((0xFFFFFFF0, b"code"))
    assert "address space" in str(refused(patched(data, ELEMENT_AT, "<I", 0xFFFFFFFE)))


def test_dfuse_without_elements_is_refused() -> None:
    data = build_dfuse([(0, "a", []), (1, "b", [(0, b"x")])], vid=1, pid=2)
    # Drop the second target: one empty target remains.
    body = data[: TARGET_AT + 274]
    body = body[:IMAGE_SIZE_AT] + struct.pack("<IB", len(body), 1) + body[IMAGE_SIZE_AT + 5 :]
    assert "no element" in str(refused(reseal(body + data[-16:])))


def test_unnamed_targets_and_names_decode() -> None:
    data = build_dfuse([(3, "", [(0x100, b"a")]), (4, "Flash µ", [(0x200, b"b")])], vid=1, pid=2)
    image = parse_dfu(data)
    assert [s.name for s in image.segments] == ["target 3", "target 4 Flash µ"]


def test_every_truncation_is_refused_with_an_offset() -> None:
    for data in (build_dfu(b"abc"), one_target((0x08000000, b"xyz"))):
        for size in range(len(data)):
            error = refused(data[:size])
            assert error.offset is not None and 0 <= error.offset <= size


# --- fuzzing -----------------------------------------------------------------------------

BASES = [
    build_dfu(bytes(range(64)), vid=0x0483, pid=0xDF11),
    build_dfuse(
        [(0, "Internal Flash", [(0x08000000, b"a" * 20), (0x08004000, b"b" * 5)]), (1, "", [])],
        vid=0x0483,
        pid=0xDF11,
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
        parse_dfu(data)
    except ImageError as exc:
        assert str(exc)
        if isinstance(exc, ImageFormatError) and exc.offset is not None:
            assert 0 <= exc.offset <= len(data)


@FUZZ
@given(st.sampled_from(BASES).flatmap(mutated))
def test_mutated_files_raise_only_image_errors(data: bytes) -> None:
    parse_or_refuse(data)


def keep_suffix(base: bytes) -> st.SearchStrategy[bytes]:
    """Mutate the body only and reseal, so the structural checks are reached."""
    return mutated(base[:-16]).map(lambda body: reseal(body + base[-16:]))


@FUZZ
@given(st.sampled_from(BASES).flatmap(keep_suffix))
def test_mutated_files_with_a_good_crc_raise_only_image_errors(data: bytes) -> None:
    parse_or_refuse(data)


@FUZZ
@given(st.sampled_from(BASES).flatmap(mutated).map(reseal))
def test_mutated_files_given_a_fresh_crc_raise_only_image_errors(data: bytes) -> None:
    parse_or_refuse(data)


# --- element counts and overlaps --------------------------------------------------------------


def test_too_many_elements_are_refused_while_walking() -> None:
    elements = [(0x0800_0000 + 2 * i, b"x") for i in range(MAX_ELEMENTS + 1)]
    error = refused(build_dfuse([(0, "a", elements[:10]), (1, "b", elements[10:])], vid=1, pid=2))
    assert error.message.startswith(f"DfuSe file has more than {MAX_ELEMENTS} elements")
    assert error.offset == TARGET_AT + 274 * 2 + 9 * 10 + 9 * (MAX_ELEMENTS - 10)
    ok = parse_dfu(build_dfuse([(0, "a", elements[:MAX_ELEMENTS])], vid=1, pid=2))
    assert len(ok.segments) == MAX_ELEMENTS


def test_overlapping_elements_are_a_problem_naming_both() -> None:
    data = build_dfuse(
        [
            (0, "Internal Flash", [(0x0800_0000, b"a" * 0x1000), (0x0800_2000, b"b" * 16)]),
            (1, "Option Bytes", [(0x0800_0800, b"o" * 16)]),  # alt 1: another memory
            (0, "Again", [(0x0800_0800, b"c" * 0x100)]),
        ],
        vid=0x0483,
        pid=0xDF11,
    )
    image = parse_dfu(data)
    assert image.problems == (
        "DfuSe elements overlap: target 0 (alt 0) element 0 at 0x08000000..0x08001000 and "
        "target 2 (alt 0) element 0 at 0x08000800..0x08000900; flashing the file in order, "
        "the later overwrites the earlier",
    )


def test_adjacent_elements_do_not_overlap() -> None:
    image = parse_dfu(one_target((0x0800_0000, b"a" * 16), (0x0800_0010, b"b" * 16)))
    assert image.problems == ()


def test_overlaps_within_one_target_and_many_are_summed_up() -> None:
    data = one_target(*[(0x0800_0000 + i, b"x" * 4) for i in range(12)])
    problems = parse_dfu(data).problems
    assert problems[0] == (
        "DfuSe elements overlap: target 0 (alt 0) element 0 at 0x08000000..0x08000004 and "
        "target 0 (alt 0) element 1 at 0x08000001..0x08000005; flashing the file in order, "
        "the later overwrites the earlier"
    )
    assert len(problems) == 9 and problems[-1] == "3 more DfuSe element overlaps"


def test_errors_name_the_file() -> None:
    with pytest.raises(ImageFormatError) as info:
        parse_dfu(b"\x00" * 32, "app.dfu")
    assert info.value.message.startswith("app.dfu: no DFU suffix")
    assert refused(b"\x00" * 32).message.startswith("no DFU suffix")

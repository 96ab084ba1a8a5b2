"""Zigbee OTA files and GBCS OTA Upgrade Images: round trips, wrappers, the real-file corpus,
signatures, and fuzzed input that may only ever be refused with an ImageError."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.model import ImageFormatError, ParsedImage, SigStatus
from firmware_images.zigbee import (
    MAX_PREFIX,
    MAX_SUB_ELEMENTS,
    TAG_NAMES,
    build_gbcs_image,
    build_zigbee_ota,
    ecdsa_p256_sign,
    ecdsa_p256_verify,
    gbcs_file_name,
    parse_gbcs_image,
    parse_ota_file,
    parse_zigbee_ota,
    tag_name,
)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "zigbee-ota"
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("[0-9]*")) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not CORPUS_FILES, reason=f"no corpus at {CORPUS}")

MAGIC = b"\x1e\xf1\xee\x0b"
KNOWN_FIELD = {
    1: "signature_suite1",
    2: "signing_certificate_suite1",
    3: "image_integrity_code",
    4: "picture_data",
    5: "signature_suite2",
    6: "signing_certificate_suite2",
}
KNOWN_SIZE = {1: 50, 2: 48, 3: 16, 5: 80, 6: 74}

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ROUND_TRIP = settings(max_examples=150, deadline=None)


# --- strategies ----------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
# Standard tags, manufacturer-specific ones (0xF000...) and anything else a vendor uses.
tags = st.one_of(st.integers(0, 6), st.integers(0xF000, 0xFFFF), u16)
elements = st.lists(st.tuples(tags, st.binary(max_size=80)), max_size=6)


@st.composite
def header_options(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "manufacturer_code": draw(u16),
        "image_type": draw(u16),
        "file_version": draw(u32),
        "stack_version": draw(u16),
        "header_string": draw(st.binary(max_size=32)),
        "security_credential_version": draw(st.none() | u8),
        "destination": draw(st.none() | st.binary(min_size=8, max_size=8)),
        "hw_range": draw(st.none() | st.tuples(u16, u16)),
    }


@st.composite
def gbcs_options(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "manufacturer_code": draw(u16),
        "image_type": draw(u16),
        "file_version": draw(u32),
        "hw_min": draw(u16),
        "hw_max": draw(u16),
        "force_replace": draw(u8),
        "header_string": draw(st.binary(max_size=32)),
    }


# Mutations: (kind, position, bytes). Positions are reduced modulo the length, and drawn
# mostly near the start, where the header and the first sub-element headers are.
positions = st.one_of(st.integers(0, 128), st.integers(0, 1 << 20))
mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "set32"]),
    positions,
    st.binary(min_size=1, max_size=8),
)
mutations = st.lists(mutation, min_size=1, max_size=4)


def mutate(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, blob in ops:
        at = pos % (len(buf) + 1)
        if kind == "insert":
            buf[at:at] = blob
        elif kind == "delete":
            del buf[at : at + len(blob)]
        elif buf and kind == "flip":
            buf[at % len(buf)] ^= blob[0] or 0xFF
        elif buf:
            # A plausible-looking or wild length/size field.
            value = int.from_bytes(blob[:4].ljust(4, b"\0"), "little")
            buf[at : at + 4] = value.to_bytes(4, "little")
    return bytes(buf)


def parse_or_refuse(parse: Callable[[bytes], ParsedImage], data: bytes) -> ParsedImage | None:
    """Parse; an ImageError is a fine answer, anything else escapes and fails the test."""
    try:
        image = parse(data)
    except ImageError as exc:
        assert str(exc)
        return None
    assert image.segments
    return image


# --- Zigbee round trip ---------------------------------------------------------------------


def expected_header_length(opts: dict[str, Any]) -> int:
    return (
        56
        + (1 if opts["security_credential_version"] is not None else 0)
        + (8 if opts["destination"] is not None else 0)
        + (4 if opts["hw_range"] is not None else 0)
    )


@ROUND_TRIP
@given(opts=header_options(), elems=elements)
def test_zigbee_round_trip(opts: dict[str, Any], elems: list[tuple[int, bytes]]) -> None:
    blob = build_zigbee_ota(elems, **opts)
    img = parse_zigbee_ota(blob, "x.zigbee")
    f = img.fields
    hl = expected_header_length(opts)
    fc = (
        (1 if opts["security_credential_version"] is not None else 0)
        | (2 if opts["destination"] is not None else 0)
        | (4 if opts["hw_range"] is not None else 0)
    )
    assert (img.path, img.container) == ("x.zigbee", "zigbee-ota")
    assert (img.manufacturer_code, img.image_type, img.file_version) == (
        opts["manufacturer_code"],
        opts["image_type"],
        opts["file_version"],
    )
    hw = opts["hw_range"] or (None, None)
    assert (img.hw_min, img.hw_max) == hw
    assert f["upgrade_file_id"] == 0x0BEEF11E
    assert f["header_offset"] == 0
    assert f["header_version"] == 0x0100
    assert f["header_length"] == hl
    assert f["field_control"] == fc
    assert f["manufacturer_code"] == opts["manufacturer_code"]
    assert f["image_type"] == opts["image_type"]
    assert f["file_version"] == opts["file_version"]
    assert f["stack_version"] == opts["stack_version"]
    assert f["header_string"] == opts["header_string"].ljust(32, b"\0")
    assert f["header_text"] == opts["header_string"].split(b"\0")[0].decode("utf-8", "replace")
    assert f["total_image_size"] == len(blob)
    assert f["security_credential_version"] == opts["security_credential_version"]
    assert f["upgrade_file_destination"] == opts["destination"]
    if opts["destination"] is None:
        assert f["upgrade_file_destination_eui64"] is None
    else:
        assert f["upgrade_file_destination_eui64"] == ":".join(
            f"{b:02X}" for b in opts["destination"][::-1]
        )
    assert (f["minimum_hardware_version"], f["maximum_hardware_version"]) == hw
    assert f["header_extra"] == b""
    assert (f["wrapper"], f["file_size"], f["trailing_bytes"]) == ("none", len(blob), b"")

    # Sub-elements: listed in order with their file offsets; data kept by name.
    listed = []
    at = hl
    for tag, data in elems:
        listed.append((tag, tag_name(tag), at, len(data)))
        at += 6 + len(data)
    assert f["sub_elements"] == tuple(listed)
    seen: dict[str, int] = {}
    for tag, data in elems:
        if tag == 0:
            continue
        key = KNOWN_FIELD.get(tag, f"tag_0x{tag:04X}")
        seen[key] = seen.get(key, 0) + 1
        assert f[key if seen[key] == 1 else f"{key}_{seen[key]}"] == data

    images = [data for tag, data in elems if tag == 0]
    if images:
        assert [s.data for s in img.segments] == images
        assert {s.name for s in img.segments} == {"upgrade image"}
    else:
        assert [s.data for s in img.segments] == [blob[hl:]]
    assert all(s.address is None for s in img.segments)
    assert img.sha256 == hashlib.sha256(img.segments[0].data).hexdigest()

    sigs = [
        (tag, data, off)
        for (tag, data), (_, _, off, _) in zip(elems, listed, strict=True)
        if tag in (1, 5)
    ]
    if sigs:
        tag, data, off = sigs[0]
        assert img.signature is not None
        assert img.signature.scheme == f"zigbee-ecqv-suite{1 if tag == 1 else 2}"
        assert img.signature.status is SigStatus.UNSUPPORTED
        assert img.signature.value == (data[8:] if len(data) > 8 else data)
        assert img.signature.signed_data == blob[:off]
        assert f["signer_ieee"] == (data[:8] if len(data) > 8 else None)
    else:
        assert img.signature is None
        assert img.signature_status is SigStatus.UNSIGNED

    expected_problems = (
        (0 if images else 1)
        + len({tag for tag, data in elems if tag in KNOWN_SIZE and len(data) != KNOWN_SIZE[tag]})
        + (1 if len(sigs) > 1 else 0)
        + (1 if hw[0] is not None and hw[0] > hw[1] else 0)
    )
    assert len(img.problems) == expected_problems, img.problems
    if not images:
        assert any("no upgrade image" in p for p in img.problems)

    # A Zigbee file with upgrade image data is never taken for a GBCS image.
    if any(images):
        assert parse_ota_file(blob) == parse_zigbee_ota(blob)


def test_tag_names() -> None:
    assert tag_name(0) == "upgrade image"
    assert tag_name(0xF000) == "tag 0xF000"
    assert tag_name(0x0007) == "tag 0x0007"
    assert set(TAG_NAMES) == set(range(7))


# --- GBCS round trip -----------------------------------------------------------------------


@ROUND_TRIP
@given(
    opts=gbcs_options(),
    image=st.binary(min_size=1, max_size=300),
    rs=st.none() | st.binary(min_size=64, max_size=64),
)
def test_gbcs_round_trip(opts: dict[str, Any], image: bytes, rs: bytes | None) -> None:
    blob = build_gbcs_image(image, sign=None if rs is None else (lambda _d: rs), **opts)
    assert len(blob) == 60 + len(image) + 66
    img = parse_gbcs_image(blob, "g.zigbee")
    f = img.fields
    assert (img.path, img.container) == ("g.zigbee", "gbcs-ota")
    assert (img.manufacturer_code, img.image_type, img.file_version) == (
        opts["manufacturer_code"],
        opts["image_type"],
        opts["file_version"],
    )
    assert (img.hw_min, img.hw_max) == (opts["hw_min"], opts["hw_max"])
    assert f["header_length"] == 60
    assert f["field_control"] == 0x0004
    assert f["stack_version"] == 0x0002
    assert f["header_string"] == opts["header_string"].ljust(32, b"\0")
    assert f["total_image_size"] == len(blob)
    assert (f["minimum_hardware_version"], f["maximum_hardware_version"]) == (
        opts["hw_min"],
        opts["hw_max"],
    )
    assert f["security_credential_version"] is None
    assert f["upgrade_file_destination"] is None
    assert f["force_replace"] == opts["force_replace"]
    assert f["signature_length"] == 0x40
    assert f["manufacturer_image_offset"] == 60
    assert f["manufacturer_image_length"] == len(image)
    assert f["manufacturer_image_hash"] == hashlib.sha256(image).hexdigest() == img.sha256
    assert img.segments[0].data == image
    assert img.segments[0].address is None
    assert len(img.segments) == 1
    inverted = opts["hw_min"] > opts["hw_max"]
    if rs is None or not any(rs):
        assert img.signature is None
        assert img.signature_status is SigStatus.UNSIGNED
        assert "signature is all zeros: unsigned." in img.problems
        assert len(img.problems) == 1 + inverted
    else:
        assert img.signature is not None
        assert img.signature.scheme == "ecdsa-p256-sha256"
        assert img.signature.value == rs
        assert img.signature.signed_data == image
        assert img.signature.status is SigStatus.UNCHECKED
        assert len(img.problems) == inverted
    name = gbcs_file_name(img)
    assert name == (
        f"{opts['manufacturer_code']:04X}-{opts['image_type']:04X}-"
        f"{opts['file_version']:08X}-{hashlib.sha256(image).hexdigest().upper()}.zigbee"
    )


@ROUND_TRIP
@given(
    opts=gbcs_options(),
    image=st.binary(max_size=200),
    rs=st.none() | st.binary(min_size=64, max_size=64),
)
def test_parse_ota_file_picks_gbcs(opts: dict[str, Any], image: bytes, rs: bytes | None) -> None:
    # A real payload starts with a stack pointer (here 0x80000000 after a zero half-word),
    # which read as a sub-element header declares far more data than any file holds.
    mi = b"\x00\x00\x00\x80" + image
    blob = build_gbcs_image(mi, sign=None if rs is None else (lambda _d: rs), **opts)
    assert parse_ota_file(blob) == parse_gbcs_image(blob)


def test_ambiguous_all_zero_image_is_gbcs() -> None:
    # Zero bytes also read as a chain of empty sub-elements that tiles the whole file;
    # without upgrade image data that Zigbee reading does not count, so GBCS wins.
    blob = build_gbcs_image(
        bytes(6), manufacturer_code=1, image_type=2, file_version=3, hw_min=0, hw_max=0
    )
    assert parse_zigbee_ota(blob).container == "zigbee-ota"
    img = parse_ota_file(blob)
    assert img.container == "gbcs-ota"
    assert img.payload == bytes(6)
    assert img.signature is None


def test_zigbee_with_gbcs_shaped_tail_stays_zigbee() -> None:
    # A clean Zigbee file whose byte 65 from the end happens to be 0x40.
    blob = build_zigbee_ota(
        [(0, b"app" * 20), (0xF000, b"\x40" + bytes(64))],
        manufacturer_code=0x1234,
        image_type=1,
        file_version=2,
    )
    assert blob[-65] == 0x40
    assert parse_ota_file(blob).container == "zigbee-ota"


# --- GBCS signatures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def payload() -> bytes:
    return demo_payload(0x0105_0000, size=4096)


def gbcs(payload: bytes, sign: Callable[[bytes], bytes] | None, **kw: Any) -> bytes:
    opts: dict[str, Any] = {
        "manufacturer_code": 0x1234,
        "image_type": 0x0401,
        "file_version": 0x0105_0000,
        "hw_min": 1,
        "hw_max": 3,
    }
    opts.update(kw)
    return build_gbcs_image(payload, sign=sign, **opts)


def test_gbcs_signed_verifies(key: ec.EllipticCurvePrivateKey, payload: bytes) -> None:
    blob = gbcs(payload, ecdsa_p256_sign(key), force_replace=1)
    img = parse_ota_file(blob, "hub.zigbee")
    assert img.container == "gbcs-ota"
    assert img.payload == payload
    assert img.descriptor is not None and img.descriptor.firmware_version == 0x0105_0000
    assert img.fields["force_replace"] == 1
    assert img.problems == ()
    sig = img.signature
    assert sig is not None and sig.status is SigStatus.UNCHECKED and len(sig.value) == 64
    assert ecdsa_p256_verify(key.public_key(), sig.signed_data, sig.value)
    other = ec.generate_private_key(ec.SECP256R1())
    assert not ecdsa_p256_verify(other.public_key(), sig.signed_data, sig.value)
    assert img.with_signature_status(SigStatus.VALID, "k.pem").signature_status is SigStatus.VALID


def test_gbcs_flipped_image_byte_fails(key: ec.EllipticCurvePrivateKey, payload: bytes) -> None:
    blob = bytearray(gbcs(payload, ecdsa_p256_sign(key)))
    blob[60 + 1000] ^= 0x01
    img = parse_gbcs_image(bytes(blob))
    assert img.signature is not None
    assert img.payload != payload
    assert not ecdsa_p256_verify(key.public_key(), img.signature.signed_data, img.signature.value)


@pytest.mark.parametrize("where", [0, 31, 32, 63])
def test_gbcs_tampered_signature_fails(
    key: ec.EllipticCurvePrivateKey, payload: bytes, where: int
) -> None:
    blob = bytearray(gbcs(payload, ecdsa_p256_sign(key)))
    blob[len(blob) - 64 + where] ^= 0x80
    img = parse_gbcs_image(bytes(blob))
    assert img.signature is not None
    assert not ecdsa_p256_verify(key.public_key(), img.signature.signed_data, img.signature.value)


def test_verify_odd_signatures(key: ec.EllipticCurvePrivateKey) -> None:
    pub = key.public_key()
    good = ecdsa_p256_sign(key)(b"data")
    assert ecdsa_p256_verify(pub, b"data", good)
    assert not ecdsa_p256_verify(pub, b"data", good[:63])
    assert not ecdsa_p256_verify(pub, b"data", bytes(64))
    assert not ecdsa_p256_verify(pub, b"data", b"\xff" * 64)


def test_only_p256_keys() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        ecdsa_p256_sign(other)
    with pytest.raises(ValueError, match="P-256"):
        ecdsa_p256_verify(other.public_key(), b"", bytes(64))


def test_gbcs_zero_signature_is_unsigned(payload: bytes) -> None:
    img = parse_ota_file(gbcs(payload, None))
    assert img.container == "gbcs-ota"
    assert img.signature is None
    assert img.signature_status is SigStatus.UNSIGNED
    assert img.problems == ("signature is all zeros: unsigned.",)


@pytest.mark.parametrize("change", ["append", "cut", "field"])
def test_gbcs_size_mismatch_refused(payload: bytes, change: str) -> None:
    blob = gbcs(payload, lambda d: bytes(range(64)))
    if change == "append":
        blob += b"\0"
    elif change == "cut":
        blob = blob[:-1]
    else:
        blob = blob[:52] + struct.pack("<I", len(blob) + 4) + blob[56:]
    with pytest.raises(ImageFormatError, match="total image size") as info:
        parse_gbcs_image(blob, "bad.zigbee")
    assert info.value.offset == 52
    assert "bad.zigbee" in str(info.value)
    assert "no sub-elements to fall back on" in str(info.value)


def test_gbcs_layout_refusals(payload: bytes) -> None:
    blob = bytearray(gbcs(payload, lambda d: bytes(range(64))))
    blob[-65] = 0x41
    with pytest.raises(ImageFormatError, match="expected 0x40") as info:
        parse_gbcs_image(bytes(blob))
    assert info.value.offset == len(blob) - 65
    # 66 bytes after the header hold no Manufacturer Image.
    short = build_zigbee_ota([], manufacturer_code=1, image_type=1, file_version=1)
    exact = short[:52] + struct.pack("<I", len(short) + 66) + short[56:] + bytes(66)
    with pytest.raises(ImageFormatError, match="too few"):
        parse_gbcs_image(exact)
    with pytest.raises(ImageFormatError, match="not a Zigbee OTA header"):
        parse_gbcs_image(b"\0" + bytes(blob))


def test_gbcs_other_field_control(payload: bytes) -> None:
    # A GBCS layout behind a header with no optional fields: accepted, and noted.
    body = payload + b"\x00\x40" + bytes(range(1, 65))
    header = build_zigbee_ota([], manufacturer_code=1, image_type=2, file_version=3)
    header = header[:52] + struct.pack("<I", len(header) + len(body))
    img = parse_gbcs_image(header + body)
    assert (img.payload, img.hw_min, img.hw_max) == (payload, None, None)
    assert img.fields["field_control"] == 0
    assert any("field control is 0x0000" in p for p in img.problems)


def test_gbcs_file_name(key: ec.EllipticCurvePrivateKey, payload: bytes) -> None:
    img = parse_gbcs_image(gbcs(payload, ecdsa_p256_sign(key), manufacturer_code=0xAB))
    name = gbcs_file_name(img)
    assert re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{8}-[0-9A-F]{64}\.zigbee", name)
    assert name == f"00AB-0401-01050000-{hashlib.sha256(payload).hexdigest().upper()}.zigbee"
    zig = parse_zigbee_ota(
        build_zigbee_ota([(0, payload)], manufacturer_code=1, image_type=1, file_version=1)
    )
    with pytest.raises(ValueError, match="gbcs-ota"):
        gbcs_file_name(zig)


def test_builder_argument_checks(payload: bytes) -> None:
    with pytest.raises(ValueError, match="empty"):
        gbcs(b"", None)
    with pytest.raises(ValueError, match="64 bytes"):
        gbcs(payload, lambda d: bytes(63))
    with pytest.raises(ValueError, match="manufacturer_code"):
        gbcs(payload, None, manufacturer_code=0x10000)
    with pytest.raises(ValueError, match="header_string"):
        gbcs(payload, None, header_string=bytes(33))
    with pytest.raises(ValueError, match="destination"):
        build_zigbee_ota([], manufacturer_code=1, image_type=1, file_version=1, destination=b"x")
    with pytest.raises(ValueError, match="tag"):
        build_zigbee_ota([(0x10000, b"")], manufacturer_code=1, image_type=1, file_version=1)


# --- Zigbee header and size edge cases -----------------------------------------------------


def zig(elems: list[tuple[int, bytes]] | None = None, **kw: Any) -> bytes:
    opts: dict[str, Any] = {"manufacturer_code": 0x1234, "image_type": 0x0401, "file_version": 7}
    opts.update(kw)
    return build_zigbee_ota([(0, b"firmware" * 8)] if elems is None else elems, **opts)


def set_total(blob: bytes, total: int) -> bytes:
    return blob[:52] + struct.pack("<I", total) + blob[56:]


def test_total_size_larger_but_elements_whole() -> None:
    blob = zig([(0, b"abc" * 10), (3, bytes(16))])
    img = parse_zigbee_ota(set_total(blob, len(blob) + 500))
    assert img.payload == b"abc" * 10
    assert img.problems == (
        f"total image size field says {len(blob) + 500} bytes, but only {len(blob)} are present; "
        "the sub-elements were read to the end of the data.",
    )


def test_total_size_smaller_then_elements_continue() -> None:
    blob = zig([(0, b"abc" * 10), (3, bytes(16))])
    img = parse_zigbee_ota(set_total(blob, 56 + 6 + 30))
    assert [e[0] for e in img.fields["sub_elements"]] == [0, 3]
    assert len(img.problems) == 1 and "the field is wrong" in img.problems[0]
    # Cutting the size field inside an element that the data holds: also the field's fault.
    img = parse_zigbee_ota(set_total(blob, 56 + 10))
    assert [e[0] for e in img.fields["sub_elements"]] == [0, 3]
    assert "runs past the total image size" in img.problems[0]


def test_total_size_below_header() -> None:
    blob = zig()
    img = parse_zigbee_ota(set_total(blob, 10))
    assert img.payload == b"firmware" * 8
    assert "less than the 56-byte header" in img.problems[0]


def test_trailing_bytes_and_crc_note() -> None:
    blob = zig()
    crc = zlib.crc32(blob).to_bytes(4, "little")
    img = parse_zigbee_ota(blob + crc)
    assert img.fields["trailing_bytes"] == crc
    assert img.problems == (
        f"4 bytes after the end of the image at offset {len(blob)} (total image size field: "
        f"{len(blob)} bytes) were ignored. Their last 4 bytes are a CRC-32 (zlib) of "
        "everything before them.",
    )
    img = parse_zigbee_ota(blob + b"\xff\xff")
    assert img.problems[0].endswith("were ignored.")


def test_leftover_inside_total_size() -> None:
    blob = zig() + b"\x18\x34"
    img = parse_zigbee_ota(set_total(blob, len(blob)))
    assert img.problems == (
        f"2 bytes at offset {len(blob) - 2}, after the last sub-element, are too few for a "
        "sub-element and were ignored.",
    )


@pytest.mark.parametrize("cut", [1, 3, 5, 6, 20])
def test_truncated_refused(cut: int) -> None:
    blob = zig([(0, b"x" * 40), (0xF000, b"y" * 20)])
    with pytest.raises(ImageFormatError, match="truncated") as info:
        parse_ota_file(blob[:-cut], "cut.ota")
    assert info.value.offset is not None and "cut.ota" in str(info.value)
    assert "get the whole file again" in str(info.value)


def test_truncated_header_refused() -> None:
    blob = zig(hw_range=(1, 2), destination=bytes(8))
    for n in (4, 30, 56, 60, blob[6] - 1):
        with pytest.raises(ImageFormatError, match="truncated in the OTA header"):
            parse_zigbee_ota(blob[:n])


def test_header_length_too_small_refused() -> None:
    blob = bytearray(zig(hw_range=(1, 2)))
    blob[6] = 58
    with pytest.raises(ImageFormatError, match="needs 60") as info:
        parse_zigbee_ota(bytes(blob))
    assert info.value.offset == 6


def test_header_extra_reserved_bits_version() -> None:
    body = struct.pack("<HI", 0, 4) + b"code"
    header = bytearray(zig([]))
    header[4:6] = struct.pack("<H", 0x0200)
    header[6:8] = struct.pack("<H", 60)
    header[8:10] = struct.pack("<H", 0x0010)
    blob = set_total(bytes(header) + b"EXTR" + body, 60 + len(body))
    img = parse_zigbee_ota(blob)
    assert img.payload == b"code"
    assert img.fields["header_extra"] == b"EXTR"
    assert len(img.problems) == 3
    assert "header version is 0x0200" in img.problems[0]
    assert "reserved bits 0x0010" in img.problems[1]
    assert "4 more than field control" in img.problems[2]


def test_not_an_ota_file() -> None:
    for data in (b"", b"hello", bytes(5000), b"\x1e\xf1\xee"):
        with pytest.raises(ImageFormatError):
            parse_ota_file(data)
    with pytest.raises(ImageFormatError, match="first 1028 bytes"):
        parse_zigbee_ota(bytes(MAX_PREFIX + 1) + zig())


def test_duplicate_tags_and_odd_sizes() -> None:
    blob = zig([(0, b"a"), (0, b"b"), (0xF000, b"1"), (0xF000, b"2"), (1, bytes(50)), (1, b"s")])
    img = parse_zigbee_ota(blob)
    assert [s.data for s in img.segments] == [b"a", b"b"]
    assert (img.fields["tag_0xF000"], img.fields["tag_0xF000_2"]) == (b"1", b"2")
    assert img.fields["signature_suite1_2"] == b"s"
    assert img.signature is not None and img.signature.value == bytes(42)
    assert any("2 signature sub-elements" in p for p in img.problems)
    assert any("is 1 bytes; the suite defines 50" in p for p in img.problems)


# --- wrappers ------------------------------------------------------------------------------


def test_vendor_prefix() -> None:
    blob = zig()
    img = parse_ota_file(b"VENDOR" * 10 + blob)
    assert img.payload == b"firmware" * 8
    assert img.fields["header_offset"] == 60
    assert img.fields["wrapper"] == "prefix"
    assert img.problems == ("a 60-byte vendor prefix precedes the OTA header; it was skipped.",)
    assert img.fields["sub_elements"][0][2] == 60 + 56
    with pytest.raises(ImageFormatError, match="truncated") as info:
        parse_ota_file(b"P" * 10 + blob[:-1])
    assert info.value.offset == 10 + 56


def test_legrand_wrapper() -> None:
    blob = zig()
    wrapped = struct.pack("<I", len(blob)) + blob + bytes(17)
    img = parse_ota_file(wrapped)
    assert img.payload == b"firmware" * 8
    assert (img.fields["wrapper"], img.fields["header_offset"]) == ("legrand", 4)
    assert "Legrand" in img.problems[0] and len(img.problems) == 1


def test_thirdreality_wrapper() -> None:
    blob = zig()
    rest = bytearray(88) + blob
    rest[4:8] = struct.pack("<I", len(rest))  # offset 68 in the whole file
    wrapped = hashlib.sha512(bytes(rest)).digest() + bytes(rest)
    img = parse_ota_file(wrapped)
    assert img.payload == b"firmware" * 8
    assert (img.fields["wrapper"], img.fields["header_offset"]) == ("thirdreality", 152)
    assert "Third Reality" in img.problems[0] and len(img.problems) == 1
    # A wrong hash: still found, as an unknown prefix.
    broken = b"\0" + wrapped[1:]
    assert parse_ota_file(broken).fields["wrapper"] == "prefix"


def ngis(inner: bytes, tail: bytes = b"SIGNATURE") -> bytes:
    offset = 32
    head = b"NGIS" + bytes(12) + struct.pack("<II", offset, len(inner)) + bytes(8)
    return head + inner + tail


def test_ikea_wrapper() -> None:
    blob = zig()
    img = parse_ota_file(ngis(blob))
    assert img.payload == b"firmware" * 8
    assert (img.fields["wrapper"], img.fields["header_offset"]) == ("ikea-ngis", 32)
    assert len(img.problems) == 1 and "other 41 bytes were ignored" in img.problems[0]
    # IKEA images whose total size stops short of the data: the rest is the image's end.
    short = set_total(blob, len(blob) - 10)
    short = short[:58] + struct.pack("<I", 54) + short[62:]
    img = parse_ota_file(ngis(short))
    assert img.payload == b"firmware" * 8
    assert "taken as the end of the upgrade image" in img.problems[1]
    with pytest.raises(ImageFormatError, match="truncated"):
        parse_ota_file(ngis(blob)[:40])
    with pytest.raises(ImageFormatError, match="NGIS"):
        parse_ota_file(b"NGIS" + bytes(12))
    with pytest.raises(ImageFormatError, match="does not point at"):
        parse_ota_file(ngis(b"\0" * 80))


def test_hue_sbl() -> None:
    firmware = b"\x2a\x00\x01" + bytes(range(256)) * 4
    header = zig([], manufacturer_code=0x100B)
    blob = set_total(header + firmware, len(header) + len(firmware))
    img = parse_ota_file(blob)
    assert img.payload == firmware
    assert img.fields["wrapper"] == "hue-sbl"
    assert img.fields["sub_elements"] == ()
    assert "Hue SBL" in img.problems[0] and len(img.problems) == 1
    # Any other manufacturer: the same bytes are a truncated sub-element.
    other = zig([], manufacturer_code=0x1234)
    with pytest.raises(ImageFormatError, match="truncated"):
        parse_ota_file(set_total(other + firmware, len(other) + len(firmware)))


# --- the corpus of real files --------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a corpus file's name says (None: the name does not say) and what we find."""

    m: int | None = None
    t: int | None = None
    v: int | None = None
    tags: tuple[int, ...] = (0,)
    signature: str | None = None
    problems: tuple[str, ...] = ()  # one regex per expected problem, in order


CORPUS_EXPECT: dict[str, Expect | str] = {
    "00-zbswv_v1.0.4.ota": Expect(v=0x0000_1004),  # v1.0.4
    "01-Bituo_ZS2S_signing_app14.ota": Expect(v=14),  # app14
    "02-ct-clamp-ota-lzma-TEST-v1_1_4.ota": Expect(v=0x0001_0104),  # v1_1_4
    "03-Smart_Air_Quality_Sensor_OTA_v17_v1.00.17.ota": Expect(v=17),  # v17
    "04-10F2-7B32-0000-0001-02600460-spo-fms-rev0-1.ota.zigbee": Expect(
        0x10F2, 0x7B32, 0x0260_0460, tags=(0xF7BD, 0, 3)
    ),
    "05-10F2-7B34-0000-0007-02600462-spo-fmsh.ota.zigbee": Expect(
        0x10F2, 0x7B34, 0x0260_0462, tags=(0xF7BD, 0, 3)
    ),
    "06-128b-2002-040300-700_p2022_HSP_tphu_fw_efr32_V040300.zigbee": Expect(
        0x128B, 0x2002, 0x0004_0300, tags=(0, 3)
    ),
    "07-1166-012D-24031511-upgradeMe-RB_266.zigbee": Expect(
        0x1166, 0x012D, 0x2403_1511, tags=(0, 3)
    ),
    # 152F_SBDV-00199 ... _06000000: manufacturer, image type 0x0199, version.
    "08-152F_SBDV-00199_switch2gang_r_6_3d00993b_06000000.ota.zigbee": Expect(
        0x152F,
        0x0199,
        0x0600_0000,
        tags=(0, 0xFF01, 5),
        signature="zigbee-ecqv-suite2",
        problems=(r"^16 bytes after the end of the image at offset 230196 .* CRC-32/JAMCRC",),
    ),
    "09-100B-0117-01000C00-ConfLightBLE-ModuLum-EFR32MG21.zigbee": Expect(
        0x100B, 0x0117, 0x0100_0C00, tags=(0xF000, 0, 0xF100, 0xF101, 0xF102)
    ),
    # v587753009 is the file version in decimal.
    "10-tradfri-bulb-cws-zll_release_prod_v587753009_ec8b1193-0fa2-440e-b921-2412a8688b74.ota": (
        Expect(v=587753009, tags=(0, 0xFFBA))
    ),
    "11-SLG2CF1_20180116_v00160501.ota": Expect(
        v=0x0016_0501, problems=(r"^4 bytes after the end of the image .* CRC-32 \(zlib\)",)
    ),
    "12-152F_SBDV-00205_thermostat_r_7_7bd95d88_07000000.ota.zigbee": Expect(
        0x152F,
        0x0205,
        0x0700_0000,
        tags=(0, 0xFF01, 5),
        signature="zigbee-ecqv-suite2",
        problems=(r"^4 bytes after the end of the image at offset 265600 .* CRC-32/JAMCRC",),
    ),
    "13-A60_TW_T-0x00B7-0x03483712-MF_DIS.OTA": Expect(
        t=0x00B7,
        v=0x0348_3712,
        tags=(0xF000,),
        problems=(r"^2 bytes at offset 251278, after the last", r"^no upgrade image sub-element"),
    ),
    "14-tcl-1-zb-s_hw1.x_fw0.6.1_ota20.ota": "truncated",
    "15-6565-0391-10213001-tuya_thermostat_zrd.zigbee": Expect(0x6565, 0x0391, 0x1021_3001),
    "16-10F2-7B0D-0000-0001-01500427-m7b-h1.ota.zigbee": Expect(
        0x10F2, 0x7B0D, 0x0150_0427, tags=(0xF7BD, 0, 3)
    ),
}


@cache
def corpus_bytes(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@needs_corpus
def test_corpus_is_the_one_we_expect() -> None:
    assert sorted(CORPUS_EXPECT) == CORPUS_FILES


@needs_corpus
@pytest.mark.parametrize("name", sorted(CORPUS_EXPECT))
def test_corpus_file(name: str) -> None:
    if not (CORPUS / name).exists():
        pytest.skip(f"{name} is not in the corpus")
    data = corpus_bytes(name)
    expect = CORPUS_EXPECT[name]
    if isinstance(expect, str):
        with pytest.raises(ImageFormatError, match=expect) as info:
            parse_ota_file(data, name)
        assert name in str(info.value) and info.value.offset is not None
        return
    img = parse_ota_file(data, name)
    assert img.container == "zigbee-ota"
    for got, want in (
        (img.manufacturer_code, expect.m),
        (img.image_type, expect.t),
        (img.file_version, expect.v),
    ):
        assert got is not None
        if want is not None:
            assert got == want
    assert tuple(e[0] for e in img.fields["sub_elements"]) == expect.tags
    assert img.fields["file_size"] == len(data)
    images = [e for e in img.fields["sub_elements"] if e[0] == 0]
    if images:
        assert [len(s.data) for s in img.segments] == [e[3] for e in images]
        assert all(s.name == "upgrade image" for s in img.segments)
    if expect.signature is None:
        assert img.signature is None
    else:
        assert img.signature is not None
        assert img.signature.scheme == expect.signature
        assert img.signature.status is SigStatus.UNSUPPORTED
    assert len(img.problems) == len(expect.problems), img.problems
    for want, got in zip(expect.problems, img.problems, strict=True):
        assert re.search(want, got), (want, got)


@needs_corpus
def test_exactly_one_corpus_file_refused() -> None:
    refused = []
    for name in CORPUS_FILES:
        try:
            parse_ota_file(corpus_bytes(name), name)
        except ImageFormatError as exc:
            refused.append((name, str(exc)))
    assert [name for name, _ in refused] == ["14-tcl-1-zb-s_hw1.x_fw0.6.1_ota20.ota"]
    assert "truncated" in refused[0][1]
    assert "total image size field: 278830 bytes, file: 92222" in refused[0][1]


# Files whose sub-elements end exactly at the total size, which is the file size.
TIDY = [
    name
    for name, e in CORPUS_EXPECT.items()
    if isinstance(e, Expect) and not e.problems and name in CORPUS_FILES
]


@needs_corpus
@FUZZ
@given(name=st.sampled_from(TIDY or ["-"]), data=st.data())
def test_corpus_cut_anywhere(name: str, data: st.DataObject) -> None:
    whole = corpus_bytes(name)
    full = parse_ota_file(whole)
    ends = {off + 6 + length for _tag, _name, off, length in full.fields["sub_elements"]}
    ends.add(full.fields["header_length"])
    base = data.draw(
        st.one_of(st.integers(0, 300), st.sampled_from(sorted(ends)), st.integers(0, len(whole)))
    )
    cut = max(0, min(base + data.draw(st.integers(-8, 8)), len(whole) - 1))
    part = whole[:cut]
    if cut in ends:
        # The file stops on a sub-element boundary: readable, and the size field is wrong.
        img = parse_ota_file(part)
        assert any("total image size field says" in p for p in img.problems)
        return
    with pytest.raises(ImageFormatError) as info:
        parse_ota_file(part)
    if cut >= 4:
        assert "truncated" in str(info.value)


@needs_corpus
@FUZZ
@given(name=st.sampled_from(CORPUS_FILES or ["-"]), ops=mutations, data=st.data())
def test_corpus_mutated(name: str, ops: list[tuple[str, int, bytes]], data: st.DataObject) -> None:
    whole = corpus_bytes(name)
    # Aim some mutations at structure: the size field and sub-element headers.
    spots = [52, 6, 8] + [off for off in range(56, 400, 2)]
    ops = [
        (kind, data.draw(st.sampled_from(spots)) if data.draw(st.booleans()) else pos, blob)
        for kind, pos, blob in ops
    ]
    mutated = mutate(whole, ops)
    for parse in (parse_ota_file, parse_zigbee_ota, parse_gbcs_image):
        parse_or_refuse(parse, mutated)


@needs_corpus
@FUZZ
@given(name=st.sampled_from(CORPUS_FILES or ["-"]), keep=st.integers(0, 1 << 20))
def test_corpus_truncated(name: str, keep: int) -> None:
    whole = corpus_bytes(name)
    part = whole[: keep % (len(whole) + 1)]
    for parse in (parse_ota_file, parse_zigbee_ota, parse_gbcs_image):
        parse_or_refuse(parse, part)


# --- fuzzing built images ------------------------------------------------------------------


@FUZZ
@given(opts=header_options(), elems=elements, ops=mutations)
def test_mutated_zigbee(
    opts: dict[str, Any], elems: list[tuple[int, bytes]], ops: list[tuple[str, int, bytes]]
) -> None:
    blob = mutate(build_zigbee_ota(elems, **opts), ops)
    for parse in (parse_ota_file, parse_zigbee_ota, parse_gbcs_image):
        parse_or_refuse(parse, blob)


@FUZZ
@given(opts=gbcs_options(), image=st.binary(min_size=1, max_size=200), ops=mutations)
def test_mutated_gbcs(
    opts: dict[str, Any], image: bytes, ops: list[tuple[str, int, bytes]]
) -> None:
    blob = mutate(build_gbcs_image(image, sign=lambda d: hashlib.sha512(d).digest(), **opts), ops)
    for parse in (parse_ota_file, parse_zigbee_ota, parse_gbcs_image):
        parse_or_refuse(parse, blob)


@FUZZ
@given(opts=header_options(), elems=elements, data=st.data())
def test_truncated_zigbee(
    opts: dict[str, Any], elems: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    blob = build_zigbee_ota(elems, **opts)
    keep = data.draw(st.integers(0, len(blob) - 1))
    for parse in (parse_ota_file, parse_zigbee_ota, parse_gbcs_image):
        parse_or_refuse(parse, blob[:keep])
    # Cut anywhere but on a sub-element boundary, a Zigbee file is refused as truncated.
    hl = expected_header_length(opts)
    ends = {hl}
    for _tag, element in elems:
        ends.add(max(ends) + 6 + len(element))
    if keep >= 4 and keep not in ends:
        with pytest.raises(ImageFormatError, match="truncated"):
            parse_zigbee_ota(blob[:keep])


@FUZZ
@given(prefix=st.binary(max_size=64), junk=st.binary(max_size=2000))
def test_random_bytes(prefix: bytes, junk: bytes) -> None:
    for data in (junk, MAGIC + junk, prefix + MAGIC + junk, b"NGIS" + junk):
        for parse in (parse_ota_file, parse_zigbee_ota, parse_gbcs_image):
            parse_or_refuse(parse, data)


# -- sub-element bombs: counted while walking, memory in proportion to the file --------------


def _bomb(count: int, tag: int = 0xF000, total_fix: bool = True) -> bytes:
    """A Zigbee OTA file of one upgrade image and ``count`` empty sub-elements."""
    head = zig([(0, b"firmware" * 8)])
    blob = head + struct.pack("<HI", tag, 0) * count
    return set_total(blob, len(blob)) if total_fix else blob


@pytest.mark.parametrize("tag", [0x0000, 0x0003, 0xF000])
def test_too_many_sub_elements_are_refused_while_walking(tag: int) -> None:
    data = _bomb(MAX_SUB_ELEMENTS, tag)
    with pytest.raises(ImageFormatError) as info:
        parse_ota_file(data, "bomb.zigbee")
    assert info.value.message.startswith(
        f"bomb.zigbee: zigbee-ota: more than {MAX_SUB_ELEMENTS} sub-elements"
    )
    first_extra = 56 + 6 + 64 + 6 * (MAX_SUB_ELEMENTS - 1)
    assert info.value.offset == first_extra


def test_past_the_total_size_too_many_elements_are_trailing_bytes() -> None:
    # The size field covers the upgrade image only. A few whole sub-elements after it mean
    # the field is wrong; more than the cap (zero padding reads as empty ones) do not.
    few = _bomb(3, total_fix=False)
    assert len(parse_ota_file(few).fields["sub_elements"]) == 4
    data = _bomb(MAX_SUB_ELEMENTS, total_fix=False)
    image = parse_ota_file(data)
    assert len(image.fields["sub_elements"]) == 1
    assert image.problems[0].startswith(f"{6 * MAX_SUB_ELEMENTS} bytes after the end of the image")


def test_up_to_the_cap_parses() -> None:
    image = parse_ota_file(_bomb(MAX_SUB_ELEMENTS - 1))
    assert len(image.fields["sub_elements"]) == MAX_SUB_ELEMENTS
    assert image.payload == b"firmware" * 8


def test_a_bomb_of_millions_is_refused_quickly() -> None:
    data = _bomb(2_000_000)  # 12 MB
    with pytest.raises(ImageFormatError, match="more than 1024 sub-elements"):
        parse_ota_file(data)


def test_element_data_shares_the_file_until_kept() -> None:
    # The upgrade image is the only copy of the payload the parse keeps.
    image = parse_ota_file(zig([(0, b"a" * 4096), (0xF000, b"b" * 10)]))
    assert type(image.payload) is bytes and image.payload == b"a" * 4096
    assert type(image.fields["tag_0xF000"]) is bytes

"""MCUboot images: layout as image.h says, hash and signature checked, copies that must
agree, caps before slicing, and the trust store deciding whether the signer is trusted."""

from __future__ import annotations

import contextlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_images import mcuboot as m
from firmware_images.identity import signature_coverage
from firmware_images.loader import detect, parse_bytes
from firmware_images.model import ImageFormatError, SigStatus
from firmware_images.trust import TrustStore
from firmware_images.zigbee import ecdsa_p256_sign
from sim.smp import demo_app, demo_image

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
VERSION = 0x0105_0002


def test_header_layout() -> None:
    data = demo_image(VERSION, size=4096)
    magic, _load, hdr, prot, size, flags, ma, mi, rev, build, pad = struct.unpack_from(
        "<IIHHIIBBHII", data
    )
    assert (magic, hdr, prot, size, flags) == (0x96F3B83D, 0x200, 0, 4096, 0)
    assert (ma, mi, rev, build) == (1, 5, 0, 2) and pad == 0
    info = struct.unpack_from("<HH", data, 0x200 + 4096)
    assert info[0] == 0x6907 and 0x200 + 4096 + info[1] == len(data)
    assert struct.unpack_from("<HH", data, 0x200 + 4096 + 4) == (0x10, 32)
    assert detect(data) == "mcuboot"


def test_signed_image_verifies_only_with_its_key() -> None:
    data = demo_image(VERSION, size=4096, sign=ecdsa_p256_sign(KEY))
    parsed = parse_bytes(data, "app.bin")
    assert parsed.container == "mcuboot" and parsed.file_version == VERSION
    assert parsed.payload == demo_app(VERSION, size=4096)
    assert TrustStore((("k.pem", KEY.public_key()),)).check(parsed).signature_status is (
        SigStatus.VALID
    )
    other = TrustStore((("o.pem", OTHER.public_key()),)).check(parsed)
    assert other.signature_status is SigStatus.INVALID
    unsigned = parse_bytes(demo_image(VERSION, size=4096))
    assert unsigned.signature_status is SigStatus.UNSIGNED


def test_a_signed_images_identity_counts_as_signed_and_inspect_says_what_is_covered() -> None:
    """The trust store verifies MCUboot's signature, so the identity inside it is the signed
    one (as a GBCS Manufacturer Image's is), and inspect does not call it unverifiable."""
    signed = parse_bytes(demo_image(VERSION, size=4096, sign=ecdsa_p256_sign(KEY)), "app.bin")
    trusted = signed.trusted_identity
    assert trusted is not None and trusted.signed and trusted.version == VERSION
    cover = signature_coverage(signed)
    assert any("header" in part and "version" in part for part in cover.covered)
    assert "not verified" not in cover.note
    unsigned = parse_bytes(demo_image(VERSION, size=4096), "app.bin")
    assert unsigned.trusted_identity is not None and not unsigned.trusted_identity.signed
    assert signature_coverage(unsigned).covered == ()


@settings(max_examples=60)
@given(st.integers(0, 0x200 + 4096 - 1), st.integers(1, 255))
def test_any_change_to_what_is_signed_is_refused_or_fails(at: int, flip: int) -> None:
    data = bytearray(demo_image(VERSION, size=4096, sign=ecdsa_p256_sign(KEY)))
    data[at] ^= flip
    with pytest.raises(ImageFormatError):
        m.read_mcuboot(bytes(data))  # the SHA-256 TLV no longer matches (or the header)


def test_header_version_must_agree_with_descriptor() -> None:
    payload = demo_app(VERSION, size=4096)
    data = m.build_mcuboot(payload, m.ImageVersion(1, 6, 0, 0))
    with pytest.raises(ImageFormatError, match="disagree"):
        parse_bytes(data)


def test_duplicate_tlvs_must_agree() -> None:
    data = demo_image(VERSION, size=4096)
    end = 0x200 + 4096
    total = struct.unpack_from("<H", data, end + 2)[0]
    extra = struct.pack("<HH", 0x10, 32) + b"\x00" * 32
    forged = data[:end] + struct.pack("<HH", 0x6907, total + len(extra)) + data[end + 4 :] + extra
    with pytest.raises(ImageFormatError, match="different SHA-256"):
        m.read_mcuboot(forged)


@pytest.mark.parametrize(
    "field,value,match",
    [(8, 0x10, "header size"), (12, 0xFFFF_FFF0, "beyond the file"), (16, 0x04, "encrypted")],
)
def test_sizes_are_checked_before_use(field: int, value: int, match: str) -> None:
    data = bytearray(demo_image(VERSION, size=4096))
    fmt = "<H" if field == 8 else "<I"
    struct.pack_into(fmt, data, field, value)
    with pytest.raises(ImageFormatError, match=match):
        m.read_mcuboot(bytes(data))


@given(st.binary(max_size=600))
def test_garbage_after_the_magic_never_crashes(tail: bytes) -> None:
    with contextlib.suppress(ImageFormatError):
        m.read_mcuboot(struct.pack("<I", m.MAGIC) + tail)


def test_version_texts() -> None:
    v = m.ImageVersion(1, 2, 3, 4)
    assert (str(v), v.smp_text, v.as_int) == ("1.2.3+4", "1.2.3.4", 0x01020304)
    assert m.ImageVersion.parse_smp("1.2.3") == m.ImageVersion(1, 2, 3, 0)
    assert m.ImageVersion(1, 2, 300, 0).as_int is None
    with pytest.raises(ValueError):
        m.ImageVersion.parse_smp("1.2")

"""Loading images from HEX, S-record and raw files, and refusing what is not an image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import bincopy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.gbl import build_gbl
from firmware_images.loader import flashable, load_image, parse_file
from firmware_images.model import SigStatus
from firmware_images.trust import TrustStore
from firmware_images.zigbee import build_gbcs_image, ecdsa_p256_sign
from sim import gecko

ADDR = 0x0800_0000


@pytest.fixture
def payload() -> bytes:
    return demo_payload(0x01050000, size=8192)


def test_intel_hex(tmp_path: Path, payload: bytes) -> None:
    bf = bincopy.BinFile()
    bf.add_binary(payload, address=ADDR)
    path = tmp_path / "app.hex"
    path.write_text(bf.as_ihex())
    img = load_image(path)
    assert (img.kind, img.address, img.data) == ("ihex", ADDR, payload)
    assert img.descriptor.firmware_version == 0x01050000


def test_srecord(tmp_path: Path, payload: bytes) -> None:
    bf = bincopy.BinFile()
    bf.add_binary(payload, address=ADDR)
    path = tmp_path / "app.s37"
    path.write_text(bf.as_srec())
    img = load_image(path)
    assert (img.kind, img.address, img.data) == ("srec", ADDR, payload)


def test_raw_binary_needs_an_address(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(payload)
    with pytest.raises(ImageError, match="no load address"):
        load_image(path)
    assert load_image(path, ADDR).data == payload


def test_hex_with_conflicting_address(tmp_path: Path, payload: bytes) -> None:
    bf = bincopy.BinFile()
    bf.add_binary(payload, address=ADDR)
    path = tmp_path / "app.hex"
    path.write_text(bf.as_ihex())
    with pytest.raises(ImageError, match="loads at 0x08000000"):
        load_image(path, 0x0800_4000)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("notes.txt", b"hello, this is not firmware\n" * 40, "no application descriptor"),
        ("empty.bin", b"", "empty"),
        ("bad.hex", b":10000000ZZZZ\n", "not a valid ihex"),
        ("short.bin", b"\x00" * 64, "too short"),
    ],
)
def test_not_an_image(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=match):
        load_image(path, ADDR)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.hex")


def test_corrupt_payload_in_a_valid_hex(tmp_path: Path, payload: bytes) -> None:
    bad = bytearray(payload)
    bad[5000] ^= 0x01
    bf = bincopy.BinFile()
    bf.add_binary(bytes(bad), address=ADDR)
    path = tmp_path / "app.hex"
    path.write_text(bf.as_ihex())
    with pytest.raises(ImageError, match="CRC-32 mismatch"):
        load_image(path)


# -- a GBL carried inside a GBCS image (how Silicon Labs radio firmware is shipped) ---------


def _gbcs_wrapping_gbl(tmp_path: Path, gbl_bytes: bytes) -> tuple[Path, TrustStore]:
    key = ec.generate_private_key(ec.SECP256R1())
    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    (trust_dir / "k.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    data = build_gbcs_image(
        gbl_bytes,
        manufacturer_code=0x1234,
        image_type=gecko.IMAGE_TYPE,
        file_version=0x01050000,
        hw_min=1,
        hw_max=3,
        sign=ecdsa_p256_sign(key),
    )
    path = tmp_path / "radio.zigbee"
    path.write_bytes(data)
    return path, TrustStore.from_dir(trust_dir)


def test_gbcs_image_wrapping_a_gbl(tmp_path: Path) -> None:
    app = gecko.demo_app(0x01050000, size=8192)
    gbl_bytes = build_gbl([(gecko.APP_BASE, app)], app_version=0x01050000)
    path, trust = _gbcs_wrapping_gbl(tmp_path, gbl_bytes)
    img = flashable(trust.check(parse_file(path)), gecko.APP_BASE)
    # The application is checked as the hub will run it; the GBL is what the bootloader gets.
    assert (img.kind, img.address, img.data) == ("gbl", gecko.APP_BASE, app)
    assert img.bootloader_file.raw == gbl_bytes
    assert img.descriptor.firmware_version == 0x01050000
    # Signature and identity stay the GBCS container's; its hash is the Manufacturer Image's.
    assert img.parsed.container == "gbcs-ota"
    assert img.signature_status is SigStatus.VALID
    assert img.sha256 == hashlib.sha256(gbl_bytes).hexdigest() == img.parsed.sha256


def test_gbcs_image_wrapping_a_damaged_gbl_is_refused(tmp_path: Path) -> None:
    app = gecko.demo_app(0x01050000, size=8192)
    gbl_bytes = bytearray(build_gbl([(gecko.APP_BASE, app)], app_version=0x01050000))
    gbl_bytes[-1] ^= 0xFF  # the END CRC-32 no longer matches
    path, trust = _gbcs_wrapping_gbl(tmp_path, bytes(gbl_bytes))
    with pytest.raises(ImageError, match=r"radio.zigbee \(its GBL payload\).*CRC"):
        flashable(trust.check(parse_file(path)), gecko.APP_BASE)


def test_gbcs_wrapped_gbl_for_another_address_is_refused(tmp_path: Path) -> None:
    app = gecko.demo_app(0x01050000, size=8192)
    gbl_bytes = build_gbl([(gecko.APP_BASE, app)], app_version=0x01050000)
    path, trust = _gbcs_wrapping_gbl(tmp_path, gbl_bytes)
    with pytest.raises(ImageError, match="loads at 0x00004000"):
        flashable(trust.check(parse_file(path)), 0x0800_0000)

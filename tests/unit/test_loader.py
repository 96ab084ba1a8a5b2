"""Loading images from HEX, S-record and raw files, and refusing what is not an image."""

from __future__ import annotations

from pathlib import Path

import bincopy
import pytest

from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.loader import load_image

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

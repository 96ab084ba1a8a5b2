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
from firmware_images.loader import (
    FILL_SPAN_LIMIT,
    MAX_TEXT_RUNS,
    flashable,
    load_image,
    parse_file,
)
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


# -- HEX / S-record spans: data outside flash, gaps too wide to fill, scattered records -------

FLASH = (0x0800_0000, 0x0808_0000)  # demo-an3155: 512 KiB


def _text_image(tmp_path: Path, name: str, *parts: tuple[int, bytes]) -> Path:
    bf = bincopy.BinFile()
    for address, data in parts:
        bf.add_binary(data, address=address)
    path = tmp_path / name
    path.write_text(bf.as_srec() if name.endswith(".s37") else bf.as_ihex())
    return path


@pytest.mark.parametrize("name", ["stray.hex", "stray.s37"])
@pytest.mark.parametrize("stray", [0x1FFF_7800, 0xFFFF_FFF0])
def test_data_outside_flash_is_refused_naming_the_address(
    tmp_path: Path, payload: bytes, name: str, stray: int
) -> None:
    path = _text_image(tmp_path, name, (ADDR, payload), (stray, b"\x5a" * 16))
    want = (
        f"{path}: data at 0x{stray:08X}..0x{stray + 16:08X} is outside the hub's flash "
        "0x08000000..0x08080000"
    )
    with pytest.raises(ImageError) as info:
        parse_file(path, flash=FLASH)
    assert info.value.message == want
    with pytest.raises(ImageError) as info:
        load_image(path, flash=FLASH)
    assert info.value.message == want


def test_every_span_outside_flash_is_counted(tmp_path: Path, payload: bytes) -> None:
    low = (0x0000_1000, b"\1" * 4)
    path = _text_image(tmp_path, "x.hex", low, (ADDR, payload), (0x1FFF_7800, b"\2" * 16))
    with pytest.raises(ImageError, match=r"data at 0x00001000\.\.0x00001004 \(and 1 more span"):
        parse_file(path, flash=FLASH)


def test_data_inside_flash_loads(tmp_path: Path, payload: bytes) -> None:
    path = _text_image(tmp_path, "app.hex", (ADDR, payload))
    assert load_image(path, flash=FLASH).data == payload
    # The last byte of flash is inside; one past it is not.
    end = _text_image(tmp_path, "end.hex", (ADDR, payload), (FLASH[1] - 4, b"\0" * 4))
    assert parse_file(end, flash=FLASH).segments[0].address == ADDR
    over = _text_image(tmp_path, "over.hex", (ADDR, payload), (FLASH[1] - 4, b"\0" * 5))
    with pytest.raises(ImageError, match=r"0x0807FFFC\.\.0x08080001 is outside"):
        parse_file(over, flash=FLASH)


def test_a_gap_within_the_fill_limit_is_filled(tmp_path: Path, payload: bytes) -> None:
    path = _text_image(tmp_path, "gap.hex", (ADDR, payload), (ADDR + 0x10000, b"\1" * 16))
    image = parse_file(path)
    assert len(image.segments) == 1 and len(image.payload) == 0x10010
    assert image.payload[len(payload) : 0x10000] == b"\xff" * (0x10000 - len(payload))
    assert image.problems == ("2 segments with gaps, filled with 0xFF",)


@pytest.mark.parametrize("stray", [0x1FFF_7800, 0xFFFF_FFF0])
def test_a_span_too_wide_to_fill_lists_its_segments_apart(
    tmp_path: Path, payload: bytes, stray: int
) -> None:
    path = _text_image(tmp_path, "stray.hex", (ADDR, payload), (stray, b"\x5a" * 16))
    image = parse_file(path)  # no hub profile: `station image inspect`
    assert [(s.address, len(s.data)) for s in image.segments] == [(ADDR, len(payload)), (stray, 16)]
    assert image.segments[1].data == b"\x5a" * 16
    (problem,) = image.problems
    assert f"data spans 0x08000000..0x{stray + 16:08X}" in problem
    assert f"more than the {FILL_SPAN_LIMIT} bytes" in problem
    assert f"0x08000000..0x{ADDR + len(payload):08X}, 0x{stray:08X}..0x{stray + 16:08X}" in problem
    with pytest.raises(ImageError, match="holds 2 payloads"):
        load_image(path)


def test_scattered_records_are_refused_before_bincopy_sorts_them(tmp_path: Path) -> None:
    # One byte every other address: bincopy's linear insert would make this quadratic.
    parts = [(ADDR + 2 * i, b"\0") for i in range(MAX_TEXT_RUNS + 1)]
    path = _text_image(tmp_path, "sparse.hex", *parts)
    with pytest.raises(ImageError, match=rf"more than {MAX_TEXT_RUNS} separate runs"):
        parse_file(path)
    ok = _text_image(tmp_path, "ok.hex", *parts[:MAX_TEXT_RUNS])
    assert parse_file(ok).fields["segments"] == MAX_TEXT_RUNS


def test_bad_records_name_the_line(tmp_path: Path, payload: bytes) -> None:
    path = _text_image(tmp_path, "app.hex", (ADDR, payload))
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:-2] + ("00" if lines[3][-2:] != "00" else "01")
    path.write_text("\n".join(lines))
    with pytest.raises(ImageError, match=r"app\.hex is not a valid ihex file: line 4: "):
        parse_file(path)


# -- a file whose name or magic says what it is, that is not that -------------------------

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(4000)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(4000)


@pytest.mark.parametrize(
    ("name", "content", "tried", "looks"),
    [
        ("photo.zigbee", JPEG, "a Zigbee/GBCS OTA file", "a JPEG image"),
        ("photo.ota", PNG, "a Zigbee/GBCS OTA file", "a PNG image"),
        ("photo.gbl", JPEG, "a GBL file", "a JPEG image"),
        ("photo.DFU", JPEG, "a DFU file", "a JPEG image"),
    ],
    ids=["zigbee", "ota", "gbl", "dfu"],
)
def test_a_file_named_as_a_container_is_read_as_one(
    tmp_path: Path, name: str, content: bytes, tried: str, looks: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    suffix = Path(name).suffix
    for load in (
        lambda: load_image(path),
        lambda: load_image(path, ADDR),
        lambda: parse_file(path),
    ):
        with pytest.raises(ImageError) as info:
            load()
        text = str(info.value)
        assert text.startswith(str(path)), text
        assert f"; read as {tried}, as its name says ({suffix})" in text, text
        assert f"it looks like {looks}" in text, text
        assert "is a raw binary" not in text and "give --address" not in text, text


@pytest.mark.parametrize(
    ("name", "content", "tried", "why", "says"),
    [
        (
            "cut.bin",
            b"\x1e\xf1\xee\x0b" + bytes(30),
            "a Zigbee/GBCS OTA file",
            "it holds the OTA file identifier 1E F1 EE 0B",
            "truncated in the OTA header",
        ),
        (
            "cut.bin",
            b"\xeb\x17\xa6\x03" + bytes(30),
            "a GBL file",
            "it starts with the GBL HEADER tag EB 17 A6 03",
            "ends inside a tag header",
        ),
    ],
    ids=["ota", "gbl"],
)
def test_a_file_marked_as_a_container_says_what_it_was_read_as(
    tmp_path: Path, name: str, content: bytes, tried: str, why: str, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path, ADDR)
    text = str(info.value)
    assert f"; read as {tried}, as its content says ({why})" in text, text
    assert says in text and text.startswith(str(path)), text


def test_a_dfu_suffix_that_fails_its_crc_says_what_it_was_read_as(tmp_path: Path) -> None:
    from firmware_images.dfu import build_dfu

    data = bytearray(build_dfu(demo_payload(0x01050000, size=4096), vid=0x0483, pid=0xDF11))
    data[-1] ^= 0xFF  # the suffix's CRC
    path = tmp_path / "app.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as info:
        load_image(path, ADDR)
    text = str(info.value)
    assert "read as a DFU file, as its content says (it ends with a DFU suffix" in text, text
    assert "CRC mismatch" in text, text


def test_the_name_does_not_overrule_the_content(tmp_path: Path, payload: bytes) -> None:
    """A real GBL named .zigbee is a GBL: the magic decides, the name is only a fallback."""
    path = tmp_path / "radio.zigbee"
    path.write_bytes(build_gbl([(0x4000, payload)], app_version=0x01050000))
    assert parse_file(path).container == "gbl"

"""The application descriptor: round trips, and every corruption is caught."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.descriptor import (
    DESCRIPTOR_OFFSET,
    DESCRIPTOR_SIZE,
    check_payload,
    parse_descriptor,
    seal_payload,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@given(
    body=st.binary(min_size=DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE, max_size=2048),
    mfr=u16,
    itype=u16,
    version=u32,
    hw=st.tuples(u16, u16).map(sorted),
)
def test_seal_then_check_round_trips(
    body: bytes, mfr: int, itype: int, version: int, hw: list[int]
) -> None:
    payload = seal_payload(
        body,
        manufacturer_code=mfr,
        image_type=itype,
        firmware_version=version,
        hw_min=hw[0],
        hw_max=hw[1],
    )
    d = check_payload(payload)
    assert (d.manufacturer_code, d.image_type, d.firmware_version) == (mfr, itype, version)
    assert (d.hw_min, d.hw_max, d.length) == (hw[0], hw[1], len(body))
    assert d.supports_hardware(hw[0]) and d.supports_hardware(hw[1])


@given(st.data())
def test_any_flipped_byte_is_refused(data: st.DataObject) -> None:
    payload = bytearray(demo_payload(0x01020304, size=1024))
    index = data.draw(st.integers(0, len(payload) - 1))
    bit = data.draw(st.integers(0, 7))
    payload[index] ^= 1 << bit
    with pytest.raises(ImageError):
        check_payload(payload)


def test_truncated_payload_is_refused() -> None:
    payload = demo_payload(0x01020304, size=4096)
    with pytest.raises(ImageError, match="truncated"):
        check_payload(payload[:-4])


def test_no_descriptor_says_so() -> None:
    with pytest.raises(ImageError, match="no application descriptor"):
        parse_descriptor(bytes(4096))
    with pytest.raises(ImageError, match="too short"):
        parse_descriptor(b"\xff" * 100)


def test_demo_payload_is_deterministic_and_versioned() -> None:
    a = demo_payload(0x01050000, size=2048)
    assert a == demo_payload(0x01050000, size=2048)
    assert a != demo_payload(0x01050001, size=2048)
    assert check_payload(a).firmware_version == 0x01050000

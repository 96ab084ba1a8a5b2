"""Checksums against the catalogue check values of protocols.md §6 and their definitions."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from drivers.crc import crc16_xmodem, crc32, stm32_crc, xor8

words = st.binary(max_size=512).map(lambda b: b[: len(b) - len(b) % 4])


def test_check_values() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc32(b"123456789") == 0xCBF43926
    assert stm32_crc(b"12345678") == 0xFEFC54F9
    assert stm32_crc(b"\0\0\0\0") == 0xC704DD7B


def _stm32_crc_bitwise(data: bytes) -> int:
    """The CRC unit as its reference manual describes it: words LE, shifted in MSB first."""
    crc = 0xFFFFFFFF
    for i in range(0, len(data), 4):
        crc ^= int.from_bytes(data[i : i + 4], "little")
        for _ in range(32):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@given(words)
def test_stm32_crc_matches_the_hardware_definition(data: bytes) -> None:
    assert stm32_crc(data) == _stm32_crc_bitwise(data)


@given(words, words)
def test_stm32_crc_chains(a: bytes, b: bytes) -> None:
    assert stm32_crc(b, stm32_crc(a)) == stm32_crc(a + b)


@given(st.binary(max_size=300))
def test_crc32_is_zlib(data: bytes) -> None:
    assert crc32(data) == zlib.crc32(data)


@given(st.binary(max_size=300))
def test_xor8_of_data_and_its_xor_is_zero(data: bytes) -> None:
    assert xor8(data + bytes([xor8(data)])) == 0


def test_stm32_crc_refuses_partial_words() -> None:
    import pytest

    with pytest.raises(ValueError, match="32-bit words"):
        stm32_crc(b"123")


@given(st.binary(max_size=600), st.integers(0, 255))
def test_xor8_equals_the_byte_by_byte_definition(data: bytes, start: int) -> None:
    expected = start
    for byte in data:
        expected ^= byte
    assert xor8(data, start) == expected
    assert xor8(memoryview(data), start) == expected

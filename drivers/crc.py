"""Checksums used on the wire and in images (parameters in protocols.md §6).

Pure functions, no I/O; shared by the drivers, the image code and the simulated hubs.
"""

from __future__ import annotations

import zlib
from array import array

import crcmod.predefined

_crc16_xmodem = crcmod.predefined.mkCrcFun("xmodem")


def xor8(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """XOR of all bytes (AN3155 frame checksum), seeded with ``start``.

    Folds the bytes as one integer, halving its width each step: a handful of big-integer
    operations instead of a Python call per byte (every 256-byte write block needs one, on
    the station and on each simulated hub).
    """
    value = int.from_bytes(data, "little")
    width = len(data)  # in bytes
    while width > 1:
        half = (width + 1) // 2
        value = (value ^ (value >> (8 * half))) & ((1 << (8 * half)) - 1)
        width = half
    return (value & 0xFF) ^ start


def crc32(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32/ISO-HDLC (zlib), as in the application descriptor and GBL END tags."""
    return zlib.crc32(data, crc) & 0xFFFFFFFF


_BITS_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
if array("I").itemsize != 4:  # pragma: no cover - no platform we run on
    raise ImportError("array('I') is not 32 bits here: stm32_crc needs a 32-bit word type")


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def stm32_crc(data: bytes | bytearray | memoryview, crc: int = 0xFFFFFFFF) -> int:
    """CRC of the STM32 CRC unit over whole 32-bit words, as Get Checksum (0xA1) returns.

    The unit reads each word little-endian and shifts it in MSB first, which is
    CRC-32/MPEG-2 over the data with the bytes of every word reversed. That CRC is computed
    here by zlib's (the same polynomial, reflected) over the bits of every byte reversed,
    its register reversed back: 256 KiB in 0.5 ms instead of 1.1 ms through crcmod,
    and a station planning a diff write, or a simulated hub answering it, asks several.

    Raises:
        ValueError: if the length is not a multiple of 4.
    """
    if len(data) % 4:
        raise ValueError(f"STM32 CRC needs whole 32-bit words, got {len(data)} bytes")
    words = array("I", bytes(data).translate(_BITS_REVERSED))
    words.byteswap()
    register = zlib.crc32(words, _reverse32(crc) ^ 0xFFFFFFFF)
    return _reverse32(register ^ 0xFFFFFFFF)


def crc16_xmodem(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/XMODEM (XMODEM-CRC blocks, SMP serial frames)."""
    return int(_crc16_xmodem(bytes(data), crc)) & 0xFFFF

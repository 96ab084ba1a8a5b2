"""AN3155 wire constants and framing helpers, pure (no I/O).

Shared by the host driver (:mod:`drivers.an3155`) and the simulated hub (:mod:`sim.an3155`),
so both sides of every test speak from one definition of the protocol's bytes.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from drivers.crc import xor8

ACK = 0x79
NACK = 0x1F
SYNC = 0x7F
MAX_BLOCK = 256


class Cmd(IntEnum):
    """AN3155 command codes (each is sent with its complement)."""

    GET = 0x00
    GET_VERSION = 0x01
    GET_ID = 0x02
    READ_MEMORY = 0x11
    GO = 0x21
    WRITE_MEMORY = 0x31
    ERASE = 0x43
    EXTENDED_ERASE = 0x44
    WRITE_PROTECT = 0x63
    WRITE_UNPROTECT = 0x73
    READOUT_PROTECT = 0x82
    READOUT_UNPROTECT = 0x92
    GET_CHECKSUM = 0xA1


def address_frame(address: int) -> bytes:
    """A 32-bit address as sent on the wire: 4 bytes MSB first, then their XOR."""
    raw = struct.pack(">I", address)
    return raw + bytes([xor8(raw)])

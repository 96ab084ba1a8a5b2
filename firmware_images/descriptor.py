"""The application descriptor: a fixed-offset record inside every application payload.

The simulated hubs boot an application only when its descriptor and CRC are right, and then
report the descriptor's version on their console, so a version read back after reboot is
honest evidence that the right bytes landed. Layout (little-endian, 32 bytes, at
``DESCRIPTOR_OFFSET`` from the start of the payload, i.e. just after a Cortex-M vector table):

====== ==== =================================================================
offset size field
====== ==== =================================================================
0      4    magic ``b"HUBD"``
4      2    descriptor format version (1)
6      2    manufacturer code (Zigbee manufacturer code of the hub maker)
8      2    image type (Zigbee OTA image type of the hub model)
10     2    reserved, zero
12     4    firmware version (u32, as in the OTA header's file version)
16     2    lowest hardware version the image runs on
18     2    highest hardware version the image runs on
20     4    payload length in bytes (whole payload, descriptor included)
24     4    CRC-32 (zlib) of the payload[0:length] with these 4 bytes taken as zero
28     4    reserved, zero
====== ==== =================================================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from drivers.crc import crc32
from drivers.errors import ImageError

DESCRIPTOR_OFFSET = 0x200
DESCRIPTOR_MAGIC = b"HUBD"
DESCRIPTOR_FORMAT = 1
_LAYOUT = struct.Struct("<4sHHHHIHHII4x")
DESCRIPTOR_SIZE = _LAYOUT.size
_CRC_FIELD = DESCRIPTOR_OFFSET + 24  # where the CRC sits inside the payload

assert DESCRIPTOR_SIZE == 32


def format_version(version: int) -> str:
    """The firmware version as the hubs and the DSP export write it: ``0x01020304``."""
    return f"0x{version:08X}"


def dotted_version(version: int) -> str:
    """The firmware version as a person reads it: ``1.2.3.4`` (one byte a part)."""
    return ".".join(str(b) for b in (version & 0xFFFFFFFF).to_bytes(4, "big"))


def dotted_text(text: str | None) -> str:
    """A recorded version (``0x01050000``) as a person reads it (``1.5.0.0``); ``?`` when
    unknown; text that is not a version is returned as it is (the caller escapes it)."""
    if not text:
        return "?"
    try:
        return dotted_version(int(text, 16))
    except ValueError:
        return text


@dataclass(frozen=True)
class AppDescriptor:
    """The decoded descriptor of one application payload."""

    manufacturer_code: int
    image_type: int
    firmware_version: int
    hw_min: int
    hw_max: int
    length: int
    crc32: int

    def pack(self) -> bytes:
        """The 32 descriptor bytes as stored in the payload."""
        return _LAYOUT.pack(
            DESCRIPTOR_MAGIC,
            DESCRIPTOR_FORMAT,
            self.manufacturer_code,
            self.image_type,
            0,
            self.firmware_version,
            self.hw_min,
            self.hw_max,
            self.length,
            self.crc32,
        )

    def supports_hardware(self, hw_version: int) -> bool:
        """Whether the image declares it runs on this hardware version."""
        return self.hw_min <= hw_version <= self.hw_max


def payload_crc(payload: bytes | bytearray | memoryview, length: int) -> int:
    """CRC-32 of ``payload[:length]`` with the descriptor's CRC field read as zero."""
    view = memoryview(payload)
    crc = crc32(view[:_CRC_FIELD])
    crc = crc32(b"\0\0\0\0", crc)
    return crc32(view[_CRC_FIELD + 4 : length], crc)


def parse_descriptor(payload: bytes | bytearray | memoryview) -> AppDescriptor:
    """Read the descriptor of a payload without checking its CRC.

    Raises:
        ImageError: no descriptor (too short, wrong magic, unknown format).
    """
    end = DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE
    if len(payload) < end:
        raise ImageError(
            f"payload is {len(payload)} bytes, too short to hold an application descriptor "
            f"at offset 0x{DESCRIPTOR_OFFSET:X}",
            hint="is this an application image for a hub?",
        )
    return unpack_descriptor(payload[DESCRIPTOR_OFFSET:end])


def unpack_descriptor(record: bytes | bytearray | memoryview) -> AppDescriptor:
    """Decode the 32 descriptor bytes themselves (e.g. read from a hub's flash).

    Raises:
        ImageError: wrong size, wrong magic or unknown format.
    """
    if len(record) != DESCRIPTOR_SIZE:
        raise ImageError(f"a descriptor is {DESCRIPTOR_SIZE} bytes, got {len(record)}")
    magic, fmt, mfr, itype, _res, version, hw_min, hw_max, length, crc = _LAYOUT.unpack(
        bytes(record)
    )
    if magic != DESCRIPTOR_MAGIC:
        raise ImageError(
            f"no application descriptor at offset 0x{DESCRIPTOR_OFFSET:X} "
            f"(found {bytes(magic)!r}, expected {DESCRIPTOR_MAGIC!r})",
            hint="is this an application image for a hub?",
        )
    if fmt != DESCRIPTOR_FORMAT:
        raise ImageError(f"application descriptor format {fmt} is not supported (expected 1)")
    return AppDescriptor(mfr, itype, version, hw_min, hw_max, length, crc)


def check_payload(payload: bytes | bytearray | memoryview) -> AppDescriptor:
    """Parse the descriptor and prove the payload intact (length and CRC).

    Raises:
        ImageError: no descriptor, wrong length, or CRC mismatch.
    """
    desc = parse_descriptor(payload)
    if desc.length < DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE or desc.length > len(payload):
        raise ImageError(
            f"application descriptor says the payload is {desc.length} bytes, "
            f"but {len(payload)} bytes are present",
            hint="the file is truncated or the descriptor is corrupt",
        )
    actual = payload_crc(payload, desc.length)
    if actual != desc.crc32:
        raise ImageError(
            f"application CRC-32 mismatch: descriptor says 0x{desc.crc32:08X}, "
            f"payload gives 0x{actual:08X}",
            hint="the image is corrupt or was modified; get a fresh copy",
        )
    return desc


def seal_payload(
    body: bytes | bytearray,
    *,
    manufacturer_code: int,
    image_type: int,
    firmware_version: int,
    hw_min: int,
    hw_max: int,
) -> bytes:
    """Write a valid descriptor (length and CRC) into ``body`` and return the payload.

    ``body`` must be at least ``DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE`` bytes; the descriptor
    bytes in it are overwritten. Used by the demo/test image builder.
    """
    buf = bytearray(body)
    if len(buf) < DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE:
        raise ImageError(f"payload body of {len(buf)} bytes is too short for a descriptor")
    desc = AppDescriptor(
        manufacturer_code, image_type, firmware_version, hw_min, hw_max, len(buf), 0
    )
    buf[DESCRIPTOR_OFFSET : DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE] = desc.pack()
    crc = payload_crc(buf, len(buf))
    struct.pack_into("<I", buf, _CRC_FIELD, crc)
    return bytes(buf)

"""The EXLINE image container: ``EXLN``, the load address (u32 little-endian), the payload.

The plug-in brings it to the station's loader (``containers``), which recognises it by
its magic and parses it here (imports only ``firmware_images``)."""

from __future__ import annotations

import struct
from dataclasses import replace

from firmware_images.formats import ImageFormat
from firmware_images.model import ImageFormatError, ParsedImage, Segment

MAGIC = b"EXLN"


def build_exline(address: int, payload: bytes) -> bytes:
    return MAGIC + struct.pack("<I", address) + payload


def parse_exline(data: bytes, path: str) -> ParsedImage:
    if len(data) < 9 or not data.startswith(MAGIC):
        raise ImageFormatError(f"{path}: too short for an EXLINE image")
    (address,) = struct.unpack_from("<I", data, 4)
    image = ParsedImage(
        path=path,
        container="exline",
        fields={"load_address": address},
        segments=(Segment(address, data[8:]),),
    )
    d = image.descriptor
    if d is None:
        return image
    return replace(
        image,
        manufacturer_code=d.manufacturer_code,
        image_type=d.image_type,
        file_version=d.firmware_version,
        hw_min=d.hw_min,
        hw_max=d.hw_max,
    )


FORMAT = ImageFormat(
    kind="exline",
    description="an EXLINE image",
    parse=parse_exline,
    magic=MAGIC,
    suffixes=(".exl",),
)

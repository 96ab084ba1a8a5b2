"""Load an application payload from a raw binary, Intel HEX or Motorola S-record file.

HEX and S-record parsing is bincopy's; this module decides the format, places a raw binary
at its load address and proves the payload carries a valid application descriptor. The
GBCS/Zigbee OTA containers and the catalogue build on this in their own modules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import bincopy

from drivers.crc import crc32
from drivers.errors import ImageError
from firmware_images.descriptor import AppDescriptor, check_payload

_HEX_SUFFIXES = {".hex", ".ihex", ".ihx"}
_SREC_SUFFIXES = {".s19", ".s28", ".s37", ".srec", ".mot", ".s"}


@dataclass(frozen=True)
class LoadedImage:
    """An application payload placed at its load address.

    Attributes:
        path: where it was read from.
        kind: ``"raw"``, ``"ihex"`` or ``"srec"``.
        address: load address of the first byte.
        data: the payload bytes (gaps in HEX/S-record files filled with 0xFF).
        descriptor: the payload's application descriptor (CRC already checked).
        sha256: hex SHA-256 of ``data``.
        crc32: CRC-32 of ``data``.
    """

    path: str
    kind: str
    address: int
    data: bytes
    descriptor: AppDescriptor
    sha256: str
    crc32: int

    @property
    def end(self) -> int:
        """First address after the payload."""
        return self.address + len(self.data)


def _detect(path: Path, head: bytes) -> str:
    suffix = path.suffix.lower()
    if suffix in _HEX_SUFFIXES or head.startswith(b":"):
        return "ihex"
    if suffix in _SREC_SUFFIXES or (head[:1] == b"S" and head[1:2].isdigit()):
        return "srec"
    return "raw"


def load_image(path: str | Path, address: int | None = None) -> LoadedImage:
    """Read and check an application payload.

    Args:
        path: the file.
        address: load address for a raw binary (HEX and S-record files carry their own;
            giving one that disagrees is an error).

    Raises:
        ImageError: unreadable, unknown format, no address for a raw binary, or a payload
            without a valid application descriptor. Nothing has touched a hub.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image file {p}: {exc.strerror}") from exc
    if not raw:
        raise ImageError(f"image file {p} is empty")
    kind = _detect(p, raw[:2])
    if kind == "raw":
        if address is None:
            raise ImageError(
                f"{p} is a raw binary, which has no load address",
                hint="give --address (e.g. 0x08000000) or use an Intel HEX/S-record file",
            )
        load_at, data = address, raw
    else:
        bf = bincopy.BinFile()
        try:
            text = raw.decode("ascii")
            (bf.add_ihex if kind == "ihex" else bf.add_srec)(text)
        except (UnicodeDecodeError, bincopy.Error, ValueError) as exc:
            raise ImageError(f"{p} is not a valid {kind} file: {exc}") from exc
        if bf.minimum_address is None:
            raise ImageError(f"{p} holds no data records")
        load_at = int(bf.minimum_address)
        if address is not None and address != load_at:
            raise ImageError(
                f"{p} loads at 0x{load_at:08X}, but --address 0x{address:08X} was given",
                hint="drop --address for HEX/S-record files",
            )
        data = bytes(bf.as_binary(padding=b"\xff"))
    try:
        descriptor = check_payload(data)
    except ImageError as exc:
        exc.message = f"{p}: {exc.message}"
        raise
    data = data[: descriptor.length]
    return LoadedImage(
        path=str(p),
        kind=kind,
        address=load_at,
        data=data,
        descriptor=descriptor,
        sha256=hashlib.sha256(data).hexdigest(),
        crc32=crc32(data),
    )

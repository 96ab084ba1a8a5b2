"""Open any firmware file the station knows and turn it into the bytes to flash.

:func:`parse_file` recognises the container by its content (Zigbee/GBCS OTA, GBL, DFU and
DfuSe, Intel HEX, S-record, else a raw binary) and returns a :class:`ParsedImage`.
:func:`load_image` goes one step further for ``station flash``: one application payload,
placed at its load address, carrying a valid application descriptor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import bincopy

from drivers.crc import crc32
from drivers.errors import ImageError
from firmware_images.descriptor import AppDescriptor, check_payload
from firmware_images.files import IMAGE_FILE_LIMIT, read_regular_file
from firmware_images.model import ImageFormatError, ParsedImage, Segment, SigStatus

_HEX_SUFFIXES = {".hex", ".ihex", ".ihx"}
_SREC_SUFFIXES = {".s19", ".s28", ".s37", ".srec", ".mot", ".s"}
_OTA_MAGIC = b"\x1e\xf1\xee\x0b"
_GBL_MAGIC = b"\xeb\x17\xa6\x03"
_OTA_CONTAINERS = ("gbcs-ota", "zigbee-ota")
#: How far into a file a vendor prefix may push the Zigbee OTA magic.
OTA_PREFIX_LIMIT = 1024


def detect(data: bytes, name: str = "") -> str:
    """The container kind of ``data``: ota, gbl, dfu, ihex, srec or raw."""
    suffix = Path(name).suffix.lower()
    if _OTA_MAGIC in data[: OTA_PREFIX_LIMIT + 4] or data[:4] == b"NGIS":
        return "ota"
    if data[:4] == _GBL_MAGIC:
        return "gbl"
    if len(data) >= 16 and data[-8:-5] == b"UFD" and data[-5] == 16:
        return "dfu"
    if suffix in _HEX_SUFFIXES or data[:1] == b":":
        return "ihex"
    if suffix in _SREC_SUFFIXES or (data[:1] == b"S" and data[1:2].isdigit()):
        return "srec"
    return "raw"


def _parse_text(kind: str, data: bytes, path: str) -> ParsedImage:
    bf = bincopy.BinFile()
    try:
        text = data.decode("ascii")
        (bf.add_ihex if kind == "ihex" else bf.add_srec)(text)
    except (UnicodeDecodeError, bincopy.Error, ValueError) as exc:
        raise ImageFormatError(f"{path or 'data'} is not a valid {kind} file: {exc}") from exc
    if bf.minimum_address is None:
        raise ImageFormatError(f"{path or 'data'} holds no data records")
    address = int(bf.minimum_address)
    payload = bytes(bf.as_binary(padding=b"\xff"))
    problems: tuple[str, ...] = ()
    if len(bf.segments) > 1:
        problems = (f"{len(bf.segments)} segments with gaps, filled with 0xFF",)
    return _with_descriptor_identity(
        ParsedImage(
            path=path,
            container=kind,
            fields={"load_address": address, "segments": len(bf.segments)},
            segments=(Segment(address, payload),),
            problems=problems,
        )
    )


def _with_descriptor_identity(image: ParsedImage) -> ParsedImage:
    """Plain payload files have no header: their identity is the descriptor's."""
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


def parse_bytes(data: bytes, path: str = "", address: int | None = None) -> ParsedImage:
    """Parse a firmware file's bytes (see :func:`parse_file`); the result keeps them."""
    image = _parse_any(data, path, address)
    # Keep the file itself: some bootloaders (Gecko) are sent the container, not the payload.
    object.__setattr__(image, "raw", data)
    return image


def _parse_any(data: bytes, path: str, address: int | None) -> ParsedImage:
    if not data:
        raise ImageError(f"image file {path or ''} is empty".replace("  ", " "))
    kind = detect(data, path)
    if kind == "ota":
        from firmware_images.zigbee import parse_ota_file

        return parse_ota_file(data, path)
    if kind == "gbl":
        from firmware_images.gbl import parse_gbl

        return parse_gbl(data, path)
    if kind == "dfu":
        from firmware_images.dfu import parse_dfu

        return parse_dfu(data, path)
    if kind in ("ihex", "srec"):
        return _parse_text(kind, data, path)
    return _with_descriptor_identity(
        ParsedImage(
            path=path,
            container="raw",
            fields={"load_address": address},
            segments=(Segment(address, data),),
        )
    )


def parse_file(path: str | Path, address: int | None = None) -> ParsedImage:
    """Read and parse any supported firmware file.

    Args:
        path: the file.
        address: load address of a raw binary (other containers carry their own or none).

    Raises:
        ImageError: unreadable, not a regular file (a FIFO, a device, a directory), larger
            than :data:`~firmware_images.files.IMAGE_FILE_LIMIT`, or malformed for the
            container it claims to be.
    """
    data = read_regular_file(path, limit=IMAGE_FILE_LIMIT, what="image file")
    return parse_bytes(data, str(path), address)


@dataclass(frozen=True)
class LoadedImage:
    """An application payload ready to flash: placed, with its descriptor checked.

    Attributes:
        path: where it was read from.
        kind: the container it came in (``gbcs-ota``, ``ihex``, ``raw``...).
        address: load address of the first byte.
        data: the payload bytes.
        descriptor: the payload's application descriptor (CRC already checked).
        sha256: hex SHA-256 of ``data`` (for GBCS images, the Manufacturer Image Hash).
            For a wrapped bootloader file, of that whole file (still the GBCS hash).
        crc32: CRC-32 of ``data``.
        parsed: the whole parsed container (signature, header fields, problems).
        inner: the bootloader file a Zigbee/GBCS OTA image wraps (a GBL for a Silicon Labs
            radio, as vendors ship them), else None. ``kind`` is then that file's kind.
    """

    path: str
    kind: str
    address: int
    data: bytes
    descriptor: AppDescriptor
    sha256: str
    crc32: int
    parsed: ParsedImage
    inner: ParsedImage | None = None

    @property
    def bootloader_file(self) -> ParsedImage:
        """The file a file-consuming bootloader (Gecko) is sent: the wrapped one if any."""
        return self.inner or self.parsed

    @property
    def end(self) -> int:
        """First address after the payload."""
        return self.address + len(self.data)

    @property
    def signature_status(self) -> SigStatus:
        """The container's signature status (as checked so far)."""
        return self.parsed.signature_status


def flashable(image: ParsedImage, address: int | None = None) -> LoadedImage:
    """The one application payload of ``image``, placed and checked.

    Args:
        address: load address for a raw binary (required), and for containers that carry
            none (GBCS/Zigbee OTA, plain DFU): the hub profile's application address. It must
            agree with a HEX/S-record/DfuSe file's own address.

    Raises:
        ImageError: no address, several payloads, or no valid application descriptor.
    """
    where = image.path or "image"
    if len(image.segments) != 1:
        raise ImageError(
            f"{where} holds {len(image.segments)} payloads; station flash writes exactly one",
            hint="split the file, or use a container with a single application payload",
        )
    seg = image.segments[0]
    if image.container in _OTA_CONTAINERS and seg.data[:4] == _GBL_MAGIC:
        return _unwrap_gbl(image, seg.data, address)
    if image.container == "raw" and seg.address is None:
        raise ImageError(
            f"{where} is a raw binary, which has no load address",
            hint="give --address (e.g. 0x08000000) or use an Intel HEX/S-record file",
        )
    at = seg.address if seg.address is not None else address
    if at is None:
        raise ImageError(f"{where}: no load address known for this {image.container} image")
    if seg.address is not None and address is not None and address != seg.address:
        raise ImageError(
            f"{where} loads at 0x{seg.address:08X}, but address 0x{address:08X} was given",
            hint="drop --address for files that carry their own load address",
        )
    try:
        descriptor = check_payload(seg.data)
    except ImageError as exc:
        exc.message = f"{where}: {exc.message}"
        raise
    data = seg.data[: descriptor.length]  # drop fill after the payload (HEX gaps, padding)
    return LoadedImage(
        path=image.path,
        kind=image.container,
        address=at,
        data=data,
        descriptor=descriptor,
        sha256=hashlib.sha256(data).hexdigest(),
        crc32=crc32(data),
        parsed=image,
    )


def _unwrap_gbl(image: ParsedImage, payload: bytes, address: int | None) -> LoadedImage:
    """A GBL carried as an OTA image's payload: the signature and identity stay the OTA
    container's; the application (for the descriptor checks) and the file to send are the
    GBL's."""
    where = image.path or "image"
    try:
        inner = parse_bytes(payload, f"{where} (its GBL payload)")
        loaded = flashable(inner, address)
    except ImageError as exc:
        if not exc.message.startswith(where):
            exc.message = f"{where} (its GBL payload): {exc.message}"
        raise
    return replace(
        loaded,
        path=image.path,
        sha256=hashlib.sha256(payload).hexdigest(),
        parsed=image,
        inner=inner,
    )


def load_image(
    path: str | Path, address: int | None = None, *, default_address: int | None = None
) -> LoadedImage:
    """Parse ``path`` and return its application payload ready to flash.

    Args:
        address: the user's explicit load address (raw binaries need one).
        default_address: where address-less containers (GBCS/Zigbee OTA) load: the hub
            profile's application address.
    """
    image = parse_file(path, address)
    if image.container != "raw" and address is None:
        address = default_address if image.segments[0].address is None else None
    return flashable(image, address)

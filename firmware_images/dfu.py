"""USB DFU files: plain DFU 1.1 (payload + suffix) and ST DfuSe; parse and build.

Every ``.dfu`` file ends with the 16-byte DFU suffix (protocols.md §2.6, all LE):
bcdDevice, idProduct, idVendor, bcdDFU, the signature ``"UFD"``, bLength (16) and dwCRC,
the CRC-32/JAMCRC (``~zlib.crc32``) of every byte of the file except dwCRC itself.

* bcdDFU ``0x0100``: a plain DFU file; the payload is everything before the suffix, with
  no load address (the device or the hub profile decides). Container ``"dfu"``.
* bcdDFU ``0x011A``: a DfuSe file (§2.8, ST UM0391): an 11-byte ``"DfuSe"`` prefix
  (version 1, DFUImageSize = file size without suffix, target count), then per target a
  274-byte ``"Target"`` prefix (alternate setting, named flag, 255-byte NUL-padded name,
  dwTargetSize = Σ(8 + element size), element count) and its elements (address, size,
  data). Container ``"dfuse"``; one segment per element, named ``"target <alt> <name>"``
  (``"target <alt>"`` when the target is not named).

Decisions where the documents leave room: a bLength above 16 is accepted, as dfu-util
does, with the extra bytes counted as suffix and a problem sentence; below 16 is refused.
Any bcdDFU other than the two above is refused. Target names are decoded as UTF-8 (bad
bytes replaced) up to the first NUL; the builder writes UTF-8. A plain DFU file with no
payload and a DfuSe file with no element are refused: there is nothing to flash.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from firmware_images.model import ImageFormatError, ParsedImage, Segment

BCD_DFU_PLAIN = 0x0100
BCD_DFU_DFUSE = 0x011A
SUFFIX_LENGTH = 16
DFU_SIGNATURE = b"UFD"
DFUSE_SIGNATURE = b"DfuSe"
DFUSE_VERSION = 1
TARGET_SIGNATURE = b"Target"
TARGET_NAME_SIZE = 255

_SUFFIX = struct.Struct("<HHHH3sBI")
_PREFIX = struct.Struct("<5sBIB")
_TARGET = struct.Struct("<6sBI255sII")
_ELEMENT = struct.Struct("<II")
_ADDRESS_SPACE = 1 << 32
_HINT_CORRUPT = "the file is truncated or corrupt; fetch a fresh copy"
#: Most elements a DfuSe file may hold (all targets together), counted while walking.
#: A file has one per contiguous flash area, a handful; millions of empty 8-byte ones
#: would cost their bookkeeping many times the file.
MAX_ELEMENTS = 1024
_OVERLAPS_SHOWN = 8

assert _SUFFIX.size == SUFFIX_LENGTH and _PREFIX.size == 11 and _TARGET.size == 274


def dfu_suffix_crc(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/JAMCRC of ``data``: the dwCRC of a file whose bytes before dwCRC are ``data``.

    JAMCRC is zlib's CRC-32 without the final inversion (check value of ``b"123456789"``:
    ``0x340BC6D9``).
    """
    return ~zlib.crc32(data) & 0xFFFFFFFF


def _suffix_fields(bcd_device: int, pid: int, vid: int, bcd_dfu: int) -> dict[str, Any]:
    return {"idVendor": vid, "idProduct": pid, "bcdDevice": bcd_device, "bcdDFU": bcd_dfu}


def _parse_suffix(data: bytes) -> tuple[dict[str, Any], bytes, list[str]]:
    """Check the suffix; return its fields, the bytes before it and any problems."""
    size = len(data)
    if size < SUFFIX_LENGTH:
        raise ImageFormatError(
            f"{size} bytes is too short for a DFU file: its suffix alone is {SUFFIX_LENGTH} bytes",
            offset=0,
            hint=_HINT_CORRUPT,
        )
    suffix_at = size - SUFFIX_LENGTH
    bcd_device, pid, vid, bcd_dfu, signature, length, stored = _SUFFIX.unpack_from(data, suffix_at)
    if signature != DFU_SIGNATURE:
        raise ImageFormatError(
            f"no DFU suffix: found {signature.hex(' ').upper()} where the signature "
            f"'UFD' (55 46 44) belongs",
            offset=suffix_at + 8,
            hint="a .dfu file ends with a 16-byte DFU suffix; for a raw binary use the raw, "
            "HEX or S-record loader, or add a suffix with dfu-suffix",
        )
    computed = dfu_suffix_crc(memoryview(data)[:-4])
    if stored != computed:
        raise ImageFormatError(
            f"DFU suffix CRC mismatch: dwCRC stores 0x{stored:08X}, but bytes "
            f"0..{size - 5} give 0x{computed:08X}",
            offset=size - 4,
            hint="the file is corrupt or was modified after its suffix was written; "
            "fetch a fresh copy",
        )
    problems = []
    if length < SUFFIX_LENGTH:
        raise ImageFormatError(
            f"DFU suffix bLength is {length}; it must be at least {SUFFIX_LENGTH}",
            offset=suffix_at + 11,
            hint=_HINT_CORRUPT,
        )
    if length > size:
        raise ImageFormatError(
            f"DFU suffix bLength is {length}, longer than the {size}-byte file",
            offset=suffix_at + 11,
            hint=_HINT_CORRUPT,
        )
    if length > SUFFIX_LENGTH:
        problems.append(
            f"the DFU suffix is {length} bytes (bLength), not {SUFFIX_LENGTH}: the "
            f"{length - SUFFIX_LENGTH} bytes from offset {size - length} are taken as "
            "suffix and ignored"
        )
    fields = _suffix_fields(bcd_device, pid, vid, bcd_dfu)
    fields["suffix_length"] = length
    fields["dfu_crc"] = stored
    return fields, data[: size - length], problems


@dataclass(frozen=True)
class _Placed:
    """Where one element loads, and which it is, for the overlap check."""

    alt: int
    start: int
    end: int
    label: str


def _overlaps(placed: list[_Placed]) -> list[str]:
    """A problem sentence per element that lands on another of the same alternate setting.

    Each alternate setting is its own memory (internal flash, option bytes, external
    flash), so only elements of the same one can overlap. Elements are taken in address
    order; each is paired with the one reaching furthest before it.
    """
    found: list[tuple[_Placed, _Placed]] = []
    reach: _Placed | None = None  # the element reaching furthest so far, in this alt
    for p in sorted((p for p in placed if p.end > p.start), key=lambda p: (p.alt, p.start)):
        if reach is not None and reach.alt == p.alt and p.start < reach.end:
            found.append((reach, p))
        if reach is None or reach.alt != p.alt or p.end > reach.end:
            reach = p
    problems = [
        f"DfuSe elements overlap: {a.label} at 0x{a.start:08X}..0x{a.end:08X} and {b.label} at "
        f"0x{b.start:08X}..0x{b.end:08X}; flashing the file in order, the later overwrites "
        "the earlier"
        for a, b in found[:_OVERLAPS_SHOWN]
    ]
    if len(found) > _OVERLAPS_SHOWN:
        problems.append(f"{len(found) - _OVERLAPS_SHOWN} more DfuSe element overlaps")
    return problems


def _parse_targets(body: bytes, count: int) -> tuple[list[Segment], list[str], list[_Placed]]:
    """Walk the targets of a DfuSe body: one segment per element, a summary, the places."""
    segments: list[Segment] = []
    summary: list[str] = []
    placed: list[_Placed] = []
    pos = _PREFIX.size
    for index in range(count):
        if len(body) - pos < _TARGET.size:
            raise ImageFormatError(
                f"DfuSe target {index} of {count}: its {_TARGET.size}-byte prefix is cut off "
                f"({len(body) - pos} bytes left before the suffix)",
                offset=pos,
                hint=_HINT_CORRUPT,
            )
        signature, alt, named, raw_name, target_size, elements = _TARGET.unpack_from(body, pos)
        if signature != TARGET_SIGNATURE:
            raise ImageFormatError(
                f"DfuSe target {index}: found {signature!r} where 'Target' belongs",
                offset=pos,
                hint="bTargets or a dwTargetSize is wrong, or the file is corrupt",
            )
        name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace") if named else ""
        start = pos + _TARGET.size
        end = start + target_size
        if end > len(body):
            raise ImageFormatError(
                f"DfuSe target {index} (alt {alt}) says it is {target_size} bytes, but only "
                f"{len(body) - start} bytes are left before the suffix",
                offset=pos + 266,
                hint=_HINT_CORRUPT,
            )
        label = f"target {alt} {name}" if name else f"target {alt}"
        at = start
        for element in range(elements):
            if len(segments) == MAX_ELEMENTS:
                raise ImageFormatError(
                    f"DfuSe file has more than {MAX_ELEMENTS} elements; a file holds one per "
                    "flash area, so this one was not read further",
                    offset=at,
                    hint="the file is corrupt or crafted; get it again from the hub maker",
                )
            if end - at < _ELEMENT.size:
                raise ImageFormatError(
                    f"DfuSe target {index} (alt {alt}): element {element} of {elements} "
                    f"does not fit in the target's {target_size} bytes",
                    offset=at,
                    hint="dwNbElements and dwTargetSize disagree; the file is corrupt",
                )
            address, size = _ELEMENT.unpack_from(body, at)
            if size > end - at - _ELEMENT.size:
                raise ImageFormatError(
                    f"DfuSe target {index} (alt {alt}): element {element} says it is "
                    f"{size} bytes, but only {end - at - _ELEMENT.size} bytes of the target "
                    "are left",
                    offset=at + 4,
                    hint="an element size and dwTargetSize disagree; the file is corrupt",
                )
            if address + size > _ADDRESS_SPACE:
                raise ImageFormatError(
                    f"DfuSe target {index} (alt {alt}): element {element} of {size} bytes at "
                    f"0x{address:08X} runs past the 32-bit address space",
                    offset=at,
                    hint=_HINT_CORRUPT,
                )
            data_at = at + _ELEMENT.size
            segments.append(Segment(address, body[data_at : data_at + size], label))
            which = f"target {index} (alt {alt}) element {element}"
            placed.append(_Placed(alt, address, address + size, which))
            at = data_at + size
        if at != end:
            raise ImageFormatError(
                f"DfuSe target {index} (alt {alt}): its {elements} elements add up to "
                f"{at - start} bytes, but dwTargetSize says {target_size}",
                offset=at,
                hint="dwTargetSize or dwNbElements is wrong; the file is corrupt",
            )
        shown = f" {name!r}" if name else ""
        summary.append(f"alt {alt}{shown}: {elements} element(s), {target_size} bytes")
        pos = end
    if pos != len(body):
        raise ImageFormatError(
            f"{len(body) - pos} bytes follow the last of the {count} DfuSe targets",
            offset=pos,
            hint="bTargets is too small or the file is corrupt",
        )
    return segments, summary, placed


def _parse_dfuse(body: bytes, fields: dict[str, Any], problems: list[str]) -> list[Segment]:
    if len(body) < _PREFIX.size:
        raise ImageFormatError(
            f"DfuSe file has {len(body)} bytes before its suffix, too few for the "
            f"{_PREFIX.size}-byte DfuSe prefix",
            offset=0,
            hint=_HINT_CORRUPT,
        )
    signature, version, image_size, count = _PREFIX.unpack_from(body)
    if signature != DFUSE_SIGNATURE:
        raise ImageFormatError(
            f"the suffix says DfuSe (bcdDFU 0x011A), but the file starts with {signature!r}, "
            "not 'DfuSe'",
            offset=0,
            hint="the suffix or the prefix is wrong; rebuild the file",
        )
    if version != DFUSE_VERSION:
        raise ImageFormatError(
            f"DfuSe prefix version is {version}; only version {DFUSE_VERSION} is defined",
            offset=5,
            hint=_HINT_CORRUPT,
        )
    if image_size != len(body):
        raise ImageFormatError(
            f"DfuSe DFUImageSize says {image_size} bytes, but the file has {len(body)} "
            "bytes before its suffix",
            offset=6,
            hint=_HINT_CORRUPT,
        )
    segments, summary, placed = _parse_targets(body, count)
    problems += _overlaps(placed)
    if not segments:
        raise ImageFormatError(
            f"DfuSe file has {count} target(s) but no element",
            offset=_PREFIX.size,
            hint="the file carries nothing to flash",
        )
    fields.update(
        dfuse_version=version, dfu_image_size=image_size, target_count=count, targets=tuple(summary)
    )
    return segments


def parse_dfu(data: bytes, path: str = "") -> ParsedImage:
    """Parse and check a plain DFU 1.1 or a DfuSe file.

    Args:
        data: the whole file.
        path: where it came from, for messages and the result.

    Returns:
        Container ``"dfu"`` (one segment, address None) or ``"dfuse"`` (one segment per
        element). ``fields`` holds idVendor, idProduct, bcdDevice, bcdDFU and, for DfuSe,
        the prefix fields and a ``targets`` summary.

    Raises:
        ImageFormatError: no suffix, CRC mismatch, bad lengths or sizes that do not add
            up, truncation, unknown bcdDFU. The message gives the offset.
    """
    try:
        return _parse_dfu_data(data, path)
    except ImageFormatError as exc:
        if path:  # name the file, as every user-facing error does
            exc.message = f"{path}: {exc.message}"
            exc.args = (exc.message,)
        raise


def _parse_dfu_data(data: bytes, path: str) -> ParsedImage:
    data = bytes(data)
    fields, body, problems = _parse_suffix(data)
    bcd_dfu = fields["bcdDFU"]
    if bcd_dfu == BCD_DFU_DFUSE:
        container = "dfuse"
        segments = _parse_dfuse(body, fields, problems)
    elif bcd_dfu == BCD_DFU_PLAIN:
        container = "dfu"
        if not body:
            raise ImageFormatError(
                "DFU file holds no payload, only its suffix",
                offset=0,
                hint="the file carries nothing to flash",
            )
        if body.startswith(DFUSE_SIGNATURE):
            problems.append(
                "the payload starts with 'DfuSe', but bcdDFU is 0x0100 (plain DFU): it is "
                "taken as a plain payload"
            )
        segments = [Segment(None, body, "payload")]
    else:
        raise ImageFormatError(
            f"DFU suffix bcdDFU is 0x{bcd_dfu:04X}; this station reads 0x0100 (DFU 1.1) and "
            "0x011A (DfuSe)",
            offset=len(data) - SUFFIX_LENGTH + 6,
            hint="the file was written by an unknown tool or is corrupt",
        )
    return ParsedImage(
        path=path,
        container=container,
        fields=fields,
        segments=tuple(segments),
        problems=tuple(problems),
    )


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} 0x{value:X} does not fit in 16 bits")


def _seal(body: bytes, *, vid: int, pid: int, bcd_device: int, bcd_dfu: int) -> bytes:
    for name, value in (("vid", vid), ("pid", pid), ("bcd_device", bcd_device)):
        _check_u16(name, value)
    head = body + _SUFFIX.pack(bcd_device, pid, vid, bcd_dfu, DFU_SIGNATURE, SUFFIX_LENGTH, 0)
    head = head[:-4]
    return head + struct.pack("<I", dfu_suffix_crc(head))


def build_dfu(
    payload: bytes, *, vid: int = 0xFFFF, pid: int = 0xFFFF, bcd_device: int = 0xFFFF
) -> bytes:
    """A plain DFU 1.1 file: ``payload`` followed by a suffix with bcdDFU 0x0100.

    Raises:
        ValueError: an empty payload, or an id that does not fit in 16 bits.
    """
    if not payload:
        raise ValueError("a DFU file needs a payload")
    return _seal(bytes(payload), vid=vid, pid=pid, bcd_device=bcd_device, bcd_dfu=BCD_DFU_PLAIN)


def build_dfuse(
    targets: Sequence[tuple[int, str, Sequence[tuple[int, bytes]]]],
    *,
    vid: int,
    pid: int,
    bcd_device: int = 0xFFFF,
) -> bytes:
    """A DfuSe file: ``targets`` are (alternate setting, name, [(address, data), ...]).

    A target is marked named when its name is not empty.

    Raises:
        ValueError: no element at all, more than 255 targets, an alternate setting above
            255, a name over 255 UTF-8 bytes or holding NUL, an address out of range or
            an element running past 4 GiB, an id that does not fit in 16 bits.
    """
    if len(targets) > 0xFF:
        raise ValueError(f"a DfuSe file holds at most 255 targets, got {len(targets)}")
    if not any(elements for _alt, _name, elements in targets):
        raise ValueError("a DfuSe file needs at least one element")
    parts: list[bytes] = []
    for alt, name, elements in targets:
        if not 0 <= alt <= 0xFF:
            raise ValueError(f"alternate setting {alt} does not fit in a byte")
        raw_name = name.encode("utf-8")
        if len(raw_name) > TARGET_NAME_SIZE or b"\0" in raw_name:
            raise ValueError(
                f"target name {name!r} must be at most {TARGET_NAME_SIZE} UTF-8 bytes, no NUL"
            )
        blob = bytearray()
        for address, data in elements:
            if not 0 <= address <= 0xFFFFFFFF or address + len(data) > _ADDRESS_SPACE:
                raise ValueError(
                    f"element of {len(data)} bytes at 0x{address:X} does not fit in 4 GiB"
                )
            blob += _ELEMENT.pack(address, len(data)) + bytes(data)
        parts.append(
            _TARGET.pack(
                TARGET_SIGNATURE, alt, 1 if name else 0, raw_name, len(blob), len(elements)
            )
            + bytes(blob)
        )
    size = _PREFIX.size + sum(len(part) for part in parts)
    body = _PREFIX.pack(DFUSE_SIGNATURE, DFUSE_VERSION, size, len(targets)) + b"".join(parts)
    return _seal(body, vid=vid, pid=pid, bcd_device=bcd_device, bcd_dfu=BCD_DFU_DFUSE)

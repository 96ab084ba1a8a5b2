"""Zigbee OTA Upgrade files and GBCS OTA Upgrade Images: parse, tell apart, build, sign.

Both start with the same little-endian Zigbee OTA header (magic ``1E F1 EE 0B``, 56 bytes
plus the optional fields the field control announces; domain.md §1a, protocols.md §4).

* A **Zigbee OTA file** (container ``"zigbee-ota"``) follows the header with sub-elements
  (tag u16, length u32, data). Real files are untidy, so the parser keeps going where it
  can and says what it found in ``ParsedImage.problems``: a vendor prefix before the
  header, a total-size field that disagrees with the file, bytes after the last
  sub-element. It refuses (:class:`ImageFormatError`) only what cannot be read: no header,
  an inconsistent header, or a sub-element that runs past the end of the data (a truncated
  file). Wrappers recognised: IKEA ``"NGIS"``, Legrand (u32 size prefix + 17-byte suffix),
  Third Reality (152-byte header starting with a SHA-512), Hue SBL (no sub-elements), and
  any other prefix of up to ``MAX_PREFIX`` bytes.
* A **GBCS OTA Upgrade Image** (container ``"gbcs-ota"``, domain.md §1b) follows the
  header with the Manufacturer Image itself (no sub-element), one force-replace byte,
  ``0x40`` and a 64-byte ECDSA P-256 signature r||s over the Manufacturer Image. Its total
  image size must equal the file length.

Telling them apart (:func:`parse_ota_file`): a file is read as GBCS when the header is at
offset 0, its total image size equals the file length, at least one byte of Manufacturer
Image fits, the byte 65 from the end is ``0x40`` **and** the Zigbee reading is not clean.
The Zigbee reading is clean when its sub-elements tile the file exactly from the end of the
header to the last byte (no wrapper, prefix, size mismatch or leftover bytes) and at least
one upgrade image sub-element (tag 0x0000) holds data. A clean Zigbee file ends with
``0x40`` 65 bytes from the end one time in 256, so the Zigbee reading wins ties. A GBCS
image reads as clean Zigbee only if its Manufacturer Image, force-replace byte, ``0x40``
and signature happen to form a chain of sub-elements that ends exactly at the end of the
file and holds upgrade image data; a Cortex-M payload (stack pointer ``0x2000xxxx``, then
the reset vector) reads as one sub-element of megabytes, longer than the file. An
all-zero image with a zero signature reads as empty sub-elements, without upgrade image
data, so it is GBCS.

GBCS file names (:func:`gbcs_file_name`) are ``MMMM-TTTT-VVVVVVVV-HHHH…HHHH.zigbee``: the
manufacturer code, image type and file version as 4, 4 and 8 upper-case hex digits, then
the Manufacturer Image Hash (SHA-256) as 64 **upper-case** hex digits. That is what
``gbcs.py``'s ``create_ota_upgrade_image()`` (the public GBCS reference implementation,
domain.md §1b) writes, so names we produce match names from that tool. Compare hashes
case-insensitively: ``ParsedImage.sha256`` and the ``manufacturer_image_hash`` field are
lower case, as :mod:`hashlib` gives them.

Signatures: Zigbee crypto-suite 1/2 signatures (ECQV certificates) are reported with
status ``UNSUPPORTED``; nobody here verifies them. GBCS signatures are reported
``UNCHECKED`` (a trust store decides) or, when all 64 bytes are zero, not at all
(``signature=None``, the image is unsigned). :func:`ecdsa_p256_sign` and
:func:`ecdsa_p256_verify` convert between cryptography's DER signatures and GBCS's r||s.
Private keys are created at run time by callers and never stored in this project.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from firmware_images.model import ImageFormatError, ParsedImage, Segment, Signature, SigStatus

__all__ = [
    "FC_DESTINATION",
    "FC_HW_VERSIONS",
    "FC_SECURITY_CREDENTIAL",
    "MAX_PREFIX",
    "MAX_SUB_ELEMENTS",
    "OTA_MAGIC",
    "TAG_NAMES",
    "build_gbcs_image",
    "build_zigbee_ota",
    "ecdsa_p256_sign",
    "ecdsa_p256_verify",
    "gbcs_file_name",
    "parse_gbcs_image",
    "parse_ota_file",
    "parse_zigbee_ota",
    "tag_name",
]

OTA_MAGIC = 0x0BEEF11E
_MAGIC_BYTES = OTA_MAGIC.to_bytes(4, "little")
HEADER_VERSION = 0x0100
FC_SECURITY_CREDENTIAL = 0x0001  # security credential version present (1 byte)
FC_DESTINATION = 0x0002  # device-specific file: upgrade file destination present (8 bytes)
FC_HW_VERSIONS = 0x0004  # minimum and maximum hardware versions present (2 + 2 bytes)
_FC_KNOWN = FC_SECURITY_CREDENTIAL | FC_DESTINATION | FC_HW_VERSIONS
STACK_PRO = 0x0002
HEADER_STRING_SIZE = 32

# Where the magic may sit after a vendor's own prefix. The prefixes seen in the wild are
# 4 (Legrand) and 152 (Third Reality) bytes; 1 KiB leaves room without scanning payloads.
MAX_PREFIX = 1024
#: Most sub-elements a Zigbee OTA file may hold, counted while they are read. Real files
#: have a handful (the corpus at most 5); 8 million empty ones (6 bytes each, 48 MB) took
#: minutes and gigabytes of bookkeeping before this cap.
MAX_SUB_ELEMENTS = 1024

TAG_UPGRADE_IMAGE = 0x0000
TAG_SIGNATURE_SUITE1 = 0x0001
TAG_CERTIFICATE_SUITE1 = 0x0002
TAG_INTEGRITY_CODE = 0x0003
TAG_PICTURE_DATA = 0x0004
TAG_SIGNATURE_SUITE2 = 0x0005
TAG_CERTIFICATE_SUITE2 = 0x0006

TAG_NAMES: dict[int, str] = {
    TAG_UPGRADE_IMAGE: "upgrade image",
    TAG_SIGNATURE_SUITE1: "ECDSA signature (crypto suite 1)",
    TAG_CERTIFICATE_SUITE1: "ECDSA signing certificate (crypto suite 1)",
    TAG_INTEGRITY_CODE: "image integrity code",
    TAG_PICTURE_DATA: "picture data",
    TAG_SIGNATURE_SUITE2: "ECDSA signature (crypto suite 2)",
    TAG_CERTIFICATE_SUITE2: "ECDSA signing certificate (crypto suite 2)",
}
# The ``fields`` key under which each standard element's data is kept.
_TAG_FIELDS: dict[int, str] = {
    TAG_SIGNATURE_SUITE1: "signature_suite1",
    TAG_CERTIFICATE_SUITE1: "signing_certificate_suite1",
    TAG_INTEGRITY_CODE: "image_integrity_code",
    TAG_PICTURE_DATA: "picture_data",
    TAG_SIGNATURE_SUITE2: "signature_suite2",
    TAG_CERTIFICATE_SUITE2: "signing_certificate_suite2",
}
# Sizes the suites define (zigbee-herdsman OtaTagId; protocols.md §4): signer IEEE address
# (8) + signature (42 / 72), certificate 48 / 74, AES-MMO hash 16.
_EXPECTED_SIZES: dict[int, int] = {
    TAG_SIGNATURE_SUITE1: 8 + 42,
    TAG_CERTIFICATE_SUITE1: 48,
    TAG_INTEGRITY_CODE: 16,
    TAG_SIGNATURE_SUITE2: 8 + 72,
    TAG_CERTIFICATE_SUITE2: 74,
}
_SIGNATURE_SCHEMES = {
    TAG_SIGNATURE_SUITE1: "zigbee-ecqv-suite1",
    TAG_SIGNATURE_SUITE2: "zigbee-ecqv-suite2",
}
_SIGNER_IEEE_SIZE = 8

_FIXED = struct.Struct("<IHHHHHIH32sI")
FIXED_HEADER_SIZE = _FIXED.size
_ELEMENT = struct.Struct("<HI")
_ELEMENT_HEADER = _ELEMENT.size

GBCS_FIELD_CONTROL = FC_HW_VERSIONS
GBCS_SIGNATURE_SIZE = 64
GBCS_SIGNATURE_LENGTH_BYTE = 0x40
_GBCS_TRAILER = 1 + 1 + GBCS_SIGNATURE_SIZE  # force replace, 0x40, r||s

_HUE_MANUFACTURER = 0x100B
_HUE_SBL_MAGIC = b"\x2a\x00\x01"
_IKEA_MAGIC = b"NGIS"
_IKEA_HEADER = 24
_LEGRAND_EXTRA = 4 + 17
_THIRDREALITY_HEADER = 152

assert FIXED_HEADER_SIZE == 56


def tag_name(tag: int) -> str:
    """A sub-element tag's name: the standard ones by meaning, others ``"tag 0xF000"``."""
    return TAG_NAMES.get(tag, f"tag 0x{tag:04X}")


def _tag_label(tag: int) -> str:
    name = TAG_NAMES.get(tag)
    return f"sub-element 0x{tag:04X} ({name})" if name else f"sub-element 0x{tag:04X}"


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "little")


def _eui64_text(raw: bytes) -> str:
    """An EUI-64 stored little-endian, written the usual way (most significant byte first)."""
    return ":".join(f"{b:02X}" for b in reversed(raw))


def _header_text(raw: bytes) -> str:
    """The header string as text: up to the first NUL, UTF-8 with replacement characters."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class _Source:
    """The bytes being parsed, where they sit in the file, and how to report a failure."""

    def __init__(self, data: bytes, base: int, path: str, container: str) -> None:
        self.data = data
        self.base = base
        self.label = f"{path}: {container}" if path else container

    def fail(
        self, message: str, at: int | None = None, hint: str | None = None
    ) -> ImageFormatError:
        offset = None if at is None else self.base + at
        return ImageFormatError(f"{self.label}: {message}", offset=offset, hint=hint)


@dataclass(frozen=True)
class _Header:
    header_version: int
    header_length: int
    field_control: int
    manufacturer_code: int
    image_type: int
    file_version: int
    stack_version: int
    header_string: bytes
    total_image_size: int
    security_credential_version: int | None
    destination: bytes | None
    hw_min: int | None
    hw_max: int | None
    extra: bytes  # header bytes beyond the fields the field control announces

    def fields(self, base: int) -> dict[str, Any]:
        return {
            "upgrade_file_id": OTA_MAGIC,
            "header_offset": base,
            "header_version": self.header_version,
            "header_length": self.header_length,
            "field_control": self.field_control,
            "manufacturer_code": self.manufacturer_code,
            "image_type": self.image_type,
            "file_version": self.file_version,
            "stack_version": self.stack_version,
            "header_string": self.header_string,
            "header_text": _header_text(self.header_string),
            "total_image_size": self.total_image_size,
            "security_credential_version": self.security_credential_version,
            "upgrade_file_destination": self.destination,
            "upgrade_file_destination_eui64": (
                None if self.destination is None else _eui64_text(self.destination)
            ),
            "minimum_hardware_version": self.hw_min,
            "maximum_hardware_version": self.hw_max,
            "header_extra": self.extra,
        }


def _optional_size(field_control: int) -> int:
    return (
        (1 if field_control & FC_SECURITY_CREDENTIAL else 0)
        + (8 if field_control & FC_DESTINATION else 0)
        + (4 if field_control & FC_HW_VERSIONS else 0)
    )


def _parse_header(src: _Source, problems: list[str]) -> _Header:
    """Read the OTA header at the start of ``src.data``; findings go to ``problems``."""
    data = src.data
    if data[:4] != _MAGIC_BYTES:
        raise src.fail(
            f"not a Zigbee OTA header: file identifier {data[:4].hex(' ').upper() or 'missing'}, "
            "expected 1E F1 EE 0B",
            0,
            hint="is this an OTA upgrade file?",
        )
    if len(data) < FIXED_HEADER_SIZE:
        raise src.fail(
            f"the file is truncated in the OTA header: {len(data)} bytes present, "
            f"the header needs at least {FIXED_HEADER_SIZE}",
            0,
        )
    (_magic, version, length, fc, mfr, itype, fver, stack, hstring, total) = _FIXED.unpack_from(
        data, 0
    )
    needed = FIXED_HEADER_SIZE + _optional_size(fc)
    if len(data) < needed:
        raise src.fail(
            f"the file is truncated in the OTA header: field control 0x{fc:04X} needs "
            f"{needed} header bytes, {len(data)} are present",
            0,
        )
    if length < needed:
        raise src.fail(
            f"header length field says {length} bytes, but field control 0x{fc:04X} needs {needed}",
            6,
            hint="the OTA header is corrupt",
        )
    if length > len(data):
        raise src.fail(
            f"the file is truncated in the OTA header: header length field says {length} "
            f"bytes, {len(data)} are present",
            6,
        )
    if version != HEADER_VERSION:
        problems.append(
            f"header version is 0x{version:04X}, not 0x{HEADER_VERSION:04X}; "
            "the fields were read as version 0x0100 defines them."
        )
    if fc & ~_FC_KNOWN:
        problems.append(
            f"field control 0x{fc:04X} sets reserved bits 0x{fc & ~_FC_KNOWN:04X}; "
            "they were ignored."
        )
    at = FIXED_HEADER_SIZE
    credential = destination = hw_min = hw_max = None
    if fc & FC_SECURITY_CREDENTIAL:
        credential = data[at]
        at += 1
    if fc & FC_DESTINATION:
        destination = bytes(data[at : at + 8])
        at += 8
    if fc & FC_HW_VERSIONS:
        hw_min, hw_max = struct.unpack_from("<HH", data, at)
        at += 4
        if hw_min > hw_max:
            problems.append(
                f"minimum hardware version 0x{hw_min:04X} is above the maximum 0x{hw_max:04X}: "
                "no hardware matches."
            )
    extra = bytes(data[at:length])
    if extra:
        problems.append(
            f"header length field says {length} bytes, {len(extra)} more than field control "
            f"0x{fc:04X} needs; the extra header bytes were skipped."
        )
    return _Header(
        header_version=version,
        header_length=length,
        field_control=fc,
        manufacturer_code=mfr,
        image_type=itype,
        file_version=fver,
        stack_version=stack,
        header_string=bytes(hstring),
        total_image_size=total,
        security_credential_version=credential,
        destination=destination,
        hw_min=hw_min,
        hw_max=hw_max,
        extra=extra,
    )


# --- Zigbee OTA files ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Element:
    tag: int
    offset: int  # of the tag, within the OTA file (header at 0)
    data: bytes | memoryview  # a view of the file: copied only where it is kept


@dataclass(frozen=True)
class _Overrun:
    """A sub-element whose declared length runs past the bytes available."""

    offset: int
    tag: int
    length: int


class _TooMany(Exception):
    """More than :data:`MAX_SUB_ELEMENTS`; ``offset`` is where the one too many starts."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def _walk(
    data: bytes, start: int, end: int, room: int
) -> tuple[list[_Element], int, _Overrun | None]:
    """Sub-elements in ``data[start:end]``: those read, where reading stopped, any overrun.

    Raises:
        _TooMany: more than ``room`` sub-elements (counted as they are read).
    """
    elements: list[_Element] = []
    view = memoryview(data)
    at = start
    while end - at >= _ELEMENT_HEADER:
        tag, length = _ELEMENT.unpack_from(data, at)
        stop = at + _ELEMENT_HEADER + length
        if stop > end:
            return elements, at, _Overrun(at, tag, length)
        if len(elements) == room:
            raise _TooMany(at)
        elements.append(_Element(tag, at, view[at + _ELEMENT_HEADER : stop]))
        at = stop
    return elements, at, None


def _truncated(src: _Source, over: _Overrun, total: int) -> ImageFormatError:
    n = len(src.data)
    present = max(0, n - over.offset - _ELEMENT_HEADER)
    size = f" (total image size field: {total} bytes, file: {n})" if total > n else ""
    return src.fail(
        f"the file is truncated{size}: {_tag_label(over.tag)} declares {over.length} bytes "
        f"but only {present} follow its header",
        over.offset,
        hint="the download or copy was cut short; get the whole file again",
    )


def _crc_note(region: bytes) -> str:
    """Say whether the last 4 bytes of ``region`` are a CRC-32 of what precedes them."""
    if len(region) < 8:
        return ""
    stored = int.from_bytes(region[-4:], "little")
    crc = zlib.crc32(memoryview(region)[:-4]) & 0xFFFFFFFF
    if stored == crc:
        return " Their last 4 bytes are a CRC-32 (zlib) of everything before them."
    if stored == crc ^ 0xFFFFFFFF:
        return " Their last 4 bytes are a CRC-32/JAMCRC (inverted zlib) of everything before them."
    return ""


@dataclass(frozen=True)
class _Unwrapped:
    data: bytes  # the OTA file proper, header at offset 0
    base: int  # where that sits in the given file
    wrapper: str
    problems: tuple[str, ...]


def _unwrap(data: bytes, src: _Source) -> _Unwrapped:
    """Find the OTA file inside known vendor wrappers or after an unknown prefix."""
    n = len(data)
    if not n:
        raise src.fail("the file is empty", hint="is this an OTA upgrade file?")
    if data[:4] == _IKEA_MAGIC:
        if n < _IKEA_HEADER:
            raise src.fail(
                f"the file is truncated in the IKEA 'NGIS' container header: {n} bytes "
                f"present, it needs {_IKEA_HEADER}",
                0,
            )
        offset, size = _u32(data, 16), _u32(data, 20)
        if offset + size > n:
            raise src.fail(
                f"the file is truncated: the IKEA 'NGIS' container puts the OTA file at "
                f"{offset}..{offset + size}, but the file holds {n} bytes",
                16,
            )
        inner = data[offset : offset + size]
        if inner[:4] != _MAGIC_BYTES:
            raise src.fail(
                "the IKEA 'NGIS' container does not point at a Zigbee OTA header",
                offset,
                hint="the container header is corrupt",
            )
        return _Unwrapped(
            inner,
            offset,
            "ikea-ngis",
            (
                f"IKEA 'NGIS' container: the OTA file is the {size} bytes at offset {offset}; "
                f"the container's other {n - size} bytes were ignored.",
            ),
        )
    if n > _LEGRAND_EXTRA + 4 and _u32(data, 0) + _LEGRAND_EXTRA == n and data[4:8] == _MAGIC_BYTES:
        return _Unwrapped(
            data[4 : n - 17],
            4,
            "legrand",
            (
                "Legrand wrapper: a 4-byte size prefix and a 17-byte suffix around the OTA "
                "file were removed.",
            ),
        )
    if (
        n > _THIRDREALITY_HEADER + 4
        and data[_THIRDREALITY_HEADER : _THIRDREALITY_HEADER + 4] == _MAGIC_BYTES
        and _u32(data, 68) + 64 == n
        and data[:64] == hashlib.sha512(data[64:]).digest()
    ):
        return _Unwrapped(
            data[_THIRDREALITY_HEADER:],
            _THIRDREALITY_HEADER,
            "thirdreality",
            (
                f"Third Reality wrapper: a {_THIRDREALITY_HEADER}-byte header (its SHA-512 "
                "matches) before the OTA file was removed.",
            ),
        )
    at = data.find(_MAGIC_BYTES, 0, MAX_PREFIX + 4)
    if at < 0:
        raise src.fail(
            f"no Zigbee OTA file identifier (1E F1 EE 0B) in the first {min(n, MAX_PREFIX + 4)} "
            "bytes",
            0,
            hint="is this an OTA upgrade file?",
        )
    if at == 0:
        return _Unwrapped(data, 0, "none", ())
    return _Unwrapped(
        data[at:],
        at,
        "prefix",
        (f"a {at}-byte vendor prefix precedes the OTA header; it was skipped.",),
    )


@dataclass(frozen=True)
class _ZigbeeReading:
    image: ParsedImage
    clean: bool  # sub-elements tile the whole file exactly, with upgrade image data


def _read_zigbee(data: bytes, path: str) -> _ZigbeeReading:
    data = bytes(data)
    outer = _Source(data, 0, path, "zigbee-ota")
    wrapped = _unwrap(data, outer)
    src = _Source(wrapped.data, wrapped.base, path, "zigbee-ota")
    buf, base = wrapped.data, wrapped.base
    problems = list(wrapped.problems)
    hdr = _parse_header(src, problems)
    n, hl, total = len(buf), hdr.header_length, hdr.total_image_size
    wrapper = wrapped.wrapper

    hue_image: bytes | None = None
    try:
        elements, end, more_problems = _sub_elements(src, hdr)
    except ImageFormatError:
        # Hue SBL images put the firmware straight after the header (zigpy's
        # HueSBLOTAImage); only when the sub-element reading fails, so a real
        # sub-element 0x002A is never mistaken for one.
        hue = (
            hdr.manufacturer_code == _HUE_MANUFACTURER
            and buf[hl : hl + 3] == _HUE_SBL_MAGIC
            and hl < total <= n
        )
        if not hue:
            raise
        wrapper = "hue-sbl" if wrapper == "none" else f"{wrapper}+hue-sbl"
        elements, end, hue_image = [], total, buf[hl:total]
        more_problems = [
            "Hue SBL image: the data after the header is one upgrade image without "
            "sub-element headers."
        ]
    problems += more_problems

    trailing = buf[end:]
    if trailing:
        if (
            wrapper == "ikea-ngis"
            and len(elements) == 1
            and elements[0].tag == TAG_UPGRADE_IMAGE
            and elements[0].offset + _ELEMENT_HEADER + len(elements[0].data) == end
        ):
            # IKEA files with one upgrade image are seen with a total size that stops
            # short of it; zigpy treats the rest as part of the image, and so do we.
            first = elements[0]
            elements = [_Element(first.tag, first.offset, bytes(first.data) + trailing)]
            problems.append(
                f"IKEA 'NGIS' container: {len(trailing)} bytes after the stated total image "
                f"size ({total}) were taken as the end of the upgrade image."
            )
        else:
            problems.append(
                f"{len(trailing)} bytes after the end of the image at offset {base + end} "
                f"(total image size field: {total} bytes) were ignored.{_crc_note(buf)}"
            )

    fields = hdr.fields(base)
    fields["wrapper"] = wrapper
    fields["file_size"] = len(data)
    fields["trailing_bytes"] = bytes(trailing)
    fields["sub_elements"] = tuple(
        (e.tag, tag_name(e.tag), base + e.offset, len(e.data)) for e in elements
    )
    seen: dict[str, int] = {}
    odd_sizes: dict[int, list[_Element]] = {}
    for e in elements:
        if e.tag == TAG_UPGRADE_IMAGE:
            continue
        key = _TAG_FIELDS.get(e.tag, f"tag_0x{e.tag:04X}")
        seen[key] = seen.get(key, 0) + 1
        fields[key if seen[key] == 1 else f"{key}_{seen[key]}"] = bytes(e.data)
        expected = _EXPECTED_SIZES.get(e.tag)
        if expected is not None and len(e.data) != expected:
            odd_sizes.setdefault(e.tag, []).append(e)
    for tag, odd in odd_sizes.items():
        many = f" (and {len(odd) - 1} more such)" if len(odd) > 1 else ""
        problems.append(
            f"{_tag_label(tag)} at offset {base + odd[0].offset} is {len(odd[0].data)} bytes"
            f"{many}; the suite defines {_EXPECTED_SIZES[tag]}."
        )

    signature = None
    signatures = [e for e in elements if e.tag in _SIGNATURE_SCHEMES]
    if signatures:
        first = signatures[0]
        signer = (
            bytes(first.data[:_SIGNER_IEEE_SIZE]) if len(first.data) > _SIGNER_IEEE_SIZE else b""
        )
        fields["signer_ieee"] = signer or None
        signature = Signature(
            scheme=_SIGNATURE_SCHEMES[first.tag],
            value=bytes(first.data[len(signer) :]),
            signed_data=buf[: first.offset],
            status=SigStatus.UNSUPPORTED,
        )
        if len(signatures) > 1:
            problems.append(
                f"{len(signatures)} signature sub-elements; only the first (offset "
                f"{base + first.offset}) is reported."
            )

    images = [bytes(e.data) for e in elements if e.tag == TAG_UPGRADE_IMAGE]
    if hue_image is not None:
        images = [hue_image]
    if images:
        segments = tuple(Segment(None, image, "upgrade image") for image in images)
    else:
        segments = (Segment(None, bytes(buf[hl:end]), "sub-elements"),)
        problems.append(
            f"no upgrade image sub-element (tag 0x0000): the payload is the whole "
            f"sub-element area ({end - hl} bytes at offset {base + hl})."
        )

    clean = wrapper == "none" and total == n and end == n and not more_problems and any(images)
    image = ParsedImage(
        path=path,
        container="zigbee-ota",
        fields=fields,
        segments=segments,
        manufacturer_code=hdr.manufacturer_code,
        image_type=hdr.image_type,
        file_version=hdr.file_version,
        hw_min=hdr.hw_min,
        hw_max=hdr.hw_max,
        signature=signature,
        problems=tuple(problems),
    )
    return _ZigbeeReading(image, clean)


def _sub_elements(src: _Source, hdr: _Header) -> tuple[list[_Element], int, list[str]]:
    """Read the sub-elements: those found, where the image ends, and findings.

    The image normally ends at the total image size. When that field is smaller than the
    header, larger than the data, or stops inside a sub-element that the data does hold,
    the field is wrong (common in old files) and the data present decides. A sub-element
    that runs past the end of the data means the file is truncated: that is refused.
    """
    data = src.data
    n, hl, total = len(data), hdr.header_length, hdr.total_image_size
    problems: list[str] = []
    if total < hl:
        problems.append(
            f"total image size field says {total} bytes, less than the {hl}-byte header; "
            "the sub-elements were read to the end of the data."
        )
        end = n
    elif total > n:
        problems.append(
            f"total image size field says {total} bytes, but only {n} are present; "
            "the sub-elements were read to the end of the data."
        )
        end = n
    else:
        end = total
    try:
        elements, at, over = _walk(data, hl, end, MAX_SUB_ELEMENTS)
        if over is not None and end < n and over.offset + _ELEMENT_HEADER + over.length <= n:
            problems.append(
                f"{_tag_label(over.tag)} at offset {src.base + over.offset} runs past the "
                f"total image size ({total} bytes), which is wrong; the sub-elements were read "
                f"to the end of the data ({n} bytes)."
            )
            end = n
            more, at, over = _walk(data, over.offset, end, MAX_SUB_ELEMENTS - len(elements))
            elements += more
    except _TooMany as exc:
        raise src.fail(
            f"more than {MAX_SUB_ELEMENTS} sub-elements; an OTA file holds a handful (an "
            "upgrade image, a signature, a certificate), so this one was not read further",
            exc.offset,
            hint="the file is corrupt or crafted; get it again from the hub maker",
        ) from None
    if over is not None:
        raise _truncated(src, over, total)
    leftover = end - at
    if leftover:
        if total > n:
            raise src.fail(
                f"the file is truncated (total image size field: {total} bytes, file: {n}): "
                f"{leftover} bytes of a sub-element header remain, it needs {_ELEMENT_HEADER}",
                at,
                hint="the download or copy was cut short; get the whole file again",
            )
        problems.append(
            f"{leftover} bytes at offset {src.base + at}, after the last sub-element, are too "
            "few for a sub-element and were ignored."
        )
    elif end < n:
        # Bytes beyond the total size that are themselves whole sub-elements: the size
        # field is the thing that is wrong. (Too many of them: they are not, e.g. zeros.)
        try:
            more, stop, over = _walk(data, end, n, MAX_SUB_ELEMENTS - len(elements))
        except _TooMany:
            more, stop, over = [], end, None
        if more and over is None and stop == n:
            problems.append(
                f"total image size field says {total} bytes, but {len(more)} more "
                f"sub-element(s) follow up to the end of the data ({n} bytes); the field is "
                "wrong and they were read."
            )
            elements += more
            end = n
    return elements, end, problems


def parse_zigbee_ota(data: bytes, path: str = "") -> ParsedImage:
    """Parse a Zigbee OTA Upgrade file (header and sub-elements).

    Args:
        data: the whole file.
        path: where it came from, for messages and ``ParsedImage.path``.

    Returns:
        container ``"zigbee-ota"``; one segment per upgrade image sub-element (or the raw
        sub-element area, with a problem, when there is none); ``fields`` holds every header
        field, ``sub_elements`` as ``(tag, name, file offset, length)`` tuples, each other
        sub-element's data under its name (``image_integrity_code``, ``tag_0xF000``...),
        ``wrapper`` and ``trailing_bytes``.

    Raises:
        ImageFormatError: no OTA header in the first ``MAX_PREFIX`` bytes, an inconsistent
            header, or a truncated file (a sub-element runs past the end of the data).
    """
    return _read_zigbee(data, path).image


# --- GBCS OTA Upgrade Images ---------------------------------------------------------------


def _gbcs_layout(src: _Source, problems: list[str]) -> _Header:
    """The header of a GBCS image, after checking the size and trailer fit; else refuse."""
    data = src.data
    hdr = _parse_header(src, problems)
    n = len(data)
    if hdr.total_image_size != n:
        raise src.fail(
            f"total image size field says {hdr.total_image_size} bytes, but the file holds {n}",
            52,
            hint=(
                "a GBCS OTA Upgrade Image has no sub-elements to fall back on: the file is "
                "truncated, padded or corrupt; get a fresh copy"
            ),
        )
    if n - hdr.header_length < _GBCS_TRAILER + 1:
        raise src.fail(
            f"{n - hdr.header_length} bytes follow the {hdr.header_length}-byte header: too few "
            "for a Manufacturer Image, the force-replace byte, 0x40 and a 64-byte signature",
            hdr.header_length,
        )
    length_byte = data[n - GBCS_SIGNATURE_SIZE - 1]
    if length_byte != GBCS_SIGNATURE_LENGTH_BYTE:
        raise src.fail(
            f"the byte before the signature is 0x{length_byte:02X}, expected 0x40 (a 64-byte "
            "signature follows)",
            n - GBCS_SIGNATURE_SIZE - 1,
            hint="not a GBCS OTA Upgrade Image, or a corrupt one",
        )
    return hdr


def parse_gbcs_image(data: bytes, path: str = "") -> ParsedImage:
    """Parse a GBCS OTA Upgrade Image (header, Manufacturer Image, force replace, signature).

    Returns:
        container ``"gbcs-ota"``; one segment, the Manufacturer Image (address None);
        ``signature`` an ``ecdsa-p256-sha256`` r||s over the Manufacturer Image, status
        UNCHECKED, or None with a problem when the signature is all zeros (unsigned);
        ``fields`` holds every header field, ``force_replace``, ``manufacturer_image_offset``,
        ``manufacturer_image_length`` and ``manufacturer_image_hash`` (SHA-256, lower-case hex).

    Raises:
        ImageFormatError: no OTA header at offset 0, an inconsistent header, a total image
            size other than the file length, or no room for the trailer.
    """
    data = bytes(data)
    src = _Source(data, 0, path, "gbcs-ota")
    problems: list[str] = []
    hdr = _gbcs_layout(src, problems)
    n, hl = len(data), hdr.header_length
    if hdr.field_control != GBCS_FIELD_CONTROL:
        problems.append(
            f"field control is 0x{hdr.field_control:04X}; GBCS images use 0x0004 (hardware "
            "versions only)."
        )
    if hdr.hw_min is None:
        problems.append("the header gives no hardware version range.")
    image = data[hl : n - _GBCS_TRAILER]
    force_replace = data[n - _GBCS_TRAILER]
    rs = data[n - GBCS_SIGNATURE_SIZE :]
    digest = hashlib.sha256(image).hexdigest()
    signature = None
    if any(rs):
        signature = Signature(scheme="ecdsa-p256-sha256", value=rs, signed_data=image)
    else:
        problems.append("signature is all zeros: unsigned.")
    fields = hdr.fields(0)
    fields.update(
        wrapper="none",
        file_size=n,
        manufacturer_image_offset=hl,
        manufacturer_image_length=len(image),
        manufacturer_image_hash=digest,
        force_replace=force_replace,
        signature_length=GBCS_SIGNATURE_LENGTH_BYTE,
    )
    return ParsedImage(
        path=path,
        container="gbcs-ota",
        fields=fields,
        segments=(Segment(None, image, "manufacturer image"),),
        manufacturer_code=hdr.manufacturer_code,
        image_type=hdr.image_type,
        file_version=hdr.file_version,
        hw_min=hdr.hw_min,
        hw_max=hdr.hw_max,
        signature=signature,
        problems=tuple(problems),
    )


def _looks_gbcs(data: bytes) -> bool:
    """Whether the GBCS layout fits: header at 0, size = file length, 0x40 before r||s."""
    try:
        _gbcs_layout(_Source(data, 0, "", "gbcs-ota"), [])
    except ImageFormatError:
        return False
    return True


def parse_ota_file(data: bytes, path: str = "") -> ParsedImage:
    """Parse an OTA file as a GBCS OTA Upgrade Image or a Zigbee OTA file, whichever it is.

    GBCS when the GBCS layout fits (header at 0, total size = file length, 0x40 65 bytes
    from the end) and the Zigbee reading is not clean (sub-elements tiling the file exactly,
    with upgrade image data); Zigbee otherwise. See the module docstring.

    Raises:
        ImageFormatError: neither reading works; the error is the Zigbee parser's.
    """
    data = bytes(data)
    if not _looks_gbcs(data):
        return parse_zigbee_ota(data, path)
    try:
        reading = _read_zigbee(data, path)
    except ImageFormatError:
        return parse_gbcs_image(data, path)
    return reading.image if reading.clean else parse_gbcs_image(data, path)


def gbcs_file_name(image: ParsedImage) -> str:
    """``MMMM-TTTT-VVVVVVVV-<SHA-256>.zigbee`` for a GBCS image, all hex upper case.

    The hash is the Manufacturer Image Hash, 64 upper-case hex digits, as gbcs.py names its
    files (see the module docstring).

    Raises:
        ValueError: ``image`` is not a parsed GBCS OTA Upgrade Image.
    """
    if (
        image.container != "gbcs-ota"
        or image.manufacturer_code is None
        or image.image_type is None
        or image.file_version is None
    ):
        raise ValueError(f"GBCS file names are for gbcs-ota images, not {image.container}")
    return (
        f"{image.manufacturer_code:04X}-{image.image_type:04X}-{image.file_version:08X}-"
        f"{image.sha256.upper()}.zigbee"
    )


# --- building ------------------------------------------------------------------------------


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must fit in {bits} bits, got {value!r}")


def _build_header(
    *,
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    stack_version: int,
    header_string: bytes,
    security_credential_version: int | None,
    destination: bytes | None,
    hw_range: tuple[int, int] | None,
    body_size: int,
) -> bytes:
    _check_range("manufacturer_code", manufacturer_code, 16)
    _check_range("image_type", image_type, 16)
    _check_range("file_version", file_version, 32)
    _check_range("stack_version", stack_version, 16)
    if len(header_string) > HEADER_STRING_SIZE:
        raise ValueError(f"header_string is {len(header_string)} bytes, at most 32 fit")
    fc = 0
    optional = b""
    if security_credential_version is not None:
        _check_range("security_credential_version", security_credential_version, 8)
        fc |= FC_SECURITY_CREDENTIAL
        optional += bytes([security_credential_version])
    if destination is not None:
        if len(destination) != 8:
            raise ValueError(f"destination must be 8 bytes (an EUI-64), got {len(destination)}")
        fc |= FC_DESTINATION
        optional += bytes(destination)
    if hw_range is not None:
        _check_range("hw_range[0]", hw_range[0], 16)
        _check_range("hw_range[1]", hw_range[1], 16)
        fc |= FC_HW_VERSIONS
        optional += struct.pack("<HH", *hw_range)
    length = FIXED_HEADER_SIZE + len(optional)
    total = length + body_size
    _check_range("total image size", total, 32)
    fixed = _FIXED.pack(
        OTA_MAGIC,
        HEADER_VERSION,
        length,
        fc,
        manufacturer_code,
        image_type,
        file_version,
        stack_version,
        bytes(header_string).ljust(HEADER_STRING_SIZE, b"\0"),
        total,
    )
    return fixed + optional


def build_zigbee_ota(
    elements: Sequence[tuple[int, bytes]],
    *,
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    stack_version: int = STACK_PRO,
    header_string: bytes = b"",
    security_credential_version: int | None = None,
    destination: bytes | None = None,
    hw_range: tuple[int, int] | None = None,
) -> bytes:
    """A Zigbee OTA file: the header (with the optional fields given) and ``elements``.

    Args:
        elements: ``(tag, data)`` sub-elements, in file order.
        destination: the upgrade file destination EUI-64, 8 bytes as stored (little-endian).
        hw_range: ``(minimum, maximum)`` hardware versions.

    Raises:
        ValueError: a value does not fit its field.
    """
    body = b""
    for tag, data in elements:
        _check_range("sub-element tag", tag, 16)
        body += _ELEMENT.pack(tag, len(data)) + bytes(data)
    header = _build_header(
        manufacturer_code=manufacturer_code,
        image_type=image_type,
        file_version=file_version,
        stack_version=stack_version,
        header_string=header_string,
        security_credential_version=security_credential_version,
        destination=destination,
        hw_range=hw_range,
        body_size=len(body),
    )
    return header + body


def build_gbcs_image(
    manufacturer_image: bytes,
    *,
    manufacturer_code: int,
    image_type: int,
    file_version: int,
    hw_min: int,
    hw_max: int,
    force_replace: int = 0,
    header_string: bytes = b"",
    sign: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """A GBCS OTA Upgrade Image (GBCS 11.2.3): header, image, force replace, 0x40, r||s.

    Args:
        sign: returns the 64-byte r||s signature of its argument (the Manufacturer Image),
            e.g. ``ecdsa_p256_sign(key)``. None writes 64 zero bytes: an unsigned image,
            which the parser reports with ``signature=None`` and verification refuses.

    Raises:
        ValueError: an empty image, a value that does not fit, or a signature that is not
            64 bytes.
    """
    if not manufacturer_image:
        raise ValueError("the Manufacturer Image is empty")
    _check_range("force_replace", force_replace, 8)
    rs = bytes(GBCS_SIGNATURE_SIZE) if sign is None else bytes(sign(bytes(manufacturer_image)))
    if len(rs) != GBCS_SIGNATURE_SIZE:
        raise ValueError(f"sign() returned {len(rs)} bytes; a GBCS signature is r||s, 64 bytes")
    body = bytes(manufacturer_image) + bytes([force_replace, GBCS_SIGNATURE_LENGTH_BYTE]) + rs
    header = _build_header(
        manufacturer_code=manufacturer_code,
        image_type=image_type,
        file_version=file_version,
        stack_version=STACK_PRO,
        header_string=header_string,
        security_credential_version=None,
        destination=None,
        hw_range=(hw_min, hw_max),
        body_size=len(body),
    )
    return header + body


# --- ECDSA P-256 with r||s signatures --------------------------------------------------------


def _check_p256(curve: ec.EllipticCurve) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise ValueError(f"GBCS signatures use P-256 (secp256r1), not {curve.name}")


def ecdsa_p256_sign(private_key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    """A signer for :func:`build_gbcs_image`: ECDSA P-256 over SHA-256, returning r||s.

    Raises:
        ValueError: the key is not on P-256.
    """
    _check_p256(private_key.curve)

    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def ecdsa_p256_verify(public_key: ec.EllipticCurvePublicKey, data: bytes, rs: bytes) -> bool:
    """Whether ``rs`` (64 bytes, r||s) is a valid ECDSA P-256/SHA-256 signature of ``data``.

    A signature of the wrong size, or with r or s zero, is simply not valid.

    Raises:
        ValueError: the key is not on P-256.
    """
    _check_p256(public_key.curve)
    if len(rs) != GBCS_SIGNATURE_SIZE:
        return False
    r = int.from_bytes(rs[:32], "big")
    s = int.from_bytes(rs[32:], "big")
    if r == 0 or s == 0:
        return False
    try:
        public_key.verify(encode_dss_signature(r, s), bytes(data), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True

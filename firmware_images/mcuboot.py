"""MCUboot images: the header, the payload and the TLVs that follow it.

Layout (little-endian; ``mcu-tools/mcuboot`` ``boot/bootutil/include/bootutil/image.h``):
a 32-byte header (magic 0x96f3b83d, load address, header size, protected-TLV size, image
size, flags, version major.minor.revision+build), zero padding up to the header size, the
payload (``img_size`` bytes), an optional protected TLV area (info magic 0x6908), then the
TLV area (info magic 0x6907): SHA-256 of header, payload and protected TLVs (type 0x10),
ECDSA signature of that hash (type 0x22, DER), hash of the signing key (type 0x01).

What is trusted is only what the signature covers: header, payload and protected TLVs (the
bytes hashed into the SHA-256 TLV). The unprotected TLVs are checked (the hash must match
the bytes; a TLV that appears twice must say the same both times) but trusted only as far
as the signature, verified against the trust store (:mod:`firmware_images.trust`), vouches
for the hash. The header's version is a second copy of the payload descriptor's version and
must agree with it. Every size is checked against the file before anything is sliced.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from drivers.errors import ImageError
from firmware_images.descriptor import check_payload
from firmware_images.formats import ImageFormat
from firmware_images.model import ImageFormatError, ParsedImage, Segment, Signature

MAGIC = 0x96F3B83D
MAGIC_BYTES = struct.pack("<I", MAGIC)
HEADER = struct.Struct("<IIHHIIBBHII")
HEADER_SIZE = HEADER.size  # 32
TLV_INFO = struct.Struct("<HH")  # magic, total size including this info
TLV_ENTRY = struct.Struct("<HH")  # type, length
TLV_INFO_MAGIC = 0x6907
TLV_PROT_INFO_MAGIC = 0x6908
TLV_KEYHASH = 0x01
TLV_SHA256 = 0x10
TLV_ECDSA_SIG = 0x22
#: Header flags (image.h).
F_PIC = 0x01
F_ENCRYPTED_AES128 = 0x04
F_ENCRYPTED_AES256 = 0x08
F_NON_BOOTABLE = 0x10
F_RAM_LOAD = 0x20
_ENCRYPTED = F_ENCRYPTED_AES128 | F_ENCRYPTED_AES256
#: Most TLVs read from one area: a TLV area is a few entries; a file of thousands is hostile.
MAX_TLVS = 64
#: An ECDSA P-256 DER signature is at most 72 bytes; anything far larger is not one.
MAX_SIGNATURE_SIZE = 80

assert HEADER_SIZE == 32


@dataclass(frozen=True, order=True)
class ImageVersion:
    """``major.minor.revision+build`` as the header holds it (u8, u8, u16, u32)."""

    major: int
    minor: int
    revision: int
    build: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}+{self.build}"

    @property
    def smp_text(self) -> str:
        """As MCUboot's image state read reports it: ``1.2.3``, ``.build`` only if non-zero
        (boot_serial.c ``bs_list_img_ver``)."""
        text = f"{self.major}.{self.minor}.{self.revision}"
        return f"{text}.{self.build}" if self.build else text

    @property
    def as_int(self) -> int | None:
        """The station's 32-bit firmware version (one byte a part), None when revision or
        build do not fit a byte (then it cannot equal any descriptor version)."""
        if self.revision > 0xFF or self.build > 0xFF:
            return None
        return self.major << 24 | self.minor << 16 | self.revision << 8 | self.build

    @classmethod
    def from_int(cls, version: int) -> ImageVersion:
        """The header version for a station firmware version ``0xMMmmRRBB``."""
        if not 0 <= version <= 0xFFFF_FFFF:
            raise ValueError(f"version {version} does not fit in 32 bits")
        b = version.to_bytes(4, "big")
        return cls(b[0], b[1], b[2], b[3])

    @classmethod
    def parse_smp(cls, text: str) -> ImageVersion:
        """A version as image state read reports it (``1.2.3`` or ``1.2.3.4``).

        Raises:
            ValueError: not three or four decimal parts in range.
        """
        parts = text.split(".")
        if len(parts) not in (3, 4) or not all(p.isdigit() and len(p) <= 10 for p in parts):
            raise ValueError(f"not an MCUboot version: {text!r}")
        nums = [int(p) for p in parts] + [0] * (4 - len(parts))
        if nums[0] > 0xFF or nums[1] > 0xFF or nums[2] > 0xFFFF or nums[3] > 0xFFFF_FFFF:
            raise ValueError(f"MCUboot version out of range: {text!r}")
        return cls(*nums)


@dataclass(frozen=True)
class McubootHeader:
    """The decoded 32-byte header."""

    load_address: int
    header_size: int
    protect_tlv_size: int
    image_size: int
    flags: int
    version: ImageVersion

    def pack(self) -> bytes:
        v = self.version
        return HEADER.pack(
            MAGIC,
            self.load_address,
            self.header_size,
            self.protect_tlv_size,
            self.image_size,
            self.flags,
            v.major,
            v.minor,
            v.revision,
            v.build,
            0,
        )


@dataclass(frozen=True)
class McubootImage:
    """An MCUboot file taken apart (see :func:`read_mcuboot`)."""

    header: McubootHeader
    payload: bytes
    hashed: bytes  # header, payload and protected TLVs: what the SHA-256 TLV covers
    sha256: bytes  # the SHA-256 TLV (equal to the hash of ``hashed``)
    signature: bytes | None  # r||s, 64 bytes, from the DER ECDSA TLV
    key_hash: bytes | None
    size: int  # bytes of the file the image occupies (through its last TLV)


def read_header(data: bytes) -> McubootHeader:
    """The header at the start of ``data``.

    Raises:
        ImageFormatError: too short, wrong magic, header size below 32.
    """
    if len(data) < HEADER_SIZE:
        raise ImageFormatError(f"an MCUboot header is {HEADER_SIZE} bytes; only {len(data)}")
    magic, load, hdr_size, prot, img_size, flags, major, minor, rev, build, _ = HEADER.unpack(
        data[:HEADER_SIZE]
    )
    if magic != MAGIC:
        raise ImageFormatError(f"MCUboot magic 0x{magic:08x} is not 0x{MAGIC:08x}", offset=0)
    if hdr_size < HEADER_SIZE:
        raise ImageFormatError(f"header size {hdr_size} is below {HEADER_SIZE}", offset=8)
    return McubootHeader(
        load, hdr_size, prot, img_size, flags, ImageVersion(major, minor, rev, build)
    )


def _tlvs(data: bytes, at: int, magic: int, where: str) -> tuple[list[tuple[int, bytes]], int]:
    """The TLVs of the area at ``at`` and the offset after it; bounds checked first."""
    if at + TLV_INFO.size > len(data):
        raise ImageFormatError(f"the {where} TLV area is missing (file ends)", offset=at)
    found, total = TLV_INFO.unpack_from(data, at)
    if found != magic:
        raise ImageFormatError(
            f"the {where} TLV area starts 0x{found:04x}, not 0x{magic:04x}", offset=at
        )
    end = at + total
    if total < TLV_INFO.size or end > len(data):
        raise ImageFormatError(
            f"the {where} TLV area claims {total} bytes; the file holds {len(data) - at}",
            offset=at,
        )
    out: list[tuple[int, bytes]] = []
    pos = at + TLV_INFO.size
    while pos < end:
        if len(out) == MAX_TLVS:
            raise ImageFormatError(f"more than {MAX_TLVS} TLVs in the {where} area", offset=pos)
        if pos + TLV_ENTRY.size > end:
            raise ImageFormatError(f"a {where} TLV is cut off", offset=pos)
        kind, length = TLV_ENTRY.unpack_from(data, pos)
        pos += TLV_ENTRY.size
        if pos + length > end:
            raise ImageFormatError(
                f"{where} TLV 0x{kind:02x} of {length} bytes overruns its area", offset=pos
            )
        out.append((kind, bytes(data[pos : pos + length])))
        pos += length
    return out, end


def _one(tlvs: list[tuple[int, bytes]], kind: int, name: str) -> bytes | None:
    """The value of TLV ``kind``; a second copy must say the same."""
    values = [v for k, v in tlvs if k == kind]
    if any(v != values[0] for v in values[1:]):
        raise ImageFormatError(f"the image holds {len(values)} different {name} TLVs")
    return values[0] if values else None


def _raw_signature(der: bytes) -> bytes:
    if len(der) > MAX_SIGNATURE_SIZE:
        raise ImageFormatError(f"the ECDSA signature TLV is {len(der)} bytes, not a P-256 one")
    try:
        r, s = decode_dss_signature(der)
    except ValueError as exc:
        raise ImageFormatError(f"the ECDSA signature TLV is not DER: {exc}") from exc
    if not (0 < r < 1 << 256 and 0 < s < 1 << 256):
        raise ImageFormatError("the ECDSA signature TLV is not a P-256 signature")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def read_mcuboot(data: bytes) -> McubootImage:
    """Take an MCUboot file apart and check it for internal consistency.

    Raises:
        ImageFormatError: bad magic; sizes beyond the file; a missing or wrong SHA-256 TLV;
            disagreeing duplicates; an unreadable signature; an encrypted image.
    """
    hdr = read_header(data)
    if hdr.flags & _ENCRYPTED:
        raise ImageFormatError(
            "the image is encrypted; its payload cannot be checked here", offset=16
        )
    body_end = hdr.header_size + hdr.image_size
    if body_end > len(data):
        raise ImageFormatError(
            f"header size {hdr.header_size} plus image size {hdr.image_size} is beyond the "
            f"file's {len(data)} bytes",
            offset=12,
        )
    if any(data[HEADER_SIZE : hdr.header_size]):
        raise ImageFormatError("the header padding is not zero", offset=HEADER_SIZE)
    tlvs: list[tuple[int, bytes]] = []
    at = body_end
    if hdr.protect_tlv_size:
        protected, at = _tlvs(data, body_end, TLV_PROT_INFO_MAGIC, "protected")
        if at - body_end != hdr.protect_tlv_size:
            raise ImageFormatError(
                f"the protected TLV area is {at - body_end} bytes; the header says "
                f"{hdr.protect_tlv_size}",
                offset=10,
            )
        tlvs += protected
    hashed = bytes(data[:at])
    unprotected, end = _tlvs(data, at, TLV_INFO_MAGIC, "")
    tlvs += unprotected
    sha = _one(tlvs, TLV_SHA256, "SHA-256")
    if sha is None:
        raise ImageFormatError("the image has no SHA-256 TLV (MCUboot will not boot it)")
    actual = hashlib.sha256(hashed).digest()
    if sha != actual:
        raise ImageFormatError(
            f"the SHA-256 TLV {sha.hex()} does not match the image ({actual.hex()}): "
            "altered or truncated"
        )
    der = _one(tlvs, TLV_ECDSA_SIG, "ECDSA signature")
    return McubootImage(
        header=hdr,
        payload=bytes(data[hdr.header_size : body_end]),
        hashed=hashed,
        sha256=sha,
        signature=None if der is None else _raw_signature(der),
        key_hash=_one(tlvs, TLV_KEYHASH, "key hash"),
        size=end,
    )


def parse_mcuboot(data: bytes, path: str = "") -> ParsedImage:
    """An MCUboot file as a :class:`ParsedImage` (container ``"mcuboot"``).

    The payload is the one segment; it has no address of its own (the slot is the hub
    profile's). The signature covers :attr:`McubootImage.hashed`; the header version must
    equal the payload descriptor's.
    """
    img = read_mcuboot(data)
    hdr = img.header
    problems: list[str] = []
    if img.size < len(data):
        problems.append(f"{len(data) - img.size} bytes after the TLV area, ignored")
    version = hdr.version.as_int
    try:
        descriptor = check_payload(img.payload)
    except ImageError:
        descriptor = None
    if descriptor is not None and version != descriptor.firmware_version:
        raise ImageFormatError(
            f"the MCUboot header says version {hdr.version}, the payload's descriptor "
            f"0x{descriptor.firmware_version:08X}: two copies of the version disagree",
            offset=20,
        )
    signature = None
    if img.signature is not None:
        signature = Signature("ecdsa-p256-sha256", img.signature, img.hashed)
    fields: dict[str, int | str | bytes] = {
        "load_address": hdr.load_address,
        "header_size": hdr.header_size,
        "protect_tlv_size": hdr.protect_tlv_size,
        "image_size": hdr.image_size,
        "flags": hdr.flags,
        "version": str(hdr.version),
        "image_sha256": img.sha256.hex(),
    }
    if img.key_hash is not None:
        fields["key_hash"] = img.key_hash.hex()
    return ParsedImage(
        path=path,
        container="mcuboot",
        fields=fields,
        segments=(Segment(None, img.payload),),
        file_version=version,
        signature=signature,
        problems=tuple(problems),
        descriptor=descriptor,
    )


def build_mcuboot(
    payload: bytes,
    version: ImageVersion,
    *,
    header_size: int = 0x200,
    load_address: int = 0,
    flags: int = 0,
    sign: Callable[[bytes], bytes] | None = None,
    key_hash: bytes | None = None,
) -> bytes:
    """An MCUboot file as imgtool makes one (no protected TLVs): header padded to
    ``header_size``, payload, SHA-256 TLV, then key hash and ECDSA TLVs when ``sign`` (a
    signer returning r||s, as :func:`firmware_images.zigbee.ecdsa_p256_sign`) is given."""
    if header_size < HEADER_SIZE:
        raise ValueError(f"header size must be at least {HEADER_SIZE}")
    hdr = McubootHeader(load_address, header_size, 0, len(payload), flags, version)
    hashed = hdr.pack().ljust(header_size, b"\0") + payload
    digest = hashlib.sha256(hashed).digest()
    tlvs = [(TLV_SHA256, digest)]
    if sign is not None:
        if key_hash is not None:
            tlvs.append((TLV_KEYHASH, key_hash))
        rs = sign(hashed)
        der = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
        tlvs.append((TLV_ECDSA_SIG, der))
    body = b"".join(TLV_ENTRY.pack(k, len(v)) + v for k, v in tlvs)
    return hashed + TLV_INFO.pack(TLV_INFO_MAGIC, TLV_INFO.size + len(body)) + body


#: The container the ``smp`` plug-in brings to the loader (recognised by its magic).
MCUBOOT_FORMAT = ImageFormat(
    kind="mcuboot",
    description="an MCUboot image",
    parse=parse_mcuboot,
    magic=MAGIC_BYTES,
    # MCUboot's signature is over the SHA-256 of header, payload and protected TLVs.
    signed_parts=(
        "the image header: magic, load address, header and image sizes, flags, version",
        "the payload (the application, with its descriptor)",
        "the protected TLVs",
    ),
    unsigned_parts=(
        "the unprotected TLVs: SHA-256 (checked against the bytes), key hash, signature",
        "the file name",
    ),
)

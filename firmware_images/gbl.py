"""Silicon Labs Gecko Bootloader (GBL v3) files: parse and build.

A GBL file is a sequence of tags, each a little-endian u32 tag id, a u32 value length and
the value (protocols.md §3.5, domain.md §1c; Silicon Labs ``btl_gbl_format.h`` and the
"Gecko Bootloader File Format" chapter of UG266/UG489). The first tag is HEADER, the last
is END, whose value is the zlib CRC-32 of every byte before it (so the CRC-32 of the
whole file up to the end of END is the residue ``0x2144DF1C``).

What the parser decodes, and what it decided where the public format is silent:

* HEADER: ``version`` (major in the top byte; Gecko bootloaders accept major 3 only) and
  ``type`` (bit 0 AES-CCM encrypted, bit 8 ECDSA signed). A major other than 3 is reported
  as a problem, not refused; a header longer than 8 bytes is kept raw.
* APP_INFO: ``ApplicationData_t``: type bit field, version, capabilities, 16-byte product
  id. ``version`` becomes the image's ``file_version``.
* PROGRAM_DATA / ERASE_PROGRAM_DATA: u32 flash start address, then the bytes. Tags that
  follow each other in the file with consecutive addresses are merged into one segment
  named ``"program data"`` (the builder splits a segment into chunks; this undoes it).
* PROGRAM_DATA_LZ4 / _LZMA (Gecko SDK ``btl_decompress_lz4.c`` / ``btl_decompress_lzma.c``):
  u32 flash start address, then for LZ4 one raw LZ4 *block* (no frame, no size: the
  bootloader's decoder starts at a token and must end after a run of literals), for LZMA
  the 13-byte ``.lzma`` ("alone") header (5 property bytes, u64 uncompressed size) and a
  stream that ends with the end-of-stream marker (the bootloader skips the size and
  requires the marker). They are decompressed here and merged with plain program data, so
  segments, hashes and identity describe what lands in flash. The file is hostile input:
  the output is capped at :data:`MAX_DECOMPRESSED` for the whole file *before* anything
  is allocated (a decompression bomb is refused, not inflated), LZMA's dictionary is
  bounded by a memory limit, bytes after the end marker are refused, and a size the LZMA
  header states must equal what the data decompresses to. ``fields["compression"]``
  holds the method(s), compressed and decompressed byte counts.
* BOOTLOADER (version, address, data), SE_UPGRADE (blob size, version, data), DELTA and
  ENC_GBL_DATA (ciphertext) become further segments, after all program data, in file
  order; METADATA, CERTIFICATE, VERSION_DEPENDENCY and ENC_INIT are kept raw in
  ``fields``. ``segments[0]`` is the first program data segment when there is one.
* SIGNATURE: 64 bytes r||s of ECDSA P-256. Silicon Labs' public docs do not spell out the
  exact bytes it covers (its bootloader hashes every byte before the tag in plain files,
  but the ciphertext in encrypted ones), so it is reported with status ``UNSUPPORTED``,
  scheme ``"gbl-ecdsa-p256"`` and ``signed_data`` = every byte before the signature tag.
  Only END may follow it.
* Unknown tags are kept (``fields["unknown_tags"]``) and each gets a problem sentence.
* Bytes after END are accepted only as padding: a run of one byte value among 0x00 (seen
  in vendor OTA files), 0xFF (erased flash) and 0x1A (XMODEM SUB), with a problem sentence.
  A tag after END, or other trailing bytes, is refused.
"""

from __future__ import annotations

import itertools
import lzma
import struct
from collections.abc import Sequence
from typing import Any

import lz4.block

from drivers.crc import crc32
from firmware_images.model import ImageFormatError, ParsedImage, Segment, Signature, SigStatus

TAG_HEADER = 0x03A617EB
TAG_APP_INFO = 0xF40A0AF4
TAG_BOOTLOADER = 0xF50909F5
TAG_SE_UPGRADE = 0x5EA617EB
TAG_VERSION_DEPENDENCY = 0x76A617EB
TAG_METADATA = 0xF60808F6
TAG_PROGRAM_DATA = 0xFE0101FE
TAG_ERASE_PROGRAM_DATA = 0xFD0303FD
TAG_PROGRAM_DATA_LZ4 = 0xFD0505FD
TAG_PROGRAM_DATA_LZMA = 0xFD0707FD
TAG_DELTA = 0xF80A0AF8
TAG_DELTA_LZ4 = 0xF80B0BF8
TAG_ENC_HEADER = 0xFB0505FB
TAG_ENC_INIT = 0xFA0606FA
TAG_ENC_GBL_DATA = 0xF90707F9
TAG_CERTIFICATE = 0xF30B0BF3
TAG_SIGNATURE = 0xF70A0AF7
TAG_END = 0xFC0404FC

GBL_VERSION_3 = 0x03000000
"""The header version Simplicity Commander writes (major 3 in the top byte)."""
GBL_TYPE_ENCRYPTED = 0x00000001
GBL_TYPE_SIGNED = 0x00000100
END_RESIDUE = 0x2144DF1C
"""zlib CRC-32 of any byte string followed by its own CRC-32 stored little-endian."""

APP_TYPE_ZIGBEE = 1 << 0
"""``ApplicationData_t.type`` bit the builder sets (the hubs' radios run Zigbee)."""
APP_TYPES = {
    1 << 0: "zigbee",
    1 << 1: "thread",
    1 << 2: "flex",
    1 << 3: "bluetooth",
    1 << 4: "mcu",
    1 << 5: "bluetooth app",
    1 << 6: "bootloader",
    1 << 7: "zwave",
}

PROGRAM_CHUNK = 4096
"""Largest program data value (after the address) that :func:`build_gbl` writes."""
MAX_TAGS = 16384
"""Most tags a GBL file may hold, counted while walking. Program data comes in chunks
(:data:`PROGRAM_CHUNK` here), so this is 64 MiB of flash, beyond any image file the station
reads; a file of millions of empty tags is refused before it costs their bookkeeping."""

MAX_DECOMPRESSED = 16 * 1024 * 1024
"""Most bytes the compressed program data of one GBL file may decompress to, in all. Gecko
parts hold at most a few MiB of flash, so anything beyond is a decompression bomb or not
a hub's image; the cap bounds every allocation before it is made."""
LZMA_MEMLIMIT = 64 * 1024 * 1024
"""Memory the LZMA decoder may use: a header claiming a huge dictionary is refused, not
honoured (a Gecko bootloader's own dictionary is a few KiB)."""
LZMA_HEADER_SIZE = 13
LZMA_UNKNOWN_SIZE = 0xFFFF_FFFF_FFFF_FFFF
LZMA_DICT_SIZE = 8 * 1024
"""Dictionary :func:`build_gbl` compresses with: small enough for a bootloader's RAM."""
_LZMA_PIECE = 256 * 1024
_LZ4_MAX_RATIO = 256  # an LZ4 block cannot expand by more than ~255x (length bytes of 255)

TAG_NAMES = {
    TAG_HEADER: "HEADER",
    TAG_APP_INFO: "APP_INFO",
    TAG_BOOTLOADER: "BOOTLOADER",
    TAG_SE_UPGRADE: "SE_UPGRADE",
    TAG_VERSION_DEPENDENCY: "VERSION_DEPENDENCY",
    TAG_METADATA: "METADATA",
    TAG_PROGRAM_DATA: "PROGRAM_DATA",
    TAG_ERASE_PROGRAM_DATA: "ERASE_PROGRAM_DATA",
    TAG_PROGRAM_DATA_LZ4: "PROGRAM_DATA_LZ4",
    TAG_PROGRAM_DATA_LZMA: "PROGRAM_DATA_LZMA",
    TAG_DELTA: "DELTA",
    TAG_DELTA_LZ4: "DELTA_LZ4",
    TAG_ENC_HEADER: "ENC_HEADER",
    TAG_ENC_INIT: "ENC_INIT",
    TAG_ENC_GBL_DATA: "ENC_GBL_DATA",
    TAG_CERTIFICATE: "CERTIFICATE",
    TAG_SIGNATURE: "SIGNATURE",
    TAG_END: "END",
}

_PROGRAM_TAGS = frozenset(
    {TAG_PROGRAM_DATA, TAG_ERASE_PROGRAM_DATA, TAG_PROGRAM_DATA_LZ4, TAG_PROGRAM_DATA_LZMA}
)
_EBL_MAGIC = b"\x00\x00\x00\x8c"
_GBL_V4_MAGIC = struct.pack("<I", 0x84A617EB)
_TAG_HEAD = struct.Struct("<II")
_U32 = struct.Struct("<I")
_APP_INFO = struct.Struct("<III16s")
_PADDING_BYTES = (0x00, 0xFF, 0x1A)
_SIGNATURE_SIZE = 64
_ADDRESS_SPACE = 1 << 32
_HINT_TRUNCATED = "the file is truncated or corrupt; fetch a fresh copy"


class CompressionError(ValueError):
    """Compressed program data that does not decompress, or would exceed its limit."""


def lz4_decompress(payload: bytes, limit: int) -> bytes:
    """Decompress one raw LZ4 block, as the Gecko bootloader's decoder reads it.

    Raises:
        CompressionError: empty, corrupt, or more than ``limit`` bytes of output (the
            buffer is never larger than ``limit``).
    """
    if not payload:
        raise CompressionError("holds no LZ4 data (a block ends with at least one token)")
    bound = min(limit, len(payload) * _LZ4_MAX_RATIO + 64)
    try:
        out: bytes = lz4.block.decompress(payload, uncompressed_size=bound)
    except lz4.block.LZ4BlockError:
        if bound < len(payload) * _LZ4_MAX_RATIO + 64:
            raise CompressionError(
                f"is not a valid LZ4 block, or decompresses to more than {limit} bytes"
            ) from None
        raise CompressionError("is not a valid LZ4 block") from None
    return out


def lzma_decompress(payload: bytes, limit: int) -> tuple[bytes, int]:
    """Decompress an ``.lzma`` ("alone") stream as the Gecko bootloader does: its size
    field is skipped and the end-of-stream marker is required.

    Returns:
        The bytes and the size the header states (:data:`LZMA_UNKNOWN_SIZE` for none).

    Raises:
        CompressionError: short or bad header, dictionary over :data:`LZMA_MEMLIMIT`,
            corrupt data, no end marker, bytes after it, more than ``limit`` bytes of
            output, or a stated size that differs from the output's.
    """
    if len(payload) < LZMA_HEADER_SIZE:
        raise CompressionError(
            f"holds {len(payload)} bytes, too short for the {LZMA_HEADER_SIZE}-byte LZMA header"
        )
    props = payload[0]
    if props >= 9 * 5 * 5:
        raise CompressionError(f"LZMA properties byte 0x{props:02X} is invalid (lc/lp/pb)")
    (stated,) = struct.unpack_from("<Q", payload, 5)
    header = payload[:5] + b"\xff" * 8  # the marker, not the size, ends the stream
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=LZMA_MEMLIMIT)
    pieces: list[bytes] = []
    size = 0
    data = header + payload[LZMA_HEADER_SIZE:]
    try:  # in pieces: a bomb is stopped at the limit, never held twice over
        while True:
            piece = decoder.decompress(data, max_length=_LZMA_PIECE)
            data = b""
            size += len(piece)
            if size > limit:
                raise CompressionError(f"decompresses to more than {limit} bytes")
            pieces.append(piece)
            if decoder.eof or decoder.needs_input:
                break
    except lzma.LZMAError as exc:
        raise CompressionError(f"is not valid LZMA data ({exc})") from None
    out = b"".join(pieces)
    if not decoder.eof:
        raise CompressionError(
            "LZMA data ends without its end-of-stream marker (the Gecko bootloader needs it)"
        )
    if decoder.unused_data:
        raise CompressionError(
            f"{len(decoder.unused_data)} bytes follow the LZMA end-of-stream marker"
        )
    if stated != LZMA_UNKNOWN_SIZE and stated != len(out):
        raise CompressionError(
            f"LZMA header says {stated} bytes, but the data decompresses to {len(out)}"
        )
    return out, stated


def tag_name(tag_id: int) -> str:
    """A tag's name, or ``unknown tag 0x...`` for ids the format does not define."""
    return TAG_NAMES.get(tag_id, f"unknown tag 0x{tag_id:08X}")


def _describe(tag_id: int) -> str:
    return f"{tag_name(tag_id)} (0x{tag_id:08X})" if tag_id in TAG_NAMES else tag_name(tag_id)


class _Tag:
    """One tag as found in the file."""

    __slots__ = ("offset", "tag_id", "value")

    def __init__(self, tag_id: int, offset: int, value: bytes) -> None:
        self.tag_id = tag_id
        self.offset = offset  # of the tag id
        self.value = value

    @property
    def value_offset(self) -> int:
        return self.offset + _TAG_HEAD.size

    @property
    def end(self) -> int:
        return self.value_offset + len(self.value)

    def need(self, size: int, what: str) -> None:
        """Refuse a value shorter than its fixed fields."""
        if len(self.value) < size:
            raise ImageFormatError(
                f"GBL {_describe(self.tag_id)} tag holds {len(self.value)} bytes, "
                f"too short for its {what} ({size} bytes)",
                offset=self.offset,
                hint=_HINT_TRUNCATED,
            )


def _check_magic(data: bytes) -> None:
    head = data[:4]
    if head == _U32.pack(TAG_HEADER):
        return
    if head == _EBL_MAGIC:
        raise ImageFormatError(
            "this is a legacy EBL file, not a GBL file",
            offset=0,
            hint="EBL is for EM35x bootloaders; convert it with Simplicity Commander or get a GBL",
        )
    if head == _GBL_V4_MAGIC:
        raise ImageFormatError(
            "this is a GBL v4 file (Series 3 devices), which this station does not parse",
            offset=0,
            hint="ask the hub maker for a GBL v3 file",
        )
    found = head.hex(" ").upper() or "nothing"
    raise ImageFormatError(
        f"not a GBL file: it starts with {found}, a GBL starts with its HEADER tag EB 17 A6 03",
        offset=0,
        hint="check the file is a Gecko Bootloader image (.gbl)",
    )


def _walk(data: bytes) -> tuple[list[_Tag], int]:
    """Split the file into tags up to and including END; return them and END's end."""
    tags: list[_Tag] = []
    pos = 0
    size = len(data)
    while True:
        if len(tags) == MAX_TAGS:
            raise ImageFormatError(
                f"GBL file has more than {MAX_TAGS} tags; a GBL holds a few per 4 KiB of "
                "flash, so this one was not read further",
                offset=pos,
                hint="the file is corrupt or crafted; get it again from the hub maker",
            )
        if size - pos < _TAG_HEAD.size:
            if pos == size:
                raise ImageFormatError(
                    "GBL file ends without an END tag (0xFC0404FC)",
                    offset=pos,
                    hint=_HINT_TRUNCATED,
                )
            raise ImageFormatError(
                f"GBL file ends inside a tag header ({size - pos} of 8 bytes present)",
                offset=pos,
                hint=_HINT_TRUNCATED,
            )
        tag_id, length = _TAG_HEAD.unpack_from(data, pos)
        start = pos + _TAG_HEAD.size
        if length > size - start:
            raise ImageFormatError(
                f"GBL {_describe(tag_id)} tag says its value is {length} bytes, "
                f"but only {size - start} bytes follow",
                offset=pos,
                hint=_HINT_TRUNCATED,
            )
        tag = _Tag(tag_id, pos, data[start : start + length])
        tags.append(tag)
        pos = tag.end
        if tag_id == TAG_END:
            return tags, pos


def _check_end(data: bytes, end: _Tag) -> int:
    """Check END's length and CRC; return the stored CRC."""
    if len(end.value) != 4:
        raise ImageFormatError(
            f"GBL END tag holds {len(end.value)} bytes, expected a 4-byte CRC-32",
            offset=end.offset,
            hint=_HINT_TRUNCATED,
        )
    stored = int.from_bytes(end.value, "little")
    computed = crc32(data[: end.value_offset])
    if stored != computed:
        raise ImageFormatError(
            f"GBL CRC-32 mismatch: the END tag stores 0x{stored:08X}, but bytes "
            f"0..{end.value_offset - 1} give 0x{computed:08X}",
            offset=end.value_offset,
            hint="the file is corrupt or was modified after it was built; fetch a fresh copy",
        )
    return stored


def _check_trailer(data: bytes, end: _Tag, pos: int) -> str | None:
    """Accept padding after END (returns a problem sentence), refuse anything else."""
    trailer = data[pos:]
    if not trailer:
        return None
    fill = trailer[0]
    if fill in _PADDING_BYTES and trailer.count(fill) == len(trailer):
        return (
            f"{len(trailer)} bytes of 0x{fill:02X} padding follow the END tag "
            f"(offset {pos}); they are ignored"
        )
    if len(trailer) >= 4:
        (next_id,) = _U32.unpack_from(trailer)
        if next_id in TAG_NAMES:
            raise ImageFormatError(
                f"the GBL END tag at offset {end.offset} is not the last tag: "
                f"a {_describe(next_id)} tag follows it",
                offset=pos,
                hint="END must be the last tag; the file was assembled wrongly",
            )
    raise ImageFormatError(
        f"{len(trailer)} bytes after the GBL END tag are not padding "
        "(padding is a run of 0x00, 0xFF or 0x1A)",
        offset=pos,
        hint="the file is corrupt or two files were joined",
    )


class _Decoder:
    """Turns the tags between HEADER and END into fields, segments and problems."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fields: dict[str, Any] = {}
        self.problems: list[str] = []
        self.program: list[Segment] = []  # program data, plain and compressed, file order
        self.mergeable = False  # whether program[-1] may grow by the next plain tag
        # The pieces program[-1] is made of while it grows: joined once in finish(), since
        # joining at every tag copies the run again each time (quadratic in its length).
        self.pieces: list[bytes | memoryview] = []
        self.run_end = 0  # the address after those pieces
        self.others: list[Segment] = []  # bootloader, SE upgrade, delta, ciphertext
        self.signature: Signature | None = None
        self.metadata: list[bytes] = []
        self.unknown: list[tuple[int, bytes]] = []
        self.seen: set[int] = set()
        self.compressed: dict[str, int] = {}  # method -> compressed bytes
        self.decompressed = 0  # bytes compressed tags gave, all methods

    def header(self, tag: _Tag) -> None:
        tag.need(8, "version and type")
        version, gbl_type = struct.unpack_from("<II", tag.value)
        major = version >> 24
        self.fields.update(
            gbl_version=version,
            gbl_version_major=major,
            gbl_type=gbl_type,
            gbl_encrypted=bool(gbl_type & GBL_TYPE_ENCRYPTED),
            gbl_signed=bool(gbl_type & GBL_TYPE_SIGNED),
            header_raw=tag.value,
        )
        if major != 3:
            self.problems.append(
                f"GBL header version 0x{version:08X} has major version {major}; "
                "Gecko bootloaders accept major version 3 only"
            )
        if len(tag.value) > 8:
            self.problems.append(
                f"GBL HEADER tag holds {len(tag.value)} bytes; the {len(tag.value) - 8} "
                "bytes after version and type are kept raw"
            )

    def app_info(self, tag: _Tag) -> None:
        tag.need(_APP_INFO.size, "type, version, capabilities and product id")
        app_type, version, capabilities, product_id = _APP_INFO.unpack_from(tag.value)
        names = [name for bit, name in APP_TYPES.items() if app_type & bit]
        unknown_bits = app_type & ~sum(APP_TYPES)
        if unknown_bits:
            names.append(f"0x{unknown_bits:08X}")
        self.fields.update(
            app_type=app_type,
            app_type_names=", ".join(names),
            app_version=version,
            app_capabilities=capabilities,
            product_id=product_id,
            app_info_raw=tag.value,
        )
        if len(tag.value) > _APP_INFO.size:
            self.problems.append(
                f"GBL APP_INFO tag holds {len(tag.value)} bytes; the "
                f"{len(tag.value) - _APP_INFO.size} bytes after the product id are kept raw"
            )

    def program_data(self, tag: _Tag) -> None:
        tag.need(4, "flash start address")
        (address,) = _U32.unpack_from(tag.value)
        self._add_program(tag, address, memoryview(tag.value)[4:])

    def _add_program(self, tag: _Tag, address: int, payload: memoryview) -> None:
        """Bytes for flash at ``address``: they extend the segment they follow on from."""
        if address + len(payload) > _ADDRESS_SPACE:
            raise ImageFormatError(
                f"GBL {_describe(tag.tag_id)} tag: {len(payload)} bytes at 0x{address:08X} "
                "run past the end of the 32-bit address space",
                offset=tag.offset,
                hint=_HINT_TRUNCATED,
            )
        if self.mergeable and self.pieces and self.run_end == address:
            self.pieces.append(payload)
        else:
            self._close_run()
            self.program.append(Segment(address, b"", "program data"))
            self.pieces = [payload]
        self.run_end = address + len(payload)
        self.mergeable = True

    def _close_run(self) -> None:
        """Give the growing program data segment its bytes, joined once."""
        if self.pieces:
            last = self.program[-1]
            self.program[-1] = Segment(last.address, b"".join(self.pieces), last.name)
            self.pieces = []

    def compressed_program_data(self, tag: _Tag, method: str) -> None:
        """Decompress (within what is left of :data:`MAX_DECOMPRESSED`) and treat the
        result as plain program data at the tag's address."""
        tag.need(4, "flash start address")
        (address,) = _U32.unpack_from(tag.value)
        packed = tag.value[4:]
        left = MAX_DECOMPRESSED - self.decompressed
        try:
            if method == "lz4":
                data = lz4_decompress(packed, left)
            else:
                data, _stated = lzma_decompress(packed, left)
        except CompressionError as exc:
            bomb = " (a decompression bomb?)" if "more than" in str(exc) else ""
            raise ImageFormatError(
                f"GBL {_describe(tag.tag_id)} tag: its {len(packed)} bytes {exc}{bomb}",
                offset=tag.offset,
                hint="the file is corrupt or crafted; get it again from the hub maker",
            ) from None
        self.decompressed += len(data)
        self.compressed[method] = self.compressed.get(method, 0) + len(packed)
        self._add_program(tag, address, memoryview(data))

    def bootloader(self, tag: _Tag) -> None:
        tag.need(8, "bootloader version and address")
        version, address = struct.unpack_from("<II", tag.value)
        payload = tag.value[8:]
        if address + len(payload) > _ADDRESS_SPACE:
            raise ImageFormatError(
                f"GBL BOOTLOADER tag: {len(payload)} bytes at 0x{address:08X} run past the "
                "end of the 32-bit address space",
                offset=tag.offset,
                hint=_HINT_TRUNCATED,
            )
        self.fields.update(bootloader_version=version, bootloader_address=address)
        self.others.append(Segment(address, payload, "bootloader"))

    def se_upgrade(self, tag: _Tag) -> None:
        tag.need(8, "blob size and version")
        blob_size, version = struct.unpack_from("<II", tag.value)
        payload = tag.value[8:]
        self.fields.update(se_version=version, se_blob_size=blob_size)
        if blob_size != len(payload):
            self.problems.append(
                f"GBL SE_UPGRADE tag at offset {tag.offset} says its blob is {blob_size} "
                f"bytes but holds {len(payload)}"
            )
        self.others.append(Segment(None, payload, "se upgrade"))

    def signature_tag(self, tag: _Tag) -> None:
        if len(tag.value) != _SIGNATURE_SIZE:
            raise ImageFormatError(
                f"GBL SIGNATURE tag holds {len(tag.value)} bytes; an ECDSA P-256 "
                f"signature (r||s) is {_SIGNATURE_SIZE}",
                offset=tag.offset,
                hint=_HINT_TRUNCATED,
            )
        self.signature = Signature(
            scheme="gbl-ecdsa-p256",
            value=tag.value,
            signed_data=self.data[: tag.offset],
            status=SigStatus.UNSUPPORTED,
        )

    def decode(self, tags: Sequence[_Tag]) -> None:
        single = {TAG_HEADER, TAG_APP_INFO, TAG_SIGNATURE, TAG_CERTIFICATE, TAG_BOOTLOADER}
        listing = []
        for tag in tags:
            listing.append(f"0x{tag.offset:06X} {tag_name(tag.tag_id)} ({len(tag.value)} bytes)")
            if tag.tag_id == TAG_END:
                continue
            if tag.offset and tag.tag_id == TAG_HEADER:
                raise ImageFormatError(
                    "GBL file has a second HEADER tag",
                    offset=tag.offset,
                    hint="two GBL files were joined; use one of them",
                )
            if tag.tag_id in single and tag.tag_id in self.seen:
                raise ImageFormatError(
                    f"GBL file has more than one {tag_name(tag.tag_id)} tag",
                    offset=tag.offset,
                    hint="the format allows one; the file was assembled wrongly",
                )
            if self.signature is not None:
                raise ImageFormatError(
                    f"GBL {_describe(tag.tag_id)} tag follows the SIGNATURE tag; "
                    "only END may follow it",
                    offset=tag.offset,
                    hint="the signature must be the last tag before END",
                )
            self.seen.add(tag.tag_id)
            self._one(tag)
        self.fields["tags"] = tuple(listing)

    def _one(self, tag: _Tag) -> None:
        tid = tag.tag_id
        if tid not in _PROGRAM_TAGS:
            self.mergeable = False
        if tid == TAG_HEADER:
            self.header(tag)
        elif tid == TAG_APP_INFO:
            self.app_info(tag)
        elif tid in (TAG_PROGRAM_DATA, TAG_ERASE_PROGRAM_DATA):
            self.program_data(tag)
        elif tid == TAG_PROGRAM_DATA_LZ4:
            self.compressed_program_data(tag, "lz4")
        elif tid == TAG_PROGRAM_DATA_LZMA:
            self.compressed_program_data(tag, "lzma")
        elif tid == TAG_BOOTLOADER:
            self.bootloader(tag)
        elif tid == TAG_SE_UPGRADE:
            self.se_upgrade(tag)
        elif tid == TAG_METADATA:
            self.metadata.append(tag.value)
        elif tid == TAG_SIGNATURE:
            self.signature_tag(tag)
        elif tid == TAG_CERTIFICATE:
            self.fields["certificate"] = tag.value
        elif tid == TAG_VERSION_DEPENDENCY:
            self.fields["version_dependency"] = tag.value
        elif tid in (TAG_ENC_HEADER, TAG_ENC_INIT):
            self.fields["encryption_init"] = tag.value
        elif tid == TAG_ENC_GBL_DATA:
            self.others.append(Segment(None, tag.value, "encrypted gbl data (aes-ccm)"))
        elif tid in (TAG_DELTA, TAG_DELTA_LZ4):
            kind = "delta patch" if tid == TAG_DELTA else "delta patch (lz4, compressed)"
            self.others.append(Segment(None, tag.value, kind))
        else:
            self.unknown.append((tid, tag.value))
            self.problems.append(
                f"unknown GBL tag 0x{tid:08X} at offset {tag.offset} "
                f"({len(tag.value)} bytes) is kept as it is"
            )

    def finish(self) -> None:
        """Problem sentences and fields that need every tag seen."""
        self._close_run()
        if self.compressed:
            packed = sum(self.compressed.values())
            self.fields["compression"] = "+".join(sorted(self.compressed))
            self.fields["compressed_bytes"] = packed
            self.fields["decompressed_bytes"] = self.decompressed
        if TAG_ENC_GBL_DATA in self.seen:
            self.problems.append(
                "the GBL is encrypted (AES-CCM): its payload is ciphertext and its hash "
                "covers the ciphertext"
            )
        if self.fields.get("gbl_encrypted") and TAG_ENC_GBL_DATA not in self.seen:
            self.problems.append("the GBL header says encrypted, but no encrypted data tag")
        if self.fields.get("gbl_signed") and self.signature is None:
            self.problems.append("the GBL header says signed, but there is no SIGNATURE tag")
        if self.signature is not None and not self.fields.get("gbl_signed"):
            self.problems.append("the GBL has a SIGNATURE tag, but its header does not say signed")
        if TAG_DELTA in self.seen or TAG_DELTA_LZ4 in self.seen:
            self.problems.append(
                "the GBL holds a delta patch: it applies only on top of the image it was "
                "made against"
            )
        if self.metadata:
            self.fields["metadata"] = b"".join(self.metadata)
        if self.unknown:
            self.fields["unknown_tags"] = tuple(self.unknown)
        overlap = _first_overlap([*self.program, *self.others])
        if overlap:
            self.problems.append(overlap)


def _first_overlap(segments: Sequence[Segment]) -> str | None:
    spans = sorted(
        (s.address, s.address + len(s.data), s.name)
        for s in segments
        if s.address is not None and s.data
    )
    for (a_start, a_end, a_name), (b_start, _b_end, b_name) in itertools.pairwise(spans):
        if b_start < a_end:
            return (
                f"GBL {a_name} at 0x{a_start:08X} and {b_name} at 0x{b_start:08X} overlap; "
                "the later tag overwrites the earlier one in flash"
            )
    return None


def parse_gbl(data: bytes, path: str = "") -> ParsedImage:
    """Parse and check a GBL v3 file.

    Args:
        data: the whole file.
        path: where it came from, for messages and the result.

    Returns:
        The parsed image: container ``"gbl"``, program data as segments (see the module
        docstring for merging and compressed data), header and application info in
        ``fields``, the signature (status UNSUPPORTED) when present.

    Raises:
        ImageFormatError: not a GBL, truncated, bad tag lengths, tags out of order, END not
            last or its CRC wrong, no payload. The message gives the offset.
    """
    try:
        return _parse_gbl_data(data, path)
    except ImageFormatError as exc:
        if path:  # name the file, as every user-facing error does
            exc.message = f"{path}: {exc.message}"
            exc.args = (exc.message,)
        raise


def _parse_gbl_data(data: bytes, path: str) -> ParsedImage:
    data = bytes(data)
    _check_magic(data)
    tags, pos = _walk(data)
    end = tags[-1]
    stored = _check_end(data, end)
    padding = _check_trailer(data, end, pos)

    decoder = _Decoder(data)
    decoder.decode(tags)
    decoder.finish()
    decoder.fields["end_crc"] = stored
    decoder.fields["padding"] = len(data) - pos
    if padding:
        decoder.problems.append(padding)

    segments = (*decoder.program, *decoder.others)
    if not segments:
        raise ImageFormatError(
            "GBL file holds no program data, bootloader, SE upgrade or delta tag",
            offset=end.offset,
            hint="the file carries nothing to flash",
        )
    app_version = decoder.fields.get("app_version")
    return ParsedImage(
        path=path,
        container="gbl",
        fields=decoder.fields,
        segments=segments,
        file_version=app_version if isinstance(app_version, int) else None,
        signature=decoder.signature,
        problems=tuple(decoder.problems),
    )


def _put(out: bytearray, tag_id: int, value: bytes) -> None:
    out += _TAG_HEAD.pack(tag_id, len(value))
    out += value


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} 0x{value:X} does not fit in 32 bits")


def _compress(payload: bytes, method: str) -> tuple[int, bytes]:
    if method == "lz4":
        return TAG_PROGRAM_DATA_LZ4, lz4.block.compress(
            payload, mode="high_compression", store_size=False
        )
    lzma1 = {"id": lzma.FILTER_LZMA1, "dict_size": LZMA_DICT_SIZE, "lc": 3, "lp": 0, "pb": 2}
    return TAG_PROGRAM_DATA_LZMA, lzma.compress(payload, format=lzma.FORMAT_ALONE, filters=[lzma1])


def build_gbl(
    segments: Sequence[tuple[int, bytes]],
    *,
    app_version: int = 0,
    product_id: bytes = b"\0" * 16,
    header_version: int = GBL_VERSION_3,
    metadata: bytes | None = None,
    compression: str | None = None,
) -> bytes:
    """Build an unsigned, unencrypted GBL v3 file.

    Layout: HEADER (``header_version``, type 0), APP_INFO (type Zigbee, ``app_version``,
    capabilities 0, ``product_id``), one PROGRAM_DATA tag per :data:`PROGRAM_CHUNK` bytes
    of each segment (an empty segment gives one tag with just its address), METADATA when
    given, END with the CRC-32. With ``compression`` ``"lz4"`` or ``"lzma"``, each
    non-empty segment is one PROGRAM_DATA_LZ4 / _LZMA tag instead (an LZ4 block; an
    ``.lzma`` stream with an :data:`LZMA_DICT_SIZE` dictionary, unknown size and end
    marker), as Simplicity Commander's ``gbl create --compress`` makes them.

    Raises:
        ValueError: no segments, an address or version out of range, a segment running
            past 4 GiB, a product id that is not 16 bytes, or an unknown compression.
    """
    if compression not in (None, "lz4", "lzma"):
        raise ValueError(f"compression must be lz4 or lzma, not {compression!r}")
    if not segments:
        raise ValueError("a GBL needs at least one segment")
    if len(product_id) != 16:
        raise ValueError(f"product id must be 16 bytes, got {len(product_id)}")
    _check_u32("app version", app_version)
    _check_u32("header version", header_version)
    out = bytearray()
    _put(out, TAG_HEADER, struct.pack("<II", header_version, 0))
    _put(out, TAG_APP_INFO, _APP_INFO.pack(APP_TYPE_ZIGBEE, app_version, 0, bytes(product_id)))
    for address, payload in segments:
        _check_u32("segment address", address)
        if address + len(payload) > _ADDRESS_SPACE:
            raise ValueError(f"segment of {len(payload)} bytes at 0x{address:08X} runs past 4 GiB")
        if compression is not None and payload:
            tag_id, packed = _compress(bytes(payload), compression)
            _put(out, tag_id, _U32.pack(address) + packed)
            continue
        chunks = [
            bytes(payload[i : i + PROGRAM_CHUNK]) for i in range(0, len(payload), PROGRAM_CHUNK)
        ]
        for index, chunk in enumerate(chunks or [b""]):
            _put(out, TAG_PROGRAM_DATA, _U32.pack(address + index * PROGRAM_CHUNK) + chunk)
    if metadata is not None:
        _put(out, TAG_METADATA, bytes(metadata))
    out += _TAG_HEAD.pack(TAG_END, 4)
    out += _U32.pack(crc32(out))
    return bytes(out)

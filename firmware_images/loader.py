"""Open any firmware file the station knows and turn it into the bytes to flash.

:func:`parse_file` recognises the container by its content (Zigbee/GBCS OTA, GBL, DFU and
DfuSe, Intel HEX, S-record, else a raw binary) and returns a :class:`ParsedImage`.
:func:`load_image` goes one step further for ``station flash``: one application payload,
placed at its load address, carrying a valid application descriptor.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, replace
from pathlib import Path

import bincopy

from drivers.crc import crc32
from drivers.errors import ImageError
from firmware_images.descriptor import AppDescriptor, check_payload
from firmware_images.files import IMAGE_FILE_LIMIT, read_regular_file
from firmware_images.formats import plugin_formats
from firmware_images.identity import Identity, check_identity, descriptor_identity
from firmware_images.model import ImageFormatError, ParsedImage, Segment, SigStatus

_HEX_SUFFIXES = {".hex", ".ihex", ".ihx"}
_SREC_SUFFIXES = {".s19", ".s28", ".s37", ".srec", ".mot", ".s"}
_OTA_MAGIC = b"\x1e\xf1\xee\x0b"
_GBL_MAGIC = b"\xeb\x17\xa6\x03"
_OTA_CONTAINERS = ("gbcs-ota", "zigbee-ota")
#: How far into a file a vendor prefix may push the Zigbee OTA magic.
OTA_PREFIX_LIMIT = 1024
#: Most runs of consecutive records a HEX/S-record file may hold (see :func:`_spans`).
MAX_TEXT_RUNS = 1024
#: Widest address span filled with 0xFF into one payload: as large as the largest file
#: read, and far above any hub's flash.
FILL_SPAN_LIMIT = IMAGE_FILE_LIMIT
_SPANS_SHOWN = 8


#: File name suffixes that say a container, for a file whose content does not.
_NAMED_CONTAINERS = {".zigbee": "ota", ".ota": "ota", ".gbl": "gbl", ".dfu": "dfu"}
#: How each container is named in an error that says what the file was read as.
_CONTAINER_NAMES = {
    "ota": "a Zigbee/GBCS OTA file",
    "gbl": "a GBL file",
    "dfu": "a DFU file",
}
#: The first bytes of files that are often given by mistake (a photo of the hub's label,
#: a download that was an error page, the linker's ELF): named when such a file is refused.
_LOOKALIKES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\x7fELF", "an ELF file (convert it with objcopy -O ihex)"),
    (b"<!DOCTYPE html", "an HTML page (a failed download?)"),
    (b"<html", "an HTML page (a failed download?)"),
)


def _content_kind(data: bytes) -> tuple[str, str] | None:
    """The container ``data``'s own bytes mark (its magic), and which bytes say so.

    A magic at offset 0 wins over the OTA identifier found further in: that search allows
    for a vendor prefix, and a GBL's own fields (an application version of 0x0BEEF11E) can
    hold those four bytes by chance.
    """
    if data[:4] == _GBL_MAGIC:
        return "gbl", "it starts with the GBL HEADER tag EB 17 A6 03"
    for fmt in plugin_formats().values():
        if fmt.magic and data.startswith(fmt.magic):
            return (
                fmt.kind,
                f"it starts with {fmt.description}'s magic {fmt.magic.hex(' ').upper()}",
            )
    at = data.find(_OTA_MAGIC, 0, OTA_PREFIX_LIMIT + 4)
    if at >= 0:
        where = f" at offset {at}" if at else ""
        return "ota", f"it holds the OTA file identifier 1E F1 EE 0B{where}"
    if data[:4] == b"NGIS":
        return "ota", "it starts with an OTA signing prefix (NGIS)"
    if len(data) >= 16 and data[-8:-5] == b"UFD" and data[-5] == 16:
        return "dfu", "it ends with a DFU suffix ('UFD', 16 bytes)"
    return None


def looks_like(data: bytes) -> str | None:
    """What a file that is no firmware container looks like, when it is a common mistake."""
    head = data[:16]
    return next((what for magic, what in _LOOKALIKES if head.startswith(magic)), None)


def detect(data: bytes, name: str = "") -> str:
    """The container kind of ``data``: ota, gbl, dfu, ihex, srec, raw, or one a protocol
    plug-in brings (:mod:`firmware_images.formats`).

    The content decides (a GBL named ``.zigbee`` is a GBL); a file whose content marks no
    container but whose name does (``.zigbee``, ``.ota``, ``.gbl``, ``.dfu``) is that
    container, so that reading it says what is wrong with it instead of taking it for a
    raw binary.
    """
    suffix = Path(name).suffix.lower()
    marked = _content_kind(data)
    if marked is not None:
        return marked[0]
    if suffix in _NAMED_CONTAINERS:
        return _NAMED_CONTAINERS[suffix]
    named = next((f.kind for f in plugin_formats().values() if suffix in f.suffixes), None)
    if suffix and named is not None:
        return named
    if suffix in _HEX_SUFFIXES or data[:1] == b":":
        return "ihex"
    if suffix in _SREC_SUFFIXES or (data[:1] == b"S" and data[1:2].isdigit()):
        return "srec"
    return "raw"


def _spans(kind: str, text: str, where: str) -> list[tuple[int, int]]:
    """The address spans the data records fill, sorted and merged: read before bincopy is.

    bincopy keeps records as a list of runs and places each new run by a linear search, so
    a file of scattered one-byte records costs time quadratic in their number; and a stray
    record far away makes ``as_binary`` fill gigabytes. Reading the records once first (with
    bincopy's own record decoders, following its address arithmetic) bounds both before any
    of that work starts.
    """
    runs: list[list[int]] = []
    extended = {bincopy.IHEX_EXTENDED_SEGMENT_ADDRESS: 0, bincopy.IHEX_EXTENDED_LINEAR_ADDRESS: 0}
    for number, line in enumerate(io.StringIO(text), 1):
        record = line.strip()
        if not record:
            continue
        try:
            if kind == "ihex":
                rtype, address, size, data = bincopy.unpack_ihex(record)
                if rtype == bincopy.IHEX_EXTENDED_SEGMENT_ADDRESS:
                    extended[rtype] = int.from_bytes(data, "big") * 16
                elif rtype == bincopy.IHEX_EXTENDED_LINEAR_ADDRESS:
                    extended[rtype] = int.from_bytes(data, "big") << 16
                if rtype != bincopy.IHEX_DATA:
                    continue
                address += sum(extended.values())
            else:
                srec_type, address, size, _data = bincopy.unpack_srec(record)
                if srec_type not in ("1", "2", "3"):
                    continue
        except (bincopy.Error, ValueError) as exc:
            message = f"{where} is not a valid {kind} file: line {number}: {exc}"
            raise ImageFormatError(message) from exc
        if not size:
            continue
        if runs and runs[-1][1] == address:
            runs[-1][1] = address + size
            continue
        if len(runs) == MAX_TEXT_RUNS:
            raise ImageFormatError(
                f"{where}: more than {MAX_TEXT_RUNS} separate runs of records (line {number} "
                f"starts another at 0x{address:08X}); a firmware image has a handful",
                hint="the file is scattered or shuffled record by record; regenerate it with "
                "the linker's objcopy or srec_cat",
            )
        runs.append([address, address + size])
    merged: list[tuple[int, int]] = []
    for start, end in sorted(runs):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _span_text(spans: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"0x{a:08X}..0x{b:08X}" for a, b in spans[:_SPANS_SHOWN])
    return shown + (f" and {len(spans) - _SPANS_SHOWN} more" if len(spans) > _SPANS_SHOWN else "")


def _check_flash(spans: list[tuple[int, int]], flash: tuple[int, int] | None, where: str) -> None:
    """Refuse data outside the hub's flash ``[start, end)``, naming the first span."""
    if flash is None:
        return
    low, high = flash
    if not low < high:
        raise ValueError(f"flash range 0x{low:X}..0x{high:X} is empty")
    outside = [(a, b) for a, b in spans if a < low or b > high]
    if outside:
        a, b = outside[0]
        more = f" (and {len(outside) - 1} more span(s))" if len(outside) > 1 else ""
        raise ImageError(
            f"{where}: data at 0x{a:08X}..0x{b:08X}{more} is outside the hub's flash "
            f"0x{low:08X}..0x{high:08X}",
            hint="the file holds data for another memory area (option bytes, OTP, another "
            "chip): use a file made for this hub model's flash",
        )


def _parse_text(
    kind: str, data: bytes, path: str, flash: tuple[int, int] | None = None
) -> ParsedImage:
    """An Intel HEX or S-record file: its data, filled into one payload when that is sane.

    Data outside ``flash`` is refused before anything is allocated for it. Gaps between
    segments are filled with 0xFF (erased flash) into one payload, as flashing tools do,
    when the whole span is at most :data:`FILL_SPAN_LIMIT`. A wider span (a stray record
    for option bytes or another chip, 400 MiB away) is not filled and not refused either:
    inspecting such a file is how an operator finds out what is wrong with it, so its
    segments are listed apart, as ``srec_info`` does, with a problem naming them; as
    several payloads the image cannot be flashed (:func:`flashable` refuses it).
    """
    where = path or "data"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ImageFormatError(f"{where} is not a valid {kind} file: {exc}") from exc
    spans = _spans(kind, text, where)
    _check_flash(spans, flash, where)
    bf = bincopy.BinFile()
    try:
        (bf.add_ihex if kind == "ihex" else bf.add_srec)(text)
    except (bincopy.Error, ValueError) as exc:
        raise ImageFormatError(f"{where} is not a valid {kind} file: {exc}") from exc
    if bf.minimum_address is None:
        raise ImageFormatError(f"{where} holds no data records")
    address = int(bf.minimum_address)
    count = len(bf.segments)
    fields = {"load_address": address, "segments": count}
    problems: tuple[str, ...] = ()
    span = int(bf.maximum_address) - address
    segments: tuple[Segment, ...]
    if span <= FILL_SPAN_LIMIT:
        segments = (Segment(address, bytes(bf.as_binary(padding=b"\xff"))),)
        if count > 1:
            problems = (f"{count} segments with gaps, filled with 0xFF",)
    else:
        segments = tuple(
            Segment(int(s.minimum_address), bytes(s.data), f"segment {i} of {count}")
            for i, s in enumerate(bf.segments, 1)
        )
        problems = (
            f"data spans 0x{address:08X}..0x{address + span:08X} ({span} bytes), more than "
            f"the {FILL_SPAN_LIMIT} bytes this tool fills with 0xFF: its {count} segments are "
            f"kept apart ({_span_text(spans)}), so it cannot be flashed as one payload",
        )
    return _with_descriptor_identity(
        ParsedImage(path=path, container=kind, fields=fields, segments=segments, problems=problems)
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


def parse_bytes(
    data: bytes,
    path: str = "",
    address: int | None = None,
    *,
    flash: tuple[int, int] | None = None,
) -> ParsedImage:
    """Parse a firmware file's bytes (see :func:`parse_file`); the result keeps them."""
    image = _parse_any(data, path, address, flash)
    # Keep the file itself: some bootloaders (Gecko) are sent the container, not the payload.
    object.__setattr__(image, "raw", data)
    return image


def _parse_any(
    data: bytes, path: str, address: int | None, flash: tuple[int, int] | None
) -> ParsedImage:
    if not data:
        raise ImageError(f"image file {path or ''} is empty".replace("  ", " "))
    kind = detect(data, path)
    if kind in _CONTAINER_NAMES or kind in plugin_formats():
        try:
            return _parse_container(kind, data, path)
        except ImageFormatError as exc:
            raise _read_as(exc, kind, data, path) from exc
    if kind in ("ihex", "srec"):
        return _parse_text(kind, data, path, flash)
    return _with_descriptor_identity(
        ParsedImage(
            path=path,
            container="raw",
            fields={"load_address": address},
            segments=(Segment(address, data),),
        )
    )


def _parse_container(kind: str, data: bytes, path: str) -> ParsedImage:
    if kind in plugin_formats():
        return plugin_formats()[kind].parse(data, path)
    if kind == "ota":
        from firmware_images.zigbee import parse_ota_file

        return parse_ota_file(data, path)
    if kind == "gbl":
        from firmware_images.gbl import parse_gbl

        return parse_gbl(data, path)
    from firmware_images.dfu import parse_dfu

    return parse_dfu(data, path)


def _read_as(exc: ImageFormatError, kind: str, data: bytes, path: str) -> ImageFormatError:
    """``exc`` saying which container the file was read as, and why it was read as that:
    its name or its magic (a file with neither would have been a raw binary), and what it
    looks like when that is a common mistake. The parser's words stay first."""
    marked = _content_kind(data)
    if marked is not None:
        why = f"as its content says ({marked[1]})"
    else:
        why = f"as its name says ({Path(path).suffix})"
    name = _CONTAINER_NAMES.get(kind) or plugin_formats()[kind].description
    message = f"{exc.message}; read as {name}, {why}"
    lookalike = looks_like(data) if marked is None else None
    if lookalike is not None:
        message += f"; it looks like {lookalike}"
    error = ImageFormatError(message, hint=exc.hint)
    error.offset = exc.offset
    return error


def parse_file(
    path: str | Path, address: int | None = None, *, flash: tuple[int, int] | None = None
) -> ParsedImage:
    """Read and parse any supported firmware file.

    Args:
        path: the file.
        address: load address of a raw binary (other containers carry their own or none).
        flash: the target's flash as ``(start, end)``, end exclusive (a hub profile's
            ``flash_start``, ``flash_end``). HEX and S-record data anywhere else is refused
            before any memory is set aside for it: those files are the ones whose size in
            memory follows their addresses, not their length. Other containers hold only
            what the file holds; where they load is checked against the whole hub profile
            before flashing (``station.flash.precheck``). None (inspecting a file for no
            particular hub): see :func:`_parse_text` for spans too wide to fill.

    Raises:
        ImageError: unreadable, not a regular file (a FIFO, a device, a directory), larger
            than :data:`~firmware_images.files.IMAGE_FILE_LIMIT`, data outside ``flash``,
            or malformed for the container it claims to be.
    """
    data = read_regular_file(path, limit=IMAGE_FILE_LIMIT, what="image file")
    return parse_bytes(data, str(path), address, flash=flash)


@dataclass(frozen=True)
class LoadedImage:
    """An application payload ready to flash: placed, with its descriptor checked.

    Attributes:
        path: where it was read from.
        kind: the container it came in (``gbcs-ota``, ``ihex``, ``raw``...).
        address: load address of the first byte.
        data: the payload bytes.
        descriptor: the payload's application descriptor (CRC already checked): the
            trusted identity, the one the station writes, expects back and records.
        sha256: hex SHA-256 of ``data`` (for GBCS images, the Manufacturer Image Hash).
            For a wrapped bootloader file, of that whole file (still the GBCS hash).
        crc32: CRC-32 of ``data``.
        parsed: the whole parsed container (signature, header fields, problems).
        inner: the bootloader file a Zigbee/GBCS OTA image wraps (a GBL for a Silicon Labs
            radio, as vendors ship them), else None. ``kind`` is then that file's kind.
        previous: the payload of the catalogued release the hub says it runs, placed at
            ``address``, when the catalogue holds it: what its flash is thought to hold, so
            a write of only the pages that changed needs no page-by-page questions. A hint
            and never more: a page is left alone only on the hub's own answer.
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
    previous: bytes | None = None

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

    @property
    def trusted_identity(self) -> Identity:
        """What this image is, as the station acts on it: :attr:`descriptor`'s identity,
        inside the signed Manufacturer Image for GBCS images. ``parsed``'s header fields are
        outside the signature; :func:`flashable` proved they agree with this."""
        in_gbl = self.inner is not None or self.parsed.container == "gbl"
        return descriptor_identity(self.descriptor, self.parsed, in_gbl=in_gbl)


def flashable(image: ParsedImage, address: int | None = None) -> LoadedImage:
    """The one application payload of ``image``, placed and checked.

    Every copy of the image's identity (OTA header, application descriptor, GBL APP_INFO,
    file name) must agree first: the header is outside the GBCS signature, so a header
    that says anything other than the signed descriptor means an edited or misbuilt file.

    Args:
        address: load address for a raw binary (required), and for containers that carry
            none (GBCS/Zigbee OTA, plain DFU): the hub profile's application address. It must
            agree with a HEX/S-record/DfuSe file's own address.

    Raises:
        IdentityError: copies of its identity disagree (an :class:`ImageError`).
        ImageError: no address, several payloads, or no valid application descriptor.
    """
    check_identity(image)
    return _place(image, address)


def _place(image: ParsedImage, address: int | None) -> LoadedImage:
    """:func:`flashable` once the identity is checked (a wrapped GBL is checked with its
    container, whose file name and header are the ones that must agree)."""
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
    """A GBL carried as an OTA image's payload: the signature stays the OTA container's;
    the application, whose descriptor is the trusted identity (inside the signed
    Manufacturer Image), and the file to send are the GBL's. The OTA header and the GBL's
    APP_INFO version were checked against that descriptor by :func:`flashable`."""
    where = image.path or "image"
    try:
        inner = parse_bytes(payload, f"{where} (its GBL payload)")
        loaded = _place(inner, address)
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
    path: str | Path,
    address: int | None = None,
    *,
    default_address: int | None = None,
    flash: tuple[int, int] | None = None,
) -> LoadedImage:
    """Parse ``path`` and return its application payload ready to flash.

    Args:
        address: the user's explicit load address (raw binaries need one).
        default_address: where address-less containers (GBCS/Zigbee OTA) load: the hub
            profile's application address.
        flash: the hub's flash ``(start, end)``; data outside it is refused (see
            :func:`parse_file`).
    """
    image = parse_file(path, address, flash=flash)
    if image.container != "raw" and address is None:
        address = default_address if image.segments[0].address is None else None
    return flashable(image, address)

"""USB DFU 1.1 and ST DfuSe wire constants and pure codecs (no I/O).

Shared by the host driver (:mod:`drivers.dfu`) and the simulated hubs (``sim.usb_dfu``), so
both read the same bytes the same way. Byte-exact to ``shared/reference/protocols.md`` §2:
class requests (§2.2), status codes (§2.3), states (§2.4), the 9-byte DFU functional
descriptor (§2.1), the 6-byte GETSTATUS payload and the DfuSe commands and memory-map string
(§2.7).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

#: bmRequestType of DFU class requests: host-to-device / device-to-host, class, interface.
REQUEST_OUT = 0x21
REQUEST_IN = 0xA1

#: Interface class/subclass of a DFU interface and its two protocols.
DFU_CLASS = 0xFE
DFU_SUBCLASS = 0x01
PROTOCOL_RUNTIME = 0x01
PROTOCOL_DFU = 0x02

FUNCTIONAL_DESCRIPTOR_TYPE = 0x21
FUNCTIONAL_DESCRIPTOR_LENGTH = 9
BCD_DFU_11 = 0x0110
BCD_DFUSE = 0x011A

#: DfuSe commands: the first byte of a DNLOAD with wBlockNum 0.
DFUSE_GET_COMMANDS = 0x00
DFUSE_SET_ADDRESS = 0x21
DFUSE_ERASE = 0x41
DFUSE_READ_UNPROTECT = 0x92
#: DfuSe data blocks start at wBlockNum 2: address = pointer + (wBlockNum - 2) * size.
DFUSE_FIRST_DATA_BLOCK = 2


class DfuRequest(IntEnum):
    """bRequest of the DFU class requests."""

    DETACH = 0
    DNLOAD = 1
    UPLOAD = 2
    GETSTATUS = 3
    CLRSTATUS = 4
    GETSTATE = 5
    ABORT = 6


class DfuState(IntEnum):
    """bState: the eleven DFU 1.1 states."""

    APP_IDLE = 0
    APP_DETACH = 1
    DFU_IDLE = 2
    DFU_DNLOAD_SYNC = 3
    DFU_DNBUSY = 4
    DFU_DNLOAD_IDLE = 5
    DFU_MANIFEST_SYNC = 6
    DFU_MANIFEST = 7
    DFU_MANIFEST_WAIT_RESET = 8
    DFU_UPLOAD_IDLE = 9
    DFU_ERROR = 10

    @property
    def label(self) -> str:
        """The spec's name, e.g. ``dfuDNLOAD-IDLE``."""
        return _STATE_LABELS[self]


_STATE_LABELS = {
    DfuState.APP_IDLE: "appIDLE",
    DfuState.APP_DETACH: "appDETACH",
    DfuState.DFU_IDLE: "dfuIDLE",
    DfuState.DFU_DNLOAD_SYNC: "dfuDNLOAD-SYNC",
    DfuState.DFU_DNBUSY: "dfuDNBUSY",
    DfuState.DFU_DNLOAD_IDLE: "dfuDNLOAD-IDLE",
    DfuState.DFU_MANIFEST_SYNC: "dfuMANIFEST-SYNC",
    DfuState.DFU_MANIFEST: "dfuMANIFEST",
    DfuState.DFU_MANIFEST_WAIT_RESET: "dfuMANIFEST-WAIT-RESET",
    DfuState.DFU_UPLOAD_IDLE: "dfuUPLOAD-IDLE",
    DfuState.DFU_ERROR: "dfuERROR",
}


class DfuStatus(IntEnum):
    """bStatus codes."""

    OK = 0x00
    ERR_TARGET = 0x01
    ERR_FILE = 0x02
    ERR_WRITE = 0x03
    ERR_ERASE = 0x04
    ERR_CHECK_ERASED = 0x05
    ERR_PROG = 0x06
    ERR_VERIFY = 0x07
    ERR_ADDRESS = 0x08
    ERR_NOTDONE = 0x09
    ERR_FIRMWARE = 0x0A
    ERR_VENDOR = 0x0B
    ERR_USBR = 0x0C
    ERR_POR = 0x0D
    ERR_UNKNOWN = 0x0E
    ERR_STALLEDPKT = 0x0F

    @property
    def label(self) -> str:
        """The spec's name, e.g. ``errWRITE``."""
        if self is DfuStatus.OK:
            return "OK"
        return "err" + self.name.removeprefix("ERR_")


def state_label(value: int) -> str:
    """The name of a bState value, or ``state 0xNN`` when it is not a DFU state."""
    try:
        return DfuState(value).label
    except ValueError:
        return f"state 0x{value:02X}"


def status_label(value: int) -> str:
    """The name of a bStatus value, or ``status 0xNN`` when it is not a DFU status."""
    try:
        return DfuStatus(value).label
    except ValueError:
        return f"status 0x{value:02X}"


# --- GETSTATUS payload -----------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReply:
    """The 6-byte GETSTATUS payload.

    Attributes:
        status: bStatus.
        poll_timeout_ms: bwPollTimeout, the time the host must wait before the next request.
        state: bState the device enters once this reply is sent.
        istring: index of a status string, usually 0.
    """

    status: int
    poll_timeout_ms: int
    state: int
    istring: int = 0

    def pack(self) -> bytes:
        """The six bytes as sent on the wire."""
        if not 0 <= self.poll_timeout_ms <= 0xFFFFFF:
            raise ValueError(f"bwPollTimeout {self.poll_timeout_ms} does not fit in 24 bits")
        return bytes(
            [self.status, *self.poll_timeout_ms.to_bytes(3, "little"), self.state, self.istring]
        )

    @classmethod
    def parse(cls, raw: bytes) -> StatusReply:
        """Decode a GETSTATUS payload.

        Raises:
            ValueError: not six bytes.
        """
        if len(raw) != 6:
            raise ValueError(f"a GETSTATUS reply is 6 bytes, got {len(raw)}")
        return cls(raw[0], int.from_bytes(raw[1:4], "little"), raw[4], raw[5])

    def __str__(self) -> str:
        return (
            f"{status_label(self.status)}, {state_label(self.state)}, "
            f"bwPollTimeout {self.poll_timeout_ms} ms"
        )


# --- functional descriptor -------------------------------------------------------------------

_FUNCTIONAL = struct.Struct("<BBBHHH")


@dataclass(frozen=True)
class FunctionalDescriptor:
    """The DFU functional descriptor (9 bytes, type 0x21)."""

    attributes: int
    detach_timeout_ms: int
    transfer_size: int
    dfu_version: int

    @property
    def can_download(self) -> bool:
        """bitCanDnload."""
        return bool(self.attributes & 0x01)

    @property
    def can_upload(self) -> bool:
        """bitCanUpload."""
        return bool(self.attributes & 0x02)

    @property
    def manifestation_tolerant(self) -> bool:
        """bitManifestationTolerant: still talks DFU after manifestation."""
        return bool(self.attributes & 0x04)

    @property
    def will_detach(self) -> bool:
        """bitWillDetach: detaches itself after DFU_DETACH (the host must not reset it)."""
        return bool(self.attributes & 0x08)

    @property
    def is_dfuse(self) -> bool:
        """Whether bcdDFUVersion says ST DfuSe (0x011A)."""
        return self.dfu_version == BCD_DFUSE

    def pack(self) -> bytes:
        """The nine descriptor bytes."""
        return _FUNCTIONAL.pack(
            FUNCTIONAL_DESCRIPTOR_LENGTH,
            FUNCTIONAL_DESCRIPTOR_TYPE,
            self.attributes,
            self.detach_timeout_ms,
            self.transfer_size,
            self.dfu_version,
        )

    @classmethod
    def find(cls, extra: bytes) -> FunctionalDescriptor | None:
        """The functional descriptor among the class-specific descriptors ``extra``
        (what follows an interface descriptor), or None when there is none."""
        pos = 0
        while pos + 2 <= len(extra):
            length, kind = extra[pos], extra[pos + 1]
            if length < 2:
                return None  # malformed: a zero length would loop forever
            if kind == FUNCTIONAL_DESCRIPTOR_TYPE and length >= FUNCTIONAL_DESCRIPTOR_LENGTH:
                raw = extra[pos : pos + FUNCTIONAL_DESCRIPTOR_LENGTH]
                if len(raw) < FUNCTIONAL_DESCRIPTOR_LENGTH:
                    return None
                _len, _type, attrs, detach, size, version = _FUNCTIONAL.unpack(raw)
                return cls(attrs, detach, size, version)
            pos += length
        return None


# --- DfuSe memory map ------------------------------------------------------------------------

_SECTORS = re.compile(r"^\s*(\d+)\s*\*\s*(\d+)\s*([BKM ]?)\s*([a-g])\s*$")
_UNITS = {"": 1, " ": 1, "B": 1, "K": 1024, "M": 1024 * 1024}
READABLE, ERASABLE, WRITABLE = 1, 2, 4


@dataclass(frozen=True)
class MemorySegment:
    """A run of equal pages (sectors) in a DfuSe memory map."""

    start: int
    count: int
    page_size: int
    flags: int  # READABLE | ERASABLE | WRITABLE

    @property
    def end(self) -> int:
        """First address after the segment."""
        return self.start + self.count * self.page_size


@dataclass(frozen=True)
class MemoryMap:
    """A DfuSe alternate setting's memory map, from its interface string.

    Example: ``@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg``.
    """

    name: str
    segments: tuple[MemorySegment, ...]

    @classmethod
    def parse(cls, text: str) -> MemoryMap:
        """Parse a DfuSe memory-map string.

        Raises:
            ValueError: not of the form ``@name/0xADDR/N*SIZE<unit><type>,...``.
        """
        if not text.startswith("@"):
            raise ValueError(f"a DfuSe memory map starts with '@': {text!r}")
        parts = text[1:].split("/")
        if len(parts) < 3 or len(parts) % 2 == 0:
            raise ValueError(f"memory map {text!r}: expected @name/0xADDR/SECTORS[/0xADDR/...]")
        segments: list[MemorySegment] = []
        for addr_text, sectors in zip(parts[1::2], parts[2::2], strict=True):
            try:
                address = int(addr_text.strip(), 16)
            except ValueError:
                raise ValueError(f"memory map {text!r}: bad address {addr_text!r}") from None
            for item in sectors.split(","):
                m = _SECTORS.match(item)
                if m is None:
                    raise ValueError(f"memory map {text!r}: bad sector group {item!r}")
                count, size = int(m[1]), int(m[2]) * _UNITS[m[3]]
                flags = ord(m[4]) - ord("a") + 1
                if count == 0 or size == 0:
                    raise ValueError(f"memory map {text!r}: empty sector group {item!r}")
                segments.append(MemorySegment(address, count, size, flags))
                address += count * size
        return cls(parts[0].strip(), tuple(segments))

    def format(self) -> str:
        """The memory-map string (one address group per segment)."""
        groups = "".join(
            f"/0x{s.start:08X}/{s.count:02d}*{_size_text(s.page_size)}{chr(ord('a') + s.flags - 1)}"
            for s in self.segments
        )
        return f"@{self.name}{groups}"

    def segment_at(self, address: int) -> MemorySegment | None:
        """The segment holding ``address``."""
        return next((s for s in self.segments if s.start <= address < s.end), None)

    def pages(self, start: int, end: int) -> list[int]:
        """Start addresses of every page touching ``[start, end)``.

        Raises:
            ValueError: part of the range lies outside the map.
        """
        out: list[int] = []
        at = start
        while at < end:
            seg = self.segment_at(at)
            if seg is None:
                raise ValueError(f"0x{at:08X} is outside the memory map {self.name!r}")
            page = seg.start + (at - seg.start) // seg.page_size * seg.page_size
            out.append(page)
            at = page + seg.page_size
        return out

    def allows(self, start: int, end: int, flag: int) -> bool:
        """Whether every byte of ``[start, end)`` lies in segments with ``flag``."""
        at = start
        while at < end:
            seg = self.segment_at(at)
            if seg is None or not seg.flags & flag:
                return False
            at = seg.end
        return True


def _size_text(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024):03d}M"
    if size % 1024 == 0:
        return f"{size // 1024:03d}K"
    return f"{size:03d} "

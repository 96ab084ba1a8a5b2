"""Pure model of the simulated Gecko hub (``demo-gecko``): memory, Gecko bootloader, application.

An EFR32MG21-class radio SoC with the Silicon Labs Gecko bootloader in its UART XMODEM
configuration. Same output interface as :mod:`sim.an3155` (:class:`~sim.an3155.Emit`,
:class:`~sim.an3155.Timer`, :class:`~sim.an3155.Vanish`), plus :class:`Alarm`: a timeout the
device keeps *while listening* (the XMODEM receiver's ``'C'`` repeats and packet timeouts),
which :class:`sim.pty.Pacer` cancels by delivering input first. No I/O, no clock, no threads.
Contract: ``docs/sim-gecko.md``; wire bytes: ``protocols.md`` §3 and Silicon Labs'
``btl_comm_xmodem.c`` / ``btl_xmodem.c`` (Gecko SDK), which this model follows except where
the contract says otherwise.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable

from drivers.crc import crc16_xmodem, crc32
from drivers.errors import ImageError
from drivers.xmodem import (
    ACK,
    BLOCK_SIZE,
    CAN,
    CRC_REQUEST,
    EOT,
    FRAME_SIZE,
    NAK,
    SOH,
    FrameCheck,
    check_frame,
)
from firmware_images import gbl
from firmware_images.build import DEMO_HW_MAX, DEMO_HW_MIN, DEMO_MANUFACTURER, demo_payload
from firmware_images.descriptor import (
    DESCRIPTOR_OFFSET,
    DESCRIPTOR_SIZE,
    AppDescriptor,
    check_payload,
    parse_descriptor,
    seal_payload,
)
from sim.app_console import LineConsole, banner
from sim.core.faults import SERIAL_FAULTS, BlockFault, BlockFaultKind, FaultPlan
from sim.core.flash import Flash
from sim.core.spec import HubSpec, SimModel, parse_eui64
from sim.core.timed import Alarm as Alarm
from sim.core.timed import Emit, TimedModel, Timer, Vanish
from sim.decompress import DecompressError, Decompressor, Lz4Stream, LzmaStream

# --- memory map (contract) -------------------------------------------------------------------

FLASH_BASE = 0x0000_0000
FLASH_SIZE = 1024 * 1024  # EFR32MG21A010F1024
PAGE_SIZE = 8 * 1024  # Series 2 flash page
APP_BASE = 0x0000_4000  # xG21: main bootloader at 0x0, application at 0x4000
APP_MAX_SIZE = FLASH_SIZE - (APP_BASE - FLASH_BASE)
#: Image type of the demo-gecko hub model (the AN3155 demo model is 0x0401).
IMAGE_TYPE = 0x0402

# --- bootloader identity and wire text (btl_comm_xmodem.c) ------------------------------------

BOOTLOADER_VERSION = 0x0204_0002  # major << 24 | minor << 16 | patch: printed "2.04.02"
BEGIN_UPLOAD = b"\r\nbegin upload\r\n\x00"
UPLOAD_COMPLETE = b"\r\nSerial upload complete\r\n\x00"
UPLOAD_ABORTED = b"\r\nSerial upload aborted\r\n\x00"
BLOCK_ERROR = b"\r\nblock error 0x\x00"
FILE_ERROR = b"\r\nfile error 0x\x00"
CTRL_C = 0x03

# Abort codes the bootloader prints after "block error 0x" / "file error 0x".
CODE_CANCELLED = 0x18  # CAN (or 'C', Ctrl-C) where a block should start
CODE_NO_SOH = 0x21  # another byte where a block should start; no block came
CODE_PACKET_NUMBER = 0x22  # number and complement disagree
CODE_CRC_LOW = 0x23
CODE_CRC_HIGH = 0x24
CODE_SEQUENCE = 0x25  # a valid block with an unexpected number
CODE_HEADER = 0x41  # no GBL HEADER first, or not GBL version 3
CODE_GBL_CRC = 0x43  # END tag CRC-32 wrong
CODE_UNKNOWN_TAG = 0x44  # a tag this bootloader does not handle
CODE_FILE = 0x4F  # tags out of order, bad lengths, file ended early, data outside the app
# A decompressor error (BOOTLOADER_ERROR_COMPRESSION_*) has no case in btl_comm_xmodem.c's
# code table, so the firmware prints the CAN it was about to send: "file error 0x18".
CODE_COMPRESSION = 0x18
#: Decompressors a bootloader may be built with (BTL_PARSER_SUPPORT_LZ4 / _LZMA).
DECOMPRESSORS = ("lz4", "lzma")

# --- device times ----------------------------------------------------------------------------

# Flash: 32-bit word write and 8 KiB page erase, meant as the typical column of the
# EFR32MG21 data sheet's flash table. UNVERIFIED: no copy of the data sheet (or of another
# Silicon Labs document giving Series 2 flash times) could be found to check them against
# (searched 2026-11-29, docs/sim-gecko.md "Timing"); treat ratios that depend on them as
# provisional. What is sourced is *when* they are spent: the bootloader programs a block
# before it ACKs it (btl_comm_xmodem.c: parser_parse, then sendPacket; btl_bootload.c
# flashData: erase a page when a write starts on or crosses into it, then write).
WORD_WRITE_S = 55e-6
PAGE_ERASE_S = 15e-3
# Firmware times (btl_comm_xmodem.c): input discarded for 5 ms after "begin upload"; 10 ms
# before the result is printed; a 'C' every second, 60 of them; 3 s for a block to start
# and 3 s for the rest of it once started.
UPLOAD_SETTLE_S = 5e-3
RESULT_SETTLE_S = 10e-3
START_REQUEST_INTERVAL_S = 1.0
START_REQUESTS = 60
PACKET_WAIT_S = 3.0
PACKET_REST_S = 3.0
# Model figures, not data-sheet ones: reset to menu, application start.
BOOTLOADER_START_S = 5e-3
APP_START_S = 20e-3
# Forsberg's receiver gives up after about ten consecutive errors (the Gecko firmware NAKs
# for ever); the model follows Forsberg so an abandoned upload ends.
MAX_ERRORS = 10


def version_text(version: int) -> str:
    """The bootloader version as its menu prints it: major nibble in hex, then minor and
    patch as two decimal digits (``0x02040002`` -> ``"2.04.02"``)."""
    major, minor, patch = (version >> 24) & 0x0F, (version >> 16) & 0x0F, version & 0x0F
    return f"{major:X}.{minor:02d}.{patch:02d}"


def menu_text(version: int = BOOTLOADER_VERSION) -> bytes:
    """The menu exactly as the bootloader sends it: the text of ``protocols.md`` §3.4
    followed by the C string's terminating NUL (the firmware sends ``sizeof(str)`` bytes)."""
    return (
        f"\r\nGecko Bootloader v{version_text(version)}\r\n"
        "1. upload gbl\r\n2. run\r\n3. ebl info\r\nBL > "
    ).encode() + b"\x00"


def abort_text(kind: str, code: int) -> bytes:
    """What the bootloader prints when an upload is aborted (before the menu)."""
    head = BLOCK_ERROR if kind == "block" else FILE_ERROR
    return UPLOAD_ABORTED + head + f"{code:02X}\r\n".encode()


def demo_app(version: int, *, size: int = 64 * 1024, compressible: bool = False) -> bytes:
    """The demo-gecko application payload for ``version`` (loads at :data:`APP_BASE`).

    The plain demo payload is random bytes, which no compressor shrinks; ``compressible``
    keeps the first half of every 1 KiB random ("code") and fills the second half with
    erased flash and repeated text, so LZ4 and LZMA shrink it about as much as they
    shrink real radio firmware (roughly 2:1).
    """
    app = demo_payload(version, size=size, load_address=APP_BASE, image_type=IMAGE_TYPE)
    if not compressible:
        return app
    body = bytearray(app)
    filler = (b"\xff" * 256 + b"CHUB demo string table; " * 11)[:512]
    for start in range(1024, size, 1024):  # the vectors and descriptor stay as they are
        end = min(start + 1024, size)
        half = start + 512
        body[half:end] = filler[: max(0, end - half)]
    return seal_payload(
        body,
        manufacturer_code=DEMO_MANUFACTURER,
        image_type=IMAGE_TYPE,
        firmware_version=version,
        hw_min=DEMO_HW_MIN,
        hw_max=DEMO_HW_MAX,
    )


def demo_gbl(
    version: int,
    *,
    size: int = 64 * 1024,
    compression: str | None = None,
    compressible: bool = False,
) -> bytes:
    """A GBL file carrying :func:`demo_app` (unsigned, as ``build_gbl`` makes them),
    its program data LZ4- or LZMA-compressed when ``compression`` says so."""
    app = demo_app(version, size=size, compressible=compressible)
    return gbl.build_gbl([(APP_BASE, app)], app_version=version, compression=compression)


# --- outputs ---------------------------------------------------------------------------------


Output = Emit | Timer | Alarm | Vanish


class Mode(enum.Enum):
    """What the device is doing."""

    OFF = "off"
    BOOTING = "bootloader-starting"  # reset, bootloader initialising (deaf)
    MENU = "bootloader"  # menu shown, waiting for a key
    UPLOAD_SETTLE = "upload-starting"  # after "begin upload", discarding input (deaf)
    RECEIVING = "receiving"  # XMODEM receiver
    FINISHING = "upload-finishing"  # flushing input before the result (deaf)
    STARTING = "app-starting"  # application initialising (deaf)
    APP = "app"  # application console
    STALLED = "stalled"  # stall fault (deaf)
    GONE = "gone"  # vanished


# --- the GBL as it streams in ----------------------------------------------------------------


class GblError(Exception):
    """The uploaded file is not an acceptable GBL; ``code`` is what the bootloader prints."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


_PROGRAM_TAGS = frozenset({gbl.TAG_PROGRAM_DATA, gbl.TAG_ERASE_PROGRAM_DATA})
_SKIPPED_TAGS = frozenset(
    {gbl.TAG_METADATA, gbl.TAG_VERSION_DEPENDENCY, gbl.TAG_CERTIFICATE, gbl.TAG_SIGNATURE}
)
_KEPT_TAGS = frozenset({gbl.TAG_HEADER, gbl.TAG_APP_INFO, gbl.TAG_END})  # values read whole
_SUPPORTED = _PROGRAM_TAGS | _SKIPPED_TAGS | _KEPT_TAGS
_COMPRESSED_TAGS = {gbl.TAG_PROGRAM_DATA_LZ4: "lz4", gbl.TAG_PROGRAM_DATA_LZMA: "lzma"}
_COMPRESSED_MIN = {gbl.TAG_PROGRAM_DATA_LZ4: 4, gbl.TAG_PROGRAM_DATA_LZMA: 4 + 13}
_KEPT_MAX = 256  # longest HEADER / APP_INFO value accepted


class GblStream:
    """Checks a GBL v3 file as its bytes arrive and says what to program where.

    Tag sequence: HEADER first (version major 3), then any of APP_INFO, PROGRAM_DATA,
    ERASE_PROGRAM_DATA, METADATA, VERSION_DEPENDENCY, CERTIFICATE, SIGNATURE (only END may
    follow it), and END last with the CRC-32 of every byte before its value.
    PROGRAM_DATA_LZ4 / _LZMA are decompressed as they stream in when the bootloader has
    that decompressor (``decompressors``), and refused as unknown tags (0x44) when not;
    corrupt compressed data aborts with the code the firmware prints for it (0x18).
    Encrypted, delta, bootloader and SE-upgrade tags are refused: this bootloader is built
    without them. Bytes after END are XMODEM padding and ignored.

    Args:
        lowest, end: the application area; program data outside it is refused.
        decompressors: the decompressors this bootloader was built with.
    """

    def __init__(
        self,
        lowest: int = APP_BASE,
        end: int = FLASH_BASE + FLASH_SIZE,
        decompressors: tuple[str, ...] = DECOMPRESSORS,
    ) -> None:
        self.lowest = lowest
        self.end = end
        self.decompressors = decompressors
        self._inflate: Decompressor | None = None
        self.complete = False  # END seen and its CRC right
        self.app_version: int | None = None
        self.program_bytes = 0
        self.received = 0  # bytes of the file up to the end of END
        self._crc = 0
        self._head = bytearray()
        self._tag = 0
        self._left = 0
        self._tags = 0
        self._after_signature = False
        self._value = bytearray()
        self._address: int | None = None
        self._word = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Take the next bytes of the file.

        Returns:
            Flash writes ``(address, bytes)``, word aligned and whole words.

        Raises:
            GblError: the file breaks the format (the code the bootloader prints).
        """
        writes: list[tuple[int, bytes]] = []
        i, n = 0, len(data)
        while i < n and not self.complete:
            if self._left == 0 and len(self._head) < 8:
                take = min(8 - len(self._head), n - i)
                chunk = data[i : i + take]
                self._head += chunk
                self._crc = crc32(chunk, self._crc)
                i += take
                if len(self._head) == 8:
                    self._start_tag(writes)
                continue
            take = min(self._left, n - i)
            chunk = data[i : i + take]
            i += take
            self._left -= take
            if self._tag != gbl.TAG_END:
                self._crc = crc32(chunk, self._crc)
            self._value_bytes(chunk, writes)
            if self._left == 0:
                self._end_tag(writes)
        self.received += i
        return writes

    def _start_tag(self, writes: list[tuple[int, bytes]]) -> None:
        tag, length = struct.unpack("<II", self._head)
        self._head.clear()
        self._tags += 1
        name = gbl.tag_name(tag)
        if self._tags == 1 and tag != gbl.TAG_HEADER:
            raise GblError(CODE_HEADER, f"the file starts with {name}, not a GBL HEADER tag")
        method = _COMPRESSED_TAGS.get(tag)
        if method is not None and method not in self.decompressors:
            raise GblError(
                CODE_UNKNOWN_TAG,
                f"{name}: this bootloader is built without the {method} decompressor",
            )
        if tag not in _SUPPORTED and method is None:
            raise GblError(CODE_UNKNOWN_TAG, f"{name} tags are not supported by this bootloader")
        if tag == gbl.TAG_HEADER and self._tags != 1:
            raise GblError(CODE_FILE, "a second HEADER tag")
        if self._after_signature and tag != gbl.TAG_END:
            raise GblError(CODE_FILE, f"{name} after the SIGNATURE tag (only END may follow)")
        if tag == gbl.TAG_END and length != 4:
            raise GblError(CODE_FILE, f"END tag of {length} bytes (a CRC-32 is 4)")
        if tag in _PROGRAM_TAGS and length < 4:
            raise GblError(CODE_FILE, f"{name} tag of {length} bytes has no address")
        if method is not None and length < _COMPRESSED_MIN[tag]:
            raise GblError(CODE_FILE, f"{name} tag of {length} bytes is too short")
        if tag in _KEPT_TAGS and length > _KEPT_MAX:
            raise GblError(CODE_FILE, f"{name} tag of {length} bytes is too long")
        self._tag, self._left = tag, length
        self._value.clear()
        self._address = None
        self._inflate = None
        self._after_signature = self._after_signature or tag == gbl.TAG_SIGNATURE
        if length == 0:
            self._end_tag(writes)

    def _value_bytes(self, chunk: bytes, writes: list[tuple[int, bytes]]) -> None:
        tag = self._tag
        if tag in _KEPT_TAGS:
            self._value += chunk
        elif tag in _PROGRAM_TAGS or tag in _COMPRESSED_TAGS:
            if self._address is None:
                need = 4 - len(self._value)
                self._value += chunk[:need]
                chunk = chunk[need:]
                if len(self._value) < 4:
                    return
                self._start_program(int.from_bytes(self._value, "little"))
            if self._inflate is not None:
                try:
                    chunk = self._inflate.feed(bytes(chunk))
                except DecompressError as exc:
                    raise GblError(CODE_COMPRESSION, str(exc)) from None
            self._word += chunk
            whole = len(self._word) // 4 * 4
            if whole:
                self._program(bytes(self._word[:whole]), writes)
                del self._word[:whole]

    def _start_program(self, address: int) -> None:
        data_len = self._left + 4 - len(self._value) + len(self._word)
        method = _COMPRESSED_TAGS.get(self._tag)
        if method is not None:
            # What it decompresses to is unknown yet: the decompressor stops at the end.
            data_len = 0
            limit = max(0, self.end - address)
            self._inflate = Lz4Stream(limit) if method == "lz4" else LzmaStream(limit)
        if address % 4:
            raise GblError(CODE_FILE, f"program data at 0x{address:08X} is not word aligned")
        if address < self.lowest or address + data_len > self.end:
            raise GblError(
                CODE_FILE,
                f"program data 0x{address:08X}..0x{address + data_len:08X} lies outside the "
                f"application area 0x{self.lowest:08X}..0x{self.end:08X}",
            )
        self._address = address

    def _program(self, data: bytes, writes: list[tuple[int, bytes]]) -> None:
        assert self._address is not None
        writes.append((self._address, data))
        self._address += len(data)
        self.program_bytes += len(data)

    def _end_tag(self, writes: list[tuple[int, bytes]]) -> None:
        tag, value = self._tag, bytes(self._value)
        if tag == gbl.TAG_HEADER:
            if len(value) < 8 or value[3] != 3:
                raise GblError(CODE_HEADER, "the GBL HEADER is not version 3")
            if struct.unpack_from("<I", value, 4)[0] & gbl.GBL_TYPE_ENCRYPTED:
                raise GblError(CODE_UNKNOWN_TAG, "encrypted GBL files are not supported")
        elif tag == gbl.TAG_APP_INFO and len(value) >= 8:
            self.app_version = struct.unpack_from("<I", value, 4)[0]
        elif tag in _PROGRAM_TAGS or tag in _COMPRESSED_TAGS:
            if self._inflate is not None:
                try:
                    self._inflate.finish()
                except DecompressError as exc:
                    raise GblError(CODE_COMPRESSION, str(exc)) from None
                self._inflate = None
            if self._word:  # the tag ends inside a word: the rest of it stays erased
                self._program(bytes(self._word) + b"\xff" * (4 - len(self._word)), writes)
                self._word.clear()
        elif tag == gbl.TAG_END:
            stored = int.from_bytes(value, "little")
            if stored != self._crc:
                raise GblError(
                    CODE_GBL_CRC,
                    f"GBL END CRC-32 0x{stored:08X} does not match the file's 0x{self._crc:08X}",
                )
            self.complete = True
        self._tag = 0


# --- the device ------------------------------------------------------------------------------


class GeckoHub(TimedModel[Output]):
    """One simulated hub: EFR32MG21-class flash, Gecko UART XMODEM bootloader, demo app.

    Call :meth:`power_on` first, then :meth:`feed` host bytes; when a :class:`Timer` or
    :class:`Alarm` is returned, call :meth:`timer_expired` when it is due (tests that ignore
    time use :meth:`settle` for timers and :meth:`expire` for alarms).

    Block faults from ``faults`` fire when a complete XMODEM block (SOH frame) arrives,
    counted from 0 per power-on, retransmissions included; each fires at most once per
    model lifetime.

    Args:
        start_in_bootloader: power on into the bootloader (as after the application's
            "launch bootloader", or a held activation pin); otherwise the application
            starts when it is valid.
        decompressors: what the bootloader was built with (``"lz4"``, ``"lzma"``); a
            compressed GBL whose method is missing is refused as the firmware does.
    """

    def __init__(
        self,
        *,
        eui64: str = "00-DB-12-34-56-78-90-A0",
        hw_version: int = 2,
        start_in_bootloader: bool = True,
        bootloader_version: int = BOOTLOADER_VERSION,
        faults: FaultPlan | None = None,
        decompressors: tuple[str, ...] = DECOMPRESSORS,
    ) -> None:
        parse_eui64(eui64)
        if not 0 <= hw_version <= 0xFFFF:
            raise ValueError(f"hardware version {hw_version} does not fit in 16 bits")
        super().__init__()
        self.flash = Flash(FLASH_BASE, FLASH_SIZE, PAGE_SIZE)
        self.eui64 = eui64
        self.hw_version = hw_version
        self.start_in_bootloader = start_in_bootloader
        self.bootloader_version = bootloader_version
        unknown = set(decompressors) - set(DECOMPRESSORS)
        if unknown:
            raise ValueError(f"unknown decompressor(s) {sorted(unknown)}: {DECOMPRESSORS}")
        self.decompressors = tuple(decompressors)
        self.faults = faults if faults is not None else FaultPlan()
        self.packets = 0  # SOH frames received since power-on
        self.uploads_completed = 0
        self.last_result: bytes | None = None  # the last upload's result text
        self.last_error: str | None = None  # why the last upload was aborted, in words
        self._fired: set[tuple[BlockFault, int]] = set()
        self._mode = Mode.OFF
        self._app: AppDescriptor | None = None
        self._console = LineConsole()
        # XMODEM receiver
        self._packet = bytearray()
        self._started = False
        self._last = 0
        self._errors = 0
        self._requests = 0
        self._gbl = GblStream()
        self._erased: set[int] = set()  # pages erased by the current upload
        # timers

    # --- public interface --------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """What the device is doing now."""
        return self._mode

    @property
    def running_app(self) -> AppDescriptor | None:
        """Descriptor of the application running now (None outside the application)."""
        return self._app if self._mode is Mode.APP else None

    @property
    def pending_alarm(self) -> Alarm | None:
        """The listening timeout the device keeps, if any."""
        pending = self._pending[0] if self._pending else None
        return pending if isinstance(pending, Alarm) else None

    @property
    def gbl(self) -> GblStream:
        """The GBL check of the current (or last) upload."""
        return self._gbl

    def power_on(self) -> list[Output]:
        """Power-on reset: block count restarted, then the bootloader or the application."""
        return self._entry(lambda: self._power_cycle(force_bootloader=self.start_in_bootloader))

    def hold_reset(self) -> list[Output]:
        """RESETn held (or power gone): the core stops and hears nothing."""
        return self._entry(lambda: self._set_mode(Mode.OFF))

    def release_reset(self, boot: bool, *, cold: bool = False) -> list[Output]:
        """RESETn released with the bootloader's GPIO activation pin at ``boot``: the
        bootloader stays (menu) when the pin selects it or no application is valid;
        ``cold`` after power came back."""
        if cold:
            return self._entry(lambda: self._power_cycle(force_bootloader=boot))
        return self._entry(lambda: self._reset(force_bootloader=boot))

    def feed(self, data: bytes) -> list[Output]:
        """Consume host bytes in order; returns what the device does in response."""
        self._out = []
        i, n = 0, len(data)
        while i < n:
            mode = self._mode
            if mode is Mode.RECEIVING:
                i = self._receive(data, i)
            elif mode is Mode.MENU:
                self._index = i
                self._menu_key(data[i])
                i += 1
            elif mode is Mode.APP:
                self._index = i
                self._console_byte(data[i])
                i += 1
            else:  # off, deaf or gone: the byte is lost
                break
        out, self._out = self._out, []
        return out

    def expire(self) -> list[Output]:
        """Let the pending alarm expire now (a timeout in tests that ignore time)."""
        alarm = self.pending_alarm
        return [] if alarm is None else self.timer_expired(alarm.token)

    def application(self) -> AppDescriptor | None:
        """The application in flash if it would boot: descriptor fits, CRC right."""
        offset = APP_BASE - FLASH_BASE
        data = self.flash.data
        try:
            desc = parse_descriptor(data[offset : offset + DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE])
            if desc.length > APP_MAX_SIZE:
                return None
            return check_payload(data[offset : offset + desc.length])
        except ImageError:
            return None

    def app_bytes(self, length: int) -> bytes:
        """``length`` bytes of flash from the application's start."""
        return self.flash.read(APP_BASE, length)

    # --- plumbing ----------------------------------------------------------------------------

    def _send(self, data: bytes | int, busy_s: float = 0.0) -> None:
        payload = bytes([data]) if isinstance(data, int) else data
        last = self._out[-1] if self._out else None
        if busy_s == 0.0 and isinstance(last, Emit) and last.after_index == self._index:
            self._out[-1] = Emit(last.after_index, last.busy_s, last.data + payload)
        else:
            self._out.append(Emit(self._index, busy_s, payload))

    def _arm(self, delay_s: float, then: Callable[[], None]) -> None:
        """Keep listening; run ``then`` if nothing replaces this alarm first."""
        self._token += 1
        alarm = Alarm(self._index, delay_s, self._token)
        self._pending = (alarm, then)
        self._out.append(alarm)

    def _set_mode(self, mode: Mode) -> None:
        self._pending = None
        self._console.clear()
        self._app = None
        self._mode = mode

    # --- resets, menu and application --------------------------------------------------------

    def _power_cycle(self, *, force_bootloader: bool) -> None:
        self.packets = 0
        self._reset(force_bootloader=force_bootloader)

    def _reset(self, *, force_bootloader: bool) -> None:
        """A reset: the bootloader starts the application when it is valid and not told
        to stay; otherwise it shows its menu."""
        self._packet.clear()
        app = None if force_bootloader else self.application()
        if app is not None:
            self._set_mode(Mode.STARTING)

            def started() -> None:
                self._set_mode(Mode.APP)
                self._app = app
                self._send(banner(app.firmware_version))

            self._wait(APP_START_S, started)
            return
        self._set_mode(Mode.BOOTING)
        self._wait(BOOTLOADER_START_S, self._show_menu)

    def _show_menu(self) -> None:
        self._set_mode(Mode.MENU)
        self._send(menu_text(self.bootloader_version))

    def _menu_key(self, key: int) -> None:
        if key == ord("1"):
            self._begin_upload()
        elif key == ord("2"):
            # Run: a reset with reason GO (after a verified upload) or BADIMAGE; either
            # way the bootloader then starts the application only if it is valid.
            self._reset(force_bootloader=False)
        else:  # '3' (ebl info) and every other key show the menu again
            self._send(menu_text(self.bootloader_version))

    def _console_byte(self, byte: int) -> None:
        line = self._console.feed(byte)
        if line is None:
            return
        app = self._app
        assert app is not None
        reply, boot = self._console.answer(
            line, version=app.firmware_version, eui64=self.eui64, hw_version=self.hw_version
        )
        self._send(reply)
        if boot:
            self._reset(force_bootloader=True)

    # --- XMODEM receiver ---------------------------------------------------------------------

    def _begin_upload(self) -> None:
        self._send(BEGIN_UPLOAD)
        self._set_mode(Mode.UPLOAD_SETTLE)  # premature input is discarded
        self._wait(UPLOAD_SETTLE_S, self._start_receiving)

    def _start_receiving(self) -> None:
        self._set_mode(Mode.RECEIVING)
        self._packet.clear()
        self._started, self._last, self._errors, self._requests = False, 0, 0, 0
        self._gbl = GblStream(decompressors=self.decompressors)
        self._erased.clear()
        self._request_start()

    def _request_start(self) -> None:
        """Send 'C' each second until the first byte comes; give up after a minute."""
        if self._requests >= START_REQUESTS:
            self._send(bytes([CAN]) * 3)
            self._show_menu()
            return
        self._requests += 1
        self._send(CRC_REQUEST)
        self._arm(START_REQUEST_INTERVAL_S, self._request_start)

    def _receive(self, data: bytes, i: int) -> int:
        """Consume bytes of a block (or a one-byte packet); returns the next index."""
        packet = self._packet
        if not packet:
            self._index = i
            byte = data[i]
            if byte == SOH:
                packet.append(byte)
                self._arm(PACKET_REST_S, self._packet_timeout)
                return i + 1
            if byte == EOT:
                self._end_of_transfer()
            elif byte in (CAN, CTRL_C, CRC_REQUEST):
                self._abort("block", CODE_CANCELLED, f"cancelled by the host (0x{byte:02X})")
            else:
                self._abort("block", CODE_NO_SOH, f"0x{byte:02X} where a block should start")
            return i + 1
        take = min(FRAME_SIZE - len(packet), len(data) - i)
        packet += data[i : i + take]
        i += take
        if len(packet) == FRAME_SIZE:
            self._index = i - 1
            frame = bytes(packet)
            packet.clear()
            self._block(frame)
        return i

    def _wait_packet(self) -> None:
        self._arm(PACKET_WAIT_S, self._packet_timeout)

    def _packet_timeout(self) -> None:
        self._packet.clear()  # a partial block is dropped
        self._error(CODE_NO_SOH)

    def _error(self, code: int) -> None:
        """NAK a block (or a missing one); too many in a row abort the upload."""
        self._errors += 1
        if self._errors >= MAX_ERRORS:
            self._abort("block", code, f"{MAX_ERRORS} bad or missing blocks in a row")
            return
        self._send(NAK)
        self._wait_packet()

    def _block(self, frame: bytes) -> None:
        index = self.packets
        self.packets += 1
        fault = self._block_fault(index)
        if fault is not None and self._fault_before_checks(fault):
            return
        verdict = check_frame(frame)
        if verdict is FrameCheck.BAD_COMPLEMENT:
            self._error(CODE_PACKET_NUMBER)
            return
        if verdict is FrameCheck.BAD_CRC:
            good = crc16_xmodem(frame[3 : 3 + BLOCK_SIZE]) >> 8
            self._error(CODE_CRC_HIGH if frame[-2] != good else CODE_CRC_LOW)
            return
        number = frame[1]
        if self._started and number == self._last:
            self._errors = 0
            self._send(ACK)  # a repeat (our ACK was lost): acknowledge and discard
            self._wait_packet()
            return
        expected = (self._last + 1) & 0xFF
        if number != expected:  # lost sync: fatal (Forsberg)
            self._abort("block", CODE_SEQUENCE, f"block number {number}, expected {expected}")
            return
        self._started, self._last, self._errors = True, number, 0
        try:
            writes = self._gbl.feed(frame[3 : 3 + BLOCK_SIZE])
        except GblError as exc:
            self._abort("file", exc.code, str(exc))
            return
        if fault is not None and fault.kind is BlockFaultKind.POWERLOSS:
            # Power fails while this block is programmed: half of its words make it.
            busy = self._program(writes, limit_words=sum(len(d) for _, d in writes) // 8)
            self._send(b"", busy)
            self._power_cycle(force_bootloader=True)
            return
        try:
            busy = self._program(writes)
        except GblError as exc:
            self._abort("file", exc.code, str(exc))
            return
        if fault is not None and fault.kind is BlockFaultKind.LOSTACK:
            self._send(b"", busy)  # programmed; the ACK is lost on the wire
        else:
            self._send(ACK, busy)
        self._wait_packet()

    def _program(self, writes: list[tuple[int, bytes]], limit_words: int | None = None) -> float:
        """Erase pages on first touch and program words; returns the device time spent."""
        busy = 0.0
        left = limit_words
        for address, data in writes:
            if left is not None:
                data = data[: left * 4]
                left -= len(data) // 4
            if not data:
                break
            for page in self.flash.pages_of(address, len(data)):
                if page not in self._erased:
                    self.flash.erase_page(page)
                    self._erased.add(page)
                    busy += PAGE_ERASE_S
            if not self.flash.program(address, data):
                raise GblError(CODE_FILE, f"flash at 0x{address:08X} was already programmed")
            busy += len(data) // 4 * WORD_WRITE_S
        return busy

    def _end_of_transfer(self) -> None:
        if not self._gbl.complete:
            self._abort("file", CODE_FILE, "the transfer ended before the GBL END tag")
            return
        self._send(ACK)
        self.uploads_completed += 1
        self._finish(UPLOAD_COMPLETE)

    def _abort(self, kind: str, code: int, why: str) -> None:
        self.last_error = why
        self._send(bytes([CAN]) * 3)
        self._finish(abort_text(kind, code))

    def _finish(self, text: bytes) -> None:
        """Flush input, wait, print the result and the menu."""
        self._set_mode(Mode.FINISHING)
        self.last_result = text

        def show() -> None:
            self._send(text)
            self._show_menu()

        self._wait(RESULT_SETTLE_S, show)

    # --- faults ------------------------------------------------------------------------------

    def _block_fault(self, block: int) -> BlockFault | None:
        return self.faults.fire_once(block, self._fired)

    def _fault_before_checks(self, fault: BlockFault) -> bool:
        """Apply faults that ignore the block's content; True if one was applied."""
        if fault.kind is BlockFaultKind.NACK:
            self._error(CODE_CRC_HIGH)
        elif fault.kind is BlockFaultKind.STALL:
            self._set_mode(Mode.STALLED)

            def wake() -> None:
                # Back in the receiver, the block lost, waiting for the next one.
                self._set_mode(Mode.RECEIVING)
                self._packet.clear()
                self._wait_packet()

            self._wait(fault.seconds, wake, fault=True)
        elif fault.kind is BlockFaultKind.VANISH:
            self._set_mode(Mode.GONE)
            self._out.append(Vanish(self._index))
        else:
            return False
        return True


# --- as the simulator serves it ------------------------------------------------------------


def build_hub(spec: HubSpec) -> GeckoHub:
    """The hub a spec describes, powered off, its flash factory-programmed as it says."""
    hub = GeckoHub(
        eui64=spec.eui64,
        hw_version=spec.hw_version,
        start_in_bootloader=spec.start_in == "bootloader",
        faults=spec.plan(),
        decompressors=DECOMPRESSORS if spec.decompressors is None else spec.decompressors,
    )
    if spec.firmware is not None:
        # Factory programming, not through the bootloader.
        hub.flash.program(APP_BASE, demo_app(spec.firmware, size=spec.firmware_size))
    return hub


def check_spec(spec: HubSpec) -> None:
    """A Gecko bootloader is built with some of the decompressors it knows."""
    if spec.decompressors is not None and set(spec.decompressors) - set(DECOMPRESSORS):
        raise ValueError(f"decompressors must be among {DECOMPRESSORS}")


#: The simulated Gecko hubs (``station sim --protocol gecko``, ``sim://gecko``): 8N1.
MODEL = SimModel(
    name="gecko",
    profile="demo-gecko",
    bits_per_byte=10,
    app_base=APP_BASE,
    largest_firmware=APP_MAX_SIZE,
    build=build_hub,
    check=check_spec,
    fault_kinds=SERIAL_FAULTS,
)

"""Pure model of the simulated MCUboot hub (``demo-smp``): two image slots, MCUboot's serial
recovery (SMP over the UART), and the demo application.

An STM32L4-class MCU (the flash figures of :mod:`sim.an3155`) running MCUboot with serial
recovery. The server follows ``mcu-tools/mcuboot`` ``boot/boot_serial/src/boot_serial.c``:

* lines: a line longer than ``line_max`` bytes (newline included) is dropped, as the
  Zephyr console adapter does; a line takes one of ``line_bufs`` buffers from its first
  byte until the server has handled it (``boot/zephyr/serial_adapter.c``: recycled at the
  next read), and bytes arriving while every buffer is taken are lost; a line starting
  ``06 09`` starts a frame, ``04 14`` continues it, anything else is ignored;
* a frame whose decoded bytes would exceed ``receive_size`` is dropped without an answer
  (``boot_serial_in_dec`` returns -1), as is one whose CRC is wrong or whose header is not
  a read or write request with a length covering its body;
* echo (group 0 id 0), console echo control (0/1), reset (0/5, answers then reboots after
  250 ms), image state read (1/0), image upload (1/1); anything else ``{"rc": 8}``;
* upload: ``off`` and ``data`` required (else rc 3); at off 0 the image number is taken,
  ``len`` checked against the slot and the whole slot erased before the chunk is written;
  a chunk at another offset than the expected one is answered ``{"rc": 0, "off":
  expected}`` without writing; a chunk past ``len`` is rc 3; the chunk is cut to the flash
  write alignment except the last (padded with 0xFF); the answer is ``{"rc": 0, "off": n}``.

Time is spent as the device would: the slot erase and each chunk's programming before the
answer (:class:`~sim.an3155.Emit` busy time), 250 ms before a reset, the swap or copy of an
upgrade at boot. The pacer (:mod:`sim.core.pacing`) adds the wire and lends the model its
clock (:meth:`McubootHub.clock`: when each byte arrives, when the core is free) for the line
buffers; unpaced, no line is ever lost for want of a buffer. No I/O, no threads.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from drivers import smp as wire
from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.descriptor import AppDescriptor, check_payload
from firmware_images.mcuboot import ImageVersion, build_mcuboot, read_mcuboot
from firmware_images.zigbee import ecdsa_p256_verify
from sim.an3155 import DOUBLEWORD_PROGRAM_S, PAGE_ERASE_S
from sim.app_console import LineConsole, banner
from sim.core.faults import SERIAL_FAULTS, BlockFault, BlockFaultKind, FaultPlan
from sim.core.flash import Flash
from sim.core.spec import HubSpec, SimModel, parse_eui64
from sim.core.timed import Emit, TimedModel, Timer, Vanish

# --- memory map ------------------------------------------------------------------------

FLASH_BASE = 0x0800_0000
FLASH_SIZE = 1024 * 1024
PAGE_SIZE = 2048
BOOT_SIZE = 0x1_0000  # MCUboot itself
SLOT_SIZE = 0x5_0000  # 320 KiB each
SLOT0 = FLASH_BASE + BOOT_SIZE
SLOT1 = SLOT0 + SLOT_SIZE
WRITE_ALIGN = 8  # the L4 programs 64-bit double words
IMAGE_TYPE = 0x0403  # the demo-smp hub model
HEADER_SIZE = 0x200  # imgtool --header-size of the demo images

# --- server limits (MCUboot defaults) ---------------------------------------------------

LINE_MAX = wire.LINE_MAX
LINE_BUFS = 8
RECEIVE_SIZE = wire.RECEIVE_SIZE

# --- times -----------------------------------------------------------------------------

RESET_DELAY_S = 0.250  # bs_reset: k_sleep(250 ms) before sys_reboot
BOOT_S = 5e-3  # reset to MCUboot deciding (model figure)
APP_START_S = 20e-3  # application start to banner (model figure)
#: Hash check of an image before boot: SHA-256 in software at ~10 MB/s (model figure).
HASH_S_PER_BYTE = 1e-7

UPLOAD_TO = ("primary", "secondary")
UPGRADES = ("overwrite", "swap")


def program_s(nbytes: int) -> float:
    """Time to program ``nbytes`` (whole double words)."""
    return -(-nbytes // 8) * DOUBLEWORD_PROGRAM_S


def demo_app(version: int, *, size: int = 64 * 1024) -> bytes:
    """The demo-smp application payload for ``version``."""
    return demo_payload(version, size=size, load_address=SLOT0 + HEADER_SIZE, image_type=IMAGE_TYPE)


def demo_image(
    version: int,
    *,
    size: int = 64 * 1024,
    sign: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """An MCUboot image carrying :func:`demo_app` (signed when ``sign`` is given)."""
    return build_mcuboot(
        demo_app(version, size=size),
        ImageVersion.from_int(version),
        header_size=HEADER_SIZE,
        sign=sign,
    )


class Mode(enum.Enum):
    OFF = "off"
    BOOTING = "booting"  # MCUboot deciding, swapping or copying (deaf)
    RECOVERY = "bootloader"  # serial recovery: SMP server
    RESETTING = "resetting"  # answered reset, 250 ms before the reboot (deaf)
    STARTING = "app-starting"
    APP = "app"
    STALLED = "stalled"
    GONE = "gone"


Output = Emit | Timer | Vanish


class McubootHub(TimedModel[Output]):
    """One simulated MCUboot hub. Call :meth:`power_on`, then :meth:`feed` host bytes;
    when a :class:`~sim.an3155.Timer` is returned call :meth:`timer_expired` when due
    (tests that ignore time use :meth:`settle`).

    Args:
        start_in_bootloader: power on into serial recovery (the recovery pin held at
            power-on); otherwise, and after a reset, MCUboot boots a valid primary image,
            and enters recovery only when there is none or the application's ``BOOT``
            asks for it.
        upload_to: ``primary`` (MCUboot's serial recovery default: the upload overwrites
            the running image in place) or ``secondary`` (direct image upload: image 2 is
            the secondary slot, which MCUboot installs at the next boot).
        upgrade: how a valid secondary image is installed at boot: ``overwrite`` (copied
            over the primary, secondary erased) or ``swap`` (the two exchanged).
        trusted_key: when given, MCUboot boots only images whose ECDSA TLV verifies with
            it; otherwise the SHA-256 TLV alone is checked.

    Upload faults from ``faults`` fire when a complete upload request arrives, counted
    from 0 per power-on (retries included): ``nack`` answers rc 1 (flash write failed)
    without writing, ``lostack`` writes but loses the answer, ``stall`` goes deaf,
    ``powerloss`` restarts the hub (the upload state is lost), ``vanish`` pulls the port.
    """

    def __init__(
        self,
        *,
        eui64: str = "00-DB-12-34-56-78-90-A0",
        hw_version: int = 2,
        start_in_bootloader: bool = True,
        receive_size: int = RECEIVE_SIZE,
        line_max: int = LINE_MAX,
        line_bufs: int = LINE_BUFS,
        upload_to: str = "primary",
        upgrade: str = "overwrite",
        trusted_key: ec.EllipticCurvePublicKey | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        parse_eui64(eui64)
        if upload_to not in UPLOAD_TO or upgrade not in UPGRADES:
            raise ValueError(f"upload_to in {UPLOAD_TO}, upgrade in {UPGRADES}")
        if receive_size < 16 or line_max < 7 or line_bufs < 1:
            raise ValueError("receive size and line length are too small for any frame")
        super().__init__()
        self.flash = Flash(FLASH_BASE, FLASH_SIZE, PAGE_SIZE)
        self.eui64 = eui64
        self.hw_version = hw_version
        self.start_in_bootloader = start_in_bootloader
        self.receive_size = receive_size
        self.line_max = line_max
        self.line_bufs = line_bufs
        self.upload_to = upload_to
        self.upgrade = upgrade
        self.trusted_key = trusted_key
        self.faults = faults if faults is not None else FaultPlan()
        self.uploads = 0  # upload requests since power-on
        self.dropped_lines = 0
        self.dropped_frames = 0
        self.lost_lines = 0  # lines that lost bytes for want of a free line buffer
        self.resets = 0
        self.swaps = 0
        self._fired: set[tuple[BlockFault, int]] = set()
        self._mode = Mode.OFF
        self._app: AppDescriptor | None = None
        self._console = LineConsole()
        self._line = bytearray()
        self._overlong = False
        # line buffers (serial_adapter.c), timed by the pacer's clock (see clock())
        self._arrive: Callable[[int], float] | None = None
        self._busy_until = -math.inf  # when the server has handled every line read so far
        self._releases: deque[float] = deque()  # when each taken buffer is recycled
        self._has_buf = False  # the line being received holds a buffer
        self._starved = False  # the line being received lost bytes
        self._decoder = wire.FrameDecoder(limit=receive_size + 1)
        self._recovery_requested = False
        # boot_serial.c's upload statics
        self._curr_off = 0
        self._img_size = 0
        self._img_slot = 0

    # --- public --------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def running_app(self) -> AppDescriptor | None:
        return self._app if self._mode is Mode.APP else None

    @property
    def upload_offset(self) -> int:
        """The offset the server expects next (boot_serial.c ``curr_off``)."""
        return self._curr_off

    def clock(self, arrive: Callable[[int], float] | None, free_at: float) -> None:
        """The pacer's clock for the next :meth:`feed` (:class:`sim.core.pacing.Clocked`):
        ``arrive(i)`` when its byte ``i`` arrives (None: unpaced), ``free_at`` when the core
        is next free. Only the line buffers use it."""
        self._arrive = arrive
        self._busy_until = free_at

    def power_on(self) -> list[Output]:
        self.uploads = 0
        return self._entry(lambda: self._boot(power_on=True))

    def feed(self, data: bytes) -> list[Output]:
        self._out = []
        i = 0
        for i, byte in enumerate(data):
            mode = self._mode
            self._index = i
            if mode is Mode.RECOVERY:
                self._line_byte(byte)
            elif mode is Mode.APP:
                self._console_byte(byte)
            else:
                break  # deaf, off or gone: the rest is lost
            if self._mode not in (Mode.RECOVERY, Mode.APP):
                break
        out, self._out = self._out, []
        return out

    def slot_image(self, slot: int) -> bytes | None:
        """The MCUboot image in ``slot`` if MCUboot would accept it (hash, signature)."""
        base = SLOT0 if slot == 0 else SLOT1
        data = self.flash.read(base, SLOT_SIZE)
        try:
            img = read_mcuboot(data)
        except ImageError:
            return None
        if self.trusted_key is not None and (
            img.signature is None
            or not ecdsa_p256_verify(self.trusted_key, img.hashed, img.signature)
        ):
            return None
        return data[: img.size]

    def application(self) -> AppDescriptor | None:
        """The primary slot's application if MCUboot would boot it."""
        raw = self.slot_image(0)
        if raw is None:
            return None
        try:
            return check_payload(read_mcuboot(raw).payload)
        except ImageError:
            return None

    def install(self, image: bytes, slot: int = 0) -> None:
        """Factory programming of ``image`` into ``slot`` (not through the bootloader)."""
        base = SLOT0 if slot == 0 else SLOT1
        for page in self.flash.pages_of(base, SLOT_SIZE):
            self.flash.erase_page(page)
        padded = image + b"\xff" * (-len(image) % WRITE_ALIGN)
        if not self.flash.program(base, padded):
            raise ValueError("image does not fit the slot")

    # --- boot ----------------------------------------------------------------------------

    def _set_mode(self, mode: Mode) -> None:
        self._pending = None
        self._console.clear()
        self._line.clear()
        self._overlong = False
        self._releases.clear()
        self._has_buf = self._starved = False
        self._decoder.reset()
        self._app = None
        self._mode = mode

    def _boot(self, *, power_on: bool = False) -> None:
        """MCUboot after a reset: install a pending upgrade, then recovery or the app (the
        recovery pin, ``start_in_bootloader``, is read at power-on)."""
        self.resets += 1
        self._curr_off = self._img_size = 0  # statics are lost with RAM
        self._set_mode(Mode.BOOTING)
        busy = BOOT_S
        if self.slot_image(1) is not None and self.slot_image(1) != self.slot_image(0):
            busy += self._install_secondary()
        stay = (power_on and self.start_in_bootloader) or self._recovery_requested
        self._recovery_requested = False
        app = None if stay else self.application()
        if app is not None:
            busy += HASH_S_PER_BYTE * SLOT_SIZE

            def started() -> None:
                self._set_mode(Mode.APP)
                self._app = app
                self._send(banner(app.firmware_version))

            self._wait(busy + APP_START_S, started)
            return
        self._wait(busy, lambda: self._set_mode(Mode.RECOVERY))

    def _install_secondary(self) -> float:
        """Copy or swap the secondary image into the primary slot; the time it takes."""
        primary = self.flash.read(SLOT0, SLOT_SIZE)
        secondary = self.flash.read(SLOT1, SLOT_SIZE)
        pages = SLOT_SIZE // PAGE_SIZE
        for page in self.flash.pages_of(SLOT0, SLOT_SIZE):
            self.flash.erase_page(page)
        self.flash.program(SLOT0, secondary)
        for page in self.flash.pages_of(SLOT1, SLOT_SIZE):
            self.flash.erase_page(page)
        self.swaps += 1
        if self.upgrade == "swap":
            self.flash.program(SLOT1, primary)
            return pages * 2 * (PAGE_ERASE_S + program_s(PAGE_SIZE))
        return pages * (2 * PAGE_ERASE_S + program_s(PAGE_SIZE))

    # --- application ---------------------------------------------------------------------

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
            self._recovery_requested = True
            self._boot()

    # --- serial recovery -----------------------------------------------------------------

    def _send(self, data: bytes, busy_s: float = 0.0) -> None:
        self._out.append(Emit(self._index, busy_s, data))

    def _take_buffer(self) -> bool:
        """Whether the byte being handled finds a line buffer (the UART ISR's
        ``sys_slist_get(&avail_queue)``); always, when there is no clock."""
        if self._has_buf or self._arrive is None:
            return True
        now = self._arrive(self._index)
        while self._releases and self._releases[0] <= now:
            self._releases.popleft()
        if len(self._releases) >= self.line_bufs:
            self._starved = True
            return False
        self._has_buf = True
        return True

    def _line_byte(self, byte: int) -> None:
        if not self._take_buffer():
            if byte == 0x0A:  # that line is lost (what follows starts a new one)
                self.lost_lines += 1
                self._starved = False
            return
        if byte != 0x0A:
            if len(self._line) >= self.line_max - 1:  # no room left for the newline
                self._overlong = True
                self._line.clear()
            else:
                self._line.append(byte)
            return
        line, overlong = bytes(self._line), self._overlong
        self._line.clear()
        self._overlong = False
        if self._starved:  # its head was lost: the server reads a tail
            self.lost_lines += 1
            self._starved = False
        if self._arrive is not None:
            self._handled_after(line, overlong)
        else:
            self._handle_line(line, overlong)

    def _handled_after(self, line: bytes, overlong: bool) -> None:
        """Handle a line once the server is free, and keep its buffer until it is handled."""
        assert self._arrive is not None
        start = max(self._arrive(self._index), self._busy_until)
        first = len(self._out)
        self._has_buf = False
        self._handle_line(line, overlong)
        busy = sum(o.busy_s for o in self._out[first:] if isinstance(o, Emit))
        self._busy_until = start + busy
        if self._mode is Mode.RECOVERY:
            self._releases.append(self._busy_until)

    def _handle_line(self, line: bytes, overlong: bool) -> None:
        if overlong:
            self.dropped_lines += 1
            self._decoder.reset()
            return
        try:
            message = self._decoder.feed(line.rstrip(b"\r"))
        except wire.FrameError:
            self.dropped_frames += 1
            return
        if message is not None:
            self._request(message)

    def _answer(self, request: wire.SmpHeader, body: dict[str, Any], busy_s: float = 0.0) -> None:
        data = cbor2.dumps(body)
        hdr = wire.SmpHeader(
            request.op + 1,
            request.version,
            0,
            len(data),
            request.group,
            request.sequence,
            request.command,
        )
        lines = wire.encode_frame(hdr.pack() + data, LINE_MAX)
        self._send(b"".join(lines), busy_s)

    def _request(self, message: bytes) -> None:
        try:
            hdr = wire.SmpHeader.unpack(message)
        except wire.FrameError:
            self.dropped_frames += 1
            return
        body_bytes = message[wire.HEADER_SIZE :]
        if hdr.op not in (0, 2) or hdr.length < len(body_bytes):
            self.dropped_frames += 1
            return
        try:
            body = cbor2.loads(body_bytes) if body_bytes else None
        except (cbor2.CBORDecodeError, ValueError, TypeError):
            body = None
        args = body if isinstance(body, dict) else {}
        key = (hdr.group, hdr.command)
        if key == (wire.GROUP_IMAGE, wire.CMD_UPLOAD):
            self._upload(hdr, args, isinstance(body, dict))
        elif key == (wire.GROUP_IMAGE, wire.CMD_STATE):
            if hdr.op == 0:
                self._answer(hdr, {"images": self._image_list()})
            else:
                self._answer(hdr, {"rc": wire.RC_ENOTSUP})  # no image-state support
        elif key == (wire.GROUP_OS, wire.CMD_ECHO):
            text = args.get("d")
            if isinstance(text, str):
                self._answer(hdr, {"r": text})
            else:
                self._answer(hdr, {"rc": wire.RC_EINVAL})
        elif key == (wire.GROUP_OS, 1):  # console echo control
            self._answer(hdr, {"rc": 0})
        elif key == (wire.GROUP_OS, wire.CMD_RESET):
            self._answer(hdr, {"rc": 0})
            self._mode = Mode.RESETTING
            self._wait(RESET_DELAY_S, self._boot)
        else:
            self._answer(hdr, {"rc": wire.RC_ENOTSUP})

    def _image_list(self) -> list[dict[str, Any]]:
        out = []
        for slot in (0, 1):
            raw = self.slot_image(slot)
            if raw is None:
                continue
            img = read_mcuboot(raw)
            out.append({"slot": slot, "hash": img.sha256, "version": img.header.version.smp_text})
        return out

    def _upload(self, hdr: wire.SmpHeader, args: dict[str, Any], ok: bool) -> None:
        fault = self.faults.fire_once(self.uploads, self._fired)
        self.uploads += 1
        if fault is not None and self._fault(fault):
            return
        off, data = args.get("off"), args.get("data")
        if not ok or not isinstance(off, int) or off < 0 or not isinstance(data, bytes):
            self._answer(hdr, {"rc": wire.RC_EINVAL})
            return
        if fault is not None and fault.kind is BlockFaultKind.NACK:
            self._answer(hdr, {"rc": 1})
            return
        busy = 0.0
        if off == 0:
            image = args.get("image", 0)
            slot = self._slot_for(image)
            size = args.get("len")
            if slot is None or not isinstance(size, int) or not 0 <= size <= SLOT_SIZE:
                self._answer(hdr, {"rc": wire.RC_EINVAL})
                return
            self._img_slot = slot
            base = SLOT0 if slot == 0 else SLOT1
            pages = self.flash.pages_of(base, SLOT_SIZE)
            for page in pages:
                self.flash.erase_page(page)
            busy += len(pages) * PAGE_ERASE_S
            self._curr_off, self._img_size = 0, size
        elif off != self._curr_off:
            self._answer(hdr, {"rc": 0, "off": self._curr_off})
            return
        if self._curr_off + len(data) > self._img_size:
            self._answer(hdr, {"rc": wire.RC_EINVAL}, busy)
            return
        rem = len(data) % WRITE_ALIGN
        length = len(data) - rem
        if self._curr_off + length + rem < self._img_size:
            rem = 0  # the tail is asked for again
        chunk = data[:length]
        if rem:
            chunk = data[: length + rem] + b"\xff" * (WRITE_ALIGN - rem)
        base = SLOT0 if self._img_slot == 0 else SLOT1
        if chunk and not self.flash.program(base + self._curr_off, chunk):
            self._answer(hdr, {"rc": 1}, busy)  # MGMT_ERR_EUNKNOWN: flash write failed
            return
        busy += program_s(len(chunk))
        self._curr_off += length + rem
        if fault is not None and fault.kind is BlockFaultKind.LOSTACK:
            self._send(b"", busy)  # written, but the answer never leaves
            return
        self._answer(hdr, {"rc": 0, "off": self._curr_off}, busy)

    def _slot_for(self, image: object) -> int | None:
        if not isinstance(image, int):
            return None
        if self.upload_to == "primary":
            return 0 if image == 0 else None
        return {0: 0, 1: 0, 2: 1}.get(image)

    def _fault(self, fault: BlockFault) -> bool:
        """Apply a fault that replaces the request's handling; True if one was."""
        if fault.kind is BlockFaultKind.STALL:
            self._mode = Mode.STALLED
            self._wait(fault.seconds, lambda: self._set_mode(Mode.RECOVERY), fault=True)
        elif fault.kind is BlockFaultKind.POWERLOSS:
            self._boot(power_on=True)
        elif fault.kind is BlockFaultKind.VANISH:
            self._set_mode(Mode.GONE)
            self._out.append(Vanish(self._index))
        else:
            return False
        return True


#: Where the demo application's payload starts (for ground truth: the primary slot after
#: the MCUboot header).
APP_BASE = SLOT0 + HEADER_SIZE


def build_hub(spec: HubSpec) -> McubootHub:
    """The hub a :class:`sim.core.spec.HubSpec` describes, powered off, its primary slot holding
    ``demo_image(spec.firmware)`` when it has firmware (factory programming)."""
    hub = McubootHub(
        eui64=spec.eui64,
        hw_version=spec.hw_version,
        start_in_bootloader=spec.start_in == "bootloader",
        faults=spec.plan(),
    )
    if spec.firmware is not None:
        hub.install(demo_image(spec.firmware, size=spec.firmware_size))
    return hub


#: The simulated MCUboot hubs of the ``smp`` plug-in (``station sim --protocol smp``,
#: ``sim://smp``).
MODEL = SimModel(
    name="smp",
    profile="demo-smp",
    bits_per_byte=10,
    app_base=APP_BASE,
    largest_firmware=SLOT_SIZE // 2,
    build=build_hub,
    fault_kinds=SERIAL_FAULTS,
)

"""Pure model of simulated USB DFU hubs (``demo-dfu``): USB bus, descriptors, DFU/DfuSe, flash.

No I/O, no clock, no threads. Every call takes the time it happens at (seconds on the
caller's clock) and says when it completes, so an adapter can pace it in real time
(``sim.usb_backend``, ``sim.usb_server``) or a test can run it on a simulated clock. The
model is also the reference for the stateful property tests. Contract: ``docs/sim-dfu.md``;
wire facts: ``protocols.md`` §2.

A hub is an STM32L4-class MCU (the same flash and identity area as the AN3155 demo hub)
whose application exposes a DFU run-time interface and whose system bootloader speaks
DfuSe. Its application boots only when the application descriptor and CRC are valid; it
then reports its version in bcdDevice (top 16 bits) and, in full, in a string descriptor.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from drivers.dfu_codes import (
    BCD_DFUSE,
    DFU_CLASS,
    DFU_SUBCLASS,
    DFUSE_ERASE,
    DFUSE_FIRST_DATA_BLOCK,
    DFUSE_GET_COMMANDS,
    DFUSE_READ_UNPROTECT,
    DFUSE_SET_ADDRESS,
    ERASABLE,
    PROTOCOL_DFU,
    PROTOCOL_RUNTIME,
    READABLE,
    REQUEST_IN,
    REQUEST_OUT,
    WRITABLE,
    DfuRequest,
    DfuState,
    DfuStatus,
    FunctionalDescriptor,
    MemoryMap,
    MemorySegment,
    StatusReply,
)
from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.descriptor import (
    DESCRIPTOR_OFFSET,
    DESCRIPTOR_SIZE,
    AppDescriptor,
    check_payload,
    format_version,
    parse_descriptor,
)
from sim.an3155 import (
    DOUBLEWORD_PROGRAM_S,
    FLASH_BASE,
    FLASH_SIZE,
    MASS_ERASE_S,
    OTP_BASE,
    OTP_SIZE,
    PAGE_ERASE_S,
    PAGE_SIZE,
    Flash,
    identity_block,
    parse_eui64,
)
from sim.core.faults import GRAMMAR, USB_FAULTS, split_spec

# --- USB timing (contract: docs/sim-dfu.md "Timing") ----------------------------------------

FRAME_S = 1e-3  # full-speed frame (SOF every 1 ms)
#: Control-transfer wire bytes that fit in one frame: 1500 bytes pass at 12 Mbit/s in 1 ms;
#: less SOF, end-of-frame guard band and bit-stuffing margin.
CONTROL_BYTES_PER_FRAME = 1200
#: Wire bytes each transaction costs beyond its payload: token packet, data packet
#: SYNC/PID/CRC16, handshake packet, EOPs and inter-packet gaps.
TRANSACTION_OVERHEAD = 13
EP0_MAX_PACKET = 64
SETUP_BYTES = 8
#: From a device's (re-)attach to its enumeration by the host: attach debounce (TATTDB,
#: 100 ms), port reset (TDRST, 10 ms) and reset recovery (TRSTRCY, 10 ms).
REENUMERATE_S = 0.120
USB_RESET_S = 0.020  # TDRST + TRSTRCY
APP_START_S = 0.020  # application start, as the AN3155 demo hub
WATCHDOG_S = 0.100  # a faulting jump is reset by the watchdog, as the AN3155 demo hub
MANIFEST_MS = 1  # DfuSe leave: the bootloader jumps right after its status stage
HANG_LIMIT_S = 3600.0  # a hung hub with a host that set no timeout: give up after an hour

# --- identity and descriptors (contract) ------------------------------------------------------

RUNTIME_VID, RUNTIME_PID = 0x1209, 0x0001
DFU_VID, DFU_PID = 0x0483, 0xDF11
DFU_BCD_DEVICE = 0x2200
TRANSFER_SIZE = 2048
DETACH_TIMEOUT_MS = 255
LANGID_EN_US = 0x0409
FLASH_MAP = MemoryMap("Internal Flash  ", (MemorySegment(FLASH_BASE, 256, PAGE_SIZE, 7),))
OTP_MAP = MemoryMap("OTP Memory     ", (MemorySegment(OTP_BASE, 1, OTP_SIZE, READABLE),))
DFUSE_COMMANDS = bytes([DFUSE_GET_COMMANDS, DFUSE_SET_ADDRESS, DFUSE_ERASE, DFUSE_READ_UNPROTECT])

# String indexes.
S_MANUFACTURER, S_PRODUCT, S_SERIAL = 1, 2, 3
S_VERSION, S_EUI64, S_HW, S_RUNTIME_INTF = 4, 5, 6, 7  # run-time mode
S_FLASH_MAP, S_OTP_MAP = 4, 5  # DFU mode

# libusb error codes (as pyusb's libusb1 backend reports them).
ERR_NO_DEVICE = -4
ERR_NOT_FOUND = -5
ERR_BUSY = -6
ERR_TIMEOUT = -7
ERR_PIPE = -9
ERR_INVALID = -2

STATES_DFU = frozenset(DfuState) - {DfuState.APP_IDLE, DfuState.APP_DETACH}


def control_wire_bytes(data_len: int) -> int:
    """Bytes a control transfer with a ``data_len``-byte data stage puts on the bus."""
    packets = math.ceil(data_len / EP0_MAX_PACKET)
    return (
        SETUP_BYTES
        + TRANSACTION_OVERHEAD
        + data_len
        + packets * TRANSACTION_OVERHEAD
        + TRANSACTION_OVERHEAD  # status stage
    )


def control_wire_s(data_len: int) -> float:
    """Bus time of a control transfer with a ``data_len``-byte data stage."""
    return control_wire_bytes(data_len) / CONTROL_BYTES_PER_FRAME * FRAME_S


def frame_end(t: float) -> float:
    """The end of the frame in which time ``t`` falls (``t`` itself on a boundary)."""
    frames = t / FRAME_S
    nearest = round(frames)
    if abs(frames - nearest) < 1e-6:
        return nearest * FRAME_S
    return math.ceil(frames) * FRAME_S


def program_time_s(nbytes: int) -> float:
    """Time to program ``nbytes`` (the L4 programs 64-bit double words)."""
    return math.ceil(nbytes / 8) * DOUBLEWORD_PROGRAM_S


def poll_ms(seconds: float) -> int:
    """bwPollTimeout for a busy time: whole milliseconds, rounded up."""
    return math.ceil(round(seconds * 1000, 6))


def serial_for(eui64: str) -> str:
    """The USB serial number of a hub: the last six bytes of its EUI-64, in hex."""
    return parse_eui64(eui64)[2:].hex().upper()


def port_path_for(slot: int) -> tuple[int, ...]:
    """Where slot N plugs in: port ``(N-1)%7+1`` of the 7-port hub on root port
    ``(N-1)//7+1`` (so ``usb:1-1.3`` is slot 3)."""
    return ((slot - 1) // 7 + 1, (slot - 1) % 7 + 1)


# --- faults ----------------------------------------------------------------------------------

FAULT_KINDS = tuple(sorted(USB_FAULTS))
FAULT_GRAMMAR = GRAMMAR


@dataclass(frozen=True)
class DfuFault:
    """One parsed fault item (``slot`` None: every hub)."""

    slot: int | None
    kind: str
    value: int


def parse_dfu_faults(spec: str) -> list[DfuFault]:
    """Parse a ``--faults`` SPEC for DFU hubs.

    Raises:
        ValueError: an item that is not in the grammar.
    """
    out = []
    for item in split_spec(spec, USB_FAULTS):
        if not item.value.isdigit():
            raise ValueError(f"fault item {item.text!r} is not understood: {FAULT_GRAMMAR}")
        if item.kind == "dupserial" and item.slot is None:
            raise ValueError(f"fault item {item.text!r}: dupserial needs a slot (S:dupserial=T)")
        out.append(DfuFault(item.slot, item.kind, int(item.value)))
    return out


def faults_for(spec: str, slot: int) -> dict[int, str]:
    """The block faults of one slot, block -> kind (a slot's item wins over a rig-wide
    one at the same block)."""
    plan: dict[int, str] = {}
    for fault in parse_dfu_faults(spec):
        if fault.kind != "dupserial" and fault.slot is None:
            plan[fault.value] = fault.kind
    for fault in parse_dfu_faults(spec):
        if fault.kind != "dupserial" and fault.slot == slot:
            plan[fault.value] = fault.kind
    return plan


# --- the hub ---------------------------------------------------------------------------------


class Mode(enum.Enum):
    """Where the hub is."""

    RUNTIME = "runtime"  # application running, DFU run-time interface
    DFU = "dfu"  # system bootloader, DfuSe
    DETACHED = "detached"  # off the bus, coming back at ``attach_at``
    GONE = "gone"  # unplugged for good


@dataclass
class Reply:
    """What a control transfer did.

    Attributes:
        data: IN data (device to host).
        count: OUT bytes accepted.
        error: a libusb error code (``ERR_PIPE`` for a STALL...), or None.
        done_at: when the transfer completes (the host gets its answer).
    """

    done_at: float
    data: bytes = b""
    count: int = 0
    error: int | None = None


@dataclass(frozen=True)
class DfuHubSpec:
    """Everything one simulated DFU hub needs; validated on construction.

    ``firmware`` None means blank flash; otherwise flash holds ``demo_payload(firmware)``
    (``firmware_size`` bytes). ``start_in="bootloader"`` straps the boot pin (every reset
    lands in the DFU bootloader); ``"app"`` boots the application when it is valid.
    """

    slot: int
    eui64: str
    hw_version: int = 2
    firmware: int | None = None
    firmware_size: int = 64 * 1024
    start_in: str = "bootloader"
    serial: str | None = None
    transfer_size: int = TRANSFER_SIZE
    will_detach: bool = True
    dfuse: bool = True
    manifestation_tolerant: bool = False
    faults: str = ""
    paced: bool = True

    def __post_init__(self) -> None:
        if self.slot < 1:
            raise ValueError(f"slot {self.slot}: slots are numbered from 1")
        object.__setattr__(self, "eui64", self.eui64.upper())
        parse_eui64(self.eui64)
        if self.start_in not in ("bootloader", "app"):
            raise ValueError(f"start_in must be 'bootloader' or 'app', not {self.start_in!r}")
        if not 64 <= self.transfer_size <= 4096 or self.transfer_size % 8:
            raise ValueError(
                f"transfer size {self.transfer_size} must be 64..4096 and a multiple of 8"
            )
        smallest = DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE
        if self.firmware_size % 4 or not smallest <= self.firmware_size <= FLASH_SIZE:
            raise ValueError(
                f"firmware size {self.firmware_size} must be a multiple of 4 "
                f"from {smallest} to {FLASH_SIZE} bytes"
            )
        faults_for(self.faults, self.slot)  # raises ValueError on a bad SPEC

    @property
    def usb_serial(self) -> str:
        """The serial number string the hub shows."""
        return self.serial if self.serial is not None else serial_for(self.eui64)

    def build(self) -> DfuHub:
        """The model of this hub, powered and about to attach (at time 0)."""
        payload = None
        if self.firmware is not None:
            payload = demo_payload(self.firmware, size=self.firmware_size)
        return DfuHub(self, payload)


@dataclass
class _Pending:
    """A DNLOAD accepted in dfuDNLOAD-SYNC, executed at the next GETSTATUS."""

    block: int
    data: bytes
    done: bool = False
    result: DfuStatus = DfuStatus.OK


@dataclass
class _Descriptors:
    """One enumeration's descriptors (they never change while it lasts)."""

    device: dict[str, Any]
    config: dict[str, Any]
    interfaces: list[dict[str, Any]]  # alternate settings of interface 0
    strings: dict[int, str]
    raw_config: bytes


class DfuHub:
    """One simulated hub. Driven by :class:`SimUsbBus`; see the module docstring."""

    def __init__(self, spec: DfuHubSpec, firmware: bytes | None = None) -> None:
        self.spec = spec
        self.flash = Flash()
        if firmware is not None:  # factory programming, not through the bootloader
            self.flash.program(FLASH_BASE, firmware)
        self.otp = bytes(identity_block(spec.eui64, spec.hw_version))
        self.faults = faults_for(spec.faults, spec.slot)
        self.bus_number = 1
        self.port_path = port_path_for(spec.slot)
        self.mode = Mode.DETACHED
        self.attach_at: float | None = 0.0
        self.attach_mode = Mode.DFU
        self.attach_error = DfuStatus.OK
        self.address = 0
        self.generation = 0
        self.descriptors: dict[int, _Descriptors] = {}
        self.state = DfuState.DFU_IDLE
        self.status = DfuStatus.OK
        self.alt = 0
        self.pointer = FLASH_BASE
        self.pending: _Pending | None = None
        self.busy_until = -math.inf
        self.manifest_at: float | None = None
        self.manifest_over = False
        self.detach_deadline: float | None = None
        self.upload_offset = 0
        self.download_offset = 0
        self.download_pages: set[int] = set()
        self.download_image = bytearray()  # plain DFU: what this download session sent
        self.manifested: list[bytes] = []  # plain DFU: images manifested, for tests
        self.data_blocks = 0  # data DNLOADs accepted over the hub's life (fault counter)
        self.hung = False
        #: Host protocol errors the hub saw (e.g. GETSTATUS before bwPollTimeout elapsed).
        self.violations: list[str] = []
        self.claimed_by: str | None = None
        self.attach_mode = self._boot_mode()

    # -- what it is -----------------------------------------------------------------------

    @property
    def paced(self) -> bool:
        """Whether device times are modelled (else every delay is zero)."""
        return self.spec.paced

    @property
    def serial(self) -> str:
        """The USB serial number string."""
        return self.spec.usb_serial

    @property
    def location(self) -> str:
        """``<bus>-<port.path>``."""
        return f"{self.bus_number}-{'.'.join(str(p) for p in self.port_path)}"

    @property
    def present(self) -> bool:
        """Whether the hub is enumerated on the bus."""
        return self.mode in (Mode.RUNTIME, Mode.DFU)

    def application(self) -> AppDescriptor | None:
        """The application in flash if it would boot: descriptor fits, CRC right."""
        head = self.flash.data[: DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE]
        try:
            length = parse_descriptor(head).length
            if length > self.flash.size:
                return None
            return check_payload(self.flash.data[:length])
        except ImageError:
            return None

    def _boot_mode(self) -> Mode:
        """Where a reset lands: the bootloader when strapped or the application is invalid."""
        if self.spec.start_in == "bootloader" or self.application() is None:
            return Mode.DFU
        return Mode.RUNTIME

    def _delay(self, seconds: float) -> float:
        return seconds if self.paced else 0.0

    # -- attach and detach ----------------------------------------------------------------

    def leave_bus(self, at: float, mode: Mode, delay_s: float) -> None:
        """Drop off the bus at ``at``; come back in ``mode`` ``delay_s`` later."""
        self.mode = Mode.DETACHED
        self.attach_at = at + self._delay(delay_s)
        self.attach_mode = mode
        self.attach_error = DfuStatus.OK
        self.pending = None
        self.manifest_at = None
        self.detach_deadline = None
        self.claimed_by = None

    def reboot(self, at: float, *, extra_s: float = 0.0, error_if_dfu: bool = False) -> None:
        """Reset: re-enumerate where the boot rule says (application or bootloader)."""
        mode = self._boot_mode()
        start = APP_START_S if mode is Mode.RUNTIME else 0.0
        self.leave_bus(at, mode, REENUMERATE_S + start + extra_s)
        if error_if_dfu and mode is Mode.DFU:
            self.attach_error = DfuStatus.ERR_FIRMWARE

    def attach(self, address: int) -> None:
        """Enumerate with a new address in the mode it is coming back in."""
        self.mode = self.attach_mode
        self.attach_at = None
        self.address = address
        self.generation += 1
        self.alt = 0
        self.pointer = FLASH_BASE
        self.pending = None
        self.busy_until = -math.inf
        self.upload_offset = 0
        if self.mode is Mode.RUNTIME:
            self.state, self.status = DfuState.APP_IDLE, DfuStatus.OK
        elif self.attach_error is not DfuStatus.OK:
            self.state, self.status = DfuState.DFU_ERROR, self.attach_error
        else:
            self.state, self.status = DfuState.DFU_IDLE, DfuStatus.OK
        self.descriptors[self.generation] = self._build_descriptors()

    def advance(self, now: float) -> None:
        """Let time-driven events up to ``now`` happen (detach timeout, manifestation)."""
        deadline = self.detach_deadline
        if self.mode is Mode.RUNTIME and deadline is not None and now >= deadline:
            self.detach_deadline = None
            self.state = DfuState.APP_IDLE  # no reset came: back to the application
        if self.mode is Mode.DFU and self.manifest_at is not None and now >= self.manifest_at:
            self._manifest_done(self.manifest_at)

    def power_off(self) -> None:
        """Its port's power is cut: off the bus, RAM gone (flash keeps), until power_on."""
        if self.mode is Mode.GONE:
            return
        self.leave_bus(0.0, Mode.DETACHED, 0.0)
        self.attach_at = None  # nothing comes back without power
        self.detach_deadline = None
        self.hung = False

    def power_on(self, at: float) -> None:
        """Power returns at ``at``: a power-on reset, booting where the boot rule says."""
        if self.mode is Mode.DETACHED and self.attach_at is None:
            self.reboot(at)

    def unplug(self) -> None:
        """The cable is pulled: gone for good."""
        self.mode = Mode.GONE
        self.attach_at = None
        self.claimed_by = None

    # -- descriptors ----------------------------------------------------------------------

    def _functional(self) -> FunctionalDescriptor:
        attrs = 0x03  # bitCanDnload | bitCanUpload
        if self.spec.manifestation_tolerant:
            attrs |= 0x04
        if self.spec.will_detach:
            attrs |= 0x08
        version = BCD_DFUSE if self.spec.dfuse else 0x0110
        return FunctionalDescriptor(attrs, DETACH_TIMEOUT_MS, self.spec.transfer_size, version)

    def _build_descriptors(self) -> _Descriptors:
        runtime = self.mode is Mode.RUNTIME
        app = self.application()
        if runtime:
            assert app is not None
            vid, pid, bcd = RUNTIME_VID, RUNTIME_PID, (app.firmware_version >> 16) & 0xFFFF
            strings = {
                S_MANUFACTURER: "Simulated Hubs",
                S_PRODUCT: "Communications Hub (DFU demo)",
                S_SERIAL: self.serial,
                S_VERSION: f"VER {format_version(app.firmware_version)}",
                S_EUI64: f"EUI {self.spec.eui64}",
                S_HW: f"HW {self.spec.hw_version}",
                S_RUNTIME_INTF: "DFU run-time",
            }
            alts = [(0, PROTOCOL_RUNTIME, S_RUNTIME_INTF)]
            iconfig = S_VERSION
        else:
            vid, pid, bcd = DFU_VID, DFU_PID, DFU_BCD_DEVICE
            strings = {
                S_MANUFACTURER: "STMicroelectronics",
                S_PRODUCT: "STM32  BOOTLOADER",
                S_SERIAL: self.serial,
                S_FLASH_MAP: FLASH_MAP.format(),
                S_OTP_MAP: OTP_MAP.format(),
            }
            alts = [(0, PROTOCOL_DFU, S_FLASH_MAP), (1, PROTOCOL_DFU, S_OTP_MAP)]
            iconfig = 0
        functional = self._functional().pack()
        interfaces = []
        raw_intf = b""
        for n, (alt, protocol, istring) in enumerate(alts):
            extra = functional if n == len(alts) - 1 else b""
            interfaces.append(
                {
                    "bLength": 9,
                    "bDescriptorType": 4,
                    "bInterfaceNumber": 0,
                    "bAlternateSetting": alt,
                    "bNumEndpoints": 0,
                    "bInterfaceClass": DFU_CLASS,
                    "bInterfaceSubClass": DFU_SUBCLASS,
                    "bInterfaceProtocol": protocol,
                    "iInterface": istring,
                    "extra_descriptors": list(extra),
                }
            )
            raw_intf += bytes([9, 4, 0, alt, 0, DFU_CLASS, DFU_SUBCLASS, protocol, istring]) + extra
        total = 9 + len(raw_intf)
        config = {
            "bLength": 9,
            "bDescriptorType": 2,
            "wTotalLength": total,
            "bNumInterfaces": 1,
            "bConfigurationValue": 1,
            "iConfiguration": iconfig,
            "bmAttributes": 0x80,
            "bMaxPower": 50,
            "extra_descriptors": [],
        }
        raw_config = bytes([9, 2, total & 0xFF, total >> 8, 1, 1, iconfig, 0x80, 50]) + raw_intf
        device = {
            "bLength": 18,
            "bDescriptorType": 1,
            "bcdUSB": 0x0200,
            "bDeviceClass": 0,
            "bDeviceSubClass": 0,
            "bDeviceProtocol": 0,
            "bMaxPacketSize0": EP0_MAX_PACKET,
            "idVendor": vid,
            "idProduct": pid,
            "bcdDevice": bcd,
            "iManufacturer": S_MANUFACTURER,
            "iProduct": S_PRODUCT,
            "iSerialNumber": S_SERIAL,
            "bNumConfigurations": 1,
            "address": self.address,
            "bus": self.bus_number,
            "port_number": self.port_path[-1],
            "port_numbers": list(self.port_path),
            "speed": 2,  # LIBUSB_SPEED_FULL
        }
        return _Descriptors(device, config, interfaces, strings, raw_config)

    def current(self) -> _Descriptors:
        """Descriptors of the present enumeration."""
        return self.descriptors[self.generation]

    def _raw_device_descriptor(self, d: _Descriptors) -> bytes:
        f = d.device
        return bytes(
            [
                18,
                1,
                0x00,
                0x02,
                0,
                0,
                0,
                EP0_MAX_PACKET,
                f["idVendor"] & 0xFF,
                f["idVendor"] >> 8,
                f["idProduct"] & 0xFF,
                f["idProduct"] >> 8,
                f["bcdDevice"] & 0xFF,
                f["bcdDevice"] >> 8,
                S_MANUFACTURER,
                S_PRODUCT,
                S_SERIAL,
                1,
            ]
        )

    def _get_descriptor(self, wValue: int, wIndex: int) -> bytes | None:
        kind, index = wValue >> 8, wValue & 0xFF
        d = self.current()
        if kind == 1:
            return self._raw_device_descriptor(d)
        if kind == 2 and index == 0:
            return d.raw_config
        if kind == 3:
            if index == 0:
                return bytes([4, 3]) + LANGID_EN_US.to_bytes(2, "little")
            text = d.strings.get(index)
            if text is None or wIndex != LANGID_EN_US:
                return None
            raw = text.encode("utf-16-le")
            return bytes([2 + len(raw), 3]) + raw
        return None

    # -- control transfers ----------------------------------------------------------------

    def control(
        self,
        start: float,
        done: float,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: bytes,
        wLength: int,
        timeout_ms: int,
    ) -> Reply:
        """One control transfer: its SETUP reaches the hub at ``start``, the transfer
        completes at ``done`` (the bus decides both)."""
        reply = self._control(start, done, bmRequestType, bRequest, wValue, wIndex, data, wLength)
        if reply.error == ERR_TIMEOUT:
            # A hung hub NAKs forever: the host gives up after its own timeout.
            reply.done_at = start + (timeout_ms / 1000.0 if timeout_ms else HANG_LIMIT_S)
        return reply

    def _control(
        self,
        start: float,
        done: float,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: bytes,
        wLength: int,
    ) -> Reply:
        if self.hung:
            return Reply(done, error=ERR_TIMEOUT)
        if bmRequestType == 0x80 and bRequest == 6:  # standard GET_DESCRIPTOR
            raw = self._get_descriptor(wValue, wIndex)
            if raw is None:
                return Reply(done, error=ERR_PIPE)
            return Reply(done, data=raw[:wLength])
        if bmRequestType not in (REQUEST_OUT, REQUEST_IN) or (wIndex & 0xFF) != 0:
            return Reply(done, error=ERR_PIPE)
        try:
            request = DfuRequest(bRequest)
        except ValueError:
            return Reply(done, error=ERR_PIPE)
        if (bmRequestType == REQUEST_IN) != (
            request in (DfuRequest.UPLOAD, DfuRequest.GETSTATUS, DfuRequest.GETSTATE)
        ):
            return Reply(done, error=ERR_PIPE)
        if self.mode is Mode.RUNTIME:
            return self._runtime(request, wValue, done)
        return self._dfu(request, start, done, wValue, data, wLength)

    def _runtime(self, request: DfuRequest, wValue: int, done: float) -> Reply:
        if request is DfuRequest.GETSTATUS:
            return Reply(done, data=StatusReply(self.status, 0, self.state).pack())
        if request is DfuRequest.GETSTATE:
            return Reply(done, data=bytes([self.state]))
        if request is DfuRequest.DETACH and self.state is DfuState.APP_IDLE:
            self.state = DfuState.APP_DETACH
            if self.spec.will_detach:
                # The application reboots into its bootloader on its own.
                self.leave_bus(done, Mode.DFU, REENUMERATE_S)
            else:
                timeout_ms = min(wValue, DETACH_TIMEOUT_MS)
                self.detach_deadline = done + timeout_ms / 1000.0
            return Reply(done)
        return Reply(done, error=ERR_PIPE)

    def _stall(self, done: float, why: str = "") -> Reply:
        """Request error in DFU mode: STALL and dfuERROR/errSTALLEDPKT."""
        self.state, self.status = DfuState.DFU_ERROR, DfuStatus.ERR_STALLEDPKT
        self.pending = None
        if why:
            self.violations.append(why)
        return Reply(done, error=ERR_PIPE)

    def _dfu(
        self,
        request: DfuRequest,
        start: float,
        done: float,
        wValue: int,
        data: bytes,
        wLength: int,
    ) -> Reply:
        state = self.state
        if state is DfuState.DFU_DNBUSY:
            if start < self.busy_until - 1e-9:
                early_ms = (self.busy_until - start) * 1000
                return self._stall(
                    done,
                    f"{request.name} while dfuDNBUSY, {early_ms:.3f} ms before bwPollTimeout "
                    "elapsed",
                )
            state = self.state = DfuState.DFU_DNLOAD_SYNC  # busy over: back in SYNC
        if state is DfuState.DFU_MANIFEST:
            return self._stall(done, f"{request.name} during dfuMANIFEST")
        if request is DfuRequest.GETSTATUS:
            return self._getstatus(done)
        if request is DfuRequest.GETSTATE:
            return Reply(done, data=bytes([self.state]))
        if request is DfuRequest.CLRSTATUS:
            if state is DfuState.DFU_ERROR:
                self.state, self.status = DfuState.DFU_IDLE, DfuStatus.OK
                return Reply(done)
            self.state, self.status = DfuState.DFU_ERROR, DfuStatus.ERR_UNKNOWN
            return Reply(done, error=ERR_PIPE)
        if request is DfuRequest.ABORT:
            if state in (
                DfuState.DFU_IDLE,
                DfuState.DFU_DNLOAD_SYNC,
                DfuState.DFU_DNLOAD_IDLE,
                DfuState.DFU_MANIFEST_SYNC,
                DfuState.DFU_UPLOAD_IDLE,
            ):
                self.state, self.status = DfuState.DFU_IDLE, DfuStatus.OK
                self.pending = None
                return Reply(done)
            return self._stall(done)
        if request is DfuRequest.DNLOAD:
            return self._dnload(done, wValue, data)
        if request is DfuRequest.UPLOAD:
            return self._upload(done, wValue, wLength)
        if request is DfuRequest.DETACH and state in (
            DfuState.DFU_IDLE,
            DfuState.DFU_DNLOAD_SYNC,
            DfuState.DFU_DNLOAD_IDLE,
            DfuState.DFU_MANIFEST_SYNC,
            DfuState.DFU_UPLOAD_IDLE,
        ):
            self.reboot(done)
            return Reply(done)
        return self._stall(done)

    def _getstatus(self, done: float) -> Reply:
        state = self.state
        poll = 0
        if state is DfuState.DFU_DNLOAD_SYNC and self.pending is not None:
            if not self.pending.done:
                busy = self._execute(self.pending)
                self.pending.done = True
                poll = poll_ms(self._delay(busy))
                self.busy_until = done + poll / 1000.0
                self.state = DfuState.DFU_DNBUSY
            else:
                result = self.pending.result
                self.pending = None
                if result is DfuStatus.OK:
                    self.state = DfuState.DFU_DNLOAD_IDLE
                else:
                    self.state, self.status = DfuState.DFU_ERROR, result
        elif state is DfuState.DFU_MANIFEST_SYNC:
            if not self.manifest_over:
                poll = MANIFEST_MS if self.paced else 0
                self.state = DfuState.DFU_MANIFEST
                self.manifest_at = done + poll / 1000.0
            else:  # tolerant, manifestation over
                self.manifest_over = False
                self.state = DfuState.DFU_IDLE
        return Reply(done, data=StatusReply(self.status, poll, self.state).pack())

    # -- download -------------------------------------------------------------------------

    def _region(self) -> MemoryMap:
        return FLASH_MAP if self.alt == 0 else OTP_MAP

    def _dnload(self, done: float, block: int, data: bytes) -> Reply:
        state = self.state
        if not data:
            if state in (DfuState.DFU_DNLOAD_IDLE, DfuState.DFU_IDLE):
                if state is DfuState.DFU_IDLE:  # a download of nothing
                    self.download_image = bytearray()
                self.state = DfuState.DFU_MANIFEST_SYNC
                self.manifest_at = None
                self.manifest_over = False
                return Reply(done)
            return self._stall(done)
        if state not in (DfuState.DFU_IDLE, DfuState.DFU_DNLOAD_IDLE):
            return self._stall(done)
        if self.spec.dfuse:
            if block == 1:
                return self._stall(done)
            if block == 0 and (
                data[0] not in (DFUSE_SET_ADDRESS, DFUSE_ERASE, DFUSE_READ_UNPROTECT)
                or len(data) not in (1, 5)
            ):
                return self._stall(done)
        elif state is DfuState.DFU_IDLE:
            self.download_offset = 0
            self.download_pages = set()
            self.download_image = bytearray()
        if block >= DFUSE_FIRST_DATA_BLOCK or not self.spec.dfuse:
            n = self.data_blocks
            self.data_blocks += 1
            kind = self.faults.get(n)
            if kind == "stall":
                return self._stall(done)
            if kind == "vanish":
                self.unplug()
                return Reply(done, error=ERR_NO_DEVICE)
            if kind == "reenum":
                self.reboot(done)
                return Reply(done, error=ERR_NO_DEVICE)
            if kind == "hang":
                self.hung = True
                return Reply(done, error=ERR_TIMEOUT)  # control() charges the timeout
            self.pending = _Pending(block, bytes(data))
            if kind in ("errwrite", "errverify"):
                self.pending.result = (
                    DfuStatus.ERR_WRITE if kind == "errwrite" else DfuStatus.ERR_VERIFY
                )
        else:
            self.pending = _Pending(block, bytes(data))
        self.state = DfuState.DFU_DNLOAD_SYNC
        return Reply(done, count=len(data))

    def _execute(self, op: _Pending) -> float:
        """Do what a DNLOAD asked; set ``op.result``; return the busy time in seconds."""
        if not self.spec.dfuse:
            return self._plain_write(op)
        if op.block == 0:
            return self._command(op)
        address = self.pointer + (op.block - DFUSE_FIRST_DATA_BLOCK) * self.spec.transfer_size
        data = op.data
        if (
            not self._region().allows(address, address + len(data), WRITABLE)
            or address % 4
            or len(data) % 4
        ):
            op.result = DfuStatus.ERR_ADDRESS
            return 0.0
        return self._program(op, address, data)

    def _program(self, op: _Pending, address: int, data: bytes) -> float:
        if not self.flash.can_program(address, len(data)):
            op.result = DfuStatus.ERR_PROG
            return program_time_s(4)  # fails on its first non-erased word
        if op.result is DfuStatus.ERR_WRITE:
            half = len(data) // 8 * 4
            self.flash.program(address, data[:half])  # power to the array dropped midway
            return program_time_s(half)
        if op.result is DfuStatus.ERR_VERIFY:
            bad = bytearray(data)
            bad[len(bad) // 2] ^= 0x10  # a weak cell: read back differs
            self.flash.program(address, bytes(bad))
            return program_time_s(len(data))
        self.flash.program(address, data)
        return program_time_s(len(data))

    def _command(self, op: _Pending) -> float:
        cmd, args = op.data[0], op.data[1:]
        if cmd == DFUSE_READ_UNPROTECT:
            self.flash.mass_erase()
            return MASS_ERASE_S
        if cmd == DFUSE_ERASE and not args:
            if self.alt != 0:
                op.result = DfuStatus.ERR_TARGET
                return 0.0
            self.flash.mass_erase()
            return MASS_ERASE_S
        address = int.from_bytes(args, "little")
        region = self._region()
        if cmd == DFUSE_SET_ADDRESS:
            if region.segment_at(address) is None:
                op.result = DfuStatus.ERR_TARGET
            else:
                self.pointer = address
            return 0.0
        seg = region.segment_at(address)
        if seg is None or not seg.flags & ERASABLE:
            op.result = DfuStatus.ERR_TARGET
            return 0.0
        self.flash.erase_page((address - self.flash.base) // self.flash.page_size)
        return PAGE_ERASE_S

    def _plain_write(self, op: _Pending) -> float:
        address = FLASH_BASE + self.download_offset
        data = op.data + b"\xff" * (-len(op.data) % 4)
        if address + len(data) > FLASH_BASE + FLASH_SIZE:
            op.result = DfuStatus.ERR_ADDRESS
            return 0.0
        busy = 0.0
        for page in self.flash.pages_of(address, len(data)):
            if page not in self.download_pages:  # erase as the download reaches a page
                self.flash.erase_page(page)
                self.download_pages.add(page)
                busy += PAGE_ERASE_S
        self.download_offset += len(op.data)
        self.download_image += op.data
        return busy + self._program(op, address, data)

    # -- manifestation --------------------------------------------------------------------

    def _manifest_done(self, at: float) -> None:
        self.manifest_at = None
        if self.spec.dfuse:
            # DfuSe leave: jump to the address pointer. The application's vector table is
            # at the start of flash; anything else faults and the watchdog resets it.
            if self.pointer == FLASH_BASE and self.application() is not None:
                self.leave_bus(at, Mode.RUNTIME, REENUMERATE_S + APP_START_S)
            else:
                self.leave_bus(at, Mode.DFU, REENUMERATE_S + WATCHDOG_S)
            return
        self.manifested.append(bytes(self.download_image))
        valid = self.application() is not None
        if self.spec.manifestation_tolerant:
            if valid:
                # The next GETSTATUS sees manifestation over: MANIFEST-SYNC -> dfuIDLE.
                self.state = DfuState.DFU_MANIFEST_SYNC
                self.manifest_over = True
            else:
                self.state, self.status = DfuState.DFU_ERROR, DfuStatus.ERR_FIRMWARE
            return
        self.state = DfuState.DFU_MANIFEST_WAIT_RESET
        if self.spec.will_detach:
            self.reboot(at, error_if_dfu=not valid)

    # -- upload ---------------------------------------------------------------------------

    def _upload(self, done: float, block: int, length: int) -> Reply:
        state = self.state
        if state not in (DfuState.DFU_IDLE, DfuState.DFU_UPLOAD_IDLE) or length == 0:
            return self._stall(done)
        if state is DfuState.DFU_IDLE:
            self.upload_offset = 0
        if self.spec.dfuse:
            if block == 0:
                out = DFUSE_COMMANDS[:length]
            elif block == 1:
                return self._stall(done)
            else:
                address = self.pointer + (block - DFUSE_FIRST_DATA_BLOCK) * self.spec.transfer_size
                region = self._region()
                seg = region.segment_at(address)
                if seg is None or not seg.flags & READABLE:
                    self.state, self.status = DfuState.DFU_ERROR, DfuStatus.ERR_ADDRESS
                    return Reply(done, error=ERR_PIPE)
                end = min(address + length, seg.end)
                out = self._read(address, end - address)
        else:
            at = FLASH_BASE + self.upload_offset
            end = min(at + length, FLASH_BASE + FLASH_SIZE)
            out = self._read(at, end - at)
            self.upload_offset += len(out)
        self.state = DfuState.DFU_UPLOAD_IDLE if len(out) == length else DfuState.DFU_IDLE
        return Reply(done, data=out)

    def _read(self, address: int, length: int) -> bytes:
        if OTP_BASE <= address < OTP_BASE + OTP_SIZE:
            return self.otp[address - OTP_BASE : address - OTP_BASE + length]
        return self.flash.read(address, length)

    # -- USB reset --------------------------------------------------------------------------

    def usb_reset(self, done: float) -> bool:
        """A USB port reset; returns whether the hub re-enumerates (new address)."""
        if self.mode is Mode.RUNTIME:
            if self.state is DfuState.APP_DETACH:
                self.leave_bus(done, Mode.DFU, REENUMERATE_S)
                return True
            return False  # the application just carries on
        if self.state is DfuState.DFU_MANIFEST_WAIT_RESET:
            self.reboot(done, error_if_dfu=True)
            return True
        self.reboot(done, error_if_dfu=self.spec.start_in != "bootloader")
        return True


# --- the bus ---------------------------------------------------------------------------------


@dataclass
class SimUsbBus:
    """The simulated hubs on one USB bus: addresses, bandwidth and frame timing.

    Hubs share the bus: control transfers of different hubs take turns on the wire, and
    each completes at the end of the frame its last byte crossed in.
    """

    hubs: list[DfuHub]
    paced: bool = True
    bus_free: float = -math.inf
    _next_address: int = 1
    _taken: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, specs: Sequence[DfuHubSpec], *, paced: bool | None = None) -> SimUsbBus:
        """A bus holding hubs built from ``specs`` (all attached at time 0).

        Args:
            paced: overrides every spec's ``paced`` (None: the specs decide; the bus is
                paced when any hub is).
        """
        if paced is not None:
            specs = [replace(spec, paced=paced) for spec in specs]
        return cls([spec.build() for spec in specs], paced=any(s.paced for s in specs))

    def _address(self) -> int:
        for _ in range(127):
            address = self._next_address
            self._next_address = address % 127 + 1
            if address not in self._taken:
                self._taken.add(address)
                return address
        raise RuntimeError("all 127 USB addresses are taken")

    def advance(self, now: float) -> None:
        """Let every hub's time-driven events up to ``now`` happen, attach those due."""
        for hub in self.hubs:
            hub.advance(now)
            if not hub.present and hub.address:
                self._taken.discard(hub.address)
                hub.address = 0
            if hub.mode is Mode.DETACHED and hub.attach_at is not None and hub.attach_at <= now:
                hub.attach(self._address())
                hub.advance(now)

    def present(self, now: float) -> list[DfuHub]:
        """Hubs enumerated at ``now``, in slot order."""
        self.advance(now)
        return [hub for hub in self.hubs if hub.present]

    def transfer(self, now: float, data_len: int) -> tuple[float, float]:
        """(start, done) of a control transfer submitted at ``now``."""
        if not self.paced:
            return now, now
        start = max(now, self.bus_free)
        end = start + control_wire_s(data_len)
        self.bus_free = end
        return start, frame_end(end)

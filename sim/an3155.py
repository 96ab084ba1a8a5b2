"""Pure model of the simulated AN3155 hub (``demo-an3155``): memory, bootloader, application.

No I/O, no clock, no threads: the model consumes host bytes and returns what the device does
(:class:`Emit`, :class:`Timer`, :class:`Vanish`), each tagged with the input byte that caused
it and the device time it costs. An adapter turns that into wall-clock behaviour; property
tests use the model directly as the reference. Contract: ``docs/sim-an3155.md``; byte-exact
exchanges: ``protocols.md`` §1.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass

from drivers.an3155_codes import ACK, NACK, SYNC, Cmd
from drivers.crc import stm32_crc, xor8
from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.descriptor import (
    DESCRIPTOR_OFFSET,
    DESCRIPTOR_SIZE,
    AppDescriptor,
    check_payload,
    parse_descriptor,
)
from sim.app_console import LineConsole, banner
from sim.core.faults import SERIAL_FAULTS, BlockFault, BlockFaultKind, FaultPlan
from sim.core.flash import Flash as _CoreFlash
from sim.core.spec import HubSpec, SimModel
from sim.core.spec import format_eui64 as format_eui64
from sim.core.spec import parse_eui64 as parse_eui64
from sim.core.timed import Emit as Emit
from sim.core.timed import Output as Output
from sim.core.timed import TimedModel as TimedModel
from sim.core.timed import Timer as Timer
from sim.core.timed import Vanish as Vanish

# --- memory map (contract) -------------------------------------------------------------------

FLASH_BASE = 0x0800_0000
FLASH_SIZE = 512 * 1024
PAGE_SIZE = 2048
SRAM_BASE = 0x2000_0000
SRAM_SIZE = 128 * 1024
BOOTLOADER_SRAM = 12 * 1024  # owned by the bootloader: writes there are NACKed
OTP_BASE = 0x1FFF_7000
OTP_SIZE = 1024
IDENTITY_MAGIC = b"HBID"

# --- bootloader identity and wire bytes ------------------------------------------------------

BOOTLOADER_VERSION = 0x31
PRODUCT_ID = 0x462


# Accepted while readout protection is active (AN3155: the rest are NACKed).
_RDP_ALLOWED = frozenset({Cmd.GET, Cmd.GET_VERSION, Cmd.GET_ID, Cmd.READOUT_UNPROTECT})

# --- device times (contract, STM32L4 datasheet typical figures) ------------------------------

DOUBLEWORD_PROGRAM_S = 81.7e-6
PAGE_ERASE_S = 22.0e-3
MASS_ERASE_S = 22.1e-3
CRC_WORD_S = 0.1e-6
APP_START_S = 20e-3
WATCHDOG_S = 100e-3
# Option-byte updates (write/readout protection) are not in the contract's figures; an L4
# rewrites its option page, so model it as one page erase plus one double-word program.
OPTION_UPDATE_S = PAGE_ERASE_S + DOUBLEWORD_PROGRAM_S

_EUI64 = re.compile(r"^[0-9A-F]{2}(?:-[0-9A-F]{2}){7}$")


def program_time_s(nbytes: int) -> float:
    """Time to program ``nbytes`` of flash (the L4 programs 64-bit double words)."""
    return math.ceil(nbytes / 8) * DOUBLEWORD_PROGRAM_S


# A bootloader exchange as a coroutine: it yields how many bytes it needs next and receives
# exactly that many, so each command reads like the AN3155 sequence it implements.
_Exchange = Generator[int, bytes, None]


class Mode(enum.Enum):
    """What the device is doing."""

    OFF = "off"
    WAIT_SYNC = "bootloader-unsynced"  # bootloader after reset, waiting for 0x7F
    BOOTLOADER = "bootloader"  # synced, in a command session
    STARTING = "app-starting"  # application initialising (deaf)
    APP = "app"  # application console
    FAULTED = "faulted"  # core fault, waiting for the watchdog (deaf)
    STALLED = "stalled"  # stall fault (deaf)
    GONE = "gone"  # vanished


# --- memory ----------------------------------------------------------------------------------


class Flash(_CoreFlash):
    """The STM32L4's main flash (:class:`sim.core.flash.Flash`, this part's sizes)."""

    def __init__(
        self, base: int = FLASH_BASE, size: int = FLASH_SIZE, page_size: int = PAGE_SIZE
    ) -> None:
        super().__init__(base, size, page_size)


@dataclass(frozen=True, eq=False)
class _Region:
    """A readable memory region; writes allowed from ``write_from`` (None: read-only)."""

    name: str
    base: int
    data: bytearray
    write_from: int | None

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def holds(self, address: int, length: int) -> bool:
        return self.base <= address and address + length <= self.end


def identity_block(eui64: str, hw_version: int) -> bytes:
    """The OTP identity area: ``HBID``, EUI-64 as printed, hardware version (u16 LE),
    2 reserved bytes (zero), the rest unprogrammed (0xFF)."""
    if not 0 <= hw_version <= 0xFFFF:
        raise ValueError(f"hardware version {hw_version} does not fit in 16 bits")
    head = IDENTITY_MAGIC + parse_eui64(eui64) + hw_version.to_bytes(2, "little") + b"\0\0"
    return head + b"\xff" * (OTP_SIZE - len(head))


# --- the device ------------------------------------------------------------------------------


class An3155Hub(TimedModel[Output]):
    """One simulated hub: STM32L4-class memory, ST bootloader v3.1, demo application.

    Call :meth:`power_on` first. Then :meth:`feed` host bytes; when a :class:`Timer` is
    returned, call :meth:`timer_expired` once its time has come (or :meth:`settle` in tests
    that do not model time).

    Block faults from ``faults`` fire when a Write Memory block to main flash completes, at
    most once each per model lifetime (so a host that restarts after a power loss is not
    caught in a loop); the write-block count restarts at every power-on.
    """

    def __init__(
        self,
        *,
        eui64: str = "00-DB-12-34-56-78-90-A0",
        hw_version: int = 2,
        boot_pin_strapped: bool = True,
        erase_command: int = Cmd.EXTENDED_ERASE,
        faults: FaultPlan | None = None,
        product_id: int = PRODUCT_ID,
        checksum: bool = True,
    ) -> None:
        if erase_command not in (Cmd.ERASE, Cmd.EXTENDED_ERASE):
            raise ValueError("erase_command must be 0x43 (Erase) or 0x44 (Extended Erase)")
        if not 0 <= product_id <= 0xFFFF:
            raise ValueError(f"product ID {product_id:#x} does not fit in 16 bits")
        super().__init__()
        self.product_id = product_id
        self.flash = Flash()
        self.sram = bytearray(SRAM_SIZE)
        self.otp = bytearray(identity_block(eui64, hw_version))
        self.boot_pin_strapped = boot_pin_strapped
        self.erase_command = Cmd(erase_command)
        self.faults = faults if faults is not None else FaultPlan()
        self.readout_protected = False
        self.write_protected: set[int] = set()  # page numbers
        self.write_blocks = 0  # Write Memory commands to main flash since power-on
        self._regions = (
            _Region("flash", FLASH_BASE, self.flash.data, FLASH_BASE),
            _Region("sram", SRAM_BASE, self.sram, SRAM_BASE + BOOTLOADER_SRAM),
            _Region("otp", OTP_BASE, self.otp, None),
        )
        self._commands = tuple(
            c
            for c in Cmd
            if (c not in (Cmd.ERASE, Cmd.EXTENDED_ERASE) or c == erase_command)
            and (checksum or c != Cmd.GET_CHECKSUM)
        )
        #: Pages with a marginal cell (a test hook): the first read that covers one sees
        #: what is stored, every later read a flipped bit, until the page is erased.
        self.flaky_pages: dict[int, int] = {}
        self._handlers: dict[int, Callable[[], _Exchange | None]] = {
            Cmd.GET: self._get,
            Cmd.GET_VERSION: self._get_version,
            Cmd.GET_ID: self._get_id,
            Cmd.READ_MEMORY: self._read_memory,
            Cmd.GO: self._go,
            Cmd.WRITE_MEMORY: self._write_memory,
            self.erase_command: self._erase if erase_command == Cmd.ERASE else self._ext_erase,
            Cmd.WRITE_PROTECT: self._write_protect,
            Cmd.WRITE_UNPROTECT: self._write_unprotect,
            Cmd.READOUT_PROTECT: self._readout_protect,
            Cmd.READOUT_UNPROTECT: self._readout_unprotect,
        }
        if checksum:
            self._handlers[Cmd.GET_CHECKSUM] = self._get_checksum
        self._fired: set[tuple[BlockFault, int]] = set()
        self._mode = Mode.OFF
        self._exchange: _Exchange | None = None
        self._need = 0
        self._buf = bytearray()
        self._at_command = False
        self._console = LineConsole()
        self._app: AppDescriptor | None = None

    # --- public interface --------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """What the device is doing now."""
        return self._mode

    @property
    def at_command_boundary(self) -> bool:
        """Synced and waiting for the first byte of a command."""
        return self._mode is Mode.BOOTLOADER and self._at_command and not self._buf

    @property
    def running_app(self) -> AppDescriptor | None:
        """Descriptor of the application running now (None outside the application)."""
        return self._app if self._mode is Mode.APP else None

    @property
    def commands(self) -> tuple[int, ...]:
        """The command codes Get lists, in order."""
        return tuple(int(c) for c in self._commands)

    def power_on(self) -> list[Output]:
        """Power-on reset: SRAM cleared, block count restarted, then boot as the pin says."""
        return self._entry(lambda: self._power_cycle(force_bootloader=False))

    def hold_reset(self) -> list[Output]:
        """NRST held low (or power gone): the core stops and hears nothing."""
        return self._entry(lambda: self._set_mode(Mode.OFF))

    def release_reset(self, boot: bool, *, cold: bool = False) -> list[Output]:
        """NRST released with BOOT0 at ``boot``: the bootloader when it (or the strap)
        selects it or no application is valid, else the application; ``cold`` after
        power came back (SRAM cleared)."""

        def start() -> None:
            if cold:
                self._power_cycle(force_bootloader=boot)
            elif boot:
                self._set_mode(Mode.WAIT_SYNC)
            else:
                self._reset()

        return self._entry(start)

    def feed(self, data: bytes) -> list[Output]:
        """Consume host bytes in order; returns what the device does in response."""
        self._out = []
        i, n = 0, len(data)
        while i < n:
            mode = self._mode
            if mode is Mode.WAIT_SYNC:
                # Auto-baud: everything before the first 0x7F is noise.
                j = data.find(SYNC, i)
                if j < 0:
                    break
                self._index, i = j, j + 1
                self._send(ACK)
                self._start_session()
            elif mode is Mode.BOOTLOADER:
                take = min(self._need - len(self._buf), n - i)
                self._buf += data[i : i + take]
                i += take
                if len(self._buf) == self._need:
                    self._index = i - 1
                    chunk = bytes(self._buf)
                    self._buf.clear()
                    self._advance(chunk)
            elif mode is Mode.APP:
                self._index = i
                self._console_byte(data[i])
                i += 1
            else:  # off, deaf or gone: the byte is lost
                break
        out, self._out = self._out, []
        return out

    def application(self) -> AppDescriptor | None:
        """The application in flash if it would boot: descriptor fits in flash, CRC right."""
        head = self.flash.data[: DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE]
        try:
            length = parse_descriptor(head).length
            if length > self.flash.size:
                return None
            return check_payload(self.flash.data[:length])
        except ImageError:
            return None

    @property
    def eui64(self) -> str:
        """EUI-64 as stored in the identity area."""
        return format_eui64(bytes(self.otp[4:12]))

    @property
    def hw_version(self) -> int:
        """Hardware version as stored in the identity area."""
        return int.from_bytes(self.otp[12:14], "little")

    # --- plumbing ----------------------------------------------------------------------------

    def _send(self, data: bytes | int, busy_s: float = 0.0) -> None:
        """Queue output produced by the current input byte, after ``busy_s`` of work."""
        payload = bytes([data]) if isinstance(data, int) else data
        last = self._out[-1] if self._out else None
        if busy_s == 0.0 and isinstance(last, Emit) and last.after_index == self._index:
            # Back-to-back bytes of one response: one write for the adapter.
            self._out[-1] = Emit(last.after_index, last.busy_s, last.data + payload)
        else:
            self._out.append(Emit(self._index, busy_s, payload))

    def _stop_exchange(self) -> None:
        # Only drop the reference: this may run inside the exchange itself (a command that
        # resets the device), where closing it would fail; the session loop then ends.
        self._exchange = None
        self._buf.clear()
        self._at_command = False

    def _set_mode(self, mode: Mode) -> None:
        self._stop_exchange()
        self._pending = None
        self._console.clear()
        self._app = None
        self._mode = mode

    def _start_session(self) -> None:
        self._set_mode(Mode.BOOTLOADER)
        self._exchange = self._session()
        self._need = next(self._exchange)

    def _advance(self, chunk: bytes) -> None:
        exchange = self._exchange
        assert exchange is not None
        try:
            self._need = exchange.send(chunk)
        except StopIteration:
            # The session ended (reset, fault, jump); the mode says what comes next.
            if self._exchange is exchange:
                self._exchange = None

    # --- resets and the application ----------------------------------------------------------

    def _power_cycle(self, *, force_bootloader: bool) -> None:
        self.sram[:] = bytes(SRAM_SIZE)
        self.write_blocks = 0
        if force_bootloader:
            self._set_mode(Mode.WAIT_SYNC)
        else:
            self._reset()

    def _reset(self) -> None:
        """System reset: with the boot pin strapped, or no valid application, the bootloader."""
        app = None if self.boot_pin_strapped else self.application()
        if app is None:
            self._set_mode(Mode.WAIT_SYNC)
        else:
            self._start_app(app)

    def _start_app(self, app: AppDescriptor) -> None:
        self._set_mode(Mode.STARTING)

        def started() -> None:
            self._set_mode(Mode.APP)
            self._app = app
            self._send(banner(app.firmware_version))

        self._wait(APP_START_S, started)

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
            self._set_mode(Mode.WAIT_SYNC)

    # --- bootloader session ------------------------------------------------------------------

    def _session(self) -> _Exchange:
        """The synced bootloader: commands until a reset, jump or fault ends the session."""
        while self._mode is Mode.BOOTLOADER:
            self._at_command = True
            frame = yield 2
            self._at_command = False
            code, check = frame[0], frame[1]
            handler = self._handlers.get(code)
            if (
                code ^ check != 0xFF
                or handler is None
                or (self.readout_protected and code not in _RDP_ALLOWED)
            ):
                self._send(NACK)
                continue
            self._send(ACK)
            exchange = handler()
            if exchange is not None:
                yield from exchange

    def _address(self) -> Generator[int, bytes, int | None]:
        """Four address bytes MSB first plus their XOR; NACKs and returns None if bad."""
        raw = yield 5
        if xor8(raw[:4]) != raw[4]:
            self._send(NACK)
            return None
        return int.from_bytes(raw[:4], "big")

    def _region(self, address: int) -> _Region | None:
        for region in self._regions:
            if region.holds(address, 1):
                return region
        return None

    def _read_region(self, region: _Region, address: int, length: int) -> bytes:
        """What a read sees, marginal cells of :attr:`flaky_pages` included."""
        offset = address - region.base
        data = bytes(region.data[offset : offset + length])
        if region.name != "flash" or not self.flaky_pages:
            return data
        for page in self.flash.pages_of(address, length):
            if page not in self.flaky_pages:
                continue
            self.flaky_pages[page] += 1
            if self.flaky_pages[page] > 1:
                at = max(page * self.flash.page_size, offset) - offset
                data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
        return data

    def _get(self) -> None:
        codes = self.commands
        self._send(bytes([len(codes), BOOTLOADER_VERSION, *codes, ACK]))

    def _get_version(self) -> None:
        # USART returns the version and two option bytes kept at 0 for compatibility.
        self._send(bytes([BOOTLOADER_VERSION, 0x00, 0x00, ACK]))

    def _get_id(self) -> None:
        self._send(bytes([0x01, *self.product_id.to_bytes(2, "big"), ACK]))

    def _read_memory(self) -> _Exchange:
        address = yield from self._address()
        if address is None:
            return
        region = self._region(address)
        if region is None:
            self._send(NACK)
            return
        self._send(ACK)
        frame = yield 2
        count = frame[0] + 1
        if frame[0] ^ frame[1] != 0xFF or not region.holds(address, count):
            self._send(NACK)
            return
        self._send(bytes([ACK]) + self._read_region(region, address, count))

    def _go(self) -> _Exchange:
        address = yield from self._address()
        if address is None:
            return
        region = self._region(address)
        if region is None or region.write_from is None:
            self._send(NACK)  # only flash and SRAM hold code
            return
        self._send(ACK)
        if address != FLASH_BASE:
            # e.g. stm32flash -R: a stub in RAM that writes AIRCR; seen as a reset request.
            self._reset()
            return
        app = self.application()
        if app is not None:
            self._start_app(app)
            return
        # Garbage vector table: the core faults and the watchdog brings up the bootloader.
        self._set_mode(Mode.FAULTED)
        self._wait(WATCHDOG_S, lambda: self._set_mode(Mode.WAIT_SYNC))

    def _write_memory(self) -> _Exchange:
        address = yield from self._address()
        if address is None:
            return
        region = self._region(address)
        if (
            region is None
            or region.write_from is None
            or address < region.write_from
            or address % 4
        ):
            self._send(NACK)
            return
        block: int | None = None
        if region.name == "flash":
            block = self.write_blocks
            self.write_blocks += 1
        self._send(ACK)
        head = yield 1
        count = head[0] + 1
        body = yield count + 1
        data, check = body[:count], body[count]
        fault = self._block_fault(block)
        if fault is not None and self._fault_before_checks(fault):
            return
        valid = (
            xor8(data, head[0]) == check
            and count % 4 == 0
            and region.holds(address, count)
            and (region.name != "flash" or self._flash_writable(address, count))
        )
        if not valid:
            self._send(NACK)
            return
        if region.name != "flash":
            offset = address - region.base
            region.data[offset : offset + count] = data
            self._send(ACK)
            return
        if fault is not None and fault.kind is BlockFaultKind.POWERLOSS:
            # Power fails mid-block: the first half of the words made it.
            half = (count // 4) // 2 * 4
            self.flash.program(address, data[:half])
            self._send(b"", program_time_s(half))
            self._power_cycle(force_bootloader=True)
            return
        self.flash.program(address, data)
        if fault is not None and fault.kind is BlockFaultKind.LOSTACK:
            self._send(b"", program_time_s(count))  # programmed; the ACK is lost on the wire
            return
        self._send(ACK, program_time_s(count))

    def _block_fault(self, block: int | None) -> BlockFault | None:
        return None if block is None else self.faults.fire_once(block, self._fired)

    def _fault_before_checks(self, fault: BlockFault) -> bool:
        """Apply faults that ignore the block's content; True if one was applied."""
        if fault.kind is BlockFaultKind.NACK:
            self._send(NACK)
        elif fault.kind is BlockFaultKind.STALL:
            self._set_mode(Mode.STALLED)
            # Afterwards the bootloader waits for a command, still synced; the block is lost.
            self._wait(fault.seconds, self._start_session, fault=True)
        elif fault.kind is BlockFaultKind.VANISH:
            self._set_mode(Mode.GONE)
            self._out.append(Vanish(self._index))
        else:
            return False
        return True

    def _flash_writable(self, address: int, count: int) -> bool:
        if any(p in self.write_protected for p in self.flash.pages_of(address, count)):
            return False
        return self.flash.can_program(address, count)

    def _erase_pages(self, pages: list[int]) -> None:
        if any(p >= self.flash.pages or p in self.write_protected for p in pages):
            self._send(NACK)  # checked first: a refused erase changes nothing
            return
        for page in pages:
            self.flash.erase_page(page)
            self.flaky_pages.pop(page, None)
        self._send(ACK, len(pages) * PAGE_ERASE_S)

    def _mass_erase(self) -> None:
        if self.write_protected:
            self._send(NACK)  # the L4 refuses a mass erase while any page is protected
            return
        self.flash.mass_erase()
        self.flaky_pages.clear()
        self._send(ACK, MASS_ERASE_S)

    def _erase(self) -> _Exchange:
        first = (yield 1)[0]
        if first == 0xFF:  # global erase: FF 00
            if (yield 1)[0] != 0x00:
                self._send(NACK)
                return
            self._mass_erase()
            return
        body = yield first + 2
        if xor8(body[:-1], first) != body[-1]:
            self._send(NACK)
            return
        self._erase_pages(list(body[:-1]))

    def _ext_erase(self) -> _Exchange:
        head = yield 2
        count = int.from_bytes(head, "big")
        if count >= 0xFFF0:  # special erase: only its checksum follows
            check = (yield 1)[0]
            if check != head[0] ^ head[1]:
                self._send(NACK)
            elif count in (0xFFFF, 0xFFFE):  # mass, or bank 1 (the only bank of a 512 KiB L45x)
                self._mass_erase()
            else:  # bank 2 (absent) and reserved codes
                self._send(NACK)
            return
        body = yield 2 * (count + 1) + 1
        if xor8(body[:-1], head[0] ^ head[1]) != body[-1]:
            self._send(NACK)
            return
        pages = [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body) - 1, 2)]
        self._erase_pages(pages)

    def _write_protect(self) -> _Exchange:
        first = (yield 1)[0]
        body = yield first + 2
        sectors = list(body[:-1])
        if xor8(body[:-1], first) != body[-1] or any(s >= self.flash.pages for s in sectors):
            self._send(NACK)
            return
        self.write_protected.update(sectors)
        self._send(ACK, OPTION_UPDATE_S)
        self._reset()

    def _write_unprotect(self) -> None:
        self.write_protected.clear()
        self._send(ACK, OPTION_UPDATE_S)
        self._reset()

    def _readout_protect(self) -> None:
        self.readout_protected = True
        self._send(ACK, OPTION_UPDATE_S)
        self._reset()

    def _readout_unprotect(self) -> None:
        # Regression to level 0 always mass-erases, whatever the write protection.
        self.flash.mass_erase()
        self.readout_protected = False
        self._send(ACK, MASS_ERASE_S + OPTION_UPDATE_S)
        self._reset()

    def _get_checksum(self) -> _Exchange:
        address = yield from self._address()
        if address is None:
            return
        region = self._region(address)
        if region is None or address % 4:
            self._send(NACK)
            return
        self._send(ACK)
        raw = yield 5
        length = int.from_bytes(raw[:4], "big")
        if (
            xor8(raw[:4]) != raw[4]
            or length == 0
            or length % 4
            or not region.holds(address, length)
        ):
            self._send(NACK)
            return
        self._send(ACK)  # length accepted; the second ACK comes with the result
        crc = stm32_crc(self._read_region(region, address, length))
        value = crc.to_bytes(4, "big")
        self._send(bytes([ACK, *value, xor8(value)]), (length // 4) * CRC_WORD_S)


# --- as the simulator serves it ------------------------------------------------------------


def build_hub(spec: HubSpec) -> An3155Hub:
    """The hub a spec describes, powered off, its flash factory-programmed as it says."""
    device = An3155Hub(
        eui64=spec.eui64,
        hw_version=spec.hw_version,
        boot_pin_strapped=spec.start_in == "bootloader",
        erase_command=spec.erase_command,
        faults=spec.plan(),
        product_id=spec.product_id,
        checksum=spec.checksum,
    )
    if spec.firmware is not None:
        # Factory programming, not through the bootloader.
        device.flash.program(FLASH_BASE, demo_payload(spec.firmware, size=spec.firmware_size))
    return device


#: The simulated AN3155 hubs (``station sim --protocol an3155``, ``sim://an3155``): 8E1.
MODEL = SimModel(
    name="an3155",
    profile="demo-an3155",
    bits_per_byte=11,
    app_base=FLASH_BASE,
    largest_firmware=FLASH_SIZE,
    build=build_hub,
    fault_kinds=SERIAL_FAULTS,
    default=True,
)

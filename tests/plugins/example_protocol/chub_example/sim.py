"""The simulated EXLINE hub, built on the simulator core (imports no station)."""

from __future__ import annotations

import enum
import zlib

from chub_example.protocol import BLOCK, READY
from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.descriptor import AppDescriptor, check_payload
from sim.app_console import LineConsole, banner
from sim.core.faults import SERIAL_FAULTS, FaultPlan
from sim.core.flash import Flash
from sim.core.spec import HubSpec, SimModel
from sim.core.timed import Emit, Output, TimedModel

FLASH_BASE = 0x0800_0000
FLASH_SIZE = 128 * 1024
PAGE_SIZE = 1024
PAGE_ERASE_S = 5e-3
WORD_PROGRAM_S = 20e-6


class Mode(enum.Enum):
    OFF = "off"
    BOOTLOADER = "bootloader"
    APP = "app"


class ExlineHub(TimedModel[Output]):
    """An EXLINE bootloader and the demo application, pure (no I/O, no clock)."""

    def __init__(
        self, *, eui64: str, hw_version: int, start_in_bootloader: bool, faults: FaultPlan
    ) -> None:
        super().__init__()
        self.flash = Flash(FLASH_BASE, FLASH_SIZE, PAGE_SIZE)
        self.eui64, self.hw_version = eui64, hw_version
        self.start_in_bootloader = start_in_bootloader
        self.faults = faults
        self._mode = Mode.OFF
        self._app: AppDescriptor | None = None
        self._console = LineConsole()

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def running_app(self) -> AppDescriptor | None:
        return self._app if self._mode is Mode.APP else None

    def power_on(self) -> list[Output]:
        return self._entry(lambda: self._reset(boot_app=not self.start_in_bootloader))

    def feed(self, data: bytes) -> list[Output]:
        self._out = []
        for i, byte in enumerate(data):
            self._index = i
            line = self._console.feed(byte)
            if line is not None:
                self._line(line)
        out, self._out = self._out, []
        return out

    def _send(self, data: bytes, busy_s: float = 0.0) -> None:
        self._out.append(Emit(self._index, busy_s, data))

    def _reset(self, *, boot_app: bool) -> None:
        self._console.clear()
        app = self._valid_app()
        if boot_app and app is not None:
            self._mode, self._app = Mode.APP, app
            self._send(banner(app.firmware_version))
        else:
            self._mode, self._app = Mode.BOOTLOADER, None
            self._send(READY + b"\r\n")

    def _valid_app(self) -> AppDescriptor | None:
        try:
            return check_payload(self.flash.read(FLASH_BASE, FLASH_SIZE))
        except ImageError:  # blank or corrupt flash: no application starts
            return None

    def _line(self, line: str) -> None:
        if self._mode is Mode.APP:
            assert self._app is not None
            reply, boot = LineConsole.answer(
                line,
                version=self._app.firmware_version,
                eui64=self.eui64,
                hw_version=self.hw_version,
            )
            self._send(reply)
            if boot:
                self._reset(boot_app=False)
            return
        words = line.split()
        try:
            self._command(words)
        except (ValueError, IndexError):
            self._send(b"ERR bad command\r\n")

    def _command(self, words: list[str]) -> None:
        if words == ["ID"]:
            self._send(f"ID {self.eui64} {self.hw_version}\r\n".encode())
        elif words[0] == "ER" and len(words) == 3:
            first, pages = self.flash.pages_of(int(words[1], 16), 1)[0], int(words[2])
            for page in range(first, first + pages):
                self.flash.erase_page(page)
            self._send(b"OK\r\n", pages * PAGE_ERASE_S)
        elif words[0] == "WR" and len(words) == 3:
            address, data = int(words[1], 16), bytes.fromhex(words[2])
            if len(data) > BLOCK or not self.flash.program(address, data):
                self._send(b"ERR not programmable\r\n")
            else:
                self._send(b"OK\r\n", len(data) // 4 * WORD_PROGRAM_S)
        elif words[0] == "CRC" and len(words) == 3:
            address, length = int(words[1], 16), int(words[2])
            if not self.flash.holds(address, length):
                self._send(b"ERR outside the flash\r\n")
            else:
                crc = zlib.crc32(self.flash.read(address, length))
                self._send(f"CRC {crc:08X}\r\n".encode())
        elif words == ["GO"]:
            self._send(b"OK\r\n")
            self._reset(boot_app=True)
        else:
            self._send(b"ERR unknown command\r\n")


def build_hub(spec: HubSpec) -> ExlineHub:
    hub = ExlineHub(
        eui64=spec.eui64,
        hw_version=spec.hw_version,
        start_in_bootloader=spec.start_in == "bootloader",
        faults=spec.plan(),
    )
    if spec.firmware is not None:
        hub.flash.program(FLASH_BASE, demo_payload(spec.firmware, size=spec.firmware_size))
    return hub


MODEL = SimModel(
    name="exline",
    profile="exline-demo",
    bits_per_byte=10,
    app_base=FLASH_BASE,
    largest_firmware=FLASH_SIZE,
    build=build_hub,
    fault_kinds=SERIAL_FAULTS,
)

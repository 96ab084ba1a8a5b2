"""Slot power: switch a slot's hub on, off or through a cycle, and check that it happened.

A rig slot's ``[slot.power]`` table names the switch (docs/hardware.md, "Slot power")::

    [slot.power]
    usb_hub = "1-1"        # a hub that switches power per port (USB 2.0 ch. 11), at this
    usb_port = 3           #   location, and the slot's port on it
    # or
    command = ["relay", "--ch", "{slot}", "{state}"]   # run without a shell
    off_s = 1.0            # how long a cycle keeps the power off
    settle_s = 0.5         # how long a hub needs after power-on before it is spoken to
    entry = true           # enter the bootloader by a power cycle with the boot pin held
    boot_line = "dtr"      # what holds the boot pin meanwhile: dtr/rts (active while set),
                           #   -dtr/-rts (while clear), or none (the fixture holds it);
                           #   default: the profile's [lines] boot wire, else dtr
    recover = true         # cycle a hub that stopped answering before its retry
    off_when_done = false  # switch the slot off when its job ends, for a safe swap

A command's words may hold only the placeholders ``{slot}``, ``{state}`` (``on`` or
``off``) and ``{station}``; its program is a literal word. It runs without a shell, so a
value can never become another command.

The station does not take a switch's word for it: after "off" a USB hub port must read
back unpowered, and the slot's hub must stop answering (a relay with a welded contact,
or a hub port wired straight to the supply, still powers it). Either failure is a
:class:`PowerError` that names the slot and the switch.
"""

from __future__ import annotations

import string
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import serial

from drivers.errors import (
    DeviceTimeout,
    HubReset,
    LinkTimeout,
    NoSync,
    PortVanished,
    StationError,
)
from drivers.lines import Wire
from station.config import Spec, Table
from station.profiles import Profile

if TYPE_CHECKING:
    from drivers.usb_hub import UsbHubPorts

#: The placeholders a power command may use.
PLACEHOLDERS = ("slot", "state", "station")
#: The line that holds the boot pin during a power-cycle entry: ``dtr`` active while set,
#: ``-dtr`` while clear (stm32flash's notation, as the profiles' ``[lines]``), or ``none``.
BOOT_LINES = ("dtr", "-dtr", "rts", "-rts", "none")
STATES = ("on", "off", "cycle")
POWER_KEYS = {
    "usb_hub": Spec(str, max_len=64, what="a USB location such as 1-1 or 1-1.4"),
    "usb_port": Spec(int, 1, 255),
    "command": Spec(list, items=str, min_len=1, max_len=32),
    "command_timeout_s": Spec(float, 0.1, 600),
    "off_s": Spec(float, 0, 600),
    "settle_s": Spec(float, 0, 600),
    "entry": Spec(bool),
    "boot_line": Spec(str, choices=BOOT_LINES),
    "recover": Spec(bool),
    "off_when_done": Spec(bool),
}
#: Job errors that mean "the hub stopped answering": a power cycle may bring it back.
NO_ANSWER: tuple[type[StationError], ...] = (
    NoSync,
    DeviceTimeout,
    LinkTimeout,
    HubReset,
    PortVanished,
)
_PROBE_S = 0.5


class PowerError(StationError):
    """A slot's power could not be switched, or did not switch."""

    default_hint = "check the slot's power switch and its wiring"


@dataclass(frozen=True)
class PowerSpec:
    """A slot's ``[slot.power]`` table, checked."""

    usb_hub: str | None = None
    usb_port: int | None = None
    command: tuple[str, ...] = ()
    command_timeout_s: float = 10.0
    off_s: float = 1.0
    settle_s: float = 0.5
    entry: bool = False
    #: None: the profile's ``[lines]`` boot wire, else ``dtr``.
    boot_line: str | None = None
    recover: bool = True
    off_when_done: bool = False

    @property
    def switch_text(self) -> str:
        """The switch, for messages."""
        if self.usb_hub is not None:
            return f"port {self.usb_port} of USB hub {self.usb_hub}"
        return f"command {self.command[0]!r}"


def check_command(words: Sequence[str]) -> str | None:
    """Why a command template is refused, or None when it is fine."""
    for i, word in enumerate(words):
        try:
            fields = list(string.Formatter().parse(word))
        except ValueError as exc:
            return f"word {i + 1} ({word!r}): {exc} (write {{{{ and }}}} for braces)"
        for _, name, spec, conversion in fields:
            if name is None:
                continue
            if i == 0:
                return "the program (the first word) must be a literal name, not a placeholder"
            if name not in PLACEHOLDERS or spec or conversion:
                allowed = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                return f"word {i + 1} ({word!r}): placeholders are only {allowed}"
    return None


def render_command(words: Sequence[str], *, slot: int, state: str, station: str) -> list[str]:
    """The command's argument list with the placeholders filled in."""
    values = {"slot": str(slot), "state": state, "station": station}
    return [word.format(**values) for word in words]


def parse_power(table: Table) -> PowerSpec:
    """Check a slot's ``power`` table (naming file, line and key of a problem).

    Raises:
        ConfigError: an unknown key, a bad value, both or neither of a USB hub and a
            command, or a command with a placeholder outside :data:`PLACEHOLDERS`.
    """
    table.check(POWER_KEYS)
    raw = table.data
    has_usb = "usb_hub" in raw or "usb_port" in raw
    if has_usb == ("command" in raw):
        raise table.error(None, "power needs either usb_hub and usb_port, or command")
    if has_usb:
        if "usb_hub" not in raw or "usb_port" not in raw:
            raise table.error(None, "power over a USB hub needs both usb_hub and usb_port")
        from drivers.usb_hub import parse_location

        try:
            parse_location(raw["usb_hub"])
        except ValueError as exc:
            raise table.error("usb_hub", f"'usb_hub': {exc}") from exc
    else:
        problem = check_command(raw["command"])
        if problem is not None:
            raise table.error("command", f"'command': {problem}")
    return PowerSpec(
        usb_hub=raw.get("usb_hub"),
        usb_port=raw.get("usb_port"),
        command=tuple(raw.get("command", ())),
        command_timeout_s=float(raw.get("command_timeout_s", 10.0)),
        off_s=float(raw.get("off_s", 1.0)),
        settle_s=float(raw.get("settle_s", 0.5)),
        entry=raw.get("entry", False),
        boot_line=raw.get("boot_line"),
        recover=raw.get("recover", True),
        off_when_done=raw.get("off_when_done", False),
    )


# -- switches --------------------------------------------------------------------------------


class PowerSwitch(Protocol):
    """One slot's switch."""

    def set(self, on: bool) -> None:
        """Switch; raises :class:`PowerError` when the switch refuses."""
        ...

    def reads(self) -> bool | None:
        """Power as the switch reports it, or None when it cannot say."""
        ...

    def close(self) -> None:
        """Let go of the switch."""
        ...


class CommandSwitch:
    """A relay board's or PDU's own program, run without a shell."""

    def __init__(self, spec: PowerSpec, slot: int, station: str) -> None:
        self.spec, self.slot, self.station = spec, slot, station

    def set(self, on: bool) -> None:
        state = "on" if on else "off"
        args = render_command(self.spec.command, slot=self.slot, state=state, station=self.station)
        try:
            done = subprocess.run(
                args,
                shell=False,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.spec.command_timeout_s,
                check=False,
            )
        except FileNotFoundError as exc:
            raise PowerError(
                f"slot {self.slot}: power command {args[0]!r} not found",
                hint="install the relay tool or give its full path in the rig file",
            ) from exc
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PowerError(f"slot {self.slot}: power command {args[0]!r} {state}: {exc}") from exc
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            said = f": {lines[-1][:200]}" if lines else ""
            raise PowerError(
                f"slot {self.slot}: power command {args[0]!r} {state} failed "
                f"(exit status {done.returncode}){said}"
            )

    def reads(self) -> bool | None:
        return None

    def close(self) -> None:
        return None


class UsbPortSwitch:
    """A port of a hub that switches power per port (:mod:`drivers.usb_hub`)."""

    def __init__(self, spec: PowerSpec, slot: int, backend: object = None) -> None:
        assert spec.usb_hub is not None and spec.usb_port is not None
        self.slot = slot
        self.port = spec.usb_port
        self.location = spec.usb_hub
        self.backend = backend
        self._hub: UsbHubPorts | None = None

    @property
    def hub(self) -> UsbHubPorts:
        """The hub, reached through the USB backend (``STATION_USB_BACKEND``) on first use.

        Raises:
            ConfigError: the backend setting is not understood.
        """
        if self._hub is None:
            from drivers.transport.usb import backend_from_env
            from drivers.usb_hub import UsbHubPorts

            backend = self.backend if self.backend is not None else backend_from_env()
            self._hub = UsbHubPorts(self.location, backend)
        return self._hub

    def set(self, on: bool) -> None:
        from drivers.usb_hub import HubPowerError

        try:
            self.hub.set_power(self.port, on)
        except HubPowerError as exc:
            raise PowerError(f"slot {self.slot}: {exc.message}", hint=exc.hint) from exc

    def reads(self) -> bool | None:
        from drivers.usb_hub import HubPowerError

        try:
            return self.hub.status(self.port).powered
        except HubPowerError as exc:
            raise PowerError(f"slot {self.slot}: {exc.message}", hint=exc.hint) from exc

    def close(self) -> None:
        if self._hub is not None:
            self._hub.close()


def make_switch(spec: PowerSpec, slot: int, station: str, backend: object = None) -> PowerSwitch:
    """The switch a power table names."""
    if spec.usb_hub is not None:
        return UsbPortSwitch(spec, slot, backend)
    return CommandSwitch(spec, slot, station)


# -- is anybody there? -----------------------------------------------------------------------


def hub_answers(port: str | None, profile: Profile | None, backend: object = None) -> bool:
    """Whether a hub answers on ``port`` now: a USB device is on the bus there, or a serial
    hub replies to a harmless poke (its bootloader's sync byte, the application's ``VER?``)
    within half a second."""
    if port is None:
        return False
    if port.startswith("usb:"):
        from drivers.transport.usb import UsbLink, UsbSelector

        link = UsbLink(UsbSelector.parse(port), backend=backend)
        try:
            return bool(link.candidates(any_ids=True))
        except StationError:
            return False
        finally:
            link.close()
    try:
        link = open_port(port, profile)
    except (serial.SerialException, OSError, ValueError):
        return False  # the port is gone with the power (an adapter on the switched supply)
    try:
        return poke(link, profile)
    finally:
        link.close()


def entry_levels(boot_line: str | None, profile: Profile | None) -> dict[str, bool]:
    """DTR/RTS levels that hold the boot pin through a power-cycle entry: the boot wire
    (the rig's ``boot_line``, else the profile's ``[lines]`` boot wire, else ``dtr``) active,
    the profile's reset wire inactive, any other line clear (pyserial would set it)."""
    wiring = profile.lines.wiring if profile is not None and profile.lines else None
    boot = wiring.boot if boot_line is None and wiring is not None else None
    if boot is None:
        boot = Wire.parse(boot_line or "dtr")
    levels = {"dtr": False, "rts": False}
    if wiring is not None and wiring.reset is not None:
        levels[wiring.reset.line] = not wiring.reset.active_when_set
    if boot is not None:
        levels[boot.line] = boot.active_when_set
    return levels


def open_port(
    port: str, profile: Profile | None, *, levels: dict[str, bool] | None = None
) -> serial.Serial:
    """Open a serial port at the profile's settings, DTR/RTS at ``levels`` from the start
    (None: as pyserial opens it).

    Raises:
        serial.SerialException, OSError, ValueError: as pyserial does.
    """
    link = serial.serial_for_url(port, do_not_open=True, timeout=0.05)
    if profile is not None:
        link.baudrate = profile.baud
        link.parity = {"even": serial.PARITY_EVEN, "odd": serial.PARITY_ODD}.get(
            profile.parity, serial.PARITY_NONE
        )
    if levels is not None:
        link.dtr, link.rts = levels["dtr"], levels["rts"]
    link.open()
    return link


def poke(link: serial.Serial, profile: Profile | None) -> bool:
    """Whether the hub on an open port replies to a harmless poke within half a second:
    an AN3155 bootloader's sync byte, then the application console's ``VER?`` (which a
    Gecko bootloader answers with its menu)."""
    data = b"\r\nVER?\r\n"
    if profile is not None and profile.protocol == "an3155":
        data = b"\x7f" + data
    try:
        link.reset_input_buffer()
        link.write(data)
        end = time.monotonic() + _PROBE_S
        while time.monotonic() < end:
            if link.read(1):
                return True
        return False
    except (serial.SerialException, OSError):
        return False


# -- a slot's power --------------------------------------------------------------------------


class SlotPower:
    """A slot's switch with its timings and checks.

    Args:
        slot: the slot number (messages, placeholders).
        spec: the slot's power table.
        switch: the switch (default: the one ``spec`` names).
        answers: whether the slot's hub answers now (None: do not check).
        profile: the hub's profile (its line settings, for the checks).
        sleep: how to wait (tests pass a fake clock's).
    """

    def __init__(
        self,
        slot: int,
        spec: PowerSpec,
        switch: PowerSwitch,
        *,
        answers: Callable[[], bool] | None = None,
        profile: Profile | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.profile = profile
        self.slot = slot
        self.spec = spec
        self.switch = switch
        self.answers = answers
        self.sleep = sleep

    def _readback(self, on: bool) -> None:
        reported = self.switch.reads()
        if reported is not None and reported != on:
            raise PowerError(
                f"slot {self.slot}: {self.spec.switch_text} still reports power "
                f"{'off' if on else 'on'} after switching it {'on' if on else 'off'}"
            )

    def on(self) -> None:
        """Power on, then wait ``settle_s`` for the hub to come up."""
        self.switch.set(True)
        self._readback(True)
        self.sleep(self.spec.settle_s)

    def off(self) -> None:
        """Power off, and make sure the hub went quiet.

        Raises:
            PowerError: the switch refused, reads back powered, or the hub still answers.
        """
        self.switch.set(False)
        self._readback(False)
        self._check_quiet(self.answers)

    def _check_quiet(self, answers: Callable[[], bool] | None) -> None:
        if answers is not None and answers():
            raise PowerError(
                f"slot {self.slot}: the hub still answers with its power off: "
                f"{self.spec.switch_text} does not switch it",
                hint="a welded relay or a hub port wired to the supply: fix the switch "
                "before swapping hubs in this slot",
            )

    def cycle(self, answers: Callable[[], bool] | None = None) -> None:
        """Off (checked, by ``answers`` when given), ``off_s`` without power, on,
        ``settle_s``."""
        self.switch.set(False)
        self._readback(False)
        self._check_quiet(answers or self.answers)
        self.sleep(self.spec.off_s)
        self.on()

    def enter_bootloader(self, port: str) -> None:
        """Power-cycle the hub with its boot pin held (:func:`entry_levels`), so it starts
        in its bootloader; the line is let go once it has settled.

        Raises:
            PowerError: the cycle failed (see :meth:`cycle`), or the port cannot be held.
        """
        if port.startswith("usb:"):
            self.cycle()  # a DFU hub's boot pin is strapped on its board
            return
        levels = entry_levels(self.spec.boot_line, self.profile)
        try:
            link = open_port(port, self.profile, levels=levels)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PowerError(
                f"slot {self.slot}: cannot open {port} to hold the boot pin: {exc}"
            ) from exc
        try:  # "off" is checked through the port held open, which no one else can open
            self.cycle(answers=lambda: poke(link, self.profile))
        finally:
            link.close()

    def close(self) -> None:
        """Let go of the switch."""
        self.switch.close()


def slot_power(
    slot_number: int,
    spec: PowerSpec,
    station: str,
    *,
    port: Callable[[], str | None] | None = None,
    profile: Profile | None = None,
    backend: object = None,
) -> SlotPower:
    """A slot's power, checking "off" by probing ``port()`` (when given) with ``profile``."""
    answers = None if port is None else (lambda: hub_answers(port(), profile, backend))
    switch = make_switch(spec, slot_number, station, backend)
    return SlotPower(slot_number, spec, switch, answers=answers, profile=profile)


__all__ = [
    "NO_ANSWER",
    "PowerError",
    "PowerSpec",
    "SlotPower",
    "check_command",
    "hub_answers",
    "parse_power",
    "render_command",
    "slot_power",
]

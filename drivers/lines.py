"""Modem-line sequences: DTR/RTS levels and waits that reset a hub into its bootloader.

A bench fixture wires the USB-serial adapter's DTR and RTS to the MCU's reset pin and its
boot pin (BOOT0 on an STM32, the Gecko bootloader's activation pin). A *sequence* says
which levels to drive and how long to wait; a *wiring* says which line drives which pin,
and whether the pin is active while the line is set (asserted) or clear.

Two notations are read, so a sequence proven with either tool can be pasted as it is:

- esptool's ``custom_reset_sequence`` (the canonical form, as :func:`format_sequence`
  writes it): steps separated by ``|``; ``D1``/``D0`` set/clear DTR, ``R1``/``R0`` set/clear
  RTS, ``U1,0`` sets DTR and RTS together (DTR first in the pair), ``W0.1`` waits 0.1 s.
  Example: ``D0|R1|W0.1|D1|R0|W0.05|D0``.
- stm32flash's ``-i`` GPIO sequence (one half of ``entry:exit``): ``dtr``/``rts`` set a line,
  ``-dtr``/``-rts`` clear it; ``,`` waits 100 ms after a step, ``&`` goes straight on; an
  empty step (``,,``) waits another 100 ms. Example: ``-dtr&rts,dtr``. GPIO numbers and
  ``brk`` are refused (a USB-serial adapter's modem lines are what the station drives).

"Set" is pyserial's ``dtr = True``: the line is asserted, which on a TTL-level adapter
(FTDI, CP210x, CH340) drives the pin *low*. A wiring is written the stm32flash way, per
pin: ``reset = "rts"`` (reset held while RTS is set: a straight wire to an active-low pin)
or ``reset = "-dtr"`` (held while DTR is clear, an inverting transistor between).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

LINES = ("dtr", "rts")
#: stm32flash's delay for each ``,`` in a GPIO sequence.
STM32FLASH_STEP_S = 0.1
#: The longest single wait a sequence may hold (longer is a typo, not a fixture).
MAX_WAIT_S = 10.0
_ESPTOOL_STEP = re.compile(r"^(?:([DR])([01])|U([01]),([01])|W(\d+(?:\.\d*)?|\.\d+))$")


@dataclass(frozen=True)
class SetLines:
    """Drive DTR and/or RTS (None: leave that line as it is)."""

    dtr: bool | None = None
    rts: bool | None = None


@dataclass(frozen=True)
class Wait:
    """Wait ``seconds`` before the next step."""

    seconds: float


Step = SetLines | Wait


def parse_sequence(text: str) -> tuple[Step, ...]:
    """The steps of a sequence in either notation (see the module docstring).

    Raises:
        ValueError: one line saying what is wrong and where.
    """
    text = text.strip()
    if not text:
        raise ValueError("the sequence is empty")
    if ":" in text:
        raise ValueError(
            f"{text!r} holds stm32flash's 'entry:exit' pair: give the part before ':' as the "
            "entry sequence and the part after it as the exit sequence"
        )
    if "|" in text or _ESPTOOL_STEP.match(text):
        return _parse_esptool(text)
    return _parse_stm32flash(text)


def _parse_esptool(text: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    for raw in text.split("|"):
        token = raw.strip()
        match = _ESPTOOL_STEP.match(token)
        if match is None:
            raise ValueError(
                f"step {token!r} of {text!r}: expected D0/D1, R0/R1, U<dtr>,<rts> or "
                "W<seconds> (esptool notation), or stm32flash's -dtr&rts,dtr"
            )
        line, level, u_dtr, u_rts, wait = match.groups()
        if line == "D":
            steps.append(SetLines(dtr=level == "1"))
        elif line == "R":
            steps.append(SetLines(rts=level == "1"))
        elif u_dtr is not None:
            steps.append(SetLines(dtr=u_dtr == "1", rts=u_rts == "1"))
        else:
            steps.append(_wait(float(wait), text))
    return tuple(steps)


def _wait(seconds: float, text: str) -> Wait:
    if not (0 <= seconds <= MAX_WAIT_S and math.isfinite(seconds)):
        raise ValueError(f"{text!r}: a wait of {seconds:g} s is beyond {MAX_WAIT_S:g} s")
    return Wait(seconds)


def _parse_stm32flash(text: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    for token, delim in re.findall(r"([^,&]*)([,&]|$)", text)[:-1] or [(text, "")]:
        name = token.strip().lower()
        if name:
            level = not name.startswith("-")
            line = name.lstrip("-")
            if line not in LINES:
                what = "a serial break" if line == "brk" else "a GPIO number"
                if not (line == "brk" or line.isdigit()):
                    raise ValueError(
                        f"step {token!r} of {text!r}: expected dtr, -dtr, rts or -rts "
                        "(stm32flash notation), or esptool's D0|R1|W0.1|..."
                    )
                raise ValueError(
                    f"step {token!r} of {text!r} is {what}: only the adapter's DTR and RTS "
                    "lines are driven"
                )
            steps.append(SetLines(**{line: level}))
        elif delim != ",":
            raise ValueError(f"{text!r}: an empty step before {delim or 'the end'!r}")
        if delim == ",":
            steps.append(Wait(STM32FLASH_STEP_S))
    return tuple(steps)


def format_sequence(steps: Sequence[Step]) -> str:
    """The canonical (esptool) text of ``steps``; :func:`parse_sequence` reads it back."""
    parts: list[str] = []
    for step in steps:
        if isinstance(step, Wait):
            parts.append(f"W{step.seconds:g}")
        elif step.dtr is not None and step.rts is not None:
            parts.append(f"U{int(step.dtr)},{int(step.rts)}")
        elif step.dtr is not None:
            parts.append(f"D{int(step.dtr)}")
        elif step.rts is not None:
            parts.append(f"R{int(step.rts)}")
    return "|".join(parts)


@dataclass(frozen=True)
class Wire:
    """One pin's wire: the line that drives it, and whether the pin is active (reset
    held, bootloader selected) while that line is set (``rts``) or clear (``-rts``)."""

    line: str
    active_when_set: bool = True

    @classmethod
    def parse(cls, text: str) -> Wire | None:
        """``dtr``, ``-dtr``, ``rts``, ``-rts``, or ``none`` (not wired: None).

        Raises:
            ValueError: anything else.
        """
        name = text.strip().lower()
        if name == "none":
            return None
        line = name.removeprefix("-")
        if line not in LINES:
            raise ValueError(f"{text!r}: expected dtr, -dtr, rts, -rts or none")
        return cls(line, not name.startswith("-"))

    @property
    def text(self) -> str:
        """As :meth:`parse` reads it."""
        return ("" if self.active_when_set else "-") + self.line

    @property
    def name(self) -> str:
        """The line's name as people write it (``RTS``)."""
        return self.line.upper()

    def active(self, dtr: bool, rts: bool) -> bool:
        """Whether the pin is active with the lines at these levels."""
        return (dtr if self.line == "dtr" else rts) == self.active_when_set

    def drive(self, active: bool) -> SetLines:
        """The step that makes the pin active or inactive."""
        return SetLines(**{self.line: active == self.active_when_set})


@dataclass(frozen=True)
class Wiring:
    """Which line drives the reset pin and which the boot pin (None: not wired)."""

    reset: Wire | None
    boot: Wire | None = None

    def __post_init__(self) -> None:
        if self.reset is not None and self.boot is not None and self.reset.line == self.boot.line:
            raise ValueError(f"reset and boot cannot both be on {self.reset.name}")

    @classmethod
    def parse(cls, text: str) -> Wiring:
        """``reset=rts,boot=dtr`` (either may be left out or ``none``).

        Raises:
            ValueError: an unknown pin or line, or both pins on one line.
        """
        pins: dict[str, Wire | None] = {"reset": None, "boot": None}
        for item in filter(None, (p.strip() for p in text.split(","))):
            pin, _, line = item.partition("=")
            if pin.strip() not in pins:
                raise ValueError(f"{item!r}: expected reset=LINE or boot=LINE")
            pins[pin.strip()] = Wire.parse(line)
        return cls(pins["reset"], pins["boot"])

    @property
    def text(self) -> str:
        """As :meth:`parse` reads it."""
        return ",".join(
            f"{pin}={wire.text if wire else 'none'}"
            for pin, wire in (("reset", self.reset), ("boot", self.boot))
        )

    def default_entry(self) -> tuple[Step, ...]:
        """Boot pin active, reset held 100 ms, reset released, boot held 50 ms more (the
        bootloader samples it as it starts), boot released."""
        if self.reset is None:
            raise ValueError("no line drives the reset pin")
        if self.boot is None:
            return (self.reset.drive(True), Wait(0.1), self.reset.drive(False), Wait(0.05))
        return (
            self.boot.drive(True),
            self.reset.drive(True),
            Wait(0.1),
            self.reset.drive(False),
            Wait(0.05),
            self.boot.drive(False),
        )

    def default_exit(self) -> tuple[Step, ...]:
        """Boot pin inactive, reset held 100 ms, then released: the application starts."""
        if self.reset is None:
            raise ValueError("no line drives the reset pin")
        steps: list[Step] = [] if self.boot is None else [self.boot.drive(False)]
        return (*steps, self.reset.drive(True), Wait(0.1), self.reset.drive(False))

    def releases(self, steps: Sequence[Step]) -> list[bool]:
        """The boot pin's state at each release of reset in ``steps`` (True: bootloader
        selected), starting from both lines clear (what a closed port leaves, HUPCL)."""
        dtr = rts = False
        held = self.reset is not None and self.reset.active(dtr, rts)
        seen: list[bool] = []
        for step in steps:
            if isinstance(step, Wait):
                continue
            dtr = dtr if step.dtr is None else step.dtr
            rts = rts if step.rts is None else step.rts
            now_held = self.reset is not None and self.reset.active(dtr, rts)
            if held and not now_held:
                seen.append(self.boot is not None and self.boot.active(dtr, rts))
            held = now_held
        return seen

    def check(self, steps: Sequence[Step], *, to_bootloader: bool) -> None:
        """Refuse a sequence that cannot do its job with this wiring: it never releases
        reset, leaves it held, or releases it with the boot pin selecting the wrong side.

        Raises:
            ValueError: saying which line does what.
        """
        if self.reset is None:
            raise ValueError("no line drives the reset pin (reset = 'none')")
        reset = self.reset.name
        releases = self.releases(steps)
        held = _final_reset_held(self, steps)
        if held:
            raise ValueError(
                f"it leaves the hub held in reset ({reset} ends {self._level(held=True)})"
            )
        if not releases:
            raise ValueError(
                f"it never holds and releases reset: {reset} must go {self._level(held=True)} "
                f"and back"
            )
        if self.boot is None:
            return
        boot = self.boot.name
        if releases[-1] != to_bootloader:
            side = "application" if to_bootloader else "bootloader"
            raise ValueError(
                f"its last release of reset ({reset}) comes with the boot pin ({boot}) "
                f"selecting the {side}"
            )

    def _level(self, *, held: bool) -> str:
        """The level of the reset line that holds (or releases) reset."""
        assert self.reset is not None
        return "set" if held == self.reset.active_when_set else "clear"


def _final_reset_held(wiring: Wiring, steps: Sequence[Step]) -> bool:
    dtr = rts = False
    for step in steps:
        if isinstance(step, SetLines):
            dtr = dtr if step.dtr is None else step.dtr
            rts = rts if step.rts is None else step.rts
    return wiring.reset is not None and wiring.reset.active(dtr, rts)


class LineDriver(Protocol):
    """What a sequence drives: :meth:`drivers.transport.serial.SerialLink.set_lines`."""

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> None:
        """Drive the modem-control lines."""


def run_sequence(
    link: LineDriver, steps: Sequence[Step], sleep: Callable[[float], None] = time.sleep
) -> None:
    """Drive ``steps`` on ``link``: each level change, then each wait, in order.

    Raises:
        drivers.errors.NoModemLines: the port has no modem lines (or its exporter did not
            confirm a change).
    """
    for step in steps:
        if isinstance(step, Wait):
            sleep(step.seconds)
        else:
            link.set_lines(dtr=step.dtr, rts=step.rts)


@dataclass(frozen=True)
class LinePlan:
    """A hub model's modem-line fixture: its wiring, the sequences that enter the
    bootloader and start the application, and how many times entry is tried."""

    wiring: Wiring
    entry: tuple[Step, ...]
    exit: tuple[Step, ...]
    attempts: int = 2

    def describe(self) -> str:
        """``reset on RTS, boot on DTR`` (for messages)."""
        reset, boot = self.wiring.reset, self.wiring.boot
        parts = [f"reset on {reset.name if reset else 'no line'}"]
        if boot is not None:
            parts.append(f"boot pin on {boot.name}")
        return ", ".join(parts)

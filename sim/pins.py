"""A simulated hub's pins: power, the reset pin and the boot pin, driven by DTR/RTS.

A bench fixture wires the adapter's modem lines to the MCU (``drivers.lines.Wiring``); this
is the hub's side of those wires. :class:`HubPins` keeps the lines' levels, works out the
reset and boot pins from them, and tells the hub model through its :class:`~sim.core.pacing.Pacer`
when reset is held (the core stops and hears nothing) and when it is released (the core
starts, in its bootloader if the boot pin selects it then: the pin is sampled at the
release, as BOOT0 is on an STM32 and the activation pin as the Gecko bootloader starts).

Power is here too, so that a slot's power switch and its modem lines act on one hub the
same way: unpowered, the hub is held as in reset whatever the lines say; power coming back
is a cold start (RAM lost, flash kept) that samples the boot pin like a reset release.
Every ``sim://`` hub has pins (DTR/RTS reach them only when its URL wires them); act on
them from outside the port with :func:`sim.urlhandler.protocol_sim.with_pins`, e.g.
``with_pins(url, lambda pins, now: pins.power(False, now))``.

Faults (``sim://...?pin-faults=``, ``station sim --pin-faults``), comma-separated:

- ``stuck-boot``: the boot pin never leaves its inactive level (a broken wire or
  transistor): every reset starts the application if it is valid.
- ``two-resets``: the first reset release after power-on leaves the core hung (a brown-out
  on a weak supply); the next one starts it normally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from drivers.lines import Wiring
from sim.core.pacing import Pacer
from sim.core.timed import DeviceOutput

PIN_FAULTS = ("stuck-boot", "two-resets")


@dataclass(frozen=True)
class PinFaults:
    """What is wrong with a hub's pins (see the module docstring)."""

    stuck_boot: bool = False
    two_resets: bool = False

    @classmethod
    def parse(cls, text: str) -> PinFaults:
        """``stuck-boot``, ``two-resets``, both comma-separated, or empty.

        Raises:
            ValueError: an unknown fault.
        """
        names = {p.strip() for p in text.split(",") if p.strip()}
        unknown = names - set(PIN_FAULTS)
        if unknown:
            raise ValueError(
                f"unknown pin fault(s) {', '.join(sorted(unknown))}: expected "
                f"{' or '.join(PIN_FAULTS)}"
            )
        return cls("stuck-boot" in names, "two-resets" in names)

    @property
    def text(self) -> str:
        """As :meth:`parse` reads it."""
        return ",".join(
            n for n, on in zip(PIN_FAULTS, (self.stuck_boot, self.two_resets), strict=True) if on
        )


class PinModel(Protocol):
    """What a hub model offers its pins (:class:`sim.an3155.An3155Hub`,
    :class:`sim.gecko.GeckoHub`)."""

    def hold_reset(self) -> Sequence[DeviceOutput]:
        """Reset held (or power gone): the core stops; input is lost."""
        ...

    def release_reset(self, boot: bool, *, cold: bool = False) -> Sequence[DeviceOutput]:
        """Reset released with the boot pin selecting the bootloader (``boot``) or not;
        ``cold``: power has just come (RAM cleared)."""
        ...


class HubPins:
    """The pins of one hub behind one pacer; every change takes effect at ``now`` (the
    caller's clock, as for :meth:`Pacer.receive`).

    Args:
        pacer: the hub's pacer; its device must follow :class:`PinModel`.
        wiring: which line drives which pin.
        faults: what is wrong with them.
    """

    def __init__(self, pacer: Pacer, wiring: Wiring, faults: PinFaults | None = None) -> None:
        self.pacer = pacer
        self.wiring = wiring
        self.faults = faults or PinFaults()
        self.dtr = False
        self.rts = False
        self.powered = True
        #: Reset releases since power came (for ``two-resets``).
        self.releases = 0
        self._held = self._reset_active()

    @property
    def _model(self) -> PinModel:
        device = self.pacer.device
        assert hasattr(device, "release_reset"), "this hub model has no pins"
        return device  # type: ignore[return-value]

    def _reset_active(self) -> bool:
        wire = self.wiring.reset
        return wire is not None and wire.active(self.dtr, self.rts)

    @property
    def boot(self) -> bool:
        """Whether the boot pin selects the bootloader now."""
        wire = self.wiring.boot
        if wire is None or self.faults.stuck_boot:
            return False
        return wire.active(self.dtr, self.rts)

    @property
    def in_reset(self) -> bool:
        """Whether the core is held (reset pin active, or no power)."""
        return self._held or not self.powered

    def set_lines(self, now: float, *, dtr: bool | None = None, rts: bool | None = None) -> None:
        """The adapter drove DTR and/or RTS at ``now``."""
        was = self.in_reset
        self.dtr = self.dtr if dtr is None else dtr
        self.rts = self.rts if rts is None else rts
        self._held = self._reset_active()
        self._settle(was, now, cold=False)

    def power(self, on: bool, now: float) -> None:
        """Power switched on or off at ``now``: off holds the core; on is a cold start
        (unless the reset line still holds it), with the boot pin sampled."""
        was = self.in_reset
        if on and not self.powered:
            self.releases = 0
        self.powered = on
        self._settle(was, now, cold=on)

    def reset(self, now: float) -> None:
        """A reset pulse (a supervisor or a test): held, then released at once."""
        if self.in_reset:
            return
        self.pacer.interrupt(self._model.hold_reset(), now)
        self._release(now, cold=False)

    def _settle(self, was: bool, now: float, *, cold: bool) -> None:
        held = self.in_reset
        if held and not was:
            self.pacer.interrupt(self._model.hold_reset(), now)
        elif was and not held:
            self._release(now, cold=cold)

    def _release(self, now: float, *, cold: bool) -> None:
        self.releases += 1
        if self.faults.two_resets and self.releases == 1:
            return  # the core stays hung, as it was while held
        self.pacer.interrupt(self._model.release_reset(self.boot, cold=cold), now)

"""Reaching a hub's bootloader, and leaving it, by the adapter's modem lines.

A profile with ``[bootloader] entry = "lines"`` (and/or ``exit = "lines"``) names how its
fixture wires DTR/RTS to the hub's reset and boot pins and which sequences to drive
(``[lines]``, :class:`drivers.lines.LinePlan`). A session runs the entry sequence, then
looks for its bootloader with the protocol's own probe; a hub that does not answer gets the
whole sequence again, up to ``attempts`` times (a hub may miss its first reset). When it
never answers, the failure says which line is the likely culprit: a hub whose
*application* answers after the sequence was reset but not steered to its bootloader (the
boot line), one that answers nothing was perhaps never reset at all (the reset line).
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.console import AppConsole
from drivers.errors import NoSync, StationError
from drivers.lines import LinePlan, run_sequence
from drivers.transport.serial import SerialLink
from drivers.types import Phase
from station.profiles import Profile


class LineControl:
    """One hub's modem-line fixture on an open link."""

    def __init__(self, link: SerialLink, plan: LinePlan) -> None:
        self.link = link
        self.plan = plan

    @classmethod
    def of(cls, link: SerialLink, profile: Profile) -> LineControl | None:
        """The fixture of ``profile``, if its profile has one."""
        return None if profile.lines is None else cls(link, profile.lines)

    def enter(self, probe: Callable[[], bool], notes: list[str], phase: Phase) -> None:
        """Reset the hub into its bootloader: the entry sequence, then ``probe`` (True once
        the bootloader answers), all of it again up to ``attempts`` times.

        Raises:
            NoSync: it never answered; the message names the line to check.
            NoModemLines: the port cannot drive DTR/RTS.
        """
        for attempt in range(1, self.plan.attempts + 1):
            run_sequence(self.link, self.plan.entry)
            self.link.reset_input()  # what the hub sent before its reset is stale
            if probe():
                if attempt > 1:
                    notes.append(
                        f"the bootloader answered only after entry sequence {attempt} of "
                        f"{self.plan.attempts} ({self.plan.describe()})"
                    )
                return
        raise self._no_bootloader(phase)

    def exit(self) -> None:
        """Reset the hub with its boot pin released: the application starts."""
        run_sequence(self.link, self.plan.exit)

    def _no_bootloader(self, phase: Phase) -> NoSync:
        """Why the bootloader never answered, as far as the hub's console can tell."""
        wiring, tries = self.plan.wiring, self.plan.attempts
        reset = wiring.reset.name if wiring.reset else "none"
        try:
            running = AppConsole(self.link).version()
        except StationError:  # an answer, but not a version: not the application we know
            running = None
        if running is not None and wiring.boot is not None:
            boot = wiring.boot.name
            return NoSync(
                f"after {tries} entry sequence(s) the hub runs its application "
                f"(0x{running:08X}), not its bootloader: the boot line {boot} does not "
                "select the bootloader",
                port=self.link.url,
                phase=phase,
                hint=f"check the wire from {boot} to the hub's boot pin (stuck, broken, or "
                f"of the other polarity than [lines] boot = '{wiring.boot.text}' says)",
            )
        if running is not None:
            return NoSync(
                f"after {tries} reset(s) on {reset} the hub runs its application: no boot "
                "line is wired ([lines] boot = 'none') and its application does not stay "
                "in the bootloader",
                port=self.link.url,
                phase=phase,
            )
        return NoSync(
            f"after {tries} entry sequence(s) ({self.plan.describe()}) the hub answers "
            "neither its bootloader nor its application console",
            port=self.link.url,
            phase=phase,
            hint=f"check the reset line {reset} and its polarity ([lines] reset = "
            f"'{wiring.reset.text if wiring.reset else 'none'}'), the hub's power and "
            "the profile",
        )

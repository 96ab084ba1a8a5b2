"""Protocol sessions: what one bootloader protocol does in each phase of a re-flash.

``station.flash`` runs the phases, the policy and the record for every hub; a session does
the protocol's part of each phase on one connected hub. A bootloader protocol is a plug-in
(:mod:`station.protocols`, docs/plugins.md) whose session follows :class:`HubSession`; the
built-in ones are the modules here, each ending with its ``PLUGIN``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Protocol

from drivers.types import ProgressFn
from firmware_images.loader import LoadedImage
from station.hubprofile import Profile
from station.outcome import FlashOutcome


@dataclass(frozen=True)
class BootloaderFacts:
    """What a hub's bootloader says about itself, for ``station info`` (read-only, as
    ``stm32flash PORT`` and ``esptool chip_id`` show it). None where it cannot say.

    Attributes:
        bootloader: which bootloader, in words (``STM32 system bootloader (AN3155)``).
        version: its version as its maker writes it (``3.1``, ``2.04.02``, ``1.1a``).
        product_id: the chip or device id it reports (``0x462``; USB: ``0483:df11``).
        flash_start, flash_size, page_size: the main flash.
        flash_from: where the flash figures come from: ``device`` (the hub said so) or
            ``profile`` (the bootloader cannot say; stm32flash too takes them from a table
            of parts by product ID).
        details: further facts in order, as (label, text).
    """

    bootloader: str
    version: str | None
    product_id: str | None
    flash_start: int
    flash_size: int
    page_size: int
    flash_from: str
    details: tuple[tuple[str, str], ...] = ()


class HubSession(Protocol):
    """One hub on one port, spoken to in its bootloader protocol.

    Every method may raise :class:`drivers.errors.StationError` (a failure, with phase) or
    :class:`station.outcome.Refusal` (policy: wrong model for this profile).
    """

    #: Recoveries worth recording (retries, resumes); appended to the job's notes.
    notes: list[str]

    def connect(self, out: FlashOutcome) -> None:
        """Open the port and reach the bootloader; fill ``found_in`` and whatever the
        running application told on the way (``version_before``, ``eui64``...)."""

    def identify(self, out: FlashOutcome) -> None:
        """Check the model; fill ``eui64``, ``hw_version`` and ``version_before``."""

    def erase(self, image: LoadedImage, progress: ProgressFn) -> None:
        """Erase what the image needs (a no-op where the bootloader erases as it writes)."""

    def write(self, image: LoadedImage, progress: ProgressFn, out: FlashOutcome) -> None:
        """Write the image, recovering where the protocol allows (and noting it in out)."""

    def verify(
        self, image: LoadedImage, method: str, progress: ProgressFn, out: FlashOutcome
    ) -> bool:
        """Prove the flash holds the image; fill ``verify_method`` and ``verify_detail``."""

    def boot(self, image: LoadedImage) -> None:
        """Leave the bootloader and start the new application."""

    def confirm(self, timeout_s: float) -> tuple[int | None, str | None]:
        """(running version, EUI-64) as the application reports them; None if silent."""

    def start_application(self) -> None:
        """Leave the bootloader for the application already in flash (a hub that was
        found running it is left running it after a read-only look); confirm follows."""

    def describe(self) -> BootloaderFacts | None:
        """What the bootloader told about itself while connecting and identifying; asks
        the hub nothing more. None: its bootloader never answered (the profile's figures
        would be a guess about a hub that may be another model)."""

    def close(self) -> None:
        """Release the port or device; safe to call at any time."""

    def exchanges(self) -> list[str]:
        """The last bytes exchanged with the hub, oldest first (empty if not kept)."""


def wrong_profile_hint(profile: Profile, port: str, otherwise: str = "") -> str:
    """The hint for a hub that does not answer as ``profile`` says it will: it may be
    another model, and ``station info --profile auto`` (read-only) finds out which.
    ``otherwise`` is the advice for a hub that does not answer at all."""
    hint = (
        f"is {profile.name} the right profile for this hub? station info --port "
        f"{shlex.quote(port)} --profile auto identifies it"
    )
    return f"{hint}; {otherwise}" if otherwise else hint

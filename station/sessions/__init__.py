"""Protocol sessions: what one bootloader protocol does in each phase of a re-flash.

``station.flash`` runs the phases, the policy and the record for every hub; a session does
the protocol's part of each phase on one connected hub. A new bootloader protocol is a new
module here with a class following :class:`HubSession`, named in ``SESSIONS``, and the keys
of its profile section in ``SECTIONS``.
"""

from __future__ import annotations

import importlib
import shlex
from dataclasses import dataclass
from typing import Protocol

from drivers.errors import ConfigError
from drivers.types import ProgressFn
from firmware_images.loader import LoadedImage
from station.config import Spec
from station.outcome import FlashOutcome
from station.profiles import Profile

#: protocol name -> "module:Class" (imported on first use, so a protocol's dependencies,
#: e.g. pyusb for DFU, are only needed when it is used).
SESSIONS = {
    "an3155": "station.sessions.an3155:An3155Session",
    "gecko": "station.sessions.gecko:GeckoSession",
    "dfu": "station.sessions.dfu:DfuSession",
}

_USB_ID = Spec(list, items=int, min_len=2, max_len=2, lo=0, hi=0xFFFF)
_STRING_INDEX = Spec(int, 0, 255)
#: protocol name -> the keys of its own profile section (``[gecko]``, ``[dfu]``), which its
#: session reads from ``profile.options``; ``parse_profile`` refuses other keys there and
#: the section in another protocol's profile. Whether a key is required is the session's
#: to say.
SECTIONS: dict[str, dict[str, Spec]] = {
    "an3155": {},
    "gecko": {
        "upload_attempts": Spec(int, 1, 100),
        "menu_timeout_s": Spec(float, 0.01, 60),
        "start_timeout_s": Spec(float, 0.01, 600),
        "identify_via_application": Spec(bool),
    },
    "dfu": {
        "runtime_id": _USB_ID,
        "dfu_id": _USB_ID,
        "flash_alt": Spec(int, 0, 255),
        "identity_alt": Spec(int, 0, 255),
        "version_from": Spec(str, choices=("string", "bcdDevice")),
        "version_string": _STRING_INDEX,
        "eui64_string": _STRING_INDEX,
        "transfer_size": Spec(int, 0, 0xFFFF),
        "request_timeout_ms": Spec(int, 1, 600_000),
        "reenumerate_timeout_s": Spec(float, 0.1, 600),
        "same_serial": Spec(bool),
    },
}


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


def open_session(port: str, profile: Profile) -> HubSession:
    """A session for ``profile``'s protocol on ``port`` (not yet connected)."""
    target = SESSIONS.get(profile.protocol)
    if target is None:
        raise ConfigError(f"profile {profile.name}: no session for protocol {profile.protocol!r}")
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    session: HubSession = cls(port, profile)
    return session

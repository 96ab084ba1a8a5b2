"""The protocol registry: one plug-in object per bootloader protocol, found through entry points.

Hub makers keep their bootloader protocols private, so a protocol is a package of its own
that registers a :class:`ProtocolPlugin` in the entry-point group ``chub_station.protocols``
(``pyproject.toml``: ``[project.entry-points."chub_station.protocols"]``, ``NAME =
"package.module:PLUGIN"``). The built-in AN3155, Gecko and DFU register the same way, and
no code outside a plug-in names a protocol: the station asks the plug-in of a profile's
``protocol`` for its session, link kind, profile section, image formats and verify
methods; the simulator asks it for its simulated hubs. A session follows
:class:`HubSession`. How to write one: docs/plugins.md.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from types import MappingProxyType
from typing import Protocol

from drivers.errors import ConfigError
from drivers.types import ProgressFn
from firmware_images.formats import ImageFormat
from firmware_images.loader import LoadedImage
from sim.core.spec import GROUP, SimModel
from station.config import Spec
from station.hubprofile import Profile
from station.outcome import FlashOutcome

__all__ = [
    "GROUP",
    "BootloaderFacts",
    "HubSession",
    "Link",
    "ProfileProblem",
    "ProtocolPlugin",
    "open_session",
    "plugin",
    "plugin_problems",
    "plugins",
    "reload",
    "wrong_profile_hint",
]

#: The verify methods a profile or ``--verify`` may name besides ``auto`` (the protocol's
#: best); a plug-in offers some of them.
VERIFY_METHODS = ("crc", "readback")


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


class Link(StrEnum):
    """How the station reaches a protocol's hubs: a serial port (pyserial URL) or USB
    (``usb:<location or serial>``, pyusb)."""

    SERIAL = "serial"
    USB = "usb"

    def takes(self, port: str) -> bool:
        """Whether a port named ``port`` is of this kind."""
        return port.startswith("usb:") == (self is Link.USB)


@dataclass(frozen=True)
class ProfileProblem:
    """What a protocol finds wrong with a profile: the section and key it is about (key
    None: the section as a whole), and why. The profile loader adds file and line."""

    section: str
    key: str | None
    message: str


def _no_problems(profile: Profile) -> Iterable[ProfileProblem]:
    return ()


def _no_usb_ids(profile: Profile) -> Iterable[tuple[int, int, str]]:
    return ()


@dataclass(frozen=True, kw_only=True)
class ProtocolPlugin:
    """Everything the station and the simulator need of one bootloader protocol.

    Attributes:
        name: the protocol's name, as profiles give it (``protocol = "an3155"``); equal to
            its entry point's name.
        description: the protocol in a few words (``station protocols``).
        link: serial or USB hubs.
        session: makes a :class:`HubSession` for a port and profile (not
            yet connected); usually the session class itself.
        driver: the protocol's driver class in ``drivers`` (or the plug-in's own package),
            for tools and documentation; the session is what uses it.
        section: the keys of the protocol's own profile section (``[gecko]``); empty: the
            protocol has none, and a profile may not have one.
        check: what the protocol finds wrong with an otherwise valid profile (a key its
            bootloader needs, say).
        image_formats: the image containers its bootloader takes (``gbl``); None: any
            image the loader can place at an address.
        containers: image containers the plug-in brings to the loader (recognised by
            magic or suffix, parsed by its own code): :mod:`firmware_images.formats`.
        verify_methods: what ``verify`` may say besides ``auto``: ``crc`` (a device-side
            check) and/or ``readback``.
        sim_model: its simulated hubs (``station sim``, ``sim://NAME``); None: none.
        probe_order: where ``--profile auto`` tries it among protocols on the same kind of
            port, lowest first (an STM32 bootloader must hear its sync byte first).
        modem_lines: whether its session can enter and leave the bootloader by DTR/RTS
            (a profile's ``[lines]``); a profile with lines is refused otherwise.
        usb_ids: (vendor, product, label) pairs a profile's USB hubs show, so ``station
            ports`` can say which profile a USB device looks like.
        diff_hint: whether its session plans a write from the release the hub reports
            (:attr:`~firmware_images.loader.LoadedImage.previous`); the catalogue chooser
            reads that release's file only for such a protocol.
    """

    name: str
    description: str
    link: Link
    session: Callable[[str, Profile], HubSession]
    driver: type
    section: Mapping[str, Spec] = field(default_factory=lambda: MappingProxyType({}))
    check: Callable[[Profile], Iterable[ProfileProblem]] = _no_problems
    image_formats: frozenset[str] | None = None
    containers: tuple[ImageFormat, ...] = ()
    verify_methods: tuple[str, ...] = ()
    sim_model: SimModel | None = None
    probe_order: int = 100
    modem_lines: bool = False
    usb_ids: Callable[[Profile], Iterable[tuple[int, int, str]]] = _no_usb_ids
    diff_hint: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.verify_methods) - set(VERIFY_METHODS)
        if unknown:
            raise ValueError(
                f"protocol {self.name}: verify methods are {VERIFY_METHODS}, not {unknown}"
            )
        if self.sim_model is not None and self.sim_model.name != self.name:
            raise ValueError(f"protocol {self.name}: its sim_model is named {self.sim_model.name}")

    @property
    def usb(self) -> bool:
        """Whether its hubs are on USB (no line rate, no parity)."""
        return self.link is Link.USB

    def accepts(self, kind: str) -> bool:
        """Whether its bootloader takes an image in container ``kind`` (``gbl``, ``raw``)."""
        return self.image_formats is None or kind in self.image_formats


@dataclass(frozen=True)
class _Found:
    plugins: Mapping[str, ProtocolPlugin]
    problems: Mapping[str, str]  # protocol name -> why its plug-in is not usable


def _source(entry: metadata.EntryPoint) -> str:
    dist = entry.dist
    return f"{entry.value} (package {dist.name})" if dist is not None else entry.value


_found: _Found | None = None
_finding = threading.Lock()


def _discover() -> _Found:
    """The plug-ins, found once per process: a station's slots all load their profiles at
    the same moment, and each reading the packages' metadata cost 30 ms of CPU a slot."""
    global _found
    with _finding:
        if _found is None:
            _found = _scan()
        return _found


def _scan() -> _Found:
    """Load every plug-in in the group; a broken one is kept as a problem, so that a
    private package that fails to import costs only its own protocol."""
    found: dict[str, ProtocolPlugin] = {}
    problems: dict[str, str] = {}
    for entry in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        where = _source(entry)
        if entry.name in found or entry.name in problems:
            problems[entry.name] = f"protocol {entry.name!r} is registered twice (also {where})"
            found.pop(entry.name, None)
            continue
        try:
            obj = entry.load()
        except Exception as exc:  # whatever a third-party package raises on import
            problems[entry.name] = f"plug-in {where} does not load: {type(exc).__name__}: {exc}"
            continue
        if not isinstance(obj, ProtocolPlugin):
            problems[entry.name] = (
                f"plug-in {where} is a {type(obj).__name__}, not a ProtocolPlugin"
            )
        elif obj.name != entry.name:
            problems[entry.name] = f"plug-in {where} is named {obj.name!r}, not {entry.name!r}"
        else:
            found[entry.name] = obj
    return _Found(MappingProxyType(found), MappingProxyType(problems))


def plugins() -> Mapping[str, ProtocolPlugin]:
    """Every usable protocol plug-in, by name (loaded once per process)."""
    return _discover().plugins


def plugin_problems() -> Mapping[str, str]:
    """Protocols registered but not usable, with the reason (``station protocols``)."""
    return _discover().problems


def plugin(name: str) -> ProtocolPlugin:
    """The plug-in of protocol ``name``.

    Raises:
        ConfigError: no usable plug-in has that name (the reason, when one is broken).
    """
    found = _discover()
    if name in found.plugins:
        return found.plugins[name]
    if name in found.problems:
        raise ConfigError(found.problems[name], hint="reinstall or fix that package")
    raise ConfigError(
        f"no protocol plug-in named {name!r}",
        hint=f"installed: {', '.join(found.plugins) or 'none'}; a protocol is a package "
        f"registered in the entry-point group {GROUP} (docs/plugins.md)",
    )


def reload() -> None:
    """Forget what was found, so plug-ins installed since are seen (tests, long runs)."""
    from firmware_images.formats import plugin_formats
    from sim.core.spec import sim_models

    global _found
    with _finding:
        _found = None
    sim_models.cache_clear()
    plugin_formats.cache_clear()


def open_session(port: str, profile: Profile) -> HubSession:
    """A session for ``profile``'s protocol on ``port`` (not yet connected).

    Raises:
        ConfigError: the profile's protocol has no usable plug-in.
    """
    return plugin(profile.protocol).session(port, profile)

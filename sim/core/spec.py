"""What a simulated hub is: its protocol's model kind, its spec, its identity helpers.

Each protocol plug-in (entry-point group ``chub_station.protocols``, docs/plugins.md) may
carry a :class:`SimModel` as its ``sim_model``: the simulator serves that protocol's hubs
with it, reading only that attribute, so the simulator names no protocol and imports no
station code. A :class:`HubSpec` names its protocol; the protocol's model builds the pure
hub from it. The spec carries that model with it, so a hub process started with
``spawn`` needs no lookup.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata

from firmware_images.descriptor import DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE
from sim.core.faults import FaultPlan, fault_plan
from sim.core.pacing import HubModel

#: The entry-point group protocol plug-ins register in (read by the station too).
GROUP = "chub_station.protocols"


class SimLink(StrEnum):
    """How a simulated hub is reached: a pseudo-terminal, or a simulated USB bus."""

    SERIAL = "serial"
    USB = "usb"


@dataclass(frozen=True, kw_only=True)
class SimModel:
    """One protocol's simulated hubs: what ``station sim``, ``sim://`` and :mod:`sim.pty`
    need to serve them without knowing the protocol.

    Attributes:
        name: the protocol's name (``station sim --protocol NAME``, ``sim://NAME``).
        profile: the built-in hub profile that describes these hubs.
        link: serial (pseudo-terminal, ``sim://``) or USB (a bus of its own).
        bits_per_byte: bit times one byte costs on a serial line (11 for 8E1, 10 for 8N1).
        app_base: where the application starts in flash (the ground truth's hash).
        largest_firmware: the largest factory-programmed application, in bytes.
        build: a serial hub's pure model, powered off, from its spec (serial only); its
            argument is a :class:`sim.core.spec.HubSpec`.
        run_rig: serves a rig of these hubs until stopped (USB: its own bus), given the
            ``station sim`` options; returns the exit status (USB only).
        check: raises ValueError for a spec its hubs cannot be (an option out of its
            range); called when a spec is made.
        fault_kinds: the ``--faults`` kinds its hubs act on (:data:`sim.core.faults.KINDS`).
        default: ``station sim`` serves these hubs when no ``--protocol`` is given (the
            plug-in says so, so no code outside it names a protocol).
    """

    name: str
    profile: str
    link: SimLink = SimLink.SERIAL
    bits_per_byte: int = 10
    app_base: int = 0
    largest_firmware: int = 0
    build: Callable[[HubSpec], HubModel] | None = None
    run_rig: Callable[[argparse.Namespace], int] | None = None
    check: Callable[[HubSpec], None] | None = None
    fault_kinds: frozenset[str] = frozenset()
    default: bool = False

    def __post_init__(self) -> None:
        if (self.build is None) == (self.run_rig is None):
            raise ValueError(f"sim model {self.name}: give build (serial) or run_rig (USB)")


@functools.cache
def sim_models() -> Mapping[str, SimModel]:
    """Every installed protocol's simulated hub model, by protocol name (cached).

    A plug-in that fails to load, or has no simulated hubs, is left out here: the station
    reports why when that protocol is used.
    """
    found: dict[str, SimModel] = {}
    for entry in metadata.entry_points(group=GROUP):
        try:
            plugin = entry.load()
        except Exception:  # a broken private package must not hide the others
            continue
        model = getattr(plugin, "sim_model", None)
        if isinstance(model, SimModel) and model.name == entry.name:
            found.setdefault(entry.name, model)
    return dict(sorted(found.items()))


def sim_model(name: str) -> SimModel:
    """The simulated hub model of protocol ``name``.

    Raises:
        ValueError: no installed plug-in simulates that protocol.
    """
    models = sim_models()
    if name not in models:
        raise ValueError(f"protocol must be one of {tuple(models)}, not {name!r}")
    return models[name]


def default_protocol() -> str | None:
    """The protocol ``station sim`` serves without ``--protocol``: the one installed
    simulator whose plug-in marks it ``default``; None when there is not exactly one."""
    marked = [name for name, model in sim_models().items() if model.default]
    return marked[0] if len(marked) == 1 else None


START_MODES = ("bootloader", "app")
#: What a hub's bootloader reports as its product ID unless the spec says otherwise (for
#: models whose bootloader reports one: an STM32L4's 0x462).
DEFAULT_PRODUCT_ID = 0x462

_EUI64 = re.compile(r"^[0-9A-F]{2}(?:-[0-9A-F]{2}){7}$")


def parse_version(text: str) -> int:
    """A firmware version written ``0x01020304`` or ``1.2.3.4``.

    Raises:
        ValueError: neither form, or out of range.
    """
    text = text.strip()
    parts = text.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        values = [int(p) for p in parts]
        if all(v <= 0xFF for v in values):
            return int.from_bytes(bytes(values), "big")
        raise ValueError(f"version {text!r}: each part of A.B.C.D must be 0..255")
    if text.lower().startswith("0x"):
        try:
            value = int(text, 16)
        except ValueError:
            value = -1
        if 0 <= value <= 0xFFFF_FFFF:
            return value
    raise ValueError(f"version {text!r} is neither 0x01020304 nor 1.2.3.4")


def parse_eui64(text: str) -> bytes:
    """The 8 bytes of an EUI-64 written ``00-DB-12-34-56-78-90-A0``.

    Raises:
        ValueError: not in that form.
    """
    if _EUI64.match(text) is None:
        raise ValueError(f"EUI-64 {text!r} is not of the form 00-DB-12-34-56-78-90-A0")
    return bytes.fromhex(text.replace("-", ""))


def format_eui64(raw: bytes) -> str:
    """``00-DB-12-34-56-78-90-A0`` from 8 bytes."""
    return "-".join(f"{b:02X}" for b in raw)


def derive_eui64(seed: int, slot: int) -> str:
    """A deterministic EUI-64 ``00-DB-12-xx-xx-xx-xx-xx`` for (seed, slot)."""
    tail = hashlib.sha256(f"chub-sim/{seed}/{slot}".encode()).digest()[:5]
    return "-".join(f"{b:02X}" for b in (0x00, 0xDB, 0x12, *tail))


@dataclass(frozen=True)
class HubSpec:
    """Everything one simulated serial hub needs; validated on construction.

    ``firmware`` None means blank flash; otherwise its application area holds the demo
    application of that version (``firmware_size`` bytes). ``start_in="bootloader"``
    straps the boot pin (every reset lands in the bootloader); ``"app"`` leaves it free,
    so the hub boots its application when that is valid. ``protocol`` names the
    protocol whose simulated model serves it (``model``, filled in on construction).
    """

    slot: int
    eui64: str
    hw_version: int = 2
    firmware: int | None = None
    start_in: str = "bootloader"
    baud: int = 115200
    paced: bool = True
    latency_s: float = 0.001
    faults: str = ""
    seed: int = 0
    firmware_size: int = 64 * 1024
    #: 0x44 (Extended Erase, bootloader v3.x) or 0x43 (Erase, older bootloaders).
    erase_command: int = 0x44
    #: The protocol whose simulated model serves the hub (``station sim --protocol``).
    protocol: str = field(kw_only=True)
    #: What the bootloader reports as its product ID: another value makes it another MCU.
    product_id: int = DEFAULT_PRODUCT_ID
    #: Whether the bootloader offers a device-side checksum command (an AN3155 hub's Get
    #: Checksum, 0xA1; older ones do not), for models that have one.
    checksum: bool = True
    #: The decompressors the bootloader is built with, for models that take compressed
    #: images (a Gecko bootloader: ``lz4``, ``lzma``); None: the model's default.
    decompressors: tuple[str, ...] | None = None
    #: The protocol's simulated model (from ``protocol``).
    model: SimModel = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.slot < 1:
            raise ValueError(f"slot {self.slot}: slots are numbered from 1")
        object.__setattr__(self, "eui64", self.eui64.upper())
        parse_eui64(self.eui64)
        if not 0 <= self.hw_version <= 0xFFFF:
            raise ValueError(f"hardware version {self.hw_version} does not fit in 16 bits")
        if not 0 <= self.product_id <= 0xFFFF:
            raise ValueError(f"product ID {self.product_id:#x} does not fit in 16 bits")
        if self.firmware is not None and not 0 <= self.firmware <= 0xFFFF_FFFF:
            raise ValueError(f"firmware version {self.firmware} does not fit in 32 bits")
        if self.start_in not in START_MODES:
            raise ValueError(f"start_in must be one of {START_MODES}, not {self.start_in!r}")
        if self.baud <= 0:
            raise ValueError(f"baud rate must be positive, not {self.baud}")
        if not (self.latency_s >= 0 and math.isfinite(self.latency_s)):
            raise ValueError(
                f"latency must be a non-negative number of seconds, not {self.latency_s}"
            )
        model = sim_model(self.protocol)
        if model.link is not SimLink.SERIAL:
            raise ValueError(f"protocol {self.protocol}: its simulated hubs are not serial")
        object.__setattr__(self, "model", model)
        smallest = DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE
        largest = model.largest_firmware
        if self.firmware_size % 4 or not smallest <= self.firmware_size <= largest:
            raise ValueError(
                f"firmware size {self.firmware_size} must be a multiple of 4 "
                f"from {smallest} to {largest} bytes"
            )
        if model.check is not None:
            model.check(self)  # what this protocol's hubs need of a spec
        self.plan()  # raises ValueError on a bad fault SPEC

    def plan(self) -> FaultPlan:
        """This hub's fault plan."""
        return fault_plan(self.faults, self.slot, self.seed)

    @property
    def profile(self) -> str:
        """The hub profile that describes this hub."""
        return self.model.profile

    @property
    def bits_per_byte(self) -> int:
        """Bit times one byte costs on this hub's line."""
        return self.model.bits_per_byte

    def build_device(self) -> HubModel:
        """The model of this hub, powered off, flash loaded as the spec says."""
        assert self.model.build is not None  # a serial model always has one
        return self.model.build(self)

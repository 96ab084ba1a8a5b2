"""The rig file: a station's slots bound to physical places, and its policy.

::

    station_id = "bench-1"
    storage = "sqlite:///station-data/station.db"   # optional; PostgreSQL by URL
    catalog = "station-data/catalog"                  # optional default for --catalog

    [policy]
    job_retries = 1        # run a failed job again this many times while the hub stays
    slot_fault_after = 3   # this many different hubs failing in a row flags the slot

    [[slot]]
    number = 1
    port = "/dev/ttyUSB0"          # an explicit URL: device path, rfc2217://, socket://
    profile = "demo-an3155"

    [[slot]]
    number = 2
    usb_location = "1-2.3:1.0"     # the USB socket a serial adapter sits in
    profile = "demo-an3155"

    [[slot]]
    number = 3
    usb_serial = "CH0042"          # a USB serial number (serial adapter or DFU hub)
    profile = "demo-dfu"

    [[slot]]
    number = 4
    port = "/dev/ttyUSB1"
    profile = "auto"               # whichever candidate identifies the hub, tried in order
    candidates = ["demo-an3155", "demo-gecko"]   # optional; default: every profile whose
                                                 # transport fits the binding

    [slot.power]                   # optional: the slot's power switch (station.power)
    command = ["relay", "--ch", "{slot}", "{state}"]

A slot names exactly one of ``port``, ``usb_location`` or ``usb_serial``, resolved each time a
job starts, so a hub re-plugged under a new device name still lands in its slot. With
``profile = "auto"`` each hub is identified (read-only) with each candidate in turn and
flashed with the first that recognises it; a hub none recognises fails in ``identify``
with every candidate's answer.

Every key is checked (:func:`parse_rig`): a misspelt key or table, a value of the wrong
type and an absurd value (``job_retries`` 0..10, ``slot_fault_after`` 0..1000, slot numbers
1..1024, a ``station_id`` of 1..64 printable characters, other strings printable and
bounded) are refused, naming the file, the line and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from drivers.errors import ConfigError
from firmware_images.files import read_regular_text
from station.config import Spec, Table
from station.power import PowerSpec, parse_power, slot_power
from station.profiles import load_profile
from station.protocols import plugin

_BINDINGS = ("port", "usb_location", "usb_serial")
#: The profile name that asks for detection (see the module docstring).
AUTO = "auto"


@dataclass(frozen=True)
class Slot:
    """One slot of the rig."""

    number: int
    profile: str
    port: str | None = None
    usb_location: str | None = None
    usb_serial: str | None = None
    #: With ``profile = "auto"``: the profiles to try, in order.
    candidates: tuple[str, ...] = ()
    #: The slot's power switch, when it has one (``[slot.power]``).
    power: PowerSpec | None = None

    @property
    def binding(self) -> str:
        """How the slot is bound, for messages."""
        if self.port:
            return self.port
        if self.usb_location:
            return f"usb location {self.usb_location}"
        return f"usb serial {self.usb_serial}"


@dataclass(frozen=True)
class Rig:
    """A parsed rig file."""

    station_id: str
    slots: tuple[Slot, ...]
    storage: str | None = None
    catalog: str | None = None
    job_retries: int = 1
    slot_fault_after: int = 3
    source: str = ""


#: Sane bounds: a slot number is a physical place on a bench; retries and fault counts are
#: for people to reason about; the station id goes into every record and report.
MAX_SLOTS = 1024
_ID = Spec(str, max_len=64)
_PATH = Spec(str, max_len=1024)
RIG_KEYS = {
    "station_id": Spec(str, max_len=64, required=True),
    "storage": _PATH,
    "catalog": _PATH,
    "policy": Spec(dict),
    "slot": Spec(
        list, items=dict, min_len=0, max_len=MAX_SLOTS, what="an array of tables ([[slot]])"
    ),
}
POLICY_KEYS = {
    "job_retries": Spec(int, 0, 10),
    "slot_fault_after": Spec(int, 0, 1000),
}
SLOT_KEYS = {
    "number": Spec(int, 1, MAX_SLOTS, required=True),
    "profile": Spec(str, required=True, what='a hub profile name, a .toml path or "auto"'),
    "port": _PATH,
    "usb_location": _ID,
    "usb_serial": Spec(str, max_len=126),  # a USB string descriptor holds 126 characters
    "candidates": Spec(list, items=str, max_len=64),
    "power": Spec(dict),
}


def parse_rig(text: str, source: str = "rig") -> Rig:
    """Parse rig TOML; every problem names the file, the line, the key and the reason.

    Unknown keys are refused at every level (a misspelt setting would silently not
    apply), as are values of the wrong type and values out of bounds (:data:`RIG_KEYS`,
    :data:`POLICY_KEYS`, :data:`SLOT_KEYS`).

    Raises:
        ConfigError: invalid TOML, unknown key, wrong type or absurd value, unknown
            profile, duplicate slot, missing or double binding.
    """
    root = Table.parse(text, source)
    root.check(RIG_KEYS)
    policy = root.table("policy")
    policy.check(POLICY_KEYS)
    entries = list(root.tables("slot"))
    for entry in entries:
        entry.check(SLOT_KEYS)
    slots = []
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        raw = entry.data
        number = raw["number"]
        if number in seen:
            first = entries[seen[number]].where("number").removeprefix(entry.source + " ")
            raise entry.error("number", f"slot {number} is already defined at {first}")
        seen[number] = i
        bound = [k for k in _BINDINGS if k in raw]
        if len(bound) != 1:
            raise entry.error(
                None,
                "a slot needs exactly one of port, usb_location, usb_serial "
                f"(found {', '.join(bound) or 'none'})",
            )
        profile = raw["profile"]
        names = raw.get("candidates")
        if names is not None and profile != AUTO:
            raise entry.error(
                "candidates",
                "'candidates' is a non-empty list of profile names, and only for "
                'profile = "auto"',
            )
        bindings = {k: raw[k] for k in bound}
        if profile == AUTO:
            candidates = (
                tuple(names) if names else default_candidates(usb_capable="usb_serial" in bindings)
            )
        else:
            candidates = (profile,)
        for name in candidates:
            try:
                load_profile(name)
            except ConfigError as exc:
                key = "candidates" if names else "profile"
                raise entry.error(key, exc.message, hint=exc.hint) from exc
        power = parse_power(entry.table("power", "[slot.power]")) if "power" in raw else None
        slots.append(
            Slot(
                number,
                profile,
                candidates=candidates if profile == AUTO else (),
                power=power,
                **bindings,
            )
        )
    if not slots:
        raise ConfigError(f"{source}: the rig has no [[slot]] entries")
    return Rig(
        station_id=root.data["station_id"],
        slots=tuple(sorted(slots, key=lambda s: s.number)),
        storage=root.data.get("storage"),
        catalog=root.data.get("catalog"),
        job_retries=policy.data.get("job_retries", 1),
        slot_fault_after=policy.data.get("slot_fault_after", 3),
        source=source,
    )


def default_candidates(*, usb_capable: bool) -> tuple[str, ...]:
    """Every known profile a slot's binding could reach: serial ones for a serial port,
    and USB ones too for a USB serial number (it may name a serial adapter or a USB hub)."""
    from station.profiles import builtin_names, user_profiles

    names = [*builtin_names(), *(n for n in user_profiles() if n not in builtin_names())]
    on_usb = {n: plugin(load_profile(n).protocol).usb for n in names}
    # Never a modem-line profile unasked: its entry resets the hub by a wiring only guessed.
    serial = [n for n in names if not on_usb[n] and not load_profile(n).lines]
    usb = [n for n in names if on_usb[n]] if usb_capable else []
    return (*serial, *usb)


def load_rig(path: str | Path) -> Rig:
    """Read and parse a rig file."""
    p = Path(path)
    text = read_regular_text(p, what="rig file", error=ConfigError)
    return parse_rig(text, str(p))


def resolve(slot: Slot) -> str | None:
    """The port a slot's hub is on right now, or None when no hub is there.

    Explicit paths count as present when they exist (network URLs always do); USB
    locations and serial numbers are looked up among the serial ports the OS lists, and a
    serial number not found among them is taken as a USB (DFU) device, ``usb:<serial>``.
    """
    if slot.port is not None:
        if "://" in slot.port:
            return slot.port
        return slot.port if os.path.exists(slot.port) else None
    from serial.tools import list_ports

    for p in list_ports.comports():
        if slot.usb_location and p.location == slot.usb_location:
            return str(p.device)
        if slot.usb_serial and p.serial_number == slot.usb_serial:
            return str(p.device)
    if slot.usb_serial:
        return f"usb:{slot.usb_serial}"
    return None


def ports_table() -> list[dict[str, str | None]]:
    """Serial ports with their USB locations and serial numbers (for ``station ports``)."""
    from serial.tools import list_ports

    return [
        {
            "device": p.device,
            "location": p.location,
            "serial_number": p.serial_number,
            "vid:pid": f"{p.vid:04x}:{p.pid:04x}" if p.vid is not None else None,
            "description": p.description,
        }
        for p in list_ports.comports()
    ]


def usb_devices() -> tuple[list[dict[str, str | None]], str | None]:
    """USB devices with the hub profile they look like (for ``station ports``).

    Returns the rows and, when the bus cannot be listed (no libusb, no simulated bus
    configured), the reason instead.
    """
    from drivers.errors import StationError
    from drivers.transport.usb import UsbLink, UsbSelector
    from station.profiles import builtin_names, load_profile

    known: dict[tuple[int, int], str] = {}
    for name in builtin_names():
        prof = load_profile(name)
        for vid, pid, label in plugin(prof.protocol).usb_ids(prof):
            known[(vid, pid)] = f"{name} ({label})"
    link = UsbLink(UsbSelector())
    try:
        found = link.candidates()
    except StationError as exc:
        return [], exc.message
    finally:
        link.close()
    return [
        {
            "port": f"usb:{c.location}",
            "vid:pid": f"{c.vid:04x}:{c.pid:04x}",
            "serial_number": c.serial,
            "looks_like": known.get((c.vid, c.pid)),
        }
        for c, _dev in found
    ], None


def switch_slot(slot: Slot, station: str, state: str) -> str:
    """Switch a rig slot ``on``, ``off`` or through a ``cycle`` (checked as
    :class:`SlotPower` does); returns the switch, for messages.

    Raises:
        PowerError: the switch failed, or did not switch the hub.
        ConfigError: the slot has no power table (or no USB backend for its hub port).
    """
    if slot.power is None:
        raise ConfigError(
            f"slot {slot.number} has no [slot.power] table",
            hint="see docs/hardware.md, 'Slot power'",
        )
    name = slot.candidates[0] if slot.profile == AUTO else slot.profile
    power = slot_power(
        slot.number, slot.power, station, port=lambda: resolve(slot), profile=load_profile(name)
    )
    try:
        {"on": power.on, "off": power.off, "cycle": power.cycle}[state]()
    finally:
        power.close()
    return slot.power.switch_text

"""Fault injection for simulated hubs: the one ``--faults SPEC`` grammar and a serial hub's
per-slot plan.

Serial and USB hubs share the grammar (:data:`GRAMMAR`, :func:`split_spec`); each hub
model acts on its own kinds (:data:`SERIAL_FAULTS`, :data:`USB_FAULTS`). A serial hub's
block faults (``nack``, ``lostack``, ``stall``, ``powerloss``, ``vanish``) are applied by the
device model when a Write Memory block to main flash completes; byte faults (``corrupt``,
``drop``) are applied by the link adapter to every byte in both directions. Contract:
``docs/sim-an3155.md`` (Faults).
"""

from __future__ import annotations

import enum
import math
import random
import re
from dataclasses import dataclass

#: The fault kinds a serial hub model acts on (block faults in the model, byte faults on
#: its line).
SERIAL_FAULTS = frozenset({"nack", "lostack", "corrupt", "drop", "stall", "powerloss", "vanish"})
#: The fault kinds a USB hub model acts on (data blocks over the hub's life).
USB_FAULTS = frozenset({"stall", "errwrite", "errverify", "vanish", "reenum", "hang", "dupserial"})
#: Every fault kind of the built-in hubs; a hub model says which it acts on (a plug-in's
#: model may add kinds of its own: its ``SimModel.fault_kinds``, parsed with
#: :func:`split_spec`).
KINDS = SERIAL_FAULTS | USB_FAULTS
GRAMMAR = (
    "SPEC is ITEM[,ITEM...]; ITEM is [S:]KIND=VALUE where S is a slot number (1, 2, ...) and "
    "KIND=VALUE is one of nack=N, nack=NxK, lostack=N, corrupt=RATE, drop=RATE, stall=N, "
    "stall=N:SECONDS, powerloss=N, vanish=N (N: write block counted from 0; K: repeats >= 1; "
    "RATE: probability 0..1; SECONDS: > 0) for serial hubs, or stall=N, errwrite=N, "
    "errverify=N, vanish=N, reenum=N, hang=N (N: data block counted from 0 over the hub's "
    "life), S:dupserial=T (slot S shows slot T's serial number) for USB hubs"
)

_ITEM = re.compile(r"^(?:(?P<slot>\d+):)?(?P<kind>[a-z]+)=(?P<value>\S+)$")
_BLOCK = re.compile(r"^\d+$")
_NACK = re.compile(r"^(?P<block>\d+)(?:x(?P<count>\d+))?$")
_STALL = re.compile(r"^(?P<block>\d+)(?::(?P<seconds>[0-9.eE+-]+))?$")


class BlockFaultKind(enum.Enum):
    """What happens to a write block."""

    NACK = "nack"
    LOSTACK = "lostack"
    STALL = "stall"
    POWERLOSS = "powerloss"
    VANISH = "vanish"


@dataclass(frozen=True)
class BlockFault:
    """A fault at write block ``block`` (``count`` consecutive blocks for ``nack=NxK``)."""

    kind: BlockFaultKind
    block: int
    text: str
    count: int = 1
    seconds: float = math.inf  # stall duration; infinite = the hub never answers again

    def covers(self, block: int) -> bool:
        """Whether this fault applies to write block ``block``."""
        return self.block <= block < self.block + self.count


@dataclass(frozen=True)
class RateFault:
    """A per-byte random fault: ``kind`` is ``"corrupt"`` or ``"drop"``."""

    kind: str
    rate: float
    text: str


@dataclass(frozen=True)
class FaultItem:
    """One parsed SPEC item; ``slot`` is None when it applies to every slot."""

    slot: int | None
    fault: BlockFault | RateFault


@dataclass(frozen=True)
class FaultPlan:
    """The faults of one slot.

    ``blocks`` is in lookup order: items for this slot first, so that they take precedence
    over rig-wide items at the blocks they cover.
    """

    slot: int = 1
    seed: int = 0
    blocks: tuple[BlockFault, ...] = ()
    corrupt_rate: float = 0.0
    drop_rate: float = 0.0

    def at_block(self, block: int) -> BlockFault | None:
        """The fault planned for write block ``block``, if any."""
        for fault in self.blocks:
            if fault.covers(block):
                return fault
        return None

    def fire_once(self, block: int, fired: set[tuple[BlockFault, int]]) -> BlockFault | None:
        """The fault planned for ``block`` unless it already fired there (noted in ``fired``,
        the hub's own record): each planned fault fires once per hub and block."""
        fault = self.at_block(block)
        if fault is None or (fault, block) in fired:
            return None
        fired.add((fault, block))
        return fault

    @property
    def byte_faults(self) -> bool:
        """Whether any random per-byte fault is planned."""
        return self.corrupt_rate > 0.0 or self.drop_rate > 0.0

    def rng(self) -> random.Random:
        """The slot's random source, as the contract fixes it: ``Random(seed*1000+slot)``."""
        return random.Random(self.seed * 1000 + self.slot)


def _bad(item: str, why: str) -> ValueError:
    return ValueError(f"bad fault item {item!r}: {why}. {GRAMMAR}")


def _parse_item(raw: RawItem) -> FaultItem:
    item, slot, kind, value = raw.text, raw.slot, raw.kind, raw.value
    if kind in ("corrupt", "drop"):
        try:
            rate = float(value)
        except ValueError:
            raise _bad(item, f"{kind} needs a probability RATE") from None
        if not 0.0 <= rate <= 1.0:
            raise _bad(item, "RATE must be between 0 and 1")
        return FaultItem(slot, RateFault(kind, rate, item))
    if kind == "nack":
        nack = _NACK.match(value)
        if nack is None:
            raise _bad(item, "nack needs N or NxK")
        count = int(nack["count"]) if nack["count"] is not None else 1
        if count < 1:
            raise _bad(item, "K must be at least 1")
        return FaultItem(
            slot, BlockFault(BlockFaultKind.NACK, int(nack["block"]), item, count=count)
        )
    if kind == "stall":
        stall = _STALL.match(value)
        if stall is None:
            raise _bad(item, "stall needs N or N:SECONDS")
        seconds = math.inf
        if stall["seconds"] is not None:
            try:
                seconds = float(stall["seconds"])
            except ValueError:
                raise _bad(item, "SECONDS must be a number") from None
            if not (seconds > 0.0 and math.isfinite(seconds)):
                raise _bad(item, "SECONDS must be a positive number")
        return FaultItem(
            slot, BlockFault(BlockFaultKind.STALL, int(stall["block"]), item, seconds=seconds)
        )
    if kind in ("lostack", "powerloss", "vanish"):
        if _BLOCK.match(value) is None:
            raise _bad(item, f"{kind} needs a write block number N")
        return FaultItem(slot, BlockFault(BlockFaultKind(kind), int(value), item))
    raise _bad(item, f"unknown fault {kind!r}")


@dataclass(frozen=True)
class RawItem:
    """One item of a SPEC as the grammar splits it, before a hub model reads its value."""

    slot: int | None
    kind: str
    value: str
    text: str


def split_spec(spec: str, kinds: frozenset[str] = KINDS) -> tuple[RawItem, ...]:
    """Split a SPEC into items (empty or blank = no faults), each of a kind in ``kinds``.

    Raises:
        ValueError: naming the bad item and showing the grammar.
    """
    if not spec.strip():
        return ()
    items = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"empty fault item in {spec!r}. {GRAMMAR}")
        match = _ITEM.match(item)
        if match is None:
            raise _bad(item, "not of the form [S:]KIND=VALUE")
        slot = int(match["slot"]) if match["slot"] is not None else None
        if slot is not None and slot < 1:
            raise _bad(item, "slots are numbered from 1")
        if match["kind"] not in kinds:
            other = " (a fault of other hubs)" if match["kind"] in KINDS else ""
            raise _bad(item, f"unknown fault {match['kind']!r}{other}")
        items.append(RawItem(slot, match["kind"], match["value"], item))
    return tuple(items)


def parse_fault_spec(spec: str) -> tuple[FaultItem, ...]:
    """Parse a whole SPEC (empty or blank = no faults).

    Raises:
        ValueError: naming the bad item and showing the grammar.
    """
    return tuple(_parse_item(raw) for raw in split_spec(spec, SERIAL_FAULTS))


def _check_level(items: list[FaultItem]) -> None:
    """Reject two items of the same level (rig-wide, or one slot) that contradict each other."""
    rates: dict[str, str] = {}
    blocks: list[BlockFault] = []
    for item in items:
        fault = item.fault
        if isinstance(fault, RateFault):
            if fault.kind in rates:
                raise ValueError(
                    f"fault items {rates[fault.kind]!r} and {fault.text!r} both set "
                    f"{fault.kind} for the same slots. {GRAMMAR}"
                )
            rates[fault.kind] = fault.text
            continue
        for other in blocks:
            if fault.block < other.block + other.count and other.block < fault.block + fault.count:
                raise ValueError(
                    f"fault items {other.text!r} and {fault.text!r} both apply to the same "
                    f"write block. {GRAMMAR}"
                )
        blocks.append(fault)


def plan_for_slot(items: tuple[FaultItem, ...], slot: int, seed: int = 0) -> FaultPlan:
    """The plan of ``slot`` from parsed items: its own items override rig-wide ones.

    Raises:
        ValueError: two items of the same level contradict each other.
    """
    own = [i for i in items if i.slot == slot]
    shared = [i for i in items if i.slot is None]
    _check_level(own)
    _check_level(shared)
    rates: dict[str, float] = {}
    for item in shared + own:  # own items last, so they win
        if isinstance(item.fault, RateFault):
            rates[item.fault.kind] = item.fault.rate
    blocks = tuple(i.fault for i in own + shared if isinstance(i.fault, BlockFault))
    return FaultPlan(
        slot=slot,
        seed=seed,
        blocks=blocks,
        corrupt_rate=rates.get("corrupt", 0.0),
        drop_rate=rates.get("drop", 0.0),
    )


def fault_plan(spec: str, slot: int, seed: int = 0) -> FaultPlan:
    """Parse ``spec`` and return the plan of ``slot``.

    Raises:
        ValueError: bad or contradictory SPEC.
    """
    return plan_for_slot(parse_fault_spec(spec), slot, seed)


class ByteFaults:
    """Random per-byte faults on one direction of a link.

    Each direction has its own random stream, so the faults a byte gets depend only on its
    place in that direction's stream, not on how the two directions interleave in time.
    """

    def __init__(self, drop_rate: float, corrupt_rate: float, rng: random.Random) -> None:
        self.drop_rate = drop_rate
        self.corrupt_rate = corrupt_rate
        self._rng = rng

    @classmethod
    def pair(cls, plan: FaultPlan) -> tuple[ByteFaults, ByteFaults]:
        """(host-to-hub, hub-to-host) faults of a plan, both derived from ``plan.rng()``."""
        base = plan.rng()
        rx = random.Random(base.getrandbits(64))
        tx = random.Random(base.getrandbits(64))
        return (
            cls(plan.drop_rate, plan.corrupt_rate, rx),
            cls(plan.drop_rate, plan.corrupt_rate, tx),
        )

    @property
    def active(self) -> bool:
        """Whether this direction can alter any byte."""
        return self.drop_rate > 0.0 or self.corrupt_rate > 0.0

    def apply(self, data: bytes) -> tuple[bytes, list[int] | None]:
        """The bytes that get through, and their positions in ``data`` (None: all, in place)."""
        if not self.active:
            return data, None
        rng = self._rng
        kept = bytearray()
        positions: list[int] = []
        for pos, byte in enumerate(data):
            if self.drop_rate > 0.0 and rng.random() < self.drop_rate:
                continue
            if self.corrupt_rate > 0.0 and rng.random() < self.corrupt_rate:
                byte ^= 1 << rng.randrange(8)
            kept.append(byte)
            positions.append(pos)
        return bytes(kept), positions

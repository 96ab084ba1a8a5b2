"""The per-hub job state machine and the typed events the controller publishes.

Every transition is persisted by the store before it is published to subscribers (the CLI,
the JSON-lines writer, the TUI), so anything a user was shown survives a crash.

One frozen dataclass per event kind; :data:`Event` is their union, so a subscriber
dispatches with ``match`` and mypy checks every field it reads. Versions are integers here
(formatted only where shown: :func:`station.render.shown_version`), the error that ended a
job is its class. The JSON-lines form (``--json``) is derived from these classes by
:mod:`station.event_json` and documented in docs/records.md.
"""

from __future__ import annotations

import builtins
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Final

import drivers.errors
from drivers.types import Phase
from station.outcome import FlashOutcome, Result


class JobState(StrEnum):
    """ARCHITECTURE.md §7: one hub in one slot."""

    DETECTED = "detected"
    IDENTIFIED = "identified"
    PLANNED = "planned"
    ERASING = "erasing"
    WRITING = "writing"
    VERIFYING = "verifying"
    BOOTING = "booting"
    PASSED = "passed"  # CONFIRMED: verified flash and the running version read back
    SKIPPED = "skipped"
    REFUSED = "refused"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        """Whether the job ends in this state."""
        return self in _FINAL


_FINAL = frozenset(
    {JobState.PASSED, JobState.SKIPPED, JobState.REFUSED, JobState.FAILED, JobState.INTERRUPTED}
)

#: The live states in order; a job walks them forward and never skips one.
CHAIN = (
    JobState.DETECTED,
    JobState.IDENTIFIED,
    JobState.PLANNED,
    JobState.ERASING,
    JobState.WRITING,
    JobState.VERIFYING,
    JobState.BOOTING,
)

#: Legal moves; anything else is a bug the controller refuses to record.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.DETECTED: frozenset({JobState.IDENTIFIED}),
    JobState.IDENTIFIED: frozenset({JobState.PLANNED}),
    JobState.PLANNED: frozenset({JobState.ERASING}),
    JobState.ERASING: frozenset({JobState.WRITING}),
    JobState.WRITING: frozenset({JobState.VERIFYING}),
    JobState.VERIFYING: frozenset({JobState.BOOTING}),
    JobState.BOOTING: frozenset({JobState.PASSED}),
}
for _state in list(TRANSITIONS):
    # Any live state may end badly; only BOOTING may end in PASSED (after confirm).
    TRANSITIONS[_state] = TRANSITIONS[_state] | {
        JobState.FAILED,
        JobState.INTERRUPTED,
        JobState.REFUSED,
        JobState.SKIPPED,
    }


def legal(src: JobState | None, dst: JobState) -> bool:
    """Whether a job may move from ``src`` (None: not started) to ``dst``."""
    if src is None:
        return dst is JobState.DETECTED
    return dst in TRANSITIONS.get(src, frozenset())


# -- field markers for the JSON form (read by station.event_json) -----------------------------

#: A firmware version: an integer here, ``"0x01050000"`` in JSON (null when unknown).
HEX: Final = {"codec": "hex"}
#: As :data:`HEX`, but ``""`` in JSON when unknown (the outcome's image version).
HEX_OR_EMPTY: Final = {"codec": "hex-or-empty"}
#: An exception class here, its name in JSON (``"PortVanished"``).
ERROR: Final = {"codec": "error"}


@dataclass(frozen=True, kw_only=True)
class _Base:
    """What every event has: where (slot and job, when it concerns one) and when."""

    kind: ClassVar[str]
    slot: int | None = None
    job_id: int | None = None
    at: float = field(default_factory=time.time)


# -- the batch --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BatchStarted(_Base):
    """A batch began (its id), at a station with so many slots."""

    kind: ClassVar[str] = "batch-started"
    batch: int
    station: str
    slots: int


@dataclass(frozen=True, kw_only=True)
class BatchFinished(_Base):
    """The batch ended: its summary and consignment reconciliation, as ``station report
    summary --json`` and ``station report consignment --json`` give them."""

    kind: ClassVar[str] = "batch-finished"
    summary: dict[str, Any]
    reconciliation: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class LeaseTakenOver(_Base):
    """Another process took the station over: nothing more is started or recorded."""

    kind: ClassVar[str] = "lease-lost"
    station: str


# -- a job's states ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HubDetected(_Base):
    """A hub was found in a slot and its job recorded (``state`` ``detected``)."""

    kind: ClassVar[str] = "state"
    slot: int
    job_id: int
    state: JobState = field(default=JobState.DETECTED, init=False)
    port: str


@dataclass(frozen=True, kw_only=True)
class HubIdentified(_Base):
    """The hub said who it is and what it runs (``state`` ``identified``)."""

    kind: ClassVar[str] = "state"
    slot: int
    job_id: int
    state: JobState = field(default=JobState.IDENTIFIED, init=False)
    eui64: str | None
    hw_version: int | None
    version_before: int | None = field(metadata=HEX)
    found_in: str | None


@dataclass(frozen=True, kw_only=True)
class JobPlanned(_Base):
    """The image and target were chosen (``state`` ``planned``)."""

    kind: ClassVar[str] = "state"
    slot: int
    job_id: int
    state: JobState = field(default=JobState.PLANNED, init=False)
    target_version: int | None = field(metadata=HEX)
    image: str | None
    image_version: int | None = field(metadata=HEX)
    image_sha256: str | None
    signature: str | None
    signer: str | None
    plan: str | None
    behind: int | None
    overrides: tuple[str, ...]


#: The states a :class:`JobStateChanged` may carry (the others have their own class).
PLAIN_STATES: Final = frozenset(
    {JobState.ERASING, JobState.WRITING, JobState.VERIFYING, JobState.BOOTING}
)


@dataclass(frozen=True, kw_only=True)
class JobStateChanged(_Base):
    """A job moved on to ``erasing``, ``writing``, ``verifying`` or ``booting``."""

    kind: ClassVar[str] = "state"
    slot: int
    job_id: int
    state: JobState

    def __post_init__(self) -> None:
        if self.state not in PLAIN_STATES:
            raise ValueError(f"a state event for {self.state!r} has its own class")


@dataclass(frozen=True, kw_only=True)
class JobProgress(_Base):
    """Bytes done of the total in a phase (not persisted; at most a few a second)."""

    kind: ClassVar[str] = "progress"
    slot: int
    job_id: int
    phase: Phase
    done: int
    total: int


@dataclass(frozen=True, kw_only=True)
class Note(_Base):
    """Something a session said on the way (a retried block, a slow hub)."""

    kind: ClassVar[str] = "note"
    slot: int
    job_id: int
    note: str


@dataclass(frozen=True, kw_only=True)
class JobFinished(_Base):
    """How a job ended: ``state`` is what the store recorded (a pass without its evidence
    is recorded failed), the rest the job's outcome (``station flash --json``'s object)."""

    kind: ClassVar[str] = "job-finished"
    slot: int
    job_id: int
    state: JobState
    port: str
    profile: str
    result: Result
    image: str = ""
    image_version: int | None = field(default=None, metadata=HEX_OR_EMPTY)
    target_version: int | None = field(default=None, metadata=HEX)
    image_sha256: str = ""
    eui64: str | None = None
    hw_version: int | None = None
    found_in: str | None = None
    version_before: int | None = field(default=None, metadata=HEX)
    version_after: int | None = field(default=None, metadata=HEX)
    eui64_confirmed: str | None = None
    verify_method: str | None = None
    verify_detail: str | None = None
    phase: str | None = None
    message: str = ""
    hint: str = ""
    error: type[BaseException] | None = field(default=None, metadata=ERROR)
    signature: str | None = None
    signer: str | None = None
    behind: int | None = None
    plan: str | None = None
    overrides: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    exchanges: tuple[str, ...] = ()
    bytes_written: int = 0
    adapter_latency_ms: float | None = None
    pages_written: int | None = None
    pages_skipped: int | None = None
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, slot: int, job_id: int, state: JobState, out: FlashOutcome) -> JobFinished:
        """The event for ``out``, recorded as ``state``."""
        return cls(
            slot=slot,
            job_id=job_id,
            state=state,
            port=out.port,
            profile=out.profile,
            result=out.result,
            image=out.image,
            image_version=version_of(out.image_version),
            target_version=version_of(out.target_version),
            image_sha256=out.image_sha256,
            eui64=out.eui64,
            hw_version=out.hw_version,
            found_in=out.found_in,
            version_before=version_of(out.version_before),
            version_after=version_of(out.version_after),
            eui64_confirmed=out.eui64_confirmed,
            verify_method=out.verify_method,
            verify_detail=out.verify_detail,
            phase=out.phase,
            message=out.message,
            hint=out.hint,
            error=out.error_type or (error_class(out.error) if out.error else None),
            signature=out.signature,
            signer=out.signer,
            behind=out.behind,
            plan=out.plan,
            overrides=tuple(out.overrides),
            notes=tuple(out.notes),
            exchanges=tuple(out.exchanges),
            bytes_written=out.bytes_written,
            adapter_latency_ms=out.adapter_latency_ms,
            pages_written=out.pages_written,
            pages_skipped=out.pages_skipped,
            seconds=round(out.seconds, 3),
            phase_seconds={k: round(v, 4) for k, v in out.phase_seconds.items()},
        )


# -- slots -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Retry(_Base):
    """The same hub is tried again (try number ``tries``) after a failed try, for ``why``."""

    kind: ClassVar[str] = "retry"
    slot: int
    tries: int = field(metadata={"json": "try"})
    why: str


@dataclass(frozen=True, kw_only=True)
class SlotEmpty(_Base):
    """No hub at the slot's binding (a one-shot run)."""

    kind: ClassVar[str] = "slot-empty"
    slot: int
    binding: str = field(metadata={"json": "at"})


@dataclass(frozen=True, kw_only=True)
class SlotFault(_Base):
    """Different hubs kept failing in this slot: check its cable and fixture; or (``power``
    says why) its power switch does not switch."""

    kind: ClassVar[str] = "slot-fault"
    slot: int
    failed_hubs: int
    last: str
    power: str = ""


@dataclass(frozen=True, kw_only=True)
class SlotPowered(_Base):
    """The slot's power was switched (``action``: ``on``, ``off`` or ``cycle``) by ``switch``,
    for ``why``; ``error`` (empty when it switched) says why it failed or did not switch."""

    kind: ClassVar[str] = "power"
    slot: int
    action: str
    why: str
    switch: str = ""
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class RecordError(_Base):
    """The store refused a record, so its event was not shown (``error``: why)."""

    kind: ClassVar[str] = "record-error"
    error: str


@dataclass(frozen=True, kw_only=True)
class SlotError(_Base):
    """A bug in a slot's worker (``error``: its repr)."""

    kind: ClassVar[str] = "slot-error"
    slot: int
    error: str


#: Every event the controller publishes; dispatch on it with ``match``.
Event = (
    BatchStarted
    | BatchFinished
    | LeaseTakenOver
    | HubDetected
    | HubIdentified
    | JobPlanned
    | JobStateChanged
    | JobProgress
    | Note
    | JobFinished
    | Retry
    | SlotEmpty
    | SlotFault
    | SlotPowered
    | RecordError
    | SlotError
)
#: The events of a job's move to a live state.
StateEvent = HubDetected | HubIdentified | JobPlanned | JobStateChanged

#: Every event class, in the order docs/records.md lists them.
EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    BatchStarted,
    HubDetected,
    HubIdentified,
    JobPlanned,
    JobStateChanged,
    JobProgress,
    Note,
    Retry,
    JobFinished,
    SlotEmpty,
    SlotFault,
    SlotPowered,
    RecordError,
    SlotError,
    LeaseTakenOver,
    BatchFinished,
)


def state_event(slot: int, job_id: int, state: JobState, out: FlashOutcome) -> StateEvent:
    """The event of a job's move to live ``state``, with what the outcome knows so far: at
    ``identified`` the identity and running version, at ``planned`` the image and target."""
    if state is JobState.DETECTED:
        return HubDetected(slot=slot, job_id=job_id, port=out.port)
    if state is JobState.IDENTIFIED:
        return HubIdentified(
            slot=slot,
            job_id=job_id,
            eui64=out.eui64,
            hw_version=out.hw_version,
            version_before=version_of(out.version_before),
            found_in=out.found_in,
        )
    if state is JobState.PLANNED:
        return JobPlanned(
            slot=slot,
            job_id=job_id,
            target_version=version_of(out.target_version),
            image=out.image or None,
            image_version=version_of(out.image_version),
            image_sha256=out.image_sha256 or None,
            signature=out.signature,
            signer=out.signer,
            plan=out.plan,
            behind=out.behind,
            overrides=tuple(out.overrides),
        )
    return JobStateChanged(slot=slot, job_id=job_id, state=state)


def version_of(text: str | None) -> int | None:
    """A recorded version (``0x01050000``) as an integer; None when unknown (None or "").

    Raises:
        ValueError: text that is not a hexadecimal version (a bug upstream).
    """
    return int(text, 16) if text else None


_RECORDS: Final = "station.records.errors"
_UNKNOWN_ERRORS: dict[str, type[Exception]] = {}


class UnknownError(Exception):
    """The base of error classes known only by name (a JSON line from a newer station)."""


def error_class(name: str) -> type[BaseException]:
    """The exception class named ``name`` (``"PortVanished"``), as recorded and in JSON.

    The station's own errors first, then Python's, then any loaded exception class; a name
    none has gets a subclass of :class:`UnknownError` of that name (the same each time).
    """
    # The records' errors import this module: they are found once loaded.
    homes = (drivers.errors, sys.modules[FlashOutcome.__module__], sys.modules.get(_RECORDS))
    for home in homes:
        found = getattr(home, name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    todo: list[type[BaseException]] = [BaseException]
    while todo:
        cls = todo.pop()
        if cls.__name__ == name and not issubclass(cls, UnknownError):
            return cls
        todo.extend(cls.__subclasses__())
    if name not in _UNKNOWN_ERRORS:
        _UNKNOWN_ERRORS[name] = type(name, (UnknownError,), {"__module__": __name__})
    return _UNKNOWN_ERRORS[name]

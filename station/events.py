"""The per-hub job state machine and the typed events the controller publishes.

Every transition is persisted by the store before it is published to subscribers (the CLI,
the JSON-lines writer, the TUI), so anything a user was shown survives a crash.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


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


@dataclass(frozen=True)
class Event:
    """Something that happened in a slot, as published (and written as one JSON line).

    ``kind`` is one of: ``batch-started``, ``state`` (a job transition, with ``state``),
    ``progress`` (bytes done/total in a phase; not persisted), ``job-finished`` (with the
    outcome), ``slot-fault``, ``slot-empty``, ``retry``, ``note``, ``record-error`` (a
    record the store refused, so its event was not shown), ``slot-error`` (a bug in a slot
    worker), ``batch-finished`` (with the summary).
    """

    kind: str
    slot: int | None = None
    job_id: int | None = None
    state: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (None fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

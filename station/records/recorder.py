"""The recorder: persists every slot's job records in order, then publishes them.

Slot workers hand it their records and go straight back to the hub: a database write takes
about a millisecond of CPU, and with 32 or 64 slots writing in turn those milliseconds
queued up behind one another on every slot's critical path. The recorder takes what has
queued since its last pass and commits it in one transaction (:meth:`Store.group`: one
commit, one fsync), and only then publishes the events, in the order they were handed in.
So the rule of ARCHITECTURE.md §7 still holds: nothing is shown before it is durable.

Every record waits for the database before the slot goes on: :meth:`Recorder.start_job`
(the job's id is needed for everything after), :meth:`Recorder.state` (a state is durable
*before* the step it names: the identity read before the plan, ``erasing`` before the first
erase command; ARCHITECTURE.md §10) and :meth:`Recorder.finish_job` (the store decides the
final state). Only progress counters, notes and retries run ahead. A progress counter is a
latest value, not a record: a slot's newest one waits beside the queue and goes out at the
recorder's next pass (at most :data:`PROGRESS_EVERY_S` later), or just before that slot's
next record, so it never wakes the recorder by itself (at 32 slots, four counters a second
each were most of its passes) and is never shown after what followed it. Waiting costs a slot one
group commit per state, shared with every other slot that recorded in the same pass. A
record the store refuses raises in the slot that handed it in, and is not published; a
``record-error`` event says so (except a claim on a hub in flight elsewhere, ``HubInFlight``:
the store's answer, which the slot turns into a refused job, not a failure to record).

The recorder starts no thread: the controller runs :meth:`Recorder.run` in one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from station.event_json import data_of
from station.events import (
    Event,
    HubDetected,
    JobFinished,
    JobProgress,
    JobState,
    RecordError,
    StateEvent,
)
from station.outcome import FlashOutcome
from station.records.errors import HubInFlight


class JobStore(Protocol):
    """What the controller needs of the store (station.records.store.Store provides it).

    A store may also offer ``group()`` (see :meth:`station.records.store.Store.group`); the
    recorder then commits each pass in one transaction.
    """

    def start_job(self, batch_id: int, slot: int, port: str, profile: str) -> int: ...
    def record_state(
        self, job_id: int, state: JobState, detail: dict[str, Any] | None = None
    ) -> None: ...
    def finish_job(self, job_id: int, outcome: FlashOutcome) -> JobState: ...
    def audit(self, operator: str, action: str, detail: dict[str, Any]) -> None: ...


#: Most records committed in one transaction (bounds the latency of a pass).
MAX_GROUP = 512
#: Longest a progress counter waits for a pass (the live board's refresh rate).
PROGRESS_EVERY_S = 0.25


@dataclass
class _Record:
    """One thing handed to the recorder: an optional write, then the event(s) it allows."""

    write: Callable[[JobStore], Any] | None
    events: Callable[[Any], list[Event]]
    slot: int | None = None
    job_id: int | None = None
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


_CLOSE = _Record(None, lambda _: [])


def _counter_record(event: JobProgress) -> _Record:
    return _Record(None, lambda _: [event], event.slot, event.job_id)


class Recorder:
    """Persist, then publish, every record the slot workers hand in, in their order.

    Args:
        store: where records go.
        publish: receives every event; called from the recorder's thread only.
    """

    def __init__(self, store: JobStore, publish: Callable[[Event], None]) -> None:
        self.store = store
        self.publish = publish
        self._queue: queue.SimpleQueue[_Record] = queue.SimpleQueue()
        self._lock = threading.Lock()  # keeps a slot's counter and its records in order
        self._progress: dict[int, JobProgress] = {}  # each slot's newest, not yet queued
        #: The first exception a subscriber raised (the controller reports it).
        self.publish_error: Exception | None = None

    # -- what slot workers call ------------------------------------------------------------

    def start_job(self, batch_id: int, slot: int, port: str, profile: str) -> int:
        """Record a hub found in a slot; waits, and returns the job id.

        Raises:
            StoreError: the store refused it (for example, the batch has ended).
        """
        record = _Record(
            lambda store: store.start_job(batch_id, slot, port, profile),
            lambda job_id: [HubDetected(slot=slot, job_id=job_id, port=port)],
            slot,
        )
        return int(self._wait(record))

    def state(self, event: StateEvent) -> None:
        """Record a job's move to ``event.state`` (its fields are the recorded detail);
        waits until it is durable, then publishes the event.

        Raises:
            StoreError: the store refused it (nothing was recorded).
        """
        detail = data_of(event)
        self._wait(
            _Record(
                lambda store: store.record_state(event.job_id, event.state, detail),
                lambda _: [event],
                event.slot,
                event.job_id,
            )
        )

    def event(self, event: Event) -> None:
        """Queue an event that is not a record (notes, retries): published after everything
        handed in before it."""
        self._put(_Record(None, lambda _: [event], event.slot, event.job_id))

    def progress(self, event: JobProgress) -> None:
        """Keep a slot's progress counter, replacing one not yet published: it goes out at
        the next pass, after everything the slot handed in before it."""
        with self._lock:
            self._progress[event.slot] = event

    def audit(self, operator: str, action: str, detail: dict[str, Any], then: Event) -> None:
        """Queue an audit entry, and the event ``then`` to publish once it is durable."""
        self._put(
            _Record(
                lambda store: store.audit(operator, action, detail),
                lambda _: [then],
                then.slot,
            )
        )

    def finish_job(self, slot: int, job_id: int, outcome: FlashOutcome) -> JobState:
        """Record how a job ended; waits, and returns the state the store recorded (a pass
        without its evidence is recorded failed)."""
        record = _Record(
            lambda store: store.finish_job(job_id, outcome),
            lambda final: [JobFinished.of(slot, job_id, JobState(final), outcome)],
            slot,
            job_id,
        )
        return JobState(self._wait(record))

    def flush(self) -> None:
        """Wait until everything handed in so far is persisted and published."""
        self._wait(_Record(None, lambda _: []), every_slot=True)

    def _put(self, record: _Record, every_slot: bool = False) -> None:
        """Queue ``record`` behind the progress counter its slot (or every slot) handed in
        before it."""
        with self._lock:
            if every_slot:
                counters, self._progress = list(self._progress.values()), {}
            else:
                counter = self._progress.pop(record.slot, None) if record.slot is not None else None
                counters = [counter] if counter is not None else []
            for counter in counters:
                self._queue.put(_counter_record(counter))
            self._queue.put(record)

    def _wait(self, record: _Record, every_slot: bool = False) -> Any:
        self._put(record, every_slot)
        record.done.wait()
        if record.error is not None:
            raise record.error
        return record.value

    # -- the recorder's own thread ---------------------------------------------------------

    def run(self) -> None:
        """Persist and publish until :meth:`close`; everything handed in before is done."""
        while True:
            batch = list(self._take())
            closing = any(r is _CLOSE for r in batch)
            with self._lock:  # the counters no record has taken along yet
                counters, self._progress = list(self._progress.values()), {}
            batch = [r for r in batch if r is not _CLOSE] + [_counter_record(c) for c in counters]
            self._apply(batch)
            if closing:
                return

    def close(self) -> None:
        """Ask :meth:`run` to finish what is queued and return."""
        self._put(_CLOSE, every_slot=True)

    def _take(self) -> Iterator[_Record]:
        try:
            yield self._queue.get(timeout=PROGRESS_EVERY_S)
        except queue.Empty:
            return
        for _ in range(MAX_GROUP - 1):
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def _apply(self, batch: list[_Record]) -> None:
        writes = [r for r in batch if r.write is not None]
        # A pass of progress counters and notes alone (most passes) needs no transaction.
        group: Callable[[], AbstractContextManager[Any]] = (
            getattr(self.store, "group", nullcontext) if writes else nullcontext
        )
        try:
            with group():
                for record in writes:
                    assert record.write is not None
                    try:
                        record.value = record.write(self.store)
                    except Exception as exc:  # this record only (its savepoint undone)
                        record.error = exc
        except Exception as exc:  # the commit failed: nothing of this pass stands
            for record in writes:
                record.error = record.error or exc
        for record in batch:
            try:
                if record.error is None:
                    events = record.events(record.value)
                elif isinstance(record.error, HubInFlight):
                    # The store's answer, not a record it failed to keep: the slot ends the
                    # job refused, and that is recorded and published as any other end.
                    events = []
                else:
                    events = [
                        RecordError(slot=record.slot, job_id=record.job_id, error=str(record.error))
                    ]
                for event in events:
                    self.publish(event)
            except Exception as exc:  # a broken subscriber must not stop the records
                self.publish_error = self.publish_error or exc
            finally:
                record.done.set()

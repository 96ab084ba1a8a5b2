"""The recorder: records persisted in order, published only once durable, grouped."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from drivers.types import Phase
from station.events import CHAIN, Event, JobProgress, JobState, Note, RecordError
from station.outcome import Result
from station.records.errors import HubInFlight, IllegalTransition
from station.records.recorder import Recorder
from station.records.store import Store, StoreError
from tests.eventkit import event
from tests.station.recordkit import ended, eui, identity, passed, plan


class CountingStore(Store):
    """A real store that counts its transactions."""

    groups = 0

    @contextmanager
    def group(self) -> Iterator[None]:
        CountingStore.groups += 1
        with super().group():
            yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    CountingStore.groups = 0
    with CountingStore.open(f"sqlite:///{tmp_path / 'station.db'}") as s:
        s.acquire_lease("bench")
        yield s


def _batch(store: Store) -> int:
    return store.start_batch(station_id="bench", operator="op", rig="r", catalog="c")


def test_many_slots_every_event_is_durable_when_published_and_in_order(store: Store) -> None:
    batch = _batch(store)
    seen: list[Event] = []
    problems: list[str] = []

    def publish(event: Event) -> None:
        seen.append(event)
        if event.kind in ("state", "job-finished") and event.job_id is not None:
            durable = [str(e.state) for e in store.job_events(event.job_id)]
            if event.state not in durable:
                problems.append(f"{event} published before it was recorded ({durable})")

    rec = Recorder(store, publish)
    runner = threading.Thread(target=rec.run)
    runner.start()
    finals: dict[int, JobState] = {}

    def slot(n: int) -> None:
        job = rec.start_job(batch, n, f"/dev/pts/{n}", "demo-an3155")
        for state in CHAIN[1:]:
            detail = (
                identity(eui(n))
                if state is JobState.IDENTIFIED
                else plan()
                if state is JobState.PLANNED
                else {}
            )
            rec.state(event("state", n, job, str(state), detail))
            rec.progress(
                JobProgress(slot=n, job_id=job, phase=Phase.WRITE, done=CHAIN.index(state), total=9)
            )
        outcome = passed(eui(n)) if n % 2 else ended(eui(n), Result.FAILED, "write", "NACK")
        finals[n] = rec.finish_job(n, job, outcome)

    workers = [threading.Thread(target=slot, args=(n,)) for n in range(1, 17)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rec.close()
    runner.join()
    assert problems == []
    assert finals == {n: JobState.PASSED if n % 2 else JobState.FAILED for n in range(1, 17)}
    for n in range(1, 17):
        mine = [e for e in seen if e.slot == n]
        states = [e.state for e in mine if e.kind == "state"]
        assert states == [str(s) for s in CHAIN]
        assert mine[-1].kind == "job-finished"
        # Progress is published after the state it follows and before the next, never
        # before or after; a counter may be replaced by a newer one, never shown late.
        kinds = [e.kind for e in mine]
        assert kinds[:2] == ["state", "state"]
        done = [e.done for e in mine if isinstance(e, JobProgress)]
        assert done == sorted(done) and done[-1] == len(CHAIN) - 1
        for i, e in enumerate(mine):
            if isinstance(e, JobProgress):
                assert [x.state for x in mine[:i] if x.kind == "state"][-1] == str(CHAIN[e.done])
    # 16 slots, 8 records each: far fewer transactions than records.
    assert CountingStore.groups < 16 * 8


def _queued(rec: Recorder, calls: list[Callable[[], object]]) -> list[BaseException | None]:
    """Run each call in its own slot thread and wait until all are queued, before the
    recorder's first pass; then run the recorder to the end. Returns each call's error."""
    errors: list[BaseException | None] = [None] * len(calls)

    def slot(i: int) -> None:
        try:
            calls[i]()
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while rec._queue.qsize() < len(calls):
        assert time.monotonic() < deadline, "the slots never handed their records in"
        threading.Event().wait(0.005)
    rec.close()
    rec.run()  # everything was queued before this first pass
    for t in threads:
        t.join()
    return errors


def test_records_queued_together_share_one_transaction(store: Store) -> None:
    batch = _batch(store)
    rec = Recorder(store, lambda e: None)
    jobs = [store.start_job(batch, n, "p", "demo-an3155") for n in range(1, 6)]
    calls: list[Callable[[], object]] = [
        functools.partial(rec.state, event("state", n, job, "identified", identity(eui(n))))
        for n, job in enumerate(jobs, 1)
    ]
    assert _queued(rec, calls) == [None] * 5
    assert CountingStore.groups == 1
    assert {store.job(j).state for j in jobs} == {JobState.IDENTIFIED}


def test_a_refused_record_is_not_published_and_spares_the_others(store: Store) -> None:
    batch = _batch(store)
    a, b = (store.start_job(batch, n, "p", "demo-an3155") for n in (1, 2))
    seen: list[Event] = []
    rec = Recorder(store, seen.append)
    errors = _queued(
        rec,
        [
            lambda: rec.state(event("state", 1, a, "writing")),  # not identified yet
            lambda: rec.state(event("state", 2, b, "identified")),
        ],
    )
    assert isinstance(errors[0], IllegalTransition) and errors[1] is None
    assert sorted((e.kind, e.slot) for e in seen) == [("record-error", 1), ("state", 2)]
    refused = next(e for e in seen if e.kind == "record-error")
    assert isinstance(refused, RecordError) and "writing" in refused.error
    assert store.job(a).state is JobState.DETECTED
    assert store.job(b).state is JobState.IDENTIFIED


def test_a_hub_in_flight_elsewhere_raises_in_its_slot_but_is_no_record_error(
    store: Store,
) -> None:
    """The store refusing a second claim on a hub is its answer, not a record it failed to
    keep: the slot ends the job refused (recorded, published), and no ``record-error``
    tells the operator the database could not record the job."""
    batch = _batch(store)
    a, b = (store.start_job(batch, n, "p", "demo-an3155") for n in (1, 2))
    store.record_state(a, JobState.IDENTIFIED, identity(eui(1)))
    seen: list[Event] = []
    rec = Recorder(store, seen.append)
    errors = _queued(rec, [lambda: rec.state(event("state", 2, b, "identified", identity(eui(1))))])
    assert isinstance(errors[0], HubInFlight)
    assert seen == []
    assert store.job(b).state is JobState.DETECTED


def test_a_failed_commit_publishes_nothing_and_fails_the_waiting_slot(store: Store) -> None:
    batch = _batch(store)
    job = store.start_job(batch, 1, "p", "demo-an3155")

    class BrokenDisk:
        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        @contextmanager
        def group(self) -> Iterator[None]:
            yield
            raise StoreError("station database: disk I/O error")

    seen: list[Event] = []
    rec = Recorder(BrokenDisk(), seen.append)  # type: ignore[arg-type]
    runner = threading.Thread(target=rec.run)
    runner.start()
    with pytest.raises(StoreError, match="disk I/O"):
        rec.state(event("state", 1, job, "identified"))
    with pytest.raises(StoreError, match="disk I/O"):
        rec.finish_job(1, job, ended(eui(1), Result.FAILED, "identify", "x"))
    rec.close()
    runner.join()
    assert [e.kind for e in seen] == ["record-error", "record-error"]


def test_a_broken_subscriber_does_not_stop_the_records(store: Store) -> None:
    batch = _batch(store)

    def publish(event: Event) -> None:
        raise RuntimeError("the screen fell over")

    rec = Recorder(store, publish)
    runner = threading.Thread(target=rec.run)
    runner.start()
    job = rec.start_job(batch, 1, "p", "demo-an3155")
    rec.state(event("state", 1, job, "identified"))
    final = rec.finish_job(1, job, ended(eui(1), Result.FAILED, "identify", "x"))
    rec.close()
    runner.join()
    assert final is JobState.FAILED and store.job(job).state is JobState.FAILED
    assert isinstance(rec.publish_error, RuntimeError)


def test_a_pass_of_progress_and_notes_alone_opens_no_transaction(store: Store) -> None:
    # Progress counters and notes are not records: a pass holding only them must not
    # cost a database transaction (at 32 slots they are most of the recorder's passes).
    seen: list[Event] = []
    rec = Recorder(store, seen.append)
    for n in range(1, 41):
        slot = n % 4 + 1
        rec.event(JobProgress(slot=slot, job_id=7, phase=Phase.WRITE, done=n, total=40))
        if n % 10 == 0:
            rec.event(Note(slot=slot, job_id=7, note=f"block {n} retried"))
    rec.close()
    rec.run()
    assert [e.done for e in seen if isinstance(e, JobProgress)] == list(range(1, 41))
    assert len(seen) == 44
    assert CountingStore.groups == 0


def test_a_progress_counter_is_a_latest_value_and_keeps_its_place(store: Store) -> None:
    # A slot's counters replace one another until a pass or the slot's next record takes
    # the newest: it is published before that record, never after, and a run of counters
    # alone costs no pass of its own.
    batch = _batch(store)
    seen: list[Event] = []
    rec = Recorder(store, seen.append)
    runner = threading.Thread(target=rec.run)
    runner.start()
    job = rec.start_job(batch, 1, "p", "demo-an3155")
    for n in range(1, 1001):
        rec.progress(JobProgress(slot=1, job_id=job, phase=Phase.WRITE, done=n, total=1000))
    rec.progress(JobProgress(slot=2, job_id=99, phase=Phase.WRITE, done=5, total=10))
    rec.state(event("state", 1, job, "identified", identity(eui(1))))
    rec.flush()  # every slot's newest counter is out by then
    rec.close()
    runner.join()
    mine = [(e.kind, getattr(e, "done", None)) for e in seen if e.slot == 1]
    assert mine[0] == ("state", None)  # detected
    assert mine[-2:] == [("progress", 1000), ("state", None)]
    assert len(mine) < 1000 / 10  # sampled, not one a counter
    assert [e.done for e in seen if e.slot == 2] == [5]


def test_a_counter_alone_goes_out_within_the_refresh_time(store: Store) -> None:
    seen: list[Event] = []
    rec = Recorder(store, seen.append)
    runner = threading.Thread(target=rec.run)
    runner.start()
    rec.progress(JobProgress(slot=3, job_id=7, phase=Phase.WRITE, done=1, total=2))
    deadline = time.monotonic() + 5
    while not seen:
        assert time.monotonic() < deadline, "the counter was never published"
        threading.Event().wait(0.01)
    rec.close()
    runner.join()
    assert [e.done for e in seen if isinstance(e, JobProgress)] == [1]

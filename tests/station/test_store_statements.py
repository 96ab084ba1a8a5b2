"""What one record costs the database: statements per state, and the checks they still make.

The recorder commits every state a job reaches before the step it names, so the store's
statements per state are on every slot's path (issue 16: controller CPU per hub). These
tests hold the count down, and show that reading the lease, the job, its last event and its
operator in one statement leaves every refusal as it was. They run on SQLite, and on
PostgreSQL too when STATION_TEST_PG_URL is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from station.events import CHAIN, JobState
from station.outcome import Result
from station.records.errors import LeaseLost, UnknownRecord
from station.records.store import Store

from .recordkit import STATION, backend_url, ended, eui, open_store, passed, walk


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(backend_url(request.param, tmp_path))
    yield s
    s.close()


def _batch(store: Store) -> int:
    return store.start_batch(station_id=STATION, operator="alice", rig="r", catalog="c")


class _Statements:
    """The data statements (not BEGIN, SAVEPOINT or RELEASE) the store sends."""

    def __init__(self, store: Store) -> None:
        self.sent: list[str] = []
        event.listen(store._engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            self.sent.append(statement)

    def during(self, store: Store, write: Any) -> int:
        self.sent.clear()
        with store.group():
            write()
        return len(self.sent)


def test_a_plain_state_costs_three_statements(store: Store) -> None:
    # One read (lease, job, last event, operator), the job's update, the event's insert;
    # it was five (the lease, the job and the last seq were read apart).
    job = store.start_job(_batch(store), 1, "/dev/pts/1", "demo-an3155")
    walk(store, job, JobState.ERASING, eui(1))
    counted = _Statements(store)
    for state in (JobState.WRITING, JobState.VERIFYING, JobState.BOOTING):
        assert counted.during(store, lambda s=state: store.record_state(job, s)) == 3, counted.sent


def test_finishing_a_job_costs_fourteen_statements(store: Store) -> None:
    # Was seventeen: the lease, the last seq and the operator are read with the job.
    job = store.start_job(_batch(store), 1, "/dev/pts/1", "demo-an3155")
    walk(store, job, JobState.BOOTING, eui(1))
    counted = _Statements(store)
    assert counted.during(store, lambda: store.finish_job(job, passed(eui(1)))) == 14, counted.sent


def test_a_second_job_compiles_no_statement(store: Store) -> None:
    # A compile costs more CPU than running the statement: SQLAlchemy compiled every
    # SAVEPOINT and RELEASE anew (their names change; no cache can hold them).
    batch = _batch(store)
    compiled: list[tuple[str, str]] = []

    def seen(_c: Any, _cur: Any, statement: str, _p: Any, context: Any, _many: Any) -> None:
        if context.compiled is not None:
            compiled.append((str(context.cache_hit), statement))

    event.listen(store._engine, "before_cursor_execute", seen)
    for n in (1, 2):
        compiled.clear()
        job = store.start_job(batch, n, f"/dev/pts/{n}", "demo-an3155")
        walk(store, job, JobState.BOOTING, eui(n))
        with store.group():
            store.finish_job(job, passed(eui(n)))
    assert compiled
    assert [c for c in compiled if not c[0].endswith("CACHE_HIT")] == []


def test_events_are_numbered_one_by_one_through_a_whole_job(store: Store) -> None:
    batch = _batch(store)
    for n, end in ((1, JobState.BOOTING), (2, JobState.IDENTIFIED), (3, JobState.DETECTED)):
        job = store.start_job(batch, n, f"/dev/pts/{n}", "demo-an3155")
        walk(store, job, end, eui(n))
        if end is JobState.BOOTING:
            store.finish_job(job, passed(eui(n)))
        else:
            store.finish_job(job, ended(eui(n), Result.FAILED, "identify", "gone"))
        events = store.job_events(job)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.state for e in events][:-1] == list(CHAIN[: CHAIN.index(end) + 1])
    assert store.verify_audit().ok


def _raw(store: Store, sql: str) -> None:
    with store._engine.begin() as conn:
        conn.execute(text(sql))


def test_a_released_lease_is_still_refused(store: Store) -> None:
    job = store.start_job(_batch(store), 1, "/dev/pts/1", "demo-an3155")
    _raw(store, "UPDATE station_leases SET released_at = heartbeat_at")
    with pytest.raises(LeaseLost, match="was released"):
        store.record_state(job, JobState.IDENTIFIED, {"eui64": eui(1)})
    with pytest.raises(LeaseLost, match="was released"):
        store.finish_job(job, ended(None, Result.FAILED, "identify", "gone"))


def test_a_lease_taken_by_another_run_is_still_refused(store: Store) -> None:
    job = store.start_job(_batch(store), 1, "/dev/pts/1", "demo-an3155")
    _raw(store, "UPDATE station_leases SET lease_id = 'another-run'")
    with pytest.raises(LeaseLost, match="now held by"):
        store.record_state(job, JobState.IDENTIFIED, {"eui64": eui(1)})


def test_a_job_of_another_run_or_none_is_still_refused(store: Store) -> None:
    job = store.start_job(_batch(store), 1, "/dev/pts/1", "demo-an3155")
    with pytest.raises(UnknownRecord, match="no job 999"):
        store.record_state(999, JobState.IDENTIFIED, {"eui64": eui(1)})
    _raw(store, f"UPDATE jobs SET lease_id = 'another-run' WHERE id = {job}")
    with pytest.raises(LeaseLost, match="belongs to another run"):
        store.record_state(job, JobState.IDENTIFIED, {"eui64": eui(1)})
    with pytest.raises(LeaseLost, match="belongs to another run"):
        store.finish_job(job, ended(eui(1), Result.FAILED, "identify", "gone"))
    assert [e.state for e in store.job_events(job)] == [JobState.DETECTED]

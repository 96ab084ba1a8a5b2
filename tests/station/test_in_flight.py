"""A hub is in flight at one station only, and the database (not a check) decides it.

Two or more stores on one database stand for stations on one warehouse database. Tests
taking ``db_url`` run on SQLite, and on PostgreSQL too when STATION_TEST_PG_URL is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from sim.pty import SimHub
from station.controller import Controller
from station.demo import prepare_demo_catalog
from station.events import Event, JobState
from station.flash import Policy, catalog_chooser
from station.outcome import Result
from station.records.errors import HUB_IN_FLIGHT, HubInFlight
from station.records.keys import KeyRing, StationKey
from station.records.store import Store
from station.rig import parse_rig

from .recordkit import FakeClock, backend_url, ended, eui, identity, open_store, passed, walk

SIZE = 8192


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


def _batch(store: Store, station: str) -> int:
    return store.start_batch(station_id=station, operator="op", rig="r", catalog="c")


def _raw(store: Store, sql: str) -> None:
    with store._engine.begin() as conn:
        conn.execute(text(sql))


def _ring(tmp_path: Path, *stations: str) -> KeyRing:
    for s in stations:
        StationKey.load_or_create(tmp_path / "keys", s)
    return KeyRing.from_dir(tmp_path / "keys")


def test_a_hub_in_flight_at_one_station_is_refused_at_another(db_url: str, tmp_path: Path) -> None:
    a = open_store(db_url, station="bench-a")
    b = open_store(db_url, station="bench-b")
    try:
        ja = a.start_job(_batch(a, "bench-a"), 3, "/dev/pts/3", "demo-an3155")
        walk(a, ja, JobState.WRITING, eui(1))
        jb = b.start_job(_batch(b, "bench-b"), 5, "/dev/pts/5", "demo-an3155")
        with pytest.raises(HubInFlight) as refused:
            b.record_state(jb, JobState.IDENTIFIED, identity(eui(1)))
        message = refused.value.message
        assert message.startswith("in flight at station bench-a slot 3 since 2")
        assert (refused.value.station_id, refused.value.slot, refused.value.job_id) == (
            "bench-a",
            3,
            ja,
        )
        assert b.job(jb).state is JobState.DETECTED  # nothing of the refused state recorded
        hub_before = b.hub(eui(1))

        out = ended(eui(1), Result.REFUSED, "identify", message, error=HUB_IN_FLIGHT)
        assert b.finish_job(jb, out) is JobState.REFUSED
        row = b.job(jb)
        assert (row.state, row.eui64, row.message) == (JobState.REFUSED, eui(1), message)
        # The refusal says nothing of the hub: its row is station A's job's, untouched.
        assert b.hub(eui(1)) == hub_before
        [audited] = [e for e in b.audit_log() if e.action == "hub-in-flight"]
        assert audited.detail["job"] == jb and audited.detail["station_id"] == "bench-b"
        assert audited.detail["reason"] == message

        # Once station A's job ends, the hub may be taken in flight again, anywhere.
        for state in (JobState.VERIFYING, JobState.BOOTING):
            a.record_state(ja, state)
        a.finish_job(ja, passed(eui(1)))
        jb2 = b.start_job(row.batch_id, 5, "/dev/pts/5", "demo-an3155")
        b.record_state(jb2, JobState.IDENTIFIED, identity(eui(1)))
        assert b.job(jb2).eui64 == eui(1)
        assert b.verify_audit(_ring(tmp_path, "bench-a", "bench-b")).ok
    finally:
        a.close()
        b.close()


def test_the_database_refuses_a_second_hub_in_flight_whatever_the_code(db_url: str) -> None:
    """The partial unique index itself: a write that skips every check is refused."""
    a = open_store(db_url, station="bench-a")
    try:
        batch = _batch(a, "bench-a")
        j1 = a.start_job(batch, 1, "p1", "demo-an3155")
        j2 = a.start_job(batch, 2, "p2", "demo-an3155")
        j3 = a.start_job(batch, 3, "p3", "demo-an3155")
        _raw(a, f"UPDATE jobs SET eui64 = '{eui(7)}', state = 'writing' WHERE id = {j1}")
        with pytest.raises(IntegrityError):
            _raw(a, f"UPDATE jobs SET eui64 = '{eui(7)}', state = 'identified' WHERE id = {j2}")
        # An ended job holds nothing: many ended jobs, and one in flight, of one hub.
        _raw(a, f"UPDATE jobs SET eui64 = '{eui(7)}', state = 'failed' WHERE id = {j3}")
        _raw(a, f"UPDATE jobs SET eui64 = '{eui(7)}', state = 'passed' WHERE id = {j2}")
    finally:
        a.close()


@pytest.mark.parametrize("look_first", [True, False], ids=["checked", "raced"])
def test_of_many_stations_identifying_one_hub_at_once_exactly_one_has_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch, look_first: bool
) -> None:
    """Eight stations, each in its own thread and connection, identify one hub at the same
    instant. ``raced``: every look before the write is made to miss (as it does when the
    others have not committed yet), so only the unique index can decide."""
    if not look_first:
        missed: set[int] = set()
        real = Store._in_flight

        def blind_once(self: Store, conn: Any, eui64: str, job_id: int) -> Any:
            if job_id not in missed:
                missed.add(job_id)
                return None
            return real(self, conn, eui64, job_id)

        monkeypatch.setattr(Store, "_in_flight", blind_once)
    stores = [open_store(db_url, station=f"bench-{n}") for n in range(8)]
    try:
        batches = [_batch(s, f"bench-{n}") for n, s in enumerate(stores)]
        # The hub was seen before (its row exists), so only the jobs' index can collide.
        seen = stores[0].start_job(batches[0], 2, "p", "x")
        stores[0].record_state(seen, JobState.IDENTIFIED, identity(eui(9)))
        stores[0].finish_job(seen, ended(eui(9), Result.FAILED, "plan", "seen before"))
        jobs = [s.start_job(b, 1, "p", "x") for s, b in zip(stores, batches, strict=True)]
        go = threading.Barrier(len(stores))
        results: dict[int, str] = {}

        def identify(n: int) -> None:
            go.wait()
            try:
                stores[n].record_state(jobs[n], JobState.IDENTIFIED, identity(eui(9)))
                results[n] = "took"
            except HubInFlight as exc:
                results[n] = exc.message

        threads = [threading.Thread(target=identify, args=(n,)) for n in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        took = [n for n, r in results.items() if r == "took"]
        assert len(results) == len(stores) and len(took) == 1, results
        winner = took[0]
        for n, r in results.items():
            if n != winner:
                assert r.startswith(f"in flight at station bench-{winner} slot 1 since "), r
        live = [j for j, s in zip(jobs, stores, strict=True) if s.job(j).eui64 == eui(9)]
        assert stores[0].hub(eui(9)).last_job_id == jobs[winner]  # type: ignore[union-attr]
        assert live == [jobs[winner]]
    finally:
        for s in stores:
            s.close()


def test_a_hub_held_by_a_station_that_is_gone_is_freed_by_whoever_notices(
    db_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    far = open_store(db_url, station="bench-far", clock=clock)
    near = open_store(db_url, station="bench-near", clock=clock)
    try:
        jf = far.start_job(_batch(far, "bench-far"), 2, "p", "demo-an3155")
        walk(far, jf, JobState.ERASING, eui(4))
        _raw(far, "UPDATE station_leases SET host = 'other-pc' WHERE station_id = 'bench-far'")
        jn = near.start_job(_batch(near, "bench-near"), 1, "p", "demo-an3155")
        with pytest.raises(HubInFlight):  # its heartbeat is fresh: it is in flight there
            near.record_state(jn, JobState.IDENTIFIED, identity(eui(4)))
        near.finish_job(jn, ended(eui(4), Result.REFUSED, "identify", "x", error=HUB_IN_FLIGHT))
        clock.advance(31)  # past its time to live: the far station is gone
        near.heartbeat()
        jn2 = near.start_job(near.job(jn).batch_id, 1, "p", "demo-an3155")
        near.record_state(jn2, JobState.IDENTIFIED, identity(eui(4)))
        assert far.job(jf).state is JobState.INTERRUPTED
        expired = [e for e in near.audit_log() if e.action == "lease-expired"]
        assert [e.detail["station_id"] for e in expired] == ["bench-far"]
        # Noticed once: nobody interrupts it again, nor audits the lease again.
        again = near.notice_gone()
        assert again.noticed == [] and again.interrupted == []
        assert near.verify_audit(_ring(tmp_path, "bench-far", "bench-near")).ok
    finally:
        far.close()
        near.close()


def test_a_station_refuses_a_hub_in_flight_elsewhere_and_leaves_it_untouched(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    """The whole path: the controller of station B meets a hub station A has in flight. The
    job ends refused with where it is in flight, the hub's flash is untouched."""
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hub = start_hub(1, firmware_size=SIZE)
    before = hub.ground_truth(SIZE)
    url = f"sqlite:///{tmp_path / 'station.db'}"
    a = open_store(url, station="bench-a")
    b = open_store(url, station="bench-b")
    try:
        ja = a.start_job(_batch(a, "bench-a"), 7, "/dev/ttyUSB7", "demo-an3155")
        walk(a, ja, JobState.WRITING, hub.spec.eui64)
        rig = parse_rig(
            'station_id = "bench-b"\n[policy]\njob_retries = 0\n'
            f'[[slot]]\nnumber = 1\nport = "{hub.port}"\nprofile = "demo-an3155"\n'
        )
        policy = Policy(trust=trust)
        seen: list[Event] = []
        ctl = Controller(
            rig,
            store=b,
            batch_id=_batch(b, "bench-b"),
            chooser_for=lambda p: catalog_chooser(cat, p, policy),
            policy=policy,
            publish=seen.append,
        )
        ctl.run()
        [job] = b.jobs(ctl.batch_id)
        assert job.state is JobState.REFUSED and job.phase == "identify"
        assert (job.message or "").startswith("in flight at station bench-a slot 7 since ")
        assert job.error == HUB_IN_FLIGHT
        after = hub.ground_truth(SIZE)
        assert (after["sha256"], after["running"]) == (before["sha256"], before["running"])
        assert any(e.action == "hub-in-flight" for e in b.audit_log())
        assert a.job(ja).state is JobState.WRITING  # station A's job is not disturbed
    finally:
        a.close()
        b.close()

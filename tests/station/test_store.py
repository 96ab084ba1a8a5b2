"""The store: round trips, the state machine and pass rule it enforces, leases, threads.

Tests taking ``store_url`` run on SQLite, and on PostgreSQL too when STATION_TEST_PG_URL is
set (they are skipped there otherwise). The per-hub DSP update, recovery and the audit's
tamper checks have their own files (test_dsp_update.py, test_audit_tamper.py).
"""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from drivers.errors import ConfigError
from station.events import CHAIN, JobState, legal
from station.outcome import FlashOutcome, Result
from station.records.audit import GENESIS_HASH, audit_hash
from station.records.errors import (
    BatchFinished,
    IllegalTransition,
    LeaseLost,
    StationBusy,
    StoreError,
    UnknownRecord,
    ValueTooLong,
)
from station.records.keys import KeyRing, StationKey
from station.records.manifest import Manifest
from station.records.schema import SCHEMA_VERSION
from station.records.store import Store

from .recordkit import (
    NEW,
    OLD,
    SHA,
    STATION,
    FakeClock,
    backend_url,
    ended,
    eui,
    identity,
    open_store,
    passed,
    walk,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def key(tmp_path: Path) -> StationKey:
    return StationKey.load_or_create(tmp_path / "keys", STATION)


@pytest.fixture
def ring(key: StationKey, tmp_path: Path) -> KeyRing:
    """The station's public key, as ``station audit verify`` reads it."""
    return KeyRing.from_dir(tmp_path / "keys")


def _batch(store: Store, manifest: Manifest | None = None) -> int:
    return store.start_batch(
        station_id=STATION,
        operator="alice",
        rig="rigs/bench-07.toml",
        catalog="station-data/catalog",
        manifest=manifest,
    )


def _raw(store: Store, sql: str) -> None:
    with store._engine.begin() as conn:
        conn.execute(text(sql))


# -- round trips ---------------------------------------------------------------------------


def test_a_passed_job_round_trips_every_field(store: Store) -> None:
    manifest = Manifest.parse(
        f"consignment id,eui-64,model\nCN-1,{eui(1)},demo-an3155\n".encode(), name="cn1.csv"
    )
    b = _batch(store, manifest)
    j = store.start_job(b, 3, "/dev/pts/4", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1))
    out = passed(eui(1), overrides=["allow-unsigned (image signature: unsigned)"], notes=["n1"])
    assert store.finish_job(j, out) is JobState.PASSED

    [row] = store.jobs(b)
    assert row.id == j and row.batch_id == b and row.slot == 3 and row.port == "/dev/pts/4"
    assert row.state is JobState.PASSED
    assert store.lease is not None and row.lease_id == store.lease.lease_id
    assert (row.eui64, row.hw_version, row.found_in) == (eui(1), 2, "app")
    assert (row.version_before, row.version_after, row.image_version) == (OLD, NEW, NEW)
    assert row.target_version == NEW
    assert (row.image_path, row.image_sha256) == (out.image, SHA)
    assert (row.signature, row.signer) == ("valid", "demo-signer")
    assert (row.verify_method, row.verify_detail) == ("crc", out.verify_detail)
    assert row.overrides == ("allow-unsigned (image signature: unsigned)",)
    assert row.notes == ("n1",)
    assert (row.seconds, row.bytes_written) == (42.5, 65536)
    assert row.finished_at is not None and row.finished_at >= row.started_at
    assert row.started_at.tzinfo is not None
    assert (row.pages_written, row.pages_skipped) == (None, None)  # not written by pages

    events = store.job_events(j)
    assert [e.state for e in events] == [*CHAIN, JobState.PASSED]
    assert [e.seq for e in events] == list(range(1, 9))
    assert events[0].detail == {"slot": 3, "port": "/dev/pts/4", "profile": "demo-an3155"}
    assert events[1].detail["eui64"] == eui(1)

    hub = store.hub(eui(1).replace("-", "").lower())
    assert hub is not None
    assert (hub.model, hub.hw_version, hub.running_version, hub.last_job_id) == (
        "demo-an3155",
        2,
        NEW,
        j,
    )
    assert (hub.baseline_version, hub.running_sha256, hub.exported_version) == (OLD, SHA, None)
    assert hub.pending
    [batch] = store.batches()
    assert batch.manifest == "cn1.csv" and batch.manifest_sha256 == manifest.sha256
    assert batch.counts == {"passed": 1}
    assert store.consignment(b) == list(manifest.items)

    log = store.audit_log()
    actions = [e.action for e in log]
    assert actions[:2] == ["lease-acquired", "batch"]
    assert "override" in actions and actions[-2:] == ["job", "hub"]
    final = next(e for e in log if e.action == "job")
    assert final.detail["record"]["state"] == "passed"
    assert final.detail["record"]["image_sha256"] == SHA
    assert final.operator == "alice"
    assert store.verify_audit().ok


def test_identity_is_stored_the_moment_it_is_read(store: Store) -> None:
    """A job that never ends (the station killed) still names its hub and what it ran."""
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    store.record_state(j, JobState.IDENTIFIED, identity(eui(1)))
    row = store.job(j)
    assert (row.eui64, row.hw_version, row.version_before) == (eui(1), 2, OLD)
    hub = store.hub(eui(1))
    assert hub is not None and hub.running_version == OLD and hub.baseline_version == OLD
    store.record_state(j, JobState.PLANNED, {"target_version": NEW, "image_sha256": SHA})
    store.record_state(j, JobState.ERASING)
    hub = store.hub(eui(1))
    assert hub is not None and hub.running_version is None  # being written: unknown
    assert store.verify_audit().ok


def test_failed_refused_and_skipped_outcomes_end_in_their_states(store: Store) -> None:
    b = _batch(store)
    cases = [
        (JobState.WRITING, ended(eui(1), Result.FAILED, "write", "NACK"), JobState.FAILED),
        (JobState.IDENTIFIED, ended(eui(2), Result.REFUSED, "plan", "downgrade"), JobState.REFUSED),
        (JobState.IDENTIFIED, ended(eui(3), Result.SKIPPED, "plan", "current"), JobState.SKIPPED),
        (JobState.DETECTED, ended(None, Result.FAILED, "connect", "no sync"), JobState.FAILED),
    ]
    for slot, (reach, out, final) in enumerate(cases, 1):
        j = store.start_job(b, slot, f"/dev/pts/{slot}", "demo-an3155")
        walk(store, j, reach, out.eui64)
        assert store.finish_job(j, out) is final
        row = store.job(j)
        assert row.state is final and row.message == out.message and row.phase == out.phase
    assert store.hub(eui(2)) is not None  # a refused hub was still seen
    assert store.batch(b).counts == {"failed": 2, "refused": 1, "skipped": 1}


def test_close_batch_exports_signs_and_refuses_new_jobs(
    store: Store, key: StationKey, ring: KeyRing
) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1))
    store.finish_job(j, passed(eui(1)))
    live = store.start_job(b, 2, "p2", "demo-an3155")
    walk(store, live, JobState.WRITING, eui(2))
    closed = store.close_batch(b, key)
    assert closed.interrupted == [live] and closed.exported == [eui(1)]
    assert closed.head.signature is not None and closed.head.station_id == STATION
    assert store.batch(b).finished_at is not None
    assert store.job(live).state is JobState.INTERRUPTED
    with pytest.raises(BatchFinished):
        store.start_job(b, 3, "p", "demo-an3155")
    with pytest.raises(BatchFinished):
        store.close_batch(b, key)
    with pytest.raises(UnknownRecord):
        store.start_job(b + 100, 1, "p", "demo-an3155")
    check = store.verify_audit(ring)
    assert check.ok and check.signed_heads == 1, check.problems
    # Without the station's public key the signed head cannot be trusted: verify says so.
    assert not store.verify_audit(KeyRing()).ok


# -- the state machine and the pass rule ------------------------------------------------------


def test_illegal_transitions_are_refused_and_leave_no_trace(store: Store) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    for bad in (JobState.PLANNED, JobState.BOOTING, JobState.DETECTED, JobState.PASSED):
        with pytest.raises(IllegalTransition) as info:
            store.record_state(j, bad)
        assert info.value.src is JobState.DETECTED and info.value.dst is bad
    walk(store, j, JobState.BOOTING, eui(1))
    with pytest.raises(IllegalTransition, match="only finish_job"):
        store.record_state(j, JobState.PASSED)
    with pytest.raises(IllegalTransition, match="only finish_job"):
        store.record_state(j, JobState.FAILED)
    with pytest.raises(IllegalTransition):
        store.record_state(j, JobState.WRITING)  # backwards
    assert [e.state for e in store.job_events(j)] == list(CHAIN)
    store.finish_job(j, ended(eui(1), Result.FAILED, "boot", "operator pulled the hub"))
    for state in JobState:
        with pytest.raises(IllegalTransition):
            store.record_state(j, state)
    with pytest.raises(IllegalTransition, match="already ended"):
        store.finish_job(j, passed(eui(1)))
    with pytest.raises(UnknownRecord):
        store.record_state(j + 99, JobState.IDENTIFIED)
    assert store.job(j).state is JobState.FAILED


@pytest.mark.parametrize(
    ("reach", "change", "why"),
    [
        (JobState.VERIFYING, {}, "never reached booting"),
        (JobState.BOOTING, {"verify_method": None}, "no verify method"),
        (JobState.BOOTING, {"verify_method": ""}, "no verify method"),
        (JobState.BOOTING, {"version_after": None}, "not read back"),
        (JobState.BOOTING, {"version_after": "0x01040000"}, "runs 1.4.0.0"),
        # The crafted image: its header said one version, its signed payload another.
        (JobState.BOOTING, {"image_version": "0x01010000"}, "image's own version"),
        (JobState.BOOTING, {"target_version": "0x01060000"}, "not the recorded"),
        (JobState.BOOTING, {"image_sha256": ""}, "SHA-256 is not recorded"),
        (JobState.BOOTING, {"image_sha256": "ab" * 32}, "not the one recorded"),
        (JobState.BOOTING, {"eui64": None}, "EUI-64 was not read"),
        (JobState.BOOTING, {"eui64": "not-a-hub"}, "not valid"),
        (JobState.BOOTING, {"eui64": eui(2), "eui64_confirmed": eui(2)}, "read before"),
        (JobState.BOOTING, {"eui64_confirmed": eui(2)}, "answered after boot"),
        (JobState.BOOTING, {"hw_version": 3}, "hardware version 3"),
    ],
)
def test_a_pass_without_its_evidence_is_recorded_as_failed(
    store: Store, reach: JobState, change: dict[str, object], why: str
) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, reach, eui(1))
    assert store.finish_job(j, passed(eui(1), **change)) is JobState.FAILED
    row = store.job(j)
    assert row.state is JobState.FAILED
    assert why in (row.message or "")
    assert row.message is not None and row.message.startswith("not a confirmed pass")
    refused = [e for e in store.audit_log() if e.action == "pass-refused"]
    assert len(refused) == 1 and why in refused[0].detail["reason"]
    hub = store.hub(eui(1))
    assert hub is not None and not hub.pending  # a refused pass never reaches the DSP
    assert store.verify_audit().ok


def test_a_pass_that_is_not_newer_needs_a_recorded_downgrade_override(store: Store) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1), version_before="0x01050000")
    assert store.finish_job(j, passed(eui(1), version_before="0x01050000")) is JobState.FAILED
    assert "not newer" in (store.job(j).message or "")
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(2), version_before="0x01060000")
    out = passed(eui(2), version_before="0x01060000", overrides=["allow-downgrade (approved)"])
    assert store.finish_job(j, out) is JobState.PASSED


def test_version_comparison_ignores_case_and_spaces(store: Store) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1))
    out = passed(eui(1), version_after=" 0x01050000 ", image_version="0X01050000")
    assert store.finish_job(j, out) is JobState.PASSED


# -- leases ------------------------------------------------------------------------------


def test_a_second_live_process_of_a_station_is_refused(store_url: str) -> None:
    first = open_store(store_url)
    second = Store.open(store_url)
    try:
        with pytest.raises(StationBusy, match=f"station {STATION} is already running: pid"):
            second.acquire_lease(STATION)
        other = second.acquire_lease("bench-08")  # another station on the same database
        assert other.station_id == "bench-08"
    finally:
        second.close()
        first.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_stations_jobs_are_interrupted_once_by_the_next_start(
    store_url: str, key: StationKey, ring: KeyRing
) -> None:
    old = open_store(store_url)
    b = _batch(old)
    live = {}
    for slot, state in enumerate((JobState.DETECTED, JobState.WRITING, JobState.BOOTING), 1):
        j = old.start_job(b, slot, f"p{slot}", "demo-an3155")
        walk(old, j, state, eui(slot))
        live[j] = state
    done = old.start_job(b, 9, "p9", "demo-an3155")
    walk(old, done, JobState.BOOTING, eui(9))
    old.finish_job(done, passed(eui(9)))
    # As if it was killed: its pid is gone (and the lease is of this host).
    _raw(old, f"UPDATE station_leases SET pid = {_dead_pid()}, pid_start = NULL")
    old.lease = None
    old.close()

    new = open_store(store_url)  # a dead pid on this host frees the station at once
    try:
        recovery = new.recover(key)
        assert sorted(recovery.interrupted) == sorted(live)
        assert [c.batch for c in recovery.closed] == [b]
        assert recovery.closed[0].exported == [eui(9)]  # the pass it had not exported yet
        for j, was in live.items():
            row = new.job(j)
            assert row.state is JobState.INTERRUPTED and row.finished_at is not None
            last = new.job_events(j)[-1]
            assert last.state is JobState.INTERRUPTED and last.detail["from"] == str(was)
            assert "run it again" in (row.message or "")
        assert new.job(2).eui64 == eui(2)  # identified before the crash: the hub is named
        assert new.job(done).state is JobState.PASSED
        again = new.recover(key)
        assert again.interrupted == [] and again.closed == []
        check = new.verify_audit(ring)
        assert check.ok, check.problems
    finally:
        new.close()


def test_another_hosts_lease_holds_until_its_heartbeat_is_older_than_its_ttl(
    store_url: str, key: StationKey
) -> None:
    clock = FakeClock()
    far = open_store(store_url, clock=clock)
    b = _batch(far)
    j = far.start_job(b, 1, "p", "demo-an3155")
    walk(far, j, JobState.WRITING, eui(1))
    _raw(far, "UPDATE station_leases SET host = 'bench-pc-2'")
    here = open_store(store_url, station="bench-99", clock=clock)
    try:
        assert here.recover(key).interrupted == []  # its heartbeat is fresh: it is alive
        clock.advance(20)
        far.heartbeat()
        clock.advance(25)
        assert here.recover(key).interrupted == []
        clock.advance(10)  # 35 s without a heartbeat: past its 30 s
        recovery = here.recover(key)
        assert recovery.interrupted == [j] and [le.station_id for le in recovery.noticed] == [
            STATION
        ]
        # The old owner wakes up: every write of its is refused, nothing overwritten.
        with pytest.raises(LeaseLost):
            far.record_state(j, JobState.VERIFYING)
        with pytest.raises(LeaseLost):
            far.heartbeat()
        assert far.job(j).state is JobState.INTERRUPTED
    finally:
        here.close()
        far.close()


def test_a_live_station_is_never_interrupted_by_another(store_url: str, key: StationKey) -> None:
    mine = open_store(store_url)
    theirs = open_store(store_url, station="bench-08")
    try:
        j1 = mine.start_job(_batch(mine), 1, "p", "demo-an3155")
        b2 = theirs.start_batch(station_id="bench-08", operator="b", rig="r", catalog="c")
        j2 = theirs.start_job(b2, 1, "p", "demo-an3155")
        assert mine.recover(key).interrupted == []
        assert theirs.recover(key).interrupted == []
        assert mine.job(j1).state is JobState.DETECTED
        assert mine.job(j2).state is JobState.DETECTED
        with pytest.raises(LeaseLost):  # nor may one end the other's job
            mine.finish_job(j2, ended(eui(1), Result.FAILED, "x", "y"))
    finally:
        mine.close()
        theirs.close()


def test_writing_needs_the_stations_lease(store_url: str) -> None:
    with Store.open(store_url) as bare:
        with pytest.raises(StoreError, match="no station lease"):
            bare.start_batch(station_id=STATION, operator="a", rig="r", catalog="c")
        bare.acquire_lease(STATION)
        with pytest.raises(StoreError, match="holds station bench-07, not bench-08"):
            bare.start_batch(station_id="bench-08", operator="a", rig="r", catalog="c")
        bare.release_lease()
        with pytest.raises(StoreError, match="no station lease"):
            bare.start_batch(station_id=STATION, operator="a", rig="r", catalog="c")


# -- values the records cannot hold ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("version_after", "0x" + "0" * 40, "jobs.version_after takes at most 32"),
        ("image", "x" * 2000, "jobs.image_path takes at most 1024"),
        ("message", "m" * 70000, "jobs.message takes at most 65536"),
        ("error", "Nul\0Error", "NUL"),
    ],
)
def test_a_value_too_long_is_refused_alike_on_every_backend(
    store: Store, field: str, value: str, why: str
) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.WRITING, eui(1))
    out = ended(eui(1), Result.FAILED, "write", "NACK")
    setattr(out, field, value)
    with pytest.raises(ValueTooLong, match=why):
        store.finish_job(j, out)
    assert store.job(j).state is JobState.WRITING  # nothing of it was recorded
    with pytest.raises(ValueTooLong, match=r"batches\.operator"):
        store.start_batch(station_id=STATION, operator="o" * 200, rig="r", catalog="c")


# -- threads -------------------------------------------------------------------------------


def test_many_slot_threads_write_at_once(store: Store) -> None:
    b = _batch(store)
    slots, per_slot = 12, 6
    errors: list[BaseException] = []
    barrier = threading.Barrier(slots)

    def slot_worker(slot: int) -> None:
        try:
            barrier.wait()
            for n in range(per_slot):
                hub = eui(slot * 100 + n)
                j = store.start_job(b, slot, f"/dev/pts/{slot}", "demo-an3155")
                if n % 3 == 2:
                    walk(store, j, JobState.WRITING, hub)
                    store.finish_job(j, ended(hub, Result.FAILED, "write", "NACK"))
                else:
                    walk(store, j, JobState.BOOTING, hub)
                    store.finish_job(j, passed(hub))
                store.audit("alice", "note", {"slot": slot, "n": n})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=slot_worker, args=(s,)) for s in range(1, slots + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = store.jobs(b)
    assert len(rows) == slots * per_slot
    assert store.batch(b).counts == {"passed": slots * 4, "failed": slots * 2}
    for row in rows:
        events = store.job_events(row.id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert all(legal(a.state, c.state) for a, c in itertools.pairwise(events))
        assert events[-1].state is row.state
    check = store.verify_audit()
    assert check.ok, check.problems


# -- audit chain ---------------------------------------------------------------------------


def test_audit_chain_is_intact_and_canonical(store: Store) -> None:
    b = _batch(store)
    for n in range(1, 4):
        j = store.start_job(b, n, "p", "demo-an3155")
        walk(store, j, JobState.BOOTING, eui(n))
        store.finish_job(j, passed(eui(n)))
    store.audit("bob", "override-approved", {"reason": "downgrade signed off", "ticket": 77})
    log = store.audit_log()
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert log[0].prev_hash == GENESIS_HASH
    for before, entry in itertools.pairwise(log):
        assert entry.prev_hash == before.hash
    last = log[-1]
    detail_text = '{"reason":"downgrade signed off","ticket":77}'
    assert last.hash == audit_hash(
        last.seq, last.at, "bob", "override-approved", detail_text, last.prev_hash
    )
    check = store.verify_audit()
    assert (check.ok, check.entries, check.head) == (True, len(log), last.hash)


# -- opening -------------------------------------------------------------------------------


def test_sqlite_is_wal_full_sync_with_foreign_keys(tmp_path: Path) -> None:
    with Store.open(data_dir=tmp_path / "data") as store:
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        store.acquire_lease(STATION)
        _batch(store)
    db = tmp_path / "data" / "station.db"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("PRAGMA foreign_keys=ON")
            raw.execute(
                "INSERT INTO jobs (batch_id, lease_id, slot, port, profile, state, started_at, "
                "overrides, notes, bytes_written) VALUES (999, 'x', 1, 'p', 'x', 'detected', "
                "'2025-01-01 00:00:00.000000', '[]', '[]', 0)"
            )


def test_open_without_create_refuses_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no station database"):
        Store.open(data_dir=tmp_path, create=False)
    assert not (tmp_path / "station.db").exists()
    Store.open(data_dir=tmp_path).close()
    Store.open(data_dir=tmp_path, create=False).close()


def test_open_refuses_another_schema_version(tmp_path: Path) -> None:
    with Store.open(data_dir=tmp_path) as store:
        _raw(store, "UPDATE station_meta SET value = '1' WHERE key = 'schema_version'")
    expected = f"schema version 1; this station writes version {SCHEMA_VERSION}"
    with pytest.raises(StoreError, match=expected):
        Store.open(data_dir=tmp_path)


def test_a_bad_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Store.open("://not a url", data_dir=tmp_path)


def test_a_plain_path_is_a_sqlite_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--db station-data/demo/station.db`` works as a user types it (relative or not),
    and a read-only command still refuses a file that is not there."""
    monkeypatch.chdir(tmp_path)
    with open_store(str(Path("demo") / "station.db")) as store:
        _batch(store)
    with Store.open("demo/station.db", create=False) as store:
        assert store.latest_batch_id() is not None
    with pytest.raises(ConfigError, match=r"no station database at elsewhere/station\.db") as e:
        Store.open("elsewhere/station.db", create=False)
    assert "--db station-data/demo/station.db" in str(e.value.hint)
    assert "station db init --db elsewhere/station.db" in str(e.value.hint)  # how to make one


def test_the_clock_is_injectable_and_times_are_utc() -> None:
    clock = FakeClock()
    with open_store("sqlite://", clock=clock) as store:
        b = _batch(store)
        j = store.start_job(b, 1, "p", "demo-an3155")
        clock.advance(90)
        store.finish_job(j, ended(eui(1), Result.FAILED, "write", "x"))
        row = store.job(j)
        assert row.started_at == FakeClock().now
        assert row.finished_at is not None
        assert (row.finished_at - row.started_at).total_seconds() == 90


# -- property: no false pass ---------------------------------------------------------------

_PROPERTY_STORE: list[Store] = []


def _property_store() -> Store:
    if not _PROPERTY_STORE:
        _PROPERTY_STORE.append(open_store("sqlite://"))
    return _PROPERTY_STORE[0]


_KEEP = "keep"
#: Each field of a passing outcome, kept (most draws) or replaced by a wrong value, so that
#: outcomes near a pass, with one or two pieces of evidence wrong, come up often.
_CHANGES = {
    "result": list(Result),
    "verify_method": [None, "", "readback"],
    "image_version": ["", "0x01040000", OLD],
    "version_after": [None, "", "0x01040000", OLD],
    "target_version": [None, "0x01060000", OLD],
    "image_sha256": ["", "abc", "ab" * 32],
    "eui64": [None, eui(2), "junk"],
    "eui64_confirmed": [None, eui(2)],
    "hw_version": [None, 3],
    "version_before": [NEW, None, "0x01060000"],
    "overrides": [["allow-downgrade (approved)"]],
}
_outcomes = st.fixed_dictionaries(
    {k: st.sampled_from([_KEEP, _KEEP, _KEEP, *values]) for k, values in _CHANGES.items()}
).map(lambda change: passed(eui(1), **{k: v for k, v in change.items() if v != _KEEP}))
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("state"), st.sampled_from(list(JobState))),
        st.tuples(st.just("walk"), st.sampled_from([*CHAIN, *[JobState.BOOTING] * 6])),
        st.tuples(st.just("finish"), _outcomes),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps, last=_outcomes, recorded=st.sampled_from([OLD, OLD, NEW]))
def test_no_sequence_of_calls_reaches_passed_without_evidence(
    steps: list[tuple[str, object]], last: FlashOutcome, recorded: str
) -> None:
    store = _property_store()
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    passing: FlashOutcome | None = None
    for kind, arg in [*steps, ("walk", JobState.BOOTING), ("finish", last)]:
        try:
            if kind == "state":
                assert isinstance(arg, JobState)
                store.record_state(j, arg, identity(eui(1), recorded))
            elif kind == "walk":
                assert isinstance(arg, JobState)
                src = store.job(j).state
                if src in CHAIN and CHAIN.index(src) < CHAIN.index(arg):
                    for state in CHAIN[CHAIN.index(src) + 1 : CHAIN.index(arg) + 1]:
                        detail = (
                            identity(eui(1), recorded)
                            if state is JobState.IDENTIFIED
                            else {"target_version": NEW, "image_sha256": SHA}
                            if state is JobState.PLANNED
                            else {}
                        )
                        store.record_state(j, state, detail)
            else:
                assert isinstance(arg, FlashOutcome)
                if store.finish_job(j, arg) is JobState.PASSED:
                    passing = arg
        except IllegalTransition:
            pass
    row = store.job(j)
    events = store.job_events(j)
    assert events[-1].state is row.state
    assert all(legal(a.state, c.state) for a, c in itertools.pairwise(events))
    if row.state is JobState.PASSED:
        assert passing is not None and passing.verify_method
        assert [e.state for e in events] == [*CHAIN, JobState.PASSED]
        assert row.verify_method and row.version_after
        assert row.version_after.strip().lower() == row.target_version.lower() == NEW.lower()
        assert row.image_version == NEW and row.eui64 == eui(1) and row.image_sha256 == SHA
        # Never "upgraded" to what it already ran, unless a downgrade was approved.
        assert row.version_before != NEW or any("downgrade" in o for o in row.overrides)
        assert passing.eui64_confirmed == eui(1) and row.hw_version == 2


def test_two_stores_on_one_database_keep_one_audit_chain(store_url: str, tmp_path: Path) -> None:
    """Two processes' stores (two engines, two locks) race for the next audit entry."""
    stores = [Store.open(store_url, data_dir=tmp_path) for _ in range(2)]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                stores[(n + i) % 2].audit(f"op{n}", "note", {"writer": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        check = stores[0].verify_audit()
        assert check.ok and check.entries == 90
    finally:
        for s in stores:
            s.close()


def test_a_group_commits_once_and_undoes_only_the_write_that_failed(store: Store) -> None:
    batch = _batch(store)
    job = store.start_job(batch, 1, "/dev/pts/1", "demo-an3155")
    with store.group():
        store.record_state(job, JobState.IDENTIFIED, identity(eui(1)))
        with pytest.raises(IllegalTransition):
            store.record_state(job, JobState.WRITING)  # skips PLANNED: refused alone
        store.audit("op", "note", {"n": 1})
        store.record_state(job, JobState.PLANNED)
        # Nothing is durable, nor visible to other connections, before the group ends.
        assert store.job(job).state is JobState.DETECTED
        with pytest.raises(StoreError, match="do not nest"), store.group():
            pass
    assert [e.state for e in store.job_events(job)] == [
        JobState.DETECTED,
        JobState.IDENTIFIED,
        JobState.PLANNED,
    ]
    assert store.verify_audit().ok


def test_a_job_records_the_pages_it_wrote_and_left(store: Store) -> None:
    b = _batch(store, None)
    j = store.start_job(b, 1, "/dev/pts/4", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1))
    out = passed(eui(1))
    out.pages_written, out.pages_skipped, out.bytes_written = 3, 125, 6144
    assert store.finish_job(j, out) is JobState.PASSED
    [row] = store.jobs(b)
    assert (row.pages_written, row.pages_skipped, row.bytes_written) == (3, 125, 6144)

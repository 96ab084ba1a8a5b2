"""The store: round trips, the state machine it enforces, threads, the audit chain.

Tests taking ``store_url`` run on SQLite, and on PostgreSQL too when STATION_TEST_PG_URL is
set (they are skipped there otherwise).
"""

from __future__ import annotations

import itertools
import sqlite3
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
from station.records.manifest import Manifest
from station.records.store import (
    GENESIS_HASH,
    BatchFinished,
    IllegalTransition,
    Store,
    StoreError,
    UnknownRecord,
    audit_hash,
)

from .recordkit import NEW, OLD, SHA, FakeClock, backend_url, ended, eui, passed, walk


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store.open(store_url, data_dir=tmp_path)
    yield s
    s.close()


def _batch(store: Store, manifest: Manifest | None = None) -> int:
    return store.start_batch(
        station_id="bench-07",
        operator="alice",
        rig="rigs/bench-07.toml",
        catalog="station-data/catalog",
        manifest=manifest,
    )


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
    assert (row.eui64, row.hw_version, row.found_in) == (eui(1), 2, "application")
    assert (row.version_before, row.version_after, row.image_version) == (OLD, NEW, NEW)
    assert (row.image_path, row.image_sha256) == (out.image, SHA)
    assert (row.signature, row.signer) == ("valid", "demo-signer")
    assert (row.verify_method, row.verify_detail) == ("crc", out.verify_detail)
    assert row.overrides == ("allow-unsigned (image signature: unsigned)",)
    assert row.notes == ("n1",)
    assert (row.seconds, row.bytes_written) == (42.5, 65536)
    assert row.finished_at is not None and row.finished_at >= row.started_at
    assert row.started_at.tzinfo is not None

    events = store.job_events(j)
    assert [e.state for e in events] == [*CHAIN, JobState.PASSED]
    assert [e.seq for e in events] == list(range(1, 9))
    assert events[0].detail == {"slot": 3, "port": "/dev/pts/4", "profile": "demo-an3155"}

    hub = store.hub(eui(1).replace("-", "").lower())
    assert hub is not None
    assert (hub.model, hub.hw_version, hub.firmware_version, hub.last_job_id) == (
        "demo-an3155",
        2,
        NEW,
        j,
    )
    [batch] = store.batches()
    assert batch.manifest == "cn1.csv" and batch.manifest_sha256 == manifest.sha256
    assert batch.counts == {"passed": 1}
    assert store.consignment(b) == list(manifest.items)

    actions = [e.action for e in store.audit_log()]
    assert actions == ["batch-started", "override", "hub-passed"]
    passed_entry = store.audit_log()[-1]
    assert passed_entry.detail["image_sha256"] == SHA
    assert passed_entry.detail["eui64"] == eui(1)
    assert passed_entry.operator == "alice"
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
        walk(store, j, reach)
        assert store.finish_job(j, out) is final
        row = store.job(j)
        assert row.state is final and row.message == out.message and row.phase == out.phase
    assert store.hub(eui(2)) is not None  # a refused hub was still seen
    assert store.batch(b).counts == {"failed": 2, "refused": 1, "skipped": 1}


def test_finish_batch_records_counts_and_refuses_new_jobs(store: Store) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    store.finish_job(j, ended(eui(1), Result.FAILED, "identify", "x"))
    store.finish_batch(b)
    assert store.batch(b).finished_at is not None
    assert store.audit_log()[-1].detail == {"batch": b, "counts": {"failed": 1}}
    with pytest.raises(BatchFinished):
        store.start_job(b, 2, "p", "demo-an3155")
    with pytest.raises(BatchFinished):
        store.finish_batch(b)
    with pytest.raises(UnknownRecord):
        store.start_job(b + 100, 1, "p", "demo-an3155")
    assert store.latest_batch_id() == b


# -- the state machine ---------------------------------------------------------------------


def test_illegal_transitions_are_refused_and_leave_no_trace(store: Store) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    for bad in (JobState.PLANNED, JobState.BOOTING, JobState.DETECTED, JobState.PASSED):
        with pytest.raises(IllegalTransition) as info:
            store.record_state(j, bad)
        assert info.value.src is JobState.DETECTED and info.value.dst is bad
    walk(store, j, JobState.BOOTING)
    with pytest.raises(IllegalTransition, match="only finish_job"):
        store.record_state(j, JobState.PASSED)
    with pytest.raises(IllegalTransition):
        store.record_state(j, JobState.WRITING)  # backwards
    assert [e.state for e in store.job_events(j)] == list(CHAIN)
    store.record_state(j, JobState.FAILED, {"reason": "operator pulled the hub"})
    assert store.job(j).message == "operator pulled the hub"
    assert store.job(j).phase == "boot"
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
        (JobState.BOOTING, {"version_after": "0x01040000"}, "runs 0x01040000"),
        (JobState.BOOTING, {"image_version": ""}, "image's version is not recorded"),
        (JobState.BOOTING, {"image_sha256": ""}, "SHA-256"),
        (JobState.BOOTING, {"eui64": None}, "EUI-64 was not read"),
        (JobState.BOOTING, {"eui64": "not-a-hub"}, "not valid"),
    ],
)
def test_a_pass_without_its_evidence_is_recorded_as_failed(
    store: Store, reach: JobState, change: dict[str, object], why: str
) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, reach)
    assert store.finish_job(j, passed(eui(1), **change)) is JobState.FAILED
    row = store.job(j)
    assert row.state is JobState.FAILED
    assert why in (row.message or "")
    assert row.message is not None and row.message.startswith("not a confirmed pass")
    log = store.audit_log()
    assert [e.action for e in log] == ["batch-started", "pass-refused"]
    assert why in log[-1].detail["reason"]
    assert store.verify_audit().ok


def test_version_comparison_ignores_case_and_spaces(store: Store) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.BOOTING)
    assert (
        store.finish_job(
            j, passed(eui(1), version_after=" 0x01050000 ", image_version="0X01050000")
        )
        is JobState.PASSED
    )


def test_mark_interrupted_ends_every_live_job(store: Store) -> None:
    b = _batch(store)
    live = {}
    for slot, state in enumerate((JobState.DETECTED, JobState.WRITING, JobState.BOOTING), 1):
        j = store.start_job(b, slot, f"p{slot}", "demo-an3155")
        walk(store, j, state, eui(slot))
        live[j] = state
    done = store.start_job(b, 9, "p9", "demo-an3155")
    walk(store, done, JobState.BOOTING)
    store.finish_job(done, passed(eui(9)))

    assert store.mark_interrupted() == sorted(live)
    for j, was in live.items():
        row = store.job(j)
        assert row.state is JobState.INTERRUPTED and row.finished_at is not None
        last = store.job_events(j)[-1]
        assert last.state is JobState.INTERRUPTED and last.detail["from"] == str(was)
        assert "run it again" in (row.message or "")
    assert store.job(2).eui64 == eui(2)  # identified before the crash: the hub is named
    assert store.job(done).state is JobState.PASSED
    assert store.mark_interrupted() == []
    assert store.audit_log()[-1].action == "jobs-interrupted"


def test_mark_interrupted_can_spare_other_stations(store: Store) -> None:
    mine = store.start_batch(station_id="bench-1", operator="a", rig="r", catalog="c")
    theirs = store.start_batch(station_id="bench-2", operator="b", rig="r", catalog="c")
    j1 = store.start_job(mine, 1, "p", "demo-an3155")
    j2 = store.start_job(theirs, 1, "p", "demo-an3155")
    assert store.mark_interrupted(station_id="bench-1") == [j1]
    assert store.job(j2).state is JobState.DETECTED


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
    assert check.ok, check
    assert check.entries == 1 + slots * 4 + slots * per_slot


# -- audit chain ---------------------------------------------------------------------------


def _audited_store(store: Store) -> None:
    b = _batch(store)
    for n in range(1, 4):
        j = store.start_job(b, n, "p", "demo-an3155")
        walk(store, j, JobState.BOOTING)
        store.finish_job(j, passed(eui(n)))
    store.audit("bob", "override-approved", {"reason": "downgrade signed off", "ticket": 77})


def _raw(store: Store, sql: str) -> None:
    with store._engine.begin() as conn:
        conn.execute(text(sql))


def test_audit_chain_is_intact_and_canonical(store: Store) -> None:
    _audited_store(store)
    log = store.audit_log()
    assert [e.seq for e in log] == [1, 2, 3, 4, 5]
    assert log[0].prev_hash == GENESIS_HASH
    for before, entry in itertools.pairwise(log):
        assert entry.prev_hash == before.hash
    last = log[-1]
    detail_text = '{"reason":"downgrade signed off","ticket":77}'
    assert last.hash == audit_hash(
        last.seq, last.at, "bob", "override-approved", detail_text, last.prev_hash
    )
    check = store.verify_audit()
    assert (check.ok, check.entries, check.head) == (True, 5, last.hash)


@pytest.mark.parametrize(
    ("sql", "bad_seq", "why"),
    [
        (
            "UPDATE audit SET detail = REPLACE(detail, '{sha}', '{other}') WHERE seq = 3",
            3,
            "altered",
        ),
        ("UPDATE audit SET operator = 'mallory' WHERE seq = 2", 2, "altered"),
        ("UPDATE audit SET action = 'hub-passed' WHERE seq = 5", 5, "altered"),
        ("DELETE FROM audit WHERE seq = 3", 3, "missing"),
        ("UPDATE audit SET prev_hash = '{genesis}' WHERE seq = 4", 4, "prev_hash"),
        # A forger who recomputes the edited entry's own hash breaks the next link.
        ("UPDATE audit SET hash = '{forged}', operator = 'mallory' WHERE seq = 2", 3, "prev_hash"),
    ],
)
def test_audit_tampering_is_found_and_named(store: Store, sql: str, bad_seq: int, why: str) -> None:
    _audited_store(store)
    e2 = store.audit_log()[1]
    forged = audit_hash(
        e2.seq,
        e2.at,
        "mallory",
        e2.action,
        store._read(
            lambda c: c.execute(text("SELECT detail FROM audit WHERE seq = 2")).scalar_one()
        ),
        e2.prev_hash,
    )
    _raw(store, sql.format(sha=SHA, other="ab" * 32, genesis=GENESIS_HASH, forged=forged))
    check = store.verify_audit()
    assert not check.ok
    assert check.bad_seq == bad_seq
    assert why in check.reason


# -- opening -------------------------------------------------------------------------------


def test_sqlite_is_wal_full_sync_with_foreign_keys(tmp_path: Path) -> None:
    with Store.open(data_dir=tmp_path / "data") as store:
        with store._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        _batch(store)
    db = tmp_path / "data" / "station.db"
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("PRAGMA foreign_keys=ON")
            raw.execute(
                "INSERT INTO jobs (batch_id, slot, port, profile, state, started_at, overrides,"
                " notes, bytes_written) VALUES (999, 1, 'p', 'x', 'detected', '2025-01-01', "
                "'[]', '[]', 0)"
            )


def test_open_without_create_refuses_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no station database"):
        Store.open(data_dir=tmp_path, create=False)
    assert not (tmp_path / "station.db").exists()
    Store.open(data_dir=tmp_path).close()
    Store.open(data_dir=tmp_path, create=False).close()


def test_open_refuses_another_schema_version(tmp_path: Path) -> None:
    with Store.open(data_dir=tmp_path) as store:
        _raw(store, "UPDATE station_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        Store.open(data_dir=tmp_path)


def test_a_bad_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Store.open("not a url", data_dir=tmp_path)


def test_the_clock_is_injectable_and_times_are_utc(tmp_path: Path) -> None:
    clock = FakeClock()
    with Store.open("sqlite://", clock=clock) as store:
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
        _PROPERTY_STORE.append(Store.open("sqlite://"))
    return _PROPERTY_STORE[0]


_outcomes = st.builds(
    lambda result, verify, image_version, after, hub, sha: FlashOutcome(
        port="p",
        profile="demo-an3155",
        result=result,
        image_version=image_version,
        image_sha256=sha,
        eui64=hub,
        version_before=OLD,
        version_after=image_version if after == "same" else after,
        verify_method=verify,
    ),
    st.sampled_from(list(Result)),
    st.sampled_from([None, "", "crc", "readback"]),
    st.sampled_from(["", NEW, "0x01040000"]),
    st.sampled_from([None, "same", NEW, "0x01040000", ""]),
    st.sampled_from([None, eui(1), "junk"]),
    st.sampled_from(["", SHA, "abc"]),
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("state"), st.sampled_from(list(JobState))),
        st.tuples(st.just("walk"), st.sampled_from(list(CHAIN))),
        st.tuples(st.just("finish"), _outcomes),
    ),
    max_size=12,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps)
def test_no_sequence_of_calls_reaches_passed_without_evidence(
    steps: list[tuple[str, object]],
) -> None:
    store = _property_store()
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    passing: FlashOutcome | None = None
    for kind, arg in steps:
        try:
            if kind == "state":
                assert isinstance(arg, JobState)
                store.record_state(j, arg)
            elif kind == "walk":
                assert isinstance(arg, JobState)
                src = store.job(j).state
                if src in CHAIN and CHAIN.index(src) < CHAIN.index(arg):
                    for state in CHAIN[CHAIN.index(src) + 1 : CHAIN.index(arg) + 1]:
                        store.record_state(j, state)
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
        assert passing.image_version and passing.version_after == passing.image_version
        assert [e.state for e in events] == [*CHAIN, JobState.PASSED]
        assert row.verify_method and row.version_after == row.image_version
        assert row.eui64 == eui(1) and row.image_sha256 == SHA


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
        store.record_state(job, JobState.IDENTIFIED, {"eui64": eui(1)})
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

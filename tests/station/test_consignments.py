"""Consignments across stations: loaded once, served by every station, reconciled and
exported to the DSP once per hub, with the station that did it.

Stores on one database stand for stations; tests taking ``db_url`` run on SQLite, and on
PostgreSQL too when STATION_TEST_PG_URL is set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from drivers.errors import ConfigError
from station.events import JobState
from station.outcome import Result
from station.records.consignments import check_manifest, dsp_text, status
from station.records.errors import HUB_IN_FLIGHT, HubInFlight, StoreError
from station.records.keys import KeyRing, StationKey
from station.records.manifest import Manifest
from station.records.store import Store

from .recordkit import (
    NEW,
    OLD,
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
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


def manifest(cid: str, hubs: list[int], name: str = "cn.csv") -> Manifest:
    lines = ["consignment id,EUI-64,model,firmware version"]
    lines += [f"{cid},{eui(n)},demo-an3155,1.1.0.0" for n in hubs]
    return Manifest.parse(("\n".join(lines) + "\n").encode(), name=name)


def _batch(store: Store, station: str) -> int:
    return store.start_batch(station_id=station, operator=f"op-{station}", rig="r", catalog="c")


def _pass(store: Store, batch: int, slot: int, hub: int) -> int:
    job = store.start_job(batch, slot, f"p{slot}", "demo-an3155")
    walk(store, job, JobState.BOOTING, eui(hub))
    store.finish_job(job, passed(eui(hub)))
    return job


def _fail(store: Store, batch: int, slot: int, hub: int) -> int:
    job = store.start_job(batch, slot, f"p{slot}", "demo-an3155")
    walk(store, job, JobState.WRITING, eui(hub))
    store.finish_job(job, ended(eui(hub), Result.FAILED, "write", "NACK at 0x08004000"))
    return job


def _keys(tmp_path: Path, *stations: str) -> dict[str, StationKey]:
    return {s: StationKey.load_or_create(tmp_path / "keys", s) for s in stations}


def test_a_consignment_is_loaded_once_and_a_hub_is_in_one_open_consignment(
    db_url: str,
) -> None:
    with Store.open(db_url) as store:
        row = store.load_consignment("CN-1", manifest("CN-1", [1, 2, 3]), operator="alice")
        assert (row.consignment_id, row.hubs, row.open) == ("CN-1", 3, True)
        with pytest.raises(StoreError, match=r"consignment CN-1 was loaded at .* by alice"):
            store.load_consignment("CN-1", manifest("CN-1", [4]), operator="bob")
        with pytest.raises(StoreError, match=f"{eui(3)} is listed by open consignment CN-1"):
            store.load_consignment("CN-2", manifest("CN-2", [3, 4]), operator="bob")
        assert [c.consignment_id for c in store.consignment_records(open_only=True)] == ["CN-1"]
        store.close_consignment("CN-1", operator="alice")
        with pytest.raises(StoreError, match="was closed at"):
            store.close_consignment("CN-1", operator="alice")
        # Closed, its hubs may come back in another consignment.
        store.load_consignment("CN-2", manifest("CN-2", [3, 4]), operator="bob")
        assert [c.consignment_id for c in store.consignment_records(open_only=True)] == ["CN-2"]


def test_check_manifest_refuses_another_consignments_line() -> None:
    with pytest.raises(ConfigError, match=r"^cn\.csv:3: lists consignment 'CN-9', not 'CN-1'"):
        check_manifest(
            Manifest.parse(
                f"consignment id,EUI-64\nCN-1,{eui(1)}\nCN-9,{eui(2)}\n".encode(), name="cn.csv"
            ),
            "CN-1",
            "cn.csv",
        )


def test_stations_serve_one_consignment_reconciled_and_exported_once_per_hub(
    db_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    keys = _keys(tmp_path, "bench-a", "bench-b")
    a = open_store(db_url, station="bench-a", clock=clock)
    b = open_store(db_url, station="bench-b", clock=clock)
    try:
        ba = _batch(a, "bench-a")
        _pass(a, ba, 1, 6)  # before the consignment was loaded: not its history
        clock.advance(1)
        a.load_consignment("CN-7", manifest("CN-7", [1, 2, 3, 4, 5, 6]), operator="alice")
        clock.advance(1)
        bb = _batch(b, "bench-b")
        _pass(a, ba, 1, 1)
        _fail(a, ba, 2, 2)
        _pass(b, bb, 1, 2)  # failed at A, re-seated at B: passed there
        _pass(b, bb, 2, 3)
        j4 = a.start_job(ba, 3, "p3", "demo-an3155")
        walk(a, j4, JobState.WRITING, eui(4))
        # The hub is presented at B too: refused there, still in flight at A.
        jr = b.start_job(bb, 3, "p3", "demo-an3155")
        with pytest.raises(HubInFlight) as refused:
            b.record_state(jr, JobState.IDENTIFIED, identity(eui(4)))
        b.finish_job(
            jr,
            ended(eui(4), Result.REFUSED, "identify", refused.value.message, error=HUB_IN_FLIGHT),
        )

        st = status(a, "CN-7")
        by = {h.eui64: h for h in st.hubs}
        assert by[eui(1)].result == "passed" and by[eui(1)].station_id == "bench-a"
        assert by[eui(2)].result == "passed" and by[eui(2)].station_id == "bench-b"
        assert by[eui(2)].attempts == 2 and by[eui(2)].version_before == OLD
        assert by[eui(3)].result == "passed"
        assert by[eui(4)].result == "in_flight"
        assert (by[eui(4)].station_id, by[eui(4)].slot, by[eui(4)].state) == (
            "bench-a",
            3,
            "writing",
        )
        assert by[eui(5)].result == "missing"
        assert by[eui(6)].result == "missing"  # its pass came before the consignment
        assert st.counts() == {
            "passed": 3,
            "current": 0,
            "failed": 0,
            "refused": 0,
            "in_flight": 1,
            "missing": 2,
        }
        assert st.by_station == {
            "bench-a": {"passed": 1, "current": 0, "failed": 0, "refused": 0, "in_flight": 1},
            "bench-b": {"passed": 2, "current": 0, "failed": 0, "refused": 0, "in_flight": 0},
        }
        assert st.exported == 0 and sorted(st.waiting) == [eui(1), eui(2), eui(3)]

        with pytest.raises(StoreError, match=rf"1 hub.s. in flight .{eui(4)} at bench-a slot 3"):
            b.close_consignment("CN-7", operator="bob")

        a.finish_job(j4, ended(eui(4), Result.FAILED, "write", "lost"))
        a.close_batch(ba, keys["bench-a"])
        text, final = dsp_text(b, "CN-7", "json")
        doc = json.loads(text)
        assert not final and doc["waiting"] == [eui(2), eui(3)]
        assert [(h["eui64"], h["station_id"]) for h in doc["hubs"]] == [(eui(1), "bench-a")]
        b.close_batch(bb, keys["bench-b"])
        b.close_consignment("CN-7", operator="bob")

        text, final = dsp_text(b, "CN-7", "json")
        doc = json.loads(text)
        assert final and doc["state"] == "closed" and doc["waiting"] == []
        rows = [(h["eui64"], h["station_id"], h["consignment_id"]) for h in doc["hubs"]]
        assert rows == [
            (eui(1), "bench-a", "CN-7"),
            (eui(2), "bench-b", "CN-7"),
            (eui(3), "bench-b", "CN-7"),
        ]
        assert all((h["version_before"], h["version_after"]) == (OLD, NEW) for h in doc["hubs"])
        csv_text, _ = dsp_text(b, "CN-7", "csv")
        assert csv_text.count("\r\n") == 4 and csv_text.endswith(",bench-b,op-bench-b,2\r\n")
        # Reprinting gives the same rows; the status counts agree.
        assert dsp_text(b, "CN-7", "json")[0] == text
        st = status(b, "CN-7")
        assert st.counts()["failed"] == 1 and st.exported == 3 and st.waiting == []
        assert st.to_json()["state"] == "closed"
        ring = KeyRing.from_dir(tmp_path / "keys")
        check = b.verify_audit(ring)
        assert check.ok, check.problems
    finally:
        a.close()
        b.close()


def test_the_audit_chain_covers_consignments(db_url: str, tmp_path: Path) -> None:
    with Store.open(db_url) as store:
        store.load_consignment("CN-1", manifest("CN-1", [1, 2]), operator="alice")
        ring = KeyRing.from_dir(tmp_path)
        assert store.verify_audit(ring).ok
        with store._engine.begin() as conn:
            conn.execute(
                text(f"UPDATE consignment_hubs SET eui64 = '{eui(9)}' WHERE eui64 = '{eui(2)}'")
            )
        check = store.verify_audit(ring)
        assert not check.ok
        assert any("consignment CN-1 differs from its audited record" in p for p in check.problems)

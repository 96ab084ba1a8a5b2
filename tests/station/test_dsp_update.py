"""The DSP update is defined by hub, exported exactly once, and survives any crash.

Each test walks the store the way the controller does (identified, planned, erasing...)
and the way a restart does (a new lease, Store.recover), and checks what the DSP would be
told: every hub whose firmware changed, once, with the version it really runs.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.events import JobState
from station.outcome import Result
from station.records.keys import StationKey
from station.records.manifest import Manifest
from station.records.store import Store

from .recordkit import NEW, OLD, SHA, STATION, backend_url, ended, eui, open_store, passed, walk


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


@pytest.fixture
def key(tmp_path: Path) -> StationKey:
    return StationKey.load_or_create(tmp_path / "keys", STATION)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = open_store(url)
    yield s
    s.close()


def _batch(store: Store, manifest: Manifest | None = None) -> int:
    return store.start_batch(
        station_id=STATION, operator="alice", rig="r", catalog="c", manifest=manifest
    )


def _rows(store: Store, batch: int) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.dsp_text(batch, "csv"), newline="")))


def _killed(store: Store) -> None:
    """As if the station's process was killed: its pid is gone, nothing more is written."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with store._engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE station_leases SET pid = {child.pid}, pid_start = NULL")
    store.lease = None
    store.close()


def test_a_hub_flashed_but_recorded_interrupted_is_reported_by_the_next_batch(
    url: str, key: StationKey
) -> None:
    """The crash of the issue: the hub was written and booted, the station died before it
    recorded the pass; the next run finds the hub current and skips it. It must still be in
    a DSP update, once, as OLD -> NEW."""
    first = open_store(url)
    b1 = _batch(first)
    j = first.start_job(b1, 1, "p", "demo-an3155")
    walk(first, j, JobState.BOOTING, eui(1))
    _killed(first)

    second = open_store(url)
    try:
        recovery = second.recover(key)
        assert recovery.interrupted == [j]
        assert [(c.batch, c.exported) for c in recovery.closed] == [(b1, [])]  # unknown yet
        assert second.job(j).eui64 == eui(1) and second.job(j).version_before == OLD
        b2 = _batch(second)
        j2 = second.start_job(b2, 1, "p", "demo-an3155")
        walk(second, j2, JobState.IDENTIFIED, eui(1), version_before=NEW)
        skipped = ended(eui(1), Result.SKIPPED, "plan", "already current", version_before=NEW)
        skipped.target_version, skipped.image_sha256 = NEW, SHA
        assert second.finish_job(j2, skipped) is JobState.SKIPPED
        hub = second.hub(eui(1))
        assert hub is not None and hub.pending and hub.running_version == NEW
        closed = second.close_batch(b2, key)
        assert closed.exported == [eui(1)]
        [row] = _rows(second, b2)
        assert (row["eui64"], row["version_before"], row["version_after"]) == (eui(1), OLD, NEW)
        assert row["image_sha256"] == SHA  # the catalogued release the hub was found running
        # Exactly once: a third batch that meets the hub again exports nothing for it.
        b3 = _batch(second)
        j3 = second.start_job(b3, 1, "p", "demo-an3155")
        walk(second, j3, JobState.IDENTIFIED, eui(1), version_before=NEW)
        second.finish_job(j3, skipped)
        assert second.close_batch(b3, key).exported == []
        assert _rows(second, b3) == [] and len(_rows(second, b2)) == 1
    finally:
        second.close()


def test_a_killed_batch_is_closed_by_the_restart_and_reports_its_passes(
    url: str, key: StationKey
) -> None:
    first = open_store(url)
    b1 = _batch(first)
    for n in (1, 2):
        j = first.start_job(b1, n, f"p{n}", "demo-an3155")
        walk(first, j, JobState.BOOTING, eui(n))
        first.finish_job(j, passed(eui(n)))
    _killed(first)
    second = open_store(url)
    try:
        recovery = second.recover(key)
        [closed] = recovery.closed
        assert closed.batch == b1 and sorted(closed.exported) == [eui(1), eui(2)]
        assert "closed after a restart" in (second.batch(b1).closed_reason or "")
        assert [r["eui64"] for r in _rows(second, b1)] == [eui(1), eui(2)]
        assert second.report_head(b1).signature is not None
    finally:
        second.close()


def test_a_hub_interrupted_mid_write_is_not_reported_until_a_version_is_read(
    store: Store, key: StationKey
) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1))
    store.finish_job(j, passed(eui(1)))  # 1.1 -> 1.5, not exported yet
    j2 = store.start_job(b, 1, "p", "demo-an3155")  # re-seated and written again (forced)
    walk(store, j2, JobState.WRITING, eui(1), version_before=NEW)
    store.finish_job(j2, ended(eui(1), Result.FAILED, "write", "power lost"))
    hub = store.hub(eui(1))
    assert hub is not None and hub.running_version is None and not hub.pending
    assert store.close_batch(b, key).exported == []  # it runs nothing known: tell nobody


def test_the_manifests_version_is_what_a_change_is_reported_against(
    store: Store, key: StationKey
) -> None:
    """A hub the DSP believes runs 1.1 that arrives already on 1.5 (flashed elsewhere) is
    news to the DSP: reported, though this station wrote nothing."""
    manifest = Manifest.parse(
        f"consignment,eui64,firmware version\nC,{eui(1)},1.1.0.0\nC,{eui(2)},\n".encode(),
        name="m.csv",
    )
    assert [i.version for i in manifest.items] == [OLD, None]
    b = _batch(store, manifest)
    for n in (1, 2):
        j = store.start_job(b, n, "p", "demo-an3155")
        walk(store, j, JobState.IDENTIFIED, eui(n), version_before=NEW)
        store.finish_job(j, ended(eui(n), Result.SKIPPED, "plan", "current", version_before=NEW))
    assert store.close_batch(b, key).exported == [eui(1)]
    [row] = _rows(store, b)
    assert (row["version_before"], row["version_after"]) == (OLD, NEW)


def test_a_change_that_is_not_newer_is_not_exported(store: Store, key: StationKey) -> None:
    manifest = Manifest.parse(
        f"consignment,eui64,firmware version\nC,{eui(1)},0x01060000\n".encode(), name="m.csv"
    )
    b = _batch(store, manifest)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.IDENTIFIED, eui(1), version_before=OLD)
    store.finish_job(j, ended(eui(1), Result.REFUSED, "plan", "off-pathway"))
    assert store.close_batch(b, key).exported == []


def test_an_open_batchs_dsp_update_is_a_preview_that_claims_nothing(
    store: Store, key: StationKey
) -> None:
    b = _batch(store)
    j = store.start_job(b, 1, "p", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1))
    store.finish_job(j, passed(eui(1)))
    preview = json.loads(store.dsp_text(b, "json"))
    assert preview["final"] is False and preview["export_id"] is None
    assert preview["audit"]["signed"] is False and preview["count"] == 1
    hub = store.hub(eui(1))
    assert hub is not None and hub.exported_version is None  # nothing was claimed
    store.close_batch(b, key)
    final = json.loads(store.dsp_text(b, "json"))
    assert final["final"] is True and final["count"] == 1
    assert store.dsp_text(b, "csv") == store.dsp_text(b, "csv")  # printed again: the same


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(url: str, tmp_path: Path) -> None:
    station = "=HYPERLINK(evil)"
    with open_store(url, station=station) as store:
        b = store.start_batch(station_id=station, operator="@SUM(1)", rig="r", catalog="c")
        j = store.start_job(b, 1, "p", "+cmd|' /C calc'!A0")
        walk(store, j, JobState.BOOTING, eui(1))
        store.finish_job(j, passed(eui(1), profile="+cmd|' /C calc'!A0"))
        store.close_batch(b, StationKey.load_or_create(tmp_path / "keys", station))
        [row] = _rows(store, b)
        assert row["station_id"] == "'=HYPERLINK(evil)"
        assert row["operator"] == "'@SUM(1)"
        assert row["model"].startswith("'+cmd")
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
        doc = json.loads(store.dsp_text(b, "json"))  # JSON keeps the text as it is
        assert doc["station_id"] == station


def test_a_hub_another_station_upgraded_is_credited_to_that_station(
    url: str, key: StationKey
) -> None:
    """Station A passes a hub (its batch still open); the hub then reaches station B, which
    finds it current. The change is exported once, by A's batch, with A as its station:
    B read nothing new."""
    a = open_store(url, station="bench-a")
    b = open_store(url, station="bench-b")
    try:
        ba = a.start_batch(station_id="bench-a", operator="al", rig="r", catalog="c")
        ja = a.start_job(ba, 1, "p1", "demo-an3155")
        walk(a, ja, JobState.BOOTING, eui(1))
        a.finish_job(ja, passed(eui(1)))
        bb = b.start_batch(station_id="bench-b", operator="bo", rig="r", catalog="c")
        jb = b.start_job(bb, 1, "p1", "demo-an3155")
        walk(b, jb, JobState.IDENTIFIED, eui(1), version_before=NEW)
        b.finish_job(jb, ended(eui(1), Result.SKIPPED, "plan", "already running",
                               version_before=NEW))  # fmt: skip
        assert b.close_batch(bb, key).exported == []  # B changed nothing
        closed = a.close_batch(ba, key)
        assert closed.exported == [eui(1)]
        [row] = _rows(a, ba)
        assert (row["station_id"], row["operator"]) == ("bench-a", "al")
        assert row["evidence"] == "read-back-after-boot"
    finally:
        a.close()
        b.close()

"""``station consignment``, ``station stations``, ``station fleet`` and ``station report dsp
--consignment``: the warehouse's commands, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from station.batch import BatchRun
from station.cli import main
from station.demo import prepare_demo_catalog
from station.events import JobState
from station.outcome import Result
from station.records.store import Store

from .recordkit import backend_url, ended, eui, passed, walk


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = backend_url(request.param, tmp_path)
    Store.open(url).close()  # the schema, as a station's first start (or station db init)
    return url


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    got = capsys.readouterr()
    return code, got.out, got.err


def _manifest(tmp_path: Path, cid: str, hubs: list[int]) -> Path:
    path = tmp_path / f"{cid}.csv"
    rows = [f"{cid},{eui(n)},demo-an3155,1.1.0.0" for n in hubs]
    path.write_text("consignment id,EUI-64,model,firmware version\n" + "\n".join(rows) + "\n")
    return path


def _station(url: str, station: str, slots: int) -> Store:
    store = Store.open(url)
    store.acquire_lease(
        station,
        rig=f"{station}.toml",
        slots=[
            {"slot": n, "binding": f"/dev/ttyUSB{n}", "profile": "demo-an3155"}
            for n in range(1, slots + 1)
        ],
    )
    return store


def test_a_consignment_is_loaded_served_watched_and_closed_from_the_command_line(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _manifest(tmp_path, "CN-4", [1, 2, 3])
    code, _, err = _run(
        capsys, "consignment", "load", str(path), "--id", "CN-4", "--operator", "al", "--db", db_url
    )
    assert code == 0 and "consignment CN-4 loaded: 3 hub(s)" in err
    code, _, err = _run(capsys, "consignment", "load", str(path), "--id", "CN-4", "--db", db_url)
    assert code == 2 and err.startswith("error: consignment CN-4 was loaded at ")
    assert len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "consignment", "load", str(path), "--id", "CN-5", "--db", db_url)
    assert code == 2 and "CN-4.csv:2: lists consignment 'CN-4', not 'CN-5'" in err

    a = _station(db_url, "bench-a", 4)
    b = _station(db_url, "bench-b", 2)
    try:
        ba = a.start_batch(station_id="bench-a", operator="al", rig="r", catalog="c")
        j1 = a.start_job(ba, 1, "/dev/ttyUSB1", "demo-an3155")
        walk(a, j1, JobState.BOOTING, eui(1))
        a.finish_job(j1, passed(eui(1)))
        j2 = a.start_job(ba, 3, "/dev/ttyUSB3", "demo-an3155")
        walk(a, j2, JobState.WRITING, eui(2))

        code, out, _ = _run(capsys, "consignment", "status", "CN-4", "--json", "--db", db_url)
        doc = json.loads(out)
        assert code == 0 and doc["format"] == "chub-station/consignment-status/1"
        assert doc["expected"] == 3 and doc["counts"]["passed"] == 1
        assert doc["counts"]["in_flight"] == 1 and doc["counts"]["missing"] == 1
        [flying] = doc["in_flight"]
        assert (flying["eui64"], flying["station_id"], flying["slot"], flying["state"]) == (
            eui(2),
            "bench-a",
            3,
            "writing",
        )
        code, out, _ = _run(capsys, "consignment", "status", "CN-4", "--db", db_url)
        assert code == 0 and "expected 3: passed 1, current 0, failed 0" in out
        assert f"IN FLIGHT  {eui(2)}  at station bench-a slot 3 (writing) since " in out
        assert f"MISSING    {eui(3)}  not seen at any station" in out

        code, out, _ = _run(capsys, "stations", "--json", "--db", db_url)
        by = {s["station_id"]: s for s in json.loads(out)}
        assert by["bench-a"]["state"] == "serving" and by["bench-b"]["state"] == "idle"
        assert [s["slot"] for s in by["bench-a"]["slots"]] == [1, 2, 3, 4]
        slot3 = by["bench-a"]["slots"][2]
        assert (slot3["binding"], slot3["eui64"], slot3["state"]) == (
            "/dev/ttyUSB3",
            eui(2),
            "writing",
        )
        assert by["bench-a"]["counts"] == {"passed": 1, "writing": 1}
        code, out, _ = _run(capsys, "stations", "--db", db_url)
        assert code == 0 and "serving  bench-a  " in out and "idle     bench-b  " in out
        assert "batch 1; 4 slot(s), 1 in flight; jobs (tries) passed 1, current 0, failed 0" in out
        assert f"slot   3  /dev/ttyUSB3  demo-an3155  {eui(2)} writing since" in out

        code, out, _ = _run(capsys, "fleet", "--json", "--db", db_url)
        fleet = json.loads(out)
        assert fleet["format"] == "chub-station/fleet/1"
        assert [s["station_id"] for s in fleet["stations"]] == ["bench-a", "bench-b"]
        [cn] = fleet["consignments"]
        assert cn["consignment"] == "CN-4" and cn["counts"]["in_flight"] == 1
        code, out, _ = _run(capsys, "fleet", "--db", db_url)
        assert code == 0 and "consignment CN-4 1/3 done" in out
        assert "(in flight at bench-a/3)" in out

        code, _, err = _run(capsys, "consignment", "close", "CN-4", "--db", db_url)
        assert code == 2 and "1 hub(s) in flight" in err
        a.finish_job(j2, ended(eui(2), Result.FAILED, "write", "NACK"))
        a.close_batch(ba, None)
        code, _, err = _run(capsys, "consignment", "close", "CN-4", "--db", db_url)
        assert code == 0 and "consignment CN-4 closed: passed 1, current 0, failed 1" in err

        code, out, err = _run(
            capsys, "report", "dsp", "--consignment", "CN-4", "--format", "json", "--db", db_url
        )
        dsp = json.loads(out)
        assert code == 0 and dsp["final"] is True and err == ""
        assert [(h["eui64"], h["station_id"]) for h in dsp["hubs"]] == [(eui(1), "bench-a")]
        code, _, err = _run(capsys, "report", "dsp", "--consignment", "CN-9", "--db", db_url)
        assert code == 2 and "no consignment 'CN-9'" in err
    finally:
        a.close()
        b.close()


def test_a_gone_station_is_shown_gone_and_its_jobs_interrupted_once_by_whoever_looks(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    far = _station(db_url, "bench-far", 2)
    try:
        batch = far.start_batch(station_id="bench-far", operator="o", rig="r", catalog="c")
        job = far.start_job(batch, 2, "/dev/ttyUSB2", "demo-an3155")
        walk(far, job, JobState.ERASING, eui(5))
        with far._engine.begin() as conn:  # another PC, silent for a minute
            conn.execute(
                text(
                    "UPDATE station_leases SET host = 'other-pc', heartbeat_at = "
                    + (
                        "now() - interval '60 seconds'"
                        if db_url.startswith("postgresql")
                        else "'2000-01-01 00:00:00.000000'"
                    )
                )
            )
        code, out, _ = _run(capsys, "stations", "--json", "--db", db_url)
        [s] = json.loads(out)
        assert code == 0 and s["state"] == "gone" and s["released_at"] is not None
        assert far.job(job).state is JobState.INTERRUPTED
        _run(capsys, "fleet", "--json", "--db", db_url)  # a second look changes nothing
        log = far.audit_log()
        assert [e.detail["station_id"] for e in log if e.action == "lease-expired"] == ["bench-far"]
        assert [e.detail["jobs"] for e in log if e.action == "jobs-interrupted"] == [[job]]
    finally:
        far.close()


def test_fleet_watch_polls_at_most_once_a_second(db_url: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "station.cli",
            "fleet",
            "--watch",
            "--json",
            "--interval",
            "0.1",
            "--db",
            db_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    assert first["stations"] == [] and second["consignments"] == []
    gap = _seconds(second["generated_at"]) - _seconds(first["generated_at"])
    assert gap >= 0.9  # --interval 0.1 is raised to the 1 s floor


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").timestamp()


def test_a_station_run_registers_its_slots_and_its_heartbeat_frees_gone_stations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/station.db"
    demo = tmp_path / "demo"
    prepare_demo_catalog(demo, size=8192)
    rig = tmp_path / "rig.toml"
    rig.write_text(
        'station_id = "bench-r"\n'
        '[[slot]]\nnumber = 2\nport = "/dev/ttyUSB2"\nprofile = "demo-an3155"\n'
        '[[slot]]\nnumber = 5\nport = "/dev/ttyUSB5"\nprofile = "demo-an3155"\n'
    )
    far = _station(url, "bench-far", 1)
    run = BatchRun.open(
        str(rig),
        catalog_dir=str(demo / "catalog"),
        trust_dir=str(demo / "trust"),
        db_url=url,
    )
    try:
        _, out, _ = _run(capsys, "stations", "--json", "--db", url)
        by = {s["station_id"]: s for s in json.loads(out)}
        assert by["bench-r"]["state"] == "idle"  # running, no batch begun yet
        assert [(s["slot"], s["binding"]) for s in by["bench-r"]["slots"]] == [
            (2, "/dev/ttyUSB2"),
            (5, "/dev/ttyUSB5"),
        ]
        batch = far.start_batch(station_id="bench-far", operator="o", rig="r", catalog="c")
        job = far.start_job(batch, 1, "/dev/ttyUSB1", "demo-an3155")
        walk(far, job, JobState.WRITING, eui(8))
        with far._engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE station_leases SET host = 'other-pc', "
                    "heartbeat_at = '2000-01-01 00:00:00.000000' WHERE station_id = 'bench-far'"
                )
            )
        run.store.beat()  # what the run's heartbeat thread does every few seconds
        assert far.job(job).state is JobState.INTERRUPTED
    finally:
        run.close()
        far.close()

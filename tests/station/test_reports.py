"""Manifests, the DSP export, consignment reconciliation, JUnit XML, summaries and the CLI."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from drivers.errors import ConfigError
from station import records_cli
from station.events import JobState
from station.outcome import Result
from station.records.dsp import DSP_COLUMNS, DSP_FORMAT, HEAD_COLUMNS
from station.records.errors import UnknownRecord
from station.records.keys import StationKey
from station.records.manifest import Manifest, normalise_eui64
from station.records.reports import (
    junit_xml,
    reason_class,
    reconcile,
    summarise,
)
from station.records.store import Store

from .recordkit import NEW, OLD, SHA, STATION, FakeClock, ended, eui, open_store, passed, walk

# -- manifests -----------------------------------------------------------------------------


def test_normalise_eui64_accepts_the_usual_forms() -> None:
    want = "00-DB-12-34-56-78-90-A0"
    for text in ("00-DB-12-34-56-78-90-A0", "00db1234567890a0", " 00:db:12:34:56:78:90:a0 "):
        assert normalise_eui64(text) == want
    for bad in ("00-DB-12-34-56-78-90", "00DB1234567890A0FF", "00DB1234567890AG", ""):
        with pytest.raises(ValueError):
            normalise_eui64(bad)


def test_manifest_tolerates_case_spaces_forms_bom_and_blank_lines() -> None:
    data = (
        "\ufeff Consignment_ID , EUI 64 ,MODEL, notes\n"
        "CN-1, 00-db-12-34-56-78-90-a0 , demo-an3155, first\n"
        "\n"
        "CN-1,00DB1234567890A1,,\n"
        '"CN-2","00:DB:12:34:56:78:90:A2",demo-an3155\n'
    ).encode()
    m = Manifest.parse(data, name="cn.csv")
    assert [(i.consignment_id, i.eui64, i.model, i.line) for i in m.items] == [
        ("CN-1", "00-DB-12-34-56-78-90-A0", "demo-an3155", 2),
        ("CN-1", "00-DB-12-34-56-78-90-A1", None, 4),
        ("CN-2", "00-DB-12-34-56-78-90-A2", "demo-an3155", 5),
    ]
    assert len(m.sha256) == 64 and m.name == "cn.csv"
    assert (
        Manifest.parse(b"eui64,consignment\n00DB1234567890A0,C\n", name="x").items[0].model is None
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", r"x\.csv: empty manifest"),
        (b"consignment id,eui-64\n", r"x\.csv: the manifest lists no hubs"),
        (b"consignment id,model\nC,m\n", r"x\.csv:1: no eui64 column"),
        (b"eui-64\n00DB1234567890A0\n", r"x\.csv:1: no consignment id column"),
        (b"consignment,eui64,eui\nC,00DB1234567890A0,x\n", r"x\.csv:1: column 'eui64' appears"),
        (b"consignment,eui64\nC,00DB1234567890A0\nC,00DB12345678\n", r"x\.csv:3: '00DB12345678'"),
        (b"consignment,eui64\n,00DB1234567890A0\n", r"x\.csv:2: the consignment id is empty"),
        (b"consignment,eui64\nC,00DB1234567890A0,extra\n", r"x\.csv:2: 3 fields"),
        (
            b"consignment,eui64\nC,00DB1234567890A0\nC,00DB1234567890A1\nD,00-db-12-34-56-78-90-a0\n",
            r"x\.csv:4: EUI-64 00-DB-12-34-56-78-90-A0 is listed twice \(first on line 2\)",
        ),
        (b"consignment,eui64\nC,00DB1234567890A0\n\xff\n", r"x\.csv:3: not UTF-8"),
        (b'consignment,eui64\nC,"00DB1234567890A0\n', r"x\.csv:\d+: bad CSV"),
    ],
)
def test_a_bad_manifest_is_refused_with_line_and_reason(data: bytes, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        Manifest.parse(data, name="x.csv")


def test_manifest_load_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "consignment.csv"
    path.write_text("Consignment ID,EUI-64\nCN-9,00DB1234567890A0\n")
    assert Manifest.load(path).name == "consignment.csv"
    with pytest.raises(ConfigError, match="cannot read manifest"):
        Manifest.load(tmp_path / "nope.csv")


# -- a batch with every kind of hub --------------------------------------------------------


def _manifest() -> Manifest:
    rows = [
        ("CN-1", eui(1), "demo-an3155"),  # passed
        ("CN-1", eui(2), "demo-an3155"),  # failed in write
        ("CN-1", eui(3), ""),  # refused (downgrade)
        ("CN-2", eui(4), ""),  # already current
        ("CN-2", eui(5), ""),  # missing
        ("CN-2", eui(7), "demo-an3155"),  # failed once, passed on the retry
        ("CN-2", eui(8), "other-model"),  # interrupted (hub pulled), model mismatch
    ]
    text = "consignment id,eui-64,model\n" + "".join(f"{c},{e},{m}\n" for c, e, m in rows)
    return Manifest.parse(text.encode(), name="cn-2025-03.csv")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def batch(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Store, int]]:
    """A closed batch: one hub of each kind; each job takes 60 s of the clock."""
    store = open_store(f"sqlite:///{tmp_path / 'station.db'}", clock=clock)
    b = store.start_batch(
        station_id=STATION,
        operator="alice",
        rig="rigs/bench-07.toml",
        catalog="station-data/catalog",
        manifest=_manifest(),
    )

    def job(slot: int, reach: JobState, hub: str | None, out: object) -> int:
        j = store.start_job(b, slot, f"/dev/pts/{slot}", "demo-an3155")
        walk(store, j, reach, hub)
        clock.advance(60)
        store.finish_job(j, out)  # type: ignore[arg-type]
        return j

    job(1, JobState.BOOTING, eui(1), passed(eui(1), seconds=55.0))
    job(
        2,
        JobState.WRITING,
        eui(2),
        ended(eui(2), Result.FAILED, "write", "write block 37 at 0x08009400: NACK after 5 tries"),
    )
    job(3, JobState.IDENTIFIED, eui(3), ended(eui(3), Result.REFUSED, "plan", "downgrade refused"))
    job(4, JobState.IDENTIFIED, eui(4), ended(eui(4), Result.SKIPPED, "plan", "already running"))
    job(5, JobState.BOOTING, eui(6), passed(eui(6), seconds=50.0))  # not listed
    job(
        6,
        JobState.WRITING,
        eui(7),
        ended(eui(7), Result.FAILED, "write", "write block 12 at 0x08003000: NACK after 5 tries"),
    )
    # The retry finds the flash its first try erased: no version; its own record says so.
    retry = store.start_job(b, 6, "/dev/pts/6", "demo-an3155")
    walk(store, retry, JobState.BOOTING, eui(7), version_before=None)
    clock.advance(60)
    store.finish_job(retry, passed(eui(7), seconds=45.0, version_before=None))
    job(7, JobState.ERASING, eui(8), ended(eui(8), Result.INTERRUPTED, "erase", "hub taken out"))
    job(8, JobState.DETECTED, None, ended(None, Result.FAILED, "connect", "no answer \x07 to sync"))
    store.close_batch(b, StationKey.load_or_create(tmp_path / "keys", STATION))
    yield store, b
    store.close()


def test_reconciliation_puts_every_hub_in_its_category(batch: tuple[Store, int]) -> None:
    store, b = batch
    rec = reconcile(store, b)
    got = {c: [e.eui64 for e in entries] for c, entries in rec.lists.items()}
    assert got == {
        "passed": [eui(1), eui(7)],
        "failed": [eui(2), eui(8)],
        "refused": [eui(3)],
        "already_current": [eui(4)],
        "in_progress": [],
        "missing": [eui(5)],
        "unexpected": [eui(6)],
    }
    failed = {e.eui64: e for e in rec.lists["failed"]}
    assert failed[eui(2)].phase == "write" and "NACK" in (failed[eui(2)].reason or "")
    assert failed[eui(8)].result == "interrupted" and failed[eui(8)].reason == "hub taken out"
    retried = rec.lists["passed"][1]
    assert (retried.attempts, retried.version_after, retried.image_sha256) == (2, NEW, SHA)
    assert rec.lists["missing"][0].consignment_id == "CN-2" and rec.lists["missing"][0].job is None
    assert rec.lists["unexpected"][0].result == "passed"
    assert rec.lists["refused"][0].reason == "downgrade refused"
    assert [j["phase"] for j in rec.unidentified_jobs] == ["connect"]
    assert rec.warnings == [
        f"{eui(8)}: the manifest expects model other-model, the station identified it as "
        "demo-an3155"
    ]
    assert (rec.listed, rec.seen, rec.complete) == (7, 7, False)
    doc = json.loads(json.dumps(rec.to_json()))
    assert doc["counts"] == {
        "passed": 2,
        "failed": 2,
        "refused": 1,
        "already_current": 1,
        "in_progress": 0,
        "missing": 1,
        "unexpected": 1,
        "unidentified_jobs": 1,
    }
    assert doc["manifest"] == "cn-2025-03.csv"


def test_reconciliation_without_a_manifest_classes_hubs_by_result(tmp_path: Path) -> None:
    with open_store("sqlite://") as store:
        b = store.start_batch(station_id=STATION, operator="o", rig="r", catalog="c")
        j = store.start_job(b, 1, "p", "demo-an3155")
        walk(store, j, JobState.BOOTING, eui(1))
        store.finish_job(j, passed(eui(1)))
        live = store.start_job(b, 2, "p2", "demo-an3155")
        walk(store, live, JobState.WRITING, eui(2))
        rec = reconcile(store, b)
        assert [e.eui64 for e in rec.lists["passed"]] == [eui(1)]
        assert [e.eui64 for e in rec.lists["in_progress"]] == [eui(2)]
        assert rec.lists["missing"] == rec.lists["unexpected"] == []
        assert rec.manifest is None and rec.listed == 0


def test_a_pass_then_a_skip_still_counts_as_passed(tmp_path: Path) -> None:
    with open_store("sqlite://") as store:
        b = store.start_batch(station_id=STATION, operator="o", rig="r", catalog="c")
        j = store.start_job(b, 1, "p", "demo-an3155")
        walk(store, j, JobState.BOOTING, eui(1))
        store.finish_job(j, passed(eui(1)))
        j2 = store.start_job(b, 1, "p", "demo-an3155")
        walk(store, j2, JobState.IDENTIFIED, eui(1), version_before=NEW)
        store.finish_job(
            j2, ended(eui(1), Result.SKIPPED, "plan", "already running", version_before=NEW)
        )
        assert [e.job for e in reconcile(store, b).lists["passed"]] == [j]
        assert len(store.dsp_text(b, "csv").splitlines()) == 2


# -- DSP export ----------------------------------------------------------------------------


def test_dsp_export_csv_has_one_row_per_hub_that_changed(batch: tuple[Store, int]) -> None:
    store, b = batch
    text = store.dsp_text(b, "csv")
    assert text.startswith(",".join((*DSP_COLUMNS, *HEAD_COLUMNS)) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["eui64"] for r in rows] == [eui(1), eui(6), eui(7)]
    for r in rows:
        assert (r["model"], r["version_before"], r["version_after"]) == ("demo-an3155", OLD, NEW)
        assert r["image_sha256"] == SHA
        assert (r["station_id"], r["operator"]) == ("bench-07", "alice")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["completed_at"])
        head = store.report_head(b)
        assert (r["audit_seq"], r["audit_hash"]) == (str(head.seq), head.hash)
        assert r["audit_signature"] == head.signature and r["export_id"] == "1"
    job1 = store.jobs(b)[0]
    assert job1.finished_at is not None
    assert rows[0]["completed_at"] == job1.finished_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rows[0]["completed_at"] == "2025-03-04T09:01:00Z"


def test_dsp_export_json_matches_the_csv(batch: tuple[Store, int]) -> None:
    store, b = batch
    doc = json.loads(store.dsp_text(b, "json"))
    assert doc["format"] == DSP_FORMAT and doc["final"] is True and doc["export_id"] == 1
    assert doc["audit"]["signed"] is True
    assert (doc["batch"], doc["station_id"], doc["operator"], doc["count"]) == (
        b,
        "bench-07",
        "alice",
        3,
    )
    rows = list(csv.DictReader(io.StringIO(store.dsp_text(b, "csv"), newline="")))
    assert doc["hubs"] == [{k: r[k] for k in DSP_COLUMNS} for r in rows]
    assert all(list(h) == list(DSP_COLUMNS) for h in doc["hubs"])
    assert store.dsp_text(b, "json") == store.dsp_text(b, "json")  # the same every time
    with pytest.raises(ValueError):
        store.dsp_text(b, "xml")  # type: ignore[arg-type]


# -- JUnit ---------------------------------------------------------------------------------


def test_junit_xml_is_well_formed_with_one_testcase_per_hub(batch: tuple[Store, int]) -> None:
    store, b = batch
    root = ET.fromstring(junit_xml(store, b))
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    # 7 hubs and 1 job that never identified its hub (it cannot be matched to one).
    assert len(cases) == 8 and len(store.jobs(b)) == 9
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("8", "3", "1")
    assert suite.get("skipped") == "1"
    retried = next(c for c in cases if eui(7) in c.get("name", ""))
    assert retried.find("failure") is None  # its retry passed: the hub passed
    out = retried.find("system-out")
    assert out is not None and "try 1 of 2: failed in write" in (out.text or "")
    assert "1.1.0.0 -> 1.5.0.0" in (out.text or "")  # the version it ran before any try
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["operator"] == "alice" and props["manifest"] == "cn-2025-03.csv"
    assert props["audit_signature"] == store.report_head(b).signature
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    write = failures[0]
    assert write is not None
    assert write.get("type") == "failed:write"
    assert write.get("message") == "write block 37 at 0x08009400: NACK after 5 tries"
    assert "phase: write" in (write.text or "")
    assert any(f is not None and f.get("type") == "refused:plan" for f in failures)
    errors = [c.find("error") for c in cases if c.find("error") is not None]
    assert [e.get("type") for e in errors if e is not None] == ["interrupted"]
    unidentified = cases[-1]
    assert unidentified.get("name", "").startswith("unidentified hub")
    no_sync = unidentified.find("failure")
    assert no_sync is not None and no_sync.get("message") == "no answer  to sync"
    assert cases[0].get("classname") == f"batch{b}.slot01"
    assert float(cases[0].get("time", "0")) == 55.0


# -- summary -------------------------------------------------------------------------------


def test_summary_counts_rates_and_reasons(batch: tuple[Store, int]) -> None:
    store, b = batch
    s = summarise(store, b)
    # Hubs are counted by how each ended; tries (jobs) are a separate, labelled figure.
    assert s.counts == {
        "passed": 3,
        "failed": 1,
        "refused": 1,
        "current": 1,
        "interrupted": 1,
        "in_progress": 0,
    }
    assert s.job_counts == {
        "passed": 3,
        "failed": 3,
        "refused": 1,
        "skipped": 1,
        "interrupted": 1,
        "running": 0,
    }
    assert (s.jobs, s.hubs, s.unidentified_jobs) == (9, 7, 1)
    assert s.wall_seconds == 9 * 60
    assert s.hubs_per_hour == 20.0  # 3 passed hubs in 9 minutes
    assert s.total_seconds == 55 + 50 + 45 + 6 * 3.0
    assert s.average_passed_seconds == 50.0
    assert s.failures[0] == {
        "reason": "write: write block N at 0x…: NACK after N tries",
        "count": 2,
        "jobs": [2, 6],
    }
    assert {f["reason"] for f in s.failures[1:]} == {
        "erase: hub taken out",
        "connect: no answer \x07 to sync",
    }
    assert s.refusals == [{"reason": "plan: downgrade refused", "count": 1, "jobs": [3]}]
    assert json.loads(json.dumps(s.to_json()))["hubs_per_hour"] == 20.0


def test_reason_class_blanks_the_particulars() -> None:
    assert reason_class("confirm", f"a different hub answered ({eui(3)}, expected x)") == (
        "confirm: a different hub answered (EUI-64, expected x)"
    )
    assert reason_class(None, None) == "unknown: no reason recorded"


# -- the commands --------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="station")
    sub = parser.add_subparsers(dest="command", required=True)
    records_cli.add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args, Console(stderr=True)))


def test_report_commands_write_what_the_functions_compute(
    batch: tuple[Store, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, b = batch
    db = ["--db", f"sqlite:///{tmp_path / 'station.db'}"]
    out = tmp_path / "out" / "dsp.csv"
    assert _run(["report", "dsp", "--batch", "latest", "--format", "csv", "-o", str(out), *db]) == 0
    assert out.read_bytes().decode() == store.dsp_text(b, "csv")
    assert "3 hub(s) in its DSP update (export 1)" in capsys.readouterr().err

    assert _run(["report", "dsp", "--batch", str(b), "--format", "json", *db]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3

    assert _run(["report", "consignment", "--batch", "latest", "--json", *db]) == 0
    assert json.loads(capsys.readouterr().out) == reconcile(store, b).to_json()
    assert _run(["report", "consignment", "--batch", "latest", *db]) == 0
    text = capsys.readouterr().out
    assert "MISSING" in text and eui(5) in text and "UNEXPECTED" in text

    junit = tmp_path / "junit.xml"
    assert _run(["report", "junit", "--batch", str(b), "--output", str(junit), *db]) == 0
    assert ET.parse(junit).getroot().tag == "testsuites"

    assert _run(["report", "summary", "--batch", "latest", "--json", *db]) == 0
    assert json.loads(capsys.readouterr().out)["hubs_per_hour"] == 20.0
    assert _run(["report", "summary", "--batch", "latest", *db]) == 0
    assert "20 hubs/hour" in capsys.readouterr().out

    assert _run(["batches", "--json", *db]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == b and listed["counts"]["passed"] == 3
    # Hubs are counted, once each; their tries are a separate figure.
    assert (listed["hubs"], listed["counts"]["failed"], listed["jobs"]) == (7, 1, 9)
    assert listed["job_counts"]["failed"] == 3
    assert _run(["batches", *db]) == 0
    assert "bench-07" in capsys.readouterr().out


def test_audit_verify_exit_status_follows_the_chain(
    batch: tuple[Store, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = batch
    db = ["--db", f"sqlite:///{tmp_path / 'station.db'}", "--keys", str(tmp_path / "keys")]
    assert _run(["audit", "verify", *db]) == 0
    assert "audit chain intact" in capsys.readouterr().out
    seq = next(e.seq for e in store.audit_log() if e.action == "job")
    with store._engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE audit SET operator = 'mallory' WHERE seq = {seq}")
    assert _run(["audit", "verify", *db]) == 1
    assert f"the chain breaks at entry {seq}" in capsys.readouterr().out
    assert _run(["audit", "verify", "--json", *db]) == 1
    assert json.loads(capsys.readouterr().out)["bad_seq"] == seq


def test_commands_refuse_a_missing_database_and_bad_batches(
    batch: tuple[Store, int], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no station database"):
        _run(["batches", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert not (tmp_path / "none.db").exists()
    db = ["--db", f"sqlite:///{tmp_path / 'station.db'}"]
    with pytest.raises(ConfigError, match="'latest'"):
        _run(["report", "summary", "--batch", "last", *db])
    with pytest.raises(UnknownRecord, match="no batch 99"):
        _run(["report", "summary", "--batch", "99", *db])


def test_latest_with_no_batches_is_an_error(tmp_path: Path) -> None:
    Store.open(f"sqlite:///{tmp_path / 'empty.db'}").close()
    with pytest.raises(ConfigError, match="no batches"):
        _run(
            ["report", "summary", "--batch", "latest", "--db", f"sqlite:///{tmp_path / 'empty.db'}"]
        )


# -- what every report says of a hub -----------------------------------------------------------


def test_a_hubs_version_before_is_what_it_ran_before_any_try(batch: tuple[Store, int]) -> None:
    store, b = batch
    retried = next(e for e in reconcile(store, b).lists["passed"] if e.eui64 == eui(7))
    assert (retried.version_before, retried.version_after, retried.attempts) == (OLD, NEW, 2)
    [row] = [r for r in _dsp_rows(store, b) if r["eui64"] == eui(7)]
    assert row["version_before"] == OLD


def _dsp_rows(store: Store, batch: int) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.dsp_text(batch, "csv"), newline="")))


def test_the_dsp_update_says_how_each_version_was_known(batch: tuple[Store, int]) -> None:
    store, b = batch
    rows = {r["eui64"]: r for r in _dsp_rows(store, b)}
    listed = rows[eui(1)]
    assert (listed["hw_version"], listed["consignment_id"]) == ("2", "CN-1")
    assert (listed["verify_method"], listed["evidence"]) == ("crc", "read-back-after-boot")
    assert rows[eui(6)]["consignment_id"] == ""  # not listed: unexpected, still reported
    doc = json.loads(store.dsp_text(b, "json"))
    assert {h["evidence"] for h in doc["hubs"]} == {"read-back-after-boot"}


def test_report_files_are_readable_by_others_as_the_umask_says(
    batch: tuple[Store, int], tmp_path: Path
) -> None:
    import os

    from station.records.reports import write_reports

    store, b = batch
    old = os.umask(0o022)
    try:
        files = write_reports(store, b, tmp_path / "out")
    finally:
        os.umask(old)
    for path in files.values():
        assert path.stat().st_mode & 0o777 == 0o644, path

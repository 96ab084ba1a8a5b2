"""Every class of database edit the audit must catch, and what it cannot (docs/records.md).

A closed batch (passes, a failure, a refusal, a listed hub) is recorded, then one edit is
made straight to the database, as someone with write access to it could. ``station audit
verify`` must then fail, naming what changed; ``--report FILE`` must reject a report the
edit would change; reading commands must give one line, not a traceback.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import text

from station import records_cli
from station.events import JobState
from station.outcome import Result
from station.records.audit import audit_hash
from station.records.errors import StoreError
from station.records.keys import KeyRing, StationKey
from station.records.manifest import Manifest
from station.records.reports import write_reports
from station.records.schema import parse_stored_time
from station.records.store import Store

from .recordkit import STATION, backend_url, ended, eui, open_store, passed, walk


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path)


@dataclass
class Recorded:
    """A closed batch and what verifying it needs."""

    url: str
    store: Store
    batch: int
    ring: KeyRing
    reports: dict[str, Path]

    def sql(self, statement: str) -> None:
        with self.store._engine.begin() as conn:
            conn.execute(text(statement))

    def problems(self) -> list[str]:
        return list(self.store.verify_audit(self.ring).problems)


@pytest.fixture
def recorded(url: str, tmp_path: Path) -> Iterator[Recorded]:
    store = open_store(url)
    manifest = Manifest.parse(
        f"consignment,eui64\nC,{eui(1)}\nC,{eui(2)}\nC,{eui(3)}\n".encode(), name="m.csv"
    )
    b = store.start_batch(
        station_id=STATION, operator="alice", rig="r", catalog="c", manifest=manifest
    )
    j = store.start_job(b, 1, "p1", "demo-an3155")
    walk(store, j, JobState.BOOTING, eui(1))
    store.finish_job(j, passed(eui(1)))
    j = store.start_job(b, 2, "p2", "demo-an3155")
    walk(store, j, JobState.WRITING, eui(2))
    store.finish_job(j, ended(eui(2), Result.FAILED, "write", "NACK"))
    j = store.start_job(b, 3, "p3", "demo-an3155")
    walk(store, j, JobState.IDENTIFIED, eui(3))
    store.finish_job(j, ended(eui(3), Result.REFUSED, "plan", "downgrade"))
    key = StationKey.load_or_create(tmp_path / "keys", STATION)
    store.close_batch(b, key)
    reports = write_reports(store, b, tmp_path / "reports")
    rec = Recorded(url, store, b, KeyRing.from_dir(tmp_path / "keys"), reports)
    assert rec.problems() == []
    yield rec
    store.close()


def _rechain(rec: Recorded, edit: Callable[[dict[str, object]], None]) -> None:
    """Rewrite the audit log as a forger without the station's key would: apply ``edit`` to
    the rows, then recompute every hash so the chain itself is consistent again."""
    with rec.store._engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM audit ORDER BY seq"))]
        for row in rows:
            edit(row)
        rows = [r for r in rows if r.get("seq") is not None]
        conn.execute(text("DELETE FROM audit"))
        prev = "0" * 64
        for seq, row in enumerate(rows, 1):
            at = parse_stored_time(row["at"])
            assert at is not None
            row.update(seq=seq, prev_hash=prev)
            row["hash"] = audit_hash(
                seq, at, str(row["operator"]), str(row["action"]), str(row["detail"]), prev
            )
            prev = str(row["hash"])
            conn.execute(
                text(
                    "INSERT INTO audit (seq, at, operator, action, detail, prev_hash, hash) "
                    "VALUES (:seq, :at, :operator, :action, :detail, :prev_hash, :hash)"
                ),
                row,
            )


TAMPERS = [
    (
        "a failed hub made passed",
        "UPDATE jobs SET state = 'passed', version_after = '0x01050000' WHERE slot = 2",
        "job 2 differs from its audited record",
    ),
    (
        "a hub's running version raised so the next export carries it",
        f"UPDATE hubs SET running_version = '0x01050000' WHERE eui64 = '{eui(3)}'",
        f"hub {eui(3)} differs",
    ),
    (
        "an exported row changed",
        "UPDATE export_items SET version_after = '0x01060000'",
        "export 1 differs",
    ),
    (
        "a job deleted",
        "DELETE FROM job_events WHERE job_id = 2; DELETE FROM jobs WHERE id = 2",
        "job 2 is in the audit log but not in the database",
    ),
    (
        "a listed hub removed from the consignment",
        f"DELETE FROM consignment_items WHERE eui64 = '{eui(3)}'",
        "batch 1 differs",
    ),
    ("a closed batch reopened", "UPDATE batches SET finished_at = NULL", "batch 1 differs"),
    ("every audit entry deleted", "DELETE FROM audit", "the audit log is empty"),
    (
        "an audit entry edited",
        "UPDATE audit SET operator = 'mallory' WHERE seq = 3",
        "the chain breaks at entry 3",
    ),
    ("a job's state made garbage", "UPDATE jobs SET state = 'garbage' WHERE id = 1", "job 1"),
]


@pytest.mark.parametrize(("what", "sql", "found"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_each_kind_of_edit_fails_verify(
    recorded: Recorded, what: str, sql: str, found: str
) -> None:
    for statement in sql.split(";"):
        recorded.sql(statement)
    problems = recorded.problems()
    assert problems, what
    assert any(found in p for p in problems), problems


def test_an_edit_with_the_chain_recomputed_breaks_the_signed_head(recorded: Recorded) -> None:
    def promote(row: dict[str, object]) -> None:
        if row["action"] == "job" and '"state":"failed"' in str(row["detail"]):
            row["detail"] = str(row["detail"]).replace('"state":"failed"', '"state":"passed"')

    recorded.sql("UPDATE jobs SET state = 'passed' WHERE slot = 2")
    _rechain(recorded, promote)
    problems = recorded.problems()
    assert any("no longer has the hash it signed" in p for p in problems), problems


def test_dropping_the_signed_heads_as_well_is_still_caught(recorded: Recorded) -> None:
    def drop_heads(row: dict[str, object]) -> None:
        if row["action"] == "head-signed":
            row["seq"] = None

    _rechain(recorded, drop_heads)
    problems = recorded.problems()
    assert any("is closed but no valid signed head covers it" in p for p in problems), problems


def test_a_head_signed_with_another_key_is_refused(recorded: Recorded, tmp_path: Path) -> None:
    forger = StationKey.load_or_create(tmp_path / "forger", STATION)

    def resign(row: dict[str, object]) -> None:
        if row["action"] == "head-signed":
            detail = json.loads(str(row["detail"]))
            detail["key_id"] = forger.key_id
            detail["signature"] = forger.sign_head(int(detail["seq"]), str(detail["hash"]))
            row["detail"] = json.dumps(detail, sort_keys=True, separators=(",", ":"))

    _rechain(recorded, resign)
    problems = recorded.problems()
    assert any("not among the public keys" in p for p in problems), problems


def _verify(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="station")
    records_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args, Console(stderr=True)))


def test_every_report_verifies_and_an_edited_one_does_not(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", recorded.url, "--keys", str(tmp_path / "keys")]
    for name, path in recorded.reports.items():
        assert _verify(["audit", "verify", "--report", str(path), *db]) == 0, name
        assert "matches the records" in capsys.readouterr().out
    dsp = recorded.reports["dsp-csv"]
    dsp.write_text(dsp.read_text().replace("0x01050000", "0x01060000"))
    assert _verify(["audit", "verify", "--report", str(dsp), *db]) == 1
    assert "the DSP rows differ" in capsys.readouterr().out


def test_cutting_the_chain_back_is_caught_by_a_report_made_before(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entries after the last signed head are protected by the reports that carry a later
    head: delete the chain back to an earlier point and a report shows it."""
    db = ["--db", recorded.url, "--keys", str(tmp_path / "keys")]
    junit = recorded.reports["junit"]
    head = recorded.store.report_head(recorded.batch)
    recorded.sql(f"DELETE FROM audit WHERE seq >= {head.seq}")
    assert _verify(["audit", "verify", "--report", str(junit), *db]) == 1
    assert "no longer has the report's head" in capsys.readouterr().out


def test_a_garbage_time_is_a_finding_not_a_traceback(recorded: Recorded) -> None:
    if recorded.store.url.startswith("postgresql"):
        pytest.skip("PostgreSQL's timestamptz refuses text that is not a time")
    recorded.sql("UPDATE audit SET at = 'garbage' WHERE seq = 2")
    recorded.sql("UPDATE batches SET started_at = 'garbage'")
    problems = recorded.problems()
    assert any("'garbage' is not a time" in p for p in problems), problems
    with pytest.raises(StoreError, match="'garbage' where a time belongs"):
        recorded.store.batches()

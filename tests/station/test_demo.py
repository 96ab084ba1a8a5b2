"""``station demo``: the main job on simulated hubs, run as a user runs it (a separate
program), through the real rig, controller, store and reports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from station.demo import DEMO_TARGET, SCENARIO, _as_planned, demo_hubs
from station.events import JobState
from station.records.store import Store


def test_demo_runs_the_mixed_rig_and_writes_every_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "demo", "--unpaced", "--size", "16384", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    final = lines[-1]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert final["kind"] == "demo-finished" and final["as_planned"] and final["audit_ok"]
    results = {h["slot"]: h["result"] for h in final["hubs"]}
    assert results == {h.slot: str(h.expect) for h in SCENARIO}
    # The events are station run's: the faulty hub was retried once, in its own slot.
    retries = [e for e in lines if e.get("kind") == "retry"]
    assert [e["slot"] for e in retries] == [6]
    assert lines[0]["kind"] == "batch-started" and lines[-2]["kind"] == "batch-finished"

    root = tmp_path / "station-data" / "demo"
    with Store.open(final["db"]) as store:
        jobs = store.jobs(final["batch"])
    by_slot = {j.slot: j for j in jobs}  # the latest job of each slot
    assert {j.profile for j in jobs} == {"demo-an3155", "demo-gecko", "demo-dfu"}
    for hub in SCENARIO:
        job = by_slot[hub.slot]
        assert job.state is hub.expect
        if hub.expect is JobState.PASSED:  # verified and read back, by each protocol's means
            assert job.version_after == f"0x{DEMO_TARGET:08X}"
            assert job.verify_method in ("device-crc", "bootloader-gbl", "readback")
    assert "product ID 0x415" in (by_slot[5].message or "")  # the hub of another model
    # Reports: one DSP row per passed hub; the consignment names the hub that never came.
    reports = {k: Path(v) for k, v in final["reports"].items()}
    folder = root / "reports" / f"batch-{final['batch']}"
    assert all(p.parent == folder and p.exists() for p in reports.values())
    with reports["dsp-csv"].open() as f:
        dsp = list(csv.DictReader(f))
    passed = [h for h in SCENARIO if h.expect is JobState.PASSED]
    assert len(dsp) == len(passed)
    assert {r["model"] for r in dsp} == {"demo-an3155", "demo-gecko", "demo-dfu"}
    assert {r["version_after"] for r in dsp} == {f"0x{DEMO_TARGET:08X}"}
    consignment = json.loads(reports["consignment"].read_text())
    assert [e["eui64"] for e in consignment["missing"]] == final["missing"]
    assert len(consignment["failed"]) == len(consignment["refused"]) == 1
    # JUnit: one test case per hub: the faulty hub (tried twice) and the refusal fail.
    suites = ET.parse(reports["junit"]).getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("skipped")) == (
        str(len({j.eui64 for j in jobs})),
        "2",
        "1",
    )
    assert (root / "rig.toml").read_text().count("[[slot]]") == len(SCENARIO)


def test_scenario_grows_with_more_hubs_and_shrinks_to_its_head() -> None:
    assert [h.slot for h in demo_hubs(3)] == [1, 2, 3]
    more = demo_hubs(16)
    assert [h.slot for h in more] == list(range(1, 17))
    assert {h.model for h in more[10:]} == {"demo-an3155", "demo-gecko", "demo-dfu"}
    assert all(h.expect is JobState.PASSED for h in more[10:])


def test_a_pass_counts_as_planned_only_with_the_target_read_back() -> None:
    hub = SCENARIO[0]

    class Job:
        state = JobState.PASSED
        version_after = "0x01040000"

    assert not _as_planned(hub, Job())  # type: ignore[arg-type]
    Job.version_after = f"0x{DEMO_TARGET:08X}"
    assert _as_planned(hub, Job())  # type: ignore[arg-type]
    Job.state = JobState.SKIPPED
    assert not _as_planned(hub, Job())  # type: ignore[arg-type]
    assert not _as_planned(hub, None)

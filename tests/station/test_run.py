"""`station run` as a rig runs it: slots, catalogue, manifest, records, reports, exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.pty import SimHub
from station.demo import prepare_demo_catalog
from station.event_json import SCHEMA_VERSION, from_line, to_json
from station.flash import Policy, Result, catalog_chooser, flash_hub
from station.profiles import load_profile

SIZE = 8192
STATION = [sys.executable, "-m", "station.cli"]


def _station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=120)


def test_run_a_batch_and_report_it(start_hub: Callable[..., SimHub], tmp_path: Path) -> None:
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hubs = [
        start_hub(1, firmware_size=SIZE),
        start_hub(2, firmware_size=SIZE, start_in="app"),
        start_hub(3, firmware_size=SIZE, faults="nack=3x7"),  # fails once, passes on retry
        start_hub(4, firmware=0x0105_0000, firmware_size=SIZE),  # already current
    ]
    rig = 'station_id = "bench-t"\n[policy]\njob_retries = 1\n'
    for h in hubs:
        rig += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    rig += '[[slot]]\nnumber = 5\nport = "/dev/no-hub-here"\nprofile = "demo-an3155"\n'
    (tmp_path / "rig.toml").write_text(rig)
    listed = [h.spec.eui64 for h in hubs] + ["00-DB-12-00-00-00-00-01"]  # one never arrives
    (tmp_path / "m.csv").write_text(
        "consignment,eui64,model\n" + "".join(f"C7,{e},demo-an3155\n" for e in listed)
    )
    db = f"sqlite:///{tmp_path}/station.db"
    run = _station(
        "run",
        "--rig",
        str(tmp_path / "rig.toml"),
        "--catalog",
        str(cat.root),
        "--trust",
        trust.source,
        "--manifest",
        str(tmp_path / "m.csv"),
        "--db",
        db,
        "--operator",
        "alice",
        "--json",
    )
    assert run.returncode == 1, run.stderr  # an expected hub is missing
    events = [json.loads(line) for line in run.stdout.splitlines()]
    # Every line is an event of the documented schema (docs/records.md, "Event lines").
    typed = [from_line(line) for line in run.stdout.splitlines()]
    assert {e["schema_version"] for e in events} == {SCHEMA_VERSION}
    assert [to_json(e) for e in typed] == events
    kinds = {e["kind"] for e in events}
    assert {
        "batch-started",
        "state",
        "job-finished",
        "retry",
        "slot-empty",
        "batch-finished",
    } <= kinds
    finished = {e["slot"]: e["state"] for e in events if e["kind"] == "job-finished"}
    assert finished == {1: "passed", 2: "passed", 3: "passed", 4: "skipped"}
    # Each job walked the state machine in order before it was reported.
    slot1 = [e["state"] for e in events if e["kind"] == "state" and e["slot"] == 1]
    assert slot1 == [
        "detected",
        "identified",
        "planned",
        "erasing",
        "writing",
        "verifying",
        "booting",
    ]
    recon = events[-1]["data"]["reconciliation"]
    assert [h["eui64"] for h in recon["missing"]] == ["00-DB-12-00-00-00-00-01"]

    dsp = _station("report", "dsp", "--batch", "latest", "--format", "csv", "--db", db)
    rows = list(csv.DictReader(io.StringIO(dsp.stdout)))
    assert sorted(r["eui64"] for r in rows) == sorted(h.spec.eui64 for h in hubs[:3])
    assert {r["version_after"] for r in rows} == {"0x01050000"}
    assert {r["operator"] for r in rows} == {"alice"}
    junit = _station(
        "report", "junit", "--batch", "latest", "--output", str(tmp_path / "j.xml"), "--db", db
    )
    assert junit.returncode == 0
    assert ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    assert _station("audit", "verify", "--db", db).returncode == 0


def test_partial_image_is_never_taken_as_current(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    """A write cut off after the descriptor's block leaves the new version's descriptor in
    flash over a partial image: the next job must flash it, not call it current."""
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    profile = load_profile("demo-an3155")
    policy = Policy(trust=trust)
    hub = start_hub(firmware_size=SIZE, faults="nack=3x5")
    first = flash_hub(hub.port, profile, catalog_chooser(cat, profile, policy), policy=policy)
    assert first.result is Result.FAILED and first.phase == "write"
    second = flash_hub(hub.port, profile, catalog_chooser(cat, profile, policy), policy=policy)
    assert second.result is Result.PASSED, second.message
    assert second.version_before is None
    assert any("does not start" in n for n in second.notes)


@pytest.mark.parametrize("bad", ['station_id = ""\n', "[[slot]\n"])
def test_bad_rig_is_bad_input(tmp_path: Path, bad: str) -> None:
    (tmp_path / "rig.toml").write_text(bad)
    done = _station("run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(tmp_path))
    assert done.returncode == 2 and "rig.toml" in done.stderr


def test_ports_lists_usb_hubs_on_the_simulated_bus(tmp_path: Path) -> None:
    sim = subprocess.Popen(
        [*STATION, "sim", "--protocol", "dfu", "--hubs", "2", "--unpaced", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sim.stdout is not None
        hubs = [json.loads(sim.stdout.readline()) for _ in range(2)]
        env = {**os.environ, "STATION_USB_BACKEND": hubs[0]["backend"]}
        done = subprocess.run(
            [*STATION, "ports", "--json"], capture_output=True, text=True, env=env, timeout=60
        )
        listed = json.loads(done.stdout)
        assert listed["usb_problem"] is None
        assert sorted(u["port"] for u in listed["usb"]) == sorted(h["port"] for h in hubs)
        assert {u["looks_like"] for u in listed["usb"]} == {"demo-dfu (dfu)"}
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(timeout=20)

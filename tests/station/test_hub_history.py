"""`station hub EUI64`: a hub's recorded history, with the last exchanges of a failure."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sim.pty import SimHub
from station.demo import prepare_demo_catalog

SIZE = 8192
STATION = [sys.executable, "-m", "station.cli"]


def _station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=120)


def test_history_shows_jobs_and_a_failures_last_exchanges(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    good = start_hub(1, firmware_size=SIZE)
    bad = start_hub(2, firmware_size=SIZE, faults="nack=1x100000")  # refuses every write
    rig = 'station_id = "bench-h"\n[policy]\njob_retries = 0\n'
    for h in (good, bad):
        rig += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    (tmp_path / "rig.toml").write_text(rig)
    db = f"sqlite:///{tmp_path}/station.db"
    run = _station(
        "run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(cat.root), "--trust",
        trust.source, "--db", db, "--json",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr

    shown = _station("hub", bad.spec.eui64, "--db", db)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"hub {bad.spec.eui64}" in text and "failed in write" in text
    assert "NACK after" in text and "what to do:" in text
    assert "last exchanges before the failure" in text
    # The last exchanges are the bytes of the refused Write Memory: its command and the
    # hub's NACK (0x1F).
    trace = text.split("last exchanges before the failure")[1].splitlines()[1:]
    assert "-> 31 CE" in [line.strip() for line in trace]
    assert "<- 1F" in [line.strip() for line in trace]

    doc = json.loads(_station("hub", bad.spec.eui64, "--db", db, "--json").stdout)
    (job,) = doc["jobs"]
    assert job["state"] == "failed" and job["phase"] == "write"
    assert job["events"][-1]["state"] == "failed" and job["events"][-1]["exchanges"]

    # A passed hub: its job, no failure trace; compact EUI-64 forms are accepted.
    passed = _station("hub", good.spec.eui64.replace("-", "").lower(), "--db", db)
    assert passed.returncode == 0 and "passed" in passed.stdout
    assert "last exchanges" not in passed.stdout

    unknown = _station("hub", "00-DB-12-00-00-00-00-99", "--db", db)
    assert unknown.returncode == 2 and "no hub 00-DB-12-00-00-00-00-99" in unknown.stderr

"""SIGKILL the controller (`station run`) at random moments: every record it reported
survives, and the next start shows the jobs it had in flight as interrupted."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.pty import SimHub
from station.demo import prepare_demo_catalog
from station.events import JobState
from station.records.store import Store

STATION = [sys.executable, "-m", "station.cli"]
SIZE = 16384


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_controller_then_restart(
    start_hub: Callable[..., SimHub], tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hubs = [start_hub(n, firmware_size=SIZE, paced=True) for n in (1, 2, 3)]
    rig = tmp_path / "rig.toml"
    rig.write_text(
        'station_id = "kill"\n'
        + "".join(
            f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
            for h in hubs
        )
    )
    db = f"sqlite:///{tmp_path}/s.db"
    args = [
        "run",
        "--rig",
        str(rig),
        "--catalog",
        str(cat.root),
        "--trust",
        trust.source,
        "--db",
        db,
        "--json",
    ]
    run = subprocess.Popen([*STATION, *args], stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    reported: list[dict[str, object]] = []
    first_state = threading.Event()

    def read() -> None:
        assert run.stdout is not None
        for line in run.stdout:
            if line.endswith("\n"):  # a line cut by the kill was never shown to anyone
                reported.append(json.loads(line))
                if reported[-1]["kind"] == "state":
                    first_state.set()

    reader = threading.Thread(target=read)
    reader.start()
    # Kill at a random moment once jobs are under way (start-up time varies with load);
    # a paced 16 KiB job takes about 2 s.
    assert first_state.wait(timeout=60), "the run never started a job"
    time.sleep(rng.uniform(0.0, 2.0))
    run.send_signal(signal.SIGKILL)
    run.wait()
    reader.join(timeout=10)
    # Only whole lines were reported to the user; a torn last line was never seen.
    states = [e for e in reported if e["kind"] in ("state", "job-finished")]
    assert states, "the run was killed before it reported anything"

    with Store.open(db) as store:
        for e in states:
            recorded = [ev.state for ev in store.job_events(int(e["job_id"]))]  # type: ignore[arg-type]
            assert JobState(str(e["state"])) in recorded, (e, recorded)
        for e in reported:
            if e["kind"] == "job-finished":
                assert store.job(int(e["job_id"])).state == JobState(str(e["state"]))  # type: ignore[arg-type]
        in_flight = {
            int(e["job_id"])  # type: ignore[arg-type]
            for e in states
        } - {int(e["job_id"]) for e in reported if e["kind"] == "job-finished"}  # type: ignore[arg-type]

    # Restart: the controller marks what it had in flight as interrupted, then carries on.
    again = subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in again.stdout.splitlines()]
    with Store.open(db) as store:
        for job_id in in_flight:
            assert store.job(job_id).state is JobState.INTERRUPTED
    # Every hub is served again and ends passed (or current, if the first run finished it).
    finished = {e["slot"]: e["state"] for e in events if e["kind"] == "job-finished"}
    assert set(finished) == {1, 2, 3}
    assert set(finished.values()) <= {"passed", "skipped"}, finished

"""Hot-plug in a continuous rig run, as an operator swaps hubs: `station sim --commands`
takes a hub out and puts another in; `station run --continuous` serves each arrival and
records a hub pulled mid-job as interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Any

from station.demo import prepare_demo_catalog

STATION = [sys.executable, "-m", "station.cli"]


def _lines(stream: Any, into: Queue[dict[str, Any]]) -> None:
    for line in stream:
        if line.startswith("{"):
            into.put(json.loads(line))


def _wait(q: Queue[dict[str, Any]], pred: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            item = q.get(timeout=left)
        except Empty:
            break
        if pred(item):
            return item
    raise AssertionError("the expected event did not come")


def test_swap_hubs_during_a_continuous_run(tmp_path: Path) -> None:
    size = 16384
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=size)
    links = tmp_path / "links"
    sim = subprocess.Popen(
        [
            *STATION,
            "sim",
            "--hubs",
            "2",
            "--json",
            "--links",
            str(links),
            "--commands",
            "--firmware",
            "1.1.0.0",
        ],  # paced: a job takes seconds, time to pull a hub mid-job
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    sim_out: Queue[dict[str, Any]] = Queue()
    assert sim.stdout is not None and sim.stdin is not None
    threading.Thread(target=_lines, args=(sim.stdout, sim_out), daemon=True).start()
    first = [_wait(sim_out, lambda e: "port" in e) for _ in range(2)]
    rig = tmp_path / "rig.toml"
    rig.write_text(
        'station_id = "hotplug"\n[policy]\njob_retries = 0\n'
        + "".join(
            f'[[slot]]\nnumber = {n}\nport = "{links}/slot-{n}"\nprofile = "demo-an3155"\n'
            for n in (1, 2)
        )
    )
    run = subprocess.Popen(
        [
            *STATION,
            "run",
            "--rig",
            str(rig),
            "--catalog",
            str(cat.root),
            "--trust",
            trust.source,
            "--db",
            f"sqlite:///{tmp_path}/s.db",
            "--json",
            "--continuous",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    events: Queue[dict[str, Any]] = Queue()
    assert run.stdout is not None
    threading.Thread(target=_lines, args=(run.stdout, events), daemon=True).start()
    try:
        # Pull slot 2's hub while it is being written: that job ends interrupted.
        _wait(events, lambda e: e.get("slot") == 2 and e.get("state") == "writing")
        sim.stdin.write("remove 2\n")
        sim.stdin.flush()
        pulled = _wait(events, lambda e: e["kind"] == "job-finished" and e["slot"] == 2)
        assert pulled["state"] == "interrupted", pulled
        # Slot 1 finishes; then the operator swaps in a different hub, which is served.
        done1 = _wait(events, lambda e: e["kind"] == "job-finished" and e["slot"] == 1)
        assert done1["state"] == "passed"
        sim.stdin.write("remove 1\ninsert 1 1.2.0.0\n")
        sim.stdin.flush()
        new = _wait(sim_out, lambda e: e.get("slot") == 1 and "port" in e)
        assert new["eui64"] != first[0]["eui64"]
        again = _wait(events, lambda e: e["kind"] == "job-finished" and e["slot"] == 1)
        assert again["state"] == "passed"
        assert (again["data"]["eui64"], again["data"]["version_before"]) == (
            new["eui64"],
            "0x01020000",
        )
        run.send_signal(signal.SIGINT)
        summary = _wait(events, lambda e: e["kind"] == "batch-finished")
        assert summary["data"]["summary"]["counts"].get("passed") == 2
        assert run.wait(timeout=30) == 1  # one hub was interrupted: not a clean batch
    finally:
        if run.poll() is None:
            run.kill()
        sim.send_signal(signal.SIGINT)
        sim.wait(timeout=20)

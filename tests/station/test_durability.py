"""``kill -9`` at any moment loses nothing that was reported, and a restart ends live jobs.

A child process (durability_child.py) records jobs from several slot threads and prints each
id or transition right after the store call returns. It is SIGKILLed at seeded random
moments, several times over one database (each run a station start after a crash). After
each kill the store is reopened as the next start of the station does it (the station's
lease taken over from the dead process, :meth:`Store.recover`): every printed job,
transition and final state must be there, every job left live must now be INTERRUPTED and
still name the hub it had identified, the killed batch must be closed, every job's event
log must be a legal walk ending in its state, and the audit must verify (chain, signed
heads, every record against its snapshot).
"""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.events import JobState, legal
from station.records.keys import KeyRing, StationKey
from station.records.store import Store

from .recordkit import backend_url

CHILD = Path(__file__).with_name("durability_child.py")
RUNS = 8
SLOTS = 4


def _run_child(url: str, seed: int) -> list[str]:
    """Start the child, kill it at a seeded random moment, return the complete lines."""
    rng = random.Random(seed)
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), url, str(seed), str(SLOTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    if seed % 4 == 0:
        # Anywhere from start-up on: possibly while it opens the database.
        time.sleep(rng.uniform(0.05, 0.8))
    else:
        first = proc.stdout.readline()
        if not first:
            proc.wait(timeout=10)
            pytest.fail(f"the child ended early: {proc.stderr.read() if proc.stderr else ''}")
        lines.append(first)
        time.sleep(rng.uniform(0.0, 0.6))
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the child ended on its own: {err}"
    lines += out.splitlines(keepends=True)
    # The last line may have been cut by the kill: only whole lines were reported.
    return [line.rstrip("\n") for line in lines if line.endswith("\n")]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_loses_nothing_reported_and_restart_interrupts_live_jobs(
    backend: str, tmp_path: Path
) -> None:
    url = backend_url(backend, tmp_path)
    Store.open(url).close()  # the schema exists before the first run (a station installed)
    key = StationKey.load_or_create(tmp_path / "keys", "bench-kill")
    ring = KeyRing.from_dir(tmp_path / "keys")
    reported_total = 0
    for run in range(RUNS):
        lines = _run_child(url, seed=run)
        reported_total += len(lines)
        with Store.open(url) as store:
            live_before = {
                j.id: j.state
                for b in store.batches()
                for j in store.jobs(b.id)
                if not j.state.final
            }
            store.acquire_lease("bench-kill")  # the killed child's pid is gone: taken over
            recovery = store.recover(key)
            assert sorted(recovery.interrupted) == sorted(live_before)
            assert all(store.batch(b.id).finished_at for b in store.batches())

            jobs = {j.id: j for b in store.batches() for j in store.jobs(b.id)}
            for line in lines:
                kind, *rest = line.split()
                if kind == "batch":
                    store.batch(int(rest[0]))
                elif kind == "job":
                    assert jobs[int(rest[0])].slot == int(rest[1])
                elif kind == "state":
                    states = [e.state for e in store.job_events(int(rest[0]))]
                    assert JobState(rest[1]) in states, line
                elif kind == "final":
                    assert jobs[int(rest[0])].state is JobState(rest[1]), line
                else:
                    pytest.fail(f"unexpected line from the child: {line!r}")

            for job in jobs.values():
                assert job.state.final, job
                events = store.job_events(job.id)
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                assert events[0].state is JobState.DETECTED
                assert all(legal(a.state, b.state) for a, b in itertools.pairwise(events))
                assert events[-1].state is job.state
                if job.id in live_before:
                    assert job.state is JobState.INTERRUPTED
                    assert events[-1].detail["from"] == str(live_before[job.id])
                    if live_before[job.id] is not JobState.DETECTED:
                        assert job.eui64 is not None  # what it had read is kept
            check = store.verify_audit(ring)
            assert check.ok, check.problems
            store.release_lease()
    assert reported_total > RUNS * 5  # the kills landed while work was being reported

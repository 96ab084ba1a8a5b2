"""The kill campaign: ``station run`` killed with SIGKILL again and again, then the truth.

A rig of paced simulated AN3155 hubs, each in its own process behind a pseudo-terminal, is
served by ``station run`` (the real command, in its own process) over and over. Each run is
killed at a moment chosen by what it has just reported (a job that was identified,
planned, erasing, writing, verifying, booting, finished, or the batch finished) or at a
random time; some runs are met by a second run of the same station, which must be refused
without touching the first. A hub whose records say it is done (passed, or found current)
is swapped for a fresh one on the old release, as an operator does; every other hub stays
in its slot for the next run. At the end one last run finishes the work, and each hub's
model (never its records) says what it really runs. Then, for every hub ever on the bench:

- no false pass: every job recorded passed is on a hub that runs the target;
- no upgrade missing from the DSP update: every hub that runs the target, and began on
  the old release, is in exactly one batch's DSP update, as old -> target;
- nothing reported that did not happen: no other hub is in any update;
- no job without the identity it had read: every job that recorded ``identified`` names
  its hub;
- no live job interrupted by another process: only the killed runs' jobs were interrupted,
  and every refused second run left the first's jobs to end on their own;
- every batch is closed, and ``station audit verify`` passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_images.build import demo_payload
from sim.pty import HubSpec, SimHub, derive_eui64
from station.demo import DEMO_TARGET, prepare_demo_catalog
from station.events import JobState
from station.records.keys import KeyRing
from station.records.store import Store

STATION = [sys.executable, "-m", "station.cli"]
OLD = 0x0101_0000
SIZE = 4096
#: What a run may have just reported when it is killed.
MOMENTS = (
    "identified",
    "planned",
    "erasing",
    "writing",
    "verifying",
    "booting",
    "job-finished",
    "batch-finished",
    "random",
)


@dataclass
class Result:
    """What the campaign did and found."""

    kills: int = 0
    by_moment: Counter[str] = field(default_factory=Counter)
    second_runs_refused: int = 0
    hubs: int = 0
    upgraded: int = 0
    jobs: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        moments = ", ".join(f"{k} {v}" for k, v in sorted(self.by_moment.items()))
        return (
            f"{self.kills} kills ({moments}), {self.second_runs_refused} second runs refused, "
            f"{self.jobs} jobs on {self.hubs} hubs, {self.upgraded} upgraded; "
            f"{len(self.problems)} problems; {self.seconds:.0f} s"
        )


class Bench:
    """The slots (symlinks the rig binds to), the hubs in them, and what every hub taken
    out of a slot held when it was taken out."""

    def __init__(self, root: Path, slots: int, seed: int) -> None:
        self.links = root / "links"
        self.links.mkdir(parents=True)
        self.seed = seed
        self.current: dict[int, SimHub] = {}
        #: EUI-64 -> whether the hub's flash held the target's image when taken out.
        self.retired: dict[str, bool] = {}
        self.fresh = 0
        for slot in range(1, slots + 1):
            self.insert(slot)

    def insert(self, slot: int) -> None:
        """A new hub on the old release in ``slot`` (an operator swapping hubs); the one
        there is asked what it holds, then stopped (its process and port freed)."""
        old = self.current.get(slot)
        if old is not None:
            self.retired[old.spec.eui64] = holds_target(old)
            old.stop()
        self.fresh += 1
        spec = HubSpec(
            slot=slot,
            eui64=derive_eui64(self.seed * 1000 + self.fresh, slot),
            firmware=OLD,
            firmware_size=SIZE,
            paced=True,
            protocol="an3155",
        )
        hub = SimHub.start(spec)
        link = self.links / f"slot-{slot}"
        tmp = link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(hub.port)
        tmp.replace(link)
        self.current[slot] = hub

    def truth(self) -> dict[str, bool]:
        """EUI-64 -> whether its flash holds the target's image, for every hub ever here."""
        return {**self.retired, **{h.spec.eui64: holds_target(h) for h in self.current.values()}}

    def stop(self) -> None:
        for hub in self.current.values():
            hub.stop()


_TARGET_SHA = hashlib.sha256(demo_payload(DEMO_TARGET, size=SIZE)).hexdigest()


def holds_target(hub: SimHub) -> bool:
    """Whether the hub's flash holds the target's whole image, byte for byte, asked of its
    model (it may sit in its bootloader, running nothing)."""
    return bool(hub.ground_truth(SIZE)["sha256"] == _TARGET_SHA)


def _rig(path: Path, bench: Bench, station: str) -> None:
    text = f'station_id = "{station}"\n[policy]\njob_retries = 0\n'
    for slot in sorted(bench.current):
        text += (
            f'[[slot]]\nnumber = {slot}\nport = "{bench.links}/slot-{slot}"\n'
            'profile = "demo-an3155"\n'
        )
    path.write_text(text)


class Run:
    """One ``station run`` in its own process, with its events read as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*STATION, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._errors, daemon=True).start()
        self.events: list[dict[str, Any]] = []
        self.batch: int | None = None
        self.changed = threading.Condition()
        self.ended = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut by the kill: never shown to anyone
            event = json.loads(line)
            with self.changed:
                self.events.append(event)
                if event["kind"] == "batch-started":
                    self.batch = int(event["data"]["batch"])
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def _errors(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def wait_for(self, moment: str, timeout_s: float = 60) -> bool:
        """Until the run reports ``moment`` (True) or ends first (False)."""
        deadline = time.monotonic() + timeout_s

        def seen() -> bool:
            return any(
                e["kind"] == moment or (e["kind"] == "state" and e.get("state") == moment)
                for e in self.events
            )

        with self.changed:
            while not seen():
                if self.ended or time.monotonic() > deadline:
                    return False
                self.changed.wait(0.5)
        return True

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join(10)

    def finish(self, timeout_s: float = 120) -> int:
        """Wait for the run to end on its own; a run that does not is killed (and says so:
        exit status -9)."""
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -signal.SIGKILL
        self.reader.join(10)
        return code

    def tail(self) -> str:
        return "".join(self.stderr[-8:]).strip()


def run_campaign(
    root: Path, db: str, *, kills: int, slots: int = 4, seed: int = 1, station: str = "kill"
) -> Result:
    """Kill ``station run`` ``kills`` times over one database, then check the truth."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = Result()
    cat, trust = prepare_demo_catalog(root / "demo", size=SIZE)
    env = {**os.environ, "STATION_KEYS": str(root / "keys")}
    bench = Bench(root, slots, seed)
    rig = root / "rig.toml"
    args = ["run", "--rig", str(rig), "--catalog", str(cat.root), "--trust", trust.source]
    args += ["--db", db, "--json"]
    killed_batches: set[int] = set()
    spared_batches: set[int] = set()
    try:
        while result.kills < kills:
            _rig(rig, bench, station)
            moment = rng.choice(MOMENTS)
            if rng.random() < 0.15:  # a second run of the same station, meanwhile
                run = Run([*args, "--continuous"], env)  # stays until told, as a bench does
                if run.wait_for("identified"):
                    second = subprocess.run(
                        [*STATION, *args], capture_output=True, text=True, env=env, timeout=120
                    )
                    if second.returncode == 2 and "already running" in second.stderr:
                        result.second_runs_refused += 1
                    else:
                        result.problems.append(
                            f"a second run was not refused: exit {second.returncode}: "
                            f"{second.stderr.strip()[-300:]}"
                        )
                run.proc.send_signal(signal.SIGINT)  # its running jobs finish, then it ends
                code = run.finish()
                if code != 0:
                    result.problems.append(
                        f"after Ctrl-C the first run exited {code}: {run.tail()}"
                    )
                if run.batch is not None:
                    spared_batches.add(run.batch)
            else:
                run = Run(args, env)
                if moment == "random":
                    run.wait_for("batch-started")
                    time.sleep(rng.uniform(0.0, 2.5))
                    hit = run.proc.poll() is None
                else:
                    hit = run.wait_for(moment) and run.proc.poll() is None
                run.kill()
                if hit and run.proc.returncode == -signal.SIGKILL:
                    result.kills += 1
                    result.by_moment[moment] += 1
                if run.batch is not None:
                    killed_batches.add(run.batch)
            _swap_done(bench, db)
        last = Run(args, env)
        code = last.finish()
        if code != 0:
            result.problems.append(f"the last run exited {code}: {last.tail()}")
        _check(db, bench, root / "keys", killed_batches, spared_batches, result)
    finally:
        bench.stop()
    result.seconds = time.monotonic() - started
    return result


def _swap_done(bench: Bench, db: str) -> None:
    """Swap every hub whose records say it is done for a fresh one."""
    with Store.open(db) as store:
        for slot, hub in list(bench.current.items()):
            jobs = store.jobs_of_hub(hub.spec.eui64)
            if jobs and jobs[-1].state in (JobState.PASSED, JobState.SKIPPED):
                bench.insert(slot)


def _check(
    db: str,
    bench: Bench,
    keys: Path,
    killed: set[int],
    spared: set[int],
    result: Result,
) -> None:
    problems = result.problems
    truth = {eui: DEMO_TARGET if ok else None for eui, ok in bench.truth().items()}
    result.hubs = len(truth)
    with Store.open(db) as store:
        batches = store.batches()
        for batch in batches:
            if batch.finished_at is None:
                problems.append(f"batch {batch.id} is still open")
        exported: Counter[tuple[str, str, str]] = Counter()
        for batch in batches:
            export, rows, _ = store.dsp(batch.id)
            if export is None:
                continue
            for row in rows:
                exported[(row.eui64, row.version_before, row.version_after)] += 1
        target = f"0x{DEMO_TARGET:08X}"
        old = f"0x{OLD:08X}"
        for eui, running in truth.items():
            carried = {k: n for k, n in exported.items() if k[0] == eui}
            if running == DEMO_TARGET:
                result.upgraded += 1
                if carried != {(eui, old, target): 1}:
                    problems.append(f"{eui} runs the target but its DSP rows are {carried}")
            elif carried:
                problems.append(f"{eui} does not hold the target but the DSP was told {carried}")
        for batch in batches:
            for job in store.jobs(batch.id):
                result.jobs += 1
                states = [e.state for e in store.job_events(job.id)]
                if JobState.IDENTIFIED in states and job.eui64 is None:
                    problems.append(f"job {job.id} identified its hub but names none")
                if job.state is JobState.PASSED and truth.get(job.eui64 or "") != DEMO_TARGET:
                    problems.append(f"job {job.id} passed {job.eui64}, which does not run it")
                if job.state is JobState.INTERRUPTED and batch.id not in killed:
                    problems.append(
                        f"job {job.id} of batch {batch.id} (not killed) was interrupted"
                    )
                if batch.id in spared and job.state is JobState.INTERRUPTED:
                    problems.append(f"a refused second run interrupted job {job.id}")
        check = store.verify_audit(KeyRing.from_dir(keys))
        problems += [f"audit: {p}" for p in check.problems]

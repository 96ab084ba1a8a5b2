"""A warehouse's record traffic against one database: many stations, no hubs.

Each synthetic station is one process with what ``station run`` has: its own
:class:`~station.records.store.Store`, lease (kept by the real heartbeat, which also notices
gone stations), batch and :class:`~station.records.recorder.Recorder` thread; its slot
threads cycle jobs through ``detected`` (start_job), ``identified`` (the hub claimed in
flight, a distinct EUI-64 per job), ``planned``, ``erasing``, ``writing``, ``verifying``,
``booting`` and a passing finish_job (with the evidence the pass rule needs), waiting a think
time between records as a flash does. A real AN3155 job of 256 KiB takes about 34 s, so a
slot hands in 8 records per 34 s: the default ``--job-seconds 34`` is that pace, so N
processes are N real stations' load. A shorter job (``--job-seconds 2``) offers more load
from fewer processes; the table says how many real stations each case is worth
(``real-eq``: sustained records/s over 64 x 8 / 34).

The synthetic stations share this machine's cores with PostgreSQL: once the host is busy
(``host%`` near 100) latencies measure the machine, not the database. ``cli ms/r`` and
``db ms/r`` (CPU per record of the station processes and of every postgres process) are what
carries over to a warehouse, where each station has its own PC.

Measured per case, over ``--seconds`` after a ramp of one job time: records/s sustained,
the latency of each state record as the slot sees it (handed to the recorder until
durable: p50, p99), the finish record's p99, and the CPU of the PostgreSQL processes and of
the whole machine (the synthetic stations share its cores with the server).

Run: ``.venv/bin/python benchmarks/bench_warehouse.py --db postgresql+psycopg://...``
``[--stations 1,4,16,64] [--slots 64] [--seconds 20] [--job-seconds 34] [--json]``
(about 4 minutes).
PostgreSQL needs its schema first (``station db init --db URL``); a SQLite URL works too
(each station process opens the file itself).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from station.controller import Heartbeat
from station.events import CHAIN, JobState, state_event
from station.outcome import FlashOutcome, Result
from station.records.leases import DEFAULT_TTL_S
from station.records.recorder import Recorder
from station.records.store import Store

#: What a real job takes and records (docs/warehouse.md, "Capacity").
REAL_JOB_S = 34.0
RECORDS_PER_JOB = 8  # start_job, six record_state, finish_job
OLD, NEW, SHA = "0x01010000", "0x01050000", "5e" * 32
P99_TARGET_MS = 100.0
RAMP_S = 8.0  # slots start spread over this (or one job, if shorter) before the window


@dataclass
class Case:
    """One case's figures."""

    stations: int
    slots: int
    seconds: float
    offered_rps: float  # what the slots would hand in if every record were instant
    records: int
    records_per_s: float
    jobs: int
    state_p50_ms: float
    state_p99_ms: float
    state_max_ms: float
    finish_p99_ms: float
    errors: int
    real_station_equivalent: float
    commits_per_s: float  # the recorders' group commits (records per commit: their ratio)
    client_cpu_ms_per_record: float  # the station processes' CPU (store, recorder, slots)
    db_cpu_ms_per_record: float | None  # every postgres process on the machine (None: SQLite)
    host_cpu_pct: float  # of all cores
    first_error: str = ""


def _eui(tag: int, station: int, slot: int, job: int) -> str:
    raw = bytes([0x70, tag >> 8, tag & 0xFF, station & 0xFF, slot & 0xFF]) + (
        job & 0xFFFFFF
    ).to_bytes(3, "big")
    return "-".join(f"{b:02X}" for b in raw)


def _outcome(port: str, eui64: str, seconds: float) -> FlashOutcome:
    return FlashOutcome(
        port=port,
        profile="demo-an3155",
        result=Result.PASSED,
        image="releases/1234-0401-01050000.zigbee",
        image_version=NEW,
        target_version=NEW,
        image_sha256=SHA,
        eui64=eui64,
        eui64_confirmed=eui64,
        hw_version=2,
        found_in="application",
        version_before=OLD,
        version_after=NEW,
        verify_method="crc",
        verify_detail="device CRC matches",
        signature="valid",
        signer="bench",
        bytes_written=262144,
        seconds=seconds,
        message="upgraded, verified by crc, running version read back",
    )


class _Counted:
    """The store as the recorder sees it, counting its group commits (one per pass)."""

    def __init__(self, store: Store, counted: list[int], window: tuple[float, float]) -> None:
        self.store, self.counted, self.window = store, counted, window
        self.start_job, self.record_state = store.start_job, store.record_state
        self.finish_job, self.audit = store.finish_job, store.audit

    def group(self) -> Any:
        if self.window[0] <= time.time() < self.window[1]:
            self.counted[3] += 1
        return self.store.group()


def _station(
    index: int,
    opts: dict[str, Any],
    ready: Any,
    go: Any,
    start_at: Any,
    results: Any,
) -> None:
    """One synthetic station (a child process): set up, wait for the start, serve slots."""
    slots, job_s, tag = int(opts["slots"]), float(opts["job_seconds"]), int(opts["tag"])
    station_id = f"wh-bench-{tag:04x}-{index:02d}"
    store = Store.open(opts["db"], create=opts["db"].startswith("sqlite"))
    store.acquire_lease(
        station_id,
        rig="bench",
        slots=[
            {"slot": s, "binding": f"/dev/bench{s}", "profile": "demo-an3155"}
            for s in range(1, slots + 1)
        ],
    )
    batch = store.start_batch(station_id=station_id, operator="bench", rig="bench", catalog="-")
    heartbeat = Heartbeat(store.beat, DEFAULT_TTL_S / 6, lambda: None).start()
    ready.put(index)
    go.wait()
    t_start = float(start_at.value)
    ramp = min(job_s, RAMP_S)
    w0 = t_start + ramp  # every slot has started a job by then
    w1 = w0 + float(opts["seconds"])
    counted = [0, 0, 0, 0]  # records in the window, jobs finished in it, errors, commits
    counting = _Counted(store, counted, (w0, w1))
    recorder = Recorder(counting, lambda _event: None)
    rec_thread = threading.Thread(target=recorder.run, name="recorder", daemon=True)
    rec_thread.start()
    lock = threading.Lock()
    state_lat: list[float] = []
    finish_lat: list[float] = []
    cpu: list[float] = []

    def sample_cpu() -> None:
        for at in (w0, w1):
            time.sleep(max(0.0, at - time.time()))
            cpu.append(time.process_time())

    sampler = threading.Thread(target=sample_cpu, daemon=True)
    sampler.start()
    first_error: list[str] = []
    think = job_s / RECORDS_PER_JOB

    def note(kind: str, done: float, latency: float) -> None:
        if not w0 <= done < w1:
            return
        with lock:
            counted[0] += 1
            if kind == "state":
                state_lat.append(latency)
            elif kind == "finish":
                finish_lat.append(latency)
                counted[1] += 1

    def serve(slot: int) -> None:
        rnd = random.Random(index * 1000 + slot)
        port = f"/dev/bench{slot}"
        time.sleep(max(0.0, t_start + rnd.uniform(0, ramp) - time.time()))
        job = 0
        while time.time() < w1:
            job += 1
            eui64 = _eui(tag, index, slot, job)
            began = time.time()
            try:
                t0 = time.perf_counter()
                job_id = recorder.start_job(batch, slot, port, "demo-an3155")
                note("start", time.time(), time.perf_counter() - t0)
                for state in CHAIN[1:]:
                    time.sleep(think * rnd.uniform(0.5, 1.5))
                    if time.time() >= w1:  # left live: closing the batch interrupts it
                        break
                    t0 = time.perf_counter()
                    recorder.state(state_event(slot, job_id, state, _outcome(port, eui64, 0.0)))
                    note("state", time.time(), time.perf_counter() - t0)
                time.sleep(think * rnd.uniform(0.5, 1.5))
                if time.time() >= w1:
                    break
                t0 = time.perf_counter()
                final = recorder.finish_job(
                    slot, job_id, _outcome(port, eui64, time.time() - began)
                )
                note("finish", time.time(), time.perf_counter() - t0)
                if final is not JobState.PASSED:
                    raise RuntimeError(f"job {job_id} recorded {final}, not passed")
            except Exception as exc:  # a record refused: counted, and the slot goes on
                with lock:
                    counted[2] += 1
                    first_error[:] = first_error or [f"{type(exc).__name__}: {exc}"]
                time.sleep(think)
            time.sleep(think * rnd.uniform(0.5, 1.5))  # the next hub is put in

    threads = [
        threading.Thread(target=serve, args=(s,), name=f"slot-{s}", daemon=True)
        for s in range(1, slots + 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sampler.join()
    recorder.close()
    rec_thread.join()
    heartbeat.stop()
    try:
        store.close_batch(batch, None)
        store.release_lease()
    finally:
        store.close()
    results.put(
        {
            "index": index,
            "state": state_lat,
            "finish": finish_lat,
            "records": counted[0],
            "jobs": counted[1],
            "errors": counted[2],
            "commits": counted[3],
            "cpu": cpu[1] - cpu[0],
            "first_error": first_error[0] if first_error else "",
        }
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _postgres_cpu() -> float:
    """CPU seconds used so far by every live process named postgres (Linux /proc)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if name == "postgres":
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_case(opts: dict[str, Any], stations: int) -> Case:
    """Start ``stations`` synthetic stations, measure one window, collect their figures."""
    ctx = mp.get_context("fork")
    ready, results = ctx.Queue(), ctx.Queue()
    go, start_at = ctx.Event(), ctx.Value("d", 0.0)
    opts = {**opts, "tag": random.randrange(1 << 16)}
    procs = [
        ctx.Process(target=_station, args=(i, opts, ready, go, start_at, results), daemon=True)
        for i in range(stations)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    job_s, seconds = float(opts["job_seconds"]), float(opts["seconds"])
    start_at.value = time.time() + 0.2
    go.set()
    ramp = min(job_s, RAMP_S)
    time.sleep(max(0.0, start_at.value + ramp - time.time()))
    pg0, host0 = _postgres_cpu(), _host_cpu()
    time.sleep(max(0.0, start_at.value + ramp + seconds - time.time()))
    pg1, host1 = _postgres_cpu(), _host_cpu()
    got = [results.get(timeout=120 + 4 * job_s) for _ in procs]
    for p in procs:
        p.join(60)
    state = [x for g in got for x in g["state"]]
    finish = [x for g in got for x in g["finish"]]
    records = sum(int(g["records"]) for g in got)
    errors = [g["first_error"] for g in got if g["first_error"]]
    rps = records / seconds
    real_station_rps = 64 * RECORDS_PER_JOB / REAL_JOB_S
    return Case(
        stations=stations,
        slots=int(opts["slots"]),
        seconds=seconds,
        offered_rps=round(stations * int(opts["slots"]) * RECORDS_PER_JOB / job_s, 1),
        records=records,
        records_per_s=round(rps, 1),
        jobs=sum(int(g["jobs"]) for g in got),
        state_p50_ms=round(_pct(state, 0.50), 1),
        state_p99_ms=round(_pct(state, 0.99), 1),
        state_max_ms=round(_pct(state, 1.0), 1),
        finish_p99_ms=round(_pct(finish, 0.99), 1),
        errors=sum(int(g["errors"]) for g in got),
        real_station_equivalent=round(rps / real_station_rps, 1),
        commits_per_s=round(sum(int(g["commits"]) for g in got) / seconds, 1),
        client_cpu_ms_per_record=round(1000 * sum(g["cpu"] for g in got) / max(1, records), 2),
        db_cpu_ms_per_record=round(1000 * (pg1 - pg0) / max(1, records), 2)
        if opts["db"].startswith("post")
        else None,
        host_cpu_pct=round(100 * (host1[0] - host0[0]) / max(1.0, host1[1] - host0[1]), 1),
        first_error=errors[0] if errors else "",
    )


def conclusion(cases: Iterable[Case], job_s: float) -> str:
    """One line: the most stations served with p99 under the target, and how cost grows."""
    cases = list(cases)
    good = [c for c in cases if c.state_p99_ms < P99_TARGET_MS and c.errors == 0]
    pace = "" if job_s == REAL_JOB_S else ", the load of {eq:.0f} real stations"
    if good:
        best = max(good, key=lambda c: c.stations)
        served = (
            f"one database served {best.stations} stations x {best.slots} slots "
            f"({best.records_per_s:.0f} records/s{pace.format(eq=best.real_station_equivalent)})"
            f" with state p99 {best.state_p99_ms:.0f} ms < {P99_TARGET_MS:.0f} ms"
        )
    else:
        served = f"no case kept state p99 under {P99_TARGET_MS:.0f} ms"
    most = max((c.stations for c in good), default=0)
    over = [c for c in cases if c not in good and c.stations > most]
    if over:
        c = over[0]
        served += (
            f"; at {c.stations} stations p99 {c.state_p99_ms:.0f} ms with the host "
            f"{c.host_cpu_pct:.0f}% busy"
        )
    first, last = cases[0], cases[-1]
    if len(cases) > 1 and first.records_per_s > 0:
        served += (
            f"; {first.stations} -> {last.stations} stations: records/s x"
            f"{last.records_per_s / first.records_per_s:.1f} (offered x"
            f"{last.offered_rps / first.offered_rps:.0f})"
        )
    costs = [c.db_cpu_ms_per_record for c in cases if c.db_cpu_ms_per_record is not None]
    if costs:
        served += (
            f"; database CPU per record {min(costs):.1f}-{max(costs):.1f} ms (cost grows with "
            f"records, not stations), stations' CPU per record "
            f"{min(c.client_cpu_ms_per_record for c in cases):.1f}-"
            f"{max(c.client_cpu_ms_per_record for c in cases):.1f} ms"
        )
    return served


def _table(cases: list[Case]) -> str:
    head = (
        f"{'stations':>8} {'slots':>5} {'offered/s':>9} {'records/s':>9} {'jobs':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'fin p99':>7} {'commit/s':>8} "
        f"{'cli ms/r':>8} {'db ms/r':>7} {'host%':>5} {'real-eq':>7} {'errors':>6}"
    )
    lines = [head]
    for c in cases:

        def opt(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        lines.append(
            f"{c.stations:>8} {c.slots:>5} {c.offered_rps:>9.0f} {c.records_per_s:>9.0f} "
            f"{c.jobs:>6} {c.state_p50_ms:>7.1f} {c.state_p99_ms:>7.1f} {c.state_max_ms:>7.0f} "
            f"{c.finish_p99_ms:>7.1f} {c.commits_per_s:>8.0f} "
            f"{c.client_cpu_ms_per_record:>8.2f} {opt(c.db_cpu_ms_per_record):>7} "
            f"{c.host_cpu_pct:>5.0f} {c.real_station_equivalent:>7.1f} {c.errors:>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db",
        default=os.environ.get("STATION_BENCH_PG_URL"),
        help="database URL (default $STATION_BENCH_PG_URL); PostgreSQL needs 'station db init'",
    )
    parser.add_argument("--stations", default="1,4,16,64", help="station counts, comma-separated")
    parser.add_argument("--slots", type=int, default=64, help="slots per station")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per case")
    parser.add_argument(
        "--job-seconds", type=float, default=REAL_JOB_S, help="one job's time (default: real)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON, not a table")
    args = parser.parse_args(argv)
    if not args.db:
        print("error: give --db URL (or set STATION_BENCH_PG_URL)", file=sys.stderr)
        return 2
    try:
        counts = [int(x) for x in args.stations.split(",") if x.strip()]
    except ValueError:
        print(f"error: --stations {args.stations!r} is not a list of numbers", file=sys.stderr)
        return 2
    if not counts or min(counts) < 1 or max(counts) > 255 or not 1 <= args.slots <= 255:
        print("error: 1-255 stations and 1-255 slots per station", file=sys.stderr)
        return 2
    opts = {
        "db": args.db,
        "slots": args.slots,
        "seconds": args.seconds,
        "job_seconds": args.job_seconds,
    }
    Store.open(args.db, create=args.db.startswith("sqlite")).close()  # schema there, or say so
    cases: list[Case] = []
    if not args.json:
        print(_table([]), flush=True)
    for n in counts:
        cases.append(run_case(opts, n))
        if not args.json:
            print(_table(cases[-1:]).split("\n")[-1], flush=True)
    line = conclusion(cases, args.job_seconds)
    if args.json:
        out = {
            "job_seconds": args.job_seconds,
            "real_job_seconds": REAL_JOB_S,
            "records_per_job": RECORDS_PER_JOB,
            "cases": [asdict(c) for c in cases],
            "conclusion": line,
        }
        print(json.dumps(out, indent=2))
    else:
        for c in cases:
            if c.first_error:
                print(f"{c.stations} stations, first error: {c.first_error}")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

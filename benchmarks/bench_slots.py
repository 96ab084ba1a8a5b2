"""Scaling with the number of slots: 1, 8, 32 and 64 paced simulated hubs flashed at once.

Each slot runs the full job (catalogue choice, signature check, erase, write, device-CRC
verify, boot, version read back) through the real controller and a SQLite store. Prints the
wall time per slot count, the ratio to one slot (target <= 1.05 at 64 slots), the
controller's CPU per hub (target <= 100 ms at 32 slots), the simulated hubs' CPU per hub
(during the run; target <= 400 ms), peak memory, and the machine's load average before
each run: CPU time is the figure to compare on a shared machine, wall time only on a quiet
one.

The simulated hubs run in their own processes on the same 2 cores as the station, so the
ratio carries their load too: on a real rig each hub has its own MCU. The default image is
a hub-sized 256 KiB application (a job of about 33 s); ``--size 16384`` makes 2 s jobs, in
which every slot identifying its hub at the same moment is a much larger share.

Run: ``.venv/bin/python benchmarks/bench_slots.py [--size BYTES] [--slots 1,8,32,64]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from sim.pty import HubSpec, SimHub, derive_eui64
from station.controller import Controller
from station.demo import prepare_demo_catalog
from station.events import Event, JobFinished
from station.flash import Policy, catalog_chooser
from station.profiles import Profile
from station.records.store import Store
from station.rig import Rig, Slot


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) a live process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(n: int, size: int, root: Path) -> tuple[float, float, float, int]:
    cat, trust = prepare_demo_catalog(root / f"demo{n}", size=size)
    policy = Policy(trust=trust)
    specs = [
        HubSpec(
            slot=i,
            eui64=derive_eui64(11, i),
            firmware=0x0101_0000,
            firmware_size=size,
            protocol="an3155",
        )
        for i in range(1, n + 1)
    ]
    hubs = [SimHub.launch(s) for s in specs]
    wall = cpu = sim_cpu = 0.0
    try:
        for h in hubs:
            h.wait_ready(120)
        rig = Rig("bench", tuple(Slot(h.spec.slot, "demo-an3155", port=h.port) for h in hubs))
        store = Store.open(f"sqlite:///{root}/s{n}.db")
        store.acquire_lease("bench")
        batch = store.start_batch(station_id="bench", operator="bench", rig="-", catalog="-")
        lock = threading.Lock()
        results: list[str] = []

        def publish(e: Event) -> None:
            if isinstance(e, JobFinished):
                with lock:
                    results.append(str(e.state))

        def chooser_for(p: Profile) -> object:
            return catalog_chooser(cat, p, policy)

        ctl = Controller(
            rig,
            store=store,
            batch_id=batch,
            chooser_for=chooser_for,  # type: ignore[arg-type]
            policy=policy,
            publish=publish,
        )
        sims0 = sum(_cpu_of(h.pid) for h in hubs)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        ctl.run()
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        sim_cpu = sum(_cpu_of(h.pid) for h in hubs) - sims0
        store.close()
        if results.count("passed") != n:
            raise SystemExit(f"{n} slots: not all passed: {results}")
    finally:
        for h in hubs:
            h.request_stop()
        for h in hubs:
            h.stop()
    return wall, cpu / n, sim_cpu / n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024)
    parser.add_argument("--slots", default="1,8,32,64")
    args = parser.parse_args()
    counts = [int(x) for x in args.slots.split(",")]
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        print(f"image {args.size} bytes, paced 115200 8E1, 1 ms adapter latency")
        for n in counts:
            load = os.getloadavg()[0]
            wall, cpu_per_hub, sim_per_hub, rss_kib = run(n, args.size, Path(tmp))
            base = base or wall
            print(
                f"{n:>3} slots: {wall:6.2f} s wall, ratio to 1 slot {wall / base:5.3f}, "
                f"controller CPU {cpu_per_hub * 1000:6.1f} ms/hub, "
                f"simulated hub CPU {sim_per_hub * 1000:6.1f} ms/hub, "
                f"peak RSS {rss_kib / 1024:.0f} MiB, load before {load:.1f}"
            )


if __name__ == "__main__":
    main()

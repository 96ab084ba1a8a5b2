"""Fault campaign: many simulated hubs with random faults through the real controller.

Every hub gets a random fault (NACKs, lost ACKs, line noise, dropped bytes, stalls, power
loss, a vanishing port, or none), runs one job through the controller into a SQLite store,
and is then checked independently: a hub reported passed must run the image's version and
hold the image — otherwise it is a false pass; every job the controller reported must be in
the store with the same result — otherwise a record was lost. The check asks the hub's
model itself (``SimHub.ground_truth``: mode, running version, SHA-256 of the application
area), not its line, whose injected noise would garble the check as well.

Run: ``.venv/bin/python benchmarks/fault_campaign.py [--hubs 1000] [--slots 16] [--seed 1]
[--protocols an3155,gecko]`` (slots alternate between the protocols). Unpaced hubs (the
campaign is about outcomes, not speed).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from drivers.xmodem import block_count
from firmware_images.build import demo_payload
from sim.gecko import demo_app, demo_gbl
from sim.pty import HubSpec, SimHub, SimStartError, derive_eui64
from station.controller import Controller
from station.demo import DEMO_TARGET, prepare_demo_catalog
from station.events import Event, JobFinished
from station.flash import Policy, catalog_chooser
from station.profiles import Profile
from station.records.store import Store
from station.rig import Rig, Slot

SIZE = 8192
#: Write blocks a job sends: 256-byte Write Memory blocks, or 128-byte XMODEM blocks of the
#: GBL (the application plus the GBL's own tags).
BLOCKS = {"an3155": SIZE // 256, "gecko": block_count(len(demo_gbl(DEMO_TARGET, size=SIZE)))}
PROFILES = {"an3155": "demo-an3155", "gecko": "demo-gecko"}


def random_fault(rng: random.Random, blocks: int) -> str:
    n = rng.randrange(blocks)
    return rng.choice(
        [
            "",
            f"nack={n}",
            f"nack={n}x{rng.randint(2, 7)}",
            f"lostack={n}",
            f"corrupt={rng.choice(['0.0002', '0.0005', '0.001'])}",
            f"drop={rng.choice(['0.0002', '0.0005'])}",
            f"stall={n}:{rng.choice(['0.3', '0.8'])}",
            f"powerloss={n}",
            f"vanish={n}",
        ]
    )


def independent_check(hub: SimHub) -> str | None:
    """Is a hub reported passed really running the target, with its bytes in flash?

    Asked of the hub's model through its process, not over its (deliberately faulty) line:
    the answer is the truth, not another exchange that noise can garble. Returns None when
    the pass is true, else what is wrong.
    """
    if hub.spec.protocol == "gecko":
        app = demo_app(DEMO_TARGET, size=SIZE)
    else:
        app = demo_payload(DEMO_TARGET, size=SIZE)
    try:
        truth = hub.ground_truth(len(app))
    except SimStartError as exc:
        return f"cannot ask the hub: {exc}"
    problems = []
    if truth["mode"] != "app":
        problems.append(f"mode {truth['mode']}")
    if truth["running"] != DEMO_TARGET:
        problems.append(f"running {truth['running']!r}")
    if truth["sha256"] != hashlib.sha256(app).hexdigest():
        problems.append("application bytes differ from the image")
    return "; ".join(problems) or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--protocols",
        default="an3155,gecko",
        help="comma-separated: an3155, gecko (default both; slots alternate)",
    )
    args = parser.parse_args()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not protocols or any(p not in PROFILES for p in protocols):
        parser.error(f"--protocols takes a list of {', '.join(PROFILES)}")
    rng = random.Random(args.seed)
    results: Counter[str] = Counter()
    faults_seen: Counter[str] = Counter()
    false_passes = lost = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cat, trust = prepare_demo_catalog(
            root / "demo", size=SIZE, models=[PROFILES[p] for p in protocols]
        )
        policy = Policy(trust=trust)
        store = Store.open(f"sqlite:///{root}/campaign.db")
        store.acquire_lease("campaign")
        batch = store.start_batch(station_id="campaign", operator="bench", rig="-", catalog="-")
        reported: dict[int, str] = {}
        lock = threading.Lock()

        def publish(e: Event) -> None:
            if isinstance(e, JobFinished):
                with lock:
                    reported[e.job_id] = str(e.state)

        def chooser_for(p: Profile) -> object:
            return catalog_chooser(cat, p, policy)

        done = 0
        while done < args.hubs:
            n = min(args.slots, args.hubs - done)
            specs = []
            for i in range(1, n + 1):
                protocol = protocols[(done + i) % len(protocols)]
                fault = random_fault(rng, BLOCKS[protocol])
                faults_seen[f"{protocol} {fault.split('=')[0] or 'none'}"] += 1
                specs.append(
                    HubSpec(
                        slot=i,
                        eui64=derive_eui64(args.seed * 100_000 + done, i),
                        firmware=0x0101_0000,
                        firmware_size=SIZE,
                        paced=False,
                        faults=fault,
                        seed=rng.randrange(1 << 30),
                        protocol=protocol,
                    )
                )
            hubs = [SimHub.launch(s) for s in specs]
            for h in hubs:
                h.wait_ready(30)
            reported.clear()
            rig = Rig(
                "campaign",
                tuple(Slot(h.spec.slot, h.spec.profile, port=h.port) for h in hubs),
                job_retries=0,
                slot_fault_after=0,
            )
            Controller(
                rig,
                store=store,
                batch_id=batch,
                chooser_for=chooser_for,  # type: ignore[arg-type]
                policy=policy,
                publish=publish,
            ).run()
            for job_id, state in reported.items():
                row = store.job(job_id)
                if row.state != state:
                    lost += 1
                hub = next(h for h in hubs if h.spec.slot == row.slot)
                results[f"{hub.spec.protocol} {state}"] += 1
                if state == "passed" and (wrong := independent_check(hub)) is not None:
                    false_passes += 1
                    print(
                        f"FALSE PASS: job {job_id}, {hub.spec.protocol} slot {row.slot} "
                        f"{hub.spec.eui64}, faults {hub.spec.faults!r}: {wrong}",
                        flush=True,
                    )
            for h in hubs:
                h.request_stop()
            for h in hubs:
                h.stop()
            done += n
            print(f"{done}/{args.hubs} hubs: {dict(results)}", flush=True)
        store.close()
    wall = time.monotonic() - started
    print(f"\nfaults injected: {dict(faults_seen)}")
    print(f"results: {dict(results)}")
    print(f"false passes: {false_passes}   lost records: {lost}   ({wall:.0f} s)")
    if false_passes or lost:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

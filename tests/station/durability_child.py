"""Child process for test_durability: records jobs and transitions until it is killed.

Usage: python durability_child.py DB_URL SEED SLOTS

Opens the store, starts a batch and runs SLOTS slot threads, each recording jobs forever:
start, a seeded random walk along the state machine, and (mostly) a finish. Right after
each store call returns it prints one line, flushed, so the parent knows what was reported:

    batch <id>
    job <job id> <slot>
    state <job id> <state>
    final <job id> <state>

The parent SIGKILLs it at a random moment and checks that everything printed is stored.
"""

from __future__ import annotations

import random
import sys
import threading

from station.events import CHAIN, JobState
from station.outcome import FlashOutcome, Result
from station.records.store import Store

_print_lock = threading.Lock()


def say(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def slot(store: Store, batch_id: int, number: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + number)
    n = 0
    while True:
        n += 1
        hub = f"00-DB-{number:02X}-00-00-00-{n >> 8 & 0xFF:02X}-{n & 0xFF:02X}"
        job = store.start_job(batch_id, number, f"/dev/pts/{number}", "demo-an3155")
        say(f"job {job} {number}")
        reach = rng.randrange(len(CHAIN))
        for state in CHAIN[1 : reach + 1]:
            detail: dict[str, object] = {}
            if state is JobState.IDENTIFIED:
                detail = {"eui64": hub, "hw_version": 2, "version_before": "0x01010000"}
            elif state is JobState.PLANNED:
                detail = {"target_version": "0x01050000", "image_sha256": "ab" * 32}
            store.record_state(job, state, detail)
            say(f"state {job} {state}")
        if rng.random() < 0.15:
            continue  # left live: as if the slot thread had died (the restart must end it)
        if reach == len(CHAIN) - 1 and rng.random() < 0.7:
            out = FlashOutcome(
                port=f"/dev/pts/{number}",
                profile="demo-an3155",
                result=Result.PASSED,
                image_version="0x01050000",
                target_version="0x01050000",
                image_sha256="ab" * 32,
                eui64=hub,
                eui64_confirmed=hub,
                hw_version=2,
                version_before="0x01010000",
                version_after="0x01050000",
                verify_method="crc",
                seconds=1.0,
            )
        else:
            out = FlashOutcome(
                port=f"/dev/pts/{number}",
                profile="demo-an3155",
                result=rng.choice([Result.FAILED, Result.REFUSED, Result.SKIPPED]),
                eui64=hub if reach else None,
                phase="write",
                message="NACK",
                overrides=["allow-unsigned"] if rng.random() < 0.3 else [],
            )
        final = store.finish_job(job, out)
        say(f"final {job} {final}")


def main() -> None:
    url, seed, slots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = Store.open(url)
    store.acquire_lease("bench-kill")
    batch_id = store.start_batch(
        station_id="bench-kill", operator="durability", rig="rig.toml", catalog="catalog"
    )
    say(f"batch {batch_id}")
    threads = [
        threading.Thread(target=slot, args=(store, batch_id, n, seed), daemon=True)
        for n in range(1, slots + 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()

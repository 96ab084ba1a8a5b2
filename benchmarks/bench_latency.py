"""What low-latency mode is worth: an AN3155 job at 1 ms and at 16 ms adapter latency.

Flashes a 256 KiB image at 115200 baud 8E1 through a paced in-process simulated hub
(``sim://``, the same hub model and pacer as ``bench_an3155.py``) whose USB-serial adapter
delivers each answer 1 ms (an FTDI part in low-latency mode, a CP210x, a CH340) or 16 ms
(an FTDI part at its default latency timer, when low-latency mode cannot be set) after its
last byte, with Write Memory pipelined (command, address and data in one burst: one
turnaround a block) and in lock-step (three turnarounds a block, as ``pipeline_writes =
false`` or a retried block). For each it prints the whole job (connect to confirm) with
device-CRC verify and its ratio to the physical limit of ``bench_an3155.py``.

The 16 ms runs model the adapter's state *after* the station asked for low latency and
the driver ignored it (``latency-ms=16``): a port that accepts the request runs at 1 ms,
which is what the station records in the job (``adapter_latency_ms``).

Run: ``.venv/bin/python benchmarks/bench_latency.py [--size BYTES]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from bench_an3155 import BAUD, physical_limit

from firmware_images.loader import load_image
from sim.urlhandler import register
from sim.urlhandler.protocol_sim import forget_hubs
from station.demo import write_demo_image
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile


def run(size: int, latency_ms: float, pipelined: bool) -> tuple[float, float, float | None]:
    """One whole job; returns (seconds, limit, the latency the job recorded)."""
    profile = dataclasses.replace(load_profile("demo-an3155"), pipeline_writes=pipelined)
    with tempfile.TemporaryDirectory() as tmp:
        image = load_image(write_demo_image(Path(tmp) / "bench.hex", 0x0105_0000, size=size))
    forget_hubs()
    port = f"sim://an3155?slot=1&seed=7&firmware=0x01010000&baud={BAUD}&latency-ms={latency_ms:g}"
    t0 = time.monotonic()
    out = flash_hub(port, profile, image, policy=Policy(allow_unsigned=True), verify="crc")
    took = time.monotonic() - t0
    if out.result is not Result.PASSED:
        raise SystemExit(f"benchmark run did not pass: {out.message}")
    pages = len(profile.pages_for(image.address, image.end))
    limit = sum(physical_limit(len(image.data), pages, readback=False).values())
    return took, limit, out.adapter_latency_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024, help="image bytes")
    args = parser.parse_args()
    register()
    rows: dict[tuple[float, bool], tuple[float, float, float | None]] = {}
    print(f"AN3155 whole job, {args.size} bytes, {BAUD} baud 8E1, device-CRC verify")
    for latency in (1.0, 16.0):
        for pipelined in (True, False):
            took, limit, recorded = run(args.size, latency, pipelined)
            rows[(latency, pipelined)] = (took, limit, recorded)
            mode = "pipelined" if pipelined else "lock-step"
            print(
                f"  {latency:4g} ms adapter, {mode:<9}: {took:7.2f} s   limit {limit:6.2f} s   "
                f"ratio {took / limit:.3f}   (job recorded {recorded:g} ms)"
            )
    for pipelined in (True, False):
        mode = "pipelined" if pipelined else "lock-step"
        cost = rows[(16.0, pipelined)][0] - rows[(1.0, pipelined)][0]
        print(f"  low-latency mode saves {cost:6.2f} s a hub {mode}")


if __name__ == "__main__":
    main()

"""What exporting a hub's port over the network with ser2net costs a re-flash.

Flashes a 256 KiB image at 115200 baud 8E1 through one paced simulated AN3155 hub, in
turns: straight at its pseudo-terminal, then through real ser2net exporting that
pseudo-terminal over RFC 2217 on 127.0.0.1 (``rfc2217://127.0.0.1:PORT``). Each run is the
whole job (connect, identify, erase, write, verify by device CRC, boot, confirm), the hub
being re-flashed with ``force`` each time and always found running its application.
Prints the median of each and the ratio (target: ser2net within 3 % of the direct pty),
with the per-phase times.

Run: ``.venv/bin/python benchmarks/bench_ser2net.py [--size BYTES] [--runs N]``
(needs ser2net: ``apt-get install ser2net``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.ser2netkit

from drivers.types import Phase
from firmware_images.loader import load_image
from sim.pty import HubSpec, SimHub, derive_eui64
from station.demo import write_demo_image
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile
from tests.ser2netkit import SER2NET, Ser2net

BAUD = 115200


def one_job(port: str, image_path: Path) -> tuple[float, dict[str, float]]:
    """The whole job's seconds and each phase's."""
    profile = load_profile("demo-an3155")
    image = load_image(image_path)
    entered: dict[Phase, float] = {}

    def progress(phase: Phase, done: int, total: int, note: str) -> None:
        entered.setdefault(phase, time.monotonic())

    t0 = time.monotonic()
    out = flash_hub(
        port,
        profile,
        image,
        policy=Policy(allow_unsigned=True, force=True),
        verify="crc",
        on_progress=progress,
    )
    t_end = time.monotonic()
    if out.result is not Result.PASSED:
        raise SystemExit(f"benchmark run through {port} did not pass: {out.message}")
    phases = list(entered)
    spans = {
        str(a): (entered[b] if b else t_end) - entered[a]
        for a, b in zip(phases, [*phases[1:], None], strict=True)
    }
    return t_end - t0, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024, help="image bytes")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median shown)")
    args = parser.parse_args()
    if SER2NET is None:
        raise SystemExit("ser2net is not installed (Debian: apt-get install ser2net)")
    spec = HubSpec(
        slot=1,
        eui64=derive_eui64(11, 1),
        firmware=0x0101_0000,
        start_in="bootloader",
        baud=BAUD,
        paced=True,
        latency_s=0.001,
        protocol="an3155",
    )
    times: dict[str, list[float]] = {"direct": [], "ser2net": []}
    spans: dict[str, dict[str, list[float]]] = {"direct": {}, "ser2net": {}}
    with tempfile.TemporaryDirectory() as tmp:
        image = write_demo_image(Path(tmp) / "bench.hex", 0x0105_0000, size=args.size)
        with SimHub.start(spec) as hub, Ser2net([hub.port], Path(tmp) / "ser2net") as exp:
            ports = {"direct": hub.port, "ser2net": exp.urls[0]}
            # A first job leaves the hub running its application, as every later job
            # finds it: the runs compared all start from the same state.
            one_job(hub.port, image)
            for _ in range(args.runs):
                for name, port in ports.items():
                    took, phase_s = one_job(port, image)
                    times[name].append(took)
                    for phase, s in phase_s.items():
                        spans[name].setdefault(phase, []).append(s)
    direct, net = statistics.median(times["direct"]), statistics.median(times["ser2net"])
    print(
        f"AN3155 whole job, {args.size} bytes, {BAUD} baud 8E1, paced hub, device-CRC verify, "
        f"median of {args.runs}"
    )
    print(f"  direct pty               {direct:7.2f} s   runs {_runs(times['direct'])}")
    print(f"  ser2net rfc2217 loopback {net:7.2f} s   runs {_runs(times['ser2net'])}")
    print(f"  ratio {net / direct:.4f}   (+{(net / direct - 1) * 100:.2f} %, target <= 3 %)")
    for phase in spans["direct"]:
        d = statistics.median(spans["direct"][phase])
        n = statistics.median(spans["ser2net"].get(phase, [0.0]))
        print(f"    {phase:<9} direct {d:7.3f} s   ser2net {n:7.3f} s   {n - d:+7.3f} s")


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()

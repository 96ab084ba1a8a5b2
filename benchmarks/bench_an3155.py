"""How close `station flash` gets to the physical limit of an AN3155 link.

Flashes a 256 KiB image at 115200 baud 8E1 through a paced simulated hub (bytes cost 11 bit
times, flash erase/program/CRC take the STM32L4 datasheet's typical times, the USB-serial
adapter adds 1 ms per turnaround) and prints, for device-CRC verify and for readback verify:

- the measured time of the whole job and of write+verify+boot+confirm;
- the physical limit L: payload bytes x 11 / baud for every time the payload must cross the
  wire, plus the flash's unavoidable busy time (erase, program, CRC, application start);
- the ratio time / L (target <= 1.10 for write+verify+boot+confirm);
- the same for stm32flash (the reference open-source AN3155 tool) on the same simulated
  hub, when it is installed: it neither boots nor confirms, so its limit is smaller.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_an3155.py [--size BYTES]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from drivers.types import Phase
from firmware_images.loader import load_image
from sim import an3155 as model
from sim.pty import HubSpec, SimHub, derive_eui64
from station.demo import write_demo_image
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile

BAUD = 115200
BITS = 11  # 8E1: start, 8 data, parity, stop


def physical_limit(size: int, pages: int, *, readback: bool) -> dict[str, float]:
    """The time no tool can beat on this link and flash, split by phase."""
    wire = size * BITS / BAUD
    return {
        "erase": pages * model.PAGE_ERASE_S,
        "write": wire + (size / 8) * model.DOUBLEWORD_PROGRAM_S,
        "verify": wire if readback else (size / 4) * model.CRC_WORD_S,
        "boot": model.APP_START_S,
    }


def run(size: int, verify: str, slot: int) -> None:
    profile = load_profile("demo-an3155")
    with tempfile.TemporaryDirectory() as tmp:
        image = load_image(write_demo_image(Path(tmp) / "bench.hex", 0x0105_0000, size=size))
        spec = HubSpec(
            slot=slot,
            eui64=derive_eui64(7, slot),
            firmware=0x0101_0000,
            start_in="bootloader",
            baud=BAUD,
            paced=True,
            latency_s=0.001,
            protocol="an3155",
        )
        entered: dict[Phase, float] = {}

        def progress(phase: Phase, done: int, total: int, note: str) -> None:
            entered.setdefault(phase, time.monotonic())

        with SimHub.start(spec) as hub:
            t0 = time.monotonic()
            out = flash_hub(
                hub.port,
                profile,
                image,
                policy=Policy(allow_unsigned=True),  # a demo HEX image: unsigned
                verify=verify,
                on_progress=progress,
            )
            t_end = time.monotonic()
    if out.result is not Result.PASSED:
        raise SystemExit(f"benchmark run did not pass: {out.message}")
    pages = len(profile.pages_for(image.address, image.end))
    lim = physical_limit(len(image.data), pages, readback=verify == "readback")
    whole, whole_l = t_end - t0, sum(lim.values())
    seg = t_end - entered[Phase.WRITE]
    seg_l = lim["write"] + lim["verify"] + lim["boot"]
    print(
        f"\nverify by {out.verify_method}: {len(image.data)} bytes, {pages} pages, "
        f"{BAUD} baud 8E1, 1 ms adapter latency"
    )
    print(
        f"  write+verify+boot+confirm: {seg:7.2f} s   limit {seg_l:7.2f} s   "
        f"ratio {seg / seg_l:.3f}   (target <= 1.10)"
    )
    print(
        f"  whole job (connect..confirm): {whole:7.2f} s   limit {whole_l:7.2f} s   "
        f"ratio {whole / whole_l:.3f}"
    )
    for a, b in zip(list(entered), [*list(entered)[1:], None], strict=True):
        dur = (entered[b] if b else t_end) - entered[a]
        print(f"    {a!s:<9} {dur:7.3f} s")


def run_peer(size: int, verify: bool, slot: int) -> None:
    """stm32flash on the same paced hub, same image, for a side-by-side figure."""
    tool = shutil.which("stm32flash")
    if tool is None:
        print("\nstm32flash not installed (apt-get install stm32flash): peer run skipped")
        return
    profile = load_profile("demo-an3155")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.bin"
        write_demo_image(path, 0x0105_0000, size=size)
        spec = HubSpec(
            slot=slot,
            eui64=derive_eui64(7, slot),
            firmware=0x0101_0000,
            start_in="bootloader",
            baud=BAUD,
            paced=True,
            latency_s=0.001,
            protocol="an3155",
        )
        with SimHub.start(spec) as hub:
            # -m 8n1: a pseudo-terminal cannot carry parity (the hub still times 8E1).
            cmd = [
                tool,
                "-b",
                str(BAUD),
                "-m",
                "8n1",
                "-w",
                str(path),
                "-S",
                f"0x{profile.app_address:08X}",
                hub.port,
            ] + (["-v"] if verify else [])
            t0 = time.monotonic()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            took = time.monotonic() - t0
    if done.returncode:
        print(f"\nstm32flash failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        return
    pages = len(profile.pages_for(profile.app_address, profile.app_address + size))
    lim = physical_limit(size, pages, readback=verify)
    lim_w = lim["erase"] + lim["write"] + (lim["verify"] if verify else 0.0)
    what = "write + readback verify (-v)" if verify else "write only, no verify, no boot"
    print(f"\nstm32flash {what}: {took:7.2f} s   limit {lim_w:7.2f} s   ratio {took / lim_w:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024, help="image bytes")
    parser.add_argument("--no-peers", action="store_true", help="skip the stm32flash runs")
    args = parser.parse_args()
    run(args.size, "crc", 1)
    run(args.size, "readback", 2)
    if not args.no_peers:
        run_peer(args.size, False, 3)
        run_peer(args.size, True, 4)


if __name__ == "__main__":
    main()

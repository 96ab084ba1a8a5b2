"""How close a write of only what changed gets to its limit on a paced AN3155 hub.

The hub (256 KiB of release A in flash, 115200 baud 8E1, STM32L4 flash times, 1 ms
USB-serial adapter latency, as in bench_an3155.py) is given release B, which differs from A
in 0 %, 1 %, 10 %, 50 % and 100 % of its pages the way real releases do
(:func:`firmware_images.build.demo_release`: the descriptor's page and a few clusters of
code pages). For each, the whole job (connect..confirm) is timed against its limit:

- the changed pages: their erase, their bytes on the wire and their programming time;
- one CRC of every page: a Get Checksum exchange's bytes on the wire (12 out, 9 back) and
  the device's CRC time, per page, which is what learning the changed pages may cost;
- the verify of the whole image (device CRC time) and the application start.

Target: ratio <= 1.10 in every case, and the 0 % case (the hub already holds the image,
written again with ``force``) under 10 % of the full write (the 100 % case).

``--previous`` hands the session release A as the release the hub reports, as the
catalogue chooser does when it holds that release: the hub's CRC of the whole range proves
its flash holds A, and the changed pages are found on the station, not asked one by one.

Run: ``.venv/bin/python benchmarks/bench_diff.py [--size BYTES] [--previous] [--no-dfu]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import bincopy

from firmware_images.build import DEMO_LOAD_ADDRESS, demo_payload, demo_release
from firmware_images.loader import load_image
from sim import an3155 as model
from sim.pty import HubSpec, SimHub, derive_eui64
from station.flash import FlashOutcome, Policy, Result, flash_hub
from station.profiles import load_profile

BAUD = 115200
BITS = 11  # 8E1
OLD, NEW = 0x0101_0000, 0x0105_0000
SHARES = (0, 1, 10, 50, 100)
#: A Get Checksum exchange: command (2), address (5), length (5) out; 3 ACKs, ACK, CRC (5) back.
CRC_EXCHANGE_BYTES = 12 + 9


def limit_s(size: int, page: int, changed_bytes: int, changed_pages: int) -> dict[str, float]:
    """The time no tool can beat for this job, split in parts."""
    pages = -(-size // page)
    return {
        "changed pages": changed_pages * model.PAGE_ERASE_S
        + changed_bytes * BITS / BAUD
        + (changed_bytes / 8) * model.DOUBLEWORD_PROGRAM_S,
        "a CRC per page": pages * (CRC_EXCHANGE_BYTES * BITS / BAUD + page / 4 * model.CRC_WORD_S),
        "verify+boot": size / 4 * model.CRC_WORD_S + model.APP_START_S,
    }


def run(
    size: int, share: int, slot: int, previous: bool = False
) -> tuple[float, float, FlashOutcome]:
    profile = load_profile("demo-an3155")
    page = profile.page_size
    pages = -(-size // page)
    changed = 0 if share == 0 else max(1, round(pages * share / 100))
    old = demo_payload(OLD, size=size)
    new = demo_release(old, NEW, changed=changed, page_size=page)
    changed_bytes = sum(
        len(new[n * page : (n + 1) * page])
        for n in range(pages)
        if new[n * page : (n + 1) * page] != old[n * page : (n + 1) * page]
    )
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        hexfile = bincopy.BinFile()
        hexfile.add_binary(new, address=DEMO_LOAD_ADDRESS)
        path = Path(tmp) / "release.hex"
        path.write_text(hexfile.as_ihex())
        image = load_image(path)
        if previous:
            image = dataclasses.replace(image, previous=old)
        spec = HubSpec(
            slot=slot,
            eui64=derive_eui64(16, slot),
            firmware=OLD,
            firmware_size=size,
            start_in="bootloader",
            baud=BAUD,
            paced=True,
            latency_s=0.001,
            protocol="an3155",
        )
        with SimHub.start(spec) as hub:
            t0 = time.monotonic()
            out = flash_hub(
                hub.port,
                profile,
                image,
                # An unsigned demo image; force: the 0 % case already runs its version.
                policy=Policy(allow_unsigned=True, force=True),
                on_progress=lambda phase, done, total, note: notes.append(note) if note else None,
            )
            took = time.monotonic() - t0
    if out.result is not Result.PASSED:
        raise SystemExit(f"{share} %: the job did not pass: {out.message}")
    lim = limit_s(size, page, changed_bytes, changed)
    asked = next((n for n in notes if "device CRC" in n), "")
    print(
        f"{share:4d} %  {changed:4d} pages changed  written {out.pages_written:4d}  "
        f"skipped {out.pages_skipped:4d}  {took:7.2f} s  limit {sum(lim.values()):7.2f} s  "
        f"ratio {took / sum(lim.values()):.3f}   ({asked})"
    )
    phases = "  ".join(f"{k} {v:.3f}" for k, v in out.phase_seconds.items() if v >= 0.0005)
    print(f"        phases (s): {phases}")
    return took, sum(lim.values()), out


def run_dfu(size: int, share: int) -> float:
    """The same job on a paced simulated DfuSe hub (USB full speed, in this process, on the
    system clock): the image's range read back (UPLOAD) and compared, each run of matching
    pages read again, only the pages that differ erased and downloaded, all read back to
    verify. No limit is computed here (bench_dfu.py models the download's); the time says
    what the readback diff costs against a full download."""
    import os

    from drivers.transport.usb import ENV_BACKEND, register_backend
    from firmware_images.dfu import build_dfuse
    from sim.dfu_rig import dfu_rig_specs
    from sim.usb_backend import SimUsbBackend, SimUsbService

    profile = load_profile("demo-dfu")
    page = profile.page_size
    pages = -(-size // page)
    changed = 0 if share == 0 else max(1, round(pages * share / 100))
    old = demo_payload(OLD, size=size)
    new = demo_release(old, NEW, changed=changed, page_size=page)
    service = SimUsbService.of(dfu_rig_specs(1, firmware=OLD, firmware_size=size))
    register_backend("bench-diff-dfu", lambda: SimUsbBackend(service))
    os.environ[ENV_BACKEND] = "bench-diff-dfu"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "release.dfu"
        path.write_bytes(
            build_dfuse([(0, "Internal Flash", [(DEMO_LOAD_ADDRESS, new)])], vid=0x0483, pid=0xDF11)
        )
        image = load_image(path)
        t0 = time.monotonic()
        out = flash_hub(
            f"usb:{service.hub(1).serial}",
            profile,
            image,
            policy=Policy(allow_unsigned=True, force=True),
        )
        took = time.monotonic() - t0
    if out.result is not Result.PASSED:
        raise SystemExit(f"DFU {share} %: the job did not pass: {out.message}")
    print(
        f"DFU {share:4d} %  {changed:4d} pages changed  written {out.pages_written:4d}  "
        f"skipped {out.pages_skipped:4d}  {took:7.2f} s"
    )
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024, help="image bytes")
    parser.add_argument("--no-dfu", action="store_true", help="skip the DfuSe runs")
    parser.add_argument(
        "--previous", action="store_true", help="the session knows release A (as from a catalogue)"
    )
    args = parser.parse_args()
    print(
        f"{args.size} bytes, {BAUD} baud 8E1, 1 ms adapter latency; whole job "
        "(connect..confirm) against changed pages + one CRC per page + verify + boot "
        "(target ratio <= 1.10)"
    )
    times = {}
    worst = 0.0
    for slot, share in enumerate(SHARES, 1):
        took, lim, _ = run(args.size, share, slot, args.previous)
        times[share] = took
        worst = max(worst, took / lim)
    fraction = times[0] / times[100]
    print(
        f"worst ratio {worst:.3f} (target <= 1.10); 0 % case {times[0]:.2f} s = "
        f"{100 * fraction:.1f} % of the full write's {times[100]:.2f} s (target < 10 %)"
    )
    if not args.no_dfu:
        print("\nDfuSe hub, USB full speed, same releases (whole job, connect..confirm):")
        for share in SHARES:
            run_dfu(args.size, share)


if __name__ == "__main__":
    main()

"""How close a Gecko (UART XMODEM) upload gets to the physical limit of its link.

Uploads a GBL carrying a 256 KiB application at 115200 baud 8N1 through a paced simulated
hub (bytes cost 10 bit times, the bootloader erases each 8 KiB page as it reaches it and
programs 32-bit words at the EFR32MG21 figures of docs/sim-gecko.md, the USB-serial adapter
adds 1 ms per turnaround) with ``station flash``'s own code, and prints:

- the measured time of the upload (``'1'`` to the bootloader's verdict) and of the whole
  job (connect, identify, upload, verify, boot, confirm);
- the physical limit L: the GBL's bytes x 10 / baud, plus the flash's busy time (page
  erases and word writes), which the bootloader spends before it ACKs each block;
- the ratio upload / L (target <= 1.12 with the default 1 ms adapter latency);
- what XMODEM itself costs on top of L: the 128-byte framing (SOH, number, complement,
  CRC: 5 bytes a block, and the padding of the last block) and the ACK turnaround (the ACK
  byte and one adapter latency per block, during which the line is idle), and what is
  left for the host and the simulator's scheduling.

Run: ``.venv/bin/python benchmarks/bench_gecko.py [--size BYTES] [--latency-ms MS]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from drivers.types import Phase
from drivers.xmodem import BLOCK_SIZE, FRAME_SIZE, block_count
from firmware_images.loader import load_image
from sim import gecko as model
from sim.pty import HubSpec, SimHub, derive_eui64
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile

BAUD = 115200
BITS = 10  # 8N1: start, 8 data, stop


def run(size: int, latency_s: float) -> None:
    profile = load_profile("demo-gecko")
    gbl = model.demo_gbl(0x0105_0000, size=size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.gbl"
        path.write_bytes(gbl)
        image = load_image(path, default_address=profile.app_address)
    spec = HubSpec(
        slot=1,
        eui64=derive_eui64(7, 1),
        firmware=0x0101_0000,
        firmware_size=16 * 1024,
        start_in="bootloader",
        baud=BAUD,
        paced=True,
        latency_s=latency_s,
        protocol="gecko",
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
            policy=Policy(allow_unsigned=True),  # a GBL carries no signature we can check
            on_progress=progress,
        )
        t_end = time.monotonic()
    if out.result is not Result.PASSED:
        raise SystemExit(f"benchmark run did not pass: {out.message}")

    blocks = block_count(len(gbl))
    byte_s = BITS / BAUD
    wire = len(gbl) * byte_s
    pages = len(profile.pages_for(image.address, image.end))
    words = -(-len(image.data) // 4)
    flash = pages * model.PAGE_ERASE_S + words * model.WORD_WRITE_S
    limit = wire + flash
    framing = (blocks * FRAME_SIZE - len(gbl)) * byte_s  # headers, CRCs, last block's padding
    turnaround = (blocks + 1) * (byte_s + latency_s)  # ACK byte + adapter latency, EOT too
    upload = entered[Phase.VERIFY] - entered[Phase.WRITE]
    floor = limit + framing + turnaround
    print(
        f"\nGecko upload: GBL of {len(gbl)} bytes ({len(image.data)} bytes of application, "
        f"{blocks} blocks of {BLOCK_SIZE}), {BAUD} baud 8N1, "
        f"{latency_s * 1000:g} ms adapter latency"
    )
    print(
        f"  upload ('1' to verdict): {upload:7.2f} s   limit {limit:7.2f} s   "
        f"ratio {upload / limit:.3f}   (target <= 1.12)"
    )
    print(
        f"    limit = wire {wire:.2f} s (GBL bytes x {BITS} / baud) + flash busy {flash:.2f} s "
        f"({pages} page erases x {model.PAGE_ERASE_S * 1e3:g} ms + {words} words x "
        f"{model.WORD_WRITE_S * 1e6:g} us)"
    )
    print(
        f"    XMODEM framing (5 bytes a block + padding): {framing:6.2f} s "
        f"({framing / limit:.1%} of L)"
    )
    print(
        f"    ACK turnaround (ACK byte + latency, {blocks + 1} times): {turnaround:6.2f} s "
        f"({turnaround / limit:.1%} of L)"
    )
    print(
        f"    protocol floor L + framing + turnaround: {floor:6.2f} s "
        f"(ratio {floor / limit:.3f}); host and scheduling: {upload - floor:6.2f} s "
        f"({(upload - floor) / blocks * 1e3:.3f} ms a block)"
    )
    whole = t_end - t0
    print(f"  whole job (connect..confirm): {whole:7.2f} s")
    marks = list(entered)
    for a, b in zip(marks, [*marks[1:], None], strict=True):
        dur = (entered[b] if b else t_end) - entered[a]
        print(f"    {a!s:<9} {dur:7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024, help="application bytes")
    parser.add_argument(
        "--latency-ms", type=float, default=1.0, help="USB-serial adapter latency (default 1)"
    )
    args = parser.parse_args()
    run(args.size, args.latency_ms / 1000.0)


if __name__ == "__main__":
    main()

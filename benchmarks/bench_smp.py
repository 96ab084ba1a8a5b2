"""How close an MCUboot serial recovery (SMP) upload gets to the limit of its link.

Uploads a 256 KiB application (in an MCUboot image) at 115200 baud 8N1 to a paced simulated
MCUboot hub (10 bit times a byte each way, the whole slot erased when the first chunk
arrives, double words programmed at the STM32L4 figures of docs/sim-an3155.md, 1 ms of
USB-serial adapter latency per turnaround) with the station's SMP driver, chunks sized by
``chunk_size`` for the profile's receive buffer, and prints:

- the measured upload time (first chunk to the last answer);
- the limit L of the issue's formula: the payload times the base64 and framing overhead
  (the bytes of every request frame as sent: length, SMP header, CBOR keys, CRC, base64,
  line markers and newlines) x 10 / baud, plus the flash time (slot erase, programming);
- the ratio upload / L (target <= 1.10);
- the same ratio against the bare base64 limit (payload x 4/3 x 127/124 x 10 / baud plus
  flash), which leaves SMP's per-frame header and CBOR in the overhead.

Run: ``.venv/bin/python benchmarks/bench_smp.py [--size BYTES] [--receive-size N]``.
"""

from __future__ import annotations

import argparse
import json
import time

from drivers.smp import SmpClient, chunk_size
from drivers.transport.serial import SerialLink
from sim import smp as sim_smp
from sim.an3155 import PAGE_ERASE_S
from sim.pty import HubSpec, SimHub, derive_eui64

BAUD = 115200
BITS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024, help="application bytes")
    parser.add_argument("--receive-size", type=int, default=1024, help="hub receive buffer")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    image = sim_smp.demo_image(0x0105_0000, size=args.size)
    spec = HubSpec(
        slot=1,
        eui64=derive_eui64(7, 1),
        protocol="smp",
        firmware=0x0101_0000,
        firmware_size=16 * 1024,
        start_in="bootloader",
        paced=True,
        baud=BAUD,
    )
    hub = SimHub.start(spec)
    try:
        with SerialLink(hub.port, baudrate=BAUD, parity="none") as link:
            client = SmpClient(link, receive_size=args.receive_size, answer_timeout_s=2.0)
            client.echo("bench", timeout_s=2.0)
            chunk = chunk_size(args.receive_size, len(image))
            start = time.monotonic()
            report = client.upload(image, chunk=chunk, first_timeout_s=30.0)
            upload_s = time.monotonic() - start
            state = client.image_state()
    finally:
        hub.stop()
    pages = sim_smp.SLOT_SIZE // sim_smp.PAGE_SIZE
    flash_s = pages * PAGE_ERASE_S + sim_smp.program_s(len(image))
    wire_s = report.sent * BITS / BAUD
    limit_s = wire_s + flash_s
    bare_s = len(image) * 4 / 3 * 127 / 124 * BITS / BAUD + flash_s
    figures = {
        "image_bytes": len(image),
        "chunk": chunk,
        "requests": report.requests,
        "request_wire_bytes": report.sent,
        "overhead_factor": round(report.sent / len(image), 4),
        "flash_s": round(flash_s, 3),
        "limit_s": round(limit_s, 3),
        "upload_s": round(upload_s, 3),
        "ratio": round(upload_s / limit_s, 4),
        "ratio_vs_bare_base64": round(upload_s / bare_s, 4),
        "listed": [s.version for s in state],
    }
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    print(f"{'target':>22}: ratio <= 1.10 -> {'met' if figures['ratio'] <= 1.10 else 'MISSED'}")


if __name__ == "__main__":
    main()

"""How close a Gecko (UART XMODEM) upload gets to the physical limit of its link.

Uploads a GBL carrying a 256 KiB application at 115200 baud 8N1 through a paced simulated
hub (bytes cost 10 bit times, the bootloader erases each 8 KiB page as it reaches it and
programs 32-bit words at the EFR32MG21 figures of docs/sim-gecko.md, the USB-serial adapter
adds 1 ms per turnaround) with ``station flash``'s own code, and prints:

- the measured time of the upload (``'1'`` to the bootloader's verdict) and of the whole
  job (connect, identify, upload, verify, boot, confirm);
- the physical limit L (the issue's formula): the GBL's bytes x 10 / baud, plus the flash's
  busy time (page erases and word writes), which the bootloader spends before it ACKs each
  block (``btl_comm_xmodem.c`` parses, and so programs, a block before it sends the ACK);
- the ratio upload / L (target <= 1.12 with the default 1 ms adapter latency);
- what XMODEM itself costs on top of L, each on its own line: the 128-byte framing (SOH,
  number, complement, CRC: 5 bytes a block, and the padding of the last block), the ACK
  turnaround (the ACK byte and one adapter latency per block, during which the line is
  idle) and the bootloader's own start and end of an upload;
- the budget that leaves for everything the host and the simulator do per block at the
  target, what this machine's pseudo-terminals alone cost per block (measured before the
  run with bare ``os.write``/``select``/``os.read`` between two processes idling as long
  between exchanges as the upload does), and what the station's and the simulator's
  Python add on top.

Then a compressed-GBL row per method (LZ4, LZMA): the same application made compressible
(:func:`sim.gecko.demo_app` ``compressible``, about 2:1 as radio firmware), sent as a
compressed GBL to an in-process hub whose bootloader decompresses as blocks arrive, timed
against the *uncompressed* wire limit (the plain GBL's bytes x 10 / baud + flash busy): a
ratio below 1.0 is time the compression saved on the line; the file's compression ratio is
printed with it. The flash busy time is the same either way (every byte is still
programmed); the bootloader's decompression time is not modelled.

Run: ``.venv/bin/python benchmarks/bench_gecko.py [--size BYTES] [--latency-ms MS]
[--transport ...] [--no-compressed]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import statistics
import tempfile
import time
import tty
from pathlib import Path

from drivers.types import Phase
from drivers.xmodem import (
    BLOCK_SIZE,
    FRAME_SIZE,
    SenderTimeouts,
    XmodemSender,
    block_count,
    frames,
)
from firmware_images.loader import load_image
from sim import gecko as model
from sim.pty import SPIN_S, HubSpec, SimHub, derive_eui64
from sim.urlhandler import register
from sim.urlhandler.protocol_sim import forget_hubs
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile
from station.sessions.trace import TracedLink

BAUD = 115200
BITS = 10  # 8N1: start, 8 data, stop
TARGET = 1.12


class _AckingPort:
    """A pyserial stand-in that takes any write and answers every read with an ACK at once."""

    def write(self, data: bytes) -> int:
        return len(data)

    def read(self, size: int = 1) -> bytes:
        return b"\x06" * size


def station_code_cost(blocks: int = 4000) -> float:
    """Seconds a block costs in the station's own XMODEM loop, warm, with no line at all.

    The real sender, on the real (traced) serial link, over a port that answers at once:
    what the station spends between an ACK and its next frame when nothing else (a wake-up,
    a cold cache, the simulator) is in the way.
    """
    link = TracedLink("stub", parity="none")
    link._ser, link._timeout_s = _AckingPort(), 3.0  # a benchmark may reach inside
    sender = XmodemSender(link, timeouts=SenderTimeouts(response_s=3.0))
    data = bytes(BLOCK_SIZE * blocks)
    prepared = list(frames(data))
    t0 = time.perf_counter()
    sender.send(data, lambda *_: None, prepared)
    return (time.perf_counter() - t0) / blocks


def pty_floor(gap_s: float, rounds: int = 150) -> tuple[float, float]:
    """Median one-way delays (host to hub, hub to host) of this machine's pseudo-terminals.

    Two processes exchange a 133-byte frame and a 1-byte answer over a pseudo-terminal
    with nothing but ``os.write``, ``select`` and ``os.read``; the "hub" side answers
    ``gap_s`` after the frame arrived (sleeping, then polling, as the simulator does), so
    both sides idle between exchanges as in the upload. What remains is the kernel's
    delivery and the wake-up of a sleeping process: a cost every simulated block pays
    beyond the modelled wire, whatever the station and the simulator do. (The frame is all
    zeros and the hub side counts zeros: another program that opens a recycled
    ``/dev/pts/N`` by its old name and writes to it cannot end a frame early.)
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the hub side
        try:
            os.close(slave)
            os.close(reader)
            stamps = []
            for _ in range(rounds):
                got = 0
                while got < FRAME_SIZE:  # count the frame's zeros: ignore stray bytes
                    select.select([master], [], [], 5.0)
                    got += os.read(master, 4096).count(0)
                arrived = time.monotonic()
                due = arrived + gap_s
                if (left := due - time.monotonic() - SPIN_S) > 0:
                    select.select([], [], [], left)
                while time.monotonic() < due:
                    select.select([master], [], [], 0.0)
                answered = time.monotonic()
                os.write(master, b"\x06")
                stamps.append((arrived, answered))
            os.write(writer, json.dumps(stamps).encode())
        finally:
            os._exit(0)
    os.close(writer)
    frame = bytes(FRAME_SIZE)
    sent_at, got_at = [], []
    try:
        for _ in range(rounds):
            sent_at.append(time.monotonic())
            os.write(slave, frame)
            select.select([slave], [], [], 5.0)
            os.read(slave, 1)
            got_at.append(time.monotonic())
        raw = b""
        while chunk := os.read(reader, 65536):
            raw += chunk
    finally:
        os.waitpid(pid, 0)
        for fd in (master, slave, reader):
            os.close(fd)
    stamps = json.loads(raw)
    to_hub = statistics.median(a - s for s, (a, _) in zip(sent_at, stamps, strict=True))
    to_host = statistics.median(g - w for g, (_, w) in zip(got_at, stamps, strict=True))
    return to_hub, to_host


#: Where the simulated hub runs, and how the host waits for it (``--transport``).
TRANSPORTS = {
    "poll": "in this process (sim://), never sleeping: the station's own cost",
    "sleep": "in this process (sim://), sleeping between exchanges",
    "pty": "its own process behind a pseudo-terminal, as station sim serves it",
}


def run(size: int, latency_s: float, transport: str) -> float:
    """One upload through ``transport``; prints its account and returns its ratio."""
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
    blocks = block_count(len(gbl))
    byte_s = BITS / BAUD
    to_hub = to_host = 0.0
    if transport == "pty":
        gap = (FRAME_SIZE + 1) * byte_s + latency_s + BLOCK_SIZE // 4 * model.WORD_WRITE_S
        to_hub, to_host = pty_floor(gap)

    entered: dict[Phase, float] = {}
    started: list[float] = []

    def progress(phase: Phase, done: int, total: int, note: str) -> None:
        now = time.monotonic()
        entered.setdefault(phase, now)
        if phase is Phase.WRITE and done == 0:
            started.append(now)  # the driver reports 0 just before it sends '1'

    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if transport == "pty":
            port = stack.enter_context(SimHub.start(spec)).port
        else:
            forget_hubs()
            port = (
                f"sim://gecko?slot={spec.slot}&seed=7&firmware=0x{spec.firmware:08X}"
                f"&firmware-size={spec.firmware_size}&baud={BAUD}"
                f"&latency-ms={latency_s * 1000:g}&wait={transport}"
            )
        t0 = time.monotonic()
        out = flash_hub(
            port,
            profile,
            image,
            policy=Policy(allow_unsigned=True),  # a GBL carries no signature we can check
            on_progress=progress,
        )
        t_end = time.monotonic()
    if out.result is not Result.PASSED:
        raise SystemExit(f"benchmark run did not pass: {out.message}")

    wire = len(gbl) * byte_s
    pages = len(profile.pages_for(image.address, image.end))
    words = -(-len(image.data) // 4)
    flash = pages * model.PAGE_ERASE_S + words * model.WORD_WRITE_S
    limit = wire + flash
    framing = (blocks * FRAME_SIZE - len(gbl)) * byte_s  # headers, CRCs, last block's padding
    turnaround = (blocks + 1) * (byte_s + latency_s)  # ACK byte + adapter latency, EOT too
    # The bootloader's own start and end: '1', 5 ms discarding input, the first 'C' (and
    # the adapter's latency); after EOT's ACK, 10 ms, then the result and the menu.
    ends = (
        2 * byte_s
        + model.UPLOAD_SETTLE_S
        + latency_s
        + model.RESULT_SETTLE_S
        + (len(model.UPLOAD_COMPLETE) + len(model.menu_text())) * byte_s
    )
    # '1' to verdict: the driver reports the write phase at 0 bytes just before it sends
    # '1' (its frames already built), the verify phase once the verdict and menu are back.
    upload = entered[Phase.VERIFY] - started[-1]
    floor = limit + framing + turnaround + ends
    budget = (TARGET * limit - floor) / blocks
    spent = (upload - floor) / blocks
    print(
        f"\nGecko upload: GBL of {len(gbl)} bytes ({len(image.data)} bytes of application, "
        f"{blocks} blocks of {BLOCK_SIZE}), {BAUD} baud 8N1, "
        f"{latency_s * 1000:g} ms adapter latency (load average {load[0]:.2f})\n"
        f"  hub: {TRANSPORTS[transport]} [{transport}]"
    )
    print(
        f"  upload ('1' to verdict): {upload:7.2f} s   limit {limit:7.2f} s   "
        f"ratio {upload / limit:.3f}   (target <= {TARGET})"
    )
    print(
        f"    limit = wire {wire:.2f} s (GBL bytes x {BITS} / baud) + flash busy {flash:.2f} s "
        f"({pages} page erases x {model.PAGE_ERASE_S * 1e3:g} ms + {words} words x "
        f"{model.WORD_WRITE_S * 1e6:g} us)"
    )
    print(
        f"    XMODEM framing (5 bytes a block + padding):      {framing:6.2f} s "
        f"({framing / limit:.1%} of L)"
    )
    print(
        f"    ACK turnaround (ACK byte + latency, {blocks + 1} times): {turnaround:6.2f} s "
        f"({turnaround / limit:.1%} of L)"
    )
    print(
        f"    bootloader start and end ('C', result, menu):    {ends:6.2f} s "
        f"({ends / limit:.1%} of L)"
    )
    print(
        f"    protocol floor L + all three: {floor:6.2f} s (ratio {floor / limit:.3f}); "
        f"the target leaves {budget * 1e6:.0f} us a block for the host and the simulator"
    )
    print(
        f"    spent by host and simulator: {upload - floor:6.2f} s = {spent * 1e6:.0f} us a block "
        f"(the station's XMODEM loop alone, warm, against a port that ACKs at once: "
        f"{station_code_cost() * 1e6:.1f} us a block)"
    )
    if transport == "pty":
        harness = to_hub + to_host
        print(
            f"      of which this machine's pseudo-terminal alone (measured, bare syscalls): "
            f"{harness * 1e6:.0f} us ({to_hub * 1e6:.0f} us to the hub + "
            f"{to_host * 1e6:.0f} us back, waking the host); station and simulator code: "
            f"{(spent - harness) * 1e6:.0f} us"
        )
        if harness >= budget:
            best = (floor + blocks * harness) / limit
            print(
                f"      => out of reach through a pseudo-terminal on this machine: its wake-ups "
                f"alone cost more than the budget; with zero code cost the ratio would be "
                f"{best:.3f}"
            )
    whole = t_end - t0
    print(f"  whole job (connect..confirm): {whole:7.2f} s")
    marks = list(entered)
    for a, b in zip(marks, [*marks[1:], None], strict=True):
        dur = (entered[b] if b else t_end) - entered[a]
        print(f"    {a!s:<9} {dur:7.3f} s")
    return upload / limit


def run_compressed(size: int, latency_s: float, method: str) -> tuple[float, float]:
    """One compressed-GBL job on an in-process hub; returns (upload / plain limit, ratio)."""
    profile = load_profile("demo-gecko")
    plain = model.demo_gbl(0x0105_0000, size=size, compressible=True)
    packed = model.demo_gbl(0x0105_0000, size=size, compressible=True, compression=method)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.gbl"
        path.write_bytes(packed)
        image = load_image(path, default_address=profile.app_address)
    started: list[float] = []
    verdict: list[float] = []

    def progress(phase: Phase, done: int, total: int, note: str) -> None:
        if phase is Phase.WRITE and done == 0:
            started.append(time.monotonic())
        if phase is Phase.VERIFY and not verdict:
            verdict.append(time.monotonic())

    forget_hubs()
    port = (
        f"sim://gecko?slot=1&seed=7&firmware=0x01010000&firmware-size={16 * 1024}"
        f"&baud={BAUD}&latency-ms={latency_s * 1000:g}&wait=poll"
    )
    t0 = time.monotonic()
    out = flash_hub(port, profile, image, policy=Policy(allow_unsigned=True), on_progress=progress)
    whole = time.monotonic() - t0
    if out.result is not Result.PASSED:
        raise SystemExit(f"compressed benchmark run did not pass: {out.message}")
    byte_s = BITS / BAUD
    pages = len(profile.pages_for(image.address, image.end))
    flash = pages * model.PAGE_ERASE_S + -(-len(image.data) // 4) * model.WORD_WRITE_S
    plain_limit = len(plain) * byte_s + flash
    packed_limit = len(packed) * byte_s + flash
    upload = verdict[0] - started[-1]
    fields = image.parsed.fields
    ratio = fields["decompressed_bytes"] / fields["compressed_bytes"]
    print(
        f"\nCompressed GBL ({method}): {len(packed)} bytes on the wire for {len(image.data)} "
        f"bytes of application (plain GBL {len(plain)} bytes): compression ratio {ratio:.2f}:1"
    )
    print(
        f"  upload {upload:7.2f} s   uncompressed wire limit {plain_limit:7.2f} s   "
        f"ratio {upload / plain_limit:.3f}   (compressed wire limit {packed_limit:.2f} s, "
        f"ratio {upload / packed_limit:.3f}); whole job {whole:.2f} s"
    )
    return upload / plain_limit, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * 1024, help="application bytes")
    parser.add_argument(
        "--latency-ms", type=float, default=1.0, help="USB-serial adapter latency (default 1)"
    )
    parser.add_argument(
        "--transport",
        nargs="+",
        choices=list(TRANSPORTS),
        default=list(TRANSPORTS),
        help="where the hub runs (default: all three, in turn): "
        + "; ".join(f"{k}: {v}" for k, v in TRANSPORTS.items()),
    )
    parser.add_argument(
        "--no-compressed", action="store_true", help="skip the compressed-GBL (LZ4, LZMA) rows"
    )
    args = parser.parse_args()
    register()
    ratios = {t: run(args.size, args.latency_ms / 1000.0, t) for t in args.transport}
    packed = {}
    if not args.no_compressed:
        packed = {
            m: run_compressed(args.size, args.latency_ms / 1000.0, m) for m in ("lz4", "lzma")
        }
    print(f"\nSummary (target <= {TARGET}):")
    for transport, ratio in ratios.items():
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"  {transport:<6} {ratio:.3f}  {verdict:<8} hub {TRANSPORTS[transport]}")
    for method, (ratio, squeeze) in packed.items():
        verdict = "below 1.0" if ratio < 1.0 else "NOT below 1.0"
        print(
            f"  {method:<6} {ratio:.3f}  {verdict:<13} compressed GBL ({squeeze:.2f}:1) against "
            "the uncompressed wire limit"
        )


if __name__ == "__main__":
    main()

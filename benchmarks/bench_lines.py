"""What entering and leaving the bootloader by modem lines costs a re-flash.

Flashes a paced simulated hub (115200 baud; AN3155 24 KiB HEX, Gecko 16 KiB GBL) whose
reset and boot pins are wired to DTR/RTS (``demo-*-lines`` profiles), in turns: in this
process (``sim://``) and through the simulated hubs' RFC 2217 endpoint on 127.0.0.1
(``sim.rfc2217``, pyserial's server side, where every DTR/RTS change waits for the
endpoint's acknowledgement); the adapter is in low-latency mode (1 ms) either way. Prints
the median whole job, the median connect phase (the entry sequence and the first sync) and
the boot phase (the exit sequence), and each against its floor: the sequences' own waits.

Run: ``.venv/bin/python benchmarks/bench_lines.py [--runs N]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from drivers.lines import Wait
from firmware_images.loader import LoadedImage, load_image
from sim import urlhandler
from sim.gecko import demo_gbl
from sim.rfc2217 import Rfc2217Endpoint
from station.demo import write_demo_image
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile

PROFILES = {"an3155": "demo-an3155-lines", "gecko": "demo-gecko-lines"}


def one_job(port: str, protocol: str, image: LoadedImage) -> dict[str, float]:
    """The whole job's seconds, and its connect and boot phases'."""
    out = flash_hub(
        port,
        load_profile(PROFILES[protocol]),
        image,
        policy=Policy(allow_unsigned=True, force=True),
    )
    if out.result is not Result.PASSED:
        raise SystemExit(f"benchmark run through {port} did not pass: {out.message}")
    phases = out.phase_seconds
    return {
        "job": sum(phases.values()),
        "connect": phases.get("connect", 0.0),
        "boot": phases.get("boot", 0.0),
    }


def floor_s(protocol: str, which: str) -> float:
    plan = load_profile(PROFILES[protocol]).lines
    assert plan is not None
    steps = plan.entry if which == "entry" else plan.exit
    return sum(s.seconds for s in steps if isinstance(s, Wait))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    urlhandler.register()
    with tempfile.TemporaryDirectory() as tmp:
        hexfile = write_demo_image(Path(tmp) / "app.hex", 0x01050000, size=24 * 1024)
        gbl = Path(tmp) / "app.gbl"
        gbl.write_bytes(demo_gbl(0x01050000, size=16 * 1024))
        images = {
            "an3155": load_image(hexfile),
            "gecko": load_image(gbl, default_address=load_profile("demo-gecko").app_address),
        }
        print(
            f"{'hub':<8}{'port':<10}{'job s':>8}{'connect s':>11}{'entry waits':>13}"
            f"{'boot s':>9}{'exit waits':>12}"
        )
        for protocol, image in images.items():
            for over in ("sim", "rfc2217"):
                url = (
                    f"sim://{protocol}?slot={1 if over == 'sim' else 2}&firmware=1.1.0.0"
                    "&start-in=app&lines=reset=rts,boot=dtr&adapter-latency-ms=1"
                )
                endpoint = Rfc2217Endpoint(url, 0).start() if over == "rfc2217" else None
                port = endpoint.url if endpoint is not None else url
                try:
                    runs = [one_job(port, protocol, image) for _ in range(args.runs)]
                finally:
                    if endpoint is not None:
                        endpoint.stop()
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(
                    f"{protocol:<8}{over:<10}{med['job']:>8.2f}{med['connect']:>11.3f}"
                    f"{floor_s(protocol, 'entry'):>13.2f}{med['boot']:>9.3f}"
                    f"{floor_s(protocol, 'exit'):>12.2f}"
                )


if __name__ == "__main__":
    main()

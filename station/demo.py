"""The main job on simulated hubs: what ``station demo`` (and ``make demo``) runs.

It exercises the real path end to end: a signing key made at run time (never stored in the
repository), signed GBCS images for six releases put into a catalogue, simulated hubs on
pseudo-terminals in their own processes, and for every slot in parallel the catalogue's
choice of image for the hub found, checked against the trust store, then written,
verified, booted and confirmed.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import bincopy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console

from drivers.types import ProgressFn, no_progress
from firmware_images.build import (
    DEMO_HW_MAX,
    DEMO_HW_MIN,
    DEMO_IMAGE_TYPE,
    DEMO_LOAD_ADDRESS,
    DEMO_MANUFACTURER,
    demo_payload,
)
from firmware_images.catalog import Catalog, HubModel
from firmware_images.loader import parse_bytes
from firmware_images.trust import TrustStore
from firmware_images.zigbee import build_gbcs_image, ecdsa_p256_sign, gbcs_file_name
from sim.pty import HubSpec, SimHub, derive_eui64
from station.controller import run_slots
from station.flash import FlashOutcome, Policy, Result, catalog_chooser, flash_hub
from station.profiles import load_profile
from station.render import ProgressBoard, outcome_line, summary_table

DEMO_RELEASES = (0x0101_0000, 0x0101_0200, 0x0102_0000, 0x0103_0000, 0x0104_0000, 0x0105_0000)
DEMO_TARGET = DEMO_RELEASES[-1]
# Hubs come back on old releases (n-4 and older); half are found running, half strapped
# into their bootloader, as on a real bench.
DEMO_OLD = (0x0101_0000, 0x0101_0200, 0x0102_0000, 0x0101_0000)
DATA_DIR = Path("station-data")


def prepare_demo_catalog(root: Path, *, size: int) -> tuple[Catalog, TrustStore]:
    """A signing key, a trust store and a catalogue of signed demo releases under ``root``.

    Built afresh each time (the key too), through the same functions ``station image
    build`` and ``station catalog add`` use.
    """
    if root.exists():
        shutil.rmtree(root)
    key = ec.generate_private_key(ec.SECP256R1())
    trust_dir = root / "trust"
    trust_dir.mkdir(parents=True)
    (trust_dir / "demo-signer.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    trust = TrustStore.from_dir(trust_dir)
    cat = Catalog(root / "catalog")
    cat.models["demo-an3155"] = HubModel(
        "demo-an3155",
        "demo-an3155",
        DEMO_MANUFACTURER,
        DEMO_IMAGE_TYPE,
        DEMO_HW_MIN,
        DEMO_HW_MAX,
        512 * 1024,
    )
    cat.releases["demo-an3155"] = []
    sign = ecdsa_p256_sign(key)
    staging = root / "built"
    staging.mkdir()
    for version in DEMO_RELEASES:
        data = build_gbcs_image(
            demo_payload(version, size=size),
            manufacturer_code=DEMO_MANUFACTURER,
            image_type=DEMO_IMAGE_TYPE,
            file_version=version,
            hw_min=DEMO_HW_MIN,
            hw_max=DEMO_HW_MAX,
            sign=sign,
        )
        image = trust.check(parse_bytes(data))
        path = staging / gbcs_file_name(image)
        path.write_bytes(data)
        cat.add(image, path, model_name="demo-an3155", predecessors=None, file_name=path.name)
    shutil.rmtree(staging)
    return cat, trust


def write_demo_image(path: Path, version: int, *, size: int = 64 * 1024) -> Path:
    """Write a demo application for ``version`` as Intel HEX (``.hex``) or raw binary."""
    payload = demo_payload(version, size=size)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".bin":
        path.write_bytes(payload)
    else:
        bf = bincopy.BinFile()
        bf.add_binary(payload, address=DEMO_LOAD_ADDRESS)
        path.write_text(bf.as_ihex())
    return path


def run_demo(
    *, hubs: int, paced: bool, size: int, as_json: bool, err: Console, seed: int = 1
) -> int:
    """Start ``hubs`` simulated hubs, re-flash them all, print the summary; exit status."""
    if hubs < 1:
        err.print("[red]error:[/] --hubs must be at least 1")
        return 2
    profile = load_profile("demo-an3155")
    cat, trust = prepare_demo_catalog(DATA_DIR / "demo", size=size)
    newest = cat.releases[profile.name][-1]
    err.print(
        f"demo catalogue {cat.root}: {len(cat.releases[profile.name])} signed GBCS releases of "
        f"{profile.name}, newest {newest.version_text} ({size} bytes); trust store "
        f"{trust.source}",
        highlight=False,
    )
    chooser = catalog_chooser(cat, profile, Policy(trust=trust))
    specs = [
        HubSpec(
            slot=slot,
            eui64=derive_eui64(seed, slot),
            firmware=DEMO_OLD[(slot - 1) % len(DEMO_OLD)],
            start_in="app" if slot % 2 == 0 else "bootloader",
            paced=paced,
            seed=seed,
        )
        for slot in range(1, hubs + 1)
    ]
    err.print(f"starting {hubs} simulated hubs ({'paced at 115200 8E1' if paced else 'unpaced'})…")
    sims: list[SimHub] = []
    try:
        # Launch every hub process first, then wait: they boot in parallel.
        sims.extend(SimHub.launch(spec) for spec in specs)
        for hub in sims:
            hub.wait_ready()
        started = time.monotonic()
        show = not as_json and err.is_terminal
        with ProgressBoard(err, enabled=show) as board:
            jobs: list[tuple[int, Callable[[], FlashOutcome]]] = []
            for hub in sims:
                label = f"slot {hub.spec.slot}"
                progress = board.slot(label) if show else no_progress

                def job(
                    port: str = hub.port, label: str = label, progress: ProgressFn = progress
                ) -> FlashOutcome:
                    out = flash_hub(port, profile, chooser, on_progress=progress)
                    board.finish(label, out)
                    return out

                jobs.append((hub.spec.slot, job))
            runs = run_slots(jobs)
        elapsed = time.monotonic() - started
    finally:
        for hub in sims:
            hub.stop()

    rows: list[tuple[int, FlashOutcome]] = []
    for run in runs:
        if run.value is None:  # a bug, not a hub fault: report it, never count it passed
            out = FlashOutcome(port="?", profile=profile.name, message=f"crashed: {run.error!r}")
        else:
            out = run.value
        rows.append((run.slot, out))
    passed = sum(1 for _, o in rows if o.result is Result.PASSED)
    if as_json:
        for slot, out in rows:
            print(json.dumps({"slot": slot, **out.to_json()}), flush=True)
    else:
        # Logs of headless rigs are read by programs too: never wrap a result line, and
        # give the table room when stdout is not a terminal.
        out_console = Console(soft_wrap=True, width=None if err.is_terminal else 160)
        for slot, out in rows:
            if out.result is not Result.PASSED:
                out_console.print(f"slot {slot}: " + outcome_line(out), highlight=False)
        out_console.print(summary_table(rows))
        out_console.print(
            f"{passed}/{len(rows)} hubs passed in {elapsed:.1f} s "
            f"({len(rows) * 3600 / elapsed:.0f} hubs/hour at this slot count)",
            highlight=False,
        )
    return 0 if passed == len(rows) else 1

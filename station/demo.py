"""The main job on simulated hubs: what ``station demo`` (and ``make demo``) runs.

It exercises the product end to end, exactly as ``station run`` serves a real rig:

* a signing key made at run time (never stored in the repository) and a catalogue of six
  signed GBCS releases for each of the three demo hub models: ``demo-an3155`` (STM32
  USART bootloader), ``demo-gecko`` (Silicon Labs Gecko over XMODEM: its GBCS images
  carry a GBL file, as vendors ship radio firmware) and ``demo-dfu`` (USB DfuSe);
* a mixed rig of simulated hubs, each in its own process (pseudo-terminals, and one
  simulated USB bus): most on old releases, one already current, one of another model
  (its MCU reports another product ID), one that NACKs every write from its fourth block;
* a consignment manifest listing those hubs plus one that never arrives;
* the batch: rig file, store (SQLite), controller, audit log; then every report written
  to files, and a check that every hub ended as the scenario says it should.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bincopy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table

from drivers.transport.usb import ENV_BACKEND
from firmware_images.build import (
    DEMO_HW_MAX,
    DEMO_HW_MIN,
    DEMO_IMAGE_TYPE,
    DEMO_LOAD_ADDRESS,
    DEMO_MANUFACTURER,
    demo_payload,
)
from firmware_images.catalog import Catalog, HubModel
from firmware_images.descriptor import format_version
from firmware_images.gbl import build_gbl
from firmware_images.loader import parse_bytes
from firmware_images.trust import TrustStore
from firmware_images.zigbee import build_gbcs_image, ecdsa_p256_sign, gbcs_file_name
from sim import gecko as gecko_sim
from sim.an3155 import PRODUCT_ID
from sim.dfu_rig import DfuBus
from sim.pty import HubSpec, SimHub, derive_eui64
from sim.usb_dfu import DfuHubSpec
from station.events import JobState
from station.paths import DATA, keys_dir
from station.records.keys import KeyRing
from station.records.reports import reconcile, write_reports
from station.records.store import JobRow, Store
from station.render import console, error_line, literal, styled
from station.run import run_station

DEMO_RELEASES = (0x0101_0000, 0x0101_0200, 0x0102_0000, 0x0103_0000, 0x0104_0000, 0x0105_0000)
DEMO_TARGET = DEMO_RELEASES[-1]
DATA_DIR = DATA
#: The three simulated hub models and the image type their applications carry.
DEMO_MODELS = {
    "demo-an3155": DEMO_IMAGE_TYPE,
    "demo-gecko": gecko_sim.IMAGE_TYPE,
    "demo-dfu": DEMO_IMAGE_TYPE,
}


def demo_release(model: str, version: int, *, size: int) -> bytes:
    """What a ``model`` release's GBCS image carries: the application itself, or for the
    Gecko model a GBL file holding it (the bootloader is sent the GBL)."""
    if model == "demo-gecko":
        app = gecko_sim.demo_app(version, size=size)
        return build_gbl([(gecko_sim.APP_BASE, app)], app_version=version)
    return demo_payload(version, size=size, image_type=DEMO_MODELS[model])


def prepare_demo_catalog(
    root: Path, *, size: int, models: Sequence[str] = ("demo-an3155",)
) -> tuple[Catalog, TrustStore]:
    """A signing key, a trust store and a catalogue of signed demo releases under ``root``.

    Built afresh each time (the key too), through the same functions ``station image
    build`` and ``station catalog add`` use: six releases of each of ``models``.
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
    sign = ecdsa_p256_sign(key)
    staging = root / "built"
    staging.mkdir()
    for model in models:
        image_type = DEMO_MODELS[model]
        cat.models[model] = HubModel(
            model, model, DEMO_MANUFACTURER, image_type, DEMO_HW_MIN, DEMO_HW_MAX, 512 * 1024
        )
        cat.releases[model] = []
        for version in DEMO_RELEASES:
            data = build_gbcs_image(
                demo_release(model, version, size=size),
                manufacturer_code=DEMO_MANUFACTURER,
                image_type=image_type,
                file_version=version,
                hw_min=DEMO_HW_MIN,
                hw_max=DEMO_HW_MAX,
                sign=sign,
            )
            image = trust.check(parse_bytes(data))
            path = staging / gbcs_file_name(image)
            path.write_bytes(data)
            cat.add(image, path, model_name=model, predecessors=None, file_name=path.name)
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


# -- the mixed rig -------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoHub:
    """One hub of the demo scenario and the result the scenario expects of it."""

    slot: int
    model: str
    firmware: int
    start_in: str
    expect: JobState
    role: str
    hw_version: int = 2
    faults: str = ""
    product_id: int = PRODUCT_ID


def _hub(slot: int, model: str, firmware: int, start_in: str) -> DemoHub:
    k = len(DEMO_RELEASES) - 1 - DEMO_RELEASES.index(firmware)
    where = "in its bootloader" if start_in == "bootloader" else "running"
    return DemoHub(slot, model, firmware, start_in, JobState.PASSED, f"n-{k}, {where}")


#: Ten hubs: the three models on old releases (n-3 to n-5), found running or strapped into
#: their bootloader, plus the cases a bench meets every day.
SCENARIO = (
    _hub(1, "demo-an3155", 0x0101_0000, "bootloader"),
    _hub(2, "demo-an3155", 0x0101_0200, "app"),
    _hub(3, "demo-an3155", 0x0102_0000, "app"),
    DemoHub(4, "demo-an3155", DEMO_TARGET, "app", JobState.SKIPPED, "already current"),
    DemoHub(
        5,
        "demo-an3155",
        0x0101_0000,
        "app",
        JobState.REFUSED,
        "wrong model: its MCU answers product ID 0x415, demo-an3155 is 0x462",
        product_id=0x415,
    ),
    DemoHub(
        6,
        "demo-an3155",
        0x0101_0200,
        "bootloader",
        JobState.FAILED,
        "faulty: NACKs every write from block 3",
        faults="nack=3x100000",
    ),
    _hub(7, "demo-gecko", 0x0101_0000, "app"),
    _hub(8, "demo-gecko", 0x0101_0200, "bootloader"),
    _hub(9, "demo-dfu", 0x0101_0000, "app"),
    _hub(10, "demo-dfu", 0x0102_0000, "bootloader"),
)
_MODELS = ("demo-an3155", "demo-gecko", "demo-dfu")
_OLD = (0x0101_0000, 0x0101_0200, 0x0102_0000)


def demo_hubs(count: int) -> list[DemoHub]:
    """The scenario's first ``count`` hubs; beyond ten, more passing hubs of all models."""
    hubs = list(SCENARIO[:count])
    for slot in range(len(hubs) + 1, count + 1):
        i = slot - len(SCENARIO) - 1
        hubs.append(
            _hub(
                slot,
                _MODELS[i % 3],
                _OLD[(i // 3) % 3],
                "app" if slot % 2 == 0 else "bootloader",
            )
        )
    return hubs


@dataclass
class DemoRig:
    """A started demo rig: the files ``station run`` (or ``station tui``) takes."""

    root: Path
    rig: Path
    catalog: Path
    trust: Path
    manifest: Path
    db_url: str
    hubs: list[DemoHub]
    eui64: dict[int, str]
    missing: str


@contextmanager
def demo_rig(
    root: Path,
    *,
    hubs: int = len(SCENARIO),
    size: int = 64 * 1024,
    paced: bool = True,
    seed: int = 1,
) -> Iterator[DemoRig]:
    """Build the catalogue, start the simulated hubs, write rig and manifest; stop on exit.

    The USB bus's setting is put in this process's environment (and taken out again), so
    ``usb:`` ports of the rig reach the simulated DFU hubs.
    """
    if hubs < 1:
        raise ValueError("a demo needs at least one hub")
    cat, _ = prepare_demo_catalog(root, size=size, models=_MODELS)
    scenario = demo_hubs(hubs)
    serial_specs = [
        HubSpec(
            slot=h.slot,
            eui64=derive_eui64(seed, h.slot),
            hw_version=h.hw_version,
            firmware=h.firmware,
            start_in=h.start_in,
            paced=paced,
            faults=h.faults,
            seed=seed,
            protocol="gecko" if h.model == "demo-gecko" else "an3155",
            product_id=h.product_id,
        )
        for h in scenario
        if h.model != "demo-dfu"
    ]
    usb_specs = [
        DfuHubSpec(
            slot=h.slot,
            eui64=derive_eui64(seed, h.slot),
            hw_version=h.hw_version,
            firmware=h.firmware,
            start_in=h.start_in,
            paced=paced,
        )
        for h in scenario
        if h.model == "demo-dfu"
    ]
    sims: list[SimHub] = []
    bus: DfuBus | None = None
    saved = os.environ.get(ENV_BACKEND)
    try:
        # Launch every process first, then wait: they start in parallel.
        sims.extend(SimHub.launch(spec) for spec in serial_specs)
        if usb_specs:
            bus = DfuBus.launch(usb_specs)
        for sim in sims:
            sim.wait_ready()
        bindings = {sim.spec.slot: f'port = "{sim.port}"' for sim in sims}
        if bus is not None:
            bus.wait_ready()
            os.environ[ENV_BACKEND] = bus.setting
            bindings.update({h["slot"]: f'usb_serial = "{h["serial"]}"' for h in bus.hubs})
        db = root / "station.db"
        rig_text = (
            "# Written by station demo: simulated hubs of three models.\n"
            'station_id = "demo-bench"\n'
            f'storage = "sqlite:///{db.resolve()}"\n'
            f'catalog = "{cat.root.resolve()}"\n\n'
            "[policy]\njob_retries = 1\nslot_fault_after = 3\n"
        )
        for h in scenario:
            rig_text += (
                f"\n[[slot]]  # {h.role}\nnumber = {h.slot}\n{bindings[h.slot]}\n"
                f'profile = "{h.model}"\n'
            )
        rig = root / "rig.toml"
        rig.write_text(rig_text)
        eui64 = {h.slot: derive_eui64(seed, h.slot) for h in scenario}
        missing = derive_eui64(seed, 999)
        manifest = root / "consignment.csv"
        manifest.write_text(
            "consignment,eui64,model\n"
            + "".join(f"DEMO-C1,{eui64[h.slot]},{h.model}\n" for h in scenario)
            + f"DEMO-C1,{missing},demo-an3155\n"
        )
        yield DemoRig(
            root=root,
            rig=rig,
            catalog=cat.root,
            trust=root / "trust",
            manifest=manifest,
            db_url=f"sqlite:///{db.resolve()}",
            hubs=scenario,
            eui64=eui64,
            missing=missing,
        )
    finally:
        for sim in sims:
            sim.request_stop()
        for sim in sims:
            sim.stop()
        if bus is not None:
            bus.stop()
        if saved is None:
            os.environ.pop(ENV_BACKEND, None)
        else:
            os.environ[ENV_BACKEND] = saved


def _as_planned(hub: DemoHub, job: JobRow | None) -> bool:
    """Whether a hub ended as the scenario says; a pass counts only with the version read
    back equal to the target."""
    if job is None or job.state is not hub.expect:
        return False
    if hub.expect is JobState.PASSED:
        return job.version_after == format_version(DEMO_TARGET)
    return True


def _table(demo: DemoRig, jobs: dict[int, JobRow]) -> Table:
    table = Table(title="Demo batch", title_justify="left")
    for col in ("slot", "model", "EUI-64", "before", "after", "result", "why", "as planned"):
        table.add_column(col, no_wrap=col not in ("why",))
    for hub in demo.hubs:
        job = jobs.get(hub.slot)
        ok = _as_planned(hub, job)
        if job is None:
            table.add_row(
                str(hub.slot), hub.model, demo.eui64[hub.slot], "", "", "no job", "", "NO"
            )
            continue
        why = job.verify_method or "" if job.state is JobState.PASSED else job.message or ""
        table.add_row(
            str(hub.slot),
            hub.model.removeprefix("demo-"),
            job.eui64 or "?",
            job.version_before or "-",
            job.version_after or "-",
            str(job.state),
            literal(why if len(why) <= 70 else why[:67] + "..."),
            "yes" if ok else f"NO (expected {hub.expect})",
        )
    return table


def _run_headless(demo: DemoRig, as_json: bool, err: Console) -> None:
    """The batch as a warehouse rig runs it: ``station run`` on the demo's files."""
    args = argparse.Namespace(
        rig=str(demo.rig),
        catalog=str(demo.catalog),
        trust=str(demo.trust),
        manifest=str(demo.manifest),
        operator="demo",
        db=demo.db_url,
        json=as_json,
        continuous=False,
        allow_unsigned=False,
    )
    run_station(args, err)


def run_demo(
    *,
    hubs: int = len(SCENARIO),
    paced: bool = True,
    size: int = 64 * 1024,
    as_json: bool = False,
    err: Console,
    seed: int = 1,
    root: Path | None = None,
    tui: bool = False,
) -> int:
    """Run the demo batch through ``station run`` (or the terminal UI, with ``tui``), write
    the reports, check the scenario.

    Returns 0 when every hub ended as the scenario expects (the faulty hub failing, the
    wrong one refused, the current one skipped, all others passed and confirmed, and the
    hub that never came listed as missing), 1 otherwise, 2 for bad options.
    """
    if hubs < 1:
        err.print(error_line("--hubs must be at least 1"))
        return 2
    root = root or DATA_DIR / "demo"
    err.print(
        f"demo: building signed catalogues of {', '.join(_MODELS)} and starting {hubs} "
        f"simulated hubs ({'paced at their wire speed' if paced else 'unpaced'}) under {root}",
        highlight=False,
    )
    with demo_rig(root, hubs=hubs, size=size, paced=paced, seed=seed) as demo:
        if tui:  # the same batch, driven by the operator from the terminal UI
            from station.tui.app import run_tui

            run_tui(
                str(demo.rig),
                str(demo.catalog),
                trust_dir=str(demo.trust),
                manifest_path=str(demo.manifest),
                db_url=demo.db_url,
                reports_dir=str(root / "reports"),
            )
        else:
            _run_headless(demo, as_json, err)
    with Store.open(demo.db_url) as store:
        batch = store.latest_batch_id()
        if batch is None:  # the operator left the UI before starting the batch
            err.print("no batch was run: nothing to check or report")
            return 1
        jobs = {j.slot: j for j in store.jobs(batch)}  # the latest job of each slot
        recon = reconcile(store, batch)
        files = write_reports(store, batch, root / "reports" / f"batch-{batch}")
        audit = store.verify_audit(KeyRing.from_dir(keys_dir()))
    missing_ok = [e.eui64 for e in recon.lists["missing"]] == [demo.missing]
    planned = all(_as_planned(h, jobs.get(h.slot)) for h in demo.hubs) and missing_ok
    if as_json:
        print(
            json.dumps(
                {
                    "kind": "demo-finished",
                    "batch": batch,
                    "as_planned": planned,
                    "hubs": [
                        {
                            "slot": h.slot,
                            "model": h.model,
                            "expect": str(h.expect),
                            "result": str(jobs[h.slot].state) if h.slot in jobs else None,
                            "as_planned": _as_planned(h, jobs.get(h.slot)),
                        }
                        for h in demo.hubs
                    ],
                    "missing": [e.eui64 for e in recon.lists["missing"]],
                    "reports": {k: str(v.resolve()) for k, v in files.items()},
                    "db": demo.db_url,
                    "audit_ok": audit.ok,
                }
            ),
            flush=True,
        )
        return 0 if planned and audit.ok else 1
    out = console(width=None if err.is_terminal else 160)
    out.print(_table(demo, jobs))
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in recon.counts().items() if n)
    out.print(f"consignment DEMO-C1: {counts}", highlight=False)
    out.print(
        styled(
            "audit log: "
            + (
                f"chain intact, {audit.signed_heads} signed head(s) verified, records match it"
                if audit.ok
                else "FAILED: " + "; ".join(audit.problems)
            )
        )
    )
    out.print("files written:", highlight=False)
    for label, path in (
        ("rig", demo.rig),
        ("manifest", demo.manifest),
        ("catalogue", demo.catalog),
        ("database", Path(demo.db_url.removeprefix("sqlite:///"))),
        *((f"report {k}", v) for k, v in files.items()),
    ):
        out.print(f"  {label:<20} {path}", highlight=False)
    out.print(
        f"try: station report consignment --db {demo.db_url} --batch {batch}; "
        f"station audit verify --db {demo.db_url}",
        highlight=False,
    )
    failed = next((j for j in jobs.values() if str(j.state) == "failed" and j.eui64), None)
    if failed is not None:
        out.print(
            f"     station hub {failed.eui64} --db {demo.db_url}   (why slot {failed.slot} "
            "failed: its timeline and last exchanges)",
            highlight=False,
        )
    if planned and audit.ok:
        out.print("every hub ended as the demo scenario expects", highlight=False)
        return 0
    out.print(styled(("some hubs did not end as the demo scenario expects", "red")))
    return 1

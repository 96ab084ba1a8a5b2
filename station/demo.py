"""The main job on simulated hubs: what ``station demo`` (and ``make demo``) runs.

It exercises the product end to end, exactly as ``station run`` serves a real rig:

* a signing key made at run time (never stored in the repository) and a catalogue of six
  signed releases for each of the four demo hub models: ``demo-an3155`` (STM32 USART
  bootloader), ``demo-gecko`` (Silicon Labs Gecko over XMODEM: its GBCS images carry a GBL
  file, as vendors ship radio firmware), ``demo-dfu`` (USB DfuSe), all GBCS images, and
  ``demo-smp`` (MCUboot serial recovery: MCUboot images signed with the same key);
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
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import bincopy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

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
from firmware_images.descriptor import dotted_version, format_version
from firmware_images.gbl import build_gbl
from firmware_images.loader import parse_bytes
from firmware_images.trust import TrustStore
from firmware_images.zigbee import build_gbcs_image, ecdsa_p256_sign, gbcs_file_name
from sim import gecko as gecko_sim
from sim import smp as smp_sim
from sim.an3155 import PRODUCT_ID
from sim.dfu_rig import DfuBus
from sim.pty import HubSpec, SimHub, SimStartError, derive_eui64, start_hubs, stop_hubs
from sim.usb_dfu import DfuHubSpec
from station.event_json import SCHEMA_VERSION
from station.events import JobState
from station.paths import DATA, keys_dir
from station.profiles import load_profile
from station.records.keys import KeyRing
from station.records.reports import HubEntry, Reconciliation, reconcile, write_reports
from station.records.store import JobRow, Store
from station.render import (
    console,
    error_line,
    literal,
    shown_version,
    station_command,
    styled,
)
from station.run import run_station

DEMO_RELEASES = (0x0101_0000, 0x0101_0200, 0x0102_0000, 0x0103_0000, 0x0104_0000, 0x0105_0000)
DEMO_TARGET = DEMO_RELEASES[-1]
DATA_DIR = DATA
#: The three simulated hub models and the image type their applications carry.
DEMO_MODELS = {
    "demo-an3155": DEMO_IMAGE_TYPE,
    "demo-gecko": gecko_sim.IMAGE_TYPE,
    "demo-dfu": DEMO_IMAGE_TYPE,
    "demo-smp": smp_sim.IMAGE_TYPE,
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
            if model == "demo-smp":
                # MCUboot images carry their own signature (ECDSA TLV), as imgtool signs them.
                data = smp_sim.demo_image(version, size=size, sign=sign)
                image = trust.check(parse_bytes(data))
                name = (
                    f"{DEMO_MANUFACTURER:04X}-{image_type:04X}-{version:08X}-"
                    f"{image.sha256.upper()}.mcuboot.bin"
                )
                path = staging / name
                path.write_bytes(data)
                cat.add(image, path, model_name=model, predecessors=None, file_name=name)
                continue
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


#: Twelve hubs: the four models on old releases (n-3 to n-5), found running or strapped
#: into their bootloader, plus the cases a bench meets every day.
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
    _hub(11, "demo-smp", 0x0101_0000, "app"),
    _hub(12, "demo-smp", 0x0102_0000, "bootloader"),
)
_MODELS = ("demo-an3155", "demo-gecko", "demo-dfu", "demo-smp")
_OLD = (0x0101_0000, 0x0101_0200, 0x0102_0000)


def demo_hubs(count: int) -> list[DemoHub]:
    """The scenario's first ``count`` hubs; beyond twelve, more passing hubs of all models."""
    hubs = list(SCENARIO[:count])
    for slot in range(len(hubs) + 1, count + 1):
        i = slot - len(SCENARIO) - 1
        hubs.append(
            _hub(
                slot,
                _MODELS[i % len(_MODELS)],
                _OLD[(i // len(_MODELS)) % 3],
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
    on_ready: Callable[[int, int], None] | None = None,
) -> Iterator[DemoRig]:
    """Build the catalogue, start the simulated hubs, write rig and manifest; stop on exit.

    The hubs start in parallel, each waited on for as long as hubs keep coming up (see
    :func:`sim.pty.start_hubs`): many hubs on a busy machine take longer, not fail.
    ``on_ready(ready, total)`` follows them. The USB bus's setting is put in this
    process's environment (and taken out again), so ``usb:`` ports of the rig reach the
    simulated DFU hubs. The database is the demo's own, under ``root``: demo records never
    mix with a bench's.

    Raises:
        SimStartError: a hub (or the USB bus) did not start; all are stopped again.
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
            protocol=load_profile(h.model).protocol,
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
        # Every process is launched first (the bus too): they start in parallel.
        if usb_specs:
            bus = DfuBus.launch(usb_specs)
        total = len(scenario)

        def serial_ready(ready: int, _: int) -> None:
            if on_ready is not None:
                on_ready(ready, total)

        sims = start_hubs(serial_specs, on_ready=serial_ready)
        bindings = {sim.spec.slot: f'port = "{sim.port}"' for sim in sims}
        if bus is not None:
            bus.wait_ready()
            if on_ready is not None:
                on_ready(total, total)
            os.environ[ENV_BACKEND] = bus.setting
            bindings.update({h["slot"]: f'usb_serial = "{h["serial"]}"' for h in bus.hubs})
        db = root / "station.db"
        rig_text = (
            "# Written by station demo: simulated hubs of four models.\n"
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
            db_url=f"sqlite:///{_shown_path(db)}",
            hubs=scenario,
            eui64=eui64,
            missing=missing,
        )
    finally:
        stop_hubs(sims)
        if bus is not None:
            bus.stop()
        if saved is None:
            os.environ.pop(ENV_BACKEND, None)
        else:
            os.environ[ENV_BACKEND] = saved


def _shown_path(path: Path) -> Path:
    """``path`` as a command line the user copies from the current folder needs it:
    relative when it lies under the current folder, absolute otherwise."""
    full = path.resolve()
    try:
        return full.relative_to(Path.cwd().resolve())
    except ValueError:
        return full


def _as_planned(hub: DemoHub, job: JobRow | None) -> bool:
    """Whether a hub ended as the scenario says; a pass counts only with the version read
    back equal to the target."""
    if job is None or job.state is not hub.expect:
        return False
    if hub.expect is JobState.PASSED:
        return job.version_after == format_version(DEMO_TARGET)
    return True


#: A hub's result as the demo table names it (a skipped job found the hub current).
_RESULT = {"skipped": "current"}
#: Below this many columns the reasons go under the table, one line each, not in a column.
WIDE_TABLE = 110


def _row_why(entry: HubEntry, job: JobRow | None) -> str:
    """Why a hub ended as it did, for people: nothing for a pass at its first try."""
    if entry.result == "skipped":
        return (job.message if job is not None else "") or "already current; nothing written"
    if entry.result == "passed":
        return f"passed at try {entry.attempts}" if entry.attempts > 1 else ""
    tries = f" (the last of {entry.attempts} tries)" if entry.attempts > 1 else ""
    return f"{entry.reason or entry.result}{tries}"


def demo_rows(
    demo: DemoRig, recon: Reconciliation, jobs: dict[int, JobRow]
) -> list[tuple[str, ...]]:
    """The demo table's rows: slot, model, EUI-64, version before (the hub's first read,
    whatever a retry found), after, result, expected (yes/NO), why; then every hub the
    consignment lists that never arrived."""
    entries = {e.eui64: e for entries in recon.lists.values() for e in entries}
    rows: list[tuple[str, ...]] = []
    for hub in demo.hubs:
        job = jobs.get(hub.slot)
        ok = "yes" if _as_planned(hub, job) else "NO"
        model = hub.model.removeprefix("demo-")
        eui = demo.eui64[hub.slot]
        entry = entries.get(eui)
        if entry is None or entry.result is None:
            said = (job.message or str(job.state)) if job is not None else "no job ran"
            rows.append((str(hub.slot), model, eui, "", "", "not seen", ok, said))
            continue
        before = shown_version(entry.version_before) if entry.version_before else "?"
        after = shown_version(entry.version_after) if entry.version_after else "-"
        result = _RESULT.get(entry.result, entry.result)
        rows.append((str(hub.slot), model, eui, before, after, result, ok, _row_why(entry, job)))
    scenario = set(demo.eui64.values())
    for entry in recon.lists["missing"]:
        if entry.eui64 in scenario:
            continue  # shown in its slot's row
        rows.append(
            (
                "-",
                (entry.expected_model or "?").removeprefix("demo-"),
                entry.eui64,
                "",
                "",
                "missing",
                "yes" if entry.eui64 == demo.missing else "NO",
                f"listed in consignment {entry.consignment_id}, never arrived",
            )
        )
    return rows


_COLUMNS = ("slot", "model", "EUI-64", "before", "after", "result", "expected", "why")


def demo_table(rows: Sequence[tuple[str, ...]], width: int) -> list[RenderableType]:
    """The table as printed at ``width`` columns. Nothing is cut: at least
    :data:`WIDE_TABLE` columns wide, the reasons are the last column (wrapped in it);
    narrower, they follow the table as ``slot N: why`` lines, which wrap as text does."""
    wide = width >= WIDE_TABLE
    table = Table(
        title="Demo batch",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    shown = _COLUMNS if wide else _COLUMNS[:-1]
    for col in shown:
        table.add_column(
            col,
            no_wrap=col != "why",
            min_width=24 if col == "why" else None,
            justify="right" if col == "slot" else "left",
        )
    for row in rows:
        table.add_row(*(Text(literal(cell)) for cell in row[: len(shown)]))
    out: list[RenderableType] = [table]
    if not wide:
        out += [
            Text(literal(f"{'slot ' + row[0] if row[0] != '-' else row[2]}: {row[-1]}"))
            for row in rows
            if row[-1]
        ]
    return out


def _legend(demo: DemoRig) -> str:
    """What the "expected" column checks: the scenario, said once."""
    meant = [
        f"slot {h.slot} {_RESULT.get(str(h.expect), str(h.expect))} ({h.role})"
        for h in demo.hubs
        if h.expect is not JobState.PASSED
    ]
    meant.append(f"{demo.missing} missing (listed, never arrives)")
    return (
        "expected: yes when the hub ended as the demo scenario means it to: "
        + "; ".join(meant)
        + f"; every other hub passed, {dotted_version(DEMO_TARGET)} read back after boot"
    )


def hint_lines(demo: DemoRig, batch: int, failed: JobRow | None) -> list[str]:
    """Commands to look at the demo's records, as they run from the current folder: each
    names the demo's own database (``--db``) and the ``station`` the user ran."""
    station = station_command()
    db = f"--db {shlex.quote(demo.db_url.removeprefix('sqlite:///'))}"  # a plain path works
    lines = [
        f"{station} batches {db}",
        f"{station} report consignment --batch {batch} {db}",
        f"{station} report dsp --batch {batch} --format csv {db}",
        f"{station} audit verify {db}",
    ]
    if failed is not None and failed.eui64:
        lines.append(f"{station} hub {failed.eui64} {db}")
    return lines


def _run_headless(demo: DemoRig, as_json: bool, err: Console, metrics: str | None) -> None:
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
        metrics=metrics,
    )
    run_station(args, err)


class _StartProgress:
    """Start-up progress on stderr: a line at most every few seconds while hubs come up."""

    EVERY_S = 3.0

    def __init__(self, err: Console) -> None:
        self.err = err
        self.started = time.monotonic()
        self.said = self.started

    def __call__(self, ready: int, total: int) -> None:
        now = time.monotonic()
        if ready < total and now - self.said >= self.EVERY_S:
            self.said = now
            self.err.print(f"demo: {ready} of {total} simulated hubs ready", highlight=False)

    def done(self, total: int) -> None:
        took = time.monotonic() - self.started
        self.err.print(f"demo: {total} simulated hubs ready ({took:.1f} s)", highlight=False)


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
    metrics: str | None = None,
) -> int:
    """Run the demo batch through ``station run`` (or the terminal UI, with ``tui``), write
    the reports, check the scenario.

    Returns 0 when every hub ended as the scenario expects (the faulty hub failing, the
    wrong one refused, the current one skipped, all others passed and confirmed, and the
    hub that never came listed as missing), 1 otherwise, 2 for bad options or when the
    simulated hubs cannot be started (one ``error:`` line, never a traceback). With
    ``metrics`` (``HOST:PORT``) the batch's figures are served as ``station run`` serves them.
    """
    if hubs < 1:
        err.print(error_line("--hubs must be at least 1"))
        return 2
    if metrics is not None:
        from station.metrics import parse_address

        parse_address(metrics)  # a bad address is refused before any hub is started
    root = root or DATA_DIR / "demo"
    err.print(
        f"demo: building signed catalogues of {', '.join(_MODELS)} and starting {hubs} "
        f"simulated hubs ({'paced at their wire speed' if paced else 'unpaced'}) under {root}",
        highlight=False,
    )
    progress = _StartProgress(err)
    with ExitStack() as stack:
        try:
            demo = stack.enter_context(
                demo_rig(root, hubs=hubs, size=size, paced=paced, seed=seed, on_ready=progress)
            )
        except (SimStartError, OSError) as exc:
            err.print(error_line(f"the demo could not start its simulated hubs: {exc}"))
            return 2
        progress.done(hubs)
        if tui:  # the same batch, driven by the operator from the terminal UI
            from station.tui.app import run_tui

            run_tui(
                str(demo.rig),
                str(demo.catalog),
                trust_dir=str(demo.trust),
                manifest_path=str(demo.manifest),
                db_url=demo.db_url,
                reports_dir=str(root / "reports"),
                metrics=metrics,
            )
        else:
            _run_headless(demo, as_json, err, metrics)
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
                    "schema_version": SCHEMA_VERSION,
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
                    "db": f"sqlite:///{Path(demo.db_url.removeprefix('sqlite:///')).resolve()}",
                    "audit_ok": audit.ok,
                }
            ),
            flush=True,
        )
        return 0 if planned and audit.ok else 1
    # Wrapped to the terminal; a log or pipe gets 160 columns unless $COLUMNS says.
    out = console(width=None if err.is_terminal or os.environ.get("COLUMNS") else 160)
    for part in demo_table(demo_rows(demo, recon, jobs), out.width):
        out.print(part)
    out.print(_legend(demo), highlight=False)
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
    out.print("files written (the demo's own database: a bench's records are elsewhere):")
    for label, path in (
        ("rig", demo.rig),
        ("manifest", demo.manifest),
        ("catalogue", demo.catalog),
        ("database", Path(demo.db_url.removeprefix("sqlite:///"))),
        *((f"report {k}", v) for k, v in files.items()),
    ):
        out.print(f"  {label:<20} {path}", highlight=False)
    failed = next((j for j in jobs.values() if j.state is JobState.FAILED and j.eui64), None)
    out.print("look at the records (from this folder):", highlight=False)
    for line in hint_lines(demo, batch, failed):
        out.print(f"  {line}", highlight=False)
    if failed is not None:
        out.print(
            f"  (the last command: why slot {failed.slot} failed, its timeline and exchanges)",
            highlight=False,
        )
    if planned and audit.ok:
        out.print("every hub ended as the demo scenario expects", highlight=False)
        return 0
    out.print(styled(("some hubs did not end as the demo scenario expects", "red")))
    return 1

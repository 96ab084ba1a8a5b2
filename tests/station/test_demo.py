"""``station demo``: the main job on simulated hubs, run as a user runs it (a separate
program), through the real rig, controller, store and reports."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

import pytest

import sim.pty
from sim.pty import _CTX, HubSpec, SimHub, derive_eui64
from station.cli import main
from station.demo import (
    DEMO_TARGET,
    SCENARIO,
    DemoRig,
    _as_planned,
    demo_hubs,
    demo_rig,
    demo_rows,
    demo_table,
)
from station.event_json import SCHEMA_VERSION, from_json
from station.events import JobFinished, JobState, Retry
from station.records.reports import reconcile
from station.records.store import Store
from station.render import console
from station.rig import load_rig


def test_demo_runs_the_mixed_rig_and_writes_every_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "station.cli", "demo", "--unpaced", "--size", "16384", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    final = lines[-1]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert final["kind"] == "demo-finished" and final["as_planned"] and final["audit_ok"]
    assert all(line["schema_version"] == SCHEMA_VERSION for line in lines)
    assert {type(from_json(line)) for line in lines[:-1]} >= {JobFinished, Retry}
    results = {h["slot"]: h["result"] for h in final["hubs"]}
    assert results == {h.slot: str(h.expect) for h in SCENARIO}
    # The events are station run's: the faulty hub was retried once, in its own slot.
    retries = [e for e in lines if e.get("kind") == "retry"]
    assert [e["slot"] for e in retries] == [6]
    assert lines[0]["kind"] == "batch-started" and lines[-2]["kind"] == "batch-finished"

    root = tmp_path / "station-data" / "demo"
    with Store.open(final["db"]) as store:
        jobs = store.jobs(final["batch"])
    by_slot = {j.slot: j for j in jobs}  # the latest job of each slot
    assert {j.profile for j in jobs} == {"demo-an3155", "demo-gecko", "demo-dfu", "demo-smp"}
    for hub in SCENARIO:
        job = by_slot[hub.slot]
        assert job.state is hub.expect
        if hub.expect is JobState.PASSED:  # verified and read back, by each protocol's means
            assert job.version_after == f"0x{DEMO_TARGET:08X}"
            assert job.verify_method in (
                "device-crc",
                "bootloader-gbl",
                "readback",
                "bootloader-hash",
            )
    assert "product ID 0x415" in (by_slot[5].message or "")  # the hub of another model
    # Reports: one DSP row per passed hub; the consignment names the hub that never came.
    reports = {k: Path(v) for k, v in final["reports"].items()}
    folder = root / "reports" / f"batch-{final['batch']}"
    assert all(p.parent == folder and p.exists() for p in reports.values())
    with reports["dsp-csv"].open() as f:
        dsp = list(csv.DictReader(f))
    passed = [h for h in SCENARIO if h.expect is JobState.PASSED]
    assert len(dsp) == len(passed)
    assert {r["model"] for r in dsp} == {"demo-an3155", "demo-gecko", "demo-dfu", "demo-smp"}
    assert {r["version_after"] for r in dsp} == {f"0x{DEMO_TARGET:08X}"}
    consignment = json.loads(reports["consignment"].read_text())
    assert [e["eui64"] for e in consignment["missing"]] == final["missing"]
    assert len(consignment["failed"]) == len(consignment["refused"]) == 1
    # JUnit: one test case per hub: the faulty hub (tried twice) and the refusal fail.
    suites = ET.parse(reports["junit"]).getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("skipped")) == (
        str(len({j.eui64 for j in jobs})),
        "2",
        "1",
    )
    assert (root / "rig.toml").read_text().count("[[slot]]") == len(SCENARIO)


def test_scenario_grows_with_more_hubs_and_shrinks_to_its_head() -> None:
    assert [h.slot for h in demo_hubs(3)] == [1, 2, 3]
    more = demo_hubs(18)
    assert [h.slot for h in more] == list(range(1, 19))
    assert {h.model for h in more[12:]} == {"demo-an3155", "demo-gecko", "demo-dfu", "demo-smp"}
    assert all(h.expect is JobState.PASSED for h in more[12:])


def test_a_pass_counts_as_planned_only_with_the_target_read_back() -> None:
    hub = SCENARIO[0]

    class Job:
        state = JobState.PASSED
        version_after = "0x01040000"

    assert not _as_planned(hub, Job())  # type: ignore[arg-type]
    Job.version_after = f"0x{DEMO_TARGET:08X}"
    assert _as_planned(hub, Job())  # type: ignore[arg-type]
    Job.state = JobState.SKIPPED
    assert not _as_planned(hub, Job())  # type: ignore[arg-type]
    assert not _as_planned(hub, None)


# -- start-up: waits on readiness, fails in one line ------------------------------------------


@contextmanager
def busy_machine(workers: int, seconds: float) -> Iterator[None]:
    """Load the CPUs with ``workers`` spinning processes, each ending on its own after
    ``seconds`` (so a killed test leaves nothing spinning), and stopped on exit."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(workers)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_64_hubs_start_on_a_loaded_machine(tmp_path: Path) -> None:
    """Hubs start in parallel and share the CPUs with whatever else runs (two spinning
    processes here, on top of the machine's own load): the rig waits on the hubs' readiness
    for as long as they keep coming up, not a fixed 10 s (which 64 hubs overran)."""
    seen: list[tuple[int, int]] = []
    with (
        busy_machine(2, seconds=240),
        demo_rig(
            tmp_path / "demo", hubs=64, size=4096, paced=False, on_ready=lambda *a: seen.append(a)
        ) as demo,
    ):
        rig = load_rig(demo.rig)
        assert [s.number for s in rig.slots] == list(range(1, 65))
        serial = [s for s in rig.slots if s.port is not None]
        assert serial and all(Path(s.port or "").exists() for s in serial)
        assert len(serial) + len([s for s in rig.slots if s.usb_serial]) == 64
    assert seen[-1] == (64, 64) and [r for r, _ in seen] == sorted(r for r, _ in seen)


def _dead_hub(spec: HubSpec) -> SimHub:
    """A hub process that dies at once, before it can report ready."""
    ours, theirs = _CTX.Pipe()
    process = _CTX.Process(target=os._exit, args=(3,), daemon=True)
    process.start()
    theirs.close()
    return SimHub(spec, process, ours)


def _never_ready(conn: Connection) -> None:
    """A hub process's start that hangs: it holds its pipe and says nothing."""
    time.sleep(60)


def _silent_hub(spec: HubSpec) -> SimHub:
    """A hub process that never reports ready (a machine too loaded, a hung start)."""
    ours, theirs = _CTX.Pipe()
    process = _CTX.Process(target=_never_ready, args=(theirs,), daemon=True)
    process.start()
    theirs.close()
    return SimHub(spec, process, ours)


@pytest.mark.parametrize(
    ("launch", "said"),
    [(_dead_hub, "died while starting (exit code 3)"), (_silent_hub, "none came up in")],
)
def test_a_hub_that_cannot_start_is_a_one_line_error_with_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    launch: Callable[[HubSpec], SimHub],
    said: str,
) -> None:
    """A simulated hub that dies while starting, or never comes up: one ``error:`` line,
    exit 2, no traceback, and no hub process left behind."""
    launched: list[SimHub] = []

    def record(spec: HubSpec) -> SimHub:
        launched.append(launch(spec))
        return launched[-1]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(SimHub, "launch", staticmethod(record))
    monkeypatch.setattr(sim.pty, "START_SLACK_S", 1.0)  # how long silence is waited out
    monkeypatch.setattr(sim.pty, "START_CPU_S", 0.01)
    status = main(["demo", "--hubs", "3", "--unpaced", "--size", "4096"])
    err = capsys.readouterr().err
    assert status == 2, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert "slot 1" in errors[0] and said in errors[0], err
    assert "Traceback" not in err
    assert launched and not any(hub.alive for hub in launched)


# -- what the console shows --------------------------------------------------------------------


class ConsoleRun(NamedTuple):
    where: Path
    out: str
    err: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def console_run(tmp_path_factory: pytest.TempPathFactory) -> ConsoleRun:
    """The demo run as ``make demo`` runs it (the venv's ``station`` script, at 80 columns):
    its folder, standard output and standard error, and its environment (its own keys)."""
    where = tmp_path_factory.mktemp("console")
    station = str(Path(sys.executable).parent / "station")
    env = {**os.environ, "COLUMNS": "80", "STATION_KEYS": str(where / "keys")}
    proc = subprocess.run(
        [station, "demo", "--unpaced", "--size", "4096"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return ConsoleRun(where, proc.stdout, proc.stderr, env)


def test_the_console_reads_as_sentences_with_dotted_versions(
    console_run: ConsoleRun,
) -> None:
    _, out, err, _ = console_run
    text = out + err
    assert "{'" not in text and '{"' not in text  # no Python dict or JSON printed
    hex_version = re.compile(r"0x010[0-9A-Fa-f]{5}")  # the demo's releases: 0x01010000...
    assert hex_version.search(text) is None, text  # dotted, in the table and every line
    assert "slot 6: trying the same hub again (try 2), as the previous try failed: " in err
    assert "slot 1: passed" in err and "1.1.0.0 -> 1.5.0.0" in err
    missing = derive_eui64(1, 999)
    assert any(missing in line and "missing" in line for line in out.splitlines()), out
    # "expected" is explained where it is shown, and the verify method is not a reason.
    assert "expected: yes when the hub ended as the demo scenario means it to" in out
    table = out.split("Demo batch")[1].split("expected:")[0]
    assert "device-crc" not in table
    assert max(len(line) for line in table.splitlines()) <= 80, table


def test_the_printed_hints_run_as_written_on_the_demos_own_database(
    console_run: ConsoleRun,
) -> None:
    where, out, _, env = console_run
    hints = out.split("look at the records (from this folder):\n")[1].splitlines()
    commands = [line.strip() for line in hints if line.startswith("  ") and "--db" in line]
    assert len(commands) == 5, out
    for command in commands:
        argv = shlex.split(command)
        assert argv[argv.index("--db") + 1] == "station-data/demo/station.db"  # as README writes it
        proc = subprocess.run(argv, cwd=where, capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, (command, proc.stderr)
    assert not (where / "station-data" / "station.db").exists()  # a bench's is untouched


@pytest.mark.parametrize("width", [80, 160])
def test_the_table_cuts_no_cell(console_run: ConsoleRun, width: int) -> None:
    """Rendered at 80 and 160 columns: every cell whole (a reason may wrap), every line
    within the width; the retried hub's version before is its first read."""
    where = console_run.where
    root = where / "station-data" / "demo"
    scenario = demo_hubs(len(SCENARIO))
    demo = DemoRig(
        root=root,
        rig=root / "rig.toml",
        catalog=root / "catalog",
        trust=root / "trust",
        manifest=root / "consignment.csv",
        db_url=f"sqlite:///{root / 'station.db'}",
        hubs=scenario,
        eui64={h.slot: derive_eui64(1, h.slot) for h in scenario},
        missing=derive_eui64(1, 999),
    )
    with Store.open(demo.db_url) as store:
        batch = store.latest_batch_id()
        assert batch is not None
        jobs = {j.slot: j for j in store.jobs(batch)}
        rows = demo_rows(demo, reconcile(store, batch), jobs)
    buffer = io.StringIO()
    out = console(width=width, file=buffer)
    for part in demo_table(rows, width):
        out.print(part)
    text = buffer.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
    words = text.split()
    flowing = " ".join(words)
    for row in rows:
        for cell in row[:-1]:
            assert cell in words or not cell, (cell, text)
        assert row[-1] in flowing, (row[-1], text)
    by_slot = {row[0]: row for row in rows}
    assert by_slot["6"][3:6] == ("1.1.2.0", "-", "failed")  # its first try's read
    assert by_slot["1"][3:6] == ("1.1.0.0", "1.5.0.0", "passed") and by_slot["1"][7] == ""
    assert by_slot["-"][2] == demo.missing and by_slot["-"][5] == "missing"

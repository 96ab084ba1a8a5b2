"""The operator's UI driving real batches of simulated hubs (Pilot, headless terminal)."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from sim.pty import SimHub
from station.batch import BatchRun
from station.demo import prepare_demo_catalog
from station.events import JobState
from station.tui.app import StationApp
from station.tui.screens import ConfirmScreen, DetailScreen, QuitScreen, StartScreen

from .test_literal_text import on_screen

pytestmark = pytest.mark.asyncio

SIZE = 8 * 1024
MISSING = "00-DB-12-00-00-00-00-99"


def _rig(tmp_path: Path, hubs: list[SimHub], retries: int = 0) -> Path:
    text = f'station_id = "bench-tui"\n[policy]\njob_retries = {retries}\n'
    for h in hubs:
        text += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    path = tmp_path / "rig.toml"
    path.write_text(text)
    return path


def _open(tmp_path: Path, rig: Path, demo: Path, manifest: Path | None = None) -> BatchRun:
    return BatchRun.open(
        str(rig),
        catalog_dir=str(demo / "catalog"),
        trust_dir=str(demo / "trust"),
        manifest_path=None if manifest is None else str(manifest),
        db_url=f"sqlite:///{tmp_path}/station.db",
    )


async def _until(pilot: Pilot[int], ok: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    """Let the app run until ``ok()`` (a condition on real outcomes, not on time)."""
    for _ in range(int(limit_s / 0.1)):
        if ok():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"never happened: {what}")


def _states(app: StationApp) -> dict[int, str]:
    return {n: v.state for n, v in app.view.slots.items()}


async def test_batch_failure_retry_export_through_the_ui(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hubs = [
        start_hub(1, firmware_size=SIZE),
        start_hub(2, firmware_size=SIZE, faults="nack=3x7"),  # fails once, passes on retry
        start_hub(3, firmware_size=SIZE, start_in="app"),
    ]
    manifest = tmp_path / "consignment.csv"
    manifest.write_text(
        "consignment,eui64\n"
        + "".join(f"C1,{e}\n" for e in [*(h.spec.eui64 for h in hubs), MISSING])
    )
    batch = _open(tmp_path, _rig(tmp_path, hubs), tmp_path / "demo", manifest)
    app = StationApp(batch, operator="alice", reports_dir=tmp_path / "reports")
    async with app.run_test(size=(120, 36)) as pilot:
        assert isinstance(app.screen, StartScreen)
        # The read-only probe fills the pre-flight plan with each hub's EUI-64 and version.
        await _until(
            pilot,
            lambda: all(r.eui64 for r in app.plan_rows),
            "every hub identified by the probe",
        )
        assert {r.eui64 for r in app.plan_rows} == {h.spec.eui64 for h in hubs}
        assert {r.target for r in app.plan_rows} == {"0x01050000"}
        assert all(r.estimate_s and r.estimate_s > 0 for r in app.plan_rows)

        await pilot.press("s")  # start the batch as alice
        assert not isinstance(app.screen, StartScreen)
        await _until(pilot, lambda: all(v.final for v in app.view.slots.values()), "all done")
        assert _states(app) == {1: "passed", 2: "failed", 3: "passed"}
        failed = app.view.slots[2]
        assert failed.fail_phase == "write" and "NACK" in failed.reason
        assert app.view.unseen() == [MISSING]  # the listed hub that never arrived

        # The slot's detail names the phase, the reason and the recorded timeline.
        app.grid.tiles[1].focus()
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        shown = str(app.screen.query_one("#detail").render())
        assert "Failed in phase" in shown and "write" in shown and "NACK" in shown
        assert "Timeline" in shown
        # The last bytes on the wire before it failed: the hub's NACK (0x1F) among them.
        assert "Last bytes on the wire" in shown and "<- 1F" in shown
        await pilot.press("r")  # retry from the detail screen
        await _until(pilot, lambda: app.view.slots[2].state == "passed", "slot 2 passed on retry")

        # A scanned label is checked against the EUI-64 read; a wrong one is flagged.
        app.grid.tiles[0].focus()
        await pilot.press("l")
        await pilot.press(*MISSING.replace("-", ""), "enter")
        assert app.view.slots[1].label_check is False

        await pilot.press("x")
        folder = tmp_path / "reports" / f"batch-{batch.batch_id}"
        await _until(pilot, lambda: (folder / "summary.json").exists(), "reports exported")
        rows = list(csv.DictReader((folder / "dsp.csv").open()))
        assert sorted(r["eui64"] for r in rows) == sorted(h.spec.eui64 for h in hubs)
        assert {r["operator"] for r in rows} == {"alice"}
        # Exported while the batch is open: a preview, said on screen, no export id.
        assert {r["export_id"] for r in rows} == {""}
        assert json.loads((folder / "dsp.json").read_text())["final"] is False
        assert "preview" in app.status.render().plain
        recon = json.loads((folder / "consignment.json").read_text())
        assert [e["eui64"] for e in recon["missing"]] == [MISSING]
        cases = list(ET.parse(folder / "junit.xml").getroot().iter("testcase"))
        assert len(cases) == 3  # one per hub: slot 2's hub ran twice, in one test case
        assert json.loads((folder / "summary.json").read_text())["counts"]["passed"] == 3

        await pilot.press("q")  # nothing running: quits without asking
        await _until(pilot, lambda: not app.is_running, "the app exited")
    assert app.return_code == 1  # a listed hub is missing
    store_states = [(j.slot, j.state) for j in batch.store.jobs(batch.batch_id or 0)]
    assert sorted(store_states) == [
        (1, JobState.PASSED),
        (2, JobState.FAILED),
        (2, JobState.PASSED),
        (3, JobState.PASSED),
    ]
    actions = [(e.operator, e.action) for e in batch.store.audit_log()]
    assert ("alice", "operator") in actions and ("alice", "label-mismatch") in actions
    assert batch.store.batch(batch.batch_id or 0).finished_at is not None
    batch.close()


async def test_quit_mid_batch_asks_and_abort_never_passes(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    size = 48 * 1024  # paced at 115200 8E1: seconds of writing, time to press keys
    prepare_demo_catalog(tmp_path / "demo", size=size)
    hubs = [start_hub(n, firmware_size=SIZE, paced=True) for n in (1, 2)]
    batch = _open(tmp_path, _rig(tmp_path, hubs), tmp_path / "demo")
    app = StationApp(batch, operator="bob", probe_on_start=False)
    press: Callable[..., Awaitable[None]]
    async with app.run_test(size=(100, 30)) as pilot:
        press = pilot.press
        await press("s")
        await _until(
            pilot,
            lambda: all(v.state == "writing" for v in app.view.slots.values()),
            "both hubs being written",
        )
        # Abort slot 2 (asks first); it ends interrupted, never passed.
        app.grid.tiles[1].focus()
        await press("a")
        assert isinstance(app.screen, ConfirmScreen)
        await press("y")
        # Quitting while slot 1 writes asks first; "n" keeps the batch running.
        await press("q")
        assert isinstance(app.screen, QuitScreen)
        await press("n")
        assert not isinstance(app.screen, QuitScreen) and app.is_running and not app.quitting
        await _until(pilot, lambda: app.view.slots[1].state == "passed", "slot 1 passed")
        assert app.view.slots[2].state == "interrupted"
        assert app.view.slots[2].reason == "aborted by operator"
        assert "partly written" in app.view.slots[2].hint
        await press("q")
        await _until(pilot, lambda: not app.is_running, "the app exited")
    jobs = {j.slot: j for j in batch.store.jobs(batch.batch_id or 0)}
    assert jobs[1].state is JobState.PASSED
    assert jobs[2].state is JobState.INTERRUPTED and jobs[2].phase == "write"
    assert app.return_code == 1  # an interrupted hub is not a good batch
    batch.close()


async def test_manifest_and_overrides_from_the_start_screen(tmp_path: Path) -> None:
    """No hubs needed: the dialogs load a manifest and record a confirmed override."""
    prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    rig = tmp_path / "rig.toml"
    rig.write_text(
        'station_id = "b"\n[[slot]]\nnumber = 1\nport = "/dev/none-1"\nprofile = "demo-an3155"\n'
    )
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"consignment,eui64\nC9,{MISSING}\n")
    batch = _open(tmp_path, rig, tmp_path / "demo")
    app = StationApp(batch, operator="erin", probe_on_start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("m")
        await pilot.press(*str(manifest), "enter")
        assert batch.manifest is not None and batch.manifest.eui64s() == {MISSING}
        assert app.view.listed == {MISSING}

        await pilot.press("o")
        await pilot.click("#allow_off_pathway")
        await pilot.click("#apply")
        assert isinstance(app.screen, ConfirmScreen)  # applying asks once more
        await pilot.press("n")
        assert not batch.policy.allow_off_pathway  # "no" changes nothing
        await pilot.press("o")
        await pilot.click("#allow_off_pathway")
        await pilot.click("#apply")
        await pilot.press("y")
        assert batch.policy.allow_off_pathway and not batch.policy.allow_downgrade
        await pilot.press("q")  # no batch begun: nothing to finish
        await _until(pilot, lambda: not app.is_running, "the app exited")
    entries = [e for e in batch.store.audit_log() if e.action == "override"]
    assert [(e.operator, e.detail["allow_off_pathway"]) for e in entries] == [("erin", True)]
    batch.close()


async def test_a_retried_hub_through_the_ui(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    """Issue 12 items 5, 21, 22, 24: a hub that fails once and passes on the station's own
    retry. Versions read dotted, its tile keeps the version read before any write, the
    header never calls it failed nor the unseen listed hub missing (it names that one), and
    its detail shows both tries with their last bytes as a hex block."""
    prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hub = start_hub(1, firmware_size=SIZE, faults="nack=3x7")  # try 1 fails, try 2 passes
    manifest = tmp_path / "consignment.csv"
    manifest.write_text(f"consignment,eui64\nC1,{hub.spec.eui64}\nC1,{MISSING}\n")
    batch = _open(tmp_path, _rig(tmp_path, [hub], retries=1), tmp_path / "demo", manifest)
    app = StationApp(batch, operator="alice", reports_dir=tmp_path / "reports")
    headers: list[str] = []
    async with app.run_test(size=(160, 48)) as pilot:
        start = app.screen
        assert isinstance(start, StartScreen)
        await _until(pilot, lambda: not app.probing and bool(app.plan_rows[0].eui64), "probe")
        await pilot.pause()
        for part in ("#summary", "#plan"):
            shown = on_screen(start.query_one(part))
            assert "1.5.0.0" in shown and "0x0" not in shown, shown
        assert "1.1.0.0" in on_screen(start.query_one("#plan"))

        await pilot.press("s")
        slot = app.view.slots[1]

        def done() -> bool:
            # Between try 1's end and the station's word that it retries (a Retry event
            # right after, sub-second), the hub is failed as far as anyone knows: the
            # header is checked from that word on, for as long as the retry runs.
            if not (slot.state == "failed" and slot.tries == 0 and not slot._retrying):
                headers.append(app.view.header(app.clock(), 160).plain)
            return slot.state == "passed"

        await _until(pilot, done, "slot 1 passed on the station's retry")
        tile = on_screen(app.grid.tiles[0])
        assert "1.1.0.0→1.5.0.0" in tile and "try 2" in tile and "?" not in tile, tile
        # Never "failed" for a hub whose retry passed, never "missing" while the batch runs.
        assert not [h for h in headers if "failed 1" in h or "missing" in h], headers
        assert app.view.unseen() == [MISSING]
        assert MISSING in on_screen(app.query_one("#consignment"))

        app.grid.tiles[0].focus()
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        shown = on_screen(app.screen.query_one("#detail"))
        assert "Esc closes" in shown.splitlines()[0], shown  # how to leave, in sight
        jobs = [j.id for j in batch.store.jobs(batch.batch_id or 0)]
        assert len(jobs) == 2
        assert f"Try 1 of 2 (job {jobs[0]})" in shown and f"Try 2 of 2 (job {jobs[1]})" in shown
        assert "version  1.1.0.0 → 1.5.0.0  (hex 0x01010000 → 0x01050000)" in shown, shown
        assert "exchanges=" not in shown and "['" not in shown, shown
        # Try 1's last bytes, a line a run: the write's 0x31 command, the hub's NACK.
        assert "-> 31 CE" in shown and "<- 1F" in shown, shown
        assert shown.index("<- 1F") < shown.index("Try 2 of 2")
        await pilot.press("escape")
        await pilot.press("q")
        await _until(pilot, lambda: not app.is_running, "the app exited")
    assert MISSING in app.final_message and "missing" in app.final_message
    batch.close()


async def test_the_header_shows_a_loaded_consignment_across_stations(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    """Issue 13 item 6: on a shared store the operator sees the consignment's progress at
    every station, here a hub another station has in flight, not only this bench's slots."""
    from station.records.manifest import Manifest
    from station.records.store import Store

    prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hub = start_hub(1, firmware_size=SIZE)
    other_hub = "00-DB-12-00-00-00-00-42"
    manifest = tmp_path / "cn.csv"
    manifest.write_text(f"consignment,eui64\nCN-7,{hub.spec.eui64}\nCN-7,{other_hub}\n")
    db = f"sqlite:///{tmp_path}/station.db"
    other = Store.open(db)
    other.acquire_lease("bench-other")
    other.load_consignment("CN-7", Manifest.load(manifest), operator="olga")
    b = other.start_batch(station_id="bench-other", operator="olga", rig="r", catalog="c")
    job = other.start_job(b, 3, "/dev/other", "demo-an3155")
    other.record_state(job, JobState.IDENTIFIED, {"eui64": other_hub, "version_before": None})
    batch = _open(tmp_path, _rig(tmp_path, [hub]), tmp_path / "demo")
    app = StationApp(batch, operator="alice", reports_dir=tmp_path / "reports")
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            line = app.query_one("#consignment")
            await _until(pilot, lambda: "all stations" in on_screen(line), "the progress shown")
            shown = on_screen(line)
            assert "Consignment CN-7, all stations" in shown, shown
            assert "2 listed" in shown and "1 in flight (1 elsewhere)" in shown, shown
            await pilot.press("q")
    finally:
        batch.close()
        other.close()

"""``station demo --tui``: the demo's mixed rig (AN3155, Gecko, DFU hubs) through the UI."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.batch import BatchRun
from station.demo import SCENARIO, demo_rig
from station.tui.app import StationApp

from .test_app import _until

pytestmark = pytest.mark.asyncio


async def test_the_demo_rig_runs_through_the_ui(tmp_path: Path) -> None:
    with demo_rig(tmp_path / "demo", size=16384, paced=False) as demo:
        batch = BatchRun.open(
            str(demo.rig),
            catalog_dir=str(demo.catalog),
            trust_dir=str(demo.trust),
            manifest_path=str(demo.manifest),
            db_url=demo.db_url,
        )
        try:
            app = StationApp(batch, operator="demo", reports_dir=tmp_path / "reports")
            async with app.run_test(size=(160, 48)) as pilot:
                await _until(pilot, lambda: bool(app.plan_rows), "the pre-flight plan")
                await pilot.press("s")
                await _until(
                    pilot,
                    lambda: all(v.final for v in app.view.slots.values()),
                    "every slot finished",
                    limit_s=90,
                )
                states = {n: v.state for n, v in app.view.slots.items()}
                assert states == {h.slot: str(h.expect) for h in SCENARIO}
                assert len(app.view.unseen()) == 1  # listed, never arrives: not seen yet
                await pilot.press("q")
            jobs = {j.slot: j for j in batch.store.jobs(batch.batch_id)}
        finally:
            batch.close()
    assert {j.profile for j in jobs.values()} == {
        "demo-an3155",
        "demo-gecko",
        "demo-dfu",
        "demo-smp",
    }
    assert {s: str(j.state) for s, j in jobs.items()} == {h.slot: str(h.expect) for h in SCENARIO}


async def test_enter_in_the_name_field_leads_on_to_start(tmp_path: Path) -> None:
    """As an operator types: name, Enter, then ``s`` starts (``s`` is not typed into the name)."""
    from station.demo import prepare_demo_catalog

    prepare_demo_catalog(tmp_path / "demo", size=8192)
    rig = tmp_path / "rig.toml"
    rig.write_text(
        'station_id = "t"\n[[slot]]\nnumber = 1\nport = "/dev/no-hub"\nprofile = "demo-an3155"\n'
    )
    batch = BatchRun.open(
        str(rig),
        catalog_dir=str(tmp_path / "demo" / "catalog"),
        trust_dir=str(tmp_path / "demo" / "trust"),
        db_url=f"sqlite:///{tmp_path}/s.db",
    )
    try:
        app = StationApp(batch, operator="", reports_dir=tmp_path / "reports")
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press(*"dana", "enter", "s")
            await _until(pilot, lambda: batch.batch_id is not None, "the batch begun")
            await pilot.press("q")
        assert batch.store.batch(batch.batch_id).operator == "dana"
    finally:
        batch.close()

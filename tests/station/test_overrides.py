"""Operator overrides of catalogue pathway refusals: refused without, written and audited
with, and never able to force a wrong hardware version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sim.pty import SimHub
from station.batch import BatchRun
from station.demo import prepare_demo_catalog
from station.events import JobState

SIZE = 8 * 1024
NEWER = 0x0200_0000  # newer than any catalogued release: writing the newest is a downgrade
STRAY = 0x0100_0500  # older but not catalogued: no approved path


def _batch(tmp_path: Path, hubs: list[SimHub]) -> BatchRun:
    prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    rig = 'station_id = "bench-o"\n[policy]\njob_retries = 0\n'
    for h in hubs:
        rig += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    (tmp_path / "rig.toml").write_text(rig)
    return BatchRun.open(
        str(tmp_path / "rig.toml"),
        catalog_dir=str(tmp_path / "demo" / "catalog"),
        trust_dir=str(tmp_path / "demo" / "trust"),
        db_url=f"sqlite:///{tmp_path}/station.db",
        operator="carol",
    )


def test_pathway_overrides_are_refused_then_written_and_audited(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    hubs = [
        start_hub(1, firmware=NEWER, firmware_size=SIZE),
        start_hub(2, firmware=STRAY, firmware_size=SIZE),
        start_hub(3, firmware=STRAY, firmware_size=SIZE, hw_version=99),
    ]
    run = _batch(tmp_path, hubs)
    try:
        batch = run.begin()
        run.serve()
        first = {j.slot: j for j in run.store.jobs(batch)}
        assert {n: j.state for n, j in first.items()} == {
            1: JobState.REFUSED,
            2: JobState.REFUSED,
            3: JobState.REFUSED,
        }
        assert "not a catalogued release" in (first[1].message or "")

        run.set_overrides("carol", allow_downgrade=True, allow_off_pathway=True)
        run.serve()
        jobs = [j for j in run.store.jobs(batch) if j.id not in {x.id for x in first.values()}]
        again = {j.slot: j for j in jobs}
        assert again[1].state is JobState.PASSED and again[1].version_after == "0x01050000"
        assert again[1].overrides[0].startswith("allow-downgrade")
        assert again[2].state is JobState.PASSED
        assert again[2].overrides[0].startswith("allow-off-pathway")
        # No override makes a hub of the wrong hardware version eligible.
        assert again[3].state is JobState.REFUSED and not again[3].overrides
        log = run.store.audit_log()
        confirmed = [e for e in log if e.action == "override" and e.detail.get("confirmed")]
        assert confirmed and confirmed[0].operator == "carol"
        used = [e.detail["override"] for e in log if e.action == "override" and "job" in e.detail]
        assert sorted(u.split(" ")[0] for u in used) == ["allow-downgrade", "allow-off-pathway"]
        assert run.store.verify_audit().ok
    finally:
        run.close()

"""Snapshots of the main screens at 80x24 and 160x48 (pytest-textual-snapshot).

Deterministic by construction: slots bound to ports that do not exist (no probe, no
hubs), a frozen clock, relative paths, and the grid fed fixed events (the same events the
controller publishes). Refresh with ``pytest tests/tui --snapshot-update`` only after
looking at the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from sim.pty import derive_eui64
from station.batch import BatchRun
from station.demo import prepare_demo_catalog
from station.event_json import data_of
from station.events import Event, JobState
from station.records.store import EventRow, JobRow
from station.tui.app import StationApp
from station.tui.screens import DetailScreen, HelpScreen

from ..eventkit import compact, event
from .test_screens import PLAN

NOW = 1_800_000_000.0
#: A failed write's last bytes, as a session keeps them: runs of bytes, cut at 24.
EXCHANGES = [
    "-> 00 00 01 00 01",
    "<- 79 79 7B EA EA 80 FB",
    "-> 31 CE",
    "<- 79",
    "-> 08 00 00 00 08",
    "<- 79",
    "-> FF 00 00 02 20 01 04 00 08 CA 25 12 20 98 91 E5 9F 6A 95 72 74 E9 03 A5 … (258 bytes)",
    "<- 1F",
]
SIZES = [(80, 24), (160, 48)]
Snap = Callable[..., bool]


@pytest.fixture
def make_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[int], StationApp]]:
    monkeypatch.chdir(tmp_path)
    prepare_demo_catalog(Path("demo"), size=8 * 1024)
    opened: list[BatchRun] = []

    def make(slots: int) -> StationApp:
        rig = 'station_id = "bench-snap"\n'
        for n in range(1, slots + 1):
            rig += (
                f'[[slot]]\nnumber = {n}\nport = "/dev/snap-absent-{n}"\nprofile = "demo-an3155"\n'
            )
        Path("rig.toml").write_text(rig)
        batch = BatchRun.open(
            "rig.toml",
            catalog_dir="demo/catalog",
            trust_dir="demo/trust",
            db_url="sqlite:///station.db",
        )
        opened.append(batch)
        return StationApp(batch, operator="alice", clock=lambda: NOW, probe_on_start=False)

    yield make
    for batch in opened:
        batch.close()


def _events(n: int) -> list[Event]:
    """A fixed story for slot ``n``: every state a tile can show, in turn."""
    eui = derive_eui64(1, n)
    t = NOW - 600 + n
    before = "0x01050000" if n % 8 == 4 else "0x01010000"
    read = {"eui64": eui, "hw_version": 2, "version_before": before, "found_in": "bootloader"}
    start = [
        event("state", n, n, "detected", {"port": f"/dev/pts/{n}"}, at=t),
        event("state", n, n, "identified", read, at=t + 1),
    ]
    planned = event("state", n, n, "planned", {"target_version": "0x01050000"}, at=t + 1.5)
    done: dict[str, Any] = {
        "eui64": eui,
        "version_before": "0x01010000",
        "image_version": "0x01050000",
        "profile": "demo-an3155",
    }
    kind = n % 8
    if kind == 0:
        return [
            *start,
            planned,
            event(
                "job-finished", n, n, "passed", {**done, "version_after": "0x01050000"}, at=t + 9
            ),
        ]
    if kind in (1, 5):
        phase, state = ("write", "writing") if kind == 1 else ("verify", "verifying")
        return [
            *start,
            planned,
            event("state", n, n, "erasing", {}, at=t + 1.8),
            event("state", n, n, state, {}, at=t + 2),
            event("progress", n, n, data={"phase": phase, "done": 0, "total": 8192}, at=t + 2),
            event(
                "progress",
                n,
                n,
                data={"phase": phase, "done": 1024 * (n % 7 + 1), "total": 8192},
                at=t + 2.5,
            ),
        ]
    if kind == 2:
        fail = {
            **done,
            "phase": "write",
            "message": "write block 37 at 0x08002500: NACK after 5 tries",
            "hint": "reseat the hub and cable and run the job again",
            "exchanges": [
                "-> 31 CE",
                "<- 79",
                "-> 08 00 25 00 2D",
                "<- 79",
                "-> FF D7 1B",
                "<- 1F",
            ],
        }
        # Failed, retried by the station, failed again: the second try finds the flash
        # half written (no version read), and its last bytes are the NACKs of block 0.
        again = 100 + n
        read_again = {**read, "version_before": None}
        fail_again = {
            **fail,
            "version_before": None,
            "message": "write block 0 at 0x08000000: NACK after 5 tries",
            "exchanges": EXCHANGES,
        }
        return [
            *start,
            planned,
            event("state", n, n, "erasing", {}, at=t + 1.8),
            event("state", n, n, "writing", {}, at=t + 2),
            event("note", n, n, data={"note": "block 37: NACK, retrying (try 2 of 5)"}, at=t + 3),
            event("job-finished", n, n, "failed", fail, at=t + 4),
            event("retry", n, data={"try": 2, "why": fail["message"]}, at=t + 4.1),
            event("state", n, again, "detected", {"port": f"/dev/pts/{n}"}, at=t + 5),
            event("state", n, again, "identified", read_again, at=t + 6),
            event("state", n, again, "planned", compact(planned), at=t + 6.5),
            event("state", n, again, "erasing", {}, at=t + 6.8),
            event("state", n, again, "writing", {}, at=t + 7),
            event("job-finished", n, again, "failed", fail_again, at=t + 8),
        ]
    if kind == 3:
        why = "off-pathway: no approved upgrade path from 0x01010000 to 0x01050000"
        refused = {**done, "phase": "plan", "message": why}
        return [*start, event("job-finished", n, n, "refused", refused, at=t + 2)]
    if kind == 4:
        current = {**done, "version_before": "0x01050000", "message": "already running"}
        return [*start, event("job-finished", n, n, "skipped", current, at=t + 2)]
    if kind == 7:
        stopped = {**done, "phase": "write", "message": "aborted by operator"}
        return [*start, planned, event("job-finished", n, n, "interrupted", stopped, at=t + 5)]
    return []  # kind 6: idle, never started


async def _busy_grid(pilot: Pilot[int]) -> None:
    app = pilot.app
    assert isinstance(app, StationApp)
    app.pop_screen()  # past the start screen without starting a real batch
    app.view.batch_id = 7
    app.view.started_at = NOW - 3600
    app.view.listed = frozenset({derive_eui64(1, n) for n in range(1, 70)})
    for n in app.view.slots:
        app.inbox.extend(_events(n))
    app.drain()
    app.view.slots[8].label = derive_eui64(1, 8)  # matches
    app.view.slots[16].label = "00-DB-12-00-00-00-00-01"  # does not
    app.grid.refresh_slots({8, 16})
    app.grid.tiles[1].focus()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_start_screen(snap_compare: Snap, make_app: Callable[[int], StationApp], size: Any) -> None:
    assert snap_compare(make_app(16), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_start_screen_with_a_probed_plan(
    snap_compare: Snap, make_app: Callable[[int], StationApp], size: Any
) -> None:
    """A hub to upgrade, one of another model, one off the pathway; the third highlighted."""
    app = make_app(3)
    app.plan_rows = PLAN

    async def highlight(pilot: Pilot[int]) -> None:
        await pilot.pause()
        pilot.app.screen.query_one("#plan", DataTable).move_cursor(row=2)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=highlight)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_grid_of_64_busy_slots(
    snap_compare: Snap, make_app: Callable[[int], StationApp], size: Any
) -> None:
    assert snap_compare(make_app(64), terminal_size=size, run_before=_busy_grid)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_grid_of_16_slots(
    snap_compare: Snap, make_app: Callable[[int], StationApp], size: Any
) -> None:
    assert snap_compare(make_app(16), terminal_size=size, run_before=_busy_grid)


def _ending(e: Event) -> dict[str, Any]:
    """What the store records of how a job ended (see ``Store.finish_job``)."""
    keep = ("phase", "message", "error", "exchanges")
    data = compact(e)
    return {"result": e.state, **{k: data[k] for k in keep if data.get(k)}}


def _recorded(app: StationApp, n: int) -> list[tuple[JobRow, list[EventRow]]]:
    """Slot ``n``'s tries as the store gives them back: its events' records, at fixed times."""
    tries: list[tuple[JobRow, list[EventRow]]] = []
    base = {f.name: None for f in fields(JobRow)}
    for job_id in app.view.slots[n].job_ids:
        story = [e for e in _events(n) if e.job_id == job_id and e.kind != "note"]
        events = [
            EventRow(
                job_id,
                seq,
                JobState(e.state or "failed"),
                datetime.fromtimestamp(e.at, UTC),
                _ending(e) if e.kind == "job-finished" else data_of(e),
            )
            for seq, e in enumerate(story, 1)
        ]
        end, read = data_of(story[-1]), data_of(story[1])
        row = JobRow(
            **{
                **base,
                "id": job_id,
                "batch_id": 7,
                "lease_id": "lease",
                "slot": n,
                "port": f"/dev/pts/{n}",
                "profile": "demo-an3155",
                "eui64": read["eui64"],
                "state": JobState(story[-1].state or "failed"),
                "version_before": read["version_before"],
                "target_version": "0x01050000",
                "image_path": "demo/catalog/1234-0401-01050000-5E17.zigbee",
                "image_sha256": "5e17" * 16,
                "signature": "valid",
                "phase": end.get("phase"),
                "message": end.get("message"),
                "plan": "upgrade to 0x01050000",
                "overrides": (),
                "notes": (),
                "started_at": events[0].at,
                "bytes_written": 0,
            }
        )
        tries.append((row, events))
    return tries


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_failed_slot_detail(
    snap_compare: Snap, make_app: Callable[[int], StationApp], size: Any
) -> None:
    """A hub that failed twice: both tries, each with its last bytes as a hex block."""

    async def detail(pilot: Pilot[int]) -> None:
        await _busy_grid(pilot)
        app = pilot.app
        assert isinstance(app, StationApp)
        app.push_screen(DetailScreen(app.view.slots[2], _recorded(app, 2)))
        await pilot.pause()

    assert snap_compare(make_app(16), terminal_size=size, run_before=detail)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare: Snap, make_app: Callable[[int], StationApp], size: Any) -> None:
    """The keys, each on a line of its own, under how to close the help."""

    async def help_screen(pilot: Pilot[int]) -> None:
        await _busy_grid(pilot)
        pilot.app.push_screen(HelpScreen())
        await pilot.pause()

    assert snap_compare(make_app(16), terminal_size=size, run_before=help_screen)

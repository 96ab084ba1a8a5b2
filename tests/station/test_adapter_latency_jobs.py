"""A job records the latency its port's adapter ran at; a high one is warned about live.

Two in-process simulated hubs on one station: one whose adapter takes low-latency mode
(1 ms, recorded, no warning), one whose driver ignores it (16 ms: recorded, a note in the
job, and a mark on its slot in the live board and the TUI tile while it runs).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console

from firmware_images.catalog import Catalog
from firmware_images.trust import TrustStore
from sim.urlhandler import register
from sim.urlhandler.protocol_sim import forget_hubs
from station.controller import Controller
from station.demo import prepare_demo_catalog
from station.events import Event, HubDetected, JobState
from station.flash import Policy, catalog_chooser
from station.records.store import Store
from station.render import EventBoard
from station.rig import parse_rig
from station.tui.model import SlotView, tile_text

from ..conftest import OLD

SIZE = 8192
FAST = f"sim://an3155?slot=1&seed=77&firmware=0x{OLD:08X}&firmware-size={SIZE}"
SLOW = f"sim://an3155?slot=2&seed=77&firmware=0x{OLD:08X}&firmware-size={SIZE}&latency-ms=16"


@pytest.fixture(autouse=True)
def sim_urls() -> Iterator[None]:
    register()
    forget_hubs()
    yield
    forget_hubs()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, TrustStore]:
    return prepare_demo_catalog(tmp_path_factory.mktemp("demo"), size=SIZE)


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, catalogue: tuple[Catalog, TrustStore]
) -> tuple[list[Event], dict[int, tuple[JobState, float | None, tuple[str, ...]]]]:
    register()
    forget_hubs()
    cat, trust = catalogue
    rig = 'station_id = "bench-l"\n[policy]\njob_retries = 0\n'
    for number, port in ((1, FAST), (2, SLOW)):
        rig += f'[[slot]]\nnumber = {number}\nport = "{port}"\nprofile = "demo-an3155"\n'
    seen: list[Event] = []
    db = tmp_path_factory.mktemp("db") / "station.db"
    with Store.open(f"sqlite:///{db}") as store:
        store.acquire_lease("bench-l")
        batch = store.start_batch(station_id="bench-l", operator="op", rig="r", catalog="c")
        policy = Policy(trust=trust)
        Controller(
            parse_rig(rig),
            store=store,
            batch_id=batch,
            chooser_for=lambda p: catalog_chooser(cat, p, policy),
            policy=policy,
            publish=seen.append,
        ).run()
        jobs = {j.slot: (j.state, j.adapter_latency_ms, j.notes) for j in store.jobs(batch)}
    forget_hubs()
    return seen, jobs


def test_each_job_records_what_its_adapter_ran_at(
    finished: tuple[list[Event], dict[int, tuple[JobState, float | None, tuple[str, ...]]]],
) -> None:
    _, jobs = finished
    assert jobs[1][0] is JobState.PASSED and jobs[2][0] is JobState.PASSED
    assert jobs[1][1] == 1.0 and not any("adapter latency" in n for n in jobs[1][2])
    assert jobs[2][1] == 16.0
    assert any(n.startswith("high adapter latency: 16 ms") for n in jobs[2][2])


def test_the_live_board_marks_the_slow_slot_while_it_runs_and_after(
    finished: tuple[list[Event], dict[int, tuple[JobState, float | None, tuple[str, ...]]]],
) -> None:
    seen, _ = finished
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=True, color_system=None)
    with EventBoard(console) as board:
        for event in seen:
            board(event)
    lines = buf.getvalue().replace("\r", "\n").split("\n")
    assert any("slot   2" in line and "⚠ adapter latency 16 ms" in line for line in lines)
    assert not any("slot   1" in line and "adapter latency" in line for line in lines)


def test_the_tui_tile_marks_the_slow_slot(
    finished: tuple[list[Event], dict[int, tuple[JobState, float | None, tuple[str, ...]]]],
) -> None:
    seen, _ = finished
    views = {n: SlotView(n, "demo-an3155", port) for n, port in ((1, FAST), (2, SLOW))}
    for event in seen:
        if event.slot in views:
            views[event.slot].apply(event)
    assert "⚠LATENCY 16 ms" in tile_text(views[2], 40, 2).plain
    assert "⚠" in tile_text(views[2], 19, 1).plain  # words shrink, the mark stays
    assert "LATENCY" not in tile_text(views[1], 40, 2).plain
    views[2].apply(HubDetected(slot=2, job_id=99, port=SLOW))
    assert "LATENCY" not in tile_text(views[2], 40, 2).plain  # the next job says again

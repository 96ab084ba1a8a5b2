"""The UI's model: tiles that fit and never rely on colour, rates from the events' times."""

from __future__ import annotations

import pytest

from station.events import Event
from station.tui.model import LOOK, BatchView, SlotView, grid_shape, tile_text

EUI = "00-DB-12-34-56-78-90-A0"


@pytest.mark.parametrize("slots", [16, 32, 64])
@pytest.mark.parametrize("size", [(80, 21), (160, 45), (100, 30)])
def test_every_slot_fits_readably(slots: int, size: tuple[int, int]) -> None:
    width, height = size
    cols, tile_h = grid_shape(slots, width, height)
    rows = -(-slots // cols)
    assert rows * tile_h <= height
    assert width // cols >= 19


@pytest.mark.parametrize("state", sorted(LOOK))
@pytest.mark.parametrize("shape", [(19, 1), (26, 3), (40, 2), (60, 4)])
def test_state_is_spelled_not_only_coloured(state: str, shape: tuple[int, int]) -> None:
    view = SlotView(7, "demo-an3155", "/dev/x", state=state, eui64=EUI)
    text = tile_text(view, *shape)
    symbol, word, _ = LOOK[state]
    assert f"{symbol} {word}" in text.plain
    assert all(len(line) <= shape[0] for line in text.plain.split("\n"))
    assert len(text.plain.split("\n")) <= shape[1]


def test_progress_rate_and_eta_come_from_event_times() -> None:
    view = SlotView(1, "demo-an3155", "/dev/x")
    view.apply(Event("state", 1, 5, "detected", {"port": "/dev/x"}, at=100.0))
    view.apply(Event("state", 1, 5, "writing", {"phase": "write"}, at=101.0))
    view.apply(Event("progress", 1, 5, data={"phase": "write", "done": 0, "total": 4000}, at=101))
    view.apply(
        Event("progress", 1, 5, data={"phase": "write", "done": 1000, "total": 4000}, at=103)
    )
    assert view.rate == 500 and view.eta_s == 6
    text = tile_text(view, 60, 3).plain
    assert "25%" in text and "500B/s" in text and "ETA 0:06" in text


def test_label_mismatch_is_flagged_in_words() -> None:
    view = SlotView(3, "demo-an3155", "/dev/x", state="passed", eui64=EUI)
    view.scan("00db1234567890ff")
    assert view.label_check is False
    assert "≠LABEL" in tile_text(view, 19, 1).plain
    view.scan(EUI.replace("-", ":").lower())
    assert view.label_check is True
    with pytest.raises(ValueError):
        view.scan("not a label")


def test_header_counts_each_hub_once_and_missing_hubs() -> None:
    slots = {n: SlotView(n, "demo-an3155", f"/dev/{n}") for n in (1, 2)}
    batch = BatchView(slots, listed=frozenset({EUI, "00-DB-12-00-00-00-00-01"}))
    batch.started_at = 0.0
    for state in ("failed", "passed"):  # slot 1 failed, then passed on retry
        batch.apply(Event("state", 1, 1, "detected", {"port": "/dev/1"}, at=1))
        batch.apply(Event("job-finished", 1, 1, state, {"eui64": EUI}, at=2))
    assert batch.hub_results()["passed"] == 1 and batch.hub_results()["failed"] == 0
    assert batch.missing() == 1
    line = batch.header(3600.0).plain
    assert "passed 1" in line and "missing 1/2" in line and "1 hubs/h" in line


def test_hubs_swapped_through_one_slot_all_count() -> None:
    batch = BatchView({1: SlotView(1, "demo-an3155", "/dev/1")})
    for job, eui in enumerate((EUI, "00-DB-12-00-00-00-00-02"), 1):
        batch.apply(Event("state", 1, job, "detected", {"port": "/dev/1"}, at=job))
        batch.apply(Event("job-finished", 1, job, "passed", {"eui64": eui}, at=job + 0.5))
    assert batch.hub_results()["passed"] == 2

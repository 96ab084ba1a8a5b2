"""The UI's model: tiles that fit and never rely on colour, rates from the events' times."""

from __future__ import annotations

import pytest

from station.events import Event
from station.tui.model import LOOK, BatchView, SlotView, exchange_lines, grid_shape, tile_text

from ..eventkit import event

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
    view.apply(event("state", 1, 5, "detected", {"port": "/dev/x"}, at=100.0))
    view.apply(event("state", 1, 5, "writing", {"phase": "write"}, at=101.0))
    view.apply(event("progress", 1, 5, data={"phase": "write", "done": 0, "total": 4000}, at=101))
    view.apply(
        event("progress", 1, 5, data={"phase": "write", "done": 1000, "total": 4000}, at=103)
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
        batch.apply(event("state", 1, 1, "detected", {"port": "/dev/1"}, at=1))
        batch.apply(event("job-finished", 1, 1, state, {"eui64": EUI}, at=2))
    assert batch.hub_results()["passed"] == 1 and batch.hub_results()["failed"] == 0
    assert batch.unseen() == ["00-DB-12-00-00-00-00-01"] and batch.missing() == []
    line = batch.header(3600.0).plain
    assert "passed 1" in line and "not seen 1/2" in line and "1 hubs/h" in line


def test_hubs_swapped_through_one_slot_all_count() -> None:
    batch = BatchView({1: SlotView(1, "demo-an3155", "/dev/1")})
    for job, eui in enumerate((EUI, "00-DB-12-00-00-00-00-02"), 1):
        batch.apply(event("state", 1, job, "detected", {"port": "/dev/1"}, at=job))
        batch.apply(event("job-finished", 1, job, "passed", {"eui64": eui}, at=job + 0.5))
    assert batch.hub_results()["passed"] == 2


# -- issue 12: what the header counts and what a tile says ------------------------------------

OTHER = "00-DB-12-00-00-00-00-99"


def _identified(slot: int, job: int, eui: str, before: str | None, at: float) -> list[Event]:
    """A job's start as the controller publishes it: detected, identified (with what was read
    from the hub), planned (with the target)."""
    return [
        event("state", slot, job, "detected", {"port": f"/dev/{slot}"}, at=at),
        event(
            "state",
            slot,
            job,
            "identified",
            {"eui64": eui, "hw_version": 2, "version_before": before, "found_in": "bootloader"},
            at=at + 0.1,
        ),
        event("state", slot, job, "planned", {"target_version": "0x01050000"}, at=at + 0.2),
    ]


def test_a_listed_hub_is_missing_only_once_the_batch_is_closed() -> None:
    """Issue 12 item 5: hubs being written are not missing; one never seen is named, and is
    called missing only when the batch's close (its consignment reconciliation) says so."""
    batch = BatchView({1: SlotView(1, "demo-an3155", "/dev/1")}, listed=frozenset({EUI, OTHER}))
    for ev in [*_identified(1, 1, EUI, "0x01010000", 1), event("state", 1, 1, "writing", at=2)]:
        batch.apply(ev)
    for width in (80, 160):
        line = batch.header(3.0, width).plain
        assert "missing" not in line, line
    assert batch.unseen() == [OTHER]  # listed, not identified yet: named, not "missing"
    assert "not seen 1/2" in batch.header(3.0, 160).plain
    batch.apply(event("job-finished", 1, 1, "passed", {"eui64": EUI}, at=4))
    recon = {"missing": [{"eui64": OTHER, "attempts": 0}]}
    batch.apply(event("batch-finished", data={"reconciliation": recon}, at=5))
    assert batch.missing() == [OTHER]
    assert "missing 1/2" in batch.header(6.0, 160).plain
    assert "1 missing" in batch.header(6.0, 80).plain


def test_a_hub_under_retry_is_not_failed() -> None:
    """Issue 12 item 5: the header counts a hub by how it ends, not by a try that failed."""
    batch = BatchView({1: SlotView(1, "demo-an3155", "/dev/1")})
    for ev in _identified(1, 1, EUI, "0x01010000", 1):
        batch.apply(ev)
    batch.apply(event("job-finished", 1, 1, "failed", {"eui64": EUI, "phase": "write"}, at=2))
    batch.apply(event("retry", 1, data={"try": 2, "why": "NACK"}, at=2.1))
    assert batch.hub_results()["failed"] == 0
    assert "✗0 fail" in batch.header(3.0, 80).plain
    for ev in _identified(1, 2, EUI, None, 3):  # the try after a failed write reads no version
        batch.apply(ev)
    assert batch.hub_results()["failed"] == 0 and batch.remaining() == 1
    batch.apply(event("job-finished", 1, 2, "passed", {"eui64": EUI}, at=4))
    assert batch.hub_results() == {
        "passed": 1,
        "failed": 0,
        "refused": 0,
        "skipped": 0,
        "interrupted": 0,
    }


def test_a_failed_hub_run_again_by_the_operator_is_not_failed_meanwhile() -> None:
    batch = BatchView({1: SlotView(1, "demo-an3155", "/dev/1")})
    for ev in _identified(1, 1, EUI, "0x01010000", 1):
        batch.apply(ev)
    batch.apply(event("job-finished", 1, 1, "failed", {"eui64": EUI, "phase": "write"}, at=2))
    assert batch.hub_results()["failed"] == 1
    for ev in _identified(1, 2, EUI, None, 3):  # "r": the same hub again, no retry event
        batch.apply(ev)
    assert batch.hub_results()["failed"] == 0
    assert batch.slots[1].tries == 1 and batch.slots[1].job_ids == [1, 2]


SHAPES = [(19, 1), (26, 3), (38, 4), (80, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_tile_shows_the_version_read_before_writing(shape: tuple[int, int]) -> None:
    """Issue 12 item 22: writing, refused and failed tiles show the version the hub ran."""
    view = SlotView(1, "demo-an3155", "/dev/1")
    for ev in _identified(1, 1, EUI, "0x01010000", 1):
        view.apply(ev)
    view.apply(event("state", 1, 1, "writing", {}, at=2))
    text = tile_text(view, 80, 4).plain
    assert "1.1.0.0→1.5.0.0" in text and "?" not in text, text
    view.apply(event("job-finished", 1, 1, "failed", {"eui64": EUI, "phase": "write"}, at=3))
    view.apply(event("retry", 1, data={"try": 2, "why": "NACK"}, at=3.1))
    for ev in _identified(1, 2, EUI, None, 4):  # try 2 finds the flash half written
        view.apply(ev)
    view.apply(
        event(
            "job-finished",
            1,
            2,
            "failed",
            {"eui64": EUI, "version_before": None, "phase": "write", "message": "NACK"},
            at=5,
        )
    )
    text = tile_text(view, *shape).plain
    if shape[1] > 1:
        assert "1.1.0.0→1.5.0.0 try 2" in text, text
    assert "?" not in text, text


@pytest.mark.parametrize("shape", SHAPES)
def test_a_passed_tile_shows_its_versions_once(shape: tuple[int, int]) -> None:
    view = SlotView(1, "demo-an3155", "/dev/1")
    for ev in _identified(1, 1, EUI, "0x01010000", 1):
        view.apply(ev)
    done = {"eui64": EUI, "version_before": "0x01010000", "version_after": "0x01050000"}
    view.apply(event("job-finished", 1, 1, "passed", done, at=2))
    text = tile_text(view, *shape).plain
    assert text.count("1.1.0") <= 1 and text.count("1.5.0") == 1, text
    if shape[0] >= 26:
        assert "1.1.0.0→1.5.0.0" in text, text


@pytest.mark.parametrize("shape", SHAPES)
def test_a_current_tile_says_what_it_runs_once(shape: tuple[int, int]) -> None:
    view = SlotView(1, "demo-an3155", "/dev/1")
    for ev in _identified(1, 1, EUI, "0x01050000", 1)[:2]:
        view.apply(ev)
    current = {"eui64": EUI, "version_before": "0x01050000", "message": "already running"}
    view.apply(event("job-finished", 1, 1, "skipped", current, at=2))
    text = tile_text(view, *shape).plain
    assert "?" not in text and "→" not in text, text
    assert text.count("1.5.0") == 1, text
    if shape[0] >= 26:
        assert "runs 1.5.0.0" in text, text


def test_a_refused_tile_shows_the_running_version_not_a_question_mark() -> None:
    view = SlotView(1, "demo-an3155", "/dev/1")
    for ev in _identified(1, 1, EUI, "0x01000000", 1)[:2]:  # refused before any plan
        view.apply(ev)
    refusal = {"eui64": EUI, "phase": "plan", "message": "off-pathway: from 0x01000000"}
    view.apply(event("job-finished", 1, 1, "refused", refusal, at=2))
    text = tile_text(view, 60, 3).plain
    assert "runs 1.0.0.0" in text and "?" not in text, text
    assert "off-pathway: from 1.0.0.0" in text, text  # the catalogue's words, versions dotted


def test_exchanges_read_as_a_hex_block() -> None:
    """Issue 12 item 24: the last bytes as a block of hex, 16 bytes a line, as sent."""
    lines = exchange_lines(
        [
            "-> 31 CE",
            "<- 79",
            "-> FF 00 00 02 20 01 04 00 08 CA 25 12 20 98 91 E5 9F 6A 95 72 74 E9 03 A5"
            " … (258 bytes)",
            "<- 1F",
            "-> DNLOAD wValue=2 1024 bytes: 00 01 02 03 04 05 06 07 …",
        ]
    )
    assert lines == [
        "-> 31 CE",
        "<- 79",
        "-> FF 00 00 02 20 01 04 00  08 CA 25 12 20 98 91 E5",
        "   9F 6A 95 72 74 E9 03 A5  … (258 bytes)",
        "<- 1F",
        "-> DNLOAD wValue=2 1024 bytes: 00 01 02 03 04 05 06 07 …",
    ]


def test_the_demos_ten_hubs_are_a_grid_not_one_long_column() -> None:
    """At 160x48 ten tiles read as two columns of five (Down then moves within a column)."""
    assert grid_shape(10, 160, 44) == (2, 4)

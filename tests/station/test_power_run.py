"""Slot power in `station run`: a hub that stopped answering is power-cycled before its
retry, a finished slot is switched off for a safe swap, and a switch that does not switch
flags the slot. The hubs are sim:// hubs fed by a simulated relay board (files) that the
rig's command template switches with ``python -m sim.power``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sim.power import PowerBoard
from station.demo import prepare_demo_catalog

SIZE = 8192
STATION = [sys.executable, "-m", "station.cli"]


def quick_profile(tmp_path: Path) -> Path:
    """demo-an3155 that gives up on a deaf hub after half a second (not five)."""
    text = (Path(__file__).parents[2] / "station/profiles/demo-an3155.toml").read_text()
    text = text.replace("resync_timeout_s = 5.0", "resync_timeout_s = 0.3")
    text = text.replace("retries = 5", "retries = 1")  # (a deaf hub still costs the
    # driver's flush of a command left half-sent, about 6 s at 115200 baud)
    path = tmp_path / "demo-an3155.toml"
    path.write_text(text)
    return path


def run(
    tmp_path: Path, port: str, power: str, *, retries: int = 1, profile: str | None = None
) -> list[dict[str, Any]]:
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    board = tmp_path / "board"
    relay = json.dumps([sys.executable, "-m", "sim.power", str(board), "{slot}", "{state}"])
    (tmp_path / "rig.toml").write_text(
        f'station_id = "bench-p"\n[policy]\njob_retries = {retries}\n'
        f'[[slot]]\nnumber = 1\nport = "{port}"\nprofile = "{profile or quick_profile(tmp_path)}"\n'
        f"[slot.power]\ncommand = {relay}\noff_s = 0.05\nsettle_s = 0.05\n{power}\n"
    )
    done = subprocess.run(
        [
            *STATION,
            "run",
            "--rig",
            str(tmp_path / "rig.toml"),
            "--catalog",
            str(cat.root),
            "--trust",
            trust.source,
            "--db",
            f"sqlite:///{tmp_path}/station.db",
            "--operator",
            "alice",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def hub(tmp_path: Path, faults: str = "") -> str:
    extra = f"&faults={faults}" if faults else ""
    return f"sim://an3155?slot=1&firmware-size={SIZE}&power={tmp_path / 'board'}{extra}"


def finished(events: list[dict[str, Any]]) -> list[str]:
    return [e["state"] for e in events if e["kind"] == "job-finished"]


def powered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["kind"] == "power"]


@pytest.mark.slow
def test_a_deaf_hub_is_power_cycled_before_its_retry_and_passes(tmp_path: Path) -> None:
    events = run(tmp_path, hub(tmp_path, "stall=2"), "")
    assert finished(events) == ["failed", "passed"]
    (cycle,) = powered(events)
    assert cycle["action"] == "cycle" and cycle["why"].startswith("the hub stopped answering")
    assert PowerBoard(tmp_path / "board").read(1).offs == 1


@pytest.mark.slow
def test_without_recovery_the_deaf_hub_stays_failed(tmp_path: Path) -> None:
    events = run(tmp_path, hub(tmp_path, "stall=2"), "recover = false")
    assert finished(events) == ["failed", "failed"]
    assert powered(events) == []


@pytest.mark.slow
def test_a_finished_slot_is_switched_off_for_a_safe_swap(tmp_path: Path) -> None:
    events = run(tmp_path, hub(tmp_path), "off_when_done = true")
    assert finished(events) == ["passed"]
    on, off = powered(events)
    assert on["action"] == "on" and off["action"] == "off" and "swap" in off["why"]
    assert not PowerBoard(tmp_path / "board").read(1).on


def test_a_relay_that_does_not_switch_flags_the_slot(tmp_path: Path) -> None:
    PowerBoard(tmp_path / "board").set_stuck(1)
    events = run(tmp_path, hub(tmp_path), "off_when_done = true")
    assert finished(events) == ["passed"]
    errors = [p for p in powered(events) if "error" in p]
    assert errors and "still answers with its power off" in errors[-1]["error"]
    faults = [e for e in events if e["kind"] == "slot-fault"]
    assert faults and "does not switch" in faults[0]["data"]["power"]


def test_power_events_have_a_text_line() -> None:
    from station.events import SlotFault, SlotPowered
    from station.run import event_line

    ok = event_line(SlotPowered(slot=2, action="off", why="done", switch="command 'r'"))
    bad = event_line(SlotPowered(slot=2, action="off", why="done", error="stuck"))
    fault = event_line(SlotFault(slot=2, failed_hubs=0, last="done", power="stuck"))
    assert ok == "slot 2: power off by command 'r': done"
    assert bad == "slot 2: power off failed (done): stuck"
    assert fault == "slot 2: flagged: its power switch does not work: stuck"


def test_the_tile_says_a_slot_is_off_in_words_and_on_again_clears_it() -> None:
    from station.events import SlotFault, SlotPowered
    from station.tui.model import SlotView, tile_text

    view = SlotView(3, "demo-an3155", "/dev/x", state="passed")
    view.apply(SlotPowered(slot=3, action="off", why="done", switch="relay"))
    assert "off: swap" in tile_text(view, 40, 3).plain
    assert "⏻off" in tile_text(view, 19, 1).plain
    view.apply(SlotPowered(slot=3, action="on", why="swapped", switch="relay"))
    assert "⏻" not in tile_text(view, 40, 3).plain
    view.apply(SlotFault(slot=3, failed_hubs=0, last="x", power="relay does not switch it"))
    assert view.fault and "power switch: relay does not switch it" in view.trace[-1]


def test_the_live_board_says_power_off_and_a_failed_switch() -> None:
    import io

    from rich.console import Console

    from station.events import SlotPowered
    from station.render import EventBoard

    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=True, color_system=None)
    with EventBoard(console) as board:
        board(SlotPowered(slot=1, action="off", why="done", switch="r"))
        board(SlotPowered(slot=2, action="off", why="done", error="stuck"))
    out = buf.getvalue()
    assert "power off: swap the hub" in out and "power off FAILED" in out


@pytest.mark.slow
def test_continuous_a_slot_switched_off_waits_for_the_operator_then_powers_on(
    tmp_path: Path,
) -> None:
    import threading

    from firmware_images.catalog import Catalog
    from sim.urlhandler import register
    from sim.urlhandler.protocol_sim import forget_hubs
    from station.controller import Controller
    from station.events import Event, SlotPowered
    from station.flash import Policy, catalog_chooser
    from station.records.store import Store
    from station.rig import parse_rig

    register()
    forget_hubs()
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    board = tmp_path / "board"
    relay = json.dumps([sys.executable, "-m", "sim.power", str(board), "{slot}", "{state}"])
    rig = parse_rig(
        'station_id = "t"\n[policy]\njob_retries = 0\n[[slot]]\nnumber = 1\n'
        f'port = "{hub(tmp_path)}&unpaced"\nprofile = "demo-an3155"\n'
        f"[slot.power]\ncommand = {relay}\noff_s = 0\nsettle_s = 0\noff_when_done = true\n"
    )
    policy = Policy(trust=trust)
    seen: list[Event] = []
    got = threading.Condition()

    def publish(ev: Event) -> None:
        with got:
            seen.append(ev)
            got.notify_all()

    def wait_for(count: int) -> None:
        with got:
            assert got.wait_for(
                lambda: sum(e.kind == "power" for e in seen) >= count, timeout=60
            ), [e.kind for e in seen]

    stop = threading.Event()
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.acquire_lease("t")
        batch = store.start_batch(station_id="t", operator="o", rig="r", catalog="c")
        ctl = Controller(
            rig,
            store=store,
            batch_id=batch,
            chooser_for=lambda p: catalog_chooser(Catalog.load(cat.root), p, policy),
            policy=policy,
            publish=publish,
            poll_s=0.05,
        )
        worker = threading.Thread(target=ctl.run, kwargs={"continuous": True, "stop": stop})
        worker.start()
        try:
            wait_for(2)  # on as the slot is served, off when its job ended
            assert not PowerBoard(board).read(1).on
            time.sleep(0.3)
            assert sum(e.kind == "job-finished" for e in seen) == 1  # it waits, powered off
            assert ctl.retry(1)  # the operator: the next hub is in
            wait_for(4)  # on again, and off after the next job
        finally:
            stop.set()
            ctl.retry(1)
            worker.join(30)
    states = [(e.action, e.why) for e in seen if isinstance(e, SlotPowered)]
    assert [s for s, _ in states[:4]] == ["on", "off", "on", "off"]
    assert states[2][1] == "the operator swapped the hub"
    assert sum(e.kind == "job-finished" for e in seen) == 2
    forget_hubs()


@pytest.mark.slow
def test_station_run_enters_by_power_cycle_over_station_sim_rfc2217(tmp_path: Path) -> None:
    """The whole path over the network: `station sim --rfc2217 --power BOARD` serves a hub
    running its application; the rig's relay command cycles it with DTR (its boot line)
    held over RFC 2217; it starts in its bootloader and is flashed."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base = int(sock.getsockname()[1])
    board = tmp_path / "board"
    sim = subprocess.Popen(
        [
            *[sys.executable, "-m", "sim"],
            *["--rfc2217", str(base), "--hubs", "1", "--firmware", "1.1.0.0"],
            *["--start-in", "app", "--lines", "boot=dtr", "--power", str(board), "--json"],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        (hub_port,) = [json.loads(sim.stdout.readline())["port"]]
        events = run(tmp_path, hub_port, "entry = true", retries=0, profile="demo-an3155")
    finally:
        sim.terminate()
        sim.wait(10)
    (done,) = [e for e in events if e["kind"] == "job-finished"]
    assert done["state"] == "passed", done["data"]["message"]
    assert done["data"]["found_in"] == "bootloader"  # not by its application's BOOT command
    assert PowerBoard(board).read(1).offs == 1


def test_station_sim_power_needs_rfc2217() -> None:
    argv = [sys.executable, "-m", "sim", "--hubs", "1", "--power", "/tmp/x"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "need --rfc2217" in done.stderr


def test_a_stuck_relay_during_power_entry_fails_the_job_and_flags_the_slot(tmp_path: Path) -> None:
    PowerBoard(tmp_path / "board").set_stuck(1)
    events = run(tmp_path, hub(tmp_path), "entry = true", retries=0)
    (done,) = [e for e in events if e["kind"] == "job-finished"]
    assert done["state"] == "failed" and done["data"]["phase"] == "connect"
    assert done["data"]["error"] == "PowerError"
    (fault,) = [e for e in events if e["kind"] == "slot-fault"]
    assert "still answers with its power off" in fault["data"]["power"]

"""Prometheus figures (docs/metrics.md): the event -> figure mapping, and a real
``station run --metrics`` scraped over HTTP while and after it serves simulated hubs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drivers.errors import ConfigError
from sim.pty import SimHub
from station.demo import prepare_demo_catalog
from station.events import Event
from station.metrics import StationMetrics, parse_address, serve

from ..eventkit import event

SIZE = 8192
STATION = [sys.executable, "-m", "station.cli"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    """Every sample of a scrape: (sample name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _finished(job_id: int, at: float, result: str, eui64: str | None, **data: Any) -> list[Event]:
    return [
        event("state", 1, job_id, "detected", {"port": "/dev/x"}, at=at),
        event(
            "job-finished",
            1,
            job_id,
            result,
            {"result": result, "eui64": eui64, "profile": "demo-an3155", **data},
            at=at + 10,
        ),
    ]


# -- the mapping ----------------------------------------------------------------------------


def test_events_become_figures() -> None:
    heartbeat = datetime(2026, 1, 1, 12, 0, 0)  # naive, as SQLite hands it back: UTC
    m = StationMetrics("bench-u", version="9.9.9", lease_heartbeat=lambda: heartbeat)
    phases = {"connect": 0.02, "identify": 0.03, "write": 7.5, "verify": 0.4, "nonsense": 1.0}
    events = [
        event("batch-started", data={"batch": 1, "station": "bench-u", "slots": 2}),
        *_finished(1, 1000.0, "passed", "00-DB-12-00-00-00-00-01", bytes_written=4096,
                   phase_seconds=phases, message="1.4.0.0 -> 1.5.0.0 {bad=\"label\"}"),
        *_finished(2, 1005.0, "failed", None, bytes_written=0,
                   phase_seconds={"connect": 0.5}, message="write block 3: NACK"),
        event("retry", 1, data={"try": 2, "why": "write block 3: NACK"}),
        event("slot-fault", 2, data={"failed_hubs": 3, "last": "no answer"}),
        event("state", 2, 3, "detected", {"port": "/dev/y"}, at=1020.0),  # still running
    ]  # fmt: skip
    for e in events:
        m(e)
    s = _samples(generate_latest(m.registry).decode())
    assert _value(s, "station_info", station="bench-u", version="9.9.9") == 1
    hubs = {"station": "bench-u", "model": "demo-an3155"}
    assert _value(s, "station_jobs_total", **hubs, result="passed") == 1
    assert _value(s, "station_jobs_total", **hubs, result="failed") == 1
    # Slot 1's hub is being tried again (the retry event); slot 2's job read no EUI-64, so
    # it is no hub to count.
    assert _value(s, "station_batch_hubs", station="bench-u", result="retrying") == 1
    assert _value(s, "station_batch_hubs", station="bench-u", result="failed") is None
    assert _value(s, "station_bytes_written_total", **hubs) == 4096
    assert _value(s, "station_phase_seconds_count", **hubs, phase="connect") == 2
    assert _value(s, "station_phase_seconds_sum", **hubs, phase="write") == 7.5
    assert _value(s, "station_phase_seconds_bucket", **hubs, phase="write", le="10.0") == 1
    assert _value(s, "station_phase_seconds_bucket", **hubs, phase="write", le="5.0") == 0
    assert not [k for k in s if ("phase", "nonsense") in k[1]]  # only the job's phases
    assert _value(s, "station_retries_total", station="bench-u", slot="1") == 1
    assert _value(s, "station_slot_faults_total", station="bench-u", slot="2") == 1
    # One hub passed in 15 s of batch wall time (first start to last end).
    assert _value(s, "station_hubs_per_hour", station="bench-u") == pytest.approx(240.0)
    assert _value(s, "station_jobs_in_flight", station="bench-u") == 1
    age = m.lease_age(now=datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC))
    assert age == pytest.approx(7.0)
    # Free text never becomes a label value.
    values = {v for _, labels in s for _, v in labels}
    assert not any("NACK" in v or "->" in v or "bad=" in v for v in values)


def test_unknown_figures_are_absent_not_made_up() -> None:
    m = StationMetrics("bench-u", lease_heartbeat=lambda: None)
    m(event("batch-started", data={"batch": 1}))
    s = _samples(generate_latest(m.registry).decode())
    assert _value(s, "station_hubs_per_hour", station="bench-u") is None
    assert _value(s, "station_lease_age_seconds", station="bench-u") is None
    assert _value(s, "station_jobs_in_flight", station="bench-u") == 0


def test_a_new_batch_starts_its_rate_afresh() -> None:
    m = StationMetrics("bench-u")
    for e in _finished(1, 0.0, "passed", "00-DB-12-00-00-00-00-01"):
        m(e)
    assert m.hubs_per_hour() == pytest.approx(360.0)
    m(event("batch-started", data={"batch": 2}))
    assert m.hubs_per_hour() is None
    lease = datetime.now(UTC) - timedelta(seconds=3)
    assert StationMetrics("b", lease_heartbeat=lambda: lease).lease_age() == pytest.approx(
        3.0, abs=1.0
    )


def test_registries_are_per_station() -> None:
    a, b = StationMetrics("bench-a"), StationMetrics("bench-b")
    for e in _finished(1, 0.0, "passed", "00-DB-12-00-00-00-00-01"):
        a(e)
    text = generate_latest(b.registry).decode()
    assert "bench-a" not in text and "station_jobs_total{" not in text


@pytest.mark.parametrize("text", ["9464", "host:", ":9464", "host:port", "h:70000", ""])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        parse_address(text)


def test_addresses() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:0") == ("::1", 0)
    server = serve("127.0.0.1:0")
    try:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.close()


# -- station run --metrics ------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return _samples(resp.read().decode())


@pytest.mark.parametrize("command", ["run", "tui"])
def test_bad_metrics_address_is_one_line_exit_2(
    command: str, tmp_path: Path, busy_port: int
) -> None:
    db = tmp_path / "station.db"
    for address, why in (
        ("localhost", "is not HOST:PORT"),
        (f"127.0.0.1:{busy_port}", "Address already in use"),
        ("no-such-host.invalid:9464", "cannot serve metrics on no-such-host.invalid:9464"),
    ):
        run = subprocess.run(
            [*STATION, command, "--rig", str(tmp_path / "none.toml"), "--db", f"sqlite:///{db}",
             "--metrics", address],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], lines
    assert not db.exists()  # refused before the station opened its records


def test_run_serves_its_figures(start_hub: Callable[..., SimHub], tmp_path: Path) -> None:
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hubs = [
        start_hub(1, firmware_size=SIZE),
        start_hub(2, firmware_size=SIZE, start_in="app"),
        start_hub(3, firmware_size=SIZE, faults="nack=3x7"),  # fails once, passes on retry
        start_hub(4, firmware=0x0105_0000, firmware_size=SIZE),  # already current
        start_hub(5, firmware_size=SIZE, faults="nack=0x64"),  # fails twice: slot flagged
    ]
    rig = 'station_id = "bench-m"\n[policy]\njob_retries = 1\nslot_fault_after = 1\n'
    for h in hubs:
        rig += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    rig += '[[slot]]\nnumber = 6\nport = "/dev/no-hub-here"\nprofile = "demo-an3155"\n'
    (tmp_path / "rig.toml").write_text(rig)
    port = _free_port()
    proc = subprocess.Popen(
        [*STATION, "run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(cat.root),
         "--trust", trust.source, "--db", f"sqlite:///{tmp_path}/station.db", "--json",
         "--metrics", f"127.0.0.1:{port}", "--metrics-linger", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    events: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["kind"] == "batch-started":
                during = _scrape(port)  # served while the batch runs, lease held
                assert _value(during, "station_info", station="bench-m", version=_version())
                age = _value(during, "station_lease_age_seconds", station="bench-m")
                assert age is not None and 0 <= age < 30
            if events[-1]["kind"] == "batch-finished":
                break
        after = _scrape(port)  # lingering: the batch's end is there to scrape
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr  # a hub failed
    assert f"metrics: http://127.0.0.1:{port}/metrics" in stderr

    ended = [e for e in events if e["kind"] == "job-finished"]
    by_result: dict[str, int] = {}
    for e in ended:
        by_result[e["state"]] = by_result.get(e["state"], 0) + 1
    assert by_result == {"passed": 3, "failed": 3, "skipped": 1}  # slots 3 and 5 retried
    hubs_lbl = {"station": "bench-m", "model": "demo-an3155"}
    for result, n in by_result.items():
        assert _value(after, "station_jobs_total", **hubs_lbl, result=result) == n
    assert _sum(after, "station_jobs_total") == len(ended)
    last: dict[str, str] = {}  # each hub by how its last try ended, as the reports count
    for e in ended:
        last[e["data"]["eui64"]] = e["state"]
    for result in set(last.values()):
        n = sum(1 for r in last.values() if r == result)
        assert _value(after, "station_batch_hubs", station="bench-m", result=result) == n
    written = sum(e["data"]["bytes_written"] for e in ended)
    assert written > 0
    assert _value(after, "station_bytes_written_total", **hubs_lbl) == written
    assert _value(after, "station_retries_total", station="bench-m", slot="3") == 1
    assert _value(after, "station_retries_total", station="bench-m", slot="5") == 1
    assert _value(after, "station_slot_faults_total", station="bench-m", slot="5") == 1
    assert _sum(after, "station_slot_faults_total") == 1
    # Every job's phases: all 7 jobs connected and planned, the 6 that were not current
    # wrote, the 3 passes confirmed.
    count = "station_phase_seconds_count"
    expected = {"connect": 7, "identify": 7, "plan": 7, "erase": 6, "write": 6, "confirm": 3}
    for phase, n in expected.items():
        assert _value(after, count, **hubs_lbl, phase=phase) == n, phase
    assert (_value(after, "station_phase_seconds_sum", **hubs_lbl, phase="write") or 0) > 0
    summary = events[-1]["data"]["summary"]
    rate = _value(after, "station_hubs_per_hour", station="bench-m")
    assert rate == pytest.approx(summary["hubs_per_hour"], rel=0.2)
    assert _value(after, "station_jobs_in_flight", station="bench-m") == 0
    assert _value(after, "station_lease_age_seconds", station="bench-m") is not None


def _version() -> str:
    from station.metrics import software_version

    return software_version()


@pytest.mark.asyncio
async def test_the_operator_ui_feeds_the_same_figures(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    """The TUI takes the batch's events for its own screen; the metrics still get them."""
    from station.batch import BatchRun
    from station.metrics import watch
    from station.tui.app import StationApp

    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hub = start_hub(1, firmware_size=SIZE)
    rig = tmp_path / "rig.toml"
    rig.write_text(
        f'station_id = "bench-tm"\n[[slot]]\nnumber = 1\nport = "{hub.port}"\n'
        'profile = "demo-an3155"\n'
    )
    server = serve("127.0.0.1:0")
    batch = BatchRun.open(
        str(rig), catalog_dir=str(cat.root), trust_dir=trust.source,
        db_url=f"sqlite:///{tmp_path}/station.db",
    )  # fmt: skip
    try:
        watch(batch, server)
        app = StationApp(batch, operator="alice", reports_dir=tmp_path / "reports")
        async with app.run_test(size=(120, 36)) as pilot:
            for _ in range(300):
                if not app.probing and app.plan_rows[0].eui64:
                    break
                await pilot.pause(0.1)
            await pilot.press("s")
            for _ in range(600):
                if app.view.slots[1].state == "passed":
                    break
                await pilot.pause(0.1)
            assert app.view.slots[1].state == "passed"
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                s = _samples(resp.read().decode())
            await pilot.press("q")
        lbl = {"station": "bench-tm", "model": "demo-an3155"}
        assert _value(s, "station_jobs_total", **lbl, result="passed") == 1
        assert _value(s, "station_phase_seconds_count", **lbl, phase="confirm") == 1
        assert _value(s, "station_lease_age_seconds", station="bench-tm") is not None
    finally:
        batch.close()
        server.close()

"""The controller and ``station run`` keep the records true: durable before acted on, one
owner per station, a refused record fails loudly, and the exit status says so.

Simulated hubs run in their own processes (the ``start_hub`` fixture), so what each really
holds is asked of its model (``SimHub.ground_truth``), never taken from the records.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_images.catalog import Catalog
from firmware_images.trust import TrustStore
from sim.pty import SimHub
from station.controller import Controller
from station.demo import DEMO_TARGET, prepare_demo_catalog
from station.events import Event, JobState
from station.flash import Policy, catalog_chooser
from station.outcome import Refusal
from station.records.errors import StoreError
from station.records.store import Store
from station.rig import parse_rig

SIZE = 8192
STATION = [sys.executable, "-m", "station.cli"]


@pytest.fixture
def catalogue(tmp_path: Path) -> tuple[Catalog, TrustStore]:
    return prepare_demo_catalog(tmp_path / "demo", size=SIZE)


def _rig(hubs: list[SimHub], station: str = "bench-r", retries: int = 0) -> str:
    text = f'station_id = "{station}"\n[policy]\njob_retries = {retries}\n'
    for h in hubs:
        text += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    return text


class Refusing(Store):
    """A real store that refuses to record one state (as a full disk or a lost lease would)."""

    refuse: JobState | None = None

    def record_state(
        self, job_id: int, state: JobState, detail: dict[str, Any] | None = None
    ) -> None:
        if state is self.refuse:
            raise StoreError(f"station database: refused to record {state} (test)")
        super().record_state(job_id, state, detail)


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Refusing]:
    with Refusing.open(f"sqlite:///{tmp_path / 'station.db'}") as store:
        store.acquire_lease("bench-r")
        yield store


def _controller(
    store: Store, hubs: list[SimHub], cat: Catalog, trust: TrustStore, seen: list[Event]
) -> Controller:
    rig = parse_rig(_rig(hubs))
    batch = store.start_batch(station_id="bench-r", operator="op", rig="r", catalog="c")
    policy = Policy(trust=trust)
    return Controller(
        rig,
        store=store,
        batch_id=batch,
        chooser_for=lambda p: catalog_chooser(cat, p, policy),
        policy=policy,
        publish=seen.append,
    )


@pytest.mark.parametrize("refused", [JobState.IDENTIFIED, JobState.PLANNED, JobState.ERASING])
def test_nothing_is_written_to_a_hub_before_its_record_is_durable(
    start_hub: Callable[..., SimHub],
    refusing: Refusing,
    catalogue: tuple[Catalog, TrustStore],
    refused: JobState,
) -> None:
    hub = start_hub(1, firmware_size=SIZE)
    before = hub.ground_truth(SIZE)
    refusing.refuse = refused
    seen: list[Event] = []
    ctl = _controller(refusing, [hub], *catalogue, seen)
    ctl.run()
    [job] = refusing.jobs(ctl.batch_id)
    assert job.state is JobState.FAILED
    assert "refused to record" in (job.message or "")
    after = hub.ground_truth(SIZE)
    # Talking to the bootloader (sync, identify) is allowed; its flash must be untouched.
    assert (after["sha256"], after["running"]) == (before["sha256"], before["running"]), (
        "the hub's flash was changed before its state was durable"
    )


def test_a_record_the_store_refuses_fails_the_job_loudly(
    start_hub: Callable[..., SimHub], tmp_path: Path, catalogue: tuple[Catalog, TrustStore]
) -> None:
    """An outcome too long for the records (PostgreSQL would refuse it; SQLite would take
    it) ends the job failed with the refusal as its message, never left live."""
    hub = start_hub(1, firmware_size=SIZE)
    _, trust = catalogue

    def chooser_for(profile: Any) -> Any:
        def choose(out: Any) -> Any:
            raise Refusal("x" * 70000, "a reason no column holds")

        return choose

    seen: list[Event] = []
    with Store.open(f"sqlite:///{tmp_path / 'station.db'}") as store:
        store.acquire_lease("bench-r")
        batch = store.start_batch(station_id="bench-r", operator="op", rig="r", catalog="c")
        ctl = Controller(
            parse_rig(_rig([hub])),
            store=store,
            batch_id=batch,
            chooser_for=chooser_for,
            policy=Policy(trust=trust),
            publish=seen.append,
        )
        ctl.run()
        [job] = store.jobs(batch)
        assert job.state is JobState.FAILED and job.eui64 == hub.spec.eui64
        assert "the station database refused this job's record" in (job.message or "")
        assert "jobs.message takes at most 65536" in (job.message or "")
        assert ctl.record_errors == []
        finished = [e for e in seen if e.kind == "job-finished"]
        assert [e.state for e in finished] == ["failed"]


def test_a_lost_lease_stops_the_run_and_writes_nothing_more(
    start_hub: Callable[..., SimHub], tmp_path: Path, catalogue: tuple[Catalog, TrustStore]
) -> None:
    hub = start_hub(1, firmware_size=SIZE, paced=True)
    seen: list[Event] = []
    with Store.open(f"sqlite:///{tmp_path / 'station.db'}") as store:
        store.acquire_lease("bench-r")
        ctl = _controller(store, [hub], *catalogue, seen)
        writing = threading.Event()

        def publish(event: Event) -> None:
            seen.append(event)
            if event.kind == "state" and event.state == "writing":
                writing.set()

        ctl.publish = publish
        ctl._recorder.publish = publish
        runner = threading.Thread(target=ctl.run)
        runner.start()
        assert writing.wait(30)
        with store._engine.begin() as conn:  # another process noticed us gone
            conn.exec_driver_sql("UPDATE station_leases SET released_at = started_at")
        runner.join(60)
        assert not runner.is_alive()
        assert ctl.lease_lost.is_set()
        assert any(e.kind == "lease-lost" for e in seen)
        assert ctl.record_errors and "lease" in ctl.record_errors[0]
        [job] = store.jobs(ctl.batch_id)
        assert not job.state.final  # left for whoever holds the station now to end


def _station(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=timeout)


def test_a_second_run_of_a_station_is_refused_and_spares_the_first(
    start_hub: Callable[..., SimHub], tmp_path: Path, catalogue: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = catalogue
    # Lines at 38400 baud: the first run writes for seconds, so it is still running however
    # slowly a loaded machine starts the second (it must meet a live run, not a finished one).
    hubs = [start_hub(n, firmware_size=SIZE, paced=True, baud=38400) for n in (1, 2)]
    (tmp_path / "rig.toml").write_text(_rig(hubs))
    db = f"sqlite:///{tmp_path}/station.db"
    args = ["run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(cat.root)]
    args += ["--trust", trust.source, "--db", db, "--json"]
    first = subprocess.Popen([*STATION, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        for line in first.stdout:  # wait until the first run is writing hubs
            if json.loads(line).get("state") == "erasing":
                break
        second = _station(*args)
        assert second.returncode == 2
        assert "station bench-r is already running: pid" in second.stderr
        assert "Traceback" not in second.stderr
        out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0
    finished = [json.loads(x) for x in out.splitlines() if '"job-finished"' in x]
    assert sorted(e["state"] for e in finished) == ["passed", "passed"]
    for hub in hubs:
        assert hub.ground_truth(SIZE)["running"] == DEMO_TARGET
    assert _station("audit", "verify", "--db", db).returncode == 0


def test_a_rig_whose_every_job_fails_before_identifying_exits_1(
    tmp_path: Path, catalogue: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = catalogue
    rig = 'station_id = "bench-dead"\n[policy]\njob_retries = 0\n'
    for n in (1, 2, 3):
        rig += f'[[slot]]\nnumber = {n}\nport = "socket://127.0.0.1:1"\nprofile = "demo-an3155"\n'
    (tmp_path / "rig.toml").write_text(rig)
    done = _station(
        *("run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(cat.root)),
        *("--trust", trust.source, "--db", f"sqlite:///{tmp_path}/s.db"),
    )
    assert done.returncode == 1, done.stderr
    assert "3 job(s) ended before a hub was identified" in done.stderr


def test_the_restart_after_a_kill_closes_the_batch_and_says_so(
    start_hub: Callable[..., SimHub], tmp_path: Path, catalogue: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = catalogue
    hub = start_hub(1, firmware_size=SIZE, paced=True)
    (tmp_path / "rig.toml").write_text(_rig([hub]))
    db = f"sqlite:///{tmp_path}/station.db"
    args = ["run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(cat.root)]
    args += ["--trust", trust.source, "--db", db, "--json"]
    first = subprocess.Popen([*STATION, *args], stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    for line in first.stdout:
        if json.loads(line).get("state") == "writing":
            break
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Before any restart, the records already say the open batch's run is gone.
    [killed] = json.loads(_station("batches", "--json", "--db", db).stdout)
    assert killed["finished_at"] is None and killed["run_gone"] is True
    assert "its run stopped" in _station("batches", "--db", db).stdout
    again = _station(*args)
    assert again.returncode == 0, again.stderr
    assert "job(s) left in flight by a run that stopped were marked interrupted" in again.stderr
    assert "batch 1 was left open by a run that stopped: closed now" in again.stderr
    batches = json.loads(_station("batches", "--json", "--db", db).stdout)
    assert [b["finished_at"] is not None for b in batches] == [True, True]
    rows = _station("report", "dsp", "--batch", "2", "--format", "json", "--db", db)
    doc = json.loads(rows.stdout)
    assert [h["eui64"] for h in doc["hubs"]] == [hub.spec.eui64]
    assert hub.ground_truth(SIZE)["running"] == DEMO_TARGET

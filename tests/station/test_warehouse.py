"""A warehouse on real PostgreSQL: three ``station run`` processes serve one consignment.

Sixty-one simulated hubs on pseudo-terminals (one EUI-64 carried by two of them), three
stations (bench-a local, bench-b through real ser2net, bench-c local), one consignment of
60 hubs loaded once. On the way: the cloned hub is refused at the second station while the
first flashes it; bench-c is killed with SIGKILL mid-batch and its hubs are moved to
bench-a, which finishes them; the ser2net exporting one of bench-b's hubs is stopped
mid-write (the job ends interrupted, "remote port lost") and the hub is run again once the
exporter is back. Afterwards every hub's ground truth, its records, the consignment's
status and its one DSP update agree, with no export twice and none lost, and the audit
chain verifies.

Runs when STATION_TEST_PG_URL names a PostgreSQL database (its station schema is dropped
and made again) and ser2net is installed; skipped, saying why, otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sim.pty import HubSpec, SimHub, start_hubs, stop_hubs
from station.demo import prepare_demo_catalog
from station.records.store import Store
from tests.conftest import NEW, OLD
from tests.ser2netkit import Ser2net, needs_ser2net
from tests.station.recordkit import PG_URL, fresh_pg_schema

pytestmark = [
    needs_ser2net,
    pytest.mark.slow,
    pytest.mark.skipif(
        not PG_URL, reason="STATION_TEST_PG_URL is not set: no PostgreSQL to test against"
    ),
    # pyserial 3.5's RFC 2217 client names its reader thread the old way.
    pytest.mark.filterwarnings(r"ignore:set(Daemon|Name)\(\) is deprecated:DeprecationWarning"),
]

STATION = [sys.executable, "-m", "station.cli"]
SIZE = 16 * 1024
CN = "CN-WH-13"
NEW_HEX, OLD_HEX = f"0x{NEW:08X}", f"0x{OLD:08X}"
#: A hub that stops answering for 0.7 s at ten write blocks: the driver retries each, so
#: its write takes about ten seconds and it stays in flight while the test acts.
SLOW = ",".join(f"stall={n}:0.7" for n in range(1, 20, 2))
WAIT_S = 120.0


def eui(bench: int, n: int) -> str:
    """The EUI-64 of hub ``n`` of bench ``bench`` (1 a, 2 b, 3 c)."""
    return f"00-DB-12-00-13-{bench:02X}-00-{n:02X}"


def _station(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=timeout)


class Run:
    """A ``station run --json`` in the background, its events read as they come."""

    def __init__(self, rig: Path, catalog: Path, trust: str, db: str, operator: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self._eof = False
        self._cond = threading.Condition()
        command = [
            *STATION, "run", "--rig", str(rig), "--catalog", str(catalog), "--trust", trust,
            "--db", db, "--operator", operator, "--json",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_for(self, what: str, pred: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Wait until ``pred(events)`` holds (fails, showing the events, if it never does)."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while not pred(self.events):
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    tail = json.dumps(self.events[-8:])[-2000:]
                    pytest.fail(f"never saw {what}: {tail} {self.stderr[-1000:]}")
                self._cond.wait(min(left, 0.5))

    def finish(self) -> int:
        """Wait for the run to end and its events to be read; its exit status."""
        code = self.proc.wait(timeout=WAIT_S)
        with self._cond:
            self._cond.wait_for(lambda: self._eof, timeout=10)
        self._err.join(timeout=10)
        return code

    def states(self, slot: int) -> list[str]:
        return [e["state"] for e in self.events if e["kind"] == "state" and e["slot"] == slot]

    def finished(self) -> dict[int, str]:
        """Each slot's last finished job's state."""
        return {e["slot"]: e["state"] for e in self.events if e["kind"] == "job-finished"}


def _rig(path: Path, station_id: str, ports: Sequence[str]) -> Path:
    text = f'station_id = "{station_id}"\n[policy]\njob_retries = 0\n'
    for slot, port in enumerate(ports, start=1):
        text += f'[[slot]]\nnumber = {slot}\nport = "{port}"\nprofile = "demo-an3155"\n'
    path.write_text(text)
    return path


@pytest.fixture
def hubs() -> Iterator[dict[str, list[SimHub]]]:
    """The benches' hubs, all started at once: bench a's slot 1 and bench c's slot 21 carry
    one EUI-64; b's slot 20 and c's slots 16-20 are slow; b's slots 18-19 already run NEW."""

    def spec(bench: int, n: int, *, eui64: str | None = None, **kw: Any) -> HubSpec:
        return HubSpec(
            slot=bench * 100 + n,
            eui64=eui64 or eui(bench, n),
            paced=False,
            firmware=kw.pop("firmware", OLD),
            firmware_size=SIZE,
            protocol="an3155",
            **kw,
        )

    specs = {
        "a": [spec(1, 1, faults=SLOW)] + [spec(1, n) for n in range(2, 21)],
        "b": [spec(2, n) for n in range(1, 18)]
        + [spec(2, n, firmware=NEW, start_in="app") for n in (18, 19)]
        + [spec(2, 20, faults=SLOW)],
        "c": [spec(3, n) for n in range(1, 16)]
        + [spec(3, n, faults=SLOW) for n in range(16, 21)]
        + [spec(3, 21, eui64=eui(1, 1))],  # a clone of bench a's slot 1
    }
    started = start_hubs([s for group in specs.values() for s in group])
    out, i = {}, 0
    for name, group in specs.items():
        out[name] = started[i : i + len(group)]
        i += len(group)
    try:
        yield out
    finally:
        stop_hubs(started)


def _station_state(db: str, station_id: str) -> str | None:
    listed = json.loads(_station("stations", "--json", "--db", db).stdout)
    return next((s["state"] for s in listed if s["station_id"] == station_id), None)


def test_three_stations_serve_one_consignment(
    hubs: dict[str, list[SimHub]], tmp_path: Path
) -> None:
    assert PG_URL is not None
    db = PG_URL
    fresh_pg_schema(db)
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    a, b, c = hubs["a"], hubs["b"], hubs["c"]
    listed = [h.spec.eui64 for h in a + b + c[:20]]
    assert len(set(listed)) == 60
    manifest = tmp_path / "cn.csv"
    manifest.write_text(
        "consignment,eui64,model\n" + "".join(f"{CN},{e},demo-an3155\n" for e in listed)
    )
    loaded = _station("consignment", "load", str(manifest), "--id", CN, "--operator", "olga",
                      "--db", db)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr

    runs: list[Run] = []

    def run(name: str, station_id: str, ports: Sequence[str], operator: str) -> Run:
        rig = _rig(tmp_path / f"{name}.toml", station_id, ports)
        runs.append(Run(rig, cat.root, trust.source, db, operator))
        return runs[-1]

    # bench-b's hubs over the network: slot 20 (slow) on an exporter of its own.
    net = Ser2net([h.port for h in b[:19]], tmp_path / "ser2net-1").start()
    lone = Ser2net([b[19].port], tmp_path / "ser2net-2").start()
    back: Ser2net | None = None
    try:
        run_a = run("a", "bench-a", [h.port for h in a], "alice")
        run_b = run("b", "bench-b", [*net.urls, *lone.urls], "bob")

        # The clone is presented at bench-c while bench-a is writing the original.
        run_a.wait_for("bench-a writing slot 1", lambda ev: "writing" in run_a.states(1))
        run_c = run("c", "bench-c", [h.port for h in c], "carol")

        # bench-b's lone exporter is stopped while its hub is being written.
        run_b.wait_for("bench-b writing slot 20", lambda ev: "writing" in run_b.states(20))
        lone.stop()

        # bench-c is killed once its quick hubs are done (and the clone refused), while its
        # slow ones are being written.
        def c_midway(ev: list[dict[str, Any]]) -> bool:
            done = run_c.finished()
            return done.get(21) == "refused" and sum(s == "passed" for s in done.values()) >= 15

        run_c.wait_for("bench-c half done", c_midway)
        assert all("writing" in run_c.states(n) for n in range(16, 21))
        os.kill(run_c.proc.pid, signal.SIGKILL)
        in_flight_at_kill = {
            e["job_id"] for e in run_c.events if e["kind"] == "state" and e["slot"] in range(16, 21)
        }
        run_c.finish()
        c_passed = {c[n - 1].spec.eui64 for n, s in run_c.finished().items() if s == "passed"}
        assert len(c_passed) >= 15 and not c_passed & {h.spec.eui64 for h in c[15:]}

        assert run_a.finish() == 0, run_a.stderr
        assert run_a.finished() == dict.fromkeys(range(1, 21), "passed")
        assert run_b.finish() == 1, run_b.stderr
        done_b = run_b.finished()
        assert done_b[20] == "interrupted"
        lost_at_b = [e for e in run_b.events if e["kind"] == "job-finished" and e["slot"] == 20]
        assert "remote port lost" in json.dumps(lost_at_b), lost_at_b
        bad_b = [
            e
            for e in run_b.events
            if e["kind"] == "job-finished"
            and e["slot"] != 20
            and e["state"] not in ("passed", "skipped")
        ]
        assert not bad_b and len(done_b) == 20, bad_b

        # The operator moves bench-c's hubs to bench-a once bench-c shows gone.
        deadline = time.monotonic() + 60
        while _station_state(db, "bench-c") != "gone":
            assert time.monotonic() < deadline, "bench-c never showed gone"
            time.sleep(0.5)
        moved = run("a2", "bench-a", [h.port for h in c], "alice")
        assert moved.finish() == 0, moved.stderr
        got = moved.finished()
        assert {got[n] for n in range(1, 22)} <= {"passed", "skipped"}, got
        assert got[21] == "passed"  # the clone, now nobody else has it

        # bench-b's exporter is back (a new port): the hub is run again.
        back = Ser2net([b[19].port], tmp_path / "ser2net-3").start()
        again = run("b2", "bench-b", [*back.urls], "bob")
        assert again.finish() == 0, again.stderr
        assert again.finished() == {1: "passed"}
    finally:
        for exporter in (net, lone, back):
            if exporter is not None:
                exporter.stop()

    closed = _station("consignment", "close", CN, "--db", db)
    assert closed.returncode == 0, closed.stderr

    # Ground truth: every hub, the clone too, holds the same image, and runs NEW when its
    # application runs (a hub found current is left in its bootloader, as identified).
    truths = {h.spec.slot: h.ground_truth(SIZE) for h in a + b + c}
    runs_new = {t["sha256"] for t in truths.values() if t["running"] == NEW}
    assert len(runs_new) == 1
    wrong = {
        slot: t
        for slot, t in truths.items()
        if t["sha256"] not in runs_new
        or (t["running"], t["mode"]) not in ((NEW, "app"), (None, "bootloader"))
    }
    assert not wrong, wrong

    # The records say the same of every listed hub.
    current_on_arrival = {b[17].spec.eui64, b[18].spec.eui64}
    store = Store.open(db)
    try:
        for e in listed:
            hub = store.hub(e)
            assert hub is not None and hub.running_version == NEW_HEX, e
            assert not hub.pending, e
            want = None if e in current_on_arrival else NEW_HEX
            assert hub.exported_version == want, e
        # No record lost: every job a run reported finished is recorded so, the jobs the
        # kill cut off are recorded interrupted (by the next start), and nothing is left live.
        assert not [
            e for r in runs for e in r.events if e["kind"] in ("record-error", "slot-error")
        ]
        reported = {
            e["job_id"]: e["state"] for r in runs for e in r.events if e["kind"] == "job-finished"
        }
        assert len(in_flight_at_kill) == 5 and not in_flight_at_kill & set(reported)
        for job_id in in_flight_at_kill:
            reported[job_id] = "interrupted"
        batches = {store.job(j).batch_id for j in reported}
        recorded = {j.id: str(j.state) for batch in batches for j in store.jobs(batch)}
        assert recorded == reported
    finally:
        store.close()
    lost = json.loads(_station("hub", b[19].spec.eui64, "--db", db, "--json").stdout)
    first, last = lost["jobs"][0], lost["jobs"][-1]
    assert first["state"] == "interrupted" and first["message"].startswith("remote port lost")
    assert last["state"] == "passed" and last["port"] == back.urls[0]
    clone = json.loads(_station("hub", eui(1, 1), "--db", db, "--json").stdout)
    assert [j["state"] for j in clone["jobs"]] == ["passed", "refused", "passed"]
    assert clone["jobs"][1]["error"] == "HubInFlight"

    status = json.loads(_station("consignment", "status", CN, "--json", "--db", db).stdout)
    assert status["state"] == "closed" and status["complete"] is True
    assert status["expected"] == 60
    counts = {k: v for k, v in status["counts"].items() if v}
    assert counts == {"passed": 58, "current": 2}, status["counts"]
    assert status["in_flight"] == [] and status["dsp"]["waiting"] == []

    # The one DSP update: every changed hub once, with the station that read the change.
    dsp = _station("report", "dsp", "--consignment", CN, "--format", "json", "--db", db)
    assert dsp.returncode == 0, dsp.stderr
    update = json.loads(dsp.stdout)
    assert update["final"] is True
    rows = update["hubs"]
    exported = [r["eui64"] for r in rows]
    assert len(exported) == len(set(exported)) == 58  # no duplicate, none lost
    assert set(exported) == set(listed) - current_on_arrival
    assert {(r["version_before"], r["version_after"]) for r in rows} == {(OLD_HEX, NEW_HEX)}
    by = {r["eui64"]: r["station_id"] for r in rows}
    for h in a:
        assert by[h.spec.eui64] == "bench-a"
    for h in b[:17] + b[19:]:
        assert by[h.spec.eui64] == "bench-b"
    for h in c[:20]:
        want_station = "bench-c" if h.spec.eui64 in c_passed else "bench-a"
        assert by[h.spec.eui64] == want_station, h.spec.eui64

    verified = _station("audit", "verify", "--db", db)
    assert verified.returncode == 0, verified.stdout + verified.stderr

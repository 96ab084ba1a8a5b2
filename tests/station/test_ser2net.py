"""Ports over the network: hubs re-flashed through real ser2net (``rfc2217://host:port``).

Each test starts its own ser2net (tests/ser2netkit.py) exporting simulated hubs'
pseudo-terminals, and drives the real ``station`` command or the real link against it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.errors import PortBusy, RemotePortLost
from drivers.transport.serial import SerialLink
from sim.gecko import demo_gbl
from sim.pty import SimHub
from station.demo import prepare_demo_catalog, write_demo_image
from tests.conftest import NEW
from tests.ser2netkit import Ser2net, needs_ser2net

pytestmark = [
    needs_ser2net,
    # pyserial 3.5's RFC 2217 client names its reader thread the old way.
    pytest.mark.filterwarnings(r"ignore:set(Daemon|Name)\(\) is deprecated:DeprecationWarning"),
]
STATION = [sys.executable, "-m", "station.cli"]


def _station(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=timeout)


def test_an3155_hub_flashed_through_ser2net(
    start_hub: Callable[..., SimHub], new_image_path: Path, tmp_path: Path
) -> None:
    hub = start_hub(1)
    with Ser2net([hub.port], tmp_path / "ser2net") as exporter:
        url = exporter.urls[0]
        done = _station(
            "flash", "--port", url, "--profile", "demo-an3155", "--allow-unsigned", "--json",
            str(new_image_path),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["result"] == "passed" and out["port"] == url
    assert out["version_after"] == f"0x{NEW:08X}" and out["verify_method"] == "device-crc"
    assert hub.ground_truth(24 * 1024)["running"] == NEW


def test_gecko_hub_flashed_through_ser2net(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    hub = start_hub(1, protocol="gecko")
    image = tmp_path / "app.gbl"
    image.write_bytes(demo_gbl(NEW, size=8192))
    with Ser2net([hub.port], tmp_path / "ser2net", parity="none") as exporter:
        done = _station(
            "flash", "--port", exporter.urls[0], "--profile", "demo-gecko", "--allow-unsigned",
            "--json", str(image),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["result"] == "passed" and out["version_after"] == f"0x{NEW:08X}"


def test_a_rig_slot_bound_to_an_rfc2217_url(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    size = 8192
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=size)
    local, remote = start_hub(1, firmware_size=size), start_hub(2, firmware_size=size)
    with Ser2net([remote.port], tmp_path / "ser2net") as exporter:
        rig = tmp_path / "rig.toml"
        rig.write_text(
            'station_id = "bench-net"\n[policy]\njob_retries = 0\n'
            f'[[slot]]\nnumber = 1\nport = "{local.port}"\nprofile = "demo-an3155"\n'
            f'[[slot]]\nnumber = 2\nport = "{exporter.urls[0]}"\nprofile = "demo-an3155"\n'
        )
        db = f"sqlite:///{tmp_path}/station.db"
        run = _station(
            "run", "--rig", str(rig), "--catalog", str(cat.root), "--trust", trust.source,
            "--db", db, "--json",
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    last = {e["slot"]: e["state"] for e in events if e["kind"] == "job-finished"}
    assert last == {1: "passed", 2: "passed"}, run.stdout[-2000:]
    shown = _station("hub", remote.spec.eui64, "--db", db, "--json")
    (job,) = json.loads(shown.stdout)["jobs"]
    assert job["state"] == "passed" and job["port"] == exporter.urls[0]


def test_a_dropped_connection_ends_the_job_interrupted_naming_the_exporter(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    """ser2net killed while the image is being written: the job ends ``interrupted``
    with "remote port lost" and the exporter's host, promptly; never passed, no hang."""
    size = 32 * 1024  # paced: about 3.5 s of writing
    hub = start_hub(1, paced=True, firmware_size=size)
    image = tmp_path / "new.hex"
    write_demo_image(image, NEW, size=size)
    exporter = Ser2net([hub.port], tmp_path / "ser2net").start()
    flash = [
        *STATION, "flash", "--port", exporter.urls[0], "--profile", "demo-an3155",
        "--allow-unsigned", "--json", "--trace", str(image),
    ]  # fmt: skip
    proc = subprocess.Popen(flash, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        trace: list[str] = []
        writes = 0
        for line in proc.stderr:  # the live trace: kill ser2net after a few Write Memory
            trace.append(line)
            writes += "-> 31 CE" in line
            if writes == 10:
                break
        assert writes == 10, "".join(trace[-20:])
        killed = time.monotonic()
        exporter.kill()
        rest = threading.Thread(target=lambda: trace.extend(proc.stderr or []), daemon=True)
        rest.start()
        code = proc.wait(timeout=30)
        took = time.monotonic() - killed
        out = json.loads(proc.stdout.read())
    finally:
        exporter.stop()
        if proc.poll() is None:
            proc.kill()
    assert code == 1
    assert out["result"] == "interrupted" and out["phase"] == "write", out
    assert out["error"] == "RemotePortLost"
    assert out["message"].startswith("remote port lost") and "127.0.0.1" in out["message"]
    assert "127.0.0.1" in out["hint"]
    assert took < 5, f"the job took {took:.1f} s to notice the exporter was gone"
    assert hub.ground_truth(size)["running"] != NEW


def test_timeouts_cost_no_round_trip_and_busy_ports_say_so(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    """pyserial's client re-sent the port settings, waiting for ser2net's answer, on every
    timeout change; each read here names its own timeout."""
    hub = start_hub(1)
    with Ser2net([hub.port], tmp_path / "ser2net") as exporter:
        link = SerialLink(exporter.urls[0])
        link.open()
        try:
            started = time.monotonic()
            for i in range(40):
                link.read(1, 0.001 + i * 1e-4)
            assert time.monotonic() - started < 1.0
            link.reset_input()  # no PURGE-DATA round trip to wait for
            second = SerialLink(exporter.urls[0])
            with pytest.raises(PortBusy, match=r"127\.0\.0\.1"):
                second.open()
        finally:
            link.close()
        exporter.kill()
        with pytest.raises(Exception) as gone:
            SerialLink(exporter.urls[0]).open()
        assert "no port exporter answers at 127.0.0.1" in str(gone.value)
        assert not isinstance(gone.value, RemotePortLost)

"""One version notation where a person reads: dotted ``1.5.0.0``; hex only in JSON and the
DSP file, which machines read."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sim.pty import SimHub
from station.demo import prepare_demo_catalog

SIZE = 8192
STATION = [sys.executable, "-m", "station.cli"]
HEX = re.compile(r"0x010[0-9A-Fa-f]{5}")  # a version; addresses (0x08...) are hex by right


def _station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=120)


def test_people_read_dotted_versions_machines_read_hex(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hub = start_hub(1, firmware_size=SIZE)
    bad = start_hub(2, firmware_size=SIZE, faults="nack=1x100000")  # refuses every write
    rig = 'station_id = "bench-v"\n[policy]\njob_retries = 0\n'
    for h in (hub, bad):
        rig += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    (tmp_path / "rig.toml").write_text(rig)
    (tmp_path / "m.csv").write_text(
        "consignment,eui64,model\n"
        + "".join(f"C1,{h.spec.eui64},demo-an3155\n" for h in (hub, bad))
    )
    db = f"sqlite:///{tmp_path}/station.db"
    common = ["--catalog", str(cat.root), "--trust", trust.source, "--db", db]
    run = _station("run", "--rig", str(tmp_path / "rig.toml"), *common, "--manifest",
                   str(tmp_path / "m.csv"))  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "1.1.0.0 -> 1.5.0.0" in run.stderr, run.stderr
    again = _station("run", "--rig", str(tmp_path / "rig.toml"), *common)
    assert "already running 1.5.0.0" in again.stderr, again.stderr

    people = {
        "run": run.stderr + again.stderr,
        "hub": _station("hub", hub.spec.eui64, "--db", db).stdout,
        "failed hub": _station("hub", bad.spec.eui64, "--db", db).stdout,
        "consignment": _station("report", "consignment", "--batch", "1", "--db", db).stdout,
    }
    assert "1.1.0.0" in people["failed hub"] and "1.5.0.0" in people["hub"]
    for what, text in people.items():
        assert not HEX.search(text), f"{what} shows a hex version:\n{text}"

    # Machines keep the exact hex form.
    doc = json.loads(_station("hub", hub.spec.eui64, "--db", db, "--json").stdout)
    assert doc["running_version"] == "0x01050000"
    dsp = _station("report", "dsp", "--batch", "1", "--format", "csv", "--db", db).stdout
    assert "0x01050000" in dsp


def test_station_flash_says_versions_dotted(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    hub = start_hub(1, firmware_size=SIZE)
    image = tmp_path / "app.hex"
    assert (
        _station("image", "demo", "1.5.0.0", "-o", str(image), "--size", str(SIZE)).returncode == 0
    )
    done = _station("flash", "--port", hub.port, "--profile", "demo-an3155", str(image),
                    "--allow-unsigned")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    assert "1.1.0.0 -> 1.5.0.0" in shown and not HEX.search(shown), shown

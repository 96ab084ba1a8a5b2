"""Rig slots with ``profile = "auto"``: each hub is identified with the candidate profiles in
turn and flashed as the model that recognised it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.errors import ConfigError
from station.demo import SCENARIO, demo_rig
from station.rig import parse_rig


def test_auto_slots_find_every_model_of_the_demo_rig(tmp_path: Path) -> None:
    with demo_rig(tmp_path / "demo", size=16384, paced=False) as demo:
        text = demo.rig.read_text()
        demo.rig.write_text(re.sub(r'profile = "demo-[a-z0-9]+"', 'profile = "auto"', text))
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "station.cli", "run", "--rig", str(demo.rig)),
                *("--trust", str(demo.trust), "--db", demo.db_url, "--json"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ.copy(),  # with the simulated USB bus's setting
        )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    last = {e["slot"]: e for e in events if e["kind"] == "job-finished"}
    # The hub of another model is recognised by no candidate: it fails in identify.
    expect = {h.slot: (str(h.expect), h.model) for h in SCENARIO}
    expect[5] = ("failed", "auto")
    assert {s: (e["state"], e["data"]["profile"]) for s, e in last.items()} == expect
    assert "no candidate profile recognises" in last[5]["data"]["message"]
    assert "product ID 0x415" in last[5]["data"]["message"]
    # Every job was recorded under the profile that recognised the hub.
    started = [e for e in events if e["kind"] == "state" and e["state"] == "detected"]
    assert {e["slot"] for e in started} == {h.slot for h in SCENARIO}


def test_a_hub_no_candidate_recognises_fails_in_identify(tmp_path: Path) -> None:
    from station.controller import Controller
    from station.events import Event
    from station.flash import Policy
    from station.records.store import Store

    # A serial port whose only candidate is a USB model: nothing can recognise the hub.
    rig = parse_rig(
        'station_id = "t"\n[policy]\njob_retries = 0\n[[slot]]\nnumber = 1\nport = "/dev/null"\n'
        'profile = "auto"\ncandidates = ["demo-dfu"]\n'
    )
    seen: list[Event] = []
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.acquire_lease("t")
        batch = store.start_batch(station_id="t", operator="o", rig="r", catalog="c")
        ctl = Controller(
            rig,
            store=store,
            batch_id=batch,
            chooser_for=lambda p: pytest.fail("no hub was recognised: no image is chosen"),
            policy=Policy(),
            publish=seen.append,
        )
        ctl.run()
        (job,) = store.jobs(batch)
    assert (job.state, job.phase, job.profile) == ("failed", "identify", "auto")
    assert "demo-dfu: not for a serial port" in (job.message or "")


def test_rig_candidates_are_checked() -> None:
    head = 'station_id = "t"\n[[slot]]\nnumber = 1\nport = "/dev/ttyUSB0"\n'
    slot = parse_rig(head + 'profile = "auto"\n').slots[0]
    assert "demo-an3155" in slot.candidates and "demo-dfu" not in slot.candidates
    usb = parse_rig(
        head.replace('port = "/dev/ttyUSB0"', 'usb_serial = "X1"') + 'profile = "auto"\n'
    )
    assert "demo-dfu" in usb.slots[0].candidates
    with pytest.raises(ConfigError, match="only"):
        parse_rig(head + 'profile = "demo-an3155"\ncandidates = ["demo-gecko"]\n')
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        parse_rig(head + 'profile = "auto"\ncandidates = ["nope"]\n')

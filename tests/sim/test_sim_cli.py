"""``station sim`` (via ``python -m sim``, the same add_arguments/run) and start_rig."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import serial
from simkit import cmd, open_port, read_n, write_frame

from sim.an3155 import FLASH_BASE
from sim.cli import add_arguments, parse_version, rig_specs, start_rig, stop_hubs
from sim.pty import derive_eui64

GET_ID = bytes.fromhex("79 01 04 62 79")


@pytest.mark.parametrize(
    ("text", "value"),
    [("0x01020304", 0x01020304), ("1.2.3.4", 0x01020304), ("255.0.0.1", 0xFF000001)],
)
def test_versions(text: str, value: int) -> None:
    assert parse_version(text) == value


@pytest.mark.parametrize("text", ["1.2.3", "1.2.3.256", "0x123456789", "v1", "0xZZ", "16909060"])
def test_bad_versions(text: str) -> None:
    with pytest.raises(ValueError):
        parse_version(text)


def test_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--hubs", "3"])
    assert (args.protocol, args.hubs, args.baud, args.firmware, args.start_in) == (
        None,  # station sim: default_protocol() (the plug-in marks it)
        3,
        115200,
        None,
        "bootloader",
    )
    assert (args.faults, args.seed, args.unpaced, args.latency_ms, args.json) == (
        "",
        0,
        False,
        1.0,
        False,
    )


def test_rig_specs() -> None:
    specs = rig_specs(
        3, firmware=7, start_in="app", seed=5, paced=False, latency_s=0.0, protocol="an3155"
    )
    assert [s.slot for s in specs] == [1, 2, 3]
    assert [s.eui64 for s in specs] == [derive_eui64(5, n) for n in (1, 2, 3)]
    assert all(s.firmware == 7 and s.start_in == "app" and not s.paced for s in specs)
    with pytest.raises(ValueError, match="slot 4"):
        rig_specs(3, faults="4:nack=1", protocol="an3155")
    with pytest.raises(ValueError, match="both"):
        rig_specs(3, faults="2:nack=1,2:vanish=1", protocol="an3155")


def sim_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@pytest.fixture
def rig() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_json_lines_then_sigterm(rig: list[subprocess.Popen[str]]) -> None:
    proc = sim_process("--hubs", "2", "--json", "--unpaced", "--firmware", "1.2.3.4", "--seed", "8")
    rig.append(proc)
    assert proc.stdout is not None
    lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    assert [list(line) for line in lines] == [["slot", "port", "profile", "eui64", "firmware"]] * 2
    assert [(x["slot"], x["profile"], x["firmware"]) for x in lines] == [
        (1, "demo-an3155", "0x01020304"),
        (2, "demo-an3155", "0x01020304"),
    ]
    assert [x["eui64"] for x in lines] == [derive_eui64(8, 1), derive_eui64(8, 2)]
    for line in lines:
        port = open_port(line["port"])
        port.write(b"\x7f" + cmd(0x02))
        assert read_n(port, 6) == b"\x79" + GET_ID
        port.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not any(os.path.exists(line["port"]) for line in lines)


def test_human_lines_then_sigint(rig: list[subprocess.Popen[str]]) -> None:
    proc = sim_process("--hubs", "1", "--start-in", "app", "--latency-ms", "2")
    rig.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.split()[:2] == ["slot", "1"]
    assert "/dev/pts/" in line and derive_eui64(0, 1) in line
    assert "firmware blank" in line and line.split()[-1] == "bootloader"  # blank: no app
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hubs", "0"], "--hubs"),
        (["--hubs", "2", "--protocol", "kermit"], "--protocol"),
        (["--hubs", "2", "--firmware", "1.2"], "--firmware"),
        (["--hubs", "2", "--faults", "nack=?"], "nack=?"),
        (["--hubs", "2", "--faults", "5:vanish=1"], "slot 5"),
        (["--hubs", "2", "--latency-ms", "-1"], "--latency-ms"),
        (["--hubs", "2", "--start-in", "dfu"], "--start-in"),
        ([], "--hubs"),
    ],
)
def test_bad_arguments_exit_2(
    rig: list[subprocess.Popen[str]], args: list[str], message: str
) -> None:
    proc = sim_process(*args)
    rig.append(proc)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert message in err


def test_start_rig_in_parallel_with_per_slot_faults() -> None:
    hubs = start_rig(3, paced=False, faults="2:nack=0", seed=1, protocol="an3155")
    try:
        assert [h.spec.slot for h in hubs] == [1, 2, 3]
        assert len({h.port for h in hubs}) == 3
        replies = []
        for hub in hubs:
            port = serial.Serial(hub.port, 115200, timeout=0.05)
            port.write(b"\x7f" + write_frame(FLASH_BASE, bytes(4)))
            replies.append(read_n(port, 4))
            port.close()
        assert replies == [b"\x79" * 4, b"\x79" * 3 + b"\x1f", b"\x79" * 4]
    finally:
        stop_hubs(hubs)
    deadline = time.monotonic() + 3
    while any(h.alive for h in hubs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(h.alive for h in hubs)


def test_human_lines_say_versions_dotted(rig: list[subprocess.Popen[str]]) -> None:
    """A person reads `1.1.0.0`; `--json` keeps the exact hex for scripts."""
    proc = sim_process("--hubs", "1", "--firmware", "1.1.0.0")
    rig.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "firmware 1.1.0.0 " in line and "0x" not in line, line
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0

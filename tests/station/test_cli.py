"""The `station` command as a user or a rig runs it: exit codes, JSON, clear errors.

Bad-input cases use a pseudo-terminal we hold ourselves as the "hub", so the test can prove
that not one byte was sent to it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware_images.build import demo_payload
from sim.pty import SimHub
from station.cli import Exit, main
from station.event_json import SCHEMA_VERSION, data_of, from_json
from station.events import JobFinished

from ..conftest import NEW


@pytest.fixture
def silent_port() -> Iterator[tuple[str, int]]:
    """A pseudo-terminal with nothing behind it: (port path, master fd to inspect)."""
    master, slave = os.openpty()
    yield os.ttyname(slave), master
    os.close(master)
    os.close(slave)


def _bytes_sent(master: int) -> bytes:
    got = b""
    while select.select([master], [], [], 0.05)[0]:
        got += os.read(master, 4096)
    return got


def _flash(*args: str) -> list[str]:
    # The demo HEX images are unsigned: these tests give the explicit override.
    return ["flash", "--profile", "demo-an3155", "--allow-unsigned", *args]


def test_flash_json_pass(
    start_hub: Callable[..., SimHub],
    new_image_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub = start_hub(start_in="app")
    code = main(_flash("--port", hub.port, str(new_image_path), "--json"))
    result = json.loads(capsys.readouterr().out)
    assert code == Exit.PASSED
    assert result["result"] == "passed"
    assert result["version_after"] == f"0x{NEW:08X}"
    assert result["eui64"] == hub.spec.eui64
    assert result["verify_method"] == "device-crc"
    # The fields of job-finished's data (docs/records.md, "Event lines"), and the version.
    assert result.pop("schema_version") == SCHEMA_VERSION
    job = from_json(
        {"schema_version": SCHEMA_VERSION, "kind": "job-finished", "slot": 1, "job_id": 1}
        | {"state": "passed", "data": result, "at": 0}
    )
    assert isinstance(job, JobFinished) and data_of(job) == result


def test_failure_exit_status_and_message(
    start_hub: Callable[..., SimHub],
    new_image_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub = start_hub(faults="nack=2x5")
    code = main(_flash("--port", hub.port, str(new_image_path)))
    out = capsys.readouterr().out
    assert code == Exit.FAILED
    assert "FAILED" in out and "in write" in out
    assert "write block 2 at 0x08000200: NACK after 5 tries" in out


def test_missing_port(new_image_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_flash("--port", "/dev/ttyNOPE9", str(new_image_path)))
    out = capsys.readouterr().out
    assert code == Exit.FAILED
    assert "/dev/ttyNOPE9" in out and "in connect" in out and "does not exist" in out


def test_busy_port(
    start_hub: Callable[..., SimHub],
    new_image_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from drivers.transport.serial import SerialLink

    hub = start_hub()
    with SerialLink(hub.port):
        code = main(_flash("--port", hub.port, str(new_image_path)))
    out = capsys.readouterr().out
    assert code == Exit.FAILED and "in use by another program" in out


def test_hub_that_does_not_answer(
    silent_port: tuple[str, int], new_image_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, master = silent_port
    code = main(_flash("--port", port, str(new_image_path)))
    out = capsys.readouterr().out
    assert code == Exit.FAILED
    assert "in connect" in out and "neither the bootloader sync" in out
    # Only probes went out: sync bytes and the console's version query, never a command.
    assert set(_bytes_sent(master)) <= set(b"\x7fVER?\r\n")


@pytest.mark.parametrize(
    ("make", "extra", "says"),
    [
        (lambda: demo_payload(NEW, size=600 * 1024), ["--address", "0x08000000"], "does not fit"),
        (lambda: demo_payload(NEW, size=4096), ["--address", "0x08000100"], "start at 0x08000000"),
        (
            lambda: b"just some text, not firmware\n" * 100,
            ["--address", "0x08000000"],
            "no application descriptor",
        ),
        (
            lambda: demo_payload(NEW, size=4096)[:-1] + b"\x00",
            ["--address", "0x08000000"],
            "CRC-32 mismatch",
        ),
        (lambda: demo_payload(NEW, size=4096), [], "no load address"),
    ],
    ids=[
        "too-large",
        "wrong-address",
        "not-an-image",
        "descriptor-crc-wrong",
        "raw-without-address",
    ],
)
def test_bad_image_touches_no_hub(
    tmp_path: Path,
    silent_port: tuple[str, int],
    capsys: pytest.CaptureFixture[str],
    make: Callable[[], bytes],
    extra: list[str],
    says: str,
) -> None:
    port, master = silent_port
    path = tmp_path / "image.bin"
    path.write_bytes(make())
    code = main(_flash("--port", port, str(path), *extra))
    err = capsys.readouterr().err
    assert code == Exit.BAD_INPUT
    assert says in err.replace("\n", " ")
    assert _bytes_sent(master) == b""


def test_unknown_profile(new_image_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["flash", "--port", "/dev/null", "--profile", "nope", str(new_image_path)])
    assert code == Exit.BAD_INPUT
    assert "unknown profile 'nope'" in capsys.readouterr().err


def test_sim_command_and_flash_as_separate_programs(tmp_path: Path) -> None:
    """What a user does: `station sim` in one terminal, `station flash` in another."""
    station = [sys.executable, "-m", "station.cli"]
    sim = subprocess.Popen(
        [
            *station,
            "sim",
            "--protocol",
            "an3155",
            "--hubs",
            "2",
            "--unpaced",
            "--json",
            "--firmware",
            "1.1.0.0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        hubs = [json.loads(sim.stdout.readline()) for _ in range(2)]
        assert sorted(h["slot"] for h in hubs) == [1, 2]
        assert all(h["firmware"] == "0x01010000" and h["profile"] == "demo-an3155" for h in hubs)
        # A signed GBCS image, as a release engineer would make it, and its trust store.
        trust = tmp_path / "trust"
        run = [*station, "image", "keygen", "--private", str(tmp_path / "k.pem")]
        subprocess.run([*run, "--public", str(trust / "signer.pem")], check=True)
        built = subprocess.run(
            [
                *station,
                "image",
                "build",
                "--demo-version",
                "1.5.0.0",
                "--size",
                "16384",
                "--sign-key",
                str(tmp_path / "k.pem"),
                "-o",
                str(tmp_path),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        image = next(tmp_path.glob("1234-0401-01050000-*.zigbee"))
        assert str(image) in built.stdout
        done = subprocess.run(
            [
                *station,
                "flash",
                "--port",
                hubs[0]["port"],
                "--profile",
                "demo-an3155",
                "--trust",
                str(trust),
                str(image),
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["version_after"] == "0x01050000"
        assert (result["signature"], result["signer"]) == ("valid", "signer.pem")
        assert result["overrides"] == []
    finally:
        sim.send_signal(signal.SIGINT)
        assert sim.wait(timeout=20) == 0


def test_a_reader_that_goes_away_is_no_traceback() -> None:
    """`station profiles | head -1`: the pipe closes early; no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "station.cli", "profiles"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the station writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err, err

"""The station's own input files (rig, user profile, manifest, signing key, report to check)
are read as every input is: a regular file, size-capped, never a device or a FIFO."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

STATION = [sys.executable, "-m", "station.cli"]


@pytest.fixture(params=["zero", "fifo", "dir"])
def special(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "special.toml"
    if request.param == "zero":
        path.symlink_to("/dev/zero")
    elif request.param == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


def _station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STATION, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rig", "{f}", "--catalog", "."],
        ["flash", "--port", "/dev/null", "--profile", "{f}", "x.hex"],
        ["image", "build", "--demo-version", "1.5.0.0", "--sign-key", "{f}", "-o", "{tmp}/o"],
        ["audit", "verify", "--db", "sqlite:///{tmp}/s.db", "--report", "{f}"],
    ],
    ids=["rig", "profile", "signing-key", "report"],
)
def test_a_special_file_is_one_line_of_error(
    special: Path, tmp_path: Path, argv: list[str]
) -> None:
    if argv[0] == "audit":
        from station.records.store import Store

        Store.open(f"sqlite:///{tmp_path}/s.db").close()
    done = _station(*(a.format(f=special, tmp=tmp_path) for a in argv))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "not a regular file" in lines[0] or "a directory" in lines[0], lines[0]


def test_a_manifest_that_is_a_device_is_refused(tmp_path: Path) -> None:
    from drivers.errors import ConfigError
    from station.records.manifest import Manifest

    (tmp_path / "m.csv").symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        Manifest.load(tmp_path / "m.csv")

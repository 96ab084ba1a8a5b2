"""What an operator used to esptool or stm32flash expects of the ``station`` command:
``--version``, the licence and changes it points to, help that says what each command
accepts and how it exits, ``--baud``, a hex trace, a read-only ``station info``, and errors
that say what was really wrong with what was given.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from station.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"station {version('chub-station')} (chub-station)"


def test_installed_version_is_the_projects() -> None:
    """``--version`` reads the installed metadata: it must be pyproject's, not a stale one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version("chub-station") == project["version"]


def test_licence_is_the_apache_license_the_project_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_bytes()
    # The text as apache.org publishes it (LICENSE-2.0.txt), byte for byte.
    assert hashlib.md5(text).hexdigest() == "3b83ef96387f14655fc854ddc3c6bd57"


def test_changelog_has_the_running_release() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## (\d+\.\d+\.\d+) - (\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    assert releases, "no '## X.Y.Z - YYYY-MM-DD' release headings"
    assert releases[0][0] == version("chub-station")  # newest first
    newest = text.split("\n## ")[1]
    for words in ("lease", "DSP update", "audit", "docs/records.md"):
        assert words in newest

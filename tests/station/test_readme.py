"""README.md's shell blocks run as written, in order, on simulated hubs.

The convention (stated in the README's "Using it"): a block fenced ``sh`` is run, one
command a line (a trailing backslash continues it), from a fresh folder standing for the
checkout, with the venv's ``station`` first on PATH; each command must exit 0 unless its
line ends ``# exits N``. Blocks fenced ``console`` (they need a port an earlier command
printed, a second terminal or a real hub) and ``text`` are shown, not run. ``make demo``
runs as ``station demo`` (what the Makefile's target runs once .venv is set up: the demo
makes the simulated hubs and the records the later blocks read); ``make test`` is this
suite and is not run again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_EXITS = re.compile(r"#\s*exits\s+(\d+)\b")
#: Commands of the records that read a database: after the demo, its own must be named.
_RECORD_COMMANDS = re.compile(r"\bstation (batches|report|audit|hub)\b")


@dataclass(frozen=True)
class Command:
    """One command of a README shell block and the exit status the README documents."""

    text: str
    expect: int
    line: int


def blocks(text: str) -> list[tuple[str, str, int]]:
    """Every fenced block: (language, body, line of its first command line)."""
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1) for m in _FENCE.finditer(text)
    ]


def commands(body: str, first_line: int) -> list[Command]:
    """The commands of a shell block, continuation lines joined, comment lines dropped."""
    found: list[Command] = []
    pending, start = "", first_line
    for n, raw in enumerate(body.splitlines(), first_line):
        line = raw.strip()
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole, pending = (pending + line).strip(), ""
        if not whole or whole.startswith("#"):
            continue
        code = _EXITS.search(whole)
        found.append(Command(whole, int(code.group(1)) if code else 0, start))
    return found


def runnable() -> list[Command]:
    """The README's ``sh`` commands in order, ``make`` targets as the test runs them."""
    out: list[Command] = []
    for lang, body, line in blocks(README.read_text(encoding="utf-8")):
        if lang != "sh":
            continue
        for cmd in commands(body, line):
            if cmd.text.startswith("make test"):
                continue  # the test suite itself
            if cmd.text.startswith("make demo"):
                cmd = Command("station demo", cmd.expect, cmd.line)
            out.append(cmd)
    return out


def test_readme_blocks_follow_the_convention() -> None:
    """Runnable blocks hold no placeholders or background jobs, and every records command
    anywhere in the README names the database it reads (the demo's is not the default)."""
    text = README.read_text(encoding="utf-8")
    langs = {lang for lang, _, _ in blocks(text)}
    assert langs <= {"sh", "console", "text", "toml"}, f"unknown fences: {langs}"
    cmds = runnable()
    assert len(cmds) > 10
    for cmd in cmds:
        where = f"README.md line {cmd.line}: {cmd.text}"
        code = cmd.text.split("#", 1)[0]
        assert not code.rstrip().endswith("&"), f"{where}: a background job outlives the block"
        assert not re.search(r"/dev/(pts|tty)|XXXX|\bCATALOG\b|\bEUI64?\b|<\w+>", code), where
    for lang, body, line in blocks(text):
        if lang not in ("sh", "console"):
            continue
        for cmd in commands(body, line):
            if _RECORD_COMMANDS.search(cmd.text):
                assert "--db " in cmd.text, f"README.md line {cmd.line}: {cmd.text}"


def test_readme_shell_blocks_run_as_written(tmp_path: Path) -> None:
    """Every ``sh`` command exits as documented, in a fresh folder; and what they write
    stays under ``station-data/`` (git ignores it: no key or image lands in a checkout)."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "station").exists():
        pytest.skip(f"no station command next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATION_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    for cmd in runnable():
        done = subprocess.run(
            ["bash", "-c", cmd.text],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == cmd.expect, (
            f"README.md line {cmd.line}: {cmd.text}\n"
            f"exited {done.returncode}, the README says {cmd.expect}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    assert sorted(os.listdir(tmp_path)) == ["station-data"]
    assert (tmp_path / ".gitignore").exists() is False  # the folder stands for a checkout
    ignored = (README.parent / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "station-data/" in ignored

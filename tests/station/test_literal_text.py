"""Text from outside is shown as it is, on every command: never read as Rich markup.

Operator names, station ids, arguments, file names, hub answers and messages kept in the
database reach the terminal through rich. ``[/]`` must not crash a command (for ever, once
it is in the database), ``[bold]boss`` must not turn into a bold "boss", and control
characters are shown as escapes (``\\x1b``) instead of reaching the terminal.
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from sim.pty import SimHub
from station.cli import main
from station.demo import prepare_demo_catalog
from station.outcome import FlashOutcome, Result
from station.render import EventBoard, outcome_line, summary_table

from ..eventkit import event

SIZE = 8192
#: Markup that crashes rich, markup that hides itself, an emoji code, a terminal escape, a
#: line break that would forge a line of its own.
HOSTILE = ["[/]", "[bold]boss", ":thumbs_up: x", "\x1b[2Jwipe", "two\nlines"]


def shown(text: str) -> str:
    """How external text must appear: as is, control characters as escapes."""
    return text.replace("\x1b", "\\x1b").replace("\n", "\\n")


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name", HOSTILE)
def test_operator_and_station_id_are_shown_literally(
    name: str,
    start_hub: Callable[..., SimHub],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    hub = start_hub(1, firmware_size=SIZE)
    # A rig refuses control characters in its station id; markup is fine.
    station_id = "[red]bench[/] " + "".join(c for c in name if c.isprintable())
    rig = tmp_path / "rig.toml"
    rig.write_text(
        f"station_id = {json.dumps(station_id)}\n"
        f'[[slot]]\nnumber = 1\nport = "{hub.port}"\nprofile = "demo-an3155"\n'
    )
    db = f"sqlite:///{tmp_path}/station.db"
    run = ["run", "--rig", str(rig), "--catalog", str(cat.root), "--trust", trust.source]
    assert main([*run, "--db", db, "--operator", name]) == 0
    capsys.readouterr()

    assert main(["batches", "--db", db]) == 0
    out = capsys.readouterr().out
    assert shown(name) in out and station_id in out

    assert main(["report", "summary", "--batch", "latest", "--db", db]) == 0
    out = capsys.readouterr().out
    assert f"(station {station_id}, operator {shown(name)})" in out

    assert main(["report", "consignment", "--batch", "latest", "--db", db]) == 0
    assert f"(station {station_id})" in capsys.readouterr().out

    # An argument in an error line: one line, shown as given.
    assert main(["hub", name, "--db", db]) == 2
    err = capsys.readouterr().err
    assert _one_error_line(err).startswith(f"error: no hub {shown(name)} in ")
    assert "\x1b" not in err


@pytest.mark.parametrize("name", HOSTILE)
def test_error_line_shows_exception_text_literally(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{name}.toml"  # "[/]" makes a folder "[": still in the message
    assert main(["run", "--rig", str(path), "--catalog", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    line = _one_error_line(err)
    assert line.startswith(f"error: cannot read rig file {shown(str(path))}: ")
    assert "\x1b" not in err


def test_station_hub_with_markup_is_an_error_line_not_a_traceback(tmp_path: Path) -> None:
    """As a shell runs it: exit 2, one line, no traceback."""
    cat, _ = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    (tmp_path / "rig.toml").write_text(
        'station_id = "b"\n[[slot]]\nnumber = 1\nport = "/dev/no-hub"\nprofile = "demo-an3155"\n'
    )
    db = f"sqlite:///{tmp_path}/station.db"
    station = [sys.executable, "-m", "station.cli"]
    run = [*station, "run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(cat.root)]
    subprocess.run([*run, "--db", db], capture_output=True, timeout=120, check=False)
    done = subprocess.run(
        [*station, "hub", "[/]", "--db", db], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert _one_error_line(done.stderr) == f"error: no hub [/] in sqlite:///{tmp_path}/station.db"


def _failed(text: str) -> FlashOutcome:
    return FlashOutcome(
        port=f"/dev/{text}",
        profile="demo-an3155",
        result=Result.FAILED,
        eui64="00-DB-12-00-00-00-00-01",
        phase="write",
        message=f"hub said {text}",
        hint=f"ask {text}",
    )


def _printed(*renderables: object) -> str:
    """What a default rich console (markup on) prints for these."""
    buf = io.StringIO()
    console = Console(file=buf, width=300, soft_wrap=True)
    for r in renderables:
        console.print(r)
    return buf.getvalue()


@pytest.mark.parametrize("text", HOSTILE)
def test_result_lines_and_tables_show_hub_text_literally(text: str) -> None:
    out = _failed(text)
    printed = _printed(outcome_line(out), summary_table([(1, out)]))
    assert f"/dev/{shown(text)}" in printed
    assert f"hub said {shown(text)}" in printed and f"ask {shown(text)}" in printed
    assert "\x1b" not in printed
    assert printed.startswith("FAILED ")  # still styled (plain here: no terminal)


@pytest.mark.parametrize("text", HOSTILE)
def test_run_sink_and_live_board_show_event_text_literally(text: str) -> None:
    from station.run import _Sink

    buf = io.StringIO()
    console = Console(file=buf, width=300, force_terminal=True, color_system=None)
    sink = _Sink(False, console)
    finished = event(
        "job-finished",
        slot=1,
        job_id=1,
        state="failed",
        data={"message": f"hub said {text}", "eui64": text, "bytes_written": 0},
    )
    with sink.board:
        sink(event("note", slot=1, data={"note": f"note {text}"}))
        sink(finished)
    printed = buf.getvalue()
    said = f"slot 1: failed {shown(text)} (version before: unknown): hub said {shown(text)}"
    assert said in printed
    assert "\x1b[2J" not in printed


@pytest.mark.parametrize("text", HOSTILE)
def test_event_board_note_is_literal(text: str) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=300, force_terminal=True, color_system=None)
    with EventBoard(console) as board:
        board(event("note", slot=1, data={"note": f"note {text}"}))
    assert f"note {shown(text)}" in buf.getvalue()
    assert "\x1b[2J" not in buf.getvalue()


@pytest.mark.parametrize("name", HOSTILE)
def test_image_commands_show_file_names_literally(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=SIZE)
    release = next(iter(cat.releases.values()))[-1]
    copy = tmp_path / f"x{name}.zigbee".replace("/", "_")
    copy.write_bytes(cat.path_of(release).read_bytes())
    assert main(["image", "verify", "--trust", trust.source, str(copy)]) == 0
    assert f"OK {shown(str(copy))}" in capsys.readouterr().out
    assert main(["image", "inspect", "--trust", trust.source, str(copy)]) == 0
    out = capsys.readouterr().out
    assert shown(str(copy)) in out and "\x1b" not in out


def test_broken_user_profile_is_reported_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "[bold]x.toml").write_text('name = "[/]"\n')
    monkeypatch.setenv("STATION_PROFILES", str(tmp_path))
    assert main(["profiles"]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path}/[bold]x.toml" in err


STATION = Path(__file__).parents[2] / "station"
#: A Rich markup tag: a closing tag, or an opening one naming a style.
_TAG = re.compile(
    r"\[/[a-z ]*\]|\[(bold|dim|italic|underline|reverse|red|green|yellow|blue|magenta|cyan)"
    r"\b[a-z ]*\]"
)


def _strings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_output_is_styled_with_text_not_markup() -> None:
    """Consoles come from station.render.console (markup off, so a markup string would
    print its brackets) and styles are Text: no module makes its own console or writes
    markup."""
    consoles, markup = [], []
    for path in sorted(STATION.rglob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(STATION.parent)
        if path.name != "render.py":
            consoles += [
                f"{where}:{n.lineno}"
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and (getattr(n.func, "id", None) or getattr(n.func, "attr", None)) == "Console"
            ]
        markup += [f"{where}:{n.lineno}" for n in _strings(tree) if _TAG.search(n.value)]
    assert consoles == []
    assert markup == []

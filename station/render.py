"""Console output of the command line: progress per slot, result lines, and the one rule
for showing text.

**Text from outside is never markup.** Arguments, operator names, station ids, hub answers,
messages kept in the database, file names and exception messages are shown exactly as they
are: ``[bold]boss`` shows as ``[bold]boss`` (not a bold "boss"), ``[/]`` cannot crash a
command, ``:thumbs_up:`` stays words, and control characters show as escapes (``\\x1b``) so
they cannot move the cursor or recolour the terminal. Three habits keep it so:

- Print through a console from :func:`console` (never ``rich.console.Console(...)``): it
  has markup, emoji codes and highlighting off and escapes control characters (other than
  newline) in every plain ``str`` it renders, table cells included.
- Style only with :class:`rich.text.Text`, never with markup strings: :func:`styled` builds
  a line from our own words with a style, ``("FAILED", "bold red")``, and external text
  given as a plain ``str``, which :func:`literal` keeps on one line and shows as is.
  :func:`error_line` is the ``error: ...`` line.
- Textual (``station.tui``) reads markup in a plain ``str`` too: give its widgets ``Text``
  (:func:`styled`, or ``Text(literal(x))``), or create them with ``markup=False``, and
  notify with ``markup=False``.

Thread-safe: the controller's slot threads all report through one :class:`ProgressBoard`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from drivers.types import Phase, ProgressFn
from firmware_images.descriptor import dotted_text, dotted_version, format_version
from station.events import (
    Event,
    HubDetected,
    HubIdentified,
    JobFinished,
    JobPlanned,
    JobProgress,
    JobState,
    JobStateChanged,
    Note,
    Retry,
    SlotEmpty,
    SlotFault,
    SlotPowered,
)
from station.flash import FlashOutcome, Result
from station.latency import is_latency_note, latency_of

# -- showing external text -------------------------------------------------------------------

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Bidirectional overrides and isolates: they reorder what the eye reads ("Trojan source").
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _hidden(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0 or char in _BIDI or char in "\u2028\u2029"


def shown_version(version: int | str | None) -> str:
    """A version (an event's integer, or as recorded: ``0x01050000``) as people read it
    everywhere but JSON and the labelled detail views: ``1.5.0.0``; ``?`` when unknown,
    other text as it is."""
    if isinstance(version, int):
        return dotted_version(version)
    return literal(dotted_text(version))


def hex_version(version: int | None) -> str:
    """A version as recorded and in JSON (``0x01050000``), for the labelled detail views;
    ``?`` when unknown."""
    return "?" if version is None else format_version(version)


def station_command() -> str:
    """How a hint line names the ``station`` command: as the user ran it, so that the hint
    works as written from the folder they are in. ``station`` when that is on the PATH and
    is this program; else the path it was run by (``.venv/bin/station`` after ``make
    demo``); ``station`` when run another way (``python -m station.cli``)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name != "station":
        return "station"
    found = shutil.which("station")
    if found and Path(found).resolve() == Path(argv0).resolve():
        return "station"
    return shlex.quote(argv0)


def literal(value: object, *, keep: str = "") -> str:
    """``value`` as text to show as is: control characters (newlines too, so one field
    stays on one line) and bidirectional overrides become escapes such as ``\\x1b``;
    characters in ``keep`` are left alone. Markup is not touched: show the result as a
    ``Text`` or on a :func:`console`, where markup is off."""
    text = str(value)
    if text.isprintable():  # the common case, and fast
        return text
    return "".join(_escape(c) if _hidden(c) and c not in keep else c for c in text)


Part = str | tuple[str, str] | Text


def styled(*parts: Part) -> Text:
    """A line of output: ``(words, style)`` for our own words (kept as they are, newlines
    included), a plain ``str`` for external text (shown as is, on one line: see
    :func:`literal`), or a ``Text`` already built."""
    line = Text()
    for part in parts:
        if isinstance(part, Text):
            line.append_text(part)
        elif isinstance(part, tuple):
            line.append(part[0], style=part[1])
        else:
            line.append(literal(part))
    return line


def error_line(message: object) -> Text:
    """The ``error: ...`` line of a command that refused its input."""
    return styled(("error:", "bold red"), " ", str(message))


class _LiteralConsole(Console):
    """A console that shows every ``str`` as is (see the module docstring)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False)
        return super().render_str(literal(text, keep="\n"), **kwargs)


def console(
    *, stderr: bool = False, width: int | None = None, file: IO[str] | None = None
) -> Console:
    """A console for the station's output: no markup, no emoji codes, no highlighting,
    control characters escaped; soft-wrapped, so long lines stay whole in logs."""
    return _LiteralConsole(
        stderr=stderr,
        file=file,
        width=width,
        soft_wrap=True,
        markup=False,
        emoji=False,
        highlight=False,
    )


# -- progress and results --------------------------------------------------------------------

_STYLE = {
    Result.PASSED: "bold green",
    Result.FAILED: "bold red",
    Result.REFUSED: "bold yellow",
    Result.SKIPPED: "cyan",
    Result.INTERRUPTED: "bold magenta",
}


def _slot_progress(console: Console, enabled: bool, label: str, phase_width: int) -> Progress:
    """One line per slot: label, phase, bar, bytes, rate, time left, last note.

    The fields are shown as they are (no markup): callers pass them through :func:`literal`.
    """
    return Progress(
        TextColumn(label, markup=False),
        TextColumn(f"{{task.fields[phase]:<{phase_width}}}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}", markup=False),
        console=console,
        disable=not enabled,
    )


class ProgressBoard:
    """One progress line per slot, updated from any thread."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._progress = _slot_progress(console, enabled, "{task.fields[slot]:>8}", 8)

    def __enter__(self) -> ProgressBoard:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def slot(self, label: str) -> ProgressFn:
        """A progress callback for one slot."""
        with self._lock:
            task: TaskID = self._progress.add_task(
                "", total=None, slot=literal(label), phase="connect", note=""
            )
            self._tasks[label] = task
        phase_seen: list[Phase] = []

        def report(phase: Phase, done: int, total: int, note: str) -> None:
            with self._lock:
                if not phase_seen or phase_seen[-1] != phase:
                    phase_seen.append(phase)
                    self._progress.reset(task, total=None)
                    self._progress.update(task, note="")
                if note:
                    self._progress.update(task, note=literal(note)[:60])
                if total:
                    self._progress.update(task, completed=done, total=total, phase=str(phase))
                else:
                    self._progress.update(task, phase=str(phase))

        return report

    def finish(self, label: str, out: FlashOutcome) -> None:
        """Show a slot's result in its progress line once its job has ended."""
        with self._lock:
            task = self._tasks.get(label)
            if task is not None:
                self._progress.update(
                    task,
                    completed=out.bytes_written,
                    total=max(out.bytes_written, 1),
                    phase=str(out.result),
                    note=shown_version(out.version_after)
                    if out.version_after
                    else literal(out.phase),
                )


class EventBoard:
    """The live per-slot board of ``station run`` on a terminal, driven by controller events.

    One line per slot: its job's state, a progress bar with bytes, rate and time left in the
    current phase, and the last note; a job's end leaves its result and reason there.
    """

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self._tasks: dict[int, TaskID] = {}
        self._slow: dict[int, str] = {}  # slots whose adapter latency is high: the mark
        self._progress = _slot_progress(console, enabled, "slot {task.fields[slot]:>3}", 11)

    def __enter__(self) -> EventBoard:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _task(self, slot: int) -> TaskID:
        if slot not in self._tasks:
            self._tasks[slot] = self._progress.add_task(
                "", total=None, slot=slot, phase="waiting", note=""
            )
        return self._tasks[slot]

    def __call__(self, event: Event) -> None:
        """Show one event (called from the recorder's thread only)."""
        if not self.enabled or event.slot is None:
            return
        task = self._task(event.slot)
        slow = self._slow.get(event.slot, "")
        match event:
            case HubDetected() | HubIdentified() | JobPlanned() | JobStateChanged():
                if isinstance(event, HubDetected):
                    slow = self._slow.pop(event.slot, "")  # each job's port says again
                self._progress.reset(task, total=None)
                self._progress.update(task, phase=literal(event.state), note=slow)
            case JobProgress():
                self._progress.update(task, completed=event.done, total=event.total)
            case Note():
                note = event.note
                if is_latency_note(note):
                    note = self._slow[event.slot] = f"⚠ adapter latency {latency_of(note)}"
                self._progress.update(task, note=literal(note)[:60])
            case JobFinished():
                after = event.version_after
                note = (
                    f"-> {shown_version(after)}"
                    if event.state is JobState.PASSED and after is not None
                    else event.message
                )
                self._progress.update(
                    task,
                    phase=literal(event.state),
                    note=(f"{slow}; " if slow else "") + literal(note)[:60],
                    completed=event.bytes_written,
                    total=max(event.bytes_written, 1),
                )
            case SlotPowered(action=action, error=error):
                said = f"power {action} FAILED" if error else f"power {action}"
                swap = ": swap the hub" if action == "off" and not error else ""
                self._progress.update(task, note=literal(said + swap))
            case SlotEmpty() | SlotFault() | Retry():
                self._progress.update(task, note=event.kind)


def outcome_line(out: FlashOutcome) -> Text:
    """How a hub's job ended, as a styled line (two with a hint)."""
    head = styled((f"{out.result.upper():<7}", _STYLE[out.result]), " ", out.port)
    if out.eui64:
        head.append_text(styled(" EUI-64 ", out.eui64))
    if out.result is Result.PASSED:
        return styled(
            head,
            f" HW {out.hw_version}: {shown_version(out.version_before or 'blank')} -> "
            f"{shown_version(out.version_after)}, "
            f"verified by {out.verify_method} ({out.verify_detail}){pages_text(out)}, "
            f"{out.seconds:.1f} s",
        )
    line = styled(head, *((" in ", out.phase) if out.phase else ()), ": ", out.message)
    if out.hint:
        line.append_text(styled(("\n        what to do: ", ""), out.hint))
    return line


def pages_text(out: FlashOutcome) -> str:
    """``, 3 pages written, 125 already held the image`` (empty where not by pages)."""
    if out.pages_written is None or out.pages_skipped is None:
        return ""
    return f", {out.pages_written} pages written, {out.pages_skipped} already held the image"


def summary_table(rows: Sequence[tuple[int, FlashOutcome]]) -> Table:
    """The per-hub summary of a multi-slot run."""
    table = Table(title="Re-flash summary", title_justify="left")
    for col in (
        "slot",
        "port",
        "EUI-64",
        "HW",
        "before",
        "n-k",
        "after",
        "signature",
        "verify",
        "result",
        "time",
    ):
        table.add_column(col)
    for slot, out in rows:
        failure = () if out.result is Result.PASSED else (f" ({out.phase}: {out.message})",)
        table.add_row(
            *(
                Text(literal(cell))
                for cell in (
                    str(slot),
                    out.port,
                    out.eui64 or "?",
                    "?" if out.hw_version is None else str(out.hw_version),
                    shown_version(out.version_before or "blank"),
                    "?" if out.behind is None else f"n-{out.behind}",
                    shown_version(out.version_after or "-"),
                    out.signature or "-",
                    out.verify_method or "-",
                )
            ),
            styled((str(out.result), _STYLE[out.result]), *failure),
            f"{out.seconds:.1f} s",
        )
    return table

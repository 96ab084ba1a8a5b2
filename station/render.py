"""Terminal output for headless runs: progress per slot and result lines (rich, stderr).

Thread-safe: the controller's slot threads all report through one :class:`ProgressBoard`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

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

from drivers.types import Phase, ProgressFn
from station.events import Event
from station.flash import FlashOutcome, Result

_STYLE = {
    Result.PASSED: "bold green",
    Result.FAILED: "bold red",
    Result.REFUSED: "bold yellow",
    Result.SKIPPED: "cyan",
    Result.INTERRUPTED: "bold magenta",
}


def _slot_progress(console: Console, enabled: bool, label: str, phase_width: int) -> Progress:
    """One line per slot: label, phase, bar, bytes, rate, time left, last note."""
    return Progress(
        TextColumn(label),
        TextColumn(f"{{task.fields[phase]:<{phase_width}}}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
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
                "", total=None, slot=label, phase="connect", note=""
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
                    self._progress.update(task, note=note[:60])
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
                    note=out.version_after or out.phase or "",
                )


class EventBoard:
    """The live per-slot board of ``station run`` on a terminal, driven by controller events.

    One line per slot: its job's state, a progress bar with bytes, rate and time left in the
    current phase, and the last note; a job's end leaves its result and reason there.
    """

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled
        self._tasks: dict[int, TaskID] = {}
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
        data = event.data
        if event.kind == "state":
            self._progress.reset(task, total=None)
            self._progress.update(task, phase=event.state, note="")
        elif event.kind == "progress":
            self._progress.update(task, completed=data["done"], total=data["total"])
        elif event.kind == "note":
            self._progress.update(task, note=str(data.get("note", ""))[:60])
        elif event.kind == "job-finished":
            after = data.get("version_after")
            note = f"-> {after}" if event.state == "passed" and after else data.get("message", "")
            written = int(data.get("bytes_written") or 0)
            self._progress.update(
                task,
                phase=event.state,
                note=str(note)[:60],
                completed=written,
                total=max(written, 1),
            )
        elif event.kind in ("slot-empty", "slot-fault", "retry"):
            self._progress.update(task, note=event.kind)


def outcome_line(out: FlashOutcome) -> str:
    """One rich-markup line saying how a hub's job ended."""
    style = _STYLE[out.result]
    head = f"[{style}]{out.result.upper():<7}[/] {out.port}"
    who = f" EUI-64 {out.eui64}" if out.eui64 else ""
    if out.result is Result.PASSED:
        return (
            f"{head}{who} HW {out.hw_version}: {out.version_before or 'blank'} -> "
            f"{out.version_after}, verified by {out.verify_method} ({out.verify_detail}), "
            f"{out.seconds:.1f} s"
        )
    text = f"{head}{who}"
    if out.phase:
        text += f" in {out.phase}"
    text += f": {out.message}"
    if out.hint:
        text += f"\n        what to do: {out.hint}"
    return text


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
        table.add_row(
            str(slot),
            out.port,
            out.eui64 or "?",
            "?" if out.hw_version is None else str(out.hw_version),
            out.version_before or "blank",
            "?" if out.behind is None else f"n-{out.behind}",
            out.version_after or "-",
            out.signature or "-",
            out.verify_method or "-",
            f"[{_STYLE[out.result]}]{out.result}[/]"
            + (f" ({out.phase}: {out.message})" if out.result is not Result.PASSED else ""),
            f"{out.seconds:.1f} s",
        )
    return table

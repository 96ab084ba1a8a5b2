"""The live board and console lines of ``station run`` for a story of typed events.

The expected text was taken from the board and lines as they were before events were
typed (the same story fed as ``Event(kind, ..., data)`` to that code gave the same text).
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from station.render import EventBoard
from station.run import event_line

from ..eventkit import event

EUI = "00-DB-12-00-00-00-00-01"
DONE: dict[str, Any] = {
    "eui64": EUI,
    "version_before": "0x01010000",
    "version_after": "0x01050000",
    "message": "1.1.0.0 -> 1.5.0.0, verified by crc",
    "bytes_written": 8192,
    "profile": "demo-an3155",
    "port": "/dev/pts/1",
    "result": "passed",
}
FAIL: dict[str, Any] = {
    **DONE,
    "version_after": None,
    "phase": "write",
    "message": "write block 3: NACK",
    "bytes_written": 1024,
    "port": "/dev/pts/2",
    "result": "failed",
}
IDENTIFIED = {"eui64": EUI, "hw_version": 2, "version_before": "0x01010000", "found_in": "app"}
STORY = [
    event("batch-started", data={"batch": 1, "station": "s", "slots": 4}),
    event("state", 1, 1, "detected", {"port": "/dev/pts/1"}),
    event("state", 1, 1, "identified", IDENTIFIED),
    event("state", 1, 1, "planned", {"target_version": "0x01050000"}),
    event("state", 1, 1, "writing", {}),
    event("progress", 1, 1, data={"phase": "write", "done": 4096, "total": 8192}),
    event("note", 1, 1, data={"note": "block 3 retried"}),
    event("job-finished", 1, 1, "passed", DONE),
    event("state", 2, 2, "detected", {"port": "/dev/pts/2"}),
    event("job-finished", 2, 2, "failed", FAIL),
    event("retry", 2, data={"try": 2, "why": "write block 3: NACK"}),
    event("slot-fault", 2, data={"failed_hubs": 3, "last": "NACK"}),
    event("slot-empty", 3, data={"at": "usb-path:1-1.3"}),
    event("slot-error", 4, data={"error": "RuntimeError('x')"}),
    event("record-error", 4, 9, data={"error": "database locked"}),
    event("job-finished", 2, 3, "failed", {**FAIL, "version_before": None}),
]


def test_console_lines_say_what_they_said() -> None:
    lines = [line for e in STORY if (line := event_line(e)) is not None]
    assert lines == [
        f"slot 1: passed {EUI} 1.1.0.0 -> 1.5.0.0, verified by crc",
        f"slot 2: failed {EUI} (version before: 1.1.0.0): write block 3: NACK",
        "slot 2: trying the same hub again (try 2), as the previous try failed: write block 3: "
        "NACK",
        "slot 2: flagged: 3 different hubs failed here in a row (last: NACK); check the slot's "
        "cable and fixture",
        "slot 3: no hub at usb-path:1-1.3",
        "slot 4: internal error (a bug; please report it): RuntimeError('x')",
        "slot 4: could not record the job in the database: database locked",
        f"slot 2: failed {EUI} (version before: unknown): write block 3: NACK",
    ]


def test_the_board_shows_each_slot_as_it_did() -> None:
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system=None)
    board = EventBoard(console, enabled=True)
    seen = []
    for e in STORY:
        board(e)
        if e.slot == 1 and e.kind in ("state", "progress", "note"):
            task = board._progress.tasks[0]
            seen.append((task.fields["phase"], task.fields["note"], task.completed, task.total))
    assert seen == [
        ("detected", "", 0, None),
        ("identified", "", 0, None),
        ("planned", "", 0, None),
        ("writing", "", 0, None),
        ("writing", "", 4096, 8192),
        ("writing", "block 3 retried", 4096, 8192),
    ]
    shown = [(t.fields, t.completed, t.total) for t in board._progress.tasks]
    assert shown == [
        ({"slot": 1, "phase": "passed", "note": "-> 1.5.0.0"}, 8192, 8192),
        ({"slot": 2, "phase": "failed", "note": "write block 3: NACK"}, 1024, 1024),
        ({"slot": 3, "phase": "waiting", "note": "slot-empty"}, 0, None),
        ({"slot": 4, "phase": "waiting", "note": ""}, 0, None),
    ]

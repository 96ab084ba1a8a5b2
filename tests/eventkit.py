"""Typed events from compact specs, for tests that feed the TUI, the live board and the
metrics a story: ``event("job-finished", 1, 5, "failed", {"eui64": EUI}, at=2)`` is the
event that JSON line stands for, fields it leaves out filled with their empty values.

It goes through :func:`station.event_json.from_json`, so the specs are checked against the
schema as they are built.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields
from types import NoneType, UnionType
from typing import Any

from station.event_json import SCHEMA_VERSION, data_of, from_json
from station.events import EVENT_TYPES, Event, JobStateChanged
from station.outcome import Result

_EMPTY: dict[Any, Any] = {int: 0, str: "", float: 0.0}


def _class(kind: str, state: str | None) -> type[Event]:
    for cls in EVENT_TYPES:
        if cls.kind != kind:
            continue
        fixed = next((f for f in fields(cls) if f.name == "state" and not f.init), None)
        if kind != "state" or (fixed is not None and str(fixed.default) == state):
            return cls
    return JobStateChanged


def event(
    kind: str,
    slot: int | None = None,
    job_id: int | None = None,
    state: str | None = None,
    data: dict[str, Any] | None = None,
    *,
    at: float = 0.0,
) -> Event:
    """The typed event of this line; required data fields left out are empty."""
    cls = _class(kind, state)
    hints = typing.get_type_hints(cls)
    full = dict(data or {})
    for f in fields(cls):
        name = str(f.metadata.get("json", f.name))
        if f.name in ("slot", "job_id", "state", "at") or name in full:
            continue
        if f.default is not MISSING or f.default_factory is not MISSING:
            continue
        hint = hints[f.name]
        if isinstance(hint, UnionType) and NoneType in typing.get_args(hint):
            full[name] = None
        elif typing.get_origin(hint) is tuple:
            full[name] = []
        elif typing.get_origin(hint) is dict:
            full[name] = {}
        elif f.name == "result":
            full[name] = state if state in set(Result) else "failed"
        else:
            full[name] = _EMPTY[hint]
    line: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": kind, "at": at, "data": full}
    for key, value in (("slot", slot), ("job_id", job_id), ("state", state)):
        if value is not None:
            line[key] = value
    return from_json(line)


def compact(ev: Event) -> dict[str, Any]:
    """The event's data without its empty fields (as a test's spec gave it)."""
    return {k: v for k, v in data_of(ev).items() if v not in (None, "", [], {}, 0)}

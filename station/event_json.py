"""The JSON-lines form of the controller's events (``--json`` of ``station run`` and
``station demo``), derived from the event classes of :mod:`station.events`.

One object per line: ``schema_version``, ``kind``, then ``slot``, ``job_id`` and ``state``
when the event has them, ``data`` (the event's own fields; left out when it has none) and
``at`` (Unix time). A field's JSON name is its own unless its metadata says (``"json"``);
versions are written ``"0x01050000"`` and errors by their class name. docs/records.md has
the table (:func:`schema_table` writes it, and a test keeps the two equal).

Rigs read these lines: a new kind or a new field keeps :data:`SCHEMA_VERSION` (readers
ignore what they do not know); renaming, removing or changing the meaning of one raises it.
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, Field, fields
from enum import Enum
from types import NoneType, UnionType
from typing import Any, Final

from station.events import CHAIN, EVENT_TYPES, PLAIN_STATES, Event, JobStateChanged, error_class

#: The version of the JSON-lines format; every line carries it as ``schema_version``.
SCHEMA_VERSION: Final = 1

_ENVELOPE: Final = ("slot", "job_id", "state", "at")


class EventFormatError(ValueError):
    """A JSON line that is not an event of this schema (the message says what is wrong)."""


def _json_name(f: Field[Any]) -> str:
    return str(f.metadata.get("json", f.name))


def _payload(cls: type[Event]) -> list[Field[Any]]:
    return [f for f in fields(cls) if f.name not in _ENVELOPE]


_HINTS: Final[dict[type[Event], dict[str, Any]]] = {
    cls: typing.get_type_hints(cls) for cls in EVENT_TYPES
}


def _encode_value(f: Field[Any], value: Any) -> Any:
    codec = f.metadata.get("codec")
    if codec in ("hex", "hex-or-empty"):
        if value is None:
            return "" if codec == "hex-or-empty" else None
        return f"0x{value:08X}"
    if codec == "error":
        return None if value is None else value.__name__
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def data_of(event: Event) -> dict[str, Any]:
    """The event's own fields as JSON (``data`` of its line; a state's recorded detail)."""
    return {_json_name(f): _encode_value(f, getattr(event, f.name)) for f in _payload(type(event))}


def to_json(event: Event) -> dict[str, Any]:
    """The event as one JSON object (see the module docstring)."""
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": event.kind}
    for name in ("slot", "job_id", "state"):
        value = getattr(event, name, None)
        if value is not None:
            out[name] = str(value) if isinstance(value, Enum) else value
    data = data_of(event)
    if data:
        out["data"] = data
    out["at"] = event.at
    return out


def to_line(event: Event) -> str:
    """The event as one JSON line (no newline)."""
    return json.dumps(to_json(event))


_KINDS: Final[dict[str, type[Event]]] = {
    cls.kind: cls for cls in EVENT_TYPES if cls.kind != "state"
}
_STATES: Final[dict[str, type[Event]]] = {
    str(f.default): cls
    for cls in EVENT_TYPES
    if cls.kind == "state"
    for f in fields(cls)
    if f.name == "state" and not f.init
}


def from_json(obj: object) -> Event:
    """The event a JSON object stands for; fields it does not know are ignored.

    Raises:
        EventFormatError: not an event of this schema (a missing field, a wrong type).
    """
    if not isinstance(obj, dict):
        raise EventFormatError("an event is a JSON object")
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EventFormatError(f"schema_version {version!r}: this station reads {SCHEMA_VERSION}")
    kind = obj.get("kind")
    if kind == "state":
        cls = _STATES.get(str(obj.get("state")), JobStateChanged)
    elif isinstance(kind, str) and kind in _KINDS:
        cls = _KINDS[kind]
    else:
        raise EventFormatError(f"unknown event kind {kind!r}")
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise EventFormatError(f"{kind}: data is not an object")
    hints = _HINTS[cls]
    args: dict[str, Any] = {}
    for f in fields(cls):
        if not f.init:
            continue
        source = obj if f.name in _ENVELOPE else data
        name = _json_name(f)
        if name not in source:
            if f.default is not MISSING or f.default_factory is not MISSING:
                continue  # a field added since the line was written, or a place left out
            raise EventFormatError(f"{kind}: {name} is missing")
        try:
            args[f.name] = _decode_value(f, hints[f.name], source[name])
        except (TypeError, ValueError) as exc:
            raise EventFormatError(f"{kind}: {name}: {exc}") from None
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise EventFormatError(f"{kind}: {exc}") from None


def from_line(line: str) -> Event:
    """The event of one JSON line.

    Raises:
        EventFormatError: not JSON, or not an event of this schema.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventFormatError(f"not JSON: {exc}") from None
    return from_json(obj)


def _decode_value(f: Field[Any], hint: Any, value: Any) -> Any:
    codec = f.metadata.get("codec")
    if codec in ("hex", "hex-or-empty"):
        if value is None or (value == "" and codec == "hex-or-empty"):
            return None
        if not isinstance(value, str) or not value.startswith("0x") or len(value) != 10:
            raise ValueError(f"{value!r} is not a version such as '0x01050000'")
        return int(value, 16)
    if codec == "error":
        if value is None:
            return None
        if not isinstance(value, str) or not value.isidentifier():
            raise ValueError(f"{value!r} is not an error's name")
        return error_class(value)
    return _check(hint, value)


def _check(hint: Any, value: Any) -> Any:
    """``value`` as type ``hint`` (an enum from its text, a tuple from a list), or raise."""
    if isinstance(hint, UnionType):
        options = typing.get_args(hint)
        if value is None and NoneType in options:
            return None
        (hint,) = [o for o in options if o is not NoneType]
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{value!r} is not a list of strings")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{value!r} is not an object")
        return value
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    raise TypeError(f"{value!r} is not {getattr(hint, '__name__', hint)}")


# -- the documented table ---------------------------------------------------------------------


def _type_text(f: Field[Any], hint: Any) -> str:
    codec = f.metadata.get("codec")
    if codec == "hex":
        return "version or null"
    if codec == "hex-or-empty":
        return 'version or ""'
    if codec == "error":
        return "error name or null"
    text = {int: "integer", str: "string", float: "number"}
    if isinstance(hint, UnionType):
        (inner,) = [o for o in typing.get_args(hint) if o is not NoneType]
        return f"{_type_text(f, inner)} or null"
    if typing.get_origin(hint) is tuple:
        return "list of strings"
    if typing.get_origin(hint) is dict:
        return "object"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return " \\| ".join(f"`{m.value}`" for m in hint)
    return text.get(hint, str(hint))


def schema_table() -> str:
    """The Markdown table of event kinds and their fields, as docs/records.md has it."""
    rows = [
        "| `kind` | `state` | `slot`, `job_id` | `data` fields |",
        "|---|---|---|---|",
    ]
    for cls in EVENT_TYPES:
        hints = _HINTS[cls]
        state = next((f for f in fields(cls) if f.name == "state"), None)
        if state is None:
            state_text = "-"
        elif not state.init:
            state_text = f"`{state.default}`"
        elif cls is JobStateChanged:
            state_text = " \\| ".join(f"`{s}`" for s in CHAIN if s in PLAIN_STATES)
        else:
            state_text = "final state"
        if cls.kind in _NO_PLACE:
            where = "-"
        elif hints["slot"] is not int:
            where = "when known"
        else:
            where = "both" if hints["job_id"] is int else "`slot`"
        data = ", ".join(
            f"`{_json_name(f)}` ({_type_text(f, hints[f.name])})" for f in _payload(cls)
        )
        rows.append(f"| `{cls.kind}` | {state_text} | {where} | {data or '-'} |")
    return "\n".join(rows)


#: Kinds that concern no slot (their lines have no ``slot`` or ``job_id``).
_NO_PLACE: Final = frozenset({"batch-started", "batch-finished", "lease-lost"})

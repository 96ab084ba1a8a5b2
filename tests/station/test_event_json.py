"""The typed events and their JSON lines: every event kind round-trips, and every line has
exactly the fields docs/records.md documents for its kind (schema version 1)."""

from __future__ import annotations

import json
import re
import typing
from dataclasses import fields
from enum import Enum
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import errors as driver_errors
from drivers.errors import NackError, PortVanished, RemotePortLost, StationError
from station.event_json import (
    SCHEMA_VERSION,
    EventFormatError,
    data_of,
    from_json,
    from_line,
    schema_table,
    to_json,
    to_line,
)
from station.events import (
    EVENT_TYPES,
    PLAIN_STATES,
    Event,
    HubIdentified,
    JobFinished,
    JobState,
    JobStateChanged,
    UnknownError,
    error_class,
    state_event,
)
from station.outcome import FlashOutcome, Result
from station.tui.model import SlotView, versions_text

DOCS = Path(__file__).parents[2] / "docs" / "records.md"
ERRORS = [
    c for c in vars(driver_errors).values() if isinstance(c, type) and issubclass(c, StationError)
] + [ValueError, KeyError, RuntimeError]

_text = st.text(max_size=20)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_number = st.floats(allow_nan=False, allow_infinity=False)


def _strategy(cls: type[Event], name: str, hint: Any, metadata: Any) -> st.SearchStrategy[Any]:
    """Values of one field, as its type and its JSON codec allow."""
    codec = metadata.get("codec")
    if codec in ("hex", "hex-or-empty"):
        return st.none() | st.integers(0, 0xFFFFFFFF)
    if codec == "error":
        return st.none() | st.sampled_from(ERRORS)
    if name == "state":
        if cls is JobStateChanged:
            return st.sampled_from(sorted(PLAIN_STATES))
        return st.sampled_from([s for s in JobState if s.final])
    if isinstance(hint, UnionType):
        (inner,) = [o for o in typing.get_args(hint) if o is not NoneType]
        return st.none() | _strategy(cls, name, inner, metadata)
    if typing.get_origin(hint) is tuple:
        return st.lists(_text, max_size=3).map(tuple)
    if typing.get_origin(hint) is dict:
        values = _number if typing.get_args(hint)[1] is float else _json_value
        return st.dictionaries(_text, values, max_size=3)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return st.sampled_from(list(hint))
    return {int: st.integers(), str: st.text(), float: _number}[hint]


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    hints = typing.get_type_hints(cls)
    return st.builds(
        cls,
        **{
            f.name: _strategy(cls, f.name, hints[f.name], f.metadata) for f in fields(cls) if f.init
        },
    )


any_event = st.one_of([events_of(cls) for cls in EVENT_TYPES])


def _documented() -> dict[tuple[str, str], list[str]]:
    """docs/records.md's table: (kind, state) -> the data fields it lists, in order."""
    rows: dict[tuple[str, str], list[str]] = {}
    text = DOCS.read_text()
    start = text.index("| `kind` | `state` |")
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("| `"):
            break
        kind, state, _place, data = (c.strip() for c in line.strip("|").split(" | "))
        names = re.findall(r"`(\w+)` \(", data)
        states = re.findall(r"`(\w+)`", state) or [state]
        for s in states:
            rows[(kind.strip("`"), s)] = names
    return rows


def test_the_documented_table_is_the_one_the_classes_give() -> None:
    assert schema_table() in DOCS.read_text()


@settings(max_examples=400, deadline=None)
@given(any_event)
def test_every_event_round_trips_through_a_json_line_with_its_documented_fields(
    event: Event,
) -> None:
    line = to_line(event)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["schema_version"] == SCHEMA_VERSION and obj["kind"] == event.kind
    assert from_line(line) == event
    state = obj.get("state", "-")
    documented = _documented()
    key = (event.kind, state) if (event.kind, state) in documented else (event.kind, "final state")
    assert list(obj.get("data", {})) == documented[key]
    for name in ("slot", "job_id"):
        assert obj.get(name) == getattr(event, name)


def test_versions_are_hex_text_in_json_and_integers_in_the_event() -> None:
    ev = HubIdentified(
        slot=1, job_id=2, eui64="x", hw_version=2, version_before=0x01010000, found_in="app"
    )
    assert data_of(ev)["version_before"] == "0x01010000"
    assert ev.version_before == 0x01010000


def _outcome(**kw: Any) -> FlashOutcome:
    out = FlashOutcome(port="/dev/pts/3", profile="demo-an3155", **kw)
    out.phase_seconds = {"write": 1.23456}
    out.seconds = 2.34567
    return out


@pytest.mark.parametrize(
    "out",
    [
        _outcome(),
        _outcome(
            result=Result.PASSED,
            image="releases/a.zigbee",
            image_version="0x01050000",
            target_version="0x01050000",
            version_before="0x01010000",
            version_after="0x01050000",
            eui64="00-DB-12-00-00-00-00-01",
            overrides=["allow_unsigned"],
            exchanges=["-> 31 CE"],
        ),
    ],
)
def test_job_finished_data_is_the_outcome_json_unchanged(out: FlashOutcome) -> None:
    """The field names and formats rigs read from ``station flash --json`` and
    ``job-finished`` stay as they were."""
    out.raised(NackError("NACK"))
    ev = JobFinished.of(1, 2, JobState(str(out.result)), out)
    assert data_of(ev) == out.to_json()
    assert ev.error is NackError


def test_job_finished_has_every_field_of_the_outcome() -> None:
    """A field added to FlashOutcome (and so to ``station flash --json``) must be added to
    JobFinished and docs/records.md too."""
    outcome = [f.name for f in fields(FlashOutcome) if f.name != "error_type"]
    assert [f.name for f in fields(JobFinished) if f.name in outcome] == outcome
    assert set(f.name for f in fields(JobFinished)) - set(outcome) == {
        "slot",
        "job_id",
        "at",
        "state",
    }


def test_state_events_record_the_detail_the_store_kept_before() -> None:
    out = _outcome(eui64="E", hw_version=2, version_before="0x01010000", found_in="app", image="i")
    assert data_of(state_event(1, 2, JobState.IDENTIFIED, out)) == {
        "eui64": "E",
        "hw_version": 2,
        "version_before": "0x01010000",
        "found_in": "app",
    }
    planned = data_of(state_event(1, 2, JobState.PLANNED, out))
    assert list(planned) == [
        "target_version",
        "image",
        "image_version",
        "image_sha256",
        "signature",
        "signer",
        "plan",
        "behind",
        "overrides",
    ]
    assert planned["image_sha256"] is None and planned["overrides"] == []
    assert data_of(state_event(1, 2, JobState.WRITING, out)) == {}
    with pytest.raises(ValueError, match="own class"):
        JobStateChanged(slot=1, job_id=2, state=JobState.PASSED)


def test_errors_are_types_found_by_their_recorded_name() -> None:
    for cls in ERRORS:
        assert error_class(cls.__name__) is cls
    newer = error_class("SomethingFromANewerStation")
    assert issubclass(newer, UnknownError) and newer.__name__ == "SomethingFromANewerStation"
    assert error_class("SomethingFromANewerStation") is newer


def test_a_remote_port_lost_is_a_port_vanished() -> None:
    """The controller asks ``ended_by(PortVanished)``: a subclass counts, which the old
    comparison of class names (``error == "PortVanished"``) missed."""
    out = _outcome()
    out.raised(RemotePortLost("connection closed", host="rack-3"))
    assert out.error == "RemotePortLost"
    assert out.ended_by(PortVanished) and not out.ended_by(NackError)
    assert "error_type" not in out.to_json()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("[]", "JSON object"),
        ("{", "not JSON"),
        ('{"kind": "note"}', "schema_version None"),
        ('{"schema_version": 2, "kind": "note"}', "schema_version 2"),
        ('{"schema_version": 1, "kind": "nope"}', "unknown event kind 'nope'"),
        (
            '{"schema_version": 1, "kind": "note", "slot": 1, "job_id": 2, "at": 1}',
            "note is missing",
        ),
        (
            '{"schema_version": 1, "kind": "retry", "slot": "1",'
            ' "data": {"try": 2, "why": ""}, "at": 1}',
            "retry: slot: '1' is not int",
        ),
        (
            '{"schema_version": 1, "kind": "state", "state": "identified", "slot": 1, "job_id": 1,'
            ' "data": {"eui64": null, "hw_version": null, "version_before": "1.1.0.0",'
            ' "found_in": null}, "at": 1}',
            "not a version",
        ),
        (
            '{"schema_version": 1, "kind": "state", "state": "passed", "slot": 1, "job_id": 1,'
            ' "at": 1}',
            "own class",
        ),
    ],
)
def test_a_line_that_is_not_an_event_is_refused_in_one_line(line: str, says: str) -> None:
    with pytest.raises(EventFormatError, match=re.escape(says)) as info:
        from_line(line)
    assert "\n" not in str(info.value)


def test_a_reader_ignores_fields_it_does_not_know() -> None:
    line = to_json(JobStateChanged(slot=1, job_id=2, state=JobState.WRITING, at=5.0))
    line["data"] = {"added_later": 1}
    line["also_new"] = True
    assert from_json(line) == JobStateChanged(slot=1, job_id=2, state=JobState.WRITING, at=5.0)


def test_version_zero_is_a_known_version_on_a_tile() -> None:
    """Versions are integers until shown: 0 is a version, not "unknown"."""
    view = SlotView(1, "demo-an3155", "/dev/x")
    view.apply(
        HubIdentified(slot=1, job_id=1, eui64="E", hw_version=2, version_before=0, found_in="app")
    )
    assert versions_text(view) == "runs 0.0.0.0"

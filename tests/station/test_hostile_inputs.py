"""Generated hostile input: rig files with wrong types, unknown keys and absurd values are
refused with a ConfigError naming the file, the line and the key (never another exception);
text with markup and control characters is shown literally."""

from __future__ import annotations

import io
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import ConfigError
from firmware_images.tomlfile import TomlLines
from station.config import Spec
from station.profiles import (
    BOOTLOADER_KEYS,
    LINK_KEYS,
    MEMORY_KEYS,
    MODEL_KEYS,
    PROFILE_KEYS,
    parse_profile,
)
from station.protocols import plugin, plugins
from station.render import console, error_line, literal, styled
from station.rig import POLICY_KEYS, RIG_KEYS, SLOT_KEYS, parse_rig
from station.tui.model import SlotView, tile_text

# -- writing TOML, knowing where each key is -----------------------------------------------


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_value(value: Any) -> str:
    """One value on one line (inline tables and arrays included)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else repr(value)  # repr: 1e+300, inf, -0.0
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


@dataclass
class Doc:
    """TOML text written a statement at a time, with the line of every key and header."""

    chunks: list[str] = field(default_factory=list)
    at: dict[tuple[tuple[str | int, ...], str], int] = field(default_factory=dict)
    lines: int = 0

    def add(self, text: str) -> int:
        """Append a statement (a multi-line value spans lines); returns its first line."""
        self.chunks.append(text)
        first = self.lines + 1
        self.lines += text.count("\n") + 1
        return first

    def key(
        self, path: tuple[str | int, ...], key: str, value: Any, multiline: bool = False
    ) -> None:
        if multiline:  # a literal multi-line string: its lines as they are
            text = f"{toml_key(key)} = '''\n{value}'''"
        else:
            text = f"{toml_key(key)} = {toml_value(value)}"
        self.at[(path, key)] = self.add(text)

    @property
    def text(self) -> str:
        return "\n".join(self.chunks) + "\n"


# -- values ----------------------------------------------------------------------------------

keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=6,
)
#: Strings that hide things: markup, a terminal escape, a line break, a bidi override.
hostile_text = st.lists(
    st.one_of(
        st.characters(exclude_categories=("Cs",)),
        st.sampled_from(["[/]", "[bold]", ":smile:", "\x1b[2J", "\n", "\u202e", "\x85"]),
    ),
    max_size=12,
).map("".join)


# -- the key_line helper against tomllib -----------------------------------------------------


@st.composite
def documents(draw: st.DrawFn) -> tuple[Doc, dict[str, Any]]:
    """A document of root keys, tables and arrays of tables, with multi-line strings that
    hold fake headers and keys, and comments that do too."""
    doc, data = Doc(), {}
    fake = st.sampled_from(["[t]", "[[a]]", "x = 1", '"k" = 2', "# c", "[a.b]", ""])
    used: set[str] = set()

    def name() -> str:
        k = draw(keys.filter(lambda k: k not in used))
        used.add(k)
        return k

    def body(path: tuple[str | int, ...], table: dict[str, Any]) -> None:
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                doc.add("# " + draw(fake))
            k = name()
            multi = draw(st.booleans())
            value = "\n".join(draw(st.lists(fake, max_size=3))) if multi else draw(values)
            table[k] = value
            doc.key(path, k, value, multi)

    body((), data)
    for _ in range(draw(st.integers(0, 3))):
        k = name()
        if draw(st.booleans()):
            data[k] = {}
            doc.at[((), k)] = doc.add(f"[{toml_key(k)}]")
            body((k,), data[k])
        else:
            data[k] = []
            for i in range(draw(st.integers(1, 3))):
                data[k].append({})
                line = doc.add(f"[[{toml_key(k)}]]")
                doc.at.setdefault(((), k), line)
                body((k, i), data[k][i])
    return doc, data


@given(documents())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_key_line_finds_every_key(generated: tuple[Doc, dict[str, Any]]) -> None:
    doc, data = generated
    text = doc.text
    parsed = tomllib.loads(text)
    assert parsed.keys() == data.keys()
    lines = TomlLines(text)
    for (path, key), line in doc.at.items():
        assert lines.key_line(path, key) == line, (path, key, text)


# -- rig files -------------------------------------------------------------------------------

GOOD_ROOT = {"station_id": "bench-1", "catalog": "cat"}
GOOD_POLICY = {"job_retries": 1, "slot_fault_after": 3}


def _good_slot(n: int) -> dict[str, Any]:
    return {"number": n, "port": f"/dev/ttyUSB{n}", "profile": "demo-an3155"}


def _wrong_type(spec_kind: type, items: type | None) -> st.SearchStrategy[Any]:
    """Values that are not of this kind (as tomllib would give them)."""
    if spec_kind is int:
        return values.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
    if spec_kind is str:
        return values.filter(lambda v: not isinstance(v, str))
    if spec_kind is dict:
        return values.filter(lambda v: not isinstance(v, dict))
    if items is dict:  # an array of tables
        return values.filter(
            lambda v: not isinstance(v, list) or (v and not all(isinstance(x, dict) for x in v))
        )
    return values.filter(  # a list of strings
        lambda v: not isinstance(v, list) or not all(isinstance(x, str) for x in v)
    )


def _absurd(key: str, level: dict[str, Any]) -> st.SearchStrategy[Any]:
    spec = level[key]
    if spec.kind is int:
        lo, hi = int(spec.lo), int(spec.hi)
        return st.one_of(st.integers(-(2**63), lo - 1), st.integers(hi + 1, 2**63 - 1))
    if spec.kind is str:
        return st.one_of(
            st.just(""),
            st.text(min_size=spec.max_len + 1, max_size=spec.max_len + 5),
            hostile_text.filter(lambda t: not t.isprintable()),
        )
    return st.one_of(  # candidates: empty, too many, or a bad name in it
        st.just([]),
        st.lists(st.just("demo-an3155"), min_size=65, max_size=66),
        st.lists(st.just(""), min_size=1, max_size=2),
    )


LEVELS = {"root": RIG_KEYS, "policy": POLICY_KEYS, "slot": SLOT_KEYS}


@st.composite
def bad_rigs(draw: st.DrawFn) -> tuple[str, int, str, str]:
    """(text, line, key, what the message says about the key) for a rig with one fault."""
    root, policy = dict(GOOD_ROOT), dict(GOOD_POLICY)
    slots = [_good_slot(n) for n in range(1, draw(st.integers(1, 3)) + 1)]
    level_name = draw(st.sampled_from(sorted(LEVELS)))
    index = draw(st.integers(0, len(slots) - 1))
    table = {"root": root, "policy": policy, "slot": slots[index]}[level_name]
    level = LEVELS[level_name]
    fault = draw(st.sampled_from(["unknown", "type", "absurd"]))
    if fault == "unknown":
        key = draw(keys.filter(lambda k: k not in level))
        table[key] = draw(values)
        says = f"unknown key {key!r}"
    elif fault == "type":
        key = draw(st.sampled_from(sorted(level)))
        table[key] = draw(_wrong_type(level[key].kind, level[key].items))
        says = f"{key!r} must be"
    else:
        absurd = sorted(k for k, s in level.items() if s.kind in (int, str) or s.items is str)
        key = draw(st.sampled_from(absurd))
        table[key] = draw(_absurd(key, level))
        says = f"{key!r} must be"

    doc = Doc()
    where = {"root": (), "policy": ("policy",), "slot": ("slot", index)}[level_name]
    for k, v in root.items():  # a policy or slot made a plain value is written here too
        if draw(st.booleans()):
            doc.add("# [policy]  job_retries = 99  [[slot]]")
        doc.key((), k, v)
    if "policy" not in root:
        doc.add("[policy]")
        for k, v in policy.items():
            doc.key(("policy",), k, v)
    if "slot" not in root:
        for i, slot in enumerate(slots):
            doc.add("[[slot]]")
            for k, v in slot.items():
                doc.key(("slot", i), k, v)
    return doc.text, doc.at[(where, key)], key, says


@given(bad_rigs())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_bad_rig_is_refused_naming_file_line_and_key(bad: tuple[str, int, str, str]) -> None:
    text, line, _, says = bad
    with pytest.raises(ConfigError) as exc:
        parse_rig(text, "bench.toml")
    message = str(exc.value)
    named = re.match(r"bench\.toml line (\d+)\b", message)
    assert named is not None and int(named[1]) == line, (message, text)
    assert says in message, (message, text)
    assert "\n" not in message


printable = st.characters(categories=("L", "N", "P", "S"))
#: Strings a rig accepts as such (printable, of any length up to its bound), and may still
#: not be able to use: too long for a file name, not there, or a path.
names = st.one_of(
    st.text(printable, min_size=1, max_size=40),
    st.text(printable, min_size=200, max_size=1000),
    st.text(printable, min_size=1, max_size=300).map(lambda t: t + ".toml"),
)


@given(
    st.sampled_from(["port", "usb_location", "usb_serial"]),
    names,
    names,
    st.fixed_dictionaries({}, optional={"storage": names, "catalog": names}),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_strings_in_a_rig_are_taken_or_refused_never_a_crash(
    binding: str, where: str, profile: str, root: dict[str, str]
) -> None:
    """Strings of the right type but any content (too long for a file name, a path that
    is not there): the rig is parsed or refused with a ConfigError, nothing else."""
    slot = {binding: where, "profile": profile}
    doc = Doc()
    doc.key((), "station_id", "bench")
    for k, v in root.items():
        doc.key((), k, v)
    doc.add("[[slot]]")
    doc.key(("slot", 0), "number", 1)
    for k, v in slot.items():
        doc.key(("slot", 0), k, v)
    try:
        parse_rig(doc.text, "bench.toml")
    except ConfigError as exc:
        assert str(exc).startswith("bench.toml") and "\n" not in str(exc)


@given(hostile_text)
def test_station_id_is_taken_as_it_is_or_refused_on_its_line(station_id: str) -> None:
    text = (
        f"# a rig\nstation_id = {toml_string(station_id)}\n"
        '[[slot]]\nnumber = 1\nport = "/dev/ttyUSB0"\nprofile = "demo-an3155"\n'
    )
    try:
        rig = parse_rig(text, "bench.toml")
    except ConfigError as exc:
        assert not (station_id.isprintable() and 1 <= len(station_id) <= 64)
        assert str(exc).startswith("bench.toml line 2: 'station_id' must be a string of 1..64")
        assert "\n" not in str(exc)
    else:
        assert rig.station_id == station_id
        assert station_id.isprintable() and 1 <= len(station_id) <= 64


# -- showing text ----------------------------------------------------------------------------


_BIDI = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _acts(c: str) -> bool:
    """A character that moves the cursor, breaks the line or reorders what is read."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI


def _printed(*renderables: Any) -> str:
    buf = io.StringIO()
    out = console(file=buf, width=10_000)
    for r in renderables:
        out.print(r)
    return buf.getvalue()


@given(hostile_text)
def test_text_is_shown_literally(name: str) -> None:
    shown = literal(name)
    # Nothing that acts on the terminal or reorders the line, one line; the rest as it is
    # (markup and emoji codes included).
    assert not any(_acts(c) for c in shown)
    if not any(_acts(c) for c in name):
        assert shown == name
    assert _printed(styled(("operator", "bold"), " ", name)) == f"operator {shown}\n"
    assert _printed(error_line(name)) == f"error: {shown}\n"
    assert _printed(name) == literal(name, keep="\n") + "\n"


@given(hostile_text)
def test_tiles_show_hub_text_literally(reason: str) -> None:
    view = SlotView(1, "demo-an3155", "/dev/ttyUSB0", state="failed", reason=reason)
    shown = tile_text(view, 200, 3).plain
    if reason.strip():  # a blank reason says nothing, so the tile shows no line for it
        assert literal(reason) in shown
    assert not any(_acts(c) for c in shown.replace("\n", ""))


# -- hub profiles ----------------------------------------------------------------------------

PROFILE_DIR = Path(__file__).parents[2] / "station" / "profiles"


def _profile_levels(protocol: str) -> dict[str, Mapping[str, Spec]]:
    levels: dict[str, Mapping[str, Spec]] = {
        "": {**PROFILE_KEYS, "protocol": Spec(str, choices=tuple(plugins()))},
        "link": LINK_KEYS,
        "memory": MEMORY_KEYS,
        "model": MODEL_KEYS,
        "bootloader": BOOTLOADER_KEYS,
    }
    if plugin(protocol).section:
        levels[protocol] = plugin(protocol).section
    return levels


def _invalid(spec: Spec) -> st.SearchStrategy[Any]:
    """Values ``spec`` refuses: of another type, or of its type and out of bounds."""
    return st.one_of(values, _absurd_for(spec)).filter(lambda v: not spec.accepts(v))


def _absurd_for(spec: Spec) -> st.SearchStrategy[Any]:
    if spec.kind is int:
        return st.integers(-(2**63), 2**63 - 1)
    if spec.kind is float:
        return st.one_of(st.floats(), st.integers(-(2**63), 2**63 - 1))
    if spec.kind is str:
        return st.one_of(hostile_text, st.text(min_size=spec.max_len, max_size=spec.max_len + 2))
    if spec.kind is list:
        return st.lists(st.integers(-(2**20), 2**20), max_size=4)
    return values


@st.composite
def bad_profiles(draw: st.DrawFn) -> tuple[str, int, str]:
    """(text, line, what the message says) for a built-in profile with one fault."""
    name = draw(st.sampled_from(sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))))
    data = tomllib.loads((PROFILE_DIR / f"{name}.toml").read_text())
    levels = _profile_levels(data["protocol"])
    level = draw(st.sampled_from(sorted(levels)))
    table = data if level == "" else data.setdefault(level, {})
    if draw(st.booleans()):
        key = draw(keys.filter(lambda k: k not in levels[level]))
        table[key] = draw(values)
        says = f"unknown key {key!r}"
    else:
        key = draw(st.sampled_from(sorted(levels[level])))
        table[key] = draw(_invalid(levels[level][key]))
        says = f"{key!r} must be"
    doc = Doc()
    sections = [k for k, v in data.items() if isinstance(v, dict) and k in levels]
    for k, v in data.items():
        if k not in sections:
            doc.key((), k, v)
    for section in sections:
        doc.at[((), section)] = doc.add(f"[{section}]")
        for k, v in data[section].items():
            doc.key((section,), k, v)
    return doc.text, doc.at[(() if level == "" else (level,), key)], says


@given(bad_profiles())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_bad_profile_is_refused_naming_file_line_and_key(bad: tuple[str, int, str]) -> None:
    text, line, says = bad
    with pytest.raises(ConfigError) as exc:
        parse_profile(tomllib.loads(text), "hub.toml", text)
    message = str(exc.value)
    named = re.match(r"hub\.toml line (\d+)\b", message)
    assert named is not None and int(named[1]) == line, (message, text)
    assert says in message and "\n" not in message, (message, text)

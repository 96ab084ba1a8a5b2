"""Line numbers of TOML keys: what tomllib does not give, found by scanning the text."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_images.tomlfile import TomlLines, key_line

CATALOG = """\
# A catalogue
[[model]]
name = "m"            # the model
hw_min = 1

[[release]]
model = "m"
file = '''
[[release]]
file = "not a key"
'''
sha256 = "x"

[[release]]
from = [
    0x01000000,  # ] a bracket in a comment
    "1.2.3.4",
]
"odd.key" = 1
limits.max = 5
[release.extra]
k = "v"
"""


@pytest.mark.parametrize(
    ("path", "key", "line"),
    [
        (("model", 0), "name", 3),
        (("model", 0), "hw_min", 4),
        (("release", 0), "model", 7),
        (("release", 0), "file", 8),
        (("release", 0), "sha256", 12),
        (("release", 1), "from", 15),
        (("release", 1), "odd.key", 19),
        (("release", 1), "limits", 20),
        (("release", 1, "limits"), "max", 20),
        (("release", 1), "extra", 21),
        (("release", 1, "extra"), "k", 22),
    ],
)
def test_keys_are_found_where_written(path: tuple[str | int, ...], key: str, line: int) -> None:
    tomllib.loads(CATALOG)  # the text is valid TOML
    assert key_line(CATALOG, path, key) == line


def test_a_missing_key_falls_back_to_its_table_header() -> None:
    assert key_line(CATALOG, ("release", 1), "version") == 14
    assert key_line(CATALOG, ("release", 0)) == 6
    assert key_line(CATALOG, ("model", 0), "sha256") == 2


def test_unknown_tables_and_top_level_misses_give_none() -> None:
    assert key_line(CATALOG, ("release", 2), "file") is None
    assert key_line(CATALOG, ("nope",), "file") is None
    assert key_line(CATALOG, (), "nope") is None
    assert key_line(CATALOG, (), "release") == 6


def test_tables_inside_values_give_the_value_line() -> None:
    text = 'a = 1\nmodel = [\n  { name = "x" },\n  { name = "y" },\n]\n'
    assert key_line(text, ("model", 1), "name") == 2


def test_nested_arrays_of_tables_count_within_their_parent() -> None:
    text = "[[a]]\n[[a.b]]\nx = 1\n[[a.b]]\nx = 2\n[[a]]\n[[a.b]]\nx = 3\n"
    assert tomllib.loads(text)["a"][1]["b"][0]["x"] == 3
    assert key_line(text, ("a", 0, "b", 1), "x") == 5
    assert key_line(text, ("a", 1, "b", 0), "x") == 8
    assert key_line(text, ("a", 1, "b", 1), "x") is None


def test_crlf_quoted_headers_and_escapes() -> None:
    text = '[ "a.b" . c ]\r\nk = "say \\"[x]\\""\r\n\'lit\' = 2\r\n'
    data = tomllib.loads(text)
    assert data["a.b"]["c"] == {"k": 'say "[x]"', "lit": 2}
    assert key_line(text, ("a.b", "c"), "k") == 2
    assert key_line(text, ("a.b", "c"), "lit") == 3


def test_broken_text_keeps_the_lines_found_before_the_break() -> None:
    lines = TomlLines('[t]\na = 1\nb = "unterminated\n[u]\nc = 1\n')
    assert lines.key_line(("t",), "a") == 2
    assert lines.key_line(("u",), "c") is None


# -- generated documents: every key is found on the line it was written --------------------

_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_TRICKY = st.sampled_from(["[t]", "[[t]]", "k = 1", "#", "]", "{", "'", '"', "\\", "="])


def _text(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(_TRICKY, st.text(alphabet, max_size=4)), max_size=6).map("".join)


@st.composite
def _value(draw: st.DrawFn) -> str:
    """A TOML value as written, maybe over several lines, with look-alike content."""
    kind = draw(st.sampled_from(["int", "basic", "literal", "ml-basic", "ml-literal", "array"]))
    if kind == "int":
        return str(draw(st.integers(-(2**40), 2**40)))
    if kind == "basic":
        return json.dumps(draw(_text(_PRINTABLE)))
    no_quote = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="'")
    if kind == "literal":
        return "'" + draw(_text(no_quote)).replace("'", "") + "'"
    lines = draw(st.lists(_text(no_quote), min_size=1, max_size=4))
    if kind == "ml-basic":
        body = "\n".join(lines).replace("\\", "\\\\").replace('"', "")
        return '"""\n' + body + '"""'
    if kind == "ml-literal":
        return "'''\n" + "\n".join(lines).replace("'", "") + "'''"
    items = [json.dumps(item) for item in lines]
    return "[\n" + "".join(f"  {item},  # ] {item}\n" for item in items) + "]"


_KEY = st.from_regex(r"[a-z][a-z0-9_-]{0,6}", fullmatch=True)


@st.composite
def _written_key(draw: st.DrawFn) -> tuple[str, str]:
    """(key, how it is written): bare, or quoted with dots, spaces and escapes."""
    name = draw(st.one_of(_KEY, st.text(_PRINTABLE, min_size=1, max_size=6)))
    if name.replace("-", "").replace("_", "").isalnum() and name.isascii():
        return name, name
    return name, json.dumps(name)


@dataclass
class _Doc:
    lines: list[str] = field(default_factory=lambda: ["# generated"])
    where: dict[tuple[tuple[str | int, ...], str], int] = field(default_factory=dict)

    def table(self, draw: st.DrawFn, path: tuple[str | int, ...], header: str) -> None:
        if header:
            self.lines.append(header + draw(st.sampled_from(["", "  # [x]"])))
        keys = draw(st.lists(_written_key(), max_size=4, unique_by=lambda k: k[0]))
        for name, written in keys:
            if draw(st.booleans()):
                self.lines.append("")
            self.where[path, name] = len(self.lines) + 1
            self.lines.extend(f"{written} = {draw(_value())}".split("\n"))


@st.composite
def _documents(draw: st.DrawFn) -> _Doc:
    doc = _Doc()
    doc.table(draw, (), "")
    names = draw(st.lists(_KEY.map(lambda k: "T" + k), max_size=4, unique=True))
    for name in names:
        if draw(st.booleans()):
            doc.table(draw, (name,), f"[{name}]")
            continue
        for index in range(draw(st.integers(1, 3))):
            doc.table(draw, (name, index), f"[[ {name} ]]")
            for kid in range(draw(st.integers(0, 2))):
                doc.table(draw, (name, index, "Kids", kid), f"[[{name}.Kids]]")
    return doc


def _lookup(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@settings(max_examples=300, deadline=None)
@given(_documents())
def test_generated_documents_find_every_key(doc: _Doc) -> None:
    text = "\n".join(doc.lines) + "\n"
    data = tomllib.loads(text)
    lines = TomlLines(text)
    for (path, key), line in doc.where.items():
        assert key in _lookup(data, path)
        assert lines.key_line(path, key) == line, (path, key, text)

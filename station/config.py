"""Reading the station's TOML files strictly: rig files and hub profiles.

A misspelt key that is silently ignored is a setting the operator believes in and the
station does not use, so every table is checked against a schema: unknown keys, values of
the wrong type and absurd values are refused, and each message names the file, the line
and the key (``bench.toml line 4: unknown key 'stoarge' (known: catalog, ...)``).

``tomllib`` gives no line numbers, so :class:`TomlLines` finds them by scanning the text
(:func:`key_line`). It is the same idea as ``firmware_images/tomlfile.py``'s ``key_line``
on another branch; the two are to be merged.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.errors import ConfigError

#: A table's place in the document: keys, and an index for an entry of an array of
#: tables: ``("slot", 1)`` is the second ``[[slot]]``, ``()`` the root table.
TablePath = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _dotted_key(line: str, pos: int) -> tuple[list[str], int] | None:
    """Parse a (dotted) key at ``pos``; returns its parts and the position after it."""
    parts: list[str] = []
    while True:
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos >= len(line):
            return None
        if line[pos] in "\"'":
            end = _string_end(line, pos)
            if end is None:
                return None
            try:
                parts.append(tomllib.loads(f"k = {line[pos:end]}")["k"])
            except tomllib.TOMLDecodeError:
                return None
            pos = end
        else:
            m = _BARE.match(line, pos)
            if m is None:
                return None
            parts.append(m.group())
            pos = m.end()
        while pos < len(line) and line[pos] in " \t":
            pos += 1
        if pos < len(line) and line[pos] == ".":
            pos += 1
            continue
        return parts, pos


def _string_end(line: str, pos: int) -> int | None:
    """The position after a one-line string starting at ``pos`` (None: not closed here)."""
    quote = line[pos]
    i = pos + 1
    while i < len(line):
        if quote == '"' and line[i] == "\\":
            i += 2
            continue
        if line[i] == quote:
            return i + 1
        i += 1
    return None


class TomlLines:
    """Where each table and key of a TOML document is (1-based lines).

    The text is scanned line by line, skipping comments, strings (multi-line ones too) and
    the insides of multi-line arrays and inline tables, so nothing that only looks like a
    key or a header there counts.
    """

    def __init__(self, text: str) -> None:
        self.tables: dict[TablePath, int] = {}
        self.keys: dict[tuple[TablePath, str], int] = {}
        self._arrays: dict[TablePath, int] = {}  # array-of-tables path -> entries so far
        self._scan(text)

    def _resolve(self, parts: list[str]) -> TablePath:
        """A header's dotted key as a path: arrays of tables resolve to their last entry."""
        path: TablePath = ()
        for part in parts:
            path = (*path, part)
            if path in self._arrays:
                path = (*path, self._arrays[path] - 1)
        return path

    def _scan(self, text: str) -> None:
        table: TablePath = ()
        depth = 0  # brackets and braces open in a value
        closing: str | None = None  # the delimiter of an open multi-line string
        # Only \n ends a line in TOML (str.splitlines would split at \x85, \u2028 too).
        for number, raw in enumerate(text.split("\n"), 1):
            line = raw.removesuffix("\r")
            pos = 0
            if closing is None and depth == 0:
                stripped = line.lstrip()
                pos = len(line) - len(stripped)
                if not stripped or stripped.startswith("#"):
                    continue
                if stripped.startswith("["):
                    array = stripped.startswith("[[")
                    parsed = _dotted_key(line, pos + (2 if array else 1))
                    if parsed is None:
                        continue
                    parts, _ = parsed
                    if array:
                        base = (*self._resolve(parts[:-1]), parts[-1])
                        index = self._arrays.get(base, 0)
                        self._arrays[base] = index + 1
                        table = (*base, index)
                        self.tables.setdefault(base, number)
                    else:
                        table = self._resolve(parts)
                    self.tables.setdefault(table, number)
                    continue
                parsed = _dotted_key(line, pos)
                if parsed is None:
                    continue
                parts, pos = parsed
                owner = table
                for part in parts[:-1]:
                    self.keys.setdefault((owner, part), number)
                    owner = (*owner, part)
                    self.tables.setdefault(owner, number)
                self.keys.setdefault((owner, parts[-1]), number)
                pos = line.find("=", pos) + 1
            depth, closing = _skip_value(line, pos, depth, closing)

    def line(self, path: Sequence[str | int], key: str | None = None) -> int | None:
        """The line of ``key`` in the table at ``path`` (of the table itself when ``key``
        is None); else of the nearest enclosing thing that is written down: the table's
        header, or the key that holds it as an inline value. None when nothing is."""
        where: TablePath = tuple(path)
        if key is not None:
            if (where, key) in self.keys:
                return self.keys[(where, key)]
            if (*where, key) in self.tables:
                return self.tables[(*where, key)]
        while True:
            if where in self.tables:
                return self.tables[where]
            if not where:
                return None
            *parent, last = where
            if isinstance(last, str) and (tuple(parent), last) in self.keys:
                return self.keys[(tuple(parent), last)]
            where = tuple(parent)


def _skip_value(line: str, pos: int, depth: int, closing: str | None) -> tuple[int, str | None]:
    """Scan the rest of a line of a value: track open brackets and multi-line strings."""
    i = pos
    while i < len(line):
        if closing is not None:
            end = line.find(closing, i)
            if end < 0:
                return depth, closing
            i = end + 3
            while i < len(line) and line[i] == closing[0]:  # up to two quotes may end it
                i += 1
            closing = None
            continue
        c = line[i]
        if c == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            closing = line[i : i + 3]
            i += 3
            continue
        if c in "\"'":
            after = _string_end(line, i)
            if after is None:
                break
            i = after
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return depth, closing


def key_line(text: str, table_path: Sequence[str | int], key: str | None = None) -> int | None:
    """The 1-based line of ``key`` in the table at ``table_path`` of TOML ``text``, falling
    back to the table's header line (see :meth:`TomlLines.line`); None when not found."""
    return TomlLines(text).line(table_path, key)


# -- schemas ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What one key may hold.

    ``kind`` is ``str``, ``int``, ``float`` (integers accepted), ``bool``, ``list`` (of
    ``items``) or ``dict`` (a table, checked by its reader). ``lo``/``hi`` bound numbers
    (a list's items too), ``min_len``/``max_len`` the length of strings and lists (a
    list's strings are 1..1024 characters); strings must be printable (no control
    characters). ``choices`` lists the allowed
    strings; ``what`` replaces the generated description in messages.
    """

    kind: type
    lo: float | None = None
    hi: float | None = None
    min_len: int = 1
    max_len: int = 1024
    items: type | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    what: str = ""

    def describe(self) -> str:
        """The allowed values in a few words, for messages."""
        if self.what:
            return self.what
        if self.choices:
            return f"one of {', '.join(sorted(self.choices))}"
        span = f" {_num(self.lo)}..{_num(self.hi)}" if self.lo is not None else ""
        if self.kind is str:
            return f"a string of {self.min_len}..{self.max_len} printable characters"
        if self.kind is int:
            return f"an integer{span}"
        if self.kind is float:
            return f"a number{span}"
        if self.kind is bool:
            return "true or false"
        if self.kind is dict:
            return "a table"
        if self.items is dict:
            return "an array of tables"
        count = (
            str(self.min_len) if self.min_len == self.max_len else f"{self.min_len}..{self.max_len}"
        )
        if self.items is int:
            return f"a list of {count} integers{span}"
        return f"a list of {count} strings"

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (as tomllib gives it) is allowed."""
        if self.kind is list:
            item = Spec(self.items or str, self.lo, self.hi)  # strings: 1..1024 characters
            return (
                isinstance(value, list)
                and self.min_len <= len(value) <= self.max_len
                and all(_accepts(item.kind, v, item) for v in value)
            )
        return _accepts(self.kind, value, self)


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _accepts(kind: type, value: Any, spec: Spec) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is dict:
        return isinstance(value, dict)
    if kind is str:
        if not isinstance(value, str):
            return False
        if spec.choices:
            return value in spec.choices
        return spec.min_len <= len(value) <= spec.max_len and value.isprintable()
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        return False
    if kind is float and (not isinstance(value, int | float) or isinstance(value, bool)):
        return False
    if kind is float and not math.isfinite(value):
        return False
    return (spec.lo is None or value >= spec.lo) and (spec.hi is None or value <= spec.hi)


def shown(value: Any) -> str:
    """A value as a message quotes it: ``repr`` (so control characters are escaped), cut
    short when long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wrong(key: str, spec: Spec, value: Any) -> str:
    return f"{key!r} must be {spec.describe()}, not {shown(value)}"


class Table:
    """One table of a TOML file being read, with what its messages need to say where.

    Args:
        data: the table as ``tomllib`` parsed it.
        path: where it is (see :data:`TablePath`).
        source: the file, as messages name it.
        lines: where its keys are.
        label: how messages name the table (``[policy]``, ``[[slot]] #2``); empty for the
            root table.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        path: TablePath,
        source: str,
        lines: TomlLines,
        label: str = "",
    ) -> None:
        self.data, self.path, self.source, self.lines, self.label = (
            data,
            path,
            source,
            lines,
            label,
        )

    @classmethod
    def parse(cls, text: str, source: str) -> Table:
        """The root table of TOML ``text``.

        Raises:
            ConfigError: it is not valid TOML (with the line tomllib names).
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        return cls(data, (), source, TomlLines(text))

    def where(self, key: str | None = None) -> str:
        """``bench.toml line 9 ([[slot]] #2)``: the file, the key's line and the table."""
        line = self.lines.line(self.path, key)
        text = self.source if line is None else f"{self.source} line {line}"
        return f"{text} ({self.label})" if self.label else text

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        """A problem with ``key`` (None: with the table as a whole)."""
        return ConfigError(f"{self.where(key)}: {message}", hint=hint)

    def check(self, schema: Mapping[str, Spec]) -> None:
        """Refuse keys the schema does not know, missing required keys and values it does
        not accept; the first problem in the file's order is reported.

        Raises:
            ConfigError: naming the file, the line and the key.
        """
        problems: list[tuple[int, str, str]] = []
        for key, value in self.data.items():
            spec = schema.get(key)
            if spec is None:
                message = f"unknown key {key!r} (known: {', '.join(sorted(schema))})"
            elif not spec.accepts(value):
                message = _wrong(key, spec, value)
            else:
                continue
            problems.append((self.lines.line(self.path, key) or 0, key, message))
        if problems:
            _, key, message = min(problems, key=lambda p: p[0])
            raise self.error(key, message)
        for key, spec in schema.items():
            if spec.required and key not in self.data:
                raise self.error(None, f"{key!r} ({spec.describe()}) is required")

    def value(self, key: str, spec: Spec) -> Any:
        """One key's value, checked against ``spec`` (None when absent and not required).

        Raises:
            ConfigError: naming the file, the line and the key.
        """
        if key in self.data and not spec.accepts(self.data[key]):
            raise self.error(key, _wrong(key, spec, self.data[key]))
        if spec.required and key not in self.data:
            raise self.error(None, f"{key!r} ({spec.describe()}) is required")
        return self.data.get(key)

    def table(self, key: str, label: str | None = None) -> Table:
        """The sub-table ``key`` (empty when absent); check its type with :meth:`check`
        first."""
        data = self.data.get(key, {})
        assert isinstance(data, dict)
        return Table(data, (*self.path, key), self.source, self.lines, label or f"[{key}]")

    def tables(self, key: str) -> Iterator[Table]:
        """The entries of the array of tables ``key``, labelled ``[[key]] #n``."""
        for i, data in enumerate(self.data.get(key, [])):
            yield Table(data, (*self.path, key, i), self.source, self.lines, f"[[{key}]] #{i + 1}")

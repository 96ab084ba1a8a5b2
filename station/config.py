"""Reading the station's TOML files strictly: rig files and hub profiles.

A misspelt key that is silently ignored is a setting the operator believes in and the
station does not use, so every table is checked against a schema: unknown keys, values of
the wrong type and absurd values are refused, and each message names the file, the line
and the key (``bench.toml line 4: unknown key 'stoarge' (known: catalog, ...)``).

``tomllib`` gives no line numbers, so :class:`firmware_images.tomlfile.TomlLines` finds
them by scanning the text; the catalogue's index is read the same way.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.errors import ConfigError
from firmware_images.tomlfile import TablePath, TomlLines


def key_line(text: str, table_path: TablePath, key: str | None = None) -> int | None:
    """The 1-based line of ``key`` in the table at ``table_path`` of TOML ``text``, falling
    back to the table's header line; None when not found (see
    :meth:`firmware_images.tomlfile.TomlLines.key_line`)."""
    return TomlLines(text).key_line(table_path, key)


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
        line = self.lines.key_line(self.path, key)
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
            problems.append((self.lines.key_line(self.path, key) or 0, key, message))
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

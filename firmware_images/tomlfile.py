"""Line numbers for TOML keys, so a settings error can say where it is.

:mod:`tomllib` reports the line of a syntax error, but once a file parses it gives plain
dicts: a loader that finds a wrong type or an unknown key cannot say which line holds it.
:func:`key_line` finds that line by scanning the text itself. It follows the structure a
TOML parser sees (table headers, arrays of tables, dotted keys) and skips over values,
so a ``[table]`` or ``key =`` inside a multi-line string or a multi-line array is never
mistaken for one. Keys are decoded by :mod:`tomllib` itself, so quoted keys and escapes
mean what they mean to the parser.

Paths address the parsed data the way Python indexes it: ``("release", 2)`` is the third
``[[release]]`` table (``data["release"][2]``), ``("model", 0, "limits")`` its ``limits``
sub-table. Use it on text that :mod:`tomllib` accepted; on broken text it gives the
lines it could find before the break.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from dataclasses import dataclass
from typing import Any

__all__ = ["TomlLines", "key_line"]

TablePath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Characters where scanning a value, a string or a key must look closer.
_VALUE_STOPS = re.compile(r"[\n#\"'\[\]{}]")
_STRING_STOPS = {
    ('"', False): re.compile(r'[\\"\n]'),
    ('"', True): re.compile(r'\\|"""'),
    ("'", False): re.compile(r"['\n]"),
    ("'", True): re.compile(r"'{3}"),
}
_KEY_STOPS = {stop: re.compile(rf"[\n\"'{re.escape(stop)}]") for stop in "=]"}


@dataclass(frozen=True)
class _Statement:
    line: int  # 1-based line where the header or key starts
    path: TablePath  # header: the table it opens; key: the table path plus the key's parts
    value: bool = True  # a key with a value (which may hold tables), not a header


class _Broken(Exception):
    """The text stops being TOML here: keep what was found before."""


class TomlLines:
    """Where each table and key of one TOML text is written (the text is scanned once)."""

    def __init__(self, text: str) -> None:
        self._statements: list[_Statement] = []
        with contextlib.suppress(_Broken):
            _Scanner(text, self._statements).run()

    def key_line(self, table_path: TablePath, key: str | None = None) -> int | None:
        """The 1-based line of ``key`` in the table at ``table_path``, or of the table.

        Args:
            table_path: the table, as its place in the parsed data (see the module
                docstring); ``()`` is the top level.
            key: a key of that table; its line is where it is written, whether as
                ``key = ...``, as a dotted key (``key.sub = ...``) or as a sub-table header
                (``[table.key]``). None asks for the table itself.

        Returns:
            The key's line; else (key absent, or None) the line of the table's header, or
            of the first line that defines the table (a dotted key, an inline table, an
            array of inline tables); None when neither is in the text.
        """
        table = tuple(table_path)
        if key is not None:
            target = (*table, key)
            for st in self._statements:
                if st.path[: len(target)] == target:
                    return st.line
        if not table:
            return None
        for st in self._statements:
            if st.path[: len(table)] == table:
                return st.line
        # Defined inside a value (``model = [{...}, {...}]``): the line of that value.
        holders = [st for st in self._statements if st.value and table[: len(st.path)] == st.path]
        return max(holders, key=lambda st: len(st.path)).line if holders else None


def key_line(text: str, table_path: TablePath, key: str | None = None) -> int | None:
    """The 1-based line of ``key`` in the table at ``table_path`` of the TOML ``text``.

    Falls back to the table's header line when the key is not written there (a missing
    key), and gives None when the table is not in the text either. See
    :meth:`TomlLines.key_line`; use :class:`TomlLines` to look up many keys of one text.

    Example: ``key_line(text, ("release", 2), "file")`` is the line of ``file = ...`` in
    the third ``[[release]]`` table.
    """
    return TomlLines(text).key_line(table_path, key)


def _key_parts(raw: str) -> tuple[str, ...]:
    """The parts of a (dotted, maybe quoted) key as the TOML parser reads them."""
    simple = [part.strip() for part in raw.split(".")]
    if all(_BARE_KEY.fullmatch(part) for part in simple):
        return tuple(simple)
    try:
        node: Any = tomllib.loads(f"{raw} = 0")
    except tomllib.TOMLDecodeError as exc:
        raise _Broken from exc
    parts: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        ((name, node),) = node.items()
        parts.append(name)
    return tuple(parts)


class _Scanner:
    """One pass over the text: statement starts, skipping every value."""

    def __init__(self, text: str, out: list[_Statement]) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.out = out
        self.table: TablePath = ()
        self.array_sizes: dict[TablePath, int] = {}  # elements so far, per array of tables
        self.array_current: dict[tuple[str, ...], int] = {}  # by header name: current index

    # -- characters --------------------------------------------------------------------

    def _peek(self, offset: int = 0) -> str:
        at = self.i + offset
        return self.text[at] if at < len(self.text) else ""

    def _advance(self, count: int = 1) -> None:
        self.line += self.text.count("\n", self.i, self.i + count)
        self.i += count

    def _skip_comment(self) -> None:
        end = self.text.find("\n", self.i)
        self.i = len(self.text) if end < 0 else end

    def _jump(self, pattern: re.Pattern[str]) -> str:
        """Advance to the next match of ``pattern``; return the matched text ('' at the end)."""
        found = pattern.search(self.text, self.i)
        if found is None:
            self._advance(len(self.text) - self.i)
            return ""
        self._advance(found.start() - self.i)
        return found.group()

    def _skip_string(self) -> None:
        quote = self._peek()
        multi = self.text.startswith(quote * 3, self.i)
        self._advance(3 if multi else 1)
        stops = _STRING_STOPS[quote, multi]
        while True:
            found = self._jump(stops)
            if not found or found == "\n":  # unterminated
                raise _Broken
            if found == "\\":
                self._advance(2)  # the escaped character, even a newline
                continue
            self._advance(len(found))
            if multi:
                for _ in range(2):  # up to two more quotes belong to the content
                    if self._peek() == quote:
                        self._advance()
            return

    def _skip_value(self) -> None:
        """Past a value: up to the end of its (last) line, arrays and strings included."""
        depth = 0
        while True:
            c = self._jump(_VALUE_STOPS)
            if not c or (c == "\n" and depth == 0):
                return
            if c == "#":
                self._skip_comment()
            elif c in "\"'":
                self._skip_string()
            else:
                depth += 1 if c in "[{" else -1 if c in "]}" else 0
                self._advance()

    def _read_key_text(self, stop: str) -> str:
        """The raw text of a key up to ``stop`` (outside quotes); leaves ``i`` on ``stop``."""
        start = self.i
        while True:
            c = self._jump(_KEY_STOPS[stop])
            if not c or c == "\n":
                raise _Broken
            if c == stop:
                return self.text[start : self.i]
            self._skip_string()

    # -- structure ---------------------------------------------------------------------

    def _resolve(self, names: tuple[str, ...]) -> TablePath:
        """A header's names as a data path: arrays of tables take their current element."""
        path: list[str | int] = []
        for end in range(1, len(names) + 1):
            path.append(names[end - 1])
            index = self.array_current.get(names[:end])
            if index is not None:
                path.append(index)
        return tuple(path)

    def _header(self) -> None:
        line = self.line
        is_array = self._peek(1) == "["
        self._advance(2 if is_array else 1)
        names = _key_parts(self._read_key_text("]"))
        self._advance()
        if is_array:
            if self._peek() != "]":
                raise _Broken
            self._advance()
            array = (*self._resolve(names[:-1]), names[-1])
            index = self.array_sizes.get(array, 0)
            self.array_sizes[array] = index + 1
            for inner in [n for n in self.array_current if n[: len(names)] == names]:
                del self.array_current[inner]  # a new element: its own sub-arrays start over
            self.array_current[names] = index
            self.table = (*array, index)
        else:
            self.table = self._resolve(names)
        self.out.append(_Statement(line, self.table, value=False))
        self._skip_value()  # only a comment may follow; skip it the same way

    def _key_value(self) -> None:
        line = self.line
        parts = _key_parts(self._read_key_text("="))
        self._advance()
        self.out.append(_Statement(line, (*self.table, *parts)))
        self._skip_value()

    def run(self) -> None:
        while True:
            c = self._peek()
            if not c:
                return
            if c in " \t\r\n":
                self._advance()
            elif c == "#":
                self._skip_comment()
            elif c == "[":
                self._header()
            else:
                self._key_value()

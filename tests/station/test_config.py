"""Where a key is in a TOML file (tomllib gives no lines), for messages that name it."""

from __future__ import annotations

import pytest

from station.config import key_line

TEXT = '''\
# a comment with [not.a.table] in it
station_id = "a"   # [nor.this]
"quoted key" = 1
dotted.inner = 2
multi = """
[fake]
x = 1
"""
arr = [
  "[[slot]]",
  { number = 3 },
]
[policy] # a comment
job_retries = 2
  [ "sub table" . x ]
y = 'no [table] #here'
[[slot]]
number = 1
[[slot]]
# nothing here
port = "p \\" [x]"
[slot.extra]
z = 1
lit = \'\'\'
[[slot]]
\'\'\'
after = true
'''


@pytest.mark.parametrize(
    ("path", "key", "line"),
    [
        ((), "station_id", 2),
        ((), "quoted key", 3),
        ((), "dotted", 4),
        (("dotted",), "inner", 4),
        ((), "multi", 5),
        ((), "arr", 9),
        (("policy",), None, 13),
        ((), "policy", 13),  # a key that is a table: its header
        (("policy",), "job_retries", 14),
        (("sub table", "x"), None, 15),
        (("sub table", "x"), "y", 16),
        ((), "slot", 17),  # an array of tables: its first entry
        (("slot", 0), "number", 18),
        (("slot", 1), None, 19),
        (("slot", 1), "port", 21),
        (("slot", 1), "number", 19),  # not there: the entry's header
        (("slot", 1, "extra"), "z", 23),  # [slot.extra] belongs to the last [[slot]]
        (("slot", 1), "extra", 22),
        (("slot", 1, "extra"), "lit", 24),
        (("slot", 1, "extra"), "after", 27),
        # No third [[slot]] (the one in a multi-line string does not count): not written.
        (("slot", 2), None, None),
    ],
)
def test_key_line(path: tuple[str | int, ...], key: str | None, line: int | None) -> None:
    assert key_line(TEXT, path, key) == line


@pytest.mark.parametrize(
    ("path", "key"),
    [
        (("fake",), "x"),  # inside a multi-line string
        (("nope",), "x"),
        ((), "x"),
    ],
)
def test_key_line_not_found(path: tuple[str | int, ...], key: str | None) -> None:
    assert key_line(TEXT, path, key) is None


def test_inline_tables_and_arrays_fall_back_to_the_key() -> None:
    text = "a = 1\npolicy = { job_retries = 11 }\nslot = [\n  { number = 0 },\n]\n"
    assert key_line(text, ("policy",), "job_retries") == 2
    assert key_line(text, ("slot", 0), "number") == 3

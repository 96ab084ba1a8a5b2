"""Rig files: good ones parse; bad ones are refused with the line and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.errors import ConfigError
from station.rig import Slot, parse_rig, resolve

GOOD = """\
station_id = "bench-1"
catalog = "cat"

[policy]
job_retries = 2

[[slot]]
number = 2
port = "/dev/ttyUSB0"
profile = "demo-an3155"

[[slot]]
number = 1
usb_serial = "CH0042"
profile = "demo-an3155"
"""


def test_good_rig() -> None:
    rig = parse_rig(GOOD, "bench.toml")
    assert rig.station_id == "bench-1" and rig.catalog == "cat" and rig.job_retries == 2
    assert [s.number for s in rig.slots] == [1, 2]
    assert rig.slots[1].port == "/dev/ttyUSB0" and rig.slots[0].usb_serial == "CH0042"


KNOWN = "(known: catalog, policy, slot, station_id, storage)"
SLOT_KEYS = "(known: candidates, number, port, power, profile, usb_location, usb_serial)"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nusb_serial = "X"'),
            "line 7 ([[slot]] #1): a slot needs exactly one of",
        ),
        (
            ("number = 1", "number = 2"),
            "line 13 ([[slot]] #2): slot 2 is already defined at line 8 ([[slot]] #1)",
        ),
        (
            ('profile = "demo-an3155"\n\n', 'profile = "no-such"\n\n'),
            "line 10 ([[slot]] #1): unknown profile 'no-such'",
        ),
        (
            ("number = 2", "number = 2\nspeed = 9"),
            f"line 9 ([[slot]] #1): unknown key 'speed' {SLOT_KEYS}",
        ),
        (('station_id = "bench-1"', ""), "bench.toml: 'station_id' (a string of 1..64 printable"),
        (
            ("job_retries = 2", 'job_retries = "x"'),
            "line 5 ([policy]): 'job_retries' must be an integer 0..10, not 'x'",
        ),
        (("[policy]", "[policy"), "bench.toml: "),
        # Misspelt keys and tables, at every level.
        (('catalog = "cat"', 'stoarge = "x"'), f"bench.toml line 2: unknown key 'stoarge' {KNOWN}"),
        (("[policy]", "[polcy]"), f"bench.toml line 4: unknown key 'polcy' {KNOWN}"),
        (
            ("job_retries = 2", "retries = 2"),
            "line 5 ([policy]): unknown key 'retries' (known: job_retries, slot_fault_after)",
        ),
        # Values of the wrong type.
        (
            ("[policy]\njob_retries = 2", "policy = 5"),
            "bench.toml line 4: 'policy' must be a table, not 5",
        ),
        (
            ("job_retries = 2", "job_retries = true"),
            "line 5 ([policy]): 'job_retries' must be an integer 0..10, not True",
        ),
        (
            ("job_retries = 2", "job_retries = 1.5"),
            "'job_retries' must be an integer 0..10, not 1.5",
        ),
        (
            ('port = "/dev/ttyUSB0"', "port = 5"),
            "line 9 ([[slot]] #1): 'port' must be a string of 1..1024 printable characters, not 5",
        ),
        (
            ('station_id = "bench-1"', "station_id = 7"),
            "bench.toml line 1: 'station_id' must be a string",
        ),
        (
            ('profile = "demo-an3155"\n\n', 'profile = ["demo-an3155"]\n\n'),
            "line 10 ([[slot]] #1): 'profile' must be",
        ),
        (
            ("number = 2", 'number = "2"'),
            "line 8 ([[slot]] #1): 'number' must be an integer 1..1024, not '2'",
        ),
        (
            ('catalog = "cat"', "catalog = { x = 1 }"),
            "bench.toml line 2: 'catalog' must be a string",
        ),
        (
            ('usb_serial = "CH0042"', 'usb_serial = "CH0042"\ncandidates = "demo-an3155"'),
            "line 15 ([[slot]] #2): 'candidates' must be a list of 1..64 strings",
        ),
        (
            ('usb_serial = "CH0042"', 'usb_serial = "CH0042"\ncandidates = [1]'),
            "line 15 ([[slot]] #2): 'candidates' must be a list of 1..64 strings",
        ),
        # Absurd values.
        (
            ("job_retries = 2", "job_retries = 9223372036854775807"),
            "line 5 ([policy]): 'job_retries' must be an integer 0..10, not 9223372036854775807",
        ),
        (("job_retries = 2", "job_retries = -1"), "'job_retries' must be an integer 0..10, not -1"),
        (
            ("job_retries = 2", "slot_fault_after = 1001"),
            "line 5 ([policy]): 'slot_fault_after' must be an integer 0..1000, not 1001",
        ),
        (
            ("number = 2", "number = 0"),
            "line 8 ([[slot]] #1): 'number' must be an integer 1..1024, not 0",
        ),
        (("number = 2", "number = 1025"), "'number' must be an integer 1..1024, not 1025"),
        (
            ('station_id = "bench-1"', 'station_id = ""'),
            "bench.toml line 1: 'station_id' must be a string of 1..64 printable characters, "
            "not ''",
        ),
        (
            ('station_id = "bench-1"', f'station_id = "{"b" * 65}"'),
            "bench.toml line 1: 'station_id' must be a string of 1..64",
        ),
        (
            ('station_id = "bench-1"', 'station_id = "bench\\u001b[2J"'),
            "bench.toml line 1: 'station_id' must be a string of 1..64 printable characters, "
            "not 'bench\\x1b[2J'",
        ),
        (
            ('station_id = "bench-1"', 'station_id = "a\\nb"'),
            "'station_id' must be a string of 1..64 printable characters, not 'a\\nb'",
        ),
        (
            ('port = "/dev/ttyUSB0"', 'port = ""'),
            "line 9 ([[slot]] #1): 'port' must be a string of 1..1024",
        ),
        (
            ('usb_serial = "CH0042"', f'usb_serial = "{"S" * 127}"'),
            "line 14 ([[slot]] #2): 'usb_serial' must be a string of 1..126",
        ),
        (
            ('profile = "demo-an3155"\n\n', 'profile = ""\n\n'),
            "line 10 ([[slot]] #1): 'profile' must be",
        ),
    ],
)
def test_bad_rig_names_line_and_reason(change: tuple[str, str], says: str) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    with pytest.raises(ConfigError) as exc:
        parse_rig(text, "bench.toml")
    assert says in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            'station_id = "b"\nslot = 5\n',
            "bench.toml line 2: 'slot' must be an array of tables ([[slot]]), not 5",
        ),
        (
            'station_id = "b"\nslot = ["a"]\n',
            "bench.toml line 2: 'slot' must be an array of tables ([[slot]]), not ['a']",
        ),
        ('station_id = "b"\nslot = []\n', "bench.toml: the rig has no [[slot]] entries"),
        (
            'station_id = "b"\npolicy = { job_retries = 11 }\n',
            "bench.toml line 2 ([policy]): 'job_retries' must be an integer 0..10, not 11",
        ),
        (
            'station_id = "b"\npolicy.job_retries = 11\n',
            "bench.toml line 2 ([policy]): 'job_retries' must be an integer 0..10, not 11",
        ),
        (
            'station_id = "b"\n[[slot]]\nnumber = 1\nport = "p"\nprofile = "demo-an3155"\n'
            "[slot.pins]\nreset = 1\n",
            f"bench.toml line 6 ([[slot]] #1): unknown key 'pins' {SLOT_KEYS}",
        ),
        (
            'station_id = "b"\n[[slot]]\nnumber = 1\nport = "p"\nprofile = "demo-an3155"\n'
            '[[slot]]\nnumber = 2\n"port " = "q"\nprofile = "demo-an3155"\n',
            f"bench.toml line 8 ([[slot]] #2): unknown key 'port ' {SLOT_KEYS}",
        ),
    ],
)
def test_bad_rig_structure(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_rig(text, "bench.toml")
    assert says in str(exc.value)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (('catalog = "cat"', 'stoarge = "x"'), f"line 2: unknown key 'stoarge' {KNOWN}"),
        (("job_retries = 2", "job_retries = 9223372036854775807"), "'job_retries' must be"),
        (('port = "/dev/ttyUSB0"', "port = 5"), "line 9 ([[slot]] #1): 'port' must be"),
    ],
)
def test_bad_rig_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], says: str
) -> None:
    from station.cli import main

    rig = tmp_path / "bench.toml"
    rig.write_text(GOOD.replace(*change, 1))
    assert main(["run", "--rig", str(rig), "--catalog", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"error: {rig} line ") and says in line


def test_resolve_explicit_paths(tmp_path: Path) -> None:
    present = tmp_path / "slot-1"
    present.write_text("")
    assert resolve(Slot(1, "demo-an3155", port=str(present))) == str(present)
    assert resolve(Slot(1, "demo-an3155", port=str(tmp_path / "gone"))) is None
    assert resolve(Slot(1, "demo-an3155", port="rfc2217://bench:4001")) == "rfc2217://bench:4001"
    assert resolve(Slot(1, "demo-dfu", usb_serial="NOPE")) == "usb:NOPE"


def test_candidates_may_be_long_profile_paths(tmp_path: Path) -> None:
    """The 64-entry bound of 'candidates' is on the list, not on each name or path."""
    builtin = Path(__file__).parents[2] / "station" / "profiles" / "demo-an3155.toml"
    long = tmp_path / ("a-profile-file-with-a-long-name-" * 3 + ".toml")
    long.write_text(builtin.read_text())
    text = (
        'station_id = "b"\n[[slot]]\nnumber = 1\nport = "/dev/ttyUSB0"\nprofile = "auto"\n'
        f'candidates = ["{long}"]\n'
    )
    assert parse_rig(text, "bench.toml").slots[0].candidates == (str(long),)


def test_duplicate_slot_is_shown_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI prints both slot tables as the user wrote them (``[[slot]] #2``, with their
    lines), never eaten as console markup (it once printed ``([] #2)``)."""
    from station.cli import main

    rig = tmp_path / "bench.toml"
    rig.write_text(GOOD.replace("number = 1", "number = 2"))
    assert main(["run", "--rig", str(rig), "--catalog", str(tmp_path)]) == 2
    said = capsys.readouterr()
    assert said.out == "" and " ".join(said.err.split()) == (
        f"error: {rig} line 13 ([[slot]] #2): slot 2 is already defined at line 8 ([[slot]] #1)"
    )

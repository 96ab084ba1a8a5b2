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


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nusb_serial = "X"'),
            "line 7 ([[slot]] #1): a slot needs exactly one of",
        ),
        (("number = 1", "number = 2"), "line 12 ([[slot]] #2): slot 2 is already defined"),
        (
            ('profile = "demo-an3155"\n\n', 'profile = "no-such"\n\n'),
            "line 7 ([[slot]] #1): unknown profile",
        ),
        (("number = 2", "number = 2\nspeed = 9"), "unknown key(s) speed"),
        (('station_id = "bench-1"', ""), "station_id (a non-empty string) is required"),
        (("job_retries = 2", 'job_retries = "x"'), "job_retries must be a non-negative integer"),
        (("[policy]", "[policy"), "bench.toml: "),
    ],
)
def test_bad_rig_names_line_and_reason(change: tuple[str, str], says: str) -> None:
    text = GOOD.replace(*change, 1)
    with pytest.raises(ConfigError) as exc:
        parse_rig(text, "bench.toml")
    assert says in str(exc.value)


def test_resolve_explicit_paths(tmp_path: Path) -> None:
    present = tmp_path / "slot-1"
    present.write_text("")
    assert resolve(Slot(1, "demo-an3155", port=str(present))) == str(present)
    assert resolve(Slot(1, "demo-an3155", port=str(tmp_path / "gone"))) is None
    assert resolve(Slot(1, "demo-an3155", port="rfc2217://bench:4001")) == "rfc2217://bench:4001"
    assert resolve(Slot(1, "demo-dfu", usb_serial="NOPE")) == "usb:NOPE"

"""The modem-line sequence language and wiring (drivers.lines), and the [lines] profile
section that uses them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ConfigError
from drivers.lines import (
    SetLines,
    Wait,
    Wire,
    Wiring,
    format_sequence,
    parse_sequence,
    run_sequence,
)
from station.profiles import load_profile

RTS_DTR = Wiring.parse("reset=rts,boot=dtr")  # esptool's and stm32loader's circuit
INVERTED = Wiring.parse("reset=-dtr,boot=rts")  # stm32flash's documented board

levels = st.one_of(st.none(), st.booleans())
steps = st.lists(
    st.one_of(
        st.builds(SetLines, dtr=levels, rts=levels).filter(
            lambda s: s.dtr is not None or s.rts is not None
        ),
        st.builds(Wait, st.integers(0, 10_000).map(lambda ms: ms / 1000)),
    ),
    min_size=1,
    max_size=12,
)


@given(steps)
def test_canonical_text_reads_back_to_the_same_steps(seq: list[SetLines | Wait]) -> None:
    assert parse_sequence(format_sequence(seq)) == tuple(seq)


@given(st.text(max_size=40))
def test_any_text_parses_or_says_why_in_one_line(text: str) -> None:
    try:
        parse_sequence(text)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_esptool_notation() -> None:
    assert parse_sequence("D0|R1|W0.1|D1|R0|W0.05|D0") == (
        SetLines(dtr=False),
        SetLines(rts=True),
        Wait(0.1),
        SetLines(dtr=True),
        SetLines(rts=False),
        Wait(0.05),
        SetLines(dtr=False),
    )
    # UnixTightReset: DTR and RTS in one step, DTR first.
    assert parse_sequence("U1,1|U0,1|W0.1|U1,0") == (
        SetLines(dtr=True, rts=True),
        SetLines(dtr=False, rts=True),
        Wait(0.1),
        SetLines(dtr=True, rts=False),
    )


def test_stm32flash_notation_maps_to_the_same_steps() -> None:
    # The stm32flash manual's example entry (DTR -> NRST, RTS -> BOOT0 through inverters).
    entry = parse_sequence("-dtr&rts,dtr")
    assert entry == (SetLines(dtr=False), SetLines(rts=True), Wait(0.1), SetLines(dtr=True))
    assert format_sequence(entry) == "D0|R1|W0.1|D1"
    # An empty step waits another 100 ms, as stm32flash reads "rts&-dtr,,-rts&dtr,,".
    assert parse_sequence("rts&-dtr,,-rts&dtr,,") == (
        SetLines(rts=True),
        SetLines(dtr=False),
        Wait(0.1),
        Wait(0.1),
        SetLines(rts=False),
        SetLines(dtr=True),
        Wait(0.1),
        Wait(0.1),
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("-dtr&rts,dtr:-dtr&-rts,dtr", "entry:exit"),
        ("rts,brk,-rts", "serial break"),
        ("-3&-2,2", "GPIO number"),
        ("D2|R0", "D0/D1"),
        ("D1|W99", "beyond 10 s"),
        ("dtr&&rts", "empty step"),
        ("reset", "expected dtr"),
    ],
)
def test_bad_sequences_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_sequence(text)


def test_wiring_text_and_levels() -> None:
    assert INVERTED.text == "reset=-dtr,boot=rts"
    assert INVERTED.reset == Wire("dtr", active_when_set=False)
    assert INVERTED.reset.active(dtr=False, rts=True)
    assert Wiring.parse("reset=rts").boot is None
    with pytest.raises(ValueError, match="both be on RTS"):
        Wiring.parse("reset=rts,boot=-rts")
    with pytest.raises(ValueError, match="expected reset=LINE"):
        Wiring.parse("nrst=rts")


@pytest.mark.parametrize("wiring", [RTS_DTR, INVERTED, Wiring.parse("reset=-rts")])
def test_default_sequences_do_their_job(wiring: Wiring) -> None:
    wiring.check(wiring.default_entry(), to_bootloader=True)
    wiring.check(wiring.default_exit(), to_bootloader=False)


def test_the_stm32flash_example_checks_out_on_its_wiring() -> None:
    INVERTED.check(parse_sequence("-dtr&rts,dtr"), to_bootloader=True)
    INVERTED.check(parse_sequence("-dtr&-rts,dtr"), to_bootloader=False)


@pytest.mark.parametrize(
    ("text", "to_bootloader", "says"),
    [
        ("D1|W0.1|D0", True, "never holds and releases reset"),
        ("D1|R1|W0.1", True, "held in reset"),
        ("R1|W0.1|R0", True, "selecting the application"),
        ("D1|R1|W0.1|R0", False, "selecting the bootloader"),
    ],
)
def test_a_sequence_that_cannot_work_is_refused(text: str, to_bootloader: bool, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RTS_DTR.check(parse_sequence(text), to_bootloader=to_bootloader)


def test_run_sequence_drives_levels_and_waits_in_order() -> None:
    done: list[object] = []

    class Link:
        def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> None:
            done.append((dtr, rts))

    run_sequence(Link(), parse_sequence("D1|R1|W0.1|R0"), sleep=done.append)
    assert done == [(True, None), (None, True), 0.1, (None, False)]


# -- the [lines] profile section --------------------------------------------------------

PROFILES = Path(__file__).parents[2] / "station" / "profiles"
BUILTIN = PROFILES / "demo-an3155-lines.toml"


def test_builtin_lines_profiles_load() -> None:
    for name in ("demo-an3155-lines", "demo-gecko-lines"):
        profile = load_profile(name)
        assert (profile.entry, profile.exit) == ("lines", "lines")
        assert profile.lines is not None and profile.lines.wiring == RTS_DTR
    assert load_profile("demo-an3155").lines is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (('reset = "rts"', 'reset = "nrst"'), "line 39 ([lines]): 'reset' must be one of"),
        (
            ('entry_sequence = "D1|R1|W0.1|R0|W0.05|D0"', 'entry_sequence = "D1|R1|W0.1"'),
            "line 42 ([lines]): 'D1|R1|W0.1': it leaves the hub held in reset",
        ),
        (
            ('exit_sequence = "D0|R1|W0.1|R0"', 'exit_sequence = "D1|R1|W0.1|R0"'),
            "selecting the bootloader",
        ),
        (('boot = "dtr"', 'boot = "rts"'), "both be on RTS"),
        (('boot = "dtr"', 'boot = "dtr"\nwhat = 1'), "unknown key 'what'"),
        (("attempts = 2", "attempts = 0"), "'attempts' must be"),
    ],
)
def test_bad_lines_section_names_file_line_and_key(
    tmp_path: Path, change: tuple[str, str], says: str
) -> None:
    text = BUILTIN.read_text()
    assert change[0] in text
    path = tmp_path / "hub.toml"
    path.write_text(text.replace(change[0], change[1]))
    with pytest.raises(ConfigError) as caught:
        load_profile(str(path))
    assert str(path) in caught.value.message
    assert says in caught.value.message


def test_lines_entry_needs_a_lines_section(tmp_path: Path) -> None:
    text = BUILTIN.read_text()
    path = tmp_path / "hub.toml"
    path.write_text(text[: text.index("\n[lines]")])
    with pytest.raises(ConfigError, match="entry = 'lines' needs a \\[lines\\] section"):
        load_profile(str(path))


def test_exit_by_lines_needs_a_lines_section_too(tmp_path: Path) -> None:
    text = (PROFILES / "demo-gecko.toml").read_text()
    path = tmp_path / "hub.toml"
    path.write_text(text.replace('entry = "console"', 'entry = "console"\nexit = "lines"'))
    with pytest.raises(ConfigError, match="exit = 'lines' needs a \\[lines\\] section"):
        load_profile(str(path))


def test_dfu_hubs_have_no_modem_lines(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text((PROFILES / "demo-dfu.toml").read_text() + '\n[lines]\nreset = "rts"\n')
    with pytest.raises(ConfigError, match="dfu hubs are not reset by modem lines"):
        load_profile(str(path))

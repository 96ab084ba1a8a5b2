"""One fault grammar for serial and USB simulated hubs (sim/core/faults.py): the same items
split the same way, and each hub model takes only its own kinds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.cli import main
from sim.core.faults import KINDS, SERIAL_FAULTS, USB_FAULTS, RawItem, parse_fault_spec, split_spec
from sim.usb_dfu import parse_dfu_faults

items = st.builds(
    RawItem,
    slot=st.none() | st.integers(1, 99),
    kind=st.sampled_from(sorted(KINDS)),
    value=st.integers(0, 10_000).map(str),
    text=st.just(""),
)


def _text(item: RawItem) -> str:
    return f"{'' if item.slot is None else f'{item.slot}:'}{item.kind}={item.value}"


@given(st.lists(items, max_size=6))
def test_any_spec_in_the_grammar_splits_back_into_its_items(spec: list[RawItem]) -> None:
    text = " , ".join(_text(i) for i in spec)
    got = split_spec(text)
    assert [(i.slot, i.kind, i.value, i.text) for i in got] == [
        (i.slot, i.kind, i.value, _text(i)) for i in spec
    ]


@given(st.text(alphabet="0123456789:=,abcdefghijklmnopqrstuvwxyz. x", max_size=30))
def test_anything_else_is_refused_with_the_grammar(text: str) -> None:
    try:
        got = split_spec(text)
    except ValueError as exc:
        assert "SPEC is ITEM[,ITEM...]" in str(exc)
    else:
        assert all(i.kind in KINDS for i in got)


@pytest.mark.parametrize(
    ("parse", "other"),
    [
        (parse_fault_spec, sorted(USB_FAULTS - SERIAL_FAULTS)),
        (parse_dfu_faults, sorted(SERIAL_FAULTS - USB_FAULTS)),
    ],
)
def test_each_hub_takes_its_own_kinds_and_names_the_others(parse: object, other: list[str]) -> None:
    assert callable(parse)
    for kind in other:
        with pytest.raises(ValueError, match=r"unknown fault '\w+' \(a fault of other hubs\)"):
            parse(f"2:{kind}=3")
    with pytest.raises(ValueError, match="unknown fault 'jam'"):
        parse("jam=3")


def test_shared_kinds_mean_a_block_for_both(capsys: pytest.CaptureFixture[str]) -> None:
    assert [(i.fault.kind.value, i.fault.block) for i in parse_fault_spec("vanish=4")] == [
        ("vanish", 4)
    ]
    assert [(f.kind, f.value) for f in parse_dfu_faults("vanish=4")] == [("vanish", 4)]
    assert main(["--protocol", "dfu", "--hubs", "1", "--faults", "nack=3"]) == 2
    assert "a fault of other hubs" in capsys.readouterr().err

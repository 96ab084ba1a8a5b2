"""The hub's polling margin follows how late its sleeps end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.wakeup import WakeMargin

CEILING = 300e-6


def test_it_starts_at_the_ceiling_and_comes_down_on_a_quiet_machine() -> None:
    margin = WakeMargin(CEILING)
    assert margin.seconds == CEILING  # nothing seen yet: as careful as before
    for _ in range(200):
        margin.observe(45e-6)  # a quiet VM: sleeps end ~45 µs late
    assert 45e-6 <= margin.seconds < 60e-6  # polls ~1/5 of what it did


def test_late_wake_ups_raise_it_at_once_and_a_stall_is_capped() -> None:
    margin = WakeMargin(CEILING)
    for _ in range(200):
        margin.observe(40e-6)
    quiet = margin.seconds
    margin.observe(250e-6)
    assert margin.seconds > quiet + 100e-6  # one late wake-up: twice its surprise and more
    margin.observe(5.0)  # preempted for seconds: counted as 4 ceilings at most
    assert margin.seconds == CEILING
    for _ in range(60):
        margin.observe(40e-6)
    assert margin.seconds < 2 * quiet  # and it comes back down


@given(st.lists(st.floats(-1.0, 10.0, allow_nan=False), max_size=300))
def test_it_always_lies_between_floor_and_ceiling(lates: list[float]) -> None:
    margin = WakeMargin(CEILING, floor_s=20e-6)
    for late in lates:
        margin.observe(late)
        assert 20e-6 <= margin.seconds <= CEILING


def test_a_floor_above_the_ceiling_is_refused() -> None:
    with pytest.raises(ValueError, match="floor"):
        WakeMargin(10e-6, floor_s=20e-6)

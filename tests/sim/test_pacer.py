"""The pacing arithmetic of the pty adapter, on a synthetic clock (no real time here)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simkit import addr, cmd, ext_erase_frame, write_frame

from firmware_images.build import demo_payload
from sim.an3155 import FLASH_BASE, MASS_ERASE_S, PAGE_ERASE_S, An3155Hub, program_time_s
from sim.faults import fault_plan
from sim.pty import Pacer

BAUD = 115200
BT = 11 / BAUD
LAT = 0.001


def pacer(device: An3155Hub | None = None, **kwargs: object) -> Pacer:
    p = Pacer(device or An3155Hub(), baud=kwargs.pop("baud", BAUD), **kwargs)  # type: ignore[arg-type]
    p.start(0.0)
    return p


def deliveries(p: Pacer, until: float = 1e9) -> list[tuple[float, bytes | None]]:
    """Every delivery due by ``until``, with its time."""
    out = []
    while (due := p.next_due()) is not None and due <= until:
        for data in p.pop_due(due):
            out.append((due, data))
    return out


def test_sync_ack_costs_two_byte_times_and_the_latency() -> None:
    p = pacer()
    p.receive(b"\x7f", 0.0)
    assert p.next_due() == pytest.approx(2 * BT + LAT)
    assert p.pop_due(2 * BT + LAT - 1e-6) == []
    assert p.pop_due(2 * BT + LAT) == [b"\x79"]
    assert p.next_due() is None


def test_write_block_timeline() -> None:
    p = pacer()
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    frame = write_frame(FLASH_BASE, bytes(256))
    t0 = 1.0
    p.receive(frame, t0)
    got = deliveries(p)
    assert [d for _, d in got] == [b"\x79"] * 3
    assert got[0][0] == pytest.approx(t0 + 2 * BT + BT + LAT)
    assert got[1][0] == pytest.approx(t0 + 7 * BT + BT + LAT)
    ready = t0 + len(frame) * BT + program_time_s(256)
    assert got[2][0] == pytest.approx(ready + BT + LAT)


def test_input_queues_behind_earlier_input_on_the_line() -> None:
    p = pacer()
    p.receive(b"\x00" * 100, 0.0)  # noise before sync: occupies the line
    p.receive(b"\x7f", 0.0)
    assert p.next_due() == pytest.approx(101 * BT + BT + LAT)


def test_a_busy_device_answers_later_input_in_order() -> None:
    p = pacer()
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    erase = ext_erase_frame([0, 1, 2])
    p.receive(erase + cmd(0x02), 1.0)
    got = deliveries(p)
    assert [d for _, d in got] == [b"\x79", b"\x79", bytes.fromhex("79 01 04 62 79")]
    erased = 1.0 + len(erase) * BT + 3 * PAGE_ERASE_S
    assert got[1][0] == pytest.approx(erased + BT + LAT)
    # Get ID arrived long before, but the core was busy erasing.
    assert got[2][0] == pytest.approx(erased + 6 * BT + LAT)


def test_replies_queue_on_the_tx_line() -> None:
    p = pacer()
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    p.receive(cmd(0x00) + cmd(0x00), 1.0)  # the second Get is ready before the first has left
    got = deliveries(p)
    first = 1.0 + 2 * BT + 16 * BT
    assert got[0][0] == pytest.approx(first + LAT)
    assert got[1][0] == pytest.approx(first + 16 * BT + LAT)


def test_watchdog_window_is_deaf_and_later_bytes_are_heard() -> None:
    baud = 1200  # slow enough that one chunk outlasts the 100 ms watchdog
    bt = 11 / baud
    p = pacer(baud=baud)
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    go = cmd(0x21) + addr(FLASH_BASE)
    p.receive(go + b"\x7f" * 20, 1.0)
    got = deliveries(p)
    due = 1.0 + len(go) * bt + 0.1
    first_heard = next(i for i in range(20) if 1.0 + (len(go) + i + 1) * bt >= due)
    arrival = 1.0 + (len(go) + first_heard + 1) * bt
    assert got[0][1] == b"\x79"  # Go ACKed after the command
    assert got[1][1] == b"\x79"  # ... and after the address
    assert got[2] == (pytest.approx(arrival + bt + LAT), b"\x79")  # first 0x7F after the reset
    assert len(got) == 3 + (20 - first_heard - 1) // 2  # later 0x7F pairs: NACK each
    assert all(d == b"\x1f" for _, d in got[3:])


def test_application_start_at_power_on() -> None:
    device = An3155Hub(boot_pin_strapped=False)
    device.flash.program(FLASH_BASE, demo_payload(0x01020304, size=4096))
    p = pacer(device)
    got = deliveries(p)
    banner = b"CHUB APP 0x01020304 READY\r\n"
    assert got == [(pytest.approx(0.02 + len(banner) * BT + LAT), banner)]


def test_mass_erase_time() -> None:
    p = pacer()
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    p.receive(cmd(0x44) + b"\xff\xff\x00", 1.0)
    got = deliveries(p)
    assert got[1][0] == pytest.approx(1.0 + 5 * BT + MASS_ERASE_S + BT + LAT)


def test_unpaced_answers_at_once_but_keeps_stall_durations() -> None:
    device = An3155Hub(faults=fault_plan("stall=0:0.5", 1))
    p = pacer(device, paced=False)
    p.receive(b"\x7f", 5.0)
    assert p.pop_due(5.0) == [b"\x79"]
    p.receive(write_frame(FLASH_BASE, bytes(8)) + cmd(0x02), 6.0)
    assert p.pop_due(6.0) == [b"\x79", b"\x79"]
    assert p.next_due() == pytest.approx(6.5)
    p.receive(cmd(0x02), 6.2)  # deaf during the stall
    assert p.pop_due(6.5) == []
    p.receive(cmd(0x02), 6.6)
    assert p.pop_due(6.6) == [bytes.fromhex("79 01 04 62 79")]


def test_vanish_comes_after_what_is_already_on_the_line() -> None:
    device = An3155Hub(faults=fault_plan("vanish=0", 1))
    p = pacer(device)
    p.receive(b"\x7f", 0.0)
    p.receive(write_frame(FLASH_BASE, bytes(8)), 0.0)
    assert [d for _, d in deliveries(p)] == [b"\x79", b"\x79", b"\x79", None]


def test_dropped_bytes_still_took_line_time() -> None:
    device = An3155Hub(faults=fault_plan("drop=1", 1))
    p = pacer(device, plan=device.faults)
    p.receive(b"\x7f" * 10, 0.0)
    assert p.next_due() is None
    assert p.rx_free == pytest.approx(10 * BT)


def wakes(p: Pacer, until: float = 1e9) -> list[tuple[float, bool, bytes]]:
    """Each wake-up the hub makes by ``until``: its time, whether it is precise, and what it
    writes then (in one write)."""
    out = []
    while (wake := p.next_wake()) is not None and wake[0] <= until:
        out.append((*wake, b"".join(d or b"" for d in p.pop_due(wake[0]))))
    return out


def test_only_the_answer_a_host_waits_for_is_delivered_on_time() -> None:
    # A pipelined block queues three ACKs at once: the host awaits them all, so the hub
    # polls (burns CPU to be on time) only for the last, and the first two, 0.5 ms apart
    # (within the adapter's latency), leave together; alone, an answer is waited for.
    p = pacer()
    p.receive(b"\x7f", 0.0)
    assert p.next_wake() == (pytest.approx(2 * BT + LAT), True)
    deliveries(p)
    assert p.next_wake() is None  # nothing queued
    t0 = 1.0
    p.receive(write_frame(FLASH_BASE, bytes(256)), t0)
    got = wakes(p)
    assert [(precise, data) for _, precise, data in got] == [(False, b"\x79\x79"), (True, b"\x79")]
    assert got[0][0] == pytest.approx(t0 + 8 * BT + LAT)  # the second ACK's time: none early
    p.receive(cmd(0x11), 2.0)  # lock-step: the command alone
    assert p.next_wake() == (pytest.approx(2.0 + 3 * BT + LAT), True)


def test_answers_further_apart_than_the_latency_leave_on_their_own() -> None:
    p = pacer(latency_s=0.0001)  # an adapter faster than the 5 byte times between two ACKs
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    p.receive(write_frame(FLASH_BASE, bytes(256)), 1.0)
    got = wakes(p)
    assert [(precise, data) for _, precise, data in got] == [
        (False, b"\x79"),
        (False, b"\x79"),
        (True, b"\x79"),
    ]
    assert got[0][0] == pytest.approx(1.0 + 3 * BT + 0.0001)


def test_a_timer_is_never_waited_for() -> None:
    # Go: two ACKs, then the application starts after a deaf wait. The timer runs on the
    # model's clock (waking for it late shifts nothing); the banner it brings is waited for.
    hub = An3155Hub()
    hub.flash.program(FLASH_BASE, demo_payload(0x0101_0000, size=4096))
    p = pacer(hub)
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    p.receive(cmd(0x21) + addr(FLASH_BASE), 1.0)
    got = wakes(p, until=2.0)
    assert [(precise, data[:8]) for _, precise, data in got[:3]] == [
        (True, b"\x79\x79"),  # the two ACKs, together; the host waits for the second
        (False, b""),  # the deaf wait ends: a timer
        (True, b"CHUB APP"),
    ]


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(st.integers(0, 63), st.floats(0.0, 0.05), st.booleans()), min_size=1, max_size=6
    )
)
def test_a_batched_answer_is_never_early_and_at_most_one_latency_late(
    blocks: list[tuple[int, float, bool]],
) -> None:
    # Blocks written at random gaps, pipelined or a command alone: every answer leaves at
    # or after its own time and within one adapter latency of it, and a wake is precise
    # exactly when nothing is left queued behind what it sends.
    p = pacer()
    p.receive(b"\x7f", 0.0)
    deliveries(p)
    now = 1.0
    for index, gap, whole in blocks:
        now += gap
        frame = write_frame(FLASH_BASE + 256 * index, bytes(range(256))) if whole else cmd(0x11)
        p.receive(frame, now)
        while (wake := p.next_wake()) is not None and wake[0] <= now + 1.0:
            at, precise = wake
            due = sorted(item[0] for item in p._outbox if item[0] <= at)
            assert p.pop_due(at)
            assert all(at - LAT - 1e-12 <= d <= at for d in due)
            assert precise == (not p._outbox and p._timer is None and p._alarm is None)
            now = max(now, at)

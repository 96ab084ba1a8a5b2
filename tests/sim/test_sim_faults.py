"""Fault SPEC parsing, per-slot plans, byte faults, and block faults in the pure model."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simkit import read_frame, sent, synced, write_frame

from sim.an3155 import ACK, FLASH_BASE, NACK, An3155Hub, Mode, Timer, Vanish
from sim.faults import (
    GRAMMAR,
    BlockFault,
    BlockFaultKind,
    ByteFaults,
    FaultPlan,
    fault_plan,
    parse_fault_spec,
)

Y, N = bytes([ACK]), bytes([NACK])


def test_every_kind_parses() -> None:
    plan = fault_plan(
        "nack=3x2, lostack=7,stall=9, stall=12:1.5,powerloss=20,vanish=30,corrupt=0.01,drop=0.5",
        slot=1,
    )
    assert [(f.kind.value, f.block, f.count, f.seconds) for f in plan.blocks] == [
        ("nack", 3, 2, math.inf),
        ("lostack", 7, 1, math.inf),
        ("stall", 9, 1, math.inf),
        ("stall", 12, 1, 1.5),
        ("powerloss", 20, 1, math.inf),
        ("vanish", 30, 1, math.inf),
    ]
    assert (plan.corrupt_rate, plan.drop_rate) == (0.01, 0.5)
    assert plan.at_block(4) is plan.blocks[0]
    assert plan.at_block(5) is None


def test_slot_prefix_and_override() -> None:
    spec = "nack=5,2:stall=5:2,corrupt=0.1,2:corrupt=0.2,3:vanish=1"
    one, two = fault_plan(spec, 1), fault_plan(spec, 2)
    assert one.at_block(5) == BlockFault(BlockFaultKind.NACK, 5, "nack=5")
    assert one.at_block(1) is None
    assert two.at_block(5) == BlockFault(BlockFaultKind.STALL, 5, "2:stall=5:2", seconds=2.0)
    assert (one.corrupt_rate, two.corrupt_rate) == (0.1, 0.2)
    assert fault_plan(spec, 3).at_block(1) is not None


def test_empty_spec_is_no_faults() -> None:
    assert parse_fault_spec("") == ()
    assert parse_fault_spec("  ") == ()
    assert fault_plan("", 4) == FaultPlan(slot=4)


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ("nack", "nack"),
        ("nack=x", "nack=x"),
        ("nack=3x0", "nack=3x0"),
        ("lostack=-1", "lostack=-1"),
        ("corrupt=2", "corrupt=2"),
        ("drop=abc", "drop=abc"),
        ("stall=3:0", "stall=3:0"),
        ("stall=3:inf", "stall=3:inf"),
        ("0:nack=1", "0:nack=1"),
        ("explode=1", "explode=1"),
        ("nack=1,,vanish=2", "empty"),
        ("powerloss=1.5", "powerloss=1.5"),
    ],
)
def test_bad_items_are_named_with_the_grammar(spec: str, bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        fault_plan(spec, 1)
    assert bad in str(caught.value)
    assert GRAMMAR in str(caught.value)


@pytest.mark.parametrize("spec", ["nack=3x3,vanish=5", "drop=0.1,drop=0.2", "2:stall=1,2:nack=1"])
def test_contradictions_in_one_slot_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="both"):
        fault_plan(spec, 2)


def test_random_source_is_fixed_by_seed_and_slot() -> None:
    plan = FaultPlan(slot=3, seed=7)
    assert plan.rng().random() == random.Random(7003).random()


@given(st.binary(min_size=1, max_size=200), st.integers(0, 5), st.integers(1, 8))
def test_byte_faults_are_deterministic_per_direction(data: bytes, seed: int, slot: int) -> None:
    plan = FaultPlan(slot=slot, seed=seed, corrupt_rate=0.3, drop_rate=0.2)
    rx1, tx1 = ByteFaults.pair(plan)
    rx2, _ = ByteFaults.pair(plan)
    # Chunking does not matter, nor does traffic in the other direction.
    half = len(data) // 2
    first, where1 = rx1.apply(data[:half])
    tx1.apply(data)
    second, where2 = rx1.apply(data[half:])
    whole, where = rx2.apply(data)
    assert first + second == whole
    assert where is not None and where1 is not None and where2 is not None
    assert where1 + [p + half for p in where2] == where
    for kept, pos in zip(whole, where, strict=True):
        assert bin(kept ^ data[pos]).count("1") <= 1  # at most one bit flipped


def test_byte_fault_extremes() -> None:
    dropper, _ = ByteFaults.pair(FaultPlan(drop_rate=1.0))
    assert dropper.apply(b"\x7f" * 50) == (b"", [])
    flipper, _ = ByteFaults.pair(FaultPlan(corrupt_rate=1.0))
    out, where = flipper.apply(b"\x7f" * 50)
    assert where == list(range(50))
    assert all(bin(b ^ 0x7F).count("1") == 1 for b in out)
    clean, _ = ByteFaults.pair(FaultPlan())
    assert clean.apply(b"abc") == (b"abc", None)


# --- block faults in the model ----------------------------------------------------------------


def faulty(spec: str) -> An3155Hub:
    return synced(An3155Hub(faults=fault_plan(spec, 1)))


def block(i: int) -> bytes:
    return bytes([i]) * 256


def test_nack_k_times_in_a_row_then_the_retry_lands() -> None:
    device = faulty("nack=1x2")
    assert sent(device.feed(write_frame(FLASH_BASE, block(0)))) == Y * 3
    for _ in range(2):
        assert sent(device.feed(write_frame(FLASH_BASE + 256, block(1)))) == Y + Y + N
        assert device.flash.read(FLASH_BASE + 256, 4) == b"\xff" * 4
    assert sent(device.feed(write_frame(FLASH_BASE + 256, block(1)))) == Y * 3
    assert device.flash.read(FLASH_BASE + 256, 256) == block(1)


def test_lostack_programs_the_block_but_sends_no_ack() -> None:
    device = faulty("lostack=0")
    out = device.feed(write_frame(FLASH_BASE, block(7)))
    assert sent(out) == Y + Y
    assert out[-1].busy_s > 0  # the programming time is still spent
    assert device.flash.read(FLASH_BASE, 256) == block(7)
    assert device.at_command_boundary
    assert sent(device.feed(b"\x7f\x7f")) == N  # still synced: a re-sync is NACKed


def test_stall_for_seconds_then_back_to_commands() -> None:
    device = faulty("stall=0:2.5")
    out = device.feed(write_frame(FLASH_BASE, block(1)) + b"\x00\xff")
    assert sent(out) == Y + Y
    timer = out[-1]
    assert isinstance(timer, Timer)
    assert (timer.delay_s, timer.fault) == (2.5, True)
    assert device.mode is Mode.STALLED
    assert device.feed(b"\x00\xff") == []
    device.timer_expired(timer.token)
    assert device.at_command_boundary
    assert device.flash.read(FLASH_BASE, 4) == b"\xff" * 4  # the stalled block was dropped
    assert sent(device.feed(b"\x02\xfd")) == bytes.fromhex("79 01 04 62 79")


def test_stall_forever() -> None:
    device = faulty("stall=0")
    out = device.feed(write_frame(FLASH_BASE, block(1)))
    timer = out[-1]
    assert isinstance(timer, Timer) and timer.delay_s == math.inf
    assert device.settle() == []
    assert device.mode is Mode.STALLED


def test_powerloss_half_programs_and_restarts_unsynced() -> None:
    device = faulty("powerloss=1")
    device.feed(write_frame(FLASH_BASE, block(1)))
    out = device.feed(write_frame(FLASH_BASE + 256, block(2)) + b"\x7f")
    assert sent(out) == Y + Y + Y  # command, address, then the fresh sync
    assert device.flash.read(FLASH_BASE + 256, 256) == block(2)[:128] + b"\xff" * 128
    assert device.write_blocks == 0  # counted from 0 again after power-on
    assert device.mode is Mode.BOOTLOADER
    # The fault fired once: the same block number after power-on goes through.
    device.feed(write_frame(FLASH_BASE + 1024, block(3)))
    assert sent(device.feed(write_frame(FLASH_BASE + 2048, block(4)))) == Y * 3


def test_vanish_is_the_last_thing_the_device_does() -> None:
    device = faulty("vanish=0")
    out = device.feed(write_frame(FLASH_BASE, block(1)) + b"\x00\xff")
    assert sent(out) == Y + Y
    assert isinstance(out[-1], Vanish)
    assert device.mode is Mode.GONE
    assert device.feed(b"\x7f") == []


def test_block_faults_ignore_writes_outside_main_flash() -> None:
    device = faulty("nack=0")
    assert sent(device.feed(write_frame(0x2000_3000, b"\0" * 4))) == Y * 3
    assert sent(device.feed(write_frame(FLASH_BASE, b"\0" * 4))) == Y + Y + N


def test_invalid_block_at_a_powerloss_is_just_nacked() -> None:
    device = faulty("powerloss=0")
    frame = bytearray(write_frame(FLASH_BASE, block(5)))
    frame[-1] ^= 0xFF  # bad checksum: the device refuses it before programming
    assert sent(device.feed(bytes(frame))) == Y + Y + N
    assert device.mode is Mode.BOOTLOADER
    assert sent(device.feed(read_frame(FLASH_BASE, 4))) == Y * 3 + b"\xff" * 4

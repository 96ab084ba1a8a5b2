"""Low-latency mode on open, and what the port ended up with.

A fake sysfs tree stands in for an FTDI port's ``latency_timer`` (a real read-only sysfs
file for one that cannot be written); pseudo-terminals, ``loop://`` and the in-process
simulated hubs are real ports.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from drivers.transport.latency import AdapterLatency, set_low_latency
from drivers.transport.serial import SerialLink
from sim.urlhandler import register
from sim.urlhandler.protocol_sim import forget_hubs


@pytest.fixture(autouse=True)
def sim_urls() -> Iterator[None]:
    register()
    forget_hubs()
    yield
    forget_hubs()


def ftdi_sysfs(root: Path, name: str, value: str | None = "16") -> Path:
    folder = root / "bus" / "usb-serial" / "devices" / name
    folder.mkdir(parents=True)
    timer = folder / "latency_timer"
    if value is not None:
        timer.write_text(f"{value}\n")
    return timer


def test_an_ftdi_timer_is_set_to_1_ms_and_read_back(tmp_path: Path) -> None:
    timer = ftdi_sysfs(tmp_path, "ttyUSB7")
    port = serial.serial_for_url("loop://")
    got = set_low_latency(port, "/dev/ttyUSB7", sysfs=tmp_path)
    assert timer.read_text().strip() == "1"
    assert got.ms == 1.0 and not got.high
    assert "FTDI latency_timer 16 -> 1 ms" in got.detail
    assert got.low_latency is None or "no low-latency mode" in got.detail


def test_a_timer_that_cannot_be_written_is_recorded_as_it_is(tmp_path: Path) -> None:
    readonly = Path("/sys/class/net/lo/type")  # sysfs refuses writes, even root's: 772
    if not readonly.exists():
        pytest.skip("no /sys/class/net/lo/type to stand for a read-only timer")
    folder = ftdi_sysfs(tmp_path, "ttyUSB3", value=None).parent
    (folder / "latency_timer").symlink_to(readonly)
    got = set_low_latency(serial.serial_for_url("loop://"), "/dev/ttyUSB3", sysfs=tmp_path)
    assert got.ms == 772.0 and got.high
    assert "could not be written" in got.detail


def test_a_pseudo_terminal_refuses_low_latency_mode_and_says_so() -> None:
    master, slave = os.openpty()
    try:
        with SerialLink(os.ttyname(slave), parity="none") as link:
            adapter = link.adapter
    finally:
        os.close(master)
        os.close(slave)
    assert isinstance(adapter, AdapterLatency)
    assert adapter.low_latency is False and adapter.ms is None and not adapter.high
    assert "refused low-latency mode" in adapter.detail


def _round_trip(port: serial.Serial, command: bytes) -> float:
    """Seconds from an AN3155 command to the first byte of its answer (an ACK)."""
    port.reset_input_buffer()
    t0 = time.monotonic()
    port.write(command)
    assert port.read(1) == b"\x79"
    took = time.monotonic() - t0
    time.sleep(0.05)  # the rest of the answer, then nothing
    port.reset_input_buffer()
    return took


def test_a_simulated_hub_models_16_ms_until_low_latency_is_asked_for() -> None:
    url = "sim://an3155?slot=1&seed=91&baud=115200"
    port = serial.serial_for_url(url, timeout=1.0)
    try:
        assert port.latency_timer_ms == 16.0
        time.sleep(0.2)  # the bootloader starts after power-on
        slow = _round_trip(port, b"\x7f")  # sync
        port.set_low_latency_mode(True)
        assert port.latency_timer_ms == 1.0
        fast = min(_round_trip(port, b"\x01\xfe") for _ in range(3))  # Get Version
    finally:
        port.close()
    wire = 2 * 11 / 115200  # 0x7F out, ACK back, 8E1
    assert slow >= 0.016 + wire  # never faster than the adapter it models
    assert 0.001 + wire <= fast < slow - 0.010


def test_the_station_asks_every_local_port_for_low_latency() -> None:
    with SerialLink("sim://an3155?slot=2&seed=91") as link:
        assert link.adapter is not None
        assert link.adapter.low_latency is True and link.adapter.ms == 1.0
        assert "low-latency mode set" in link.adapter.detail
    # An adapter whose driver ignores the flag stays at its latency: a warning, not a guess.
    with SerialLink("sim://an3155?slot=3&seed=91&latency-ms=16") as link:
        assert link.adapter is not None and link.adapter.ms == 16.0 and link.adapter.high

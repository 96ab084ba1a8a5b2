"""Simulated slot power: a hub without power answers nothing and loses its RAM, flash keeps;
the boot pin is sampled as power comes back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from sim.power import PowerBoard, main
from sim.urlhandler import register
from sim.urlhandler.protocol_sim import forget_hubs

register()


@pytest.fixture(autouse=True)
def _fresh_hubs():
    forget_hubs()
    yield
    forget_hubs()


def url(board: Path, protocol: str = "an3155", **extra: str) -> str:
    options = {"slot": "2", "firmware": "1.2.0.0", "start-in": "app", "power": str(board)}
    options.update(extra)
    return f"sim://{protocol}?" + "&".join(f"{k}={v}" for k, v in options.items())


def read_for(port: serial.Serial, seconds: float) -> bytes:
    end = time.monotonic() + seconds
    got = b""
    while time.monotonic() < end:
        got += port.read(port.in_waiting or 1)
    return got


def cycle(board: PowerBoard, channel: int) -> None:
    board.switch(channel, False)
    board.switch(channel, True)


def test_a_hub_without_power_answers_nothing(tmp_path: Path) -> None:
    board = PowerBoard(tmp_path)
    board.switch(2, False)
    with serial.serial_for_url(url(tmp_path, **{"start-in": "bootloader"}), timeout=0.1) as port:
        port.write(b"\x7f")
        assert read_for(port, 0.3) == b""
        board.switch(2, True)
        port.write(b"\x7f")
        assert port.read(1) == b"\x79"  # powered, strapped: its bootloader syncs


def test_power_cycle_with_the_boot_line_held_enters_the_an3155_bootloader(tmp_path: Path) -> None:
    board = PowerBoard(tmp_path)
    with serial.serial_for_url(url(tmp_path, lines="boot=dtr"), timeout=0.2) as port:
        assert b"READY" in read_for(port, 0.3)  # running its application
        port.dtr = True  # boot pin held
        cycle(board, 2)
        port.write(b"\x7f")
        assert port.read(1) == b"\x79"
        port.write(b"\x7f")
        assert port.read(1) == b""  # synced: 0x7F now starts a command (it waits for more)
        cycle(board, 2)  # RAM lost: the bootloader waits for its sync byte again
        port.write(b"\x7f")
        assert port.read(1) == b"\x79"


def test_power_cycle_with_the_boot_line_released_runs_the_application(tmp_path: Path) -> None:
    board = PowerBoard(tmp_path)
    with serial.serial_for_url(url(tmp_path, lines="boot=rts"), timeout=0.2) as port:
        assert b"READY" in read_for(port, 0.3)
        port.rts = False
        cycle(board, 2)
        assert b"CHUB APP 0x01020000 READY" in read_for(port, 0.4)  # flash kept


def test_power_cycle_with_the_boot_line_held_enters_the_gecko_bootloader(tmp_path: Path) -> None:
    board = PowerBoard(tmp_path)
    u = url(tmp_path, "gecko", lines="boot=dtr")
    with serial.serial_for_url(u, timeout=0.2) as port:
        assert b"READY" in read_for(port, 0.3)
        port.dtr = True
        cycle(board, 2)
        assert b"Gecko Bootloader" in read_for(port, 0.3)


def test_a_stuck_channel_keeps_the_hub_powered(tmp_path: Path) -> None:
    board = PowerBoard(tmp_path)
    board.set_stuck(2)
    u = url(tmp_path, **{"start-in": "bootloader"})
    with serial.serial_for_url(u, timeout=0.2) as port:
        board.switch(2, False)
        port.write(b"\x7f")
        assert port.read(1) == b"\x79"


def test_without_a_boot_line_modem_lines_are_refused_as_on_a_pty(tmp_path: Path) -> None:
    port = serial.serial_for_url(url(tmp_path), timeout=0.2)
    with port, pytest.raises(serial.SerialException, match="Inappropriate ioctl"):
        port.dtr = False


def test_bad_power_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(serial.SerialException, match="unknown option"):
        serial.serial_for_url(url(tmp_path, **{"power-board": "x"}))


def test_the_relay_tool_switches_a_channel(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "4", "off"]) == 0
    assert capsys.readouterr().out == "channel 4 off\n"
    assert PowerBoard(tmp_path).read(4).offs == 1
    done = subprocess.run(
        [sys.executable, "-m", "sim.power", str(tmp_path), "4", "on"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and PowerBoard(tmp_path).read(4).on
    assert main([str(tmp_path), "0", "on"]) == 2

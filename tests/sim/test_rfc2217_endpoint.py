"""Simulated hubs over RFC 2217 (sim.rfc2217, ``station sim --rfc2217``): third-party
clients toggling DTR/RTS reach the hub's pins over the network, no pseudo-terminal."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import serial

from sim import urlhandler
from sim.pty import HubSpec, derive_eui64
from sim.rfc2217 import Rfc2217Endpoint, pin_faults_for, sim_url
from sim.urlhandler.protocol_sim import forget_hubs, parse_url


@pytest.fixture(autouse=True)
def _fresh_hubs() -> Iterator[None]:
    urlhandler.register()
    forget_hubs()
    yield
    forget_hubs()


def test_pyserial_client_resets_the_hub_into_its_bootloader() -> None:
    """pyserial's own RFC 2217 client, driving the lines as esptool's classic reset does."""
    url = "sim://an3155?firmware=1.1.0.0&start-in=app&lines=reset=rts,boot=dtr"
    with Rfc2217Endpoint(url, 0) as endpoint:
        port = serial.serial_for_url(endpoint.url, timeout=1)  # its open sets DTR and RTS
        try:
            port.dtr, port.rts = True, True  # boot pin active, reset held
            time.sleep(0.05)
            port.rts = False
            time.sleep(0.01)
            port.dtr = False
            port.reset_input_buffer()
            port.write(b"\x7f")
            assert port.read(1) == b"\x79"
            port.write(b"\x02\xfd")  # Get ID
            assert port.read(5) == b"\x79\x01\x04\x62\x79"
        finally:
            port.close()


def test_stm32loader_resets_and_reads_over_rfc2217() -> None:
    """stm32loader's own reset into system memory (DTR -> NRST, RTS -> BOOT0, its
    defaults) and Get ID, through a pyserial RFC 2217 port."""
    stm32loader = pytest.importorskip("stm32loader.bootloader")
    uart = pytest.importorskip("stm32loader.uart")
    url = "sim://an3155?firmware=1.1.0.0&start-in=app&lines=reset=dtr,boot=-rts"
    with Rfc2217Endpoint(url, 0) as endpoint:
        connection = uart.SerialConnection(endpoint.url)
        connection.serial_connection = serial.serial_for_url(endpoint.url, timeout=5)
        try:
            loader = stm32loader.Stm32Bootloader(connection, verbosity=0)
            loader.reset_from_system_memory()
            assert loader.get_id() == 0x462
            loader.reset_from_flash()
            port = connection.serial_connection
            port.reset_input_buffer()
            port.write(b"VER?\r\n")
            assert port.read_until(b"VER 0x01010000\r\n").endswith(b"VER 0x01010000\r\n")
        finally:
            connection.disconnect()


def test_sim_url_describes_the_same_hub() -> None:
    spec = HubSpec(slot=3, eui64=derive_eui64(7, 3), seed=7, firmware=0x01020304, protocol="gecko")
    url = sim_url(spec, lines="reset=rts,boot=dtr", pin_faults="stuck-boot")
    assert parse_url(url) == spec


def test_pin_fault_items_per_slot() -> None:
    assert pin_faults_for("stuck-boot,2:two-resets", 2) == "stuck-boot,two-resets"
    assert pin_faults_for("2:two-resets", 1) == ""
    with pytest.raises(ValueError, match="unknown pin fault"):
        pin_faults_for("1:stuck", 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_station_sim_rfc2217_serves_each_slot() -> None:
    base = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim",
            "--rfc2217",
            str(base),
            "--hubs",
            "2",
            "--firmware",
            "1.1.0.0",
            "--start-in",
            "app",
            "--lines",
            "reset=rts,boot=dtr",
            "--pin-faults",
            "2:stuck-boot",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        hubs = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [h["port"] for h in hubs] == [f"rfc2217://127.0.0.1:{base + i}" for i in (0, 1)]
        assert hubs[0]["profile"] == "demo-an3155-lines"
        for hub, boots in zip(hubs, (True, False), strict=True):
            port = serial.serial_for_url(hub["port"], timeout=1)
            try:
                port.dtr, port.rts = True, True
                time.sleep(0.05)
                port.rts = False
                time.sleep(0.03)
                port.reset_input_buffer()
                port.write(b"\x7f")
                assert (port.read(1) == b"\x79") is boots
            finally:
                port.close()
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--lines", "reset=rts"], "need --rfc2217"),
        (["--rfc2217", "7000", "--lines", "reset=xyz"], "expected dtr"),
        (["--rfc2217", "7000", "--pin-faults", "loose"], "unknown pin fault"),
        (["--rfc2217", "65535", "--hubs", "2"], "beyond TCP port 65535"),
        (["--protocol", "dfu", "--rfc2217", "7000"], "DFU hubs are USB devices"),
    ],
)
def test_bad_rfc2217_settings_exit_2(args: list[str], says: str) -> None:
    argv = [sys.executable, "-m", "sim", *args]
    if "--hubs" not in args:
        argv += ["--hubs", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr

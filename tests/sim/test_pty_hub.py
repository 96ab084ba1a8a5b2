"""Simulated hubs on real pseudo-terminals, driven through real pyserial."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import serial
from simkit import (
    addr,
    ask,
    checksum_frame,
    cmd,
    read_frame,
    read_line,
    read_n,
    write_frame,
)

from drivers.crc import stm32_crc, xor8
from firmware_images.build import demo_payload
from sim.an3155 import FLASH_BASE, OTP_BASE
from sim.pty import HubSpec, SimHub, SimStartError, _poll_until, derive_eui64

Y, N = b"\x79", b"\x1f"
GET_REPLY = bytes.fromhex("79 0C 31 00 01 02 11 21 31 44 63 73 82 92 A1 79")
StartHub = Callable[..., SimHub]
OpenSerial = Callable[..., serial.Serial]


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until true or ``timeout_s``; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def process_gone(pid: int) -> bool:
    """Exited (a zombie left for an init that does not reap counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.parametrize("parity", [serial.PARITY_EVEN, serial.PARITY_NONE])
def test_sync_get_and_identity(start_hub: StartHub, open_serial: OpenSerial, parity: str) -> None:
    hub = start_hub(firmware=0x01020304, hw_version=3)
    port = open_serial(hub.port, parity)
    port.write(b"\x7f")
    assert read_n(port, 1) == Y
    port.write(cmd(0x00))
    assert read_n(port, 16) == GET_REPLY
    port.write(cmd(0x01) + cmd(0x02))
    assert read_n(port, 10) == bytes.fromhex("79 31 00 00 79 79 01 04 62 79")
    port.write(read_frame(OTP_BASE, 16))
    reply = read_n(port, 19)
    assert reply == Y * 3 + b"HBID" + bytes.fromhex("00DB1234567890A0") + b"\x03\x00\x00\x00"


def test_write_read_back_and_checksum_unpaced(start_hub: StartHub, open_serial: OpenSerial) -> None:
    hub = start_hub(paced=False)
    port = open_serial(hub.port)
    port.write(b"\x7f")
    assert read_n(port, 1) == Y
    image = bytes(range(256)) * 16
    for offset in range(0, len(image), 256):
        port.write(write_frame(FLASH_BASE + offset, image[offset : offset + 256]))
        assert read_n(port, 3) == Y * 3
    for offset in range(0, len(image), 256):
        port.write(read_frame(FLASH_BASE + offset, 256))
        assert read_n(port, 259) == Y * 3 + image[offset : offset + 256]
    port.write(checksum_frame(FLASH_BASE, len(image)))
    crc = stm32_crc(image).to_bytes(4, "big")
    assert read_n(port, 9) == Y * 4 + crc + bytes([xor8(crc)])
    port.write(write_frame(FLASH_BASE, image[:256]))  # programmed words: refused
    assert read_n(port, 3) == Y + Y + N


def test_go_boots_the_application_and_its_console(
    start_hub: StartHub, open_serial: OpenSerial
) -> None:
    hub = start_hub(firmware=0x01020304, hw_version=2)
    assert hub.mode == "bootloader"
    port = open_serial(hub.port)
    port.write(b"\x7f" + cmd(0x21) + addr(FLASH_BASE))
    assert read_n(port, 3) == Y * 3
    assert read_line(port) == b"CHUB APP 0x01020304 READY\r\n"
    port.write(b"VER?\r\nEUI?\nHW?\rNOPE\r\n")
    assert [read_line(port) for _ in range(4)] == [
        b"VER 0x01020304\r\n",
        b"EUI 00-DB-12-34-56-78-90-A0\r\n",
        b"HW 2\r\n",
        b"ERR unknown command\r\n",
    ]
    port.write(b"BOOT\r\n")
    assert read_line(port) == b"OK BOOT\r\n"
    port.write(b"\x7f")
    assert read_n(port, 1) == Y  # the bootloader, waiting for a fresh sync


def test_a_hub_started_in_its_application(start_hub: StartHub, open_serial: OpenSerial) -> None:
    hub = start_hub(firmware=0x0A0B0C0D, start_in="app")
    assert hub.mode == "app"
    port = open_serial(hub.port)
    assert ask(port, b"VER?\r\n", b"VER ") == b"VER 0x0A0B0C0D\r\n"


def test_ground_truth_is_the_models_not_the_lines(
    start_hub: StartHub, open_serial: OpenSerial
) -> None:
    """A hub whose line is all noise still tells a campaign what it runs and holds."""
    hub = start_hub(firmware=0x0A0B0C0D, start_in="app", faults="corrupt=0.9", paced=False)
    truth = hub.ground_truth(8192)
    image = demo_payload(0x0A0B0C0D, size=64 * 1024)[:8192]
    assert truth == {
        "mode": "app",
        "running": 0x0A0B0C0D,
        "sha256": hashlib.sha256(image).hexdigest(),
    }
    port = open_serial(hub.port)
    port.write(b"BOOT\r\n")  # garbled on the way: the hub stays in its application
    assert hub.ground_truth(8192)["mode"] == "app"
    hub.stop()
    with pytest.raises(SimStartError):
        hub.ground_truth(8192)


def test_blank_hub_started_in_app_mode_is_in_its_bootloader(
    start_hub: StartHub, open_serial: OpenSerial
) -> None:
    hub = start_hub(start_in="app")
    assert hub.mode == "bootloader"
    port = open_serial(hub.port)
    port.write(b"\x7f")
    assert read_n(port, 1) == Y


def test_paced_hub_is_never_faster_than_the_wire(
    start_hub: StartHub, open_serial: OpenSerial
) -> None:
    hub = start_hub(firmware=0x01020304)
    port = open_serial(hub.port)
    bt = 11 / 115200
    port.write(b"\x7f")
    assert read_n(port, 1) == Y
    port.write(cmd(0x11) + addr(FLASH_BASE))
    assert read_n(port, 2) == Y + Y
    start = time.monotonic()
    port.write(b"\xff\x00")
    data = read_n(port, 257)
    elapsed = time.monotonic() - start
    assert data == Y + demo_payload(0x01020304)[:256]
    assert elapsed >= (2 + 257) * bt  # request in, then ACK and 256 bytes out
    block = write_frame(FLASH_BASE + 0x1_0000, bytes(256))
    start = time.monotonic()
    port.write(block)
    assert read_n(port, 3) == Y * 3
    assert time.monotonic() - start >= len(block) * bt + 256 / 8 * 81.7e-6 + bt


def test_host_can_close_and_reopen_the_port(start_hub: StartHub, open_serial: OpenSerial) -> None:
    hub = start_hub(paced=False)
    first = open_serial(hub.port)
    first.write(b"\x7f")
    assert read_n(first, 1) == Y
    first.close()
    for _ in range(3):
        # 8N1: the hub holds its slave open, so the tty keeps the last host's settings, and
        # glibc's tcsetattr reports EINVAL when a request differs from them only by PARENB.
        again = open_serial(hub.port, serial.PARITY_NONE)
        again.write(cmd(0x02))
        assert read_n(again, 5) == bytes.fromhex("79 01 04 62 79")  # still synced
        again.close()
    assert hub.alive


def test_info_stop_and_alive(start_hub: StartHub) -> None:
    hub = start_hub(slot=4, eui64=derive_eui64(9, 4), firmware=0x01020304)
    assert hub.info() == {
        "slot": 4,
        "port": hub.port,
        "profile": "demo-an3155",
        "eui64": derive_eui64(9, 4),
        "firmware": "0x01020304",
    }
    assert os.path.exists(hub.port) and hub.alive
    hub.stop()
    assert not hub.alive
    hub.stop()  # idempotent
    assert wait_until(lambda: not os.path.exists(hub.port))


def test_blank_hub_info_has_no_firmware(start_hub: StartHub) -> None:
    assert start_hub().info()["firmware"] is None


def test_sigterm_stops_a_hub(start_hub: StartHub) -> None:
    hub = start_hub()
    assert hub.pid is not None
    os.kill(hub.pid, signal.SIGTERM)
    assert wait_until(lambda: not hub.alive)


def test_hub_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from sim.pty import HubSpec, SimHub\n"
        "if __name__ == '__main__':\n"
        "    spec = HubSpec(slot=1, eui64='00-DB-12-00-00-00-00-01', protocol='an3155')\n"
        "    hub = SimHub.start(spec)\n"
        "    print(hub.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not process_gone(pid)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: process_gone(pid))
    finally:
        parent.kill()
        parent.wait()


def test_specs_are_validated_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="EUI-64"):
        HubSpec(slot=1, eui64="00:DB:12:34:56:78:90:A0", protocol="an3155")
    with pytest.raises(ValueError, match="bogus"):
        HubSpec(slot=1, eui64=derive_eui64(0, 1), faults="bogus=1", protocol="an3155")
    with pytest.raises(ValueError, match="start_in"):
        HubSpec(slot=1, eui64=derive_eui64(0, 1), start_in="dfu", protocol="an3155")
    with pytest.raises(ValueError, match="slot"):
        HubSpec(slot=0, eui64=derive_eui64(0, 1), protocol="an3155")
    with pytest.raises(ValueError, match="firmware size"):
        HubSpec(slot=1, eui64=derive_eui64(0, 1), firmware=1, firmware_size=1022, protocol="an3155")
    assert (
        HubSpec(slot=1, eui64="00-db-12-34-56-78-90-a0", protocol="an3155").eui64
        == "00-DB-12-34-56-78-90-A0"
    )


def test_derived_eui64s_are_deterministic_and_distinct() -> None:
    euis = [derive_eui64(1, slot) for slot in range(1, 65)]
    assert euis == [derive_eui64(1, slot) for slot in range(1, 65)]
    assert len(set(euis)) == 64
    assert all(e.startswith("00-DB-12-") and len(e) == 23 for e in euis)
    assert derive_eui64(2, 1) != derive_eui64(1, 1)


def test_poll_until_never_returns_early_and_sees_input_at_once() -> None:
    reader, writer = os.pipe()
    try:
        due = time.monotonic() + 0.002
        assert _poll_until(due, [reader]) == []
        assert time.monotonic() >= due  # a delivery is never early
        os.write(writer, b"x")
        assert _poll_until(time.monotonic() + 60.0, [reader]) == [reader]  # input first
    finally:
        os.close(reader)
        os.close(writer)

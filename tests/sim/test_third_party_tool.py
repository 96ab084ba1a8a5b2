"""A third-party tool, stm32flash, programs a simulated hub through its pseudo-terminal.

This is the proof that the simulated hub speaks AN3155 as ST's bootloader does, not just as
our driver expects. Skipped when stm32flash is not installed (.ci/run installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.an3155 import An3155Driver
from drivers.console import AppConsole
from drivers.crc import stm32_crc
from drivers.transport.serial import SerialLink
from firmware_images.build import demo_payload
from sim.pty import SimHub

STM32FLASH = shutil.which("stm32flash")


@pytest.mark.skipif(STM32FLASH is None, reason="stm32flash is not installed")
def test_stm32flash_writes_verifies_and_starts_the_app(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    assert STM32FLASH is not None
    payload = demo_payload(0x0105_0000, size=8 * 1024)
    image = tmp_path / "app.bin"
    image.write_bytes(payload)
    hub = start_hub(firmware=None)
    # -m 8n1: a pseudo-terminal keeps no parity bit; -v reads every block back;
    # -g starts the application, whose console must then report the new version.
    done = subprocess.run(
        [
            STM32FLASH,
            "-b",
            "115200",
            "-m",
            "8n1",
            "-w",
            str(image),
            "-v",
            "-g",
            "0x08000000",
            "-S",
            "0x08000000",
            hub.port,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-500:] + done.stderr[-500:]
    assert "Wrote and verified address 0x08002000 (100.00%)" in done.stdout
    with SerialLink(hub.port) as link:
        console = AppConsole(link)
        # The application takes a moment to start after stm32flash's Go, as on a real
        # part: ask until it answers.
        running = next((v for _ in range(10) if (v := console.version(0.2)) is not None), None)
        assert running == 0x0105_0000
        console.enter_bootloader()
        drv = An3155Driver(link)
        drv.sync()
        drv.identify()
        assert drv.get_checksum(0x0800_0000, len(payload)) == stm32_crc(payload)

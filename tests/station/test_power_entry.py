"""Entering the bootloader by a power cycle with the boot pin held, through flash_hub, on
sim:// hubs that take their power from a simulated relay board switched by a command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from firmware_images.loader import LoadedImage, load_image
from sim.gecko import demo_gbl
from sim.power import PowerBoard
from sim.urlhandler import register
from sim.urlhandler.protocol_sim import forget_hubs
from station.flash import Policy, Result, flash_hub
from station.power import PowerSpec, slot_power
from station.profiles import load_profile

from ..conftest import NEW, OLD

register()
AN3155 = load_profile("demo-an3155")
UNSIGNED = Policy(allow_unsigned=True)
GECKO = load_profile("demo-gecko")


@pytest.fixture(autouse=True)
def _fresh_hubs():
    forget_hubs()
    yield
    forget_hubs()


def power(board: Path, profile, *, boot_line: str = "dtr", entry: bool = True):
    words = (sys.executable, "-m", "sim.power", str(board), "{slot}", "{state}")
    spec = PowerSpec(command=words, off_s=0.05, settle_s=0.05, entry=entry, boot_line=boot_line)
    return slot_power(2, spec, "bench-1", profile=profile)


def hub_url(protocol: str, board: Path, boot_line: str = "dtr") -> str:
    return (
        f"sim://{protocol}?slot=2&firmware=0x{OLD:08X}&start-in=app&power={board}"
        f"&boot-line={boot_line}&unpaced"
    )


@pytest.fixture(scope="module")
def gbl(tmp_path_factory: pytest.TempPathFactory) -> LoadedImage:
    path = tmp_path_factory.mktemp("gbl") / "app.gbl"
    path.write_bytes(demo_gbl(NEW, size=16 * 1024))
    return load_image(path, default_address=GECKO.app_address)


def test_an3155_hub_enters_its_bootloader_by_power_cycle(tmp_path: Path, new_image) -> None:
    url = hub_url("an3155", tmp_path)
    out = flash_hub(url, AN3155, new_image, policy=UNSIGNED, power=power(tmp_path, AN3155))
    assert out.result is Result.PASSED, out.message
    assert out.found_in == "bootloader"  # not through its application's BOOT command
    assert any("power-cycled by command" in note for note in out.notes)
    assert out.version_after == f"0x{NEW:08X}"
    assert PowerBoard(tmp_path).read(2).offs == 1


def test_without_power_entry_the_same_hub_is_found_running(tmp_path: Path, new_image) -> None:
    url = hub_url("an3155", tmp_path)
    out = flash_hub(
        url, AN3155, new_image, policy=UNSIGNED, power=power(tmp_path, AN3155, entry=False)
    )
    assert out.result is Result.PASSED and out.found_in == "application"
    assert PowerBoard(tmp_path).read(2).offs == 0


def test_gecko_hub_enters_its_bootloader_by_power_cycle(tmp_path: Path, gbl) -> None:
    url = hub_url("gecko", tmp_path, "rts")
    policy = Policy(allow_unsigned=True)
    out = flash_hub(url, GECKO, gbl, policy=policy, power=power(tmp_path, GECKO, boot_line="rts"))
    assert out.result is Result.PASSED, out.message
    assert out.found_in == "bootloader"
    assert out.version_after == f"0x{NEW:08X}"


@pytest.mark.parametrize(("wired", "said"), [("rts", "dtr"), ("dtr", "-dtr")])
def test_a_boot_line_on_the_wrong_wire_or_level_leaves_the_hub_in_its_application(
    tmp_path: Path, new_image, wired: str, said: str
) -> None:
    url = hub_url("an3155", tmp_path, wired)
    p = power(tmp_path, AN3155, boot_line=said)
    out = flash_hub(url, AN3155, new_image, policy=UNSIGNED, power=p)
    assert out.found_in == "application"  # the cycle happened, the pin was not held


def test_a_stuck_relay_fails_the_job_in_connect_and_says_so(tmp_path: Path, new_image) -> None:
    PowerBoard(tmp_path).set_stuck(2)
    url = hub_url("an3155", tmp_path)
    out = flash_hub(url, AN3155, new_image, policy=UNSIGNED, power=power(tmp_path, AN3155))
    assert out.result is Result.FAILED and out.phase == "connect"
    assert "still answers with its power off" in out.message

"""Entering the bootloader by a power cycle with the boot pin held, through flash_hub, on
sim:// hubs that take their power from a simulated relay board switched by a command, in
this process and over the RFC 2217 endpoint (the boot line's level reaches the hub over
the network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from firmware_images.loader import LoadedImage, load_image
from sim.gecko import demo_gbl
from sim.power import PowerBoard
from sim.rfc2217 import Rfc2217Endpoint
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
        f"&lines=boot={boot_line}&unpaced"
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


def test_entry_levels_follow_the_rig_then_the_profiles_wiring() -> None:
    from station.power import entry_levels

    lines = load_profile("demo-an3155-lines")  # reset on RTS (active set), boot on DTR
    assert entry_levels(None, lines) == {"dtr": True, "rts": False}  # boot held, not reset
    assert entry_levels("-dtr", lines) == {"dtr": False, "rts": False}
    assert entry_levels(None, AN3155) == {"dtr": True, "rts": False}  # no wiring: dtr
    assert entry_levels("rts", AN3155) == {"dtr": False, "rts": True}
    assert entry_levels("none", AN3155) == {"dtr": False, "rts": False}


def test_a_lines_fixture_enters_by_power_cycle_without_touching_reset(
    tmp_path: Path, new_image
) -> None:
    """A [lines] profile's boot wire holds the boot pin through the cycle; its reset wire
    is kept inactive (the hub is not held in reset while power comes back)."""
    lines = load_profile("demo-an3155-lines")
    url = (
        f"sim://an3155?slot=2&firmware=0x{OLD:08X}&start-in=app&power={tmp_path}"
        "&lines=reset=rts,boot=dtr&unpaced"
    )
    p = slot_power(
        2,
        PowerSpec(
            command=(sys.executable, "-m", "sim.power", str(tmp_path), "{slot}", "{state}"),
            off_s=0.05,
            settle_s=0.05,
            entry=True,
        ),
        "bench-1",
        profile=lines,
    )
    out = flash_hub(url, lines, new_image, policy=UNSIGNED, power=p)
    assert out.result is Result.PASSED, out.message
    assert any("power-cycled" in note for note in out.notes)


@pytest.mark.parametrize("protocol", ["an3155", "gecko"])
def test_power_cycle_entry_over_the_rfc2217_endpoint(
    tmp_path: Path, new_image, gbl, protocol: str
) -> None:
    profile = AN3155 if protocol == "an3155" else GECKO
    image = new_image if protocol == "an3155" else gbl
    with Rfc2217Endpoint(hub_url(protocol, tmp_path), 0) as endpoint:
        out = flash_hub(
            endpoint.url, profile, image, policy=UNSIGNED, power=power(tmp_path, profile)
        )
        assert out.result is Result.PASSED, out.message
        assert out.found_in == "bootloader"  # by the cycle, not its application's command
        assert out.version_after == f"0x{NEW:08X}"
        assert PowerBoard(tmp_path).read(2).offs == 1


def test_a_stuck_relay_over_the_rfc2217_endpoint_fails_in_connect(
    tmp_path: Path, new_image
) -> None:
    PowerBoard(tmp_path).set_stuck(2)
    with Rfc2217Endpoint(hub_url("an3155", tmp_path), 0) as endpoint:
        out = flash_hub(
            endpoint.url, AN3155, new_image, policy=UNSIGNED, power=power(tmp_path, AN3155)
        )
    assert out.result is Result.FAILED and out.phase == "connect"
    assert "still answers with its power off" in out.message

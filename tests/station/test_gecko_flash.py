"""`flash_hub` and `station flash` with the demo-gecko profile against simulated Gecko hubs.

As for AN3155, a hub is reported passed only when the bootloader accepted the GBL and the
new application runs and reports the image's version; every fault case ends in such a pass
(checked independently afterwards) or in a typed failure that names the phase.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import bincopy
import pytest

from drivers.console import AppConsole
from drivers.errors import ImageError
from drivers.gecko import GeckoDriver
from drivers.transport.serial import SerialLink
from drivers.types import no_progress
from firmware_images.loader import LoadedImage, load_image
from sim.gecko import APP_BASE, demo_app, demo_gbl
from sim.pty import SimHub
from station.cli import Exit, main
from station.flash import FlashOutcome, Policy, Result, flash_hub
from station.profiles import load_profile
from station.sessions.gecko import GeckoSession

from ..conftest import NEW, OLD

PROFILE = load_profile("demo-gecko")
# GBL files carry no signature the trust store checks: the override is explicit.
UNSIGNED_OK = Policy(allow_unsigned=True)
StartHub = Callable[..., SimHub]


@pytest.fixture(scope="module")
def gbl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gecko") / "app.gbl"
    path.write_bytes(demo_gbl(NEW, size=16 * 1024))
    return path


@pytest.fixture(scope="module")
def gbl_image(gbl_path: Path) -> LoadedImage:
    return load_image(gbl_path, default_address=PROFILE.app_address)


def gecko_hub(start_hub: StartHub, **kw: object) -> SimHub:
    return start_hub(protocol="gecko", **kw)


def assert_honest(out: FlashOutcome, hub: SimHub) -> None:
    """A pass must be true: the hub runs the new application (which the sim boots only when
    its descriptor and CRC are right), and its bootloader is reachable again."""
    if out.result is not Result.PASSED:
        assert out.phase, f"a failure must name its phase: {out}"
        assert out.message
        return
    assert out.version_after == f"0x{NEW:08X}" and out.verify_method == "bootloader-gbl"
    with SerialLink(hub.port, parity="none") as link:
        console = AppConsole(link)
        running = next((v for _ in range(10) if (v := console.version(0.2)) is not None), None)
        assert running == NEW
        assert console.eui64() == hub.spec.eui64 == out.eui64
        console.enter_bootloader()
        assert GeckoDriver(link).wait_menu(2.0) == "2.04.02"


@pytest.mark.parametrize("start_in", ["bootloader", "app"])
def test_pass_from_either_mode(start_hub: StartHub, gbl_image: LoadedImage, start_in: str) -> None:
    hub = gecko_hub(start_hub, start_in=start_in)
    out = flash_hub(hub.port, PROFILE, gbl_image, policy=UNSIGNED_OK)
    assert out.result is Result.PASSED, out.message
    assert out.found_in == ("application" if start_in == "app" else "bootloader")
    assert (out.version_before, out.version_after) == (f"0x{OLD:08X}", f"0x{NEW:08X}")
    assert out.eui64 == hub.spec.eui64 and out.hw_version == 2
    assert out.verify_detail is not None and "END CRC-32 0x" in out.verify_detail
    assert out.bytes_written == len(gbl_image.data)
    assert_honest(out, hub)


def test_blank_hub_learns_its_identity_from_the_new_application(
    start_hub: StartHub, gbl_image: LoadedImage
) -> None:
    hub = gecko_hub(start_hub, firmware=None)
    out = flash_hub(hub.port, PROFILE, gbl_image, policy=UNSIGNED_OK)
    assert (out.result, out.version_before, out.found_in) == (Result.PASSED, None, "bootloader")
    assert out.eui64 == hub.spec.eui64 and out.hw_version == 2
    assert any("no valid application in flash" in n for n in out.notes)
    assert_honest(out, hub)


def test_current_skipped_downgrade_and_wrong_hardware_refused(
    start_hub: StartHub, gbl_image: LoadedImage
) -> None:
    hub = gecko_hub(start_hub, firmware=NEW, firmware_size=16 * 1024, start_in="app")
    out = flash_hub(hub.port, PROFILE, gbl_image, policy=UNSIGNED_OK)
    assert (out.result, out.bytes_written) == (Result.SKIPPED, 0)
    hub = gecko_hub(start_hub, slot=2, firmware=0x0200_0000)
    out = flash_hub(hub.port, PROFILE, gbl_image, policy=UNSIGNED_OK)
    assert (out.result, out.phase) == (Result.REFUSED, "plan") and "downgrade" in out.message
    hub = gecko_hub(start_hub, slot=3, hw_version=7)
    out = flash_hub(hub.port, PROFILE, gbl_image, policy=UNSIGNED_OK)
    assert (out.result, out.phase) == (Result.REFUSED, "plan")
    assert "hardware version 7" in out.message


def test_an_image_that_is_not_a_gbl_is_refused(start_hub: StartHub, tmp_path: Path) -> None:
    hexfile = bincopy.BinFile()
    hexfile.add_binary(demo_app(NEW, size=4096), address=APP_BASE)
    path = tmp_path / "app.hex"
    path.write_text(hexfile.as_ihex())
    image = load_image(path)
    hub = gecko_hub(start_hub)
    # Refused before the port is opened: the protocol's plug-in says it takes GBLs only.
    with pytest.raises(ImageError, match="demo-gecko hubs \\(gecko\\) take gbl images, and this"):
        flash_hub(hub.port, PROFILE, image, policy=UNSIGNED_OK)
    with pytest.raises(ImageError, match="the Gecko bootloader takes GBL files, and this is a"):
        GeckoSession(hub.port, PROFILE).erase(image, no_progress)  # and its session, again


def test_readback_verify_is_refused(start_hub: StartHub, gbl_image: LoadedImage) -> None:
    hub = gecko_hub(start_hub)
    out = flash_hub(hub.port, PROFILE, gbl_image, policy=UNSIGNED_OK, verify="readback")
    assert (out.result, out.phase) == (Result.FAILED, "verify")
    assert "cannot read flash back" in out.message


# Each case: fault spec, whether it must pass, and what a note (pass) or the message says.
FAULTS = [
    ("nack=5", True, "upload: 1 block(s) needed more than one try: 6 (2 tries)"),
    ("nack=5x20", False, "NAK after 5 tries"),
    ("lostack=3", True, "4 (2 tries)"),
    ("powerloss=20", True, "upload block 21: the hub restarted (power loss?)"),
    ("stall=10:1.5", True, "11 (2 tries)"),
    ("stall=4", False, "no answer after 2 tries; then the hub stopped answering"),
    ("vanish=6", False, "failed"),
    ("corrupt=0.002", None, ""),
    ("drop=0.0001", None, ""),
]
CASES = [pytest.param(*case, id=case[0]) for case in FAULTS]


@pytest.mark.parametrize(("faults", "passes", "says"), CASES)
def test_fault_matrix(
    start_hub: StartHub,
    gbl_image: LoadedImage,
    faults: str,
    passes: bool | None,
    says: str,
) -> None:
    profile = PROFILE
    if faults == "stall=4":
        # A hub that never answers again: shorten only how long silence is waited out.
        profile = dataclasses.replace(PROFILE, ack_timeout_s=0.4, resync_timeout_s=0.5)
    hub = gecko_hub(start_hub, faults=faults, seed=3)
    out = flash_hub(hub.port, profile, gbl_image, policy=UNSIGNED_OK)
    assert_honest(out, hub)
    if passes is None:  # line noise: a verified pass or a typed failure, never a false pass
        assert out.result is Result.PASSED or out.phase == "write", out
        return
    if passes:
        assert out.result is Result.PASSED, out.message
        assert any(says in n for n in out.notes), out.notes
    else:
        assert (out.result, out.phase) == (Result.FAILED, "write"), out
        assert says in out.message, out.message


def test_station_flash_command(
    start_hub: StartHub, gbl_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = gecko_hub(start_hub, start_in="app")
    args = ["flash", "--port", hub.port, "--profile", "demo-gecko", str(gbl_path)]
    assert main(args) == Exit.REFUSED  # a GBL carries no signature we can check
    assert "--allow-unsigned" in capsys.readouterr().out
    assert main([*args, "--allow-unsigned", "--json"]) == Exit.PASSED
    result = json.loads(capsys.readouterr().out)
    assert (result["result"], result["version_after"]) == ("passed", f"0x{NEW:08X}")
    assert result["verify_method"] == "bootloader-gbl"
    assert result["overrides"] == ["allow-unsigned (image signature: unsigned)"]

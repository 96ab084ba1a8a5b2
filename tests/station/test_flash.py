"""`flash_hub` end to end against simulated hubs: outcomes, policy and the fault matrix.

The rule under test above all: a hub is reported passed only when the flash was verified
and the running version was read back. Every fault case ends either in a pass that an
independent check confirms, or in a typed failure that names the phase.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from drivers.an3155 import An3155Driver
from drivers.console import AppConsole
from drivers.crc import stm32_crc
from drivers.transport.serial import SerialLink
from firmware_images.loader import LoadedImage
from sim.pty import SimHub
from station.flash import FlashOutcome, Policy, Result, flash_hub
from station.profiles import load_profile

from ..conftest import NEW, OLD

PROFILE = load_profile("demo-an3155")
# These tests exercise the flash flow with unsigned HEX images: the override is explicit.
UNSIGNED_OK = Policy(allow_unsigned=True)


def assert_honest(out: FlashOutcome, hub: SimHub, image: LoadedImage) -> None:
    """A pass must be true: check the hub independently of the job that said so."""
    if out.result is not Result.PASSED:
        assert out.phase, f"a failure must name its phase: {out}"
        assert out.message
        return
    assert out.version_after == f"0x{NEW:08X}" and out.verify_method
    with SerialLink(hub.port) as link:
        console = AppConsole(link)
        assert console.version() == NEW  # the application really runs the new version
        console.enter_bootloader()
        drv = An3155Driver(link)
        drv.sync()
        drv.identify()
        assert drv.get_checksum(image.address, len(image.data)) == stm32_crc(image.data)


@pytest.mark.parametrize("start_in", ["bootloader", "app"])
def test_pass_from_either_mode(
    start_hub: Callable[..., SimHub], new_image: LoadedImage, start_in: str
) -> None:
    hub = start_hub(start_in=start_in)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert out.result is Result.PASSED, out.message
    assert out.found_in == ("application" if start_in == "app" else "bootloader")
    assert (out.version_before, out.version_after) == (f"0x{OLD:08X}", f"0x{NEW:08X}")
    assert out.eui64 == hub.spec.eui64 and out.hw_version == 2
    assert out.verify_method == "device-crc" and out.bytes_written == len(new_image.data)
    assert_honest(out, hub, new_image)


def test_readback_verify(start_hub: Callable[..., SimHub], new_image: LoadedImage) -> None:
    hub = start_hub()
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK, verify="readback")
    assert (out.result, out.verify_method) == (Result.PASSED, "readback")


def test_blank_hub(start_hub: Callable[..., SimHub], new_image: LoadedImage) -> None:
    hub = start_hub(firmware=None)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert (out.result, out.version_before) == (Result.PASSED, None)


def test_already_current_is_skipped_and_force_rewrites(
    start_hub: Callable[..., SimHub], new_image: LoadedImage
) -> None:
    hub = start_hub(firmware=NEW, firmware_size=len(new_image.data))
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert (out.result, out.bytes_written) == (Result.SKIPPED, 0)
    out = flash_hub(hub.port, PROFILE, new_image, policy=Policy(allow_unsigned=True, force=True))
    assert out.result is Result.PASSED


def test_downgrade_refused(start_hub: Callable[..., SimHub], new_image: LoadedImage) -> None:
    hub = start_hub(firmware=0x0200_0000)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert (out.result, out.phase) == (Result.REFUSED, "plan")
    assert "downgrade" in out.message and "2.0.0.0" in out.message


def test_wrong_hardware_refused_and_nothing_erased(
    start_hub: Callable[..., SimHub], new_image: LoadedImage
) -> None:
    hub = start_hub(hw_version=7)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert (out.result, out.phase) == (Result.REFUSED, "plan")
    assert "hardware version 7" in out.message
    again = flash_hub(
        hub.port, PROFILE, new_image, policy=UNSIGNED_OK
    )  # the old application is untouched
    assert again.version_before == f"0x{OLD:08X}"


# Each case: fault spec, whether it must pass, and what the note or message must say.
FAULTS = [
    ("nack=5", True, "write block 5 at 0x08000500: NACK"),
    ("nack=5x5", False, "write block 5 at 0x08000500: NACK after 5 tries"),
    ("lostack=3", True, "only the ACK was lost"),
    ("powerloss=20", True, "re-erased the page at 0x08001000"),
    ("stall=4", False, "stopped answering"),
    ("vanish=6", False, "failed"),
]


@pytest.mark.parametrize(("faults", "passes", "says"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_matrix(
    start_hub: Callable[..., SimHub],
    new_image: LoadedImage,
    faults: str,
    passes: bool,
    says: str,
) -> None:
    hub = start_hub(faults=faults)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    if passes:
        assert out.result is Result.PASSED, out.message
        assert any(says in n for n in out.notes), out.notes
        assert_honest(out, hub, new_image)
    else:
        assert out.result is Result.FAILED
        assert out.phase == "write"
        assert says in out.message, out.message


@pytest.mark.slow
@pytest.mark.parametrize("faults", ["corrupt=0.0005", "drop=0.0005", "stall=10:1.5"])
@pytest.mark.parametrize("seed", [1, 2])
def test_noisy_links_never_false_pass(
    start_hub: Callable[..., SimHub], new_image: LoadedImage, faults: str, seed: int
) -> None:
    hub = start_hub(faults=faults, seed=seed)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert_honest(out, hub, new_image)


def test_noise_is_survived(start_hub: Callable[..., SimHub], new_image: LoadedImage) -> None:
    """At a realistic error rate the retries carry the job to a confirmed pass."""
    hub = start_hub(faults="corrupt=0.0002", seed=5)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert out.result is Result.PASSED, out.message
    assert_honest(out, hub, new_image)


def test_unsigned_image_refused_without_override(
    start_hub: Callable[..., SimHub], new_image: LoadedImage
) -> None:
    hub = start_hub()
    out = flash_hub(hub.port, PROFILE, new_image)
    assert (out.result, out.phase) == (Result.REFUSED, "plan")
    assert "not signed" in out.message and out.signature == "unsigned"
    again = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert again.result is Result.PASSED
    assert again.overrides == ["allow-unsigned (image signature: unsigned)"]


@pytest.mark.parametrize(
    "half_sent",
    [
        bytes([0x44, 0xBB]),  # Extended Erase, its page count never sent
        bytes([0x44, 0xBB, 0x00]),  # half the page count
        bytes([0x31, 0xCE, 0x08, 0x00]),  # Write Memory, half its address
    ],
    ids=["erase-no-count", "erase-half-count", "write-half-address"],
)
def test_a_hub_left_mid_command_by_a_killed_station_is_flashed(
    start_hub: Callable[..., SimHub], new_image: LoadedImage, half_sent: bytes
) -> None:
    """A station killed between the bytes of a command leaves the bootloader waiting for
    the rest; our own sync bytes then read as, say, an erase of 0x7F7F pages. The next
    station must get through to it (it floods the command to its end), not fail it."""
    hub = start_hub(paced=True)
    profile = load_profile("demo-an3155")
    link = SerialLink(hub.port, baudrate=profile.baud, parity=profile.parity)
    link.open()
    driver = An3155Driver(link)
    driver.sync(timeout_s=2.0)
    link.write(half_sent)  # and the station dies here
    link.close()
    out = flash_hub(hub.port, profile, new_image, policy=UNSIGNED_OK)
    assert out.result is Result.PASSED, out.message
    assert_honest(out, hub, new_image)


@pytest.mark.parametrize("start_in", ["app", "bootloader"])
def test_a_hub_already_current_is_left_running_its_application(
    start_hub: Callable[..., SimHub], new_image: LoadedImage, start_in: str
) -> None:
    """Nothing written, and the hub goes back to its box running its firmware: the station
    entered the bootloader only to identify it (as stm32flash -g / esptool's hard reset)."""
    hub = start_hub(firmware=NEW, start_in=start_in)
    out = flash_hub(hub.port, PROFILE, new_image, policy=UNSIGNED_OK)
    assert out.result is Result.SKIPPED, out.message
    truth = hub.ground_truth(4096)
    assert (truth["mode"], truth["running"]) == ("app", NEW), truth

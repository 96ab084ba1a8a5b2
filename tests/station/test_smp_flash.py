"""`flash_hub` with the demo-smp profile against simulated MCUboot hubs (on pseudo-terminals).

A pass needs MCUboot's listing of the uploaded slot (its hash and version as the image says)
and the new application's running version read back; faults end in such a pass or a typed
failure naming its phase.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.console import AppConsole
from drivers.errors import ImageError
from drivers.transport.serial import SerialLink
from firmware_images.loader import LoadedImage, load_image
from firmware_images.trust import TrustStore, signature_refusal
from firmware_images.zigbee import ecdsa_p256_sign
from sim.pty import SimHub
from sim.smp import demo_app, demo_image
from station.cli import main
from station.flash import FlashOutcome, Policy, Result, flash_hub
from station.profiles import load_profile

from ..conftest import NEW, OLD

PROFILE = load_profile("demo-smp")
StartHub = Callable[..., SimHub]
KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> TrustStore:
    from cryptography.hazmat.primitives import serialization

    folder = tmp_path_factory.mktemp("smp-trust")
    (folder / "signer.pem").write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return TrustStore.from_dir(folder)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, trust: TrustStore) -> LoadedImage:
    path = tmp_path_factory.mktemp("smp") / "app.mcuboot.bin"
    path.write_bytes(demo_image(NEW, size=16 * 1024, sign=ecdsa_p256_sign(KEY)))
    loaded = load_image(path, default_address=PROFILE.app_address)
    checked = trust.check(loaded.parsed)
    assert signature_refusal(checked) is None  # signed by the trusted key
    return loaded


def smp_hub(start_hub: StartHub, **kw: object) -> SimHub:
    return start_hub(protocol="smp", **kw)


def assert_honest(out: FlashOutcome, hub: SimHub) -> None:
    if out.result is not Result.PASSED:
        assert out.phase and out.message
        return
    assert out.version_after == f"0x{NEW:08X}" and out.verify_method == "bootloader-hash"
    with SerialLink(hub.port, parity="none") as link:
        console = AppConsole(link)
        running = next((v for _ in range(10) if (v := console.version(0.2)) is not None), None)
        assert running == NEW


@pytest.mark.parametrize("start_in", ["bootloader", "app"])
def test_pass_from_either_mode(start_hub: StartHub, image: LoadedImage, start_in: str) -> None:
    hub = smp_hub(start_hub, start_in=start_in)
    out = flash_hub(hub.port, PROFILE, image, policy=Policy(allow_unsigned=True))
    assert out.result is Result.PASSED, out.message
    assert out.found_in == ("application" if start_in == "app" else "bootloader")
    assert (out.version_before, out.version_after) == (f"0x{OLD:08X}", f"0x{NEW:08X}")
    assert out.eui64 == hub.spec.eui64
    assert out.verify_detail is not None and "SHA-256" in out.verify_detail
    assert_honest(out, hub)


@pytest.mark.parametrize("faults", ["lostack=2", "nack=3", "powerloss=4", "stall=2:3", "vanish=3"])
def test_faults_end_honestly(start_hub: StartHub, image: LoadedImage, faults: str) -> None:
    hub = smp_hub(start_hub, start_in="bootloader", faults=faults)
    out = flash_hub(hub.port, PROFILE, image, policy=Policy(allow_unsigned=True))
    if faults.startswith("vanish"):
        assert out.result is not Result.PASSED and out.phase == "write"
    else:
        assert out.result is Result.PASSED, out.message
    assert_honest(out, hub)


def test_refuses_images_that_are_not_mcuboot(start_hub: StartHub, tmp_path: Path) -> None:
    hub = smp_hub(start_hub)
    raw = tmp_path / "app.bin"
    raw.write_bytes(demo_app(NEW, size=16 * 1024))
    loaded = load_image(raw, address=PROFILE.app_address)
    before = hub.ground_truth(16 * 1024)
    with pytest.raises(ImageError, match="take mcuboot images"):
        flash_hub(hub.port, PROFILE, loaded, policy=Policy(allow_unsigned=True))
    assert hub.ground_truth(16 * 1024) == before  # refused before anything was written


@pytest.mark.slow  # the AN3155 and Gecko profiles are tried first, each waiting out its probe
@pytest.mark.parametrize("start_in", ["bootloader", "app"])
def test_station_info_auto_finds_an_mcuboot_hub_and_leaves_it_as_found(
    start_hub: StartHub, capsys: pytest.CaptureFixture[str], start_in: str
) -> None:
    hub = smp_hub(start_hub, start_in=start_in)
    before = hub.ground_truth(16 * 1024)
    code = main(["info", "--port", hub.port, "--profile", "auto", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    info = json.loads(out)
    assert info["profile"] == "demo-smp"
    assert info["bootloader"]["name"] == "MCUboot serial recovery (SMP over UART)"
    assert (info["eui64"], info["running_version"]) == (hub.spec.eui64, f"0x{OLD:08X}")
    after = hub.ground_truth(16 * 1024)
    assert after["sha256"] == before["sha256"]
    assert str(after["mode"]).startswith("app") == (start_in == "app")


def test_flash_through_a_sim_url_hub_powered_on_with_the_port(image: LoadedImage) -> None:
    from sim.urlhandler import register
    from sim.urlhandler.protocol_sim import forget_hubs

    register()
    forget_hubs()
    url = "sim://smp?slot=9&firmware=1.1.0.0&unpaced"
    out = flash_hub(url, PROFILE, image, policy=Policy(allow_unsigned=True))
    assert out.result is Result.PASSED, out.message
    assert (out.found_in, out.version_after) == ("bootloader", f"0x{NEW:08X}")
    forget_hubs()

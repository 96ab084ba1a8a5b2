"""`station flash` on USB DFU hubs: flash_hub over the simulated bus (in-process, paced on
a virtual clock), a fault matrix, identical hubs, and once the real thing end to end:
`station sim --protocol dfu` and `station flash` as separate processes over the socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from drivers.transport.usb import ENV_BACKEND, register_backend
from firmware_images.build import (
    DEMO_HW_MAX,
    DEMO_HW_MIN,
    DEMO_IMAGE_TYPE,
    DEMO_MANUFACTURER,
    demo_payload,
)
from firmware_images.dfu import build_dfuse
from firmware_images.loader import LoadedImage, load_image
from firmware_images.zigbee import build_gbcs_image
from sim.dfu_rig import dfu_rig_specs
from sim.usb_backend import SimUsbBackend, SimUsbService, VirtualClock
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile

OLD, NEW = 0x0101_0000, 0x0105_0000
PROFILE = load_profile("demo-dfu")
POLICY = Policy(allow_unsigned=True)
Rig = Callable[..., SimUsbService]


@pytest.fixture(scope="module")
def dfu_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DfuSe file holding the demo application NEW (24 KiB)."""
    path = tmp_path_factory.mktemp("dfu") / "app.dfu"
    payload = demo_payload(NEW, size=24 * 1024)
    path.write_bytes(
        build_dfuse([(0, "Internal Flash", [(0x0800_0000, payload)])], vid=0x0483, pid=0xDF11)
    )
    return path


@pytest.fixture(scope="module")
def image(dfu_file: Path) -> LoadedImage:
    return load_image(dfu_file)


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    """Simulated DFU hubs reachable as STATION_USB_BACKEND=test-dfu-rig."""
    services: list[SimUsbService] = []

    def start(hubs: int = 1, **kw: object) -> SimUsbService:
        kw.setdefault("firmware", OLD)
        kw.setdefault("firmware_size", 16 * 1024)
        specs = dfu_rig_specs(hubs, **kw)  # type: ignore[arg-type]
        service = SimUsbService.of(specs, clock=VirtualClock())
        register_backend("test-dfu-rig", lambda: SimUsbBackend(service))
        monkeypatch.setenv(ENV_BACKEND, "test-dfu-rig")
        services.append(service)
        return service

    yield start
    register_backend("test-dfu-rig", None)


@pytest.mark.parametrize("start_in", ["app", "bootloader"])
def test_flash_passes_and_reads_the_running_version_back(
    rig: Rig, image: LoadedImage, start_in: str
) -> None:
    service = rig(start_in=start_in)
    hub = service.hub(1)
    out = flash_hub(f"usb:{hub.serial}", PROFILE, image, policy=POLICY)
    assert out.result is Result.PASSED, out.message
    assert out.found_in == ("application" if start_in == "app" else "bootloader")
    assert (out.version_before, out.version_after) == ("0x01010000", "0x01050000")
    assert (out.eui64, out.hw_version) == (hub.spec.eui64, 2)
    assert out.verify_method == "readback" and out.notes == []
    assert hub.mode.value == "runtime" and hub.violations == []


def test_a_gbcs_image_loads_at_the_profile_address(rig: Rig, tmp_path: Path) -> None:
    service = rig()
    payload = demo_payload(NEW, size=12 * 1024)
    path = tmp_path / "app.ota"
    path.write_bytes(
        build_gbcs_image(
            payload,
            manufacturer_code=DEMO_MANUFACTURER,
            image_type=DEMO_IMAGE_TYPE,
            file_version=NEW,
            hw_min=DEMO_HW_MIN,
            hw_max=DEMO_HW_MAX,
        )
    )
    gbcs = load_image(path, default_address=PROFILE.app_address)
    out = flash_hub("usb:1-1.1", PROFILE, gbcs, policy=POLICY)
    assert out.result is Result.PASSED, out.message
    assert service.hub(1).application() is not None


def test_already_current_is_skipped(rig: Rig, image: LoadedImage) -> None:
    rig(firmware=NEW, start_in="app")
    out = flash_hub("usb:1-1.1", PROFILE, image, policy=POLICY)
    assert out.result is Result.SKIPPED


# Each fault ends in a verified pass (noted) or a typed failure naming its phase.
@pytest.mark.parametrize(
    ("faults", "result", "phase", "text"),
    [
        ("stall=3", Result.PASSED, None, "download block 3 at 0x08001800: the device stalled"),
        ("errwrite=2", Result.PASSED, None, "errWRITE (dfuERROR); it was partly programmed"),
        ("errverify=5", Result.PASSED, None, "errVERIFY (dfuERROR); it was partly programmed"),
        ("reenum=4", Result.PASSED, None, "the device is gone"),
        ("stall=0,errwrite=1,reenum=2", Result.PASSED, None, "resumed"),
        ("vanish=3", Result.FAILED, "write", "download block 3 at 0x08001800: the device is gone"),
        ("hang=1", Result.FAILED, "write", "download block 1 at 0x08000800: no answer"),
        ("errwrite=0,errverify=1,stall=2,reenum=3,errwrite=4", Result.PASSED, None, "resumed"),
    ],
)
def test_fault_matrix(
    rig: Rig, image: LoadedImage, faults: str, result: Result, phase: str | None, text: str
) -> None:
    service = rig(start_in="app", faults=faults)
    out = flash_hub("usb:1-1.1", PROFILE, image, policy=POLICY)
    assert out.result is result, out.message
    assert out.phase == phase
    shown = out.message if result is Result.FAILED else " ".join(out.notes)
    assert text in shown
    hub = service.hub(1)
    if result is Result.PASSED:
        assert out.version_after == "0x01050000" and hub.application() is not None
        assert hub.flash.read(0x0800_0000, len(image.data)) == image.data
    else:
        assert out.version_after is None
    assert hub.violations == []


def test_too_many_faults_fail_typed_never_pass(rig: Rig, image: LoadedImage) -> None:
    rig(start_in="app", faults="stall=0,errwrite=1")
    profile = replace(PROFILE, retries=1)
    out = flash_hub("usb:1-1.1", profile, image, policy=POLICY)
    assert out.result is Result.FAILED and out.phase == "write"
    assert "errWRITE" in out.message
    # The operator's detail shows the last requests: the download and the status that ended it.
    assert any(e.startswith("-> DNLOAD wValue=") for e in out.exchanges), out.exchanges
    assert any(e.startswith("-> GETSTATUS") for e in out.exchanges)


def test_crc_verify_is_refused_with_a_reason(rig: Rig, image: LoadedImage) -> None:
    rig()
    out = flash_hub("usb:1-1.1", PROFILE, image, policy=POLICY, verify="crc")
    assert out.result is Result.FAILED and out.phase == "verify"
    assert "no device-side CRC" in out.message


def test_two_identical_hubs_are_never_confused(rig: Rig, image: LoadedImage) -> None:
    service = rig(2, start_in="app", faults="2:dupserial=1")
    one, two = service.hub(1), service.hub(2)
    assert one.serial == two.serial
    out = flash_hub(f"usb:{one.serial}", PROFILE, image, policy=POLICY)
    assert out.result is Result.FAILED and out.phase == "connect"
    assert "usb:1-1.1" in out.message and "usb:1-1.2" in out.message
    assert one.application().firmware_version == two.application().firmware_version == OLD  # type: ignore[union-attr]
    out = flash_hub("usb:1-1.2", PROFILE, image, policy=POLICY)
    assert out.result is Result.PASSED and out.eui64 == two.spec.eui64
    assert one.application().firmware_version == OLD  # type: ignore[union-attr]
    assert two.application().firmware_version == NEW  # type: ignore[union-attr]


def test_an_image_that_does_not_boot_is_not_confirmed(rig: Rig, tmp_path: Path) -> None:
    service = rig(start_in="app")
    good = demo_payload(NEW, size=8 * 1024)
    loaded = load_image(_dfuse(tmp_path, good))
    # The hub loses the last page's data after verify: simulate by corrupting flash at boot.
    original = service.hub(1)._manifest_done

    def corrupt_then_jump(at: float) -> None:
        service.hub(1).flash.erase_page(3)
        original(at)

    service.hub(1)._manifest_done = corrupt_then_jump  # type: ignore[method-assign]
    profile = replace(PROFILE, boot_timeout_s=1.0)
    out = flash_hub("usb:1-1.1", profile, loaded, policy=POLICY)
    assert out.result is Result.FAILED and out.phase == "boot"
    assert "did not start" in out.message


def _dfuse(folder: Path, payload: bytes) -> Path:
    path = folder / "x.dfu"
    path.write_bytes(build_dfuse([(0, "", [(0x0800_0000, payload)])], vid=0x0483, pid=0xDF11))
    return path


def test_station_sim_and_station_flash_as_processes(dfu_file: Path) -> None:
    """The socket path end to end: two processes, real time, paced hubs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(ENV_BACKEND, None)
    sim = subprocess.Popen(
        [sys.executable, "-m", "station.cli", "sim", "--protocol", "dfu", "--hubs", "2",
         "--firmware", "0x01010000", "--start-in", "app", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        hubs = [json.loads(sim.stdout.readline()) for _ in range(2)]
        assert [h["port"] for h in hubs] == ["usb:1-1.1", "usb:1-1.2"]
        assert {h["profile"] for h in hubs} == {"demo-dfu"}
        setting = hubs[0]["backend"]
        assert setting.startswith("sim:") and Path(setting[4:]).exists()
        flash = subprocess.run(
            [sys.executable, "-m", "station.cli", "flash", "--port", f"usb:{hubs[1]['serial']}",
             "--profile", "demo-dfu", str(dfu_file), "--allow-unsigned", "--json"],
            capture_output=True, text=True, timeout=60, env={**env, ENV_BACKEND: setting},
        )  # fmt: skip
        assert flash.returncode == 0, flash.stderr + flash.stdout
        out = json.loads(flash.stdout)
        assert (out["result"], out["eui64"]) == ("passed", hubs[1]["eui64"])
        assert (out["version_before"], out["version_after"]) == ("0x01010000", "0x01050000")
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.communicate()
    assert sim.returncode == 0
    assert not Path(setting[4:]).exists()  # the socket is removed on exit


def test_only_the_pages_that_differ_are_downloaded(rig: Rig, tmp_path: Path) -> None:
    """The hub holds the last release; the new one changed its descriptor's page and one
    code page: those two are erased and downloaded, the other fourteen read back equal."""
    from firmware_images.build import demo_release

    old = demo_payload(OLD, size=32 * 1024)
    new = demo_release(old, NEW, changed=2, page_size=PROFILE.page_size)
    path = tmp_path / "release.dfu"
    path.write_bytes(
        build_dfuse([(0, "Internal Flash", [(0x0800_0000, new)])], vid=0x0483, pid=0xDF11)
    )
    service = rig(firmware_size=len(old))
    hub = service.hub(1)
    erased: list[int] = []
    erase = hub.flash.erase_page
    hub.flash.erase_page = lambda page: (erased.append(page), erase(page))[1]  # type: ignore[method-assign]
    out = flash_hub(f"usb:{hub.serial}", PROFILE, load_image(path), policy=POLICY)
    assert out.result is Result.PASSED, out.message
    assert (out.pages_written, out.pages_skipped, out.bytes_written) == (2, 14, 2 * 2048)
    assert len(erased) == 2 and bytes(hub.flash.data[: len(new)]) == new
    assert out.verify_method == "readback" and hub.violations == []

"""Bootloader entry and exit by modem lines, end to end: the station's sessions drive DTR/RTS
on a ``sim://`` hub and on the same hub served over RFC 2217 (sim.rfc2217), for AN3155 and
Gecko hubs; faulty fixtures (a stuck boot line, a hub that needs two resets) and ports
without modem lines."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from drivers.console import AppConsole
from drivers.errors import PortBusy
from drivers.transport.serial import SerialLink
from firmware_images.loader import LoadedImage, load_image
from sim import urlhandler
from sim.gecko import demo_gbl
from sim.rfc2217 import Rfc2217Endpoint
from sim.urlhandler.protocol_sim import forget_hubs
from station.cli import _auto_candidates, main
from station.demo import prepare_demo_catalog
from station.flash import FlashOutcome, Policy, Result, flash_hub
from station.profiles import Profile, load_profile
from station.rig import default_candidates

from ..conftest import NEW, OLD

UNSIGNED_OK = Policy(allow_unsigned=True)
PROFILES = {"an3155": "demo-an3155-lines", "gecko": "demo-gecko-lines"}
PARITY = {"an3155": "even", "gecko": "none"}
Serve = Callable[[str], str]


@pytest.fixture(autouse=True)
def _fresh_hubs() -> Iterator[None]:
    urlhandler.register()
    forget_hubs()
    yield
    forget_hubs()


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Serve a ``sim://`` hub over RFC 2217; returns the ``rfc2217://`` URL."""
    endpoints: list[Rfc2217Endpoint] = []

    def start(url: str) -> str:
        endpoint = Rfc2217Endpoint(url, 0).start()
        endpoints.append(endpoint)
        return endpoint.url

    yield start
    for endpoint in endpoints:
        endpoint.stop()


@pytest.fixture(scope="module")
def gbl_image(tmp_path_factory: pytest.TempPathFactory) -> LoadedImage:
    path = tmp_path_factory.mktemp("gecko") / "app.gbl"
    path.write_bytes(demo_gbl(NEW, size=16 * 1024))
    return load_image(path, default_address=load_profile("demo-gecko").app_address)


def hub_url(protocol: str, faults: str = "", **extra: str) -> str:
    options = {"firmware-size": "16384", **extra}
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return (
        f"sim://{protocol}?firmware={OLD:#010x}&start-in=app&unpaced=1"
        f"&lines=reset=rts,boot=dtr&pin-faults={faults}&{query}"
    )


def image_for(protocol: str, new_image: LoadedImage, gbl_image: LoadedImage) -> LoadedImage:
    return new_image if protocol == "an3155" else gbl_image


def running_version(url: str, protocol: str) -> int | None:
    """What the hub's application says, asked without touching its reset (lines clear)."""
    with SerialLink(url, parity=PARITY[protocol]) as link:
        link.set_lines(dtr=False, rts=False)
        console = AppConsole(link)
        return next((v for _ in range(10) if (v := console.version(0.2)) is not None), None)


def assert_passed(out: FlashOutcome) -> None:
    assert out.result is Result.PASSED, (out.message, out.notes)
    assert out.found_in == "bootloader"  # reset into it by the lines
    assert (out.version_before, out.version_after) == (f"0x{OLD:08X}", f"0x{NEW:08X}")


@pytest.mark.parametrize("protocol", ["an3155", "gecko"])
@pytest.mark.parametrize("over", ["sim", "rfc2217"])
def test_flash_entering_and_leaving_the_bootloader_by_lines(
    protocol: str, over: str, serve: Serve, new_image: LoadedImage, gbl_image: LoadedImage
) -> None:
    url = hub_url(protocol)
    port = serve(url) if over == "rfc2217" else url
    out = flash_hub(
        port,
        load_profile(PROFILES[protocol]),
        image_for(protocol, new_image, gbl_image),
        policy=UNSIGNED_OK,
    )
    assert_passed(out)
    assert running_version(port, protocol) == NEW


@pytest.mark.parametrize("protocol", ["an3155", "gecko"])
def test_exit_by_the_bootloader_command_also_works(
    protocol: str, new_image: LoadedImage, gbl_image: LoadedImage
) -> None:
    profile = dataclasses.replace(load_profile(PROFILES[protocol]), exit="command")
    out = flash_hub(
        hub_url(protocol), profile, image_for(protocol, new_image, gbl_image), policy=UNSIGNED_OK
    )
    assert_passed(out)


@pytest.mark.parametrize("protocol", ["an3155", "gecko"])
@pytest.mark.parametrize("over", ["sim", "rfc2217"])
def test_stuck_boot_line_fails_in_connect_naming_the_line(
    protocol: str, over: str, serve: Serve, new_image: LoadedImage, gbl_image: LoadedImage
) -> None:
    url = hub_url(protocol, "stuck-boot")
    port = serve(url) if over == "rfc2217" else url
    started = time.monotonic()
    out = flash_hub(
        port,
        load_profile(PROFILES[protocol]),
        image_for(protocol, new_image, gbl_image),
        policy=UNSIGNED_OK,
    )
    took = time.monotonic() - started
    assert (out.result, out.phase) == (Result.FAILED, "connect")
    assert "boot line DTR does not select the bootloader" in out.message
    assert "runs its application" in out.message
    assert took < 10, f"a stuck boot line must fail promptly, took {took:.1f} s"
    assert running_version(port, protocol) == OLD  # nothing was written


@pytest.mark.parametrize("protocol", ["an3155", "gecko"])
def test_hub_that_needs_two_resets_passes_with_a_note(
    protocol: str, serve: Serve, new_image: LoadedImage, gbl_image: LoadedImage
) -> None:
    port = serve(hub_url(protocol, "two-resets"))
    out = flash_hub(
        port,
        load_profile(PROFILES[protocol]),
        image_for(protocol, new_image, gbl_image),
        policy=UNSIGNED_OK,
    )
    assert_passed(out)
    assert any("entry sequence 2 of 2" in note for note in out.notes), out.notes


def test_one_attempt_is_not_enough_for_a_hub_that_needs_two(new_image: LoadedImage) -> None:
    plan = load_profile("demo-an3155-lines").lines
    assert plan is not None
    profile: Profile = dataclasses.replace(
        load_profile("demo-an3155-lines"), lines=dataclasses.replace(plan, attempts=1)
    )
    out = flash_hub(hub_url("an3155", "two-resets"), profile, new_image, policy=UNSIGNED_OK)
    assert (out.result, out.phase) == (Result.FAILED, "connect")
    assert "answers neither its bootloader nor its application" in out.message
    assert "reset line RTS" in (out.hint or "")


def test_a_port_without_modem_lines_fails_in_connect(new_image: LoadedImage) -> None:
    url = f"sim://an3155?firmware={OLD:#010x}&start-in=app&unpaced=1"  # not wired
    out = flash_hub(url, load_profile("demo-an3155-lines"), new_image, policy=UNSIGNED_OK)
    assert (out.result, out.phase) == (Result.FAILED, "connect")
    assert "DTR/RTS" in out.message


def test_station_info_and_flash_commands_over_rfc2217(
    serve: Serve, new_image_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, stuck = serve(hub_url("an3155")), serve(hub_url("an3155", "stuck-boot", slot="2"))
    assert main(["info", "--port", good, "--profile", "demo-an3155-lines"]) == 0
    assert "STM32 system bootloader" in capsys.readouterr().out
    args = ["flash", "--profile", "demo-an3155-lines", "--allow-unsigned", str(new_image_path)]
    assert main([*args, "--port", good]) == 0
    assert main([*args, "--port", stuck]) == 1
    shown = capsys.readouterr().out
    assert "PASSED" in shown and "boot line DTR" in shown


def test_a_second_client_is_turned_away_as_ser2net_does(serve: Serve) -> None:
    url = serve(hub_url("an3155"))
    with SerialLink(url), pytest.raises(PortBusy, match="ser2net serves one"):
        SerialLink(url).open()


@pytest.mark.slow
def test_rig_run_over_rfc2217_isolates_a_slot_with_a_stuck_boot_line(
    serve: Serve, tmp_path: Path
) -> None:
    """``station run`` (its own process) with two slots on simulated fixtures served over
    RFC 2217: the good hub passes, the stuck one fails in connect naming the line."""
    cat, trust = prepare_demo_catalog(tmp_path / "demo", size=8192)
    # The catalogue names the profile of each model: here the model on its fixture.
    listing = cat.root / "catalog.toml"
    listing.write_text(listing.read_text().replace('"demo-an3155"', '"demo-an3155-lines"'))
    ports = {
        1: serve(hub_url("an3155", slot="1", **{"firmware-size": "8192"})),
        2: serve(hub_url("an3155", "stuck-boot", slot="2", **{"firmware-size": "8192"})),
    }
    rig = 'station_id = "bench-lines"\n'
    for slot, port in ports.items():
        rig += f'[[slot]]\nnumber = {slot}\nport = "{port}"\nprofile = "demo-an3155-lines"\n'
    (tmp_path / "rig.toml").write_text(rig)
    run = subprocess.run(
        [
            *(sys.executable, "-m", "station.cli", "run", "--rig", str(tmp_path / "rig.toml")),
            *("--catalog", str(cat.root), "--trust", trust.source, "--json"),
            *("--db", f"sqlite:///{tmp_path}/station.db"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 1, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    finished = {e["slot"]: e for e in events if e["kind"] == "job-finished"}
    assert finished[1]["state"] == "passed", json.dumps(finished[1])
    assert finished[2]["state"] == "failed"
    assert "boot line DTR" in json.dumps(finished[2])


def test_an_exporter_that_does_not_confirm_dtr_rts_fails_in_connect(
    serve: Serve, new_image: LoadedImage
) -> None:
    """A port without modem lines behind RFC 2217 (as ser2net exporting a pty): the
    change is never acknowledged, and connect says so within the network timeout."""
    port = serve(f"sim://an3155?firmware={OLD:#010x}&start-in=app&unpaced=1")  # not wired
    started = time.monotonic()
    out = flash_hub(port, load_profile("demo-an3155-lines"), new_image, policy=UNSIGNED_OK)
    assert (out.result, out.phase) == (Result.FAILED, "connect")
    assert "did not confirm DTR/RTS" in out.message
    assert time.monotonic() - started < 10


def test_auto_detection_never_tries_a_modem_line_profile() -> None:
    """Its entry would reset whatever hub is on the port, by a wiring only guessed."""
    lines = {"demo-an3155-lines", "demo-gecko-lines"}
    assert not lines & set(default_candidates(usb_capable=True))
    assert not lines & set(_auto_candidates("/dev/ttyUSB0", Console(file=io.StringIO())))
    assert {"demo-an3155", "demo-gecko"} <= set(default_candidates(usb_capable=False))

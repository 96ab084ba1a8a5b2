"""``station info``: a read-only look at a hub, as ``stm32flash PORT`` or ``esptool chip_id``.

"Writes nothing" is checked against the simulated hub's own model (``SimHub.ground_truth``:
its mode, the version it runs and the SHA-256 of its application area), never against what
the station says.
"""

from __future__ import annotations

import json
import os
import select
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.transport.usb import ENV_BACKEND, register_backend
from sim.dfu_rig import dfu_rig_specs
from sim.pty import SimHub
from sim.usb_backend import SimUsbBackend, SimUsbService, VirtualClock
from station.cli import main

from ..conftest import OLD

AREA = 64 * 1024  # the application area compared before and after


def _same(after: dict[str, object], before: dict[str, object]) -> bool:
    """Flash and running version unchanged, and in the same place (a bootloader it synced
    with is still in its bootloader)."""
    key = ("sha256", "running")
    place = str(after["mode"]).split("-")[0], str(before["mode"]).split("-")[0]
    return [after[k] for k in key] == [before[k] for k in key] and place[0] == place[1]


def _info(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["info", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _fields(out: str) -> dict[str, str]:
    """The ``label  value`` lines of the human output."""
    rows = [line.split("  ", 1) for line in out.splitlines() if "  " in line]
    return {label.strip(): value.strip() for label, value in rows}


@pytest.mark.parametrize("start_in", ["app", "bootloader"])
def test_info_on_an_an3155_hub_tells_everything_and_writes_nothing(
    start_in: str, start_hub: Callable[..., SimHub], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = start_hub(start_in=start_in)
    before = hub.ground_truth(AREA)
    code, out, err = _info(capsys, "--port", hub.port, "--profile", "demo-an3155")
    assert code == 0, err
    row = _fields(out)
    assert row["profile"] == "demo-an3155"
    assert row["bootloader"] == "STM32 system bootloader over USART (AN3155), version 3.1"
    assert row["product ID"] == "0x462"
    assert row["EUI-64"] == hub.spec.eui64
    assert row["hardware"] == "2"
    assert row["running"].startswith("1.1.0.0 (0x01010000)")
    assert row["flash"] == "512 KiB at 0x08000000, pages of 2 KiB (from the profile)"
    assert "Get Checksum" in row["commands"] and row["verify"] == "device CRC (Get Checksum)"
    found = "its application" if start_in == "app" else "its bootloader"
    assert row["left"] == f"in {found}, as found; nothing was written"
    assert _same(hub.ground_truth(AREA), before)  # flash, running version and mode
    assert str(before["mode"]).startswith("app" if start_in == "app" else "bootloader")


def test_info_json(
    start_hub: Callable[..., SimHub],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = start_hub(start_in="app")
    monkeypatch.chdir(tmp_path)  # the default station-data/ is relative to it
    code, out, err = _info(capsys, "--port", hub.port, "--profile", "demo-an3155", "--json")
    assert code == 0, err
    assert list(tmp_path.iterdir()) == []  # no database, report or key: nothing recorded
    info = json.loads(out)
    assert info["identified"] is True and info["problem"] is None
    assert info["bootloader"] == {
        "name": "STM32 system bootloader over USART (AN3155)",
        "version": "3.1",
    }
    assert (info["product_id"], info["eui64"], info["hw_version"]) == ("0x462", hub.spec.eui64, 2)
    assert info["running_version"] == f"0x{OLD:08X}"
    assert (info["found_in"], info["left_in"]) == ("application", "application")
    assert info["flash"] == {
        "start": "0x08000000",
        "size": 512 * 1024,
        "page_size": 2048,
        "from": "profile",
    }
    assert "Get Checksum" in info["details"]["commands"]


def test_auto_finds_a_gecko_hub_and_leaves_it_running(
    start_hub: Callable[..., SimHub], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = start_hub(protocol="gecko", start_in="app")
    before = hub.ground_truth(AREA)
    code, out, err = _info(capsys, "--port", hub.port, "--profile", "auto", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["profile"] == "demo-gecko"
    assert info["bootloader"]["name"] == "Silicon Labs Gecko bootloader over UART XMODEM"
    assert info["bootloader"]["version"]  # from its menu
    assert info["product_id"] is None  # the Gecko UART bootloader cannot say
    assert (info["eui64"], info["running_version"]) == (hub.spec.eui64, f"0x{OLD:08X}")
    # The AN3155 profile was tried first (and sent the hub to its bootloader with BOOT):
    # the hub is still reported as found running, and is left running.
    assert info["tried"][0].startswith("demo-an3155: ")
    assert (info["found_in"], info["left_in"]) == ("application", "application")
    assert _same(hub.ground_truth(AREA), before)


@pytest.fixture
def usb_hubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimUsbService]:
    service = SimUsbService.of(dfu_rig_specs(1, firmware=OLD), clock=VirtualClock())
    register_backend("test-info", lambda: SimUsbBackend(service))
    monkeypatch.setenv(ENV_BACKEND, "test-info")
    yield service
    register_backend("test-info", None)


def test_auto_finds_a_dfu_hub_with_its_memory_map(
    usb_hubs: SimUsbService, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = usb_hubs.hub(1)
    flash_before = hub.flash.read(0x0800_0000, AREA)
    code, out, err = _info(capsys, "--port", "usb:1-1.1", "--profile", "auto", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["profile"] == "demo-dfu"
    assert info["bootloader"] == {"name": "ST DfuSe bootloader over USB", "version": "1.1a"}
    assert info["product_id"] == "0483:df11"
    assert info["flash"]["from"] == "device" and info["flash"]["size"] == 512 * 1024
    assert info["details"]["memory map"].startswith("@Internal Flash")
    assert info["running_version"] == f"0x{OLD:08X}"
    assert hub.flash.read(0x0800_0000, AREA) == flash_before


def test_a_hub_that_does_not_answer_is_not_identified(capsys: pytest.CaptureFixture[str]) -> None:
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        code, out, err = _info(capsys, "--port", port, "--profile", "demo-an3155")
        sent = b""
        while select.select([master], [], [], 0.05)[0]:
            sent += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    assert code == 1
    assert out == ""
    assert err.startswith(f"not identified: {port} as demo-an3155: the hub answers neither"), err
    assert set(sent) <= set(b"\x7fVER?\r\n")  # probes only


def test_a_hub_of_another_model_is_named_by_what_it_said(
    start_hub: Callable[..., SimHub], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = start_hub(product_id=0x415)
    code, out, err = _info(capsys, "--port", hub.port, "--profile", "demo-an3155")
    assert code == 1
    assert "product ID 0x415 is not demo-an3155's 0x462" in err
    row = _fields(out)
    assert row["product ID"] == "0x415" and row["EUI-64"] == hub.spec.eui64


def test_a_gecko_hub_looked_at_as_an3155_shows_only_what_its_application_said(
    start_hub: Callable[..., SimHub], capsys: pytest.CaptureFixture[str]
) -> None:
    """Its bootloader never answered: no STM32 bootloader, product ID or flash figures
    (those would be the profile's guess), and it is said where the hub may be left."""
    hub = start_hub(protocol="gecko", start_in="app")
    before = hub.ground_truth(AREA)
    code, out, err = _info(capsys, "--port", hub.port, "--profile", "demo-an3155")
    assert code == 1
    row = _fields(out)
    assert row["bootloader"] == "- (did not answer)"
    assert "product ID" not in row and "flash" not in row and "left" not in row
    assert row["EUI-64"] == hub.spec.eui64 and row["running"].startswith("1.1.0.0 ")
    assert "power-cycle it to start its application again" in err
    assert "--profile auto" in err
    assert hub.ground_truth(AREA)["sha256"] == before["sha256"]


def test_info_without_a_usb_backend_is_a_station_problem(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_BACKEND, "sim:/nonexistent/bus.sock")
    for profile in ("demo-dfu", "auto"):
        code, _, err = _info(capsys, "--port", "usb:1-1.1", "--profile", profile)
        assert code == 2, err
        assert err.splitlines()[-1].startswith("error: usb:1-1.1: no simulated USB bus"), err


def test_info_trace_and_baud(
    start_hub: Callable[..., SimHub], capsys: pytest.CaptureFixture[str]
) -> None:
    hub = start_hub()
    argv = ["--port", hub.port, "--profile", "demo-an3155", "--baud", "57600", "-v"]
    code, _, err = _info(capsys, *argv)
    assert code == 0, err
    assert f"open {hub.port} at 57600 baud" in err and " -> 7F" in err


def test_baud_needs_a_named_profile(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _info(capsys, "--port", "/dev/null", "--profile", "auto", "--baud", "9600")
    assert code == 2
    assert "--baud needs a named profile" in err


def test_help_gives_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 the hub was identified, 1 it was not" in text
    assert "writes nothing" in text

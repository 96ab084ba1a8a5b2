"""Slot power: the rig's [slot.power] table, the command template run against the simulated
relay board's tool, the USB hub port, and a switch that does not switch."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ConfigError
from sim.power import PowerBoard
from sim.urlhandler import register
from sim.urlhandler.protocol_sim import forget_hubs
from sim.usb_backend import SimUsbBackend, VirtualClock
from sim.usb_dfu import DfuHubSpec
from sim.usb_hubdev import UsbHubSpec
from station.cli import main
from station.power import (
    PLACEHOLDERS,
    PowerError,
    PowerSpec,
    SlotPower,
    check_command,
    render_command,
    slot_power,
)
from station.profiles import load_profile
from station.rig import parse_rig

register()
RELAY = [sys.executable, "-m", "sim.power"]


@pytest.fixture(autouse=True)
def _fresh_hubs():
    forget_hubs()
    yield
    forget_hubs()


def rig_text(power: str, port: str = "/dev/null") -> str:
    return f"""station_id = "bench-1"

[[slot]]
number = 3
port = "{port}"
profile = "demo-an3155"

[slot.power]
{power}
"""


def relay(board: Path) -> str:
    words = [*RELAY, str(board), "{slot}", "{state}"]
    return f"command = {json.dumps(words)}\noff_s = 0\nsettle_s = 0"


# -- the rig file ----------------------------------------------------------------------------


def test_a_power_table_is_parsed() -> None:
    rig = parse_rig(rig_text('usb_hub = "1-1"\nusb_port = 3\noff_s = 2\nentry = true'))
    power = rig.slots[0].power
    assert power == PowerSpec(usb_hub="1-1", usb_port=3, off_s=2.0, entry=True)
    assert power.switch_text == "port 3 of USB hub 1-1"
    relay_rig = parse_rig(rig_text('command = ["relay", "--ch", "{slot}", "{state}"]'))
    assert relay_rig.slots[0].power.command == ("relay", "--ch", "{slot}", "{state}")


@pytest.mark.parametrize(
    ("power", "key", "why"),
    [
        ('usb_hub = "1-1"', None, "both usb_hub and usb_port"),
        ('usb_hub = "1-1"\nusb_port = 1\ncommand = ["x"]', None, "either usb_hub"),
        ("off_s = 1", None, "either usb_hub"),
        ('command = ["relay", "{slot!r}"]', "command", "placeholders are only"),
        ('command = ["relay", "{port}"]', "command", "placeholders are only"),
        ('command = ["relay", "{0}"]', "command", "placeholders are only"),
        ('command = ["{state}"]', "command", "literal name"),
        ('command = ["relay", "{slot"]', "command", "braces"),
        ('usb_hub = "one"\nusb_port = 1', "usb_hub", "USB location"),
        ('command = ["x"]\nboot_line = "cts"', "boot_line", "one of"),
        ('command = ["x"]\nsettle = 1', "settle", "unknown"),
    ],
)
def test_a_bad_power_table_names_the_file_line_and_key(power: str, key, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rig(rig_text(power), "bench.toml")
    text = str(caught.value)
    assert "bench.toml" in text and why in text
    assert re.search(r"line (8|9|10) ", text)  # the line of the table or of the key
    if key:
        assert key in text


@given(st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_an_accepted_template_only_ever_fills_in_our_values(words: list[str]) -> None:
    if check_command(words) is not None:
        return
    out = render_command(words, slot=7, state="off", station="b")
    assert out[0] == words[0].format()  # the program is never a placeholder
    assert len(out) == len(words)


def test_placeholders_are_a_fixed_set() -> None:
    assert PLACEHOLDERS == ("slot", "state", "station")
    assert render_command(
        ["r", "--ch", "{slot}", "{state}", "{station}"], slot=2, state="on", station="b1"
    ) == [
        "r",
        "--ch",
        "2",
        "on",
        "b1",
    ]


# -- the command template against the relay tool ---------------------------------------------


def command_power(board: Path, port: str | None = None, **changes) -> SlotPower:
    words = (*RELAY, str(board), "{slot}", "{state}")
    spec = PowerSpec(command=words, off_s=0.0, settle_s=0.0, **changes)
    probe = None if port is None else (lambda: port)
    return slot_power(3, spec, "bench-1", port=probe, profile=load_profile("demo-an3155"))


def test_the_command_switches_the_board(tmp_path: Path) -> None:
    power = command_power(tmp_path)
    power.off()
    assert PowerBoard(tmp_path).read(3) == PowerBoard(tmp_path).read(3).__class__(False, 1)
    power.on()
    power.cycle()
    assert PowerBoard(tmp_path).read(3).on and PowerBoard(tmp_path).read(3).offs == 2


def test_a_failing_command_says_what_it_said(tmp_path: Path) -> None:
    spec = PowerSpec(command=(*RELAY, str(tmp_path), "0", "{state}"))
    with pytest.raises(PowerError, match=r"failed \(exit status 2\): error: channel 0"):
        slot_power(3, spec, "b").off()
    with pytest.raises(PowerError, match="not found"):
        slot_power(3, PowerSpec(command=("no-such-relay-tool", "{state}")), "b").on()


def test_off_is_checked_the_hub_goes_quiet(tmp_path: Path) -> None:
    port = f"sim://an3155?slot=3&start-in=bootloader&power={tmp_path}"
    command_power(tmp_path, port).off()  # no error: the hub stopped answering


def test_a_welded_relay_is_noticed(tmp_path: Path) -> None:
    PowerBoard(tmp_path).set_stuck(3)
    port = f"sim://an3155?slot=3&firmware=1.0.0.0&start-in=app&power={tmp_path}"
    with pytest.raises(PowerError, match="still answers with its power off: command"):
        command_power(tmp_path, port).off()
    with pytest.raises(PowerError, match="does not switch"):
        command_power(tmp_path, port).cycle()


# -- a USB hub port --------------------------------------------------------------------------


def usb_rig(stuck: frozenset[int] = frozenset()) -> SimUsbBackend:
    hub = UsbHubSpec(1, stuck=stuck)
    specs = [DfuHubSpec(slot=3, eui64="00-DB-12-00-00-00-00-03", firmware=0x01000000)]
    be = SimUsbBackend.of(specs, clock=VirtualClock(), paced=False, usb_hubs=[hub])
    be.service.wait_quiet()
    return be


def usb_power(be: SimUsbBackend) -> SlotPower:
    spec = PowerSpec(usb_hub="1-1", usb_port=3, off_s=0.0, settle_s=0.0)
    return slot_power(
        3, spec, "b", port=lambda: "usb:1-1.3", profile=load_profile("demo-dfu"), backend=be
    )


def test_a_usb_hub_port_cycle_brings_the_dfu_hub_back(tmp_path: Path) -> None:
    be = usb_rig()
    power = usb_power(be)
    power.off()
    assert not be.service.hub(3).present
    power.on()
    be.service.clock.sleep(1.0)
    be.service.wait_quiet()
    assert be.service.hub(3).present


def test_a_usb_hub_port_that_reports_off_but_keeps_power_is_noticed() -> None:
    power = usb_power(usb_rig(stuck=frozenset({3})))
    with pytest.raises(PowerError, match="still answers with its power off: port 3 of USB hub 1-1"):
        power.off()


# -- station power ---------------------------------------------------------------------------


def test_station_power_cli(tmp_path: Path, capsys) -> None:
    board = tmp_path / "board"
    port = f"sim://an3155?slot=3&start-in=bootloader&power={board}"
    rig = tmp_path / "rig.toml"
    rig.write_text(rig_text(relay(board), port))
    assert main(["power", "3", "off", "--rig", str(rig)]) == 0
    assert "slot 3: off (the hub is quiet)" in capsys.readouterr().out
    assert not PowerBoard(board).read(3).on
    assert main(["power", "3", "cycle", "--rig", str(rig), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "cycle"
    PowerBoard(board).set_stuck(3)
    assert main(["power", "3", "off", "--rig", str(rig)]) == 1
    assert "does not switch it" in capsys.readouterr().err
    assert main(["power", "4", "off", "--rig", str(rig)]) == 2
    assert "no slot 4 (slots: 3)" in capsys.readouterr().err
    rig.write_text(rig_text(relay(board)).replace("[slot.power]", "[other]"))
    assert main(["power", "3", "on", "--rig", str(rig)]) == 2


@pytest.mark.parametrize("stuck", [False, True])
def test_station_power_over_the_simulated_bus_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, stuck: bool
) -> None:
    """The pyusb hub path from another process's view: STATION_USB_BACKEND=sim:<socket>."""
    from sim.usb_backend import SimUsbService
    from sim.usb_server import UsbBusServer

    spec = DfuHubSpec(slot=3, eui64="00-DB-12-00-00-00-00-03", firmware=0x01000000, paced=False)
    service = SimUsbService.of(
        [spec], usb_hubs=[UsbHubSpec(1, stuck=frozenset({3} if stuck else ()))]
    )
    rig = tmp_path / "rig.toml"
    rig.write_text(
        f'station_id = "b"\n[[slot]]\nnumber = 3\nusb_serial = "{spec.usb_serial}"\n'
        'profile = "demo-dfu"\n[slot.power]\nusb_hub = "1-1"\nusb_port = 3\n'
        "off_s = 0\nsettle_s = 0\n"
    )
    with UsbBusServer(service, str(tmp_path / "bus.sock")) as server:
        monkeypatch.setenv("STATION_USB_BACKEND", server.setting)
        status = main(["power", "3", "off", "--rig", str(rig)])
        if stuck:
            assert status == 1
            assert "still answers with its power off: port 3 of USB hub 1-1" in (
                capsys.readouterr().err
            )
            return
        assert status == 0 and not service.hub(3).present
        assert main(["power", "3", "on", "--rig", str(rig)]) == 0
        service.wait_quiet()
        assert service.hub(3).present
    assert "slot 3: on by port 3 of USB hub 1-1" in capsys.readouterr().out

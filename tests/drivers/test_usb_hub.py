"""Per-port power switching through pyusb against the simulated switching hub.

The requests are checked byte by byte against USB 2.0 chapter 11 (Tables 11-13, 11-15 to
11-17, 11-21) as the SETUP packets the simulated hub logged.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.usb_hub import HubDescriptor, HubPowerError, PortStatus, UsbHubPorts, parse_location
from sim.power import PowerBoard
from sim.usb_backend import SimUsbBackend, VirtualClock
from sim.usb_dfu import DfuHubSpec
from sim.usb_hubdev import UsbHubSpec

EUI = "00-DB-12-00-00-00-00-0{}"


def backend(*, switching: str = "per-port", stuck: frozenset[int] = frozenset(), board=None):
    specs = [DfuHubSpec(slot=n, eui64=EUI.format(n), firmware=0x01000000) for n in (1, 3)]
    hub = UsbHubSpec(1, switching=switching, stuck=stuck)
    be = SimUsbBackend.of(specs, clock=VirtualClock(), paced=False, usb_hubs=[hub])
    if board is not None:
        be.service.usb_hub(1).board = board
    be.service.wait_quiet()
    return be


def setup(bm: int, req: int, value: int, index: int, length: int) -> bytes:
    return struct.pack("<BBHHH", bm, req, value, index, length)


def test_power_off_and_on_send_the_chapter_11_requests_byte_for_byte() -> None:
    be = backend()
    dev = be.service.usb_hub(1)
    ports = UsbHubPorts("1-1", backend=be)
    desc = ports.open()
    assert (desc.ports, desc.switching, desc.power_on_to_good_ms) == (7, "per-port", 100)
    ports.set_power(3, False)
    status = ports.status(3)
    ports.set_power(3, True)
    # GetHubDescriptor, ClearPortFeature(PORT_POWER), GetPortStatus, SetPortFeature(PORT_POWER)
    assert dev.requests[-4:] == [
        bytes.fromhex("a0 06 00 29 00 00 47 00"),
        bytes.fromhex("23 01 08 00 03 00 00 00"),
        bytes.fromhex("a3 00 00 00 03 00 04 00"),
        bytes.fromhex("23 03 08 00 03 00 00 00"),
    ]
    assert not status.powered and not status.connected


def test_a_port_switched_off_takes_the_dfu_hub_off_the_bus_and_it_comes_back() -> None:
    be = backend()
    ports = UsbHubPorts("1-1", backend=be)
    assert ports.status(3).connected and ports.status(3).powered
    ports.set_power(3, False)
    be.service.wait_quiet()
    slot3 = be.service.hub(3)
    assert not slot3.present and be.service.hub(1).present  # port 1 keeps its power
    generation = slot3.generation
    ports.set_power(3, True)
    be.service.clock.sleep(1.0)
    be.service.wait_quiet()
    assert slot3.present and slot3.generation == generation + 1
    assert ports.status(3).connected


@pytest.mark.parametrize("switching", ["ganged", "none"])
def test_a_hub_that_does_not_switch_per_port_is_refused(switching: str) -> None:
    ports = UsbHubPorts("1-1", backend=backend(switching=switching))
    with pytest.raises(HubPowerError, match=f"does not switch power per port.*{switching}"):
        ports.open()


def test_no_hub_at_the_location_and_a_device_that_is_not_a_hub_are_named() -> None:
    be = backend()
    with pytest.raises(HubPowerError, match="no USB device at 1-2"):
        UsbHubPorts("1-2", backend=be).open()
    with pytest.raises(HubPowerError, match=r"1-1\.1 .* is not a hub"):
        UsbHubPorts("1-1.1", backend=be).open()
    with pytest.raises(HubPowerError, match=r"ports 1\.\.7, not 8"):
        UsbHubPorts("1-1", backend=be).set_power(8, False)


def test_a_stuck_port_reports_off_but_its_hub_keeps_power() -> None:
    be = backend(stuck=frozenset({3}))
    ports = UsbHubPorts("1-1", backend=be)
    ports.set_power(3, False)
    be.service.wait_quiet()
    assert not ports.status(3).powered  # what the hub says...
    assert be.service.hub(3).present  # ...is not what VBUS does


def test_the_hub_ports_switch_the_power_board_a_serial_hub_reads(tmp_path) -> None:
    board = PowerBoard(tmp_path)
    ports = UsbHubPorts("1-1", backend=backend(board=board))
    ports.set_power(5, False)
    assert not board.read(5).on and board.read(5).offs == 1
    ports.set_power(5, True)
    assert board.read(5).on


def test_an_unknown_request_stalls() -> None:
    be = backend()
    ports = UsbHubPorts("1-1", backend=be)
    ports.open()
    import usb.core

    with pytest.raises(usb.core.USBError):
        ports._dev.ctrl_transfer(0x23, 3, 4, 3, None, 1000)  # PORT_RESET is not modelled


@given(
    ports=st.integers(1, 255),
    chars=st.integers(0, 0xFFFF),
    good=st.integers(0, 255),
    current=st.integers(0, 255),
)
def test_hub_descriptor_round_trips(ports: int, chars: int, good: int, current: int) -> None:
    desc = HubDescriptor(ports, chars, good * 2, current, bytes(ports // 8 + 1))
    assert HubDescriptor.parse(desc.pack()) == desc
    assert desc.switching == {0: "ganged", 1: "per-port"}.get(chars & 3, "none")


@given(st.binary(max_size=12))
def test_hub_descriptor_parser_refuses_or_accepts_never_crashes(raw: bytes) -> None:
    with contextlib.suppress(ValueError):
        HubDescriptor.parse(raw)


def test_port_status_bits() -> None:
    assert PortStatus.parse(bytes.fromhex("0301 0000")).powered
    assert PortStatus.parse(bytes.fromhex("0301 0000")).connected
    assert not PortStatus.parse(bytes.fromhex("0000 0000")).powered
    with pytest.raises(ValueError):
        PortStatus.parse(b"\x00")


def test_locations() -> None:
    assert parse_location("1-1") == (1, (1,))
    assert parse_location("2-1.4") == (2, (1, 4))
    for bad in ("x", "1-", "1-0", "1-a.b"):
        with pytest.raises(ValueError):
            parse_location(bad)


@given(
    steps=st.lists(st.tuples(st.sampled_from([1, 3]), st.booleans()), max_size=12),
    stuck=st.booleans(),
)
def test_port_power_invariants(steps: list[tuple[int, bool]], stuck: bool) -> None:
    """Whatever the order of switching: GetPortStatus reports the last state asked for,
    and a slot's DFU hub is on the bus exactly when its port really has power (a stuck
    port's always has)."""
    be = backend(stuck=frozenset({3}) if stuck else frozenset())
    ports = UsbHubPorts("1-1", backend=be)
    asked = {1: True, 3: True}
    for port, on in steps:
        ports.set_power(port, on)
        asked[port] = on
        be.service.clock.sleep(1.0)
        be.service.wait_quiet()
        for p in (1, 3):
            assert ports.status(p).powered is asked[p]
            really = asked[p] or (stuck and p == 3)
            assert be.service.hub(p).present is really
            assert ports.status(p).connected is (really and asked[p])

"""The simulated USB bus served on a UNIX socket, reached through RemoteUsbBackend: the same
pyusb code, the same errors, and a client that goes away releases what it held."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import usb.core

from drivers.dfu import DfuDriver
from drivers.errors import PortBusy, PortVanished, UsbStall
from drivers.transport.usb import UsbLink
from drivers.transport.usb_remote import RemoteUsbBackend
from sim.pty import derive_eui64
from sim.usb_backend import SimUsbService
from sim.usb_dfu import FLASH_BASE, DfuHubSpec
from sim.usb_server import UsbBusServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UsbBusServer]:
    specs = [
        DfuHubSpec(slot=n, eui64=derive_eui64(2, n), firmware=0x0101_0000, paced=False)
        for n in (1, 2)
    ]
    with UsbBusServer(SimUsbService.of(specs), str(tmp_path / "bus.sock")) as srv:
        yield srv


@pytest.fixture
def remote(server: UsbBusServer) -> Iterator[Callable[[], RemoteUsbBackend]]:
    """Clients of the server (links do not close backends they were given)."""
    made: list[RemoteUsbBackend] = []

    def connect() -> RemoteUsbBackend:
        made.append(RemoteUsbBackend(server.path))
        return made[-1]

    yield connect
    for client in made:
        client.close()


def test_socket_is_private_and_pyusb_works_through_it(server: UsbBusServer) -> None:
    assert os.stat(server.path).st_mode & 0o077 == 0
    client = RemoteUsbBackend(server.path)
    try:
        devices = list(usb.core.find(find_all=True, backend=client))
        assert sorted(d.port_numbers for d in devices) == [(1, 1), (1, 2)]
        assert {d.serial_number for d in devices} == {server.service.hub(n).serial for n in (1, 2)}
        dev = devices[0]
        with pytest.raises(usb.core.USBError) as info:
            dev.ctrl_transfer(0x21, 1, 1, 0, b"\x00" * 8)  # DfuSe wBlockNum 1: STALL
        assert info.value.errno == errno.EPIPE and info.value.backend_error_code == -9
    finally:
        client.close()


def test_driver_over_the_socket(remote: Callable[[], RemoteUsbBackend]) -> None:
    link = UsbLink("usb:1-1.2", backend=remote())
    drv = DfuDriver(link)
    try:
        drv.connect()
        data = os.urandom(4096)
        drv.erase_pages([FLASH_BASE + 0x10000, FLASH_BASE + 0x10800])
        drv.write(FLASH_BASE + 0x10000, data)
        assert drv.read(FLASH_BASE + 0x10000, 4096) == data
        with pytest.raises(UsbStall):
            drv.link.control_out(4, 0, b"", "CLRSTATUS outside dfuERROR")
    finally:
        drv.close()


def test_a_client_that_goes_away_releases_its_claim(
    remote: Callable[[], RemoteUsbBackend],
) -> None:
    holder = remote()
    held = DfuDriver(UsbLink("usb:1-1.1", backend=holder))
    held.connect()
    with pytest.raises(PortBusy):
        DfuDriver(UsbLink("usb:1-1.1", backend=remote())).connect()
    holder.close()  # the process holding it died
    again = UsbLink("usb:1-1.1", backend=remote())
    DfuDriver(again).connect()
    again.close()
    held.close()


def test_a_bus_that_goes_away_is_a_vanished_port(tmp_path: Path) -> None:
    spec = DfuHubSpec(slot=1, eui64=derive_eui64(2, 1), paced=False)
    srv = UsbBusServer(SimUsbService.of([spec]), str(tmp_path / "bus.sock"))
    client = RemoteUsbBackend(srv.path)
    drv = DfuDriver(UsbLink("usb:1-1.1", backend=client))
    drv.connect()
    srv.close()
    with pytest.raises(PortVanished, match="GETSTATUS"):
        drv.get_status()
    drv.close()
    client.close()

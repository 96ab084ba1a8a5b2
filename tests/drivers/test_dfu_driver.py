"""The DFU driver through the real pyusb code (usb.core.find, Device, ctrl_transfer) over the
simulated USB bus, paced on a virtual clock so bwPollTimeout and frame times are real but
cost nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import usb.core

from drivers.dfu import DfuDriver, DfuTimeouts
from drivers.dfu_codes import PROTOCOL_DFU, DfuState, DfuStatus, MemoryMap
from drivers.errors import (
    AmbiguousDevice,
    ConfigError,
    DfuStatusError,
    LinkTimeout,
    NoUsbBackend,
    PortBusy,
    PortNotFound,
    PortVanished,
    UsbStall,
)
from drivers.transport.usb import (
    ENV_BACKEND,
    UsbLink,
    UsbSelector,
    backend_from_env,
    register_backend,
)
from drivers.types import Phase
from sim.pty import derive_eui64
from sim.usb_backend import SimUsbBackend, VirtualClock
from sim.usb_dfu import FLASH_BASE, OTP_BASE, DfuHubSpec, serial_for

OLD = 0x0101_0000
Make = Callable[..., SimUsbBackend]


def spec(slot: int = 1, **kw: object) -> DfuHubSpec:
    kw.setdefault("firmware", OLD)
    kw.setdefault("firmware_size", 8 * 1024)
    return DfuHubSpec(slot=slot, eui64=derive_eui64(5, slot), **kw)  # type: ignore[arg-type]


@pytest.fixture
def make() -> Make:
    """A paced simulated bus on a virtual clock, from hub specs."""

    def build(*specs: DfuHubSpec, paced: bool = True) -> SimUsbBackend:
        return SimUsbBackend.of(specs or (spec(),), clock=VirtualClock(), paced=paced)

    return build


@pytest.fixture
def links() -> Iterator[Callable[..., UsbLink]]:
    made: list[UsbLink] = []

    def link(port: str, backend: SimUsbBackend, **kw: object) -> UsbLink:
        made.append(UsbLink(port, backend=backend, **kw))  # type: ignore[arg-type]
        return made[-1]

    yield link
    for link_ in made:
        link_.close()


def test_pyusb_sees_real_descriptors(make: Make) -> None:
    backend = make(spec(1), spec(2, start_in="app"))
    devices = sorted(usb.core.find(find_all=True, backend=backend), key=lambda d: d.port_numbers)
    assert [(d.idVendor, d.idProduct) for d in devices] == [(0x0483, 0xDF11), (0x1209, 0x0001)]
    dfu, app = devices
    assert dfu.serial_number == serial_for(derive_eui64(5, 1))
    assert dfu.bcdDevice == 0x2200 and app.bcdDevice == 0x0101
    assert (dfu.bus, dfu.port_numbers, app.port_numbers) == (1, (1, 1), (1, 2))
    assert dfu.address != app.address
    names = [usb.util.get_string(dfu, i.iInterface) for i in dfu.get_active_configuration()]
    assert MemoryMap.parse(names[0]).segments[0].start == FLASH_BASE
    assert MemoryMap.parse(names[1]).segments[0].start == OTP_BASE


def test_erase_write_read_verify(make: Make, links: Callable[..., UsbLink]) -> None:
    backend = make()
    drv = DfuDriver(links("usb:1-1.1", backend))
    assert drv.connect() == "dfu"
    assert drv.functional is not None and drv.functional.transfer_size == 2048
    assert drv.get_commands() == bytes([0x00, 0x21, 0x41, 0x92])
    data = os.urandom(5000)  # not a whole number of blocks
    at = FLASH_BASE + 0x4000
    drv.erase_pages([at, at + 0x800, at + 0x1000])
    drv.write(at, data)
    assert drv.read(at, 5000) == data
    assert drv.verify(at, data).ok
    bad = drv.verify(at, data[:-1] + bytes([data[-1] ^ 1]))
    assert not bad.ok and bad.method == "readback" and "0x08005387" in bad.detail
    assert backend.service.hub(1).violations == []  # every bwPollTimeout was honoured


def test_capped_transfer_size_sets_the_address_per_chunk(
    make: Make, links: Callable[..., UsbLink]
) -> None:
    drv = DfuDriver(links("usb:1-1.1", make()), transfer_size=1000)
    drv.connect()
    at = FLASH_BASE + 0x8000
    drv.erase_pages([at, at + 0x800])
    data = os.urandom(3000)
    drv.write(at, data)
    assert drv.read(at, 3000) == data


def test_write_over_programmed_flash_is_errprog_with_block_and_address(
    make: Make, links: Callable[..., UsbLink]
) -> None:
    drv = DfuDriver(links("usb:1-1.1", make()))
    drv.connect()
    with pytest.raises(DfuStatusError, match=r"download block 0 at 0x08000000: errPROG") as info:
        drv.write(FLASH_BASE, b"\x00" * 64)
    assert (info.value.status, info.value.state) == (DfuStatus.ERR_PROG, DfuState.DFU_ERROR)
    assert info.value.address == FLASH_BASE and info.value.phase == "write"
    drv.to_idle()
    assert drv.get_state() == DfuState.DFU_IDLE


@pytest.mark.parametrize(
    ("fault", "error", "text"),
    [
        ("errwrite=1", DfuStatusError, "download block 1 at 0x08000800: errWRITE"),
        ("errverify=0", DfuStatusError, "download block 0 at 0x08000000: errVERIFY"),
        ("stall=2", UsbStall, "download block 2 at 0x08001000: the device stalled"),
        ("vanish=1", PortVanished, "download block 1 at 0x08000800: the device is gone"),
        ("hang=0", LinkTimeout, "download block 0 at 0x08000000: no answer within 200 ms"),
    ],
)
def test_faults_are_typed_and_located(
    make: Make, links: Callable[..., UsbLink], fault: str, error: type, text: str
) -> None:
    drv = DfuDriver(
        links("usb:1-1.1", make(spec(firmware=None, faults=fault))),
        timeouts=DfuTimeouts(request_ms=200),
    )
    drv.connect()
    drv.erase_pages([FLASH_BASE + n * 0x800 for n in range(4)])
    with pytest.raises(error, match=text) as info:
        drv.write(FLASH_BASE, os.urandom(8192))
    assert info.value.phase == "write" and info.value.port == "usb:1-1.1"


@pytest.mark.parametrize("will_detach", [True, False])
def test_detach_finds_the_same_hub_in_dfu_mode(
    make: Make, links: Callable[..., UsbLink], will_detach: bool
) -> None:
    # Two identical running hubs: slot 2 must be the one that detaches and is found again.
    backend = make(spec(1, start_in="app"), spec(2, start_in="app", will_detach=will_detach))
    serial = serial_for(derive_eui64(5, 2))
    drv = DfuDriver(links(f"usb:{serial}", backend))
    assert drv.connect() == "runtime"
    before = drv.link.current
    drv.enter_dfu()
    after = drv.link.current
    assert drv.mode == "dfu" and before is not None and after is not None
    assert (after.location, after.serial) == ("1-1.2", serial)
    assert after.address != before.address  # re-enumerated under a new address
    assert backend.service.hub(1).mode.value == "runtime"  # the other hub was not touched


def test_leave_runs_the_application_and_it_is_found_again(
    make: Make, links: Callable[..., UsbLink]
) -> None:
    drv = DfuDriver(links("usb:1-1.1", make()))
    drv.connect()
    drv.leave(FLASH_BASE)
    drv.wait_runtime(2.0)
    assert drv.mode == "runtime" and drv.string(4) == "VER 0x01010000"


def test_leave_with_a_broken_application_comes_back_in_dfu_mode(
    make: Make, links: Callable[..., UsbLink]
) -> None:
    drv = DfuDriver(links("usb:1-1.1", make()), timeouts=DfuTimeouts(reenumerate_s=1.0))
    drv.connect()
    drv.erase_pages([FLASH_BASE + 0x800])  # the CRC no longer matches
    drv.leave(FLASH_BASE)
    with pytest.raises(PortVanished, match="did not come back in run-time mode"):
        drv.wait_runtime(1.0)
    drv.reacquire(PROTOCOL_DFU, "leave", Phase.BOOT)  # the watchdog put it back in DFU mode
    assert drv.mode == "dfu"


def test_plain_dfu_download_and_upload(make: Make, links: Callable[..., UsbLink]) -> None:
    from firmware_images.build import demo_payload

    hub = spec(firmware=None, dfuse=False, manifestation_tolerant=True)
    backend = make(hub)
    drv = DfuDriver(links("usb:1-1.1", backend))
    drv.connect()
    image = demo_payload(0x0102_0000, size=6 * 1024)
    drv.download(image)
    assert drv.get_state() == DfuState.DFU_IDLE
    assert backend.service.hub(1).application() is not None
    assert drv.upload()[: len(image)] == image


def test_two_hubs_with_one_serial_are_refused_by_serial_and_found_by_path(
    make: Make, links: Callable[..., UsbLink]
) -> None:
    twin = serial_for(derive_eui64(5, 1))
    backend = make(spec(1), spec(2, serial=twin))
    with pytest.raises(AmbiguousDevice, match=r"2 USB devices match usb:.*usb:1-1.1.*usb:1-1.2"):
        DfuDriver(links(f"usb:{twin}", backend)).connect()
    drv = DfuDriver(links("usb:1-1.2", backend))
    drv.connect()
    assert drv.link.current is not None and drv.link.current.location == "1-1.2"


def test_selection_errors(make: Make, links: Callable[..., UsbLink]) -> None:
    backend = make()
    with pytest.raises(PortNotFound, match="no USB device at usb:NOSUCH"):
        DfuDriver(links("usb:NOSUCH", backend)).connect()
    with pytest.raises(PortNotFound):
        DfuDriver(links("usb:1-1.1", backend, ids=[(0x1234, 0x5678)])).connect()
    first = DfuDriver(links("usb:1-1.1", backend))
    first.connect()
    with pytest.raises(PortBusy):
        DfuDriver(links("usb:1-1.1", backend)).connect()
    with pytest.raises(ConfigError):
        UsbSelector.parse("/dev/ttyUSB0")


def test_selector_forms() -> None:
    assert UsbSelector.parse("usb:1-1.3") == UsbSelector(bus=1, port_path=(1, 3))
    assert UsbSelector.parse("usb:ABC123") == UsbSelector(serial="ABC123")
    assert UsbSelector.parse("usb:serial=1-2") == UsbSelector(serial="1-2")
    assert UsbSelector.parse("usb:path=2-4") == UsbSelector(bus=2, port_path=(4,))


def test_backend_from_env() -> None:
    with pytest.raises(ConfigError):
        backend_from_env({ENV_BACKEND: "bogus"})
    # A setting that names no bus is the station's set-up, not a hub: a ConfigError.
    with pytest.raises(ConfigError, match="no simulated USB bus") as info:
        backend_from_env({ENV_BACKEND: "sim:/nonexistent/bus.sock"})
    assert isinstance(info.value, NoUsbBackend)
    marker = object()
    register_backend("unit-test", lambda: marker)
    try:
        assert backend_from_env({ENV_BACKEND: "unit-test"}) is marker
    finally:
        register_backend("unit-test", None)


def test_early_getstatus_is_a_protocol_error_the_hub_reports(make: Make) -> None:
    # The driver never does this; prove the hub would catch a host that did.
    backend = make(spec(firmware=None))
    dev = usb.core.find(backend=backend)
    assert dev is not None
    dev.ctrl_transfer(0x21, 1, 0, 0, b"\x41" + FLASH_BASE.to_bytes(4, "little"))  # erase
    status = dev.ctrl_transfer(0xA1, 3, 0, 0, 6)
    assert status[4] == DfuState.DFU_DNBUSY and int.from_bytes(status[1:4], "little") == 22
    with pytest.raises(usb.core.USBError) as info:
        dev.ctrl_transfer(0xA1, 3, 0, 0, 6)  # at once: 22 ms too early
    assert info.value.errno == 32  # EPIPE: STALL
    assert "before bwPollTimeout elapsed" in backend.service.hub(1).violations[0]


def test_no_libusb_is_a_station_problem_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import usb.backend.libusb1

    monkeypatch.setattr(usb.backend.libusb1, "get_backend", lambda: None)
    with pytest.raises(ConfigError) as info:
        backend_from_env({})
    assert isinstance(info.value, NoUsbBackend)
    assert "apt install libusb-1.0-0" in str(info.value)

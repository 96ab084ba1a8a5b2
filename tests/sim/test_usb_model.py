"""The pure USB DFU hub model: timing figures, state table corners, faults grammar."""

from __future__ import annotations

import pytest

from drivers.dfu_codes import DfuRequest, DfuState, DfuStatus, StatusReply
from sim.dfu_rig import dfu_rig_specs
from sim.pty import derive_eui64
from sim.usb_dfu import (
    FLASH_BASE,
    DfuHub,
    DfuHubSpec,
    Mode,
    SimUsbBus,
    control_wire_bytes,
    frame_end,
    parse_dfu_faults,
    poll_ms,
    port_path_for,
    program_time_s,
)

OUT, IN = 0x21, 0xA1


def test_timing_figures() -> None:
    assert control_wire_bytes(2048) == 2498  # 3 frames at 1200 bytes per frame
    assert control_wire_bytes(6) == 53
    assert frame_end(0.0021) == pytest.approx(0.003)
    assert frame_end(0.003) == pytest.approx(0.003)
    assert poll_ms(program_time_s(2048)) == 21
    assert poll_ms(0.022) == 22
    assert port_path_for(3) == (1, 3) and port_path_for(8) == (2, 1)


def test_bus_shares_the_wire_between_hubs() -> None:
    bus = SimUsbBus.of([DfuHubSpec(slot=n, eui64=derive_eui64(0, n)) for n in (1, 2)], paced=True)
    first = bus.transfer(0.0, 2048)
    second = bus.transfer(0.0, 2048)  # the other hub at the same moment: waits for the wire
    assert first == (0.0, pytest.approx(0.003))
    assert second[0] == pytest.approx(2498 / 1200 * 1e-3)
    assert second[1] == pytest.approx(0.005)


class Driver:
    """Calls straight into one hub at explicit times."""

    def __init__(self, **kw: object) -> None:
        spec = DfuHubSpec(slot=1, eui64=derive_eui64(0, 1), **kw)  # type: ignore[arg-type]
        self.bus = SimUsbBus.of([spec])
        self.hub: DfuHub = self.bus.hubs[0]
        self.now = 0.0
        self.bus.advance(self.now)

    def call(
        self, request: DfuRequest, value: int = 0, data: bytes = b"", length: int = 0
    ) -> tuple[bytes, int | None]:
        self.bus.advance(self.now)
        bm = (
            IN if request in (DfuRequest.UPLOAD, DfuRequest.GETSTATUS, DfuRequest.GETSTATE) else OUT
        )
        reply = self.hub.control(self.now, self.now, bm, request, value, 0, data, length, 1000)
        self.now = reply.done_at + 0.001
        return reply.data, reply.error

    def status(self) -> StatusReply:
        data, error = self.call(DfuRequest.GETSTATUS, length=6)
        assert error is None
        return StatusReply.parse(data)


def test_state_table_corners() -> None:
    d = Driver(firmware=None)
    assert d.hub.mode is Mode.DFU and d.hub.state is DfuState.DFU_IDLE
    _, err = d.call(DfuRequest.CLRSTATUS)  # outside dfuERROR: stall, dfuERROR/errUNKNOWN
    assert err == -9 and (d.hub.state, d.hub.status) == (DfuState.DFU_ERROR, DfuStatus.ERR_UNKNOWN)
    _, err = d.call(DfuRequest.ABORT)  # dfuERROR takes only CLRSTATUS
    assert err == -9
    assert d.call(DfuRequest.CLRSTATUS)[1] is None and d.hub.state is DfuState.DFU_IDLE
    _, err = d.call(DfuRequest.DNLOAD, 1, b"\x00" * 8)  # DfuSe: wBlockNum 1 is invalid
    assert err == -9 and d.hub.status is DfuStatus.ERR_STALLEDPKT
    d.call(DfuRequest.CLRSTATUS)
    # Set Address Pointer outside the map: errTARGET after the busy GETSTATUS.
    d.call(DfuRequest.DNLOAD, 0, b"\x21" + (0x0900_0000).to_bytes(4, "little"))
    assert d.status().state == DfuState.DFU_DNBUSY
    st = d.status()
    assert (st.status, st.state) == (DfuStatus.ERR_TARGET, DfuState.DFU_ERROR)


def test_erase_reports_its_time_and_enforces_it() -> None:
    d = Driver(firmware=0x0101_0000)
    d.call(DfuRequest.DNLOAD, 0, b"\x41" + FLASH_BASE.to_bytes(4, "little"))
    st = d.status()
    assert (st.state, st.poll_timeout_ms) == (DfuState.DFU_DNBUSY, 22)
    d.now += 0.022
    st = d.status()
    assert (st.status, st.state) == (DfuStatus.OK, DfuState.DFU_DNLOAD_IDLE)
    assert d.hub.flash.read(FLASH_BASE, 2048) == b"\xff" * 2048
    assert d.hub.violations == []


def test_detach_and_leave_re_enumerate_with_new_addresses() -> None:
    d = Driver(firmware=0x0101_0000, start_in="app")
    assert d.hub.mode is Mode.RUNTIME
    first = d.hub.address
    assert d.call(DfuRequest.DETACH, 255)[1] is None
    assert d.hub.mode is Mode.DETACHED
    d.now += 0.2
    d.bus.advance(d.now)
    assert d.hub.mode is Mode.DFU and d.hub.address != first
    second = d.hub.address
    d.call(DfuRequest.DNLOAD, 0, b"\x21" + FLASH_BASE.to_bytes(4, "little"))
    d.status()
    d.now += 0.001
    assert d.status().state == DfuState.DFU_DNLOAD_IDLE
    d.call(DfuRequest.DNLOAD, 2, b"")
    assert d.status().state == DfuState.DFU_MANIFEST
    d.now += 0.3
    d.bus.advance(d.now)
    assert d.hub.mode is Mode.RUNTIME and d.hub.address not in (0, second)


def test_fault_grammar_and_rig_specs() -> None:
    assert [(f.slot, f.kind, f.value) for f in parse_dfu_faults("stall=3, 2:errwrite=0")] == [
        (None, "stall", 3),
        (2, "errwrite", 0),
    ]
    for bad in ("stall=x", "jam=3", "dupserial=1"):
        with pytest.raises(ValueError):
            parse_dfu_faults(bad)
    specs = dfu_rig_specs(3, faults="3:dupserial=1", seed=4)
    assert specs[2].usb_serial == specs[0].usb_serial != specs[1].usb_serial
    with pytest.raises(ValueError, match="slot 5"):
        dfu_rig_specs(3, faults="2:dupserial=5")

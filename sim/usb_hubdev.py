"""A simulated USB 2.0 hub with per-port power switching, on the simulated USB bus.

Slot N's hub plugs into port ``(N-1)%7+1`` of the 7-port hub on root port ``(N-1)//7+1``
(:func:`sim.usb_dfu.port_path_for`), so hub ``k`` sits at ``1-k`` and its port ``p`` feeds
slot ``(k-1)*7+p``. The hub answers the USB 2.0 chapter 11 requests the station uses,
checked byte for byte (anything else STALLs, as a real hub's request error does):

* standard GET_DESCRIPTOR (device, configuration, strings);
* GetHubDescriptor ``A0 06 00 29 00 00 LL LL``, GetHubStatus ``A0 00 00 00 00 00 04 00``;
* GetPortStatus ``A3 00 00 00 PP 00 04 00``;
* Set/ClearPortFeature(PORT_POWER) ``23 03|01 08 00 PP 00 00 00``.

Every request is logged in :attr:`SimUsbHubDevice.requests` as its 8 SETUP bytes, for tests.
A port switched off takes the power of the slot's hub: a DFU hub drops off the bus and
loses its RAM; a serial hub fed from the same slot's channel on a :class:`~sim.power.PowerBoard`
goes silent. ``switching`` models hubs that gang their ports or do not switch at all, and
``stuck`` ports report "off" while their VBUS stays up (the common lying hub).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.power import PowerBoard
from sim.usb_dfu import ERR_PIPE, Reply

HUB_VID, HUB_PID = 0x1209, 0x4855  # pid.codes test range: a simulated hub
PORTS = 7
SWITCHING = {"per-port": 0x0001, "ganged": 0x0000, "none": 0x0002}
#: bPwrOn2PwrGood: how long after power-on a port's power is good (2 ms units).
POWER_ON_TO_GOOD_MS = 100
_S_MANUFACTURER, _S_PRODUCT = 1, 2


@dataclass(frozen=True)
class UsbHubSpec:
    """One simulated switching hub.

    Args:
        number: its root port (it sits at ``1-<number>``).
        switching: ``per-port``, ``ganged`` or ``none`` (wHubCharacteristics bits 1:0).
        stuck: ports whose switch does not switch (they still report the state asked for).
    """

    number: int
    switching: str = "per-port"
    stuck: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not 1 <= self.number <= 127:
            raise ValueError(f"hub {self.number}: root ports are 1..127")
        if self.switching not in SWITCHING:
            raise ValueError(f"switching must be one of {tuple(SWITCHING)}")

    def slot(self, port: int) -> int:
        """The slot port ``port`` feeds."""
        return (self.number - 1) * PORTS + port


@dataclass
class _Descriptors:
    device: dict[str, Any]
    config: dict[str, Any]
    interfaces: list[dict[str, Any]]


#: Called when a port's power really changes: (slot, on, at).
PowerHook = Callable[[int, bool, float], None]


@dataclass
class SimUsbHubDevice:
    """The hub's model; the bus (:class:`sim.usb_backend.SimUsbService`) drives it."""

    spec: UsbHubSpec
    hook: PowerHook | None = None
    board: PowerBoard | None = None
    connected: Callable[[int], bool] = lambda slot: False
    address: int = 0
    generation: int = 1
    claimed_by: str | None = None
    alt: int = 0
    #: Port power as the hub reports it (index 0 is port 1).
    reported: list[bool] = field(default_factory=lambda: [True] * PORTS)
    requests: list[bytes] = field(default_factory=list)

    @property
    def token(self) -> str:
        """The bus's id of this hub's (only) enumeration."""
        return f"H{self.spec.number}:{self.generation}"

    @property
    def present(self) -> bool:
        """A hub on the bus is always there."""
        return True

    @property
    def location(self) -> str:
        """``1-<number>``."""
        return f"1-{self.spec.number}"

    @property
    def descriptors(self) -> dict[int, _Descriptors]:
        """This enumeration's descriptors, as the backend reads them."""
        return {self.generation: self.current()}

    def current(self) -> _Descriptors:
        """Descriptor fields (one configuration, one hub interface, no endpoints modelled:
        the station never reads the status-change endpoint)."""
        device = {
            "bLength": 18,
            "bDescriptorType": 1,
            "bcdUSB": 0x0200,
            "bDeviceClass": 9,
            "bDeviceSubClass": 0,
            "bDeviceProtocol": 1,  # single TT
            "bMaxPacketSize0": 64,
            "idVendor": HUB_VID,
            "idProduct": HUB_PID,
            "bcdDevice": 0x0100,
            "iManufacturer": _S_MANUFACTURER,
            "iProduct": _S_PRODUCT,
            "iSerialNumber": 0,
            "bNumConfigurations": 1,
            "address": self.address,
            "bus": 1,
            "port_number": self.spec.number,
            "port_numbers": [self.spec.number],
            "speed": 3,  # LIBUSB_SPEED_HIGH
        }
        config = {
            "bLength": 9,
            "bDescriptorType": 2,
            "wTotalLength": 18,
            "bNumInterfaces": 1,
            "bConfigurationValue": 1,
            "iConfiguration": 0,
            "bmAttributes": 0xE0,  # self-powered
            "bMaxPower": 0,
            "extra_descriptors": [],
        }
        intf = {
            "bLength": 9,
            "bDescriptorType": 4,
            "bInterfaceNumber": 0,
            "bAlternateSetting": 0,
            "bNumEndpoints": 0,
            "bInterfaceClass": 9,
            "bInterfaceSubClass": 0,
            "bInterfaceProtocol": 0,
            "iInterface": 0,
            "extra_descriptors": [],
        }
        return _Descriptors(device, config, [intf])

    def hub_descriptor(self) -> bytes:
        """GetHubDescriptor's answer for a 7-port hub (Table 11-13): 9 bytes."""
        chars = SWITCHING[self.spec.switching] | 0x0008  # per-port over-current protection
        return struct.pack(
            "<BBBHBBBB", 9, 0x29, PORTS, chars, POWER_ON_TO_GOOD_MS // 2, 100, 0x00, 0xFF
        )

    def port_status(self, port: int) -> bytes:
        """wPortStatus, wPortChange (Table 11-21): connection, enable, power, high speed."""
        status = 0
        if self.reported[port - 1]:
            status |= 0x0100
            if self.connected(self.spec.slot(port)):
                status |= 0x0001 | 0x0002
        return struct.pack("<HH", status, 0)

    def _switch(self, port: int, on: bool, at: float) -> None:
        mode = self.spec.switching
        if mode == "none":
            return  # such a hub keeps every port powered and says so
        ports = range(1, PORTS + 1) if mode == "ganged" else (port,)
        for p in ports:
            if self.reported[p - 1] == on:
                continue
            self.reported[p - 1] = on
            if p in self.spec.stuck:
                continue
            slot = self.spec.slot(p)
            if self.board is not None:
                self.board.switch(slot, on)
            if self.hook is not None:
                self.hook(slot, on, at + (POWER_ON_TO_GOOD_MS / 1000.0 if on else 0.0))

    def control(
        self,
        start: float,
        done: float,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: bytes,
        wLength: int,
        timeout_ms: int,
    ) -> Reply:
        """One control transfer (the module docstring lists what it answers)."""
        self.requests.append(
            struct.pack("<BBHHH", bmRequestType, bRequest, wValue, wIndex, wLength)
        )
        setup = (bmRequestType, bRequest, wValue)
        port_ok = 1 <= wIndex <= PORTS
        if setup[:2] == (0x80, 6):
            raw = self._standard_descriptor(wValue, wIndex)
            return Reply(done, error=ERR_PIPE) if raw is None else Reply(done, data=raw[:wLength])
        if setup == (0xA0, 6, 0x2900) and wIndex == 0:
            return Reply(done, data=self.hub_descriptor()[:wLength])
        if setup == (0xA0, 0, 0) and wIndex == 0 and wLength == 4:
            return Reply(done, data=bytes(4))
        if setup == (0xA3, 0, 0) and port_ok and wLength == 4:
            return Reply(done, data=self.port_status(wIndex))
        if bmRequestType == 0x23 and bRequest in (1, 3) and wValue == 8 and port_ok:
            if wLength != 0 or data:
                return Reply(done, error=ERR_PIPE)
            self._switch(wIndex, bRequest == 3, done)
            return Reply(done)
        return Reply(done, error=ERR_PIPE)

    def _standard_descriptor(self, wValue: int, wIndex: int) -> bytes | None:
        kind, index = wValue >> 8, wValue & 0xFF
        if kind == 1:
            d = self.current().device
            return struct.pack(
                "<BBHBBBBHHHBBBB",
                18,
                1,
                0x0200,
                9,
                0,
                1,
                64,
                HUB_VID,
                HUB_PID,
                0x0100,
                _S_MANUFACTURER,
                _S_PRODUCT,
                0,
                d["bNumConfigurations"],
            )
        if kind == 2 and index == 0:
            return bytes([9, 2, 18, 0, 1, 1, 0, 0xE0, 0, 9, 4, 0, 0, 0, 9, 0, 0, 0])
        if kind == 3:
            if index == 0:
                return bytes([4, 3, 0x09, 0x04])
            text = {_S_MANUFACTURER: "Simulated Hubs", _S_PRODUCT: "Switching USB 2.0 Hub"}
            if index not in text:
                return None
            raw = text[index].encode("utf-16-le")
            return bytes([2 + len(raw), 3]) + raw
        return None

    def usb_reset(self, done: float) -> bool:
        """A port reset of the hub itself: it keeps its port power settings."""
        return False

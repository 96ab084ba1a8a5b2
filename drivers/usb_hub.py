"""Per-port power switching of a USB 2.0 hub (USB 2.0 chapter 11), through pyusb.

This is what ``uhubctl`` does: read the hub descriptor (GetHubDescriptor, Table 11-13),
refuse a hub whose wHubCharacteristics does not say *individual port power switching*
(bits 1:0 = 01b; ganged 00b would switch every slot at once, 1Xb switches nothing), then
SetPortFeature / ClearPortFeature(PORT_POWER) and read the port back with GetPortStatus
(wPortStatus bit 8, PORT_POWER, Table 11-21).

The requests, byte for byte (USB 2.0 Table 11-15, 11-16, 11-17):

================  =============  ========  ===============  =====  =======
request           bmRequestType  bRequest  wValue           wIndex wLength
================  =============  ========  ===============  =====  =======
GetHubDescriptor  0xA0           6         0x2900           0      n
GetPortStatus     0xA3           0         0                port   4
SetPortFeature    0x23           3         8 (PORT_POWER)   port   0
ClearPortFeature  0x23           1         8 (PORT_POWER)   port   0
================  =============  ========  ===============  =====  =======

Many hubs report a port unpowered while VBUS stays up (the port is wired straight to
the supply): the readback cannot catch that, so the station also checks that the slot's
hub stops answering (``station.power``).
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from typing import Any

import usb.core
import usb.util

from drivers.errors import TransportError

HUB_CLASS = 0x09
HUB_DESCRIPTOR_TYPE = 0x29
#: bmRequestType values: direction | class | recipient (device or other = port).
RT_HUB_IN = 0xA0
RT_PORT_IN = 0xA3
RT_PORT_OUT = 0x23
#: bRequest codes (USB 2.0 Table 9-4, used by the hub class as Table 11-16 says).
GET_STATUS = 0
CLEAR_FEATURE = 1
SET_FEATURE = 3
GET_DESCRIPTOR = 6
#: Port feature selector PORT_POWER (Table 11-17).
PORT_POWER = 8
#: wPortStatus bits (Table 11-21).
STATUS_CONNECTION = 0x0001
STATUS_POWER = 0x0100
#: wHubCharacteristics bits 1:0, Logical Power Switching Mode (Table 11-13).
LPSM_MASK = 0x0003
LPSM_GANGED = 0x0000
LPSM_PER_PORT = 0x0001
_TIMEOUT_MS = 1000
_MAX_DESCRIPTOR = 71  # 7 fixed bytes + two bitmaps for 255 ports


class HubPowerError(TransportError):
    """A power-switching hub could not be found, used or trusted."""


@dataclass(frozen=True)
class HubDescriptor:
    """The USB 2.0 hub descriptor (Table 11-13)."""

    ports: int
    characteristics: int
    power_on_to_good_ms: int
    controller_current_ma: int
    removable: bytes = b""

    @classmethod
    def parse(cls, raw: bytes) -> HubDescriptor:
        """Parse a descriptor as the hub sent it.

        Raises:
            ValueError: too short, not a hub descriptor, or bLength disagrees.
        """
        if len(raw) < 7:
            raise ValueError(f"a hub descriptor has at least 7 bytes, got {len(raw)}")
        length, kind, ports, chars, good, current = struct.unpack_from("<BBBHBB", raw)
        if kind != HUB_DESCRIPTOR_TYPE:
            raise ValueError(f"descriptor type 0x{kind:02X} is not a hub descriptor (0x29)")
        bitmap = ports // 8 + 1
        if length < 7 + 2 * bitmap or len(raw) < 7 + bitmap:
            raise ValueError(f"a {ports}-port hub descriptor is {7 + 2 * bitmap} bytes")
        return cls(ports, chars, good * 2, current, bytes(raw[7 : 7 + bitmap]))

    def pack(self) -> bytes:
        """The descriptor's bytes (DeviceRemovable, then PortPwrCtrlMask all ones)."""
        bitmap = self.ports // 8 + 1
        removable = self.removable.ljust(bitmap, b"\x00")[:bitmap]
        head = struct.pack(
            "<BBBHBB",
            7 + 2 * bitmap,
            HUB_DESCRIPTOR_TYPE,
            self.ports,
            self.characteristics,
            self.power_on_to_good_ms // 2,
            self.controller_current_ma,
        )
        return head + removable + b"\xff" * bitmap

    @property
    def switching(self) -> str:
        """``per-port``, ``ganged`` or ``none``: how the hub switches port power."""
        mode = self.characteristics & LPSM_MASK
        if mode == LPSM_PER_PORT:
            return "per-port"
        return "ganged" if mode == LPSM_GANGED else "none"


@dataclass(frozen=True)
class PortStatus:
    """GetPortStatus's answer: wPortStatus and wPortChange."""

    status: int
    change: int

    @classmethod
    def parse(cls, raw: bytes) -> PortStatus:
        """Parse the 4 bytes.

        Raises:
            ValueError: not 4 bytes.
        """
        if len(raw) != 4:
            raise ValueError(f"a port status is 4 bytes, got {len(raw)}")
        status, change = struct.unpack("<HH", raw)
        return cls(status, change)

    @property
    def powered(self) -> bool:
        """PORT_POWER: the port is not in the Powered-off state."""
        return bool(self.status & STATUS_POWER)

    @property
    def connected(self) -> bool:
        """PORT_CONNECTION: a device is attached."""
        return bool(self.status & STATUS_CONNECTION)


def parse_location(text: str) -> tuple[int, tuple[int, ...]]:
    """``1-1`` or ``2-1.4``: a hub's bus and port path (``1`` alone: bus 1's root hub).

    Raises:
        ValueError: not in that form.
    """
    bus_text, dash, path_text = text.partition("-")
    if dash and not path_text:
        raise ValueError(f"{text!r} is not a USB location such as 1-1 or 1-1.4")
    try:
        bus = int(bus_text)
        path = tuple(int(p) for p in path_text.split(".")) if path_text else ()
    except ValueError:
        raise ValueError(f"{text!r} is not a USB location such as 1-1 or 1-1.4") from None
    if bus < 0 or any(not 1 <= p <= 255 for p in path):
        raise ValueError(f"{text!r} is not a USB location such as 1-1 or 1-1.4")
    return bus, path


class UsbHubPorts:
    """One switching hub, found by its location on the bus.

    Args:
        location: the hub's own ``<bus>-<port path>`` (what ``uhubctl`` shows as its
            location), e.g. ``1-1``.
        backend: a pyusb backend (None: the system libusb).
    """

    def __init__(self, location: str, backend: Any = None) -> None:
        self.location = location
        self.bus, self.path = parse_location(location)
        self.backend = backend
        self._dev: Any = None
        self.descriptor: HubDescriptor | None = None

    def _where(self) -> str:
        return f"USB hub {self.location}"

    def open(self) -> HubDescriptor:
        """Find the hub and read its descriptor; refuse one that cannot switch per port.

        Raises:
            HubPowerError: no hub there, it does not answer, or it does not switch per port.
        """
        if self._dev is not None and self.descriptor is not None:
            return self.descriptor
        try:
            found = list(usb.core.find(find_all=True, backend=self.backend))
        except (usb.core.USBError, usb.core.NoBackendError) as exc:
            raise HubPowerError(f"cannot list the USB devices: {exc}") from exc
        for dev in found:
            path = tuple(int(p) for p in (dev.port_numbers or ()))
            if dev.bus is not None and (int(dev.bus), path) == (self.bus, self.path):
                break
        else:
            raise HubPowerError(
                f"no USB device at {self.location}",
                hint="`uhubctl` or `lsusb -t` shows where the switching hub is",
            )
        if dev.bDeviceClass != HUB_CLASS:
            raise HubPowerError(
                f"the device at {self.location} ({dev.idVendor:04x}:{dev.idProduct:04x}) "
                "is not a hub"
            )
        self._dev = dev
        raw = self._control_in(
            RT_HUB_IN, GET_DESCRIPTOR, HUB_DESCRIPTOR_TYPE << 8, 0, _MAX_DESCRIPTOR
        )
        try:
            desc = HubDescriptor.parse(raw)
        except ValueError as exc:
            raise HubPowerError(f"{self._where()}: bad hub descriptor: {exc}") from exc
        if desc.switching != "per-port":
            self.close()
            raise HubPowerError(
                f"{self._where()} ({dev.idVendor:04x}:{dev.idProduct:04x}) does not switch "
                f"power per port (wHubCharacteristics 0x{desc.characteristics:04X}: "
                f"{desc.switching} switching)",
                hint="use a hub that uhubctl lists as compatible, or a relay command",
            )
        self.descriptor = desc
        return desc

    def _control_in(self, bm: int, request: int, value: int, index: int, length: int) -> bytes:
        try:
            data = self._dev.ctrl_transfer(bm, request, value, index, length, _TIMEOUT_MS)
        except usb.core.USBError as exc:
            raise HubPowerError(f"{self._where()} did not answer: {exc}") from exc
        return bytes(data)

    def _port(self, port: int) -> None:
        desc = self.open()
        if not 1 <= port <= desc.ports:
            raise HubPowerError(f"{self._where()} has ports 1..{desc.ports}, not {port}")

    def set_power(self, port: int, on: bool) -> None:
        """SetPortFeature or ClearPortFeature(PORT_POWER) on ``port``.

        Raises:
            HubPowerError: no such port, or the hub refused (STALL) or did not answer.
        """
        self._port(port)
        request = SET_FEATURE if on else CLEAR_FEATURE
        try:
            self._dev.ctrl_transfer(RT_PORT_OUT, request, PORT_POWER, port, None, _TIMEOUT_MS)
        except usb.core.USBError as exc:
            what = "on" if on else "off"
            raise HubPowerError(
                f"{self._where()} refused to switch port {port} {what}: {exc}"
            ) from exc

    def status(self, port: int) -> PortStatus:
        """GetPortStatus of ``port``.

        Raises:
            HubPowerError: no such port, or no proper answer.
        """
        self._port(port)
        raw = self._control_in(RT_PORT_IN, GET_STATUS, 0, port, 4)
        try:
            return PortStatus.parse(raw)
        except ValueError as exc:
            raise HubPowerError(f"{self._where()} port {port}: {exc}") from exc

    def close(self) -> None:
        """Let go of the hub."""
        if self._dev is not None:
            with contextlib.suppress(usb.core.USBError):
                usb.util.dispose_resources(self._dev)
        self._dev = None


__all__ = [
    "HubDescriptor",
    "HubPowerError",
    "PortStatus",
    "UsbHubPorts",
    "parse_location",
]

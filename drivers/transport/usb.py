"""USB devices through pyusb: find exactly one hub, claim its DFU interface, control transfers.

A hub is selected by what stays true of it: its USB serial number, or the physical port it
is plugged into (bus number and port path, ``usb:1-1.3`` as Linux writes it). Never "the
first DFU device": identical hubs share VID, PID and, on some STM32 parts, even the serial
number (dfu-util users flashed wrong boards that way), so a selection that matches more than
one device is refused with :class:`~drivers.errors.AmbiguousDevice` listing every candidate.
Once found, a hub is pinned to its port path (and serial number): when it re-enumerates
under a new address (detach into DFU mode, leave, a reset) it is found again there, and
nowhere else.

Devices are found only with ``usb.core.find(find_all=True, backend=backend)``; the backend
is a constructor argument. Without one, :func:`backend_from_env` reads
``STATION_USB_BACKEND``: unset or ``libusb1`` for the system libusb, ``sim:<socket>`` for the
simulated bus of ``station sim --protocol dfu`` (docs/sim-dfu.md). pyusb's ``USBError`` is
translated here: a vanished device (``ENODEV``) is :class:`~drivers.errors.PortVanished`, a
STALL (``EPIPE``) :class:`~drivers.errors.UsbStall`, a timeout
:class:`~drivers.errors.LinkTimeout`, a busy or forbidden device
:class:`~drivers.errors.PortBusy`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import usb.core
import usb.util

from drivers.dfu_codes import DFU_CLASS, DFU_SUBCLASS, REQUEST_IN, REQUEST_OUT
from drivers.errors import (
    AmbiguousDevice,
    ConfigError,
    LinkTimeout,
    NoUsbBackend,
    PortBusy,
    PortNotFound,
    PortVanished,
    StationError,
    TransportError,
    UsbStall,
)

ENV_BACKEND = "STATION_USB_BACKEND"
PORT_SCHEME = "usb:"
_PATH = re.compile(r"^(\d+)-(\d+(?:\.\d+)*)$")
_POLL_S = 0.01  # how often the bus is looked at while waiting for a hub to come back

# libusb error codes, as pyusb's libusb1 backend stores them in USBError.backend_error_code.
_NO_DEVICE = -4
_NOT_FOUND = -5
_BUSY = -6
_TIMEOUT = -7
_PIPE = -9
_ACCESS = -3


class Clock(Protocol):
    """Where a driver gets its time: the system clock, or a simulated one in tests."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep()`` (nothing for a non-positive time)."""
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class OtherDevice(PortNotFound):
    """The selected port holds a device, but not with the ids the hub may show: another
    model (or another kind of device) is plugged in there.

    Attributes:
        found: each device there, as ``vid:pid``.
    """

    def __init__(self, message: str, found: list[str], *, port: str | None = None) -> None:
        super().__init__(
            message,
            port=port,
            hint="another kind of device is at this port: check the hub and its profile",
        )
        self.found = found


class UsbBackendMissing(NoUsbBackend, ConfigError):
    """There is no USB backend to talk through: no libusb, or ``STATION_USB_BACKEND``
    names a simulated bus that is not there. The station's set-up is at fault, not a hub,
    so it is a :class:`~drivers.errors.ConfigError` (``station`` exits 2 with the fix) and
    never a hub's failure."""


#: Backends registered by name (e.g. an in-process simulated bus in tests): the value of
#: ``STATION_USB_BACKEND`` selects one, like pyserial's URL handlers.
_REGISTERED: dict[str, Callable[[], Any]] = {}


def register_backend(name: str, factory: Callable[[], Any] | None) -> None:
    """Make ``STATION_USB_BACKEND=<name>`` use ``factory()`` (None removes the name)."""
    if factory is None:
        _REGISTERED.pop(name, None)
    else:
        _REGISTERED[name] = factory


def backend_from_env(environ: Mapping[str, str] | None = None) -> Any:
    """The pyusb backend ``STATION_USB_BACKEND`` names (system libusb when unset).

    Raises:
        UsbBackendMissing: libusb is not installed, or the simulated bus's socket cannot
            be reached (a :class:`~drivers.errors.ConfigError`).
        ConfigError: the setting is not understood.
    """
    env = os.environ if environ is None else environ
    spec = env.get(ENV_BACKEND, "").strip()
    if spec in _REGISTERED:
        return _REGISTERED[spec]()
    if spec.startswith("sim:"):
        from drivers.transport.usb_remote import RemoteUsbBackend

        path = spec[4:]
        try:
            return RemoteUsbBackend(path)
        except OSError as exc:
            raise UsbBackendMissing(
                f"no simulated USB bus at {path} ({exc.strerror or exc})",
                hint=f"is 'station sim --protocol dfu' running? it prints the {ENV_BACKEND} "
                "setting to use",
            ) from exc
    if spec in ("", "libusb1", "libusb0", "openusb"):
        import importlib

        module = importlib.import_module(f"usb.backend.{spec or 'libusb1'}")
        backend = module.get_backend()
        if backend is None:
            raise UsbBackendMissing(f"pyusb found no {spec or 'libusb1'} library on this machine")
        return backend
    raise ConfigError(
        f"{ENV_BACKEND}={spec!r} is not understood",
        hint="use libusb1 (the default), libusb0, openusb, or sim:<socket path>",
    )


@dataclass(frozen=True)
class UsbSelector:
    """Which hub: by serial number, by bus and port path, or both.

    Attributes:
        serial: the USB serial number string.
        bus: the bus number (with ``port_path``).
        port_path: port numbers from the root hub down, e.g. ``(1, 3)`` for ``1-1.3``.
        ids: the (idVendor, idProduct) pairs the hub may show (run-time and DFU mode);
            empty accepts any.
    """

    serial: str | None = None
    bus: int | None = None
    port_path: tuple[int, ...] | None = None
    ids: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, port: str, ids: Sequence[tuple[int, int]] = ()) -> UsbSelector:
        """``usb:<serial>``, ``usb:<bus>-<port.path>``, ``usb:serial=<s>`` or ``usb:path=<p>``.

        Raises:
            ConfigError: not a ``usb:`` port.
        """
        if not port.startswith(PORT_SCHEME) or len(port) == len(PORT_SCHEME):
            raise ConfigError(
                f"{port!r} is not a USB port",
                hint="a USB hub's --port is usb:<serial number> or usb:<bus>-<port path> "
                "(e.g. usb:1-1.3)",
            )
        rest = port[len(PORT_SCHEME) :]
        if rest.startswith("serial="):
            return cls(serial=rest[len("serial=") :], ids=tuple(ids))
        path_text = rest[len("path=") :] if rest.startswith("path=") else rest
        m = _PATH.match(path_text)
        if m is not None:
            path = tuple(int(p) for p in m[2].split("."))
            return cls(bus=int(m[1]), port_path=path, ids=tuple(ids))
        if rest.startswith("path="):
            raise ConfigError(f"{port!r}: a port path is <bus>-<port>[.<port>...], e.g. 1-1.3")
        return cls(serial=rest, ids=tuple(ids))


def location_text(bus: int | None, port_path: Sequence[int] | None) -> str:
    """``1-1.3`` (bus 1, ports 1 then 3), or ``?`` when the backend does not say."""
    if bus is None or not port_path:
        return "?"
    return f"{bus}-{'.'.join(str(p) for p in port_path)}"


@dataclass(frozen=True)
class UsbCandidate:
    """One attached device that matches a selection, as the bus shows it."""

    bus: int | None
    port_path: tuple[int, ...]
    address: int | None
    vid: int
    pid: int
    serial: str | None

    @property
    def location(self) -> str:
        """``<bus>-<port.path>``."""
        return location_text(self.bus, self.port_path)

    def __str__(self) -> str:
        return (
            f"usb:{self.location} ({self.vid:04x}:{self.pid:04x}, serial "
            f"{self.serial or '?'}, address {self.address})"
        )


@dataclass(frozen=True)
class DfuInterface:
    """A DFU interface alternate setting of the claimed device."""

    number: int
    alt: int
    protocol: int  # 1 run-time, 2 DFU mode
    name: str | None  # its iInterface string (DfuSe: the memory map)
    extra: bytes  # class-specific descriptors that follow it


class UsbLink:
    """One USB hub, found by a selector and spoken to by control transfers on its DFU
    interface; the only object in the drivers that touches pyusb.

    Args:
        port: ``usb:<serial>`` or ``usb:<bus>-<port.path>`` (or a ready selector).
        ids: the (idVendor, idProduct) pairs the hub may show.
        backend: a pyusb backend; None reads ``STATION_USB_BACKEND`` on first use.
        clock: time source for waits; default: the backend's ``clock`` attribute when it
            has one (a simulated bus living in simulated time), else the system clock.
        timeout_ms: timeout of each control transfer.
        same_serial: the hub keeps its serial number in both modes, so a re-found device
            must show it too (else only the port path identifies it).
    """

    def __init__(
        self,
        port: str | UsbSelector,
        *,
        ids: Sequence[tuple[int, int]] = (),
        backend: Any = None,
        clock: Clock | None = None,
        timeout_ms: int = 5000,
        same_serial: bool = True,
    ) -> None:
        if isinstance(port, UsbSelector):
            self.selector = port
            self.port = self._describe(port)
        else:
            self.selector = UsbSelector.parse(port, ids)
            self.port = port
        if ids and not self.selector.ids:
            self.selector = UsbSelector(
                self.selector.serial, self.selector.bus, self.selector.port_path, tuple(ids)
            )
        self._backend = backend
        self._own_backend = False  # created here from the environment: closed here too
        self._clock = clock
        self.timeout_ms = timeout_ms
        self.same_serial = same_serial
        self.dev: Any = None
        #: What was found first; later finds must be this same hub (pinned location).
        self.pinned: UsbCandidate | None = None
        self.current: UsbCandidate | None = None
        self.interface: DfuInterface | None = None
        self.interfaces: list[DfuInterface] = []

    @staticmethod
    def _describe(sel: UsbSelector) -> str:
        if sel.port_path is not None:
            return f"{PORT_SCHEME}{location_text(sel.bus, sel.port_path)}"
        return f"{PORT_SCHEME}{sel.serial}"

    @property
    def backend(self) -> Any:
        """The pyusb backend (resolved from the environment on first use)."""
        if self._backend is None:
            self._backend = backend_from_env()
            self._own_backend = True
        return self._backend

    @property
    def clock(self) -> Clock:
        """The clock waits are measured on."""
        if self._clock is None:
            found = getattr(self.backend, "clock", None)
            self._clock = found if found is not None else SYSTEM_CLOCK
        return self._clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        self._clock = value

    # -- finding -----------------------------------------------------------------------

    def _matches_ids(self, dev: Any, any_ids: bool = False) -> bool:
        ids = self.selector.ids
        return any_ids or not ids or (int(dev.idVendor), int(dev.idProduct)) in ids

    def _serial_of(self, dev: Any) -> str | None:
        """The serial number string, None when the device has none or will not say."""
        try:
            index = int(dev.iSerialNumber)
            return usb.util.get_string(dev, index) if index else None
        except (usb.core.USBError, ValueError, NotImplementedError):
            return None
        finally:
            with contextlib.suppress(usb.core.USBError):
                usb.util.dispose_resources(dev)

    def candidates(self, *, any_ids: bool = False) -> list[tuple[UsbCandidate, Any]]:
        """Every attached device matching the selector (and the pinned hub, once found);
        with ``any_ids``, whatever ids it shows.

        Raises:
            UsbBackendMissing: there is no USB backend (a ConfigError).
            TransportError: the bus cannot be listed.
        """
        sel, pin = self.selector, self.pinned
        try:
            devices = list(usb.core.find(find_all=True, backend=self.backend))
        except UsbBackendMissing as exc:
            raise exc.located(port=self.port) from None
        except usb.core.NoBackendError as exc:
            raise UsbBackendMissing(str(exc), port=self.port) from exc
        except usb.core.USBError as exc:
            raise self._translate(exc, "list the USB devices") from exc
        out: list[tuple[UsbCandidate, Any]] = []
        for dev in devices:
            if not self._matches_ids(dev, any_ids):
                continue
            bus = None if dev.bus is None else int(dev.bus)
            path = tuple(int(p) for p in (dev.port_numbers or ()))
            if sel.port_path is not None and (bus, path) != (sel.bus, sel.port_path):
                continue
            if pin is not None and (bus, path) != (pin.bus, pin.port_path):
                continue
            serial = self._serial_of(dev)
            if sel.serial is not None and serial != sel.serial:
                continue
            if pin is not None and self.same_serial and serial != pin.serial:
                continue
            found = UsbCandidate(bus, path, dev.address, dev.idVendor, dev.idProduct, serial)
            out.append((found, dev))
        return out

    def find(self) -> UsbCandidate:
        """Find the one hub the selector names and take it (not yet claimed).

        Raises:
            OtherDevice: a device is there, but with other ids (another model).
            PortNotFound: no such hub attached.
            AmbiguousDevice: more than one matches (e.g. two hubs with one serial number).
        """
        found = self.candidates()
        if not found:
            ids = ", ".join(f"{v:04x}:{p:04x}" for v, p in self.selector.ids) or "any id"
            others = [f"{c.vid:04x}:{c.pid:04x}" for c, _ in self.candidates(any_ids=True)]
            if others:
                raise OtherDevice(
                    f"{self.port} holds {', '.join(others)}, not a device with the ids "
                    f"looked for ({ids})",
                    others,
                    port=self.port,
                )
            raise PortNotFound(
                f"no USB device at {self.port} ({ids})",
                port=self.port,
                hint="check the cable and the --port (usb:<serial> or usb:<bus>-<port path>)",
            )
        if len(found) > 1:
            raise AmbiguousDevice(
                f"{len(found)} USB devices match {self.port}",
                [str(c) for c, _ in found],
                port=self.port,
            )
        self.current, self.dev = found[0]
        if self.pinned is None:
            self.pinned = self.current
        return self.current

    def wait_for(self, protocol: int, timeout_s: float, what: str) -> UsbCandidate:
        """Wait until the pinned hub is back on the bus showing a DFU interface of
        ``protocol`` (1 run-time, 2 DFU mode), then claim it.

        Raises:
            PortVanished: it did not come back in time (``what`` says after what).
        """
        self.forget()
        deadline = self.clock.monotonic() + timeout_s
        seen = ""
        while True:
            found = self.candidates()
            if len(found) == 1:
                self.current, self.dev = found[0]
                try:
                    self.claim(protocol=protocol)
                    return self.current
                except PortVanished:
                    pass  # gone again between listing and opening: look again
                except TransportError as exc:
                    seen = f" (last seen: {exc.message})"
                self.forget()
            elif len(found) > 1:  # cannot happen with a pinned port path; never guess
                raise AmbiguousDevice(
                    f"{len(found)} devices at the hub's port after {what}",
                    [str(c) for c, _ in found],
                    port=self.port,
                )
            if self.clock.monotonic() >= deadline:
                mode = "DFU mode" if protocol == 2 else "run-time mode"
                raise PortVanished(
                    f"the hub did not come back in {mode} within {timeout_s:g} s of {what}{seen}",
                    port=self.port,
                )
            self.clock.sleep(_POLL_S)

    # -- the interface -----------------------------------------------------------------

    def _dfu_interfaces(self) -> list[DfuInterface]:
        dev = self.dev
        try:
            cfg = dev.get_active_configuration()
        except usb.core.USBError as exc:
            if exc.backend_error_code in (_NO_DEVICE, _NOT_FOUND) or exc.errno == errno.ENODEV:
                raise self._translate(exc, "read the configuration") from exc
            dev.set_configuration()  # unconfigured: take the first configuration
            cfg = dev.get_active_configuration()
        out = []
        for intf in cfg:
            if (intf.bInterfaceClass, intf.bInterfaceSubClass) != (DFU_CLASS, DFU_SUBCLASS):
                continue
            extra = bytes(intf.extra_descriptors or b"")
            name = None
            if intf.iInterface:
                with contextlib.suppress(usb.core.USBError, ValueError):
                    name = usb.util.get_string(dev, intf.iInterface)
            out.append(
                DfuInterface(
                    intf.bInterfaceNumber,
                    intf.bAlternateSetting,
                    intf.bInterfaceProtocol,
                    name,
                    extra,
                )
            )
        return out

    def claim(self, *, protocol: int | None = None, alt: int = 0) -> DfuInterface:
        """Claim the hub's DFU interface and select alternate setting ``alt``.

        Args:
            protocol: require this DFU interface protocol (1 run-time, 2 DFU mode).

        Raises:
            PortNotFound: the device has no (such) DFU interface.
        """
        if self.dev is None:
            self.find()
        try:
            self.interfaces = self._dfu_interfaces()
            wanted = [i for i in self.interfaces if protocol is None or i.protocol == protocol]
            if not wanted:
                kinds = sorted({i.protocol for i in self.interfaces})
                raise PortNotFound(
                    f"{self.current}: no DFU interface with protocol {protocol} "
                    f"(has {kinds or 'no DFU interface'})",
                    port=self.port,
                )
            chosen = next((i for i in wanted if i.alt == alt), None)
            if chosen is None:
                raise PortNotFound(
                    f"{self.current}: the DFU interface has no alternate setting {alt}",
                    port=self.port,
                )
            usb.util.claim_interface(self.dev, chosen.number)
            if sum(1 for i in self.interfaces if i.number == chosen.number) > 1:
                self.dev.set_interface_altsetting(chosen.number, chosen.alt)
        except usb.core.USBError as exc:
            raise self._translate(exc, "claim the DFU interface") from exc
        self.interface = chosen
        return chosen

    def select_alt(self, alt: int) -> DfuInterface:
        """Switch the claimed DFU interface to alternate setting ``alt``."""
        current = self.interface
        protocol = None if current is None else current.protocol
        chosen = next((i for i in self.interfaces if i.alt == alt and i.protocol == protocol), None)
        if chosen is None or self.dev is None:
            raise PortNotFound(f"the DFU interface has no alternate setting {alt}", port=self.port)
        try:
            self.dev.set_interface_altsetting(chosen.number, chosen.alt)
        except usb.core.USBError as exc:
            raise self._translate(exc, f"select alternate setting {alt}") from exc
        self.interface = chosen
        return chosen

    # -- transfers ---------------------------------------------------------------------

    def _intf_number(self) -> int:
        if self.interface is None:
            raise PortNotFound("no DFU interface claimed", port=self.port)
        return self.interface.number

    def control_out(self, bRequest: int, wValue: int, data: bytes, what: str) -> None:
        """A class request to the DFU interface with ``data`` (may be empty).

        Raises:
            UsbStall, PortVanished, LinkTimeout, TransportError: ``what`` failed.
        """
        index = self._intf_number()
        try:
            sent = self.dev.ctrl_transfer(
                REQUEST_OUT, bRequest, wValue, index, data, timeout=self.timeout_ms
            )
        except usb.core.USBError as exc:
            raise self._translate(exc, what) from exc
        if sent != len(data):
            raise TransportError(f"{what}: sent {sent} of {len(data)} bytes", port=self.port)

    def control_in(self, bRequest: int, wValue: int, length: int, what: str) -> bytes:
        """A class request from the DFU interface; returns what the device sent.

        Raises:
            UsbStall, PortVanished, LinkTimeout, TransportError: ``what`` failed.
        """
        index = self._intf_number()
        try:
            got = self.dev.ctrl_transfer(
                REQUEST_IN, bRequest, wValue, index, length, timeout=self.timeout_ms
            )
        except usb.core.USBError as exc:
            raise self._translate(exc, what) from exc
        return bytes(got)

    def string(self, index: int) -> str | None:
        """String descriptor ``index`` of the claimed device (None for index 0).

        Raises:
            PortVanished, UsbStall, TransportError: it could not be read.
        """
        if not index:
            return None
        try:
            return str(usb.util.get_string(self.dev, index))
        except usb.core.USBError as exc:
            raise self._translate(exc, f"read string descriptor {index}") from exc
        except ValueError as exc:
            raise TransportError(f"read string descriptor {index}: {exc}", port=self.port) from exc

    @property
    def bcd_device(self) -> int:
        """bcdDevice of the claimed device."""
        return int(self.dev.bcdDevice)

    def reset(self) -> None:
        """USB-reset the device; it may re-enumerate (the handle is then dropped).

        Raises:
            PortVanished: there is no device to reset.
        """
        if self.dev is None:
            raise PortVanished("no device to reset", port=self.port)
        try:
            self.dev.reset()
        except usb.core.USBError as exc:
            # libusb: NOT_FOUND after a reset = the device re-enumerated (new descriptors);
            # NO_DEVICE = it is already gone. Either way the old handle is dead.
            if exc.backend_error_code not in (_NOT_FOUND, _NO_DEVICE):
                raise self._translate(exc, "USB reset") from exc
        self.forget()

    # -- lifecycle ---------------------------------------------------------------------

    def forget(self) -> None:
        """Drop the device (it re-enumerated or vanished); the pin stays."""
        if self.dev is not None:
            with contextlib.suppress(usb.core.USBError):
                usb.util.dispose_resources(self.dev)
        self.dev = None
        self.interface = None

    def close(self) -> None:
        """Release the interface and the device; safe to call at any time."""
        if self.dev is not None and self.interface is not None:
            with contextlib.suppress(usb.core.USBError):
                usb.util.release_interface(self.dev, self.interface.number)
        self.forget()
        closer = getattr(self._backend, "close", None)
        if self._own_backend and callable(closer):
            closer()

    def _translate(self, exc: usb.core.USBError, what: str) -> StationError:
        code = exc.backend_error_code
        number = exc.errno
        if isinstance(exc, usb.core.USBTimeoutError) or code == _TIMEOUT:
            return LinkTimeout(f"{what}: no answer within {self.timeout_ms} ms", port=self.port)
        if code in (_NO_DEVICE, _NOT_FOUND) or number in (errno.ENODEV, errno.ENOENT):
            return PortVanished(
                f"{what}: the device is gone (unplugged, reset or re-enumerated)",
                port=self.port,
            )
        if code == _PIPE or number == errno.EPIPE:
            return UsbStall(f"{what}: the device stalled the request", port=self.port)
        if code in (_BUSY, _ACCESS) or number in (errno.EBUSY, errno.EACCES):
            return PortBusy(f"{what}: {exc.strerror or exc}", port=self.port)
        return TransportError(f"{what}: {exc.strerror or exc}", port=self.port)

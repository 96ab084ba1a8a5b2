"""Simulated USB DFU hubs as a pyusb backend, so the real ``usb.core`` code runs over them.

:class:`SimUsbService` is the bus in plain values (device and handle tokens, dicts, bytes),
thread-safe, paced on a clock: each operation is computed by the pure model
(:mod:`sim.usb_dfu`) under a lock, then the caller sleeps until the model says the transfer
completes. Two adapters expose it:

* :class:`SimUsbBackend`, a ``usb.backend.IBackend`` for in-process use (tests, benchmarks):
  ``usb.core.find(backend=SimUsbBackend(...))`` returns ``usb.core.Device`` objects whose
  ``ctrl_transfer`` lands in the model;
* :mod:`sim.usb_server`, which serves the same operations on a UNIX socket to
  :class:`drivers.transport.usb_remote.RemoteUsbBackend` in the station's process.

:class:`VirtualClock` lets a test run paced hubs (and a driver that honours bwPollTimeout)
without waiting: sleeping advances the clock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

from drivers.transport.usb import SYSTEM_CLOCK, Clock
from drivers.transport.usb_remote import ForwardingBackend, usb_error
from sim.usb_dfu import (
    ERR_BUSY,
    ERR_NO_DEVICE,
    ERR_NOT_FOUND,
    DfuHub,
    DfuHubSpec,
    Mode,
    Reply,
    SimUsbBus,
)
from sim.usb_hubdev import SimUsbHubDevice, UsbHubSpec

#: A device on the simulated bus: a DFU hub in a slot, or a switching USB hub.
Device = DfuHub | SimUsbHubDevice


class VirtualClock:
    """A clock that only moves when someone sleeps (or :meth:`advance` is called)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        """The current simulated time."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Advance the simulated time."""
        if seconds > 0:
            self.now += seconds

    advance = sleep


class SimUsbError(Exception):
    """A libusb error code from the simulated bus (adapters raise it as pyusb would)."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(detail or str(code))
        self.code = code
        self.detail = detail


class SimUsbService:
    """The backend operations on a simulated bus, in plain values (see module docstring).

    Args:
        bus: the hubs.
        clock: the time the hubs live in; a request's completion is waited for on it.
    """

    def __init__(
        self,
        bus: SimUsbBus,
        clock: Clock = SYSTEM_CLOCK,
        usb_hubs: Sequence[UsbHubSpec | SimUsbHubDevice] = (),
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.lock = threading.Lock()
        self._handles: dict[str, tuple[Device, int]] = {}
        #: Switching hubs the slots hang from (``usb_hubs``); their ports feed the slots.
        self.usb_hubs = [
            h if isinstance(h, SimUsbHubDevice) else SimUsbHubDevice(h) for h in usb_hubs
        ]
        for dev in self.usb_hubs:
            dev.hook = self._slot_power
            dev.connected = self._slot_present
        self._ids = itertools.count(1)
        # Time 0 of the model is when the service starts: the hubs attach then.
        self._t0 = clock.monotonic()
        for hub in bus.hubs:
            if hub.attach_at == 0.0:
                hub.attach_at = self._t0

    @classmethod
    def of(
        cls,
        specs: Sequence[DfuHubSpec],
        *,
        clock: Clock = SYSTEM_CLOCK,
        paced: bool | None = None,
        usb_hubs: Sequence[UsbHubSpec | SimUsbHubDevice] = (),
    ) -> SimUsbService:
        """A service over hubs built from ``specs`` (hanging from ``usb_hubs``)."""
        return cls(SimUsbBus.of(specs, paced=paced), clock, usb_hubs)

    # -- plumbing ------------------------------------------------------------------------

    def _now(self) -> float:
        now = self.clock.monotonic()
        self.bus.advance(now)
        return now

    def hub(self, slot: int) -> DfuHub:
        """The hub in ``slot``."""
        return next(h for h in self.bus.hubs if h.spec.slot == slot)

    def usb_hub(self, number: int) -> SimUsbHubDevice:
        """The switching hub on root port ``number``."""
        return next(h for h in self.usb_hubs if h.spec.number == number)

    def _slot_power(self, slot: int, on: bool, at: float) -> None:
        """A switching hub's port really changed: the slot's DFU hub, if any, follows."""
        hub = next((h for h in self.bus.hubs if h.spec.slot == slot), None)
        if hub is not None:
            if on:
                hub.power_on(at)
            else:
                hub.power_off()

    def _slot_present(self, slot: int) -> bool:
        return any(h.spec.slot == slot and h.present for h in self.bus.hubs)

    def _device(self, token: str) -> tuple[Device, int]:
        if token.startswith("H"):
            number, gen = (int(part) for part in token[1:].split(":"))
            return self.usb_hub(number), gen
        slot, gen = (int(part) for part in token.split(":"))
        return self.hub(slot), gen

    def _live(self, handle: str) -> Device:
        """The hub behind an open handle, if it is still the same enumeration."""
        try:
            hub, gen = self._handles[handle]
        except KeyError:
            raise SimUsbError(ERR_NOT_FOUND, f"no open handle {handle}") from None
        if not hub.present or hub.generation != gen:
            raise SimUsbError(ERR_NO_DEVICE)
        return hub

    def _wait_until(self, when: float) -> None:
        self.clock.sleep(when - self.clock.monotonic())

    def _finish(self, reply: Reply) -> Reply:
        self._wait_until(reply.done_at)
        if reply.error is not None:
            raise SimUsbError(reply.error)
        return reply

    # -- enumeration and descriptors -----------------------------------------------------

    def enumerate_devices(self) -> list[str]:
        """Tokens of the devices on the bus now."""
        with self.lock:
            now = self.clock.monotonic()
            hubs = [h.token for h in self.usb_hubs]
            return hubs + [f"{h.spec.slot}:{h.generation}" for h in self.bus.present(now)]

    def get_device_descriptor(self, dev: str) -> dict[str, Any]:
        """Device descriptor fields (libusb keeps them after the device is gone)."""
        hub, gen = self._device(dev)
        return dict(hub.descriptors[gen].device)

    def get_configuration_descriptor(self, dev: str, config: int) -> dict[str, Any]:
        """Configuration descriptor fields of configuration index ``config``."""
        hub, gen = self._device(dev)
        if config != 0:
            raise SimUsbError(ERR_NOT_FOUND, f"no configuration index {config}")
        return dict(hub.descriptors[gen].config)

    def get_interface_descriptor(
        self, dev: str, intf: int, alt: int, config: int
    ) -> dict[str, Any]:
        """Interface descriptor fields of interface ``intf``, alternate index ``alt``."""
        hub, gen = self._device(dev)
        alts = hub.descriptors[gen].interfaces
        if config != 0 or intf != 0 or not 0 <= alt < len(alts):
            raise SimUsbError(ERR_NOT_FOUND, f"no interface {intf} alternate {alt}")
        return dict(alts[alt])

    # -- handles ---------------------------------------------------------------------------

    def open_device(self, dev: str) -> str:
        """Open a device; a token of an earlier enumeration is a device that is gone."""
        with self.lock:
            self._now()
            hub, gen = self._device(dev)
            if not hub.present or hub.generation != gen:
                raise SimUsbError(ERR_NO_DEVICE)
            handle = f"h{next(self._ids)}"
            self._handles[handle] = (hub, gen)
            return handle

    def close_device(self, handle: str) -> None:
        """Close a handle (releasing its interface)."""
        with self.lock:
            entry = self._handles.pop(handle, None)
            if entry is not None and entry[0].claimed_by == handle:
                entry[0].claimed_by = None

    def set_configuration(self, handle: str, value: int) -> None:
        """SET_CONFIGURATION (only configuration 1 exists)."""
        self._transfer(handle, 0, lambda hub, start, done: Reply(done))
        if value != 1:
            raise SimUsbError(-2, f"no configuration {value}")

    def get_configuration(self, handle: str) -> int:
        """The active configuration (the host configured the device when it enumerated)."""
        with self.lock:
            self._now()
            self._live(handle)
            return 1

    def claim_interface(self, handle: str, intf: int) -> None:
        """Claim interface 0; another handle's claim makes it busy."""
        with self.lock:
            self._now()
            hub = self._live(handle)
            if intf != 0:
                raise SimUsbError(ERR_NOT_FOUND, f"no interface {intf}")
            if hub.claimed_by not in (None, handle):
                raise SimUsbError(ERR_BUSY, "the interface is claimed by another program")
            hub.claimed_by = handle

    def release_interface(self, handle: str, intf: int) -> None:
        """Release the interface."""
        with self.lock:
            entry = self._handles.get(handle)
            if entry is not None and entry[0].claimed_by == handle:
                entry[0].claimed_by = None

    def set_interface_altsetting(self, handle: str, intf: int, alt: int) -> None:
        """SET_INTERFACE: a control transfer that selects an alternate setting."""

        def select(hub: Device, start: float, done: float) -> Reply:
            if intf != 0 or not 0 <= alt < len(hub.current().interfaces):
                return Reply(done, error=-9)
            hub.alt = alt
            return Reply(done)

        self._transfer(handle, 0, select)

    def _transfer(self, handle: str, data_len: int, act: Any) -> Reply:
        with self.lock:
            now = self._now()
            hub = self._live(handle)
            start, done = self.bus.transfer(now, data_len)
            self.bus.advance(start)
            reply: Reply = act(hub, start, done)
        return self._finish(reply)

    def ctrl_transfer(
        self,
        handle: str,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: bytes,
        length: int,
        timeout: int,
    ) -> bytes | int:
        """A control transfer; returns the IN data, or the OUT byte count."""
        device_to_host = bool(bmRequestType & 0x80)
        out = b"" if device_to_host else bytes(data)
        reply = self._transfer(
            handle,
            length,
            lambda hub, start, done: hub.control(
                start, done, bmRequestType, bRequest, wValue, wIndex, out, length, timeout
            ),
        )
        return reply.data if device_to_host else reply.count

    def reset_device(self, handle: str) -> None:
        """USB port reset; NOT_FOUND when the device re-enumerates (as libusb says)."""
        with self.lock:
            now = self._now()
            hub = self._live(handle)
            done = now + (0.0 if not self.bus.paced else 0.020)
            again = hub.usb_reset(done)
        self._wait_until(done)
        if again:
            raise SimUsbError(ERR_NOT_FOUND, "the device re-enumerated")

    def clear_halt(self, handle: str, ep: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT): nothing to clear on endpoint 0."""
        with self.lock:
            self._live(handle)

    # -- the bench -------------------------------------------------------------------------

    def unplug(self, slot: int) -> None:
        """Pull the cable of a hub."""
        with self.lock:
            self.hub(slot).unplug()
            self.bus.advance(self.clock.monotonic())

    def wait_quiet(self) -> None:
        """Let every hub that is re-enumerating come back (for tests on a virtual clock)."""
        while True:
            with self.lock:
                self.bus.advance(self.clock.monotonic())
                due = [
                    h.attach_at
                    for h in self.bus.hubs
                    if h.mode is Mode.DETACHED and h.attach_at is not None
                ] + [h.manifest_at for h in self.bus.hubs if h.manifest_at is not None]
            if not due:
                return
            self._wait_until(min(due))


class SimUsbBackend(ForwardingBackend):
    """pyusb backend over a :class:`SimUsbService` in this process: each backend call is
    the service's method of the same name (the same calls :mod:`sim.usb_server` serves on a
    socket). Errors are raised as pyusb's libusb1 backend raises them."""

    def __init__(self, service: SimUsbService) -> None:
        super().__init__()
        self.service = service

    @property
    def clock(self) -> Clock:
        """The clock the hubs live in (a :class:`~drivers.transport.usb.UsbLink` adopts it)."""
        return self.service.clock

    @classmethod
    def of(
        cls,
        specs: Sequence[DfuHubSpec],
        *,
        clock: Clock = SYSTEM_CLOCK,
        paced: bool | None = None,
        usb_hubs: Sequence[UsbHubSpec | SimUsbHubDevice] = (),
    ) -> SimUsbBackend:
        """A backend over new hubs built from ``specs`` (hanging from ``usb_hubs``)."""
        return cls(SimUsbService.of(specs, clock=clock, paced=paced, usb_hubs=usb_hubs))

    def _call(self, op: str, *args: Any, wait_s: float | None = None) -> Any:
        try:
            return getattr(self.service, op)(*args)
        except SimUsbError as exc:
            raise usb_error(exc.code, exc.detail) from None

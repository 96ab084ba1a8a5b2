"""Helpers for the Gecko/XMODEM tests: a virtual-time link to the pure Gecko hub model.

No real time passes: bytes written reach the model at once, and a read that finds nothing
first lets the model's deaf waits run (start-up, the 10 ms before a result) and then, if the
read would have waited that long, its alarm (a 'C' repeat or a 3 s block timeout) expire.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from drivers.errors import PortVanished
from sim.an3155 import Emit, Vanish
from sim.gecko import GeckoHub

Fault = Callable[[bytes], bytes]


def sent(outputs: Sequence[object]) -> bytes:
    """Everything the device put on the line."""
    return b"".join(o.data for o in outputs if isinstance(o, Emit))


def noisy(rate_drop: float, rate_flip: float, rng: random.Random) -> Fault:
    """A line that drops and bit-flips bytes at the given rates."""

    def apply(data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if rng.random() < rate_drop:
                continue
            if rng.random() < rate_flip:
                byte ^= 1 << rng.randrange(8)
            out.append(byte)
        return bytes(out)

    return apply


def clean(data: bytes) -> bytes:
    return data


class ModelLink:
    """What :class:`drivers.xmodem.XmodemSender` and :class:`drivers.gecko.GeckoDriver` need
    of a link, over a :class:`GeckoHub` in virtual time."""

    url = "model://gecko"

    def __init__(self, device: GeckoHub, *, to_hub: Fault = clean, to_host: Fault = clean) -> None:
        self.device = device
        self.to_hub = to_hub
        self.to_host = to_host
        self.rx = bytearray()
        self.written = bytearray()
        self.vanished = False
        self._take(device.settle())

    def _take(self, outputs: Sequence[object]) -> None:
        for out in outputs:
            if isinstance(out, Emit) and out.data:
                self.rx += self.to_host(out.data)
            elif isinstance(out, Vanish):
                self.vanished = True

    def write(self, data: bytes) -> None:
        if self.vanished:
            raise PortVanished("write failed", port=self.url)
        self.written += data
        self._take(self.device.feed(self.to_hub(bytes(data))))
        self._take(self.device.settle())

    def read(self, n: int, timeout_s: float) -> bytes:
        if not self.rx:
            self._take(self.device.settle())
        if not self.rx and not self.vanished:
            alarm = self.device.pending_alarm
            if alarm is not None and alarm.delay_s <= timeout_s:
                self._take(self.device.expire())
                self._take(self.device.settle())
        if self.vanished and not self.rx:
            raise PortVanished("read failed", port=self.url)
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def drain(self, quiet_s: float, limit_s: float = 2.0) -> bytes:
        out = bytes(self.rx)
        self.rx.clear()
        return out

    def byte_time_s(self) -> float:
        return 10 / 115200


def hub_in_upload(**kwargs: object) -> tuple[GeckoHub, ModelLink]:
    """A powered hub whose bootloader has been asked to upload ('1'); its first 'C' read."""
    hub = GeckoHub(**kwargs)  # type: ignore[arg-type]
    hub.power_on()
    link = ModelLink(hub)
    link.drain(0)
    link.write(b"1")
    return hub, link

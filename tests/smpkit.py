"""An in-memory line link to a pure :class:`sim.smp.McubootHub` (no time, no pty)."""

from __future__ import annotations

from sim.an3155 import Emit, Timer, Vanish
from sim.smp import McubootHub


class ModelLink:
    """Feeds written bytes to the model; timers expire at once; answers are read as lines."""

    url = "model://smp"

    def __init__(self, hub: McubootHub) -> None:
        self.hub = hub
        self.rx = bytearray()
        self.written = 0
        self.gone = False
        self._take(hub.power_on())

    def _take(self, outputs: list[Emit | Timer | Vanish]) -> None:
        for out in outputs:
            if isinstance(out, Emit):
                self.rx += out.data
            elif isinstance(out, Vanish):
                self.gone = True
        while (t := self.hub.pending_timer) is not None and t.delay_s != float("inf"):
            for out in self.hub.timer_expired(t.token):
                if isinstance(out, Emit):
                    self.rx += out.data

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self._take(self.hub.feed(data))

    def read_line(self, timeout_s: float) -> bytes | None:
        at = self.rx.find(b"\n")
        if at < 0:
            return None
        line = bytes(self.rx[:at])
        del self.rx[: at + 1]
        return line.rstrip(b"\r")

"""The wire clock: makes a pure hub model exactly as slow as the line it pretends to be.

A :class:`Pacer` takes a model's outputs (:mod:`sim.core.timed`) and the time host bytes
were read, and says when each reply leaves: bit times per byte at the line's baud rate,
the model's flash and core times, USB-serial adapter latency, byte faults on the line.
The pseudo-terminal server (:mod:`sim.pty`) and the ``sim://`` port both run one.
"""

from __future__ import annotations

import enum
import functools
import heapq
import itertools
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from sim.core.faults import ByteFaults, FaultPlan
from sim.core.flash import Flash
from sim.core.timed import Alarm, DeviceOutput, Emit, Timer

BITS_PER_BYTE = 11  # 8E1: start, 8 data, parity, stop
_FEED_CHUNK = 256  # bytes given to a model at once, so alarms are checked between chunks


class HubModel(Protocol):
    """What the pacer (and a ground-truth look) needs of a pure hub model."""

    @property
    def flash(self) -> Flash:
        """Its flash memory."""
        ...

    @property
    def running_app(self) -> object | None:
        """The application it runs (with a ``firmware_version``); None: none runs."""
        ...

    @property
    def mode(self) -> enum.Enum:
        """What the device is doing (its value names the application as ``"app"``)."""
        ...

    def power_on(self) -> Sequence[DeviceOutput]:
        """Power-on reset."""
        ...

    def feed(self, data: bytes) -> Sequence[DeviceOutput]:
        """Host bytes, in order."""
        ...

    def timer_expired(self, token: int) -> Sequence[DeviceOutput]:
        """A :class:`Timer` or :class:`Alarm` is due."""
        ...


@runtime_checkable
class Clocked(Protocol):
    """A model whose behaviour depends on when bytes arrive, not only on their order (e.g.
    MCUboot's line buffers, which fill while the server is busy). The pacer lends it its
    clock before each :meth:`HubModel.feed`; a model without this method never sees time."""

    def clock(self, arrive: Callable[[int], float] | None, free_at: float) -> None:
        """``arrive(i)``: when byte ``i`` of the next ``feed`` reaches the device (None:
        unpaced, no time); ``free_at``: when the device core is next free."""
        ...


class Pacer:
    """Turns model outputs into timed deliveries; time is passed in, so it is testable.

    Three clocks (seconds on the caller's clock): ``rx_free`` when the host-to-hub line is
    next free, ``dev_free`` when the device core is next free, ``tx_free`` when the hub-to-host
    line is next free. An output produced after input byte k is ready at
    ``max(arrival_k, dev_free) + busy`` and is delivered ``latency`` after its last byte has
    left the line. Unpaced, every delay is zero except injected stall durations and alarms
    (protocol timeouts kept while listening: a byte arriving before an alarm is due reaches
    the device first, one arriving after it only once the alarm has fired).
    """

    def __init__(
        self,
        device: HubModel,
        *,
        baud: int,
        paced: bool = True,
        latency_s: float = 0.001,
        plan: FaultPlan | None = None,
        bits_per_byte: int = BITS_PER_BYTE,
    ) -> None:
        self.device = device
        self.paced = paced
        self.byte_s = bits_per_byte / baud if paced else 0.0
        self.latency_s = latency_s if paced else 0.0
        self.rx_free = self.dev_free = self.tx_free = -math.inf
        self._rx_faults, self._tx_faults = ByteFaults.pair(plan or FaultPlan())
        self._outbox: list[tuple[float, int, bytes | None]] = []  # (at, seq, data | vanish)
        self._seq = itertools.count()
        self._timer: tuple[float, int] | None = None  # (due, token) while the device is deaf
        self._alarm: tuple[float, int] | None = None  # (due, token) while it listens
        self._held: list[tuple[float, int]] = []  # (arrival, byte) that arrive after `due`
        self._clocked = device if isinstance(device, Clocked) else None

    def start(self, now: float) -> None:
        """Power the device on at ``now``."""
        self._schedule(self.device.power_on(), None, now)

    def receive(self, data: bytes, now: float) -> None:
        """Host bytes read from the port at ``now``."""
        start = max(self.rx_free, now)
        self.rx_free = start + len(data) * self.byte_s
        kept, positions = self._rx_faults.apply(data)
        byte_s = self.byte_s
        if positions is None:

            def arrive(i: int) -> float:
                return start + (i + 1) * byte_s
        else:
            where = positions

            def arrive(i: int) -> float:
                return start + (where[i] + 1) * byte_s

        self._feed(kept, arrive)

    def next_due(self) -> float | None:
        """When something is next due (delivery, timer or alarm); None if nothing is."""
        due = self._timer[0] if self._timer is not None else math.inf
        if self._alarm is not None:
            due = min(due, self._alarm[0])
        if self._outbox:
            due = min(due, self._outbox[0][0])
        return due if math.isfinite(due) else None

    def pop_due(self, now: float) -> list[bytes | None]:
        """Run everything due by ``now``: returns data to write, in order; None = vanish."""
        out: list[bytes | None] = []
        while True:
            timer_due = self._timer[0] if self._timer is not None else math.inf
            alarm_due = self._alarm[0] if self._alarm is not None else math.inf
            send_due = self._outbox[0][0] if self._outbox else math.inf
            if min(timer_due, alarm_due, send_due) > now:
                return out
            if timer_due <= min(alarm_due, send_due):
                self._fire_timer()
            elif alarm_due <= send_due:
                self._fire_alarm()
            else:
                out.append(heapq.heappop(self._outbox)[2])

    def next_wake(self) -> tuple[float, bool] | None:
        """When the hub next acts, and whether it must act then to the µs (``precise``);
        None: nothing is due.

        A delivery with more queued behind it answers bytes the host has already sent, all
        of whose answers it awaits: it may go late, never early. So it waits for the ones
        due within the adapter's latency after it, and they leave in one write, as a
        USB-serial adapter's latency timer sends what came within one period in one packet
        (a pipelined AN3155 block's first two ACKs, 0.5 ms apart: one wake-up of the hub and
        of the host instead of two). Precise is a batch with nothing queued behind it: the
        answer a host in lock-step waits for before it sends again. A timer or alarm is never
        precise: it runs on the model's clock (what it causes is timed from when it was due,
        not from when it ran), and no batch reaches past one.
        """
        outbox = self._outbox
        clock = min(
            self._timer[0] if self._timer is not None else math.inf,
            self._alarm[0] if self._alarm is not None else math.inf,
        )
        if not outbox:
            return (clock, False) if math.isfinite(clock) else None
        head = outbox[0][0]
        if clock < head:
            return clock, False
        if len(outbox) == 1:  # the hot case (a lone answer): no batch to look for
            return head, clock > head
        limit, last, count = head + self.latency_s, head, 0
        for at, _, _ in outbox:  # a heap of a few answers: one pass, no sort
            if at <= limit:
                count += 1
                last = max(last, at)
        if clock <= last:
            return head, False
        return last, count == len(outbox)

    def interrupt(self, outputs: Sequence[DeviceOutput], now: float) -> None:
        """A hardware event at ``now`` (reset pin, power) that stopped or restarted the
        core: its waits and the input held for them are dropped, so is output it had not
        started to send, and ``outputs`` (what the model did) are scheduled from ``now``."""
        self._timer = self._alarm = None
        self._held = []
        self._outbox = [item for item in self._outbox if item[0] <= now + self.latency_s]
        heapq.heapify(self._outbox)
        self.dev_free = now
        self.tx_free = min(self.tx_free, now)
        self._schedule(outputs, None, now)

    # --- internals ---------------------------------------------------------------------------

    def _feed(self, data: bytes, arrive: Callable[[int], float]) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._timer is not None:
                self._hold(data, arrive, i)
                return
            end = min(n, i + _FEED_CHUNK)
            if self._alarm is not None:
                # Bytes that arrive once the alarm is due go in after it has fired.
                end = i + bisect_left(range(i, end), self._alarm[0], key=arrive)
                if end == i:
                    self._fire_alarm()
                    continue
            arrive_i = functools.partial(_shifted, arrive, i)
            if self._clocked is not None:
                self._clocked.clock(arrive_i if self.paced else None, self.dev_free)
            stopped_at = self._schedule(self.device.feed(data[i:end]), arrive_i, 0.0)
            i = end if stopped_at is None else i + stopped_at + 1

    def _hold(self, data: bytes, arrive: Callable[[int], float], first: int) -> None:
        """Keep bytes that reach a deaf device only after it wakes; the rest are lost."""
        assert self._timer is not None
        due = self._timer[0]
        if not math.isfinite(due):
            return
        indices = range(first, len(data))
        start = bisect_left(indices, due, key=arrive)
        self._held += [(arrive(i), data[i]) for i in indices[start:]]

    def _fire_timer(self) -> None:
        assert self._timer is not None
        due, token = self._timer
        self._timer = None
        self._schedule(self.device.timer_expired(token), None, due)
        held, self._held = self._held, []
        if held:
            self._feed(bytes(b for _, b in held), lambda i: held[i][0])

    def _fire_alarm(self) -> None:
        assert self._alarm is not None
        due, token = self._alarm
        self._alarm = None
        self._schedule(self.device.timer_expired(token), None, due)

    def _schedule(
        self,
        outputs: Sequence[DeviceOutput],
        arrive: Callable[[int], float] | None,
        base: float,
    ) -> int | None:
        """Place outputs on the clocks; returns the input index a Timer stopped at."""
        for out in outputs:
            cause = arrive(out.after_index) if arrive is not None and out.after_index >= 0 else base
            ready = max(cause, self.dev_free)
            if isinstance(out, Emit):
                ready += out.busy_s if self.paced else 0.0
                self.dev_free = ready
                if out.data:
                    self._transmit(out.data, ready)
            elif isinstance(out, Timer):
                due = ready + (out.delay_s if self.paced or out.fault else 0.0)
                if math.isfinite(due):
                    self.dev_free = due
                self._timer = (due, out.token)
                self._alarm = None  # a deaf device keeps no listening timeout
                return out.after_index
            elif isinstance(out, Alarm):
                self._alarm = (ready + out.delay_s, out.token)
            else:  # Vanish: once what is already on the line has arrived
                at = max(ready, self.tx_free) + self.latency_s
                heapq.heappush(self._outbox, (at, next(self._seq), None))
        return None

    def _transmit(self, data: bytes, ready: float) -> None:
        start = max(ready, self.tx_free)
        self.tx_free = start + len(data) * self.byte_s
        kept, _ = self._tx_faults.apply(data)
        if kept:
            at = self.tx_free + self.latency_s
            heapq.heappush(self._outbox, (at, next(self._seq), kept))


def _shifted(arrive: Callable[[int], float], offset: int, index: int) -> float:
    """Arrival time of byte ``index`` of a slice that starts at ``offset``."""
    return arrive(offset + index)

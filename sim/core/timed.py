"""What a pure hub model outputs, and the timer bookkeeping every model shares.

No I/O, no clock, no threads: a model consumes host bytes and returns what the device does
(:class:`Emit`, :class:`Timer`, :class:`Alarm`, :class:`Vanish`), each tagged with the input
byte that caused it and the device time it costs; :mod:`sim.core.pacing` turns that into
wall-clock behaviour.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast


@dataclass(frozen=True, slots=True)
class Emit:
    """Bytes the device sends.

    ``after_index`` is the index, in the data given to the model's ``feed``, of the input
    byte that produced them (-1: produced by ``power_on`` or
    ``timer_expired``). ``busy_s`` is the device time spent after that byte
    has arrived *and* the device is free, before the bytes are ready to send. Empty ``data``
    only accounts busy time (e.g. a block programmed whose ACK is lost).
    """

    after_index: int
    busy_s: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Timer:
    """The device goes deaf and waits: input is ignored until the adapter calls
    ``timer_expired`` with ``token``, ``delay_s`` after the device is free.

    ``fault`` marks injected durations (a stall), which an unpaced adapter still honours;
    other delays are device timing figures and vanish in unpaced mode. ``delay_s`` may be
    infinite (stall forever). A Timer is always the last output of a call.
    """

    after_index: int
    delay_s: float
    token: int
    fault: bool = False


@dataclass(frozen=True, slots=True)
class Vanish:
    """The port disappears (cable pulled) once earlier output has left; always last."""

    after_index: int


@dataclass(frozen=True, slots=True)
class Alarm:
    """A timeout the device keeps while it goes on listening.

    Unlike a :class:`Timer` the device is not deaf: input keeps flowing, and
    whatever it does with that input may replace the alarm. The adapter calls
    ``timer_expired`` with ``token`` once ``delay_s`` has passed after the
    device was free, unless input reached the device first; stale tokens are ignored.
    Protocol timeouts, so they keep their length in unpaced mode.
    """

    after_index: int
    delay_s: float
    token: int


Output = Emit | Timer | Vanish
#: Every output a pure model may give (the pacer handles all of them).
DeviceOutput = Emit | Timer | Alarm | Vanish

OutputT = TypeVar("OutputT")


class TimedModel(Generic[OutputT]):
    """Timer bookkeeping every pure hub model shares.

    A model collects its outputs in ``_out`` while it handles input or a timer; a deaf wait
    is one pending ``(timer, action)`` pair that :meth:`timer_expired` runs when the
    adapter says it is due (stale tokens are ignored).
    """

    def __init__(self) -> None:
        self._pending: tuple[Any, Callable[[], None]] | None = None
        self._token = 0
        self._out: list[OutputT] = []
        self._index = -1  # the input byte being handled (-1: a timer or power-on)

    @property
    def pending_timer(self) -> Timer | None:
        """The deaf wait the device is in, if any."""
        pending = self._pending[0] if self._pending else None
        return pending if isinstance(pending, Timer) else None

    def timer_expired(self, token: int) -> list[OutputT]:
        """The adapter's call when a timer is due; stale tokens are ignored."""
        if self._pending is None or self._pending[0].token != token:
            return []
        _, action = self._pending
        self._pending = None
        return self._entry(action)

    def settle(self) -> list[OutputT]:
        """Let every pending finite deaf wait expire at once (for tests that ignore time)."""
        out: list[OutputT] = []
        while (timer := self.pending_timer) is not None and math.isfinite(timer.delay_s):
            out += self.timer_expired(timer.token)
        return out

    def _entry(self, action: Callable[[], None]) -> list[OutputT]:
        self._out = []
        self._index = -1
        action()
        out, self._out = self._out, []
        return out

    def _wait(self, delay_s: float, then: Callable[[], None], *, fault: bool = False) -> None:
        """Go deaf until ``then`` runs, ``delay_s`` after the device is free."""
        self._token += 1
        timer = Timer(self._index, delay_s, self._token, fault)
        self._pending = (timer, then)
        # Every model's output type includes Timer; the TypeVar cannot say so.
        self._out.append(cast(OutputT, timer))

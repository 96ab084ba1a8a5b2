"""How early a simulated hub stops sleeping before a delivery, learnt from its own sleeps."""

from __future__ import annotations


class WakeMargin:
    """How long before a delivery is due the hub stops sleeping and polls the port instead.

    A sleep ends late: by tens of µs on a quiet machine, by a few hundred on a busy or
    virtual one. Polling the rest of the way costs a µs of CPU for every µs of margin, for
    every delivery, so a fixed margin large enough for a busy machine made polling most of
    a hub's CPU. The margin follows how late this process's sleeps actually end, the way TCP
    follows round-trip times (Jacobson): a smoothed mean and mean deviation of recent
    overshoots, margin = mean + 2 deviations, kept within ``[floor_s, ceiling_s]``. It
    starts at the ceiling and comes down as quiet wake-ups are seen.

    A delivery still never leaves early (the poll waits for its time); when a sleep
    overshoots the margin it leaves that much late, as every delivery did before polling.
    """

    GAIN = 1 / 8
    DEVIATION_GAIN = 1 / 4

    def __init__(self, ceiling_s: float, floor_s: float = 20e-6) -> None:
        if not 0 <= floor_s <= ceiling_s:
            raise ValueError("the margin's floor must lie between 0 and its ceiling")
        self.ceiling_s = ceiling_s
        self.floor_s = floor_s
        self.mean_s = ceiling_s / 2
        self.deviation_s = ceiling_s / 4
        self.seconds = ceiling_s

    def observe(self, late_s: float) -> None:
        """A sleep ended ``late_s`` after it was asked to (a preemption counts at most 4
        ceilings, so one stall does not hold the margin up for long)."""
        late = min(max(late_s, 0.0), 4 * self.ceiling_s)
        error = late - self.mean_s
        self.mean_s += self.GAIN * error
        self.deviation_s += self.DEVIATION_GAIN * (abs(error) - self.deviation_s)
        self.seconds = min(self.ceiling_s, max(self.floor_s, self.mean_s + 2 * self.deviation_s))

"""Run one job per slot in parallel. The only module in the project that starts threads.

Slots share no mutable state: each job gets its own port, driver and outcome object, and an
exception in one slot is caught in that slot. Progress from every slot goes through one
callback, which must be thread-safe (the CLI's renderer is).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class SlotRun(Generic[T]):
    """The outcome of one slot's job: its value, or the unexpected exception it raised."""

    slot: int
    value: T | None = None
    error: BaseException | None = None


def run_slots(jobs: Sequence[tuple[int, Callable[[], T]]]) -> list[SlotRun[T]]:
    """Run ``(slot, job)`` pairs, one thread each, and return their outcomes in order.

    An exception escaping a job is recorded for that slot only; the others run on.
    """
    runs = [SlotRun[T](slot) for slot, _ in jobs]

    def work(run: SlotRun[T], job: Callable[[], T]) -> None:
        try:
            run.value = job()
        except BaseException as exc:  # one slot's crash must never take the rig down
            run.error = exc

    threads = [
        threading.Thread(target=work, args=(run, job), name=f"slot-{run.slot}", daemon=True)
        for run, (_, job) in zip(runs, jobs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs

"""The serial adapter's latency as a job sees it: recorded, and warned about when high.

The port asks for low-latency mode when it opens (``drivers.transport.latency``); here the
job takes what the port ended up with into its outcome (``adapter_latency_ms``, a column
of the job's record) and, when the adapter still runs at a high latency, says so in a note
that the live board and the TUI show while the job runs: a 16 ms FTDI timer costs a
lock-step job a turnaround per block (docs/hardware.md, "Adapter latency").
"""

from __future__ import annotations

from drivers.transport.latency import HIGH_LATENCY_MS, AdapterLatency
from drivers.types import Phase, ProgressFn
from station.outcome import FlashOutcome

#: How a high-latency note starts, so the live board and the TUI can mark the slot.
NOTE_PREFIX = "high adapter latency"


def latency_note(adapter: AdapterLatency) -> str:
    """The warning for a slot whose adapter runs above :data:`HIGH_LATENCY_MS`."""
    return (
        f"{NOTE_PREFIX}: {adapter.ms:g} ms ({adapter.detail}); every turnaround waits for "
        "it: set the adapter's latency timer to 1 ms (docs/hardware.md, Adapter latency)"
    )


def is_latency_note(note: str) -> bool:
    """Whether a note is the high-latency warning."""
    return note.startswith(NOTE_PREFIX)


def latency_of(note: str) -> str:
    """The latency a high-latency note names (``"16 ms"``), for a short mark."""
    return note[len(NOTE_PREFIX) + 2 :].split(" (", 1)[0]


def take_adapter_latency(session: object, out: FlashOutcome, progress: ProgressFn) -> None:
    """Record the session's port adapter latency in ``out``; warn when it is high."""
    link = getattr(session, "link", None)
    adapter = getattr(link, "adapter", None)
    if not isinstance(adapter, AdapterLatency):
        return  # not a serial port (USB DFU), or not open
    out.adapter_latency_ms = adapter.ms
    if adapter.high:
        note = latency_note(adapter)
        out.notes.append(note)
        progress(Phase.CONNECT, 0, 0, note)


__all__ = [
    "HIGH_LATENCY_MS",
    "NOTE_PREFIX",
    "is_latency_note",
    "latency_note",
    "latency_of",
    "take_adapter_latency",
]

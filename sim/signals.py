"""Stopping a simulator program cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class SignalStop:
    """Sets :attr:`event` on SIGINT or SIGTERM until :meth:`restore` puts the previous
    handlers back (a simulator then stops its hubs and removes what it made)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous = {
            s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
        }

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def restore(self) -> None:
        """Put the handlers that were there before back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

"""The last bytes a session exchanged with its hub, kept to explain a failure.

:class:`TracedLink` is the serial link with a small ring of the most recent exchanges
(each a run of bytes in one direction, cut to :data:`KEEP_BYTES`), so the operator's slot
detail can show what went over the wire just before a job failed. It adds one ``deque``
append per read or write: nothing measurable against the line's byte time.
:class:`TracedUsbLink` does the same for a DFU hub's class requests (request, wValue,
bytes, or the error it ended in).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from drivers.dfu_codes import DfuRequest
from drivers.errors import StationError
from drivers.transport.serial import SerialLink
from drivers.transport.usb import UsbLink

#: Exchanges kept (a run of bytes in one direction counts as one).
KEEP: Final = 16
#: Bytes kept of each run.
KEEP_BYTES: Final = 24


class TracedLink(SerialLink):
    """A :class:`SerialLink` that remembers its last exchanges (see :meth:`exchanges`)."""

    def __init__(self, url: str, *, baudrate: int = 115200, parity: str = "even") -> None:
        super().__init__(url, baudrate=baudrate, parity=parity)
        self._trace: deque[tuple[str, bytes, int]] = deque(maxlen=KEEP)

    def _note(self, direction: str, data: bytes) -> None:
        if not data:
            return
        if self._trace and self._trace[-1][0] == direction:
            _, kept, total = self._trace[-1]
            self._trace[-1] = (direction, (kept + data)[:KEEP_BYTES], total + len(data))
        else:
            self._trace.append((direction, data[:KEEP_BYTES], len(data)))

    def write(self, data: bytes) -> None:
        self._note("tx", data)
        super().write(data)

    def read(self, n: int, timeout_s: float) -> bytes:
        got = super().read(n, timeout_s)
        self._note("rx", got)
        return got

    def read_waiting(self, n: int) -> bytes:
        got = super().read_waiting(n)
        self._note("rx", got)
        return got

    def read_line(self, timeout_s: float) -> bytes | None:
        line = super().read_line(timeout_s)
        if line is not None:
            self._note("rx", line + b"\n")
        return line

    def exchanges(self) -> list[str]:
        """The last exchanges, oldest first: ``"-> 31 CE"``, ``"<- 1F"`` (hub's reply)."""
        out = []
        for direction, kept, total in self._trace:
            arrow = "->" if direction == "tx" else "<-"
            more = f" … ({total} bytes)" if total > len(kept) else ""
            out.append(f"{arrow} {kept.hex(' ').upper()}{more}")
        return out


def _request(code: int) -> str:
    try:
        return DfuRequest(code).name
    except ValueError:
        return f"request {code}"


class TracedUsbLink(UsbLink):
    """A :class:`UsbLink` that remembers its last DFU class requests (see :meth:`exchanges`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trace: deque[str] = deque(maxlen=KEEP)

    def control_out(self, bRequest: int, wValue: int, data: bytes, what: str) -> None:
        head = f"-> {_request(bRequest)} wValue={wValue} {len(data)} bytes"
        shown = f": {data[:8].hex(' ').upper()}{' …' if len(data) > 8 else ''}" if data else ""
        self._trace.append(head + shown)
        try:
            super().control_out(bRequest, wValue, data, what)
        except StationError as exc:
            self._trace.append(f"<- {type(exc).__name__}: {exc.message}")
            raise

    def control_in(self, bRequest: int, wValue: int, length: int, what: str) -> bytes:
        self._trace.append(f"-> {_request(bRequest)} wValue={wValue} asks {length} bytes")
        try:
            got = super().control_in(bRequest, wValue, length, what)
        except StationError as exc:
            self._trace.append(f"<- {type(exc).__name__}: {exc.message}")
            raise
        more = " …" if len(got) > KEEP_BYTES else ""
        self._trace.append(f"<- {got[:KEEP_BYTES].hex(' ').upper()}{more} ({len(got)} bytes)")
        return got

    def exchanges(self) -> list[str]:
        """The last requests and answers, oldest first."""
        return list(self._trace)

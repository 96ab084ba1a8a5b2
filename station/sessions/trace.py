"""The bytes a session exchanges with its hub: the last ones kept to explain a failure,
and all of them, live, for an operator who asks (``station flash --trace``).

:class:`TracedLink` is the serial link with a small ring of the most recent exchanges
(each a run of bytes in one direction, cut to :data:`KEEP_BYTES`), so the operator's slot
detail can show what went over the wire just before a job failed. It adds one ``deque``
append per read or write: nothing measurable against the line's byte time.
:class:`TracedUsbLink` does the same for a DFU hub's class requests (request, wValue,
bytes, or the error it ended in).

Inside :func:`trace_to` every link made in that context also hands each exchange, whole and
in hex, to a sink as lines (``+0.012 -> 7F``, ``+0.013 <- 79``): what stm32flash ``-V``
and esptool ``--trace`` print. A context variable carries the sink, so the one-hub flow
needs no parameter for it and the controller's slot threads (which never enter it) pay
one ``None`` check.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

from drivers.dfu_codes import DfuRequest
from drivers.errors import StationError
from drivers.transport.serial import SerialLink
from drivers.transport.usb import UsbLink

#: Exchanges kept (a run of bytes in one direction counts as one).
KEEP: Final = 16
#: Bytes kept of each run.
KEEP_BYTES: Final = 24
#: Bytes a live trace line shows; longer runs go on as more lines.
LINE_BYTES: Final = 32

#: Takes one line of a live trace.
TraceSink = Callable[[str], None]
_SINK: ContextVar[TraceSink | None] = ContextVar("station_trace_sink", default=None)


@contextmanager
def trace_to(sink: TraceSink) -> Iterator[None]:
    """Links made inside hand every exchange with their hub to ``sink``, as it happens."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


class _Live:
    """One link's live trace: lines stamped with seconds since the link was made."""

    def __init__(self, sink: TraceSink) -> None:
        self.sink = sink
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        self.sink(f"+{time.monotonic() - self.start:.3f} {text}")

    def data(self, arrow: str, data: bytes) -> None:
        stamp = f"+{time.monotonic() - self.start:.3f}"
        for at in range(0, len(data), LINE_BYTES):
            chunk = data[at : at + LINE_BYTES]
            self.sink(f"{stamp} {arrow} {chunk.hex(' ').upper()}{_as_text(chunk)}")


_TEXT = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def _as_text(chunk: bytes) -> str:
    """A console line (``VER?``, a banner, a bootloader menu) also shown as text; never a
    run of ACKs (``79 79 79`` is ``yyy``) or a short run of bytes that happen to print."""
    if len(chunk) < 4 or len(set(chunk)) < 3 or not _TEXT.issuperset(chunk):
        return ""
    text = chunk.decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
    return '  "' + text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t") + '"'


def _live() -> _Live | None:
    sink = _SINK.get()
    return None if sink is None else _Live(sink)


class TracedLink(SerialLink):
    """A :class:`SerialLink` that remembers its last exchanges (see :meth:`exchanges`)."""

    def __init__(self, url: str, *, baudrate: int = 115200, parity: str = "even") -> None:
        super().__init__(url, baudrate=baudrate, parity=parity)
        self._trace: deque[tuple[str, bytes, int]] = deque(maxlen=KEEP)
        self._live = _live()

    def open(self) -> None:
        super().open()
        if self._live is not None:
            framing = f"8{'N' if self.parity_dropped else self.parity[0].upper()}1"
            why = " (a pseudo-terminal carries no parity bit)" if self.parity_dropped else ""
            self._live.line(f"open {self.url} at {self.baudrate} baud, {framing}{why}")

    def _note(self, direction: str, data: bytes) -> None:
        if not data:
            return
        if self._live is not None:
            self._live.data("->" if direction == "tx" else "<-", data)
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
        self._live = _live()

    def _note(self, line: str, data: bytes = b"") -> None:
        self._trace.append(line)
        if self._live is not None:
            self._live.line(line)
            if len(data) > 8:  # the kept line shows 8 bytes; the live trace, all of them
                self._live.data("  ", data)

    def control_out(self, bRequest: int, wValue: int, data: bytes, what: str) -> None:
        head = f"-> {_request(bRequest)} wValue={wValue} {len(data)} bytes"
        shown = f": {data[:8].hex(' ').upper()}{' …' if len(data) > 8 else ''}" if data else ""
        self._note(head + shown, data)
        try:
            super().control_out(bRequest, wValue, data, what)
        except StationError as exc:
            self._note(f"<- {type(exc).__name__}: {exc.message}")
            raise

    def control_in(self, bRequest: int, wValue: int, length: int, what: str) -> bytes:
        self._note(f"-> {_request(bRequest)} wValue={wValue} asks {length} bytes")
        try:
            got = super().control_in(bRequest, wValue, length, what)
        except StationError as exc:
            self._note(f"<- {type(exc).__name__}: {exc.message}")
            raise
        more = " …" if len(got) > KEEP_BYTES else ""
        shown = f"<- {got[:KEEP_BYTES].hex(' ').upper()}{more} ({len(got)} bytes)"
        self._note(shown, got if more else b"")
        return got

    def exchanges(self) -> list[str]:
        """The last requests and answers, oldest first."""
        return list(self._trace)

"""pyserial's RFC 2217 client, fixed for ports exported by ser2net (``rfc2217://host:port``).

pyserial 3.5's :class:`serial.rfc2217.Serial` cannot carry a re-flash as it stands:

- it refuses any ``write_timeout`` (``NotImplementedError``), so the link sets none and
  relies on the socket's own 5 s send timeout;
- setting ``timeout`` re-sends baud, data size, parity and stop bits and waits for the
  exporter to acknowledge them (pyserial issue #376; 0.1-0.2 s on loopback), while every
  read here names its own timeout: :class:`Rfc2217Port` keeps the timeout on this side
  only, as pyserial pull request #382 proposes (it only ever governed the local read
  queue);
- ``reset_input_buffer`` sends a PURGE-DATA request and waits for its acknowledgement,
  polling every 50 ms; ser2net before 4.3.1 never acknowledged it ("timeout while
  waiting for option 'purge'": ser2net pull request #37), the same error came back with
  a later ser2net (issue #116) and labgrid users still meet it (issues #1396, #1779).
  Here it discards what has reached this side instead, the contract the drivers rely on
  (they drain the line before a command that needs it quiet);
- ``open`` drives DTR and RTS and waits for each acknowledgement; ser2net exporting a
  pseudo-terminal (which has no modem lines) never sends one, so the open failed after
  3 s. Here ``open`` leaves the lines as the exporter set them; an explicit DTR/RTS
  change still asks for, and waits for, its acknowledgement;
- when the exporter closes the connection, ``read`` returns short as if it had timed
  out. Here it raises :class:`serial.SerialException`, so a dropped connection is
  reported as such and never mistaken for a silent hub;
- a DTR/RTS change waits for its acknowledgement by polling every 50 ms, so each costs at
  least 50 ms (a reset sequence of four changes 0.2-0.4 s on loopback). Here the wait polls
  every millisecond, still bounded by the same network timeout and failing with the same
  message;
- ``close`` sleeps 0.3 s, and a connection that breaks during the option negotiation
  ends pyserial's reader thread with a traceback on stderr; neither happens here;
- a connection the exporter closes once the negotiation has begun (ser2net turning away a
  second client) fails ``open`` as "does not seem to support RFC2217"; here it says the
  exporter closed it, so the port is reported busy.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import serial
import serial.rfc2217

#: How often a DTR/RTS change looks for the exporter's acknowledgement.
_CONTROL_POLL_S = 0.001
#: How long a reader that saw the connection end waits for pyserial's reader thread to
#: finish, to tell the end of the connection from an ordinary timeout.
_READER_END_S = 1.0


def is_rfc2217(url: str) -> bool:
    """Whether ``url`` names a port served over RFC 2217 (ser2net's ``telnet(rfc2217)``)."""
    return url.lower().startswith("rfc2217://")


def exporter_host(url: str) -> str:
    """The host serving an ``rfc2217://host:port`` URL (the port's exporter)."""
    return urlsplit(url).hostname or url


class Rfc2217Port(serial.rfc2217.Serial):  # type: ignore[misc]
    """pyserial's RFC 2217 client with the changes the module docstring lists."""

    _opening = False
    _closed_by_exporter = False
    # pyserial's own state (untyped there), used by the overrides below.
    _socket: Any
    _thread: Any
    _read_buffer: Any
    _timeout: float | None
    _rfc2217_options: Any
    _ignore_set_control_answer: bool
    _network_timeout: float

    @property
    def timeout(self) -> float | None:
        """Read timeout, applied to the local receive queue only."""
        value: float | None = self._timeout
        return value

    @timeout.setter
    def timeout(self, timeout: float | None) -> None:
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise ValueError(f"Not a valid timeout: {timeout!r}")
        self._timeout = timeout

    def open(self) -> None:
        """Open as pyserial does; a connection the exporter closed during the option
        negotiation is said to be closed (ser2net turning away a second client of a busy
        port), not "does not support RFC2217", which pyserial says whenever the
        negotiation did not finish, however it ended."""
        self._opening = True
        self._closed_by_exporter = False
        try:
            super().open()
        except serial.SerialException as exc:
            if self._closed_by_exporter and "does not seem to support" in str(exc):
                raise serial.SerialException(
                    "the exporter closed the connection during the option negotiation"
                ) from exc
            raise
        finally:
            self._opening = False

    def _update_dtr_state(self) -> None:
        if not self._opening:
            super()._update_dtr_state()

    def _update_rts_state(self) -> None:
        if not self._opening:
            super()._update_rts_state()

    def rfc2217_set_control(self, value: bytes) -> None:
        """Send a SET-CONTROL request (DTR, RTS, break) and wait for its acknowledgement,
        looking every millisecond instead of every 50 ms.

        Raises:
            serial.SerialException: no acknowledgement within the network timeout
                ("timeout while waiting for option 'control'", as pyserial says it).
        """
        item: Any = self._rfc2217_options["control"]
        item.set(value)
        if self._ignore_set_control_answer:
            time.sleep(0.1)  # pyserial's wait for servers that never answer right
            return
        deadline = time.monotonic() + float(self._network_timeout)
        try:
            while not item.is_ready():
                if time.monotonic() >= deadline:
                    raise serial.SerialException("timeout while waiting for option 'control'")
                time.sleep(_CONTROL_POLL_S)
        except ValueError as exc:  # the exporter answered with another value
            raise serial.SerialException(str(exc)) from exc

    def reset_input_buffer(self) -> None:
        """Discard what has been received and not read, without a PURGE-DATA round trip."""
        if not self.is_open:
            raise serial.PortNotOpenError()
        queue = self._read_buffer
        while queue.qsize():
            if queue.get(False) is None:  # the connection ended: keep saying so
                queue.put(None)
                break

    def reset_output_buffer(self) -> None:
        """Nothing to do: writes go to the socket at once (no PURGE-DATA round trip)."""
        if not self.is_open:
            raise serial.PortNotOpenError()

    def read(self, size: int = 1) -> bytes:
        """Read as pyserial does, but raise when the exporter closed the connection."""
        started = time.monotonic()
        data: bytes = super().read(size)
        if len(data) < size and self.is_open:
            timeout = self._timeout
            early = timeout is None or time.monotonic() - started < timeout
            if early and self._reader_ended():
                raise serial.SerialException("the exporter closed the connection")
        return data

    def close(self) -> None:
        """Close as pyserial does, less its 0.3 s sleep "for quick reconnects" (a re-open
        that ser2net refuses because it has not yet seen the close is retried by
        :class:`drivers.transport.serial.SerialLink`)."""
        self.is_open = False
        sock: Any = self._socket
        self._socket = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        thread: Any = self._thread
        self._thread = None
        if thread is not None:
            thread.join(7)  # its socket is closed: it ends at once

    def _telnet_read_loop(self) -> None:
        # pyserial's reader thread answers option negotiations itself; a connection that
        # breaks meanwhile (ser2net closing a busy port's second client) would end the
        # thread with a traceback on stderr. End it as a closed connection instead.
        try:
            super()._telnet_read_loop()
        except (OSError, ValueError, AttributeError):  # AttributeError: socket closed
            self._read_buffer.put(None)
        if self._opening and self.is_open:  # the loop ends while open: the exporter closed
            self._closed_by_exporter = True

    def _reader_ended(self) -> bool:
        """Whether pyserial's reader thread stopped (it stops when the connection ends)."""
        thread: Any = self._thread
        if thread is None:
            return True
        thread.join(_READER_END_S)
        return not thread.is_alive()

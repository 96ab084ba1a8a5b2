"""A serial byte pipe over pyserial's URL handlers.

Ports are opened with ``serial.serial_for_url`` so device paths, ``/dev/pts/N``,
``socket://`` and ``loop://`` all work without branches. ``rfc2217://`` ports (ser2net)
are the one exception: pyserial's client for them is replaced by
:class:`drivers.transport.rfc2217.Rfc2217Port` (see there why). pyserial and OS errors are
translated here into :mod:`drivers.errors` types; a dropped connection to a network port's
exporter is :class:`~drivers.errors.RemotePortLost`, naming the exporter's host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import termios
import time
from types import TracebackType
from typing import Any

import serial

from drivers.errors import (
    ConfigError,
    LinkTimeout,
    NoModemLines,
    PortBusy,
    PortNotFound,
    PortVanished,
    RemotePortLost,
    TransportError,
)
from drivers.transport.latency import AdapterLatency, set_low_latency
from drivers.transport.rfc2217 import Rfc2217Port, exporter_host, is_rfc2217

_PARITY = {"none": serial.PARITY_NONE, "even": serial.PARITY_EVEN, "odd": serial.PARITY_ODD}
_BUSY_ERRNOS = {errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES}
_MISSING_ERRNOS = {errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.ECONNREFUSED}
#: The most bytes a read of a local port waits for before its select wakes (VMIN).
_MAX_VMIN = 64
#: How long a network port that its exporter says is busy is tried again before giving up.
_REOPEN_S = 1.0


def _is_pseudo_terminal(url: str) -> bool:
    """Whether ``url`` names a Unix98 pseudo-terminal slave (major numbers 136..143)."""
    try:
        return 136 <= os.major(os.stat(url).st_rdev) <= 143
    except (OSError, ValueError):
        return False


def bits_per_byte(parity: str, stopbits: int = 1) -> int:
    """Bit times one byte costs on the wire: start + 8 data + parity + stop."""
    return 1 + 8 + (0 if parity == "none" else 1) + stopbits


class SerialLink:
    """One open serial port; the only object in the drivers that touches pyserial.

    Args:
        url: a device path or pyserial URL.
        baudrate: line speed.
        parity: ``"none"``, ``"even"`` or ``"odd"`` (AN3155 uses even).
        exclusive: lock the port so a second program cannot open it at the same time.
    """

    def __init__(
        self, url: str, *, baudrate: int = 115200, parity: str = "even", exclusive: bool = True
    ) -> None:
        if parity not in _PARITY:
            raise ConfigError(f"parity must be one of {sorted(_PARITY)}, not {parity!r}")
        self.url = url
        self.baudrate = baudrate
        self.parity = parity
        self._exclusive = exclusive
        self._timeout_s: float | None = None
        self._ser: Any = None
        #: The descriptor of an open local port (a tty or pseudo-terminal), read and
        #: written directly: see :meth:`_read_fd`. None for network and URL ports.
        self._fd: int | None = None
        #: The port's VMIN as last set (pyserial opens with 0); None: the port refused it.
        self._vmin: int | None = 0
        #: The host exporting the port when it is reached over the network, else None.
        self.exporter = exporter_host(url) if is_rfc2217(url) else None
        #: True when the port is a pseudo-terminal that could not carry the parity bit.
        self.parity_dropped = False
        #: What the port's USB-serial adapter ended up with (low-latency mode asked on
        #: every open of a local port; see drivers.transport.latency). None until open.
        self.adapter: AdapterLatency | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Open the port.

        Raises:
            PortNotFound, PortBusy, ConfigError, TransportError: with the port named.
        """
        try:
            if self.exporter is not None:
                ser = Rfc2217Port()
                ser.port = self.url
            else:
                ser = serial.serial_for_url(self.url, do_not_open=True)
            ser.baudrate = self.baudrate
            ser.parity = _PARITY[self.parity]
            if self.parity != "none" and _is_pseudo_terminal(self.url):
                # Linux pseudo-terminals (simulated hubs) carry no parity bit and reject
                # PARENB on later re-configurations, so 8N1 is the faithful setting there;
                # the protocol and its timing are unchanged.
                ser.parity = serial.PARITY_NONE
                self.parity_dropped = True
            ser.bytesize = serial.EIGHTBITS
            ser.stopbits = serial.STOPBITS_ONE
            ser.timeout = 1.0
            if self.exporter is None:
                # pyserial's RFC 2217 client refuses a write timeout; its socket's own
                # (5 s) bounds a write there.
                ser.write_timeout = 5.0
                if self._exclusive and hasattr(ser, "exclusive"):
                    ser.exclusive = True
        except ValueError as exc:
            raise ConfigError(f"cannot use port {self.url!r}: {exc}", port=self.url) from exc
        except serial.SerialException as exc:
            raise TransportError(f"cannot open port: {exc}", port=self.url) from exc
        deadline = time.monotonic() + _REOPEN_S
        while True:
            try:
                ser.open()
                break
            except (serial.SerialException, OSError) as exc:
                error = self._open_error(exc)
                # ser2net may not yet have seen this station's own last close of the port
                # (a job right after a look at the hub): it is busy for a moment only.
                if not isinstance(error, PortBusy) or self.exporter is None:
                    raise error from exc
                if time.monotonic() >= deadline:
                    raise error from exc
                time.sleep(0.1)
        self._ser = ser
        self._timeout_s = 1.0
        if self.exporter is None:
            self.adapter = set_low_latency(ser, self.url)
        else:
            self.adapter = AdapterLatency(
                None, None, f"network port: the adapter is at {self.exporter}"
            )
        self._fd = ser.fd if type(ser) is serial.Serial and os.name == "posix" else None
        self._vmin = 0

    def _open_error(self, exc: Exception) -> TransportError:
        code = getattr(exc, "errno", None)
        text = str(exc)
        if self.exporter is not None:
            return self._remote_open_error(text)
        if code in _BUSY_ERRNOS or "exclusively lock" in text:
            return PortBusy("port is in use by another program", port=self.url)
        if code in _MISSING_ERRNOS or "No such file" in text or "refused" in text:
            return PortNotFound("port does not exist or cannot be reached", port=self.url)
        return TransportError(f"cannot open port: {text}", port=self.url)

    def _remote_open_error(self, text: str) -> TransportError:
        if "refused" in text or "Name or service" in text or "timed out" in text:
            return PortNotFound(
                f"no port exporter answers at {self.exporter}: {text}",
                port=self.url,
                hint=f"is ser2net running on {self.exporter} with a connection on this TCP "
                "port (docs/ser2net.md)?",
            )
        if "does not seem to support RFC2217" in text:
            return TransportError(
                f"the exporter at {self.exporter} does not speak RFC 2217 on this port",
                port=self.url,
                hint="give the ser2net connection the accepter telnet(rfc2217),tcp,... "
                "(docs/ser2net.md)",
            )
        # ser2net serves one client per port: a second one is told "Port already in use"
        # and the connection closed, which pyserial meets as a broken pipe mid-negotiation.
        return PortBusy(
            f"the exporter at {self.exporter} closed the connection while it was being set "
            f"up ({text})",
            port=self.url,
            hint="another client has this port (ser2net serves one at a time): close it, "
            "or stop the station using it (docs/ser2net.md)",
        )

    def _lost(self, what: str, exc: Exception) -> PortVanished:
        """The error for a port that stopped working under a read, write or flush."""
        if self.exporter is not None:
            return RemotePortLost(
                f"remote port lost: the connection to the port exporter {self.exporter} "
                f"dropped (in a {what})",
                host=self.exporter,
                port=self.url,
            )
        return PortVanished(f"{what} failed: {exc}", port=self.url)

    def close(self) -> None:
        """Close the port; safe to call twice and after the port vanished."""
        ser, self._ser = self._ser, None
        self._fd = None
        if ser is not None:
            # A vanished port cannot be closed cleanly; nothing is lost by ignoring that.
            with contextlib.suppress(OSError, serial.SerialException):
                ser.close()

    def __enter__(self) -> SerialLink:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """Whether the port is open."""
        return self._ser is not None

    def byte_time_s(self) -> float:
        """Seconds one byte takes on this link."""
        return bits_per_byte(self.parity) / self.baudrate

    # -- I/O ---------------------------------------------------------------------------

    def _port(self) -> Any:
        if self._ser is None:
            raise TransportError("port is not open", port=self.url)
        return self._ser

    def _set_timeout(self, timeout_s: float) -> None:
        # Setting the timeout re-applies termios on POSIX, so only do it when it changes.
        if timeout_s != self._timeout_s:
            self._port().timeout = timeout_s
            self._timeout_s = timeout_s

    def write(self, data: bytes) -> None:
        """Send bytes (returns once the OS has taken them)."""
        fd = self._fd
        if fd is not None:  # the OS takes a block at once; pyserial's loop only if not
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise self._lost("write", exc) from exc
            if sent == len(data):
                return
            data = data[sent:]
        try:
            self._port().write(data)
        except serial.SerialTimeoutException as exc:
            raise LinkTimeout("the port did not take our bytes", port=self.url) from exc
        except (serial.SerialException, OSError, termios.error) as exc:
            raise self._lost("write", exc) from exc

    def read(self, n: int, timeout_s: float) -> bytes:
        """Read up to ``n`` bytes, returning early only when ``timeout_s`` expires."""
        fd = self._fd
        if fd is not None:
            return self._read_fd(fd, n, timeout_s)
        port = self._port()
        try:
            self._set_timeout(timeout_s)
            return bytes(port.read(n))
        except (serial.SerialException, OSError, termios.error) as exc:
            raise self._lost("read", exc) from exc

    def _read_fd(self, fd: int, n: int, timeout_s: float) -> bytes:
        """:meth:`read` of a local port through its descriptor (non-blocking, as pyserial
        opens it), woken once when the ``n``-th byte has come (see :meth:`_wake_at`)
        rather than at each byte that arrives: a slot writing a hub waits for every block's
        three ACKs, which come at three times."""
        got = b""
        deadline = time.monotonic() + timeout_s
        left = timeout_s
        while True:
            want = n - len(got)
            try:
                if self._vmin is not None and min(want, _MAX_VMIN) != self._vmin:
                    self._wake_at(fd, want)
                ready = select.select((fd,), (), (), left)[0]
                # Out of time, too: fewer bytes than wake the select may have come.
                chunk: bytes | None = os.read(fd, want)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except (OSError, termios.error) as exc:
                raise self._lost("read", exc) from exc
            if not ready:
                return got + (chunk or b"")
            if chunk is not None:
                if not chunk:  # readable yet empty: the device is gone (as pyserial says)
                    raise self._lost(
                        "read", OSError("device reports readiness to read but returned no data")
                    )
                got += chunk
                if len(got) >= n:
                    return got
            left = deadline - time.monotonic()
            if left <= 0:
                return got

    def _wake_at(self, fd: int, n: int) -> None:
        """Have a select on the port report it readable once ``n`` bytes wait, not one:
        the line discipline's VMIN, which Linux's tty layer honours in select when VTIME is
        0 (pyserial's setting). A read of the non-blocking descriptor still returns all that
        has come, so where an OS wakes sooner the read only loops. At most 64: above that,
        Linux hands a non-blocking read 64 bytes at a time."""
        vmin = max(1, min(n, _MAX_VMIN))
        try:
            attrs = termios.tcgetattr(fd)
            attrs[6][termios.VMIN] = vmin
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except termios.error:
            self._vmin = None  # a port that refuses it is read a byte's wake-up at a time
            return
        self._vmin = vmin

    def read_waiting(self, n: int) -> bytes:
        """Up to ``n`` bytes that have already arrived, without waiting for more.

        For text read in runs (a menu, a banner): after a blocking read of its first byte,
        this takes the rest of what came with it, so the reader can look for the end of the
        text at once instead of waiting out a quiet time after it.
        """
        fd = self._fd
        if fd is not None:
            try:
                return os.read(fd, n)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError as exc:
                raise self._lost("read", exc) from exc
        port = self._port()
        try:
            waiting = port.in_waiting
            return bytes(port.read(min(n, waiting))) if waiting else b""
        except (serial.SerialException, OSError, termios.error) as exc:
            raise self._lost("read", exc) from exc

    def read_exact(self, n: int, timeout_s: float, what: str = "reply") -> bytes:
        """Read exactly ``n`` bytes within ``timeout_s``.

        Raises:
            LinkTimeout: fewer bytes arrived; the message says how many.
        """
        data = self.read(n, timeout_s)
        if len(data) < n:
            raise LinkTimeout(
                f"timed out after {timeout_s:g} s waiting for {what}: got {len(data)} of {n} bytes",
                port=self.url,
            )
        return data

    def read_line(self, timeout_s: float) -> bytes | None:
        """Read one line ending in LF (CR stripped); None if no full line came in time."""
        fd = self._fd
        deadline = time.monotonic() + timeout_s
        line = bytearray()
        while fd is not None:  # a byte at a time, as pyserial's read_until: none beyond LF
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            line += self._read_fd(fd, 1, left)
            if line.endswith(b"\n"):
                return bytes(line).rstrip(b"\r\n")
        port = self._port()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self._set_timeout(left)
                chunk = port.read_until(b"\n")
            except (serial.SerialException, OSError, termios.error) as exc:
                raise self._lost("read", exc) from exc
            line += chunk
            if line.endswith(b"\n"):
                return bytes(line).rstrip(b"\r\n")

    def drain(self, quiet_s: float, limit_s: float = 2.0) -> bytes:
        """Read and discard input until the line has been quiet for ``quiet_s``."""
        got = bytearray()
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            chunk = self.read(4096, quiet_s)
            if not chunk:
                break
            got += chunk
        return bytes(got)

    def reset_input(self) -> None:
        """Throw away bytes received but not read."""
        try:
            self._port().reset_input_buffer()
        except (serial.SerialException, OSError, termios.error) as exc:
            raise self._lost("flush", exc) from exc

    def set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> None:
        """Drive the modem-control lines (bootloader entry fixtures).

        Raises:
            NoModemLines: the port has none (a pseudo-terminal or network port).
        """
        port = self._port()
        try:
            if dtr is not None:
                port.dtr = dtr
            if rts is not None:
                port.rts = rts
        except (serial.SerialException, OSError, termios.error) as exc:
            if getattr(exc, "errno", None) == errno.ENOTTY or "Inappropriate ioctl" in str(exc):
                raise NoModemLines("cannot set DTR/RTS", port=self.url) from exc
            if self.exporter is not None and "waiting for option 'control'" in str(exc):
                # ser2net acknowledges a DTR/RTS change only when the device has the lines.
                raise NoModemLines(
                    f"the exporter at {self.exporter} did not confirm DTR/RTS", port=self.url
                ) from exc
            raise self._lost("setting the modem lines", exc) from exc

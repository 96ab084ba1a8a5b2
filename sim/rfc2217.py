"""Simulated hubs served over RFC 2217, as ser2net serves a real adapter's port.

Each hub is an in-process ``sim://`` hub (:mod:`sim.urlhandler.protocol_sim`) behind a TCP
port, with pyserial's own server side of RFC 2217 (:class:`serial.rfc2217.PortManager`)
between: a client's DTR/RTS changes reach the hub's wired pins (:mod:`sim.pins`), so the
station, stm32loader or esptool can reset a simulated hub into its bootloader over the
network. No pseudo-terminal is involved (a pty refuses modem-line ioctls).

Like ser2net, an endpoint serves one client at a time (a second connection is closed at
once), opens the hub's port when a client connects and closes it when the client goes
(which clears DTR and RTS, as closing a real port does).

``station sim --rfc2217 BASEPORT`` serves slot N on TCP port BASEPORT + N - 1.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import serial
import serial.rfc2217

from firmware_images.descriptor import dotted_version, format_version
from sim import urlhandler
from sim.pins import PinFaults
from sim.pty import HubSpec
from sim.signals import SignalStop

_ACCEPT_POLL_S = 0.2
_READ_POLL_S = 0.05
#: How long a new client waits for the previous one's session to end before it is refused.
_TAKEOVER_S = 0.5


def sim_url(spec: HubSpec, *, lines: str = "", pin_faults: str = "", power: str = "") -> str:
    """The ``sim://`` URL of the hub ``spec`` describes (same hub, same identity), wired as
    ``lines`` says and powered from the relay board folder ``power`` (when given)."""
    query: dict[str, str] = {
        "slot": str(spec.slot),
        "seed": str(spec.seed),
        "baud": str(spec.baud),
        "hw": str(spec.hw_version),
        "start-in": spec.start_in,
        "latency-ms": repr(spec.latency_s * 1000.0),
        # No client can ask for low-latency mode across the network: the exporter's
        # adapter is taken as set up for it (ser2net's host with its udev rule).
        "adapter-latency-ms": repr(spec.latency_s * 1000.0),
        "firmware-size": str(spec.firmware_size),
        "product-id": str(spec.product_id),
    }
    if spec.firmware is not None:
        query["firmware"] = f"{spec.firmware:#010x}"
    if spec.faults:
        query["faults"] = spec.faults
    if not spec.paced:
        query["unpaced"] = "1"
    if lines:
        query["lines"] = lines
    if pin_faults:
        query["pin-faults"] = pin_faults
    if power:
        query["power"] = power
    return f"sim://{spec.protocol}?{urllib.parse.urlencode(query)}"


class _PortManager(serial.rfc2217.PortManager):  # type: ignore[misc]  # pyserial is untyped
    """pyserial's server side, quiet about a hub whose lines are not wired: a change is
    then not acknowledged (as ser2net does for a port without modem lines) and its modem
    status reads all clear."""

    def _telnet_process_subnegotiation(self, suboption: bytes) -> None:
        with contextlib.suppress(serial.SerialException):
            super()._telnet_process_subnegotiation(suboption)

    def check_modem_lines(self, force_notification: bool = False) -> None:
        with contextlib.suppress(serial.SerialException):
            super().check_modem_lines(force_notification)


class _Connection:
    """The client's socket, written by two threads (negotiation answers and hub data)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock, contextlib.suppress(OSError):
            self.sock.sendall(data)


class Rfc2217Endpoint:
    """One simulated hub on one TCP port.

    Args:
        url: the hub's ``sim://`` URL.
        port: TCP port to listen on (0: any free one; see :attr:`port`).
        host: address to listen on.
    """

    def __init__(self, url: str, port: int, host: str = "127.0.0.1") -> None:
        urlhandler.register()
        self.hub_url = url
        self.host = host
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(_ACCEPT_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._client: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(
            target=self._accept, name=f"rfc2217-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        """What a client opens: ``rfc2217://host:port``."""
        return f"rfc2217://{self.host}:{self.port}"

    def start(self) -> Rfc2217Endpoint:
        """Start accepting clients (in a thread of its own)."""
        self._accepter.start()
        return self

    def stop(self) -> None:
        """Close the listener and any client; the hub itself keeps living (sim://)."""
        self._stop.set()
        self._listener.close()
        if self._accepter.is_alive():
            self._accepter.join(2.0)
        for thread in self._threads:
            thread.join(2.0)

    def __enter__(self) -> Rfc2217Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            # One client at a time, as ser2net: another is turned away at once (its
            # client meets a broken pipe mid-negotiation, as with ser2net). One that comes
            # as the last one is leaving (its session takes up to a read poll to wind
            # down, where ser2net's takes none) is let in once that one has gone.
            if not self._busy.acquire(blocking=False) and not (
                self._leaving() and self._busy.acquire(timeout=_TAKEOVER_S)
            ):
                sock.close()
                continue
            thread = threading.Thread(
                target=self._serve, args=(sock,), name=f"rfc2217-{self.port}-client", daemon=True
            )
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _leaving(self) -> bool:
        """Whether the current client has closed its end (its session is winding down)."""
        client = self._client
        if client is None:
            return True
        try:
            readable, _, _ = select.select([client], [], [], 0)
            # Readable with nothing to read is the end of the stream (a peek takes none).
            return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):  # closed meanwhile
            return True

    def _serve(self, sock: socket.socket) -> None:
        self._client = sock
        try:
            try:
                port: Any = serial.serial_for_url(self.hub_url, timeout=_READ_POLL_S)
            except serial.SerialException:
                return  # the hub's port vanished: the client sees its connection close
            try:
                self._relay(sock, port)
            finally:
                with contextlib.suppress(serial.SerialException):
                    port.close()
        finally:
            self._client = None
            with contextlib.suppress(OSError):
                sock.close()
            self._busy.release()

    def _relay(self, sock: socket.socket, port: Any) -> None:
        # Each reply goes out at once, as a serial line would carry it (no Nagle delay).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(sock)
        manager = _PortManager(port, conn)
        done = threading.Event()

        def hub_to_client() -> None:
            while not done.is_set() and not self._stop.is_set():
                try:
                    data = port.read(1)
                    if data and port.in_waiting:
                        data += port.read(port.in_waiting)
                except serial.SerialException:
                    break  # vanished
                if data:
                    conn.write(b"".join(_escaped(manager, data)))
            done.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        reader = threading.Thread(target=hub_to_client, name=f"rfc2217-{self.port}-hub")
        reader.start()
        sock.settimeout(_ACCEPT_POLL_S)
        try:
            while not done.is_set() and not self._stop.is_set():
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                payload = b"".join(manager.filter(data))
                if payload:
                    try:
                        port.write(payload)
                    except serial.SerialException:
                        break
        finally:
            done.set()
            reader.join()


def _escaped(manager: Any, data: bytes) -> Iterable[bytes]:
    return manager.escape(data)  # type: ignore[no-any-return]


def pin_faults_for(spec: str, slot: int) -> str:
    """Slot ``slot``'s pin faults from ``[S:]FAULT,...`` (no ``S:``: every slot).

    Raises:
        ValueError: an unknown fault or a bad slot number.
    """
    faults = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        where, _, fault = item.rpartition(":")
        if where and not where.isdigit():
            raise ValueError(f"pin fault {item!r}: expected [SLOT:]FAULT")
        PinFaults.parse(fault)
        if not where or int(where) == slot:
            faults.append(fault)
    return ",".join(faults)


def run_rig(args: Any, specs: Sequence[HubSpec]) -> int:
    from sim.urlhandler.protocol_sim import parse_url

    """``station sim --rfc2217 BASEPORT``: serve each hub on BASEPORT + slot - 1 until
    SIGINT/SIGTERM; 0 on a clean stop, 2 on bad settings, 1 when a port cannot be bound."""
    if getattr(args, "links", None) or getattr(args, "commands", False):
        print(
            "station sim: error: --links and --commands are for hubs on pseudo-terminals, "
            "not with --rfc2217",
            file=sys.stderr,
        )
        return 2
    lines = args.lines or ""
    if args.rfc2217 + len(specs) - 1 > 65535:
        print(
            f"station sim: error: --rfc2217 {args.rfc2217}: slot {len(specs)} would be "
            "beyond TCP port 65535",
            file=sys.stderr,
        )
        return 2
    try:
        urls = [
            sim_url(
                spec,
                lines=lines,
                pin_faults=pin_faults_for(args.pin_faults, spec.slot),
                power=getattr(args, "power", None) or "",
            )
            for spec in specs
        ]
        for url in urls:
            parse_url(url)
    except ValueError as exc:
        print(f"station sim: error: {exc}", file=sys.stderr)
        return 2
    signals = SignalStop()
    endpoints: list[Rfc2217Endpoint] = []
    try:
        for spec, url in zip(specs, urls, strict=True):
            try:
                endpoint = Rfc2217Endpoint(url, args.rfc2217 + spec.slot - 1, args.host)
            except OSError as exc:
                print(
                    f"station sim: error: slot {spec.slot}: cannot listen on "
                    f"{args.host}:{args.rfc2217 + spec.slot - 1}: {exc.strerror}",
                    file=sys.stderr,
                )
                return 1
            endpoints.append(endpoint.start())
            info = {
                "slot": spec.slot,
                "port": endpoint.url,
                "profile": f"{spec.profile}-lines" if lines else spec.profile,
                "eui64": spec.eui64,
                "firmware": None if spec.firmware is None else format_version(spec.firmware),
                "lines": lines or None,
            }
            if args.json:
                print(json.dumps(info), flush=True)
            else:
                shown = "blank" if spec.firmware is None else dotted_version(spec.firmware)
                wired = f"  lines {lines}" if lines else ""
                print(
                    f"slot {spec.slot:>3}  {endpoint.url:<26} EUI-64 {spec.eui64}  "
                    f"firmware {shown:<10}{wired}",
                    flush=True,
                )
        if not args.json:
            print(
                f"{len(endpoints)} hub(s) served over RFC 2217; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
        while not signals.event.wait(0.5):
            pass
        return 0
    finally:
        for endpoint in endpoints:
            endpoint.stop()
        signals.restore()

"""Serve a simulated USB bus on a UNIX-domain socket.

The hubs and their time live in the server's process (a :class:`~sim.usb_backend.SimUsbService`
on the system clock); a station process reaches them with
``STATION_USB_BACKEND=sim:<socket>``, i.e. through
:class:`drivers.transport.usb_remote.RemoteUsbBackend`, so the real pyusb code runs on the
station's side. Each connection is served by its own thread and answered when the modelled
transfer completes, so hubs used by different station processes run side by side. The wire
format is in :mod:`drivers.transport.usb_remote`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import threading
from typing import Any

from drivers.transport.usb_remote import (
    LIBUSB_ERROR_INVALID_PARAM,
    b64,
    recv_message,
    send_message,
    unb64,
)
from sim.usb_backend import SimUsbError, SimUsbService

_OPS = frozenset(
    {
        "enumerate_devices",
        "get_device_descriptor",
        "get_configuration_descriptor",
        "get_interface_descriptor",
        "open_device",
        "close_device",
        "set_configuration",
        "get_configuration",
        "set_interface_altsetting",
        "claim_interface",
        "release_interface",
        "ctrl_transfer",
        "reset_device",
        "clear_halt",
    }
)


def dispatch(service: SimUsbService, op: str, args: list[Any]) -> Any:
    """Run one backend call; returns the JSON-ready result.

    Raises:
        SimUsbError: what libusb would have returned.
    """
    if op not in _OPS:
        raise SimUsbError(LIBUSB_ERROR_INVALID_PARAM, f"unknown operation {op!r}")
    if op == "ctrl_transfer":
        handle, bm, request, value, index, payload, length, timeout = args
        result = service.ctrl_transfer(
            handle, bm, request, value, index, unb64(payload), length, timeout
        )
        return b64(result) if isinstance(result, bytes) else result
    return getattr(service, op)(*args)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        service = self.server.service
        opened: set[str] = set()
        sock: socket.socket = self.request
        with self.server.lock:
            self.server.connections.add(sock)
        try:
            while True:
                try:
                    message = recv_message(sock)
                except (EOFError, OSError, ValueError):
                    return
                op, args = message.get("op", ""), message.get("args", [])
                try:
                    result = dispatch(service, op, args)
                    if op == "open_device":
                        opened.add(result)
                    elif op == "close_device" and args:
                        opened.discard(args[0])
                    reply: dict[str, Any] = {"ok": result}
                except SimUsbError as exc:
                    reply = {"err": exc.code, "msg": exc.detail}
                except (TypeError, ValueError, KeyError, StopIteration) as exc:
                    reply = {"err": LIBUSB_ERROR_INVALID_PARAM, "msg": f"{op}: {exc!r}"}
                try:
                    send_message(sock, reply)
                except OSError:
                    return
        finally:
            with self.server.lock:
                self.server.connections.discard(sock)
            for handle in opened:  # a client that went away releases what it held
                service.close_device(handle)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, service: SimUsbService) -> None:
        self.service = service
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        super().__init__(path, _Handler)


class UsbBusServer:
    """A running server; :meth:`close` stops it and removes the socket.

    Args:
        service: the bus to serve.
        path: the socket to create (must not exist).
    """

    def __init__(self, service: SimUsbService, path: str) -> None:
        self.path = path
        self.service = service
        old = os.umask(0o177)  # only this user may talk to the bus
        try:
            self._server = _Server(path, service)
        finally:
            os.umask(old)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    @property
    def setting(self) -> str:
        """The ``STATION_USB_BACKEND`` value that reaches this bus."""
        return f"sim:{self.path}"

    def close(self) -> None:
        """Stop serving and remove the socket."""
        self._server.shutdown()
        self._server.server_close()
        with self._server.lock:  # the bus is gone for every client, as if unplugged
            for sock in self._server.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def __enter__(self) -> UsbBusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The RFC 2217 client tells a busy exporter from one that does not speak RFC 2217."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from drivers.errors import PortBusy, TransportError
from drivers.transport.serial import SerialLink


def _exporter(behaviour: str) -> Iterator[int]:
    """A TCP listener that, for each client, reads its option negotiation and then either
    closes the connection (as ser2net does to a second client of a busy port) or stays
    silent (an exporter without RFC 2217, e.g. a raw TCP one)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(2.0)
            with contextlib.suppress(OSError):
                sock.recv(64)  # the client's first negotiation has arrived
            if behaviour == "close":
                sock.close()
            else:
                held.append(sock)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for sock in held:
            sock.close()


@pytest.fixture
def closing() -> Iterator[int]:
    yield from _exporter("close")


@pytest.fixture
def silent() -> Iterator[int]:
    yield from _exporter("silent")


def test_a_connection_closed_after_the_negotiation_started_is_a_busy_port(closing: int) -> None:
    """However late the exporter's close comes, it is a busy port, not a foreign protocol
    (CI under load met the close after the client's options had gone out)."""
    with pytest.raises(PortBusy, match="closed the connection"):
        SerialLink(f"rfc2217://127.0.0.1:{closing}").open()


def test_an_exporter_that_never_negotiates_does_not_speak_rfc2217(silent: int) -> None:
    with pytest.raises(TransportError, match="does not speak RFC 2217") as caught:
        SerialLink(f"rfc2217://127.0.0.1:{silent}").open()
    assert not isinstance(caught.value, PortBusy)

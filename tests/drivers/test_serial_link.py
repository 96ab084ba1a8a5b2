"""The serial link's reads of a local port: pyserial's semantics, one wake per read."""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import PortVanished
from drivers.transport.serial import SerialLink


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, SerialLink]]:
    """A pseudo-terminal: our end (the master) and a link open on its slave."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = SerialLink(os.ttyname(slave), parity="none")
    link.open()
    try:
        yield master, link
    finally:
        link.close()
        os.close(slave)
        os.close(master)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=6))
def test_a_read_returns_every_byte_that_came_in_order(sizes: list[int]) -> None:
    # Whatever the port's wake-up threshold was left at by the read before, a read gets
    # the bytes already there at once, and those that come later, up to n.
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with SerialLink(os.ttyname(slave), parity="none") as link:
            for i, n in enumerate(sizes):
                data = bytes((i + k) % 256 for k in range(n))
                os.write(master, data[: n // 2])
                threading.Timer(0.005, os.write, (master, data[n // 2 :])).start()
                assert link.read(n, 2.0) == data
    finally:
        os.close(slave)
        os.close(master)


def test_out_of_time_a_read_returns_what_came(pty_pair: tuple[int, SerialLink]) -> None:
    master, link = pty_pair
    os.write(master, b"\x79\x79")
    start = time.monotonic()
    assert link.read(3, 0.1) == b"\x79\x79"  # a lost ACK: two of three, after the timeout
    assert time.monotonic() - start >= 0.1
    os.write(master, b"x" * 100)
    assert link.read(4096, 0.05) == b"x" * 100  # a drain: fewer than any threshold
    assert link.read(1, 0.01) == b""


def test_lines_and_waiting_bytes_are_read_through_the_same_descriptor(
    pty_pair: tuple[int, SerialLink],
) -> None:
    master, link = pty_pair
    assert link.read(3, 0.01) == b""  # leaves the threshold at 3
    os.write(master, b"VER 1.2.3.4\r\nBL > \x00")
    assert link.read_line(1.0) == b"VER 1.2.3.4"
    waiting, deadline = b"", time.monotonic() + 2.0
    while waiting != b"BL > \x00" and time.monotonic() < deadline:  # the pty hands it over
        waiting += link.read_waiting(4096)
    assert waiting == b"BL > \x00"
    assert link.read_waiting(4096) == b""


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's tty layer honours VMIN in select")
def test_three_acks_that_come_at_three_times_wake_the_reader_once(
    pty_pair: tuple[int, SerialLink], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slot waits for each block's three ACKs; they come ~0.5 ms and ~25 ms apart. Each
    # wake-up of its thread costs tens of µs of CPU: 32 slots pay it 1000 times a hub.
    master, link = pty_pair
    selects = 0
    real = select.select

    def counting(*args: object) -> object:
        nonlocal selects
        selects += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(select, "select", counting)
    for at, ack in ((0.002, b"\x79"), (0.004, b"\x79"), (0.03, b"\x79")):
        threading.Timer(at, os.write, (master, ack)).start()
    assert link.read(3, 1.0) == b"\x79\x79\x79"
    assert selects == 1


def test_a_port_that_vanishes_under_a_read() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with SerialLink(os.ttyname(slave), parity="none") as link:
            os.write(master, b"\x79")
            threading.Timer(0.02, os.close, (master,)).start()
            with pytest.raises(PortVanished):
                link.read(3, 2.0)
    finally:
        os.close(slave)


def test_a_port_that_refuses_the_wake_up_threshold_is_still_read_whole(
    pty_pair: tuple[int, SerialLink], monkeypatch: pytest.MonkeyPatch
) -> None:
    master, link = pty_pair

    def refuse(*args: object) -> None:
        raise termios.error(22, "Invalid argument")

    monkeypatch.setattr(termios, "tcsetattr", refuse)
    for at, ack in ((0.002, b"\x79"), (0.004, b"\x79"), (0.02, b"\x79")):
        threading.Timer(at, os.write, (master, ack)).start()
    assert link.read(3, 1.0) == b"\x79\x79\x79"
    os.write(master, b"x" * 100)
    assert link.read(100, 1.0) == b"x" * 100

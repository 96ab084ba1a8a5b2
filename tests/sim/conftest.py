"""Fixtures for the sim tests: simulated hubs that are always stopped, ports always closed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import serial
from simkit import open_port

from sim.pty import HubSpec, SimHub


@pytest.fixture
def start_hub() -> Iterator[Callable[..., SimHub]]:
    """Start a hub from HubSpec keywords (slot 1 and a fixed EUI-64 by default)."""
    hubs: list[SimHub] = []

    def start(**fields: Any) -> SimHub:
        fields.setdefault("slot", 1)
        fields.setdefault("protocol", "an3155")
        fields.setdefault("eui64", "00-DB-12-34-56-78-90-A0")
        hub = SimHub.start(HubSpec(**fields))
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop()


@pytest.fixture
def open_serial() -> Iterator[Callable[..., serial.Serial]]:
    """Open a port through real pyserial (8E1 by default)."""
    ports: list[serial.Serial] = []

    def opener(path: str, parity: str = serial.PARITY_EVEN) -> serial.Serial:
        port = open_port(path, parity)
        ports.append(port)
        return port

    yield opener
    for port in ports:
        with contextlib.suppress(OSError, serial.SerialException):  # it may have vanished
            port.close()

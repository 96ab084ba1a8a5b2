"""Shared fixtures: simulated hubs on real pseudo-terminals, and demo images on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_images.loader import LoadedImage, load_image
from sim.pty import HubSpec, SimHub, derive_eui64
from station.demo import write_demo_image


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hardware", "tests against a real hub (pytest -m hardware ...)")
    group.addoption("--hub-port", help="port of a real hub, e.g. /dev/ttyUSB0")
    group.addoption("--hub-profile", default="demo-an3155", help="its hub profile")
    group.addoption("--hub-image", help="an approved, signed image for it")
    group.addoption("--hub-trust", help="trust store folder of PEM public keys")


OLD = 0x0101_0000
NEW = 0x0105_0000


@pytest.fixture(autouse=True)
def _station_keys(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test's stations sign with keys of their own (``$STATION_KEYS``, inherited by the
    ``station`` commands a test starts), never with a developer's station-data/keys."""
    monkeypatch.setenv("STATION_KEYS", str(tmp_path_factory.mktemp("keys")))


@pytest.fixture
def start_hub() -> Iterator[Callable[..., SimHub]]:
    """Start simulated hubs (unpaced unless asked); all are stopped after the test."""
    hubs: list[SimHub] = []

    def start(slot: int = 1, **kw: Any) -> SimHub:
        kw.setdefault("paced", False)
        kw.setdefault("protocol", "an3155")
        kw.setdefault("firmware", OLD)
        kw.setdefault("firmware_size", 16 * 1024)
        hub = SimHub.start(HubSpec(slot=slot, eui64=derive_eui64(3, slot), **kw))
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        hub.stop()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def new_image_path(image_dir: Path) -> Path:
    """An Intel HEX demo image of version NEW, 24 KiB (12 pages, 96 blocks)."""
    return write_demo_image(image_dir / "new.hex", NEW, size=24 * 1024)


@pytest.fixture(scope="session")
def new_image(new_image_path: Path) -> LoadedImage:
    return load_image(new_image_path)

"""``sim://`` hubs: a simulated hub inside the station's process, below pyserial.

The station's real drivers flash it through ``serial.serial_for_url``; it keeps its state
across closing and opening the port, behaves like a locked or vanished port where a real
one would, and is never faster than the wire it models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.console import AppConsole
from drivers.errors import NoModemLines, PortBusy, PortNotFound, PortVanished, TransportError
from drivers.transport.serial import SerialLink
from firmware_images.loader import LoadedImage, load_image
from sim.gecko import demo_gbl, menu_text
from sim.urlhandler import protocol_sim, register
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile
from tests.conftest import NEW, OLD

GECKO = load_profile("demo-gecko")
AN3155 = load_profile("demo-an3155")
BT = 10 / 115200  # 8N1


@pytest.fixture(autouse=True)
def fresh_hubs() -> Iterator[None]:
    register()
    protocol_sim.forget_hubs()
    yield
    protocol_sim.forget_hubs()


@pytest.fixture(scope="module")
def gbl_image(tmp_path_factory: pytest.TempPathFactory) -> LoadedImage:
    path = tmp_path_factory.mktemp("simurl") / "app.gbl"
    path.write_bytes(demo_gbl(NEW, size=16 * 1024))
    return load_image(path, default_address=GECKO.app_address)


def running_version(url: str, parity: str) -> int | None:
    with SerialLink(url, parity=parity) as link:
        return AppConsole(link).version(1.0)


@pytest.mark.parametrize("start_in", ["bootloader", "app"])
def test_gecko_hub_flashed_through_pyserial(gbl_image: LoadedImage, start_in: str) -> None:
    url = f"sim://gecko?slot=2&firmware=0x{OLD:08X}&firmware-size=16384&start-in={start_in}"
    out = flash_hub(url, GECKO, gbl_image, policy=Policy(allow_unsigned=True))
    assert out.result is Result.PASSED, out.message
    assert (out.version_before, out.version_after) == (f"0x{OLD:08X}", f"0x{NEW:08X}")
    assert out.eui64 == protocol_sim.parse_url(url).eui64
    # The same hub, reopened: its new application runs.
    assert running_version(url, "none") == NEW


def test_an3155_hub_flashed_through_pyserial(new_image: LoadedImage) -> None:
    url = f"sim://an3155?slot=3&firmware=0x{OLD:08X}&unpaced"
    out = flash_hub(url, AN3155, new_image, policy=Policy(allow_unsigned=True))
    assert out.result is Result.PASSED, out.message
    assert out.version_after == f"0x{NEW:08X}" and out.verify_method
    assert running_version(url, "even") == NEW


def test_a_nacking_hub_fails_typed_and_never_passes(new_image: LoadedImage) -> None:
    url = f"sim://an3155?slot=4&firmware=0x{OLD:08X}&unpaced&faults=nack=2x20"
    out = flash_hub(url, AN3155, new_image, policy=Policy(allow_unsigned=True))
    assert out.result is Result.FAILED
    assert out.phase == "write" and out.message


def test_second_open_is_refused_as_busy() -> None:
    url = "sim://gecko?firmware=1.1.0.0"
    with SerialLink(url, parity="none"), pytest.raises(PortBusy):
        SerialLink(url, parity="none").open()


def test_vanished_port_fails_then_cannot_be_opened(gbl_image: LoadedImage) -> None:
    url = f"sim://gecko?firmware=0x{OLD:08X}&unpaced&faults=vanish=3"
    out = flash_hub(url, GECKO, gbl_image, policy=Policy(allow_unsigned=True))
    assert out.result is Result.FAILED and out.error == PortVanished.__name__
    assert out.phase == "write"
    with pytest.raises(PortNotFound):
        SerialLink(url, parity="none").open()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sim://gecko?firmwre=1.1.0.0", "unknown option(s) firmwre"),
        ("sim://gecko?slot=x", "slot='x' is not a whole number"),
        ("sim://zmodem", "protocol must be one of"),
        ("sim://gecko?wait=spin", "wait='spin'"),
    ],
)
def test_malformed_url_names_the_problem(url: str, words: str) -> None:
    with pytest.raises(TransportError) as caught:
        SerialLink(url, parity="none").open()
    assert words in str(caught.value)


def test_no_modem_lines_like_a_pseudo_terminal() -> None:
    with SerialLink("sim://gecko", parity="none") as link, pytest.raises(NoModemLines):
        link.set_lines(dtr=True)


@pytest.mark.parametrize("wait", ["sleep", "poll"])
def test_never_faster_than_the_wire(wait: str) -> None:
    """A newline to the bootloader (1 byte) brings the menu back no sooner than both have
    crossed the line at 115200 8N1 and the adapter's latency has passed."""
    menu = menu_text()
    with serial.serial_for_url(f"sim://gecko?latency-ms=2&wait={wait}", timeout=2.0) as port:
        port.read(len(menu))  # the menu printed at power-on
        sent = time.monotonic()
        port.write(b"\n")
        got = port.read(len(menu))
        took = time.monotonic() - sent
    assert got == menu
    assert took >= (1 + len(menu)) * BT + 0.002


def test_hub_lives_on_while_the_port_is_closed() -> None:
    """Closing the port does not stop the hub: the menu it sends meanwhile is gone when the
    port is opened again (pyserial flushes a real port's input on open), and the hub, now
    idle at its menu, answers the next key."""
    url = "sim://gecko?unpaced"
    with serial.serial_for_url(url, timeout=1.0) as port:
        port.write(b"\n")  # the menu is sent back: nobody reads it before the port closes
    with serial.serial_for_url(url, timeout=1.0) as port:
        assert port.in_waiting == 0
        port.write(b"\n")
        assert port.read(len(menu_text())) == menu_text()


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=20))
def test_reads_of_any_sizes_return_the_stream_in_order(sizes: list[int]) -> None:
    """However the host cuts its reads, it gets the hub's bytes once each, in order."""
    protocol_sim.forget_hubs()
    expected = menu_text() * 3
    with serial.serial_for_url("sim://gecko?unpaced", timeout=0.5) as port:
        port.write(b"\n\n\n")
        got = b""
        for size in sizes:
            got += port.read(min(size, len(expected) - len(got)))
        got += port.read(len(expected) - len(got))
        assert port.in_waiting == 0
    assert got == expected


def test_station_flash_command_reaches_sim_urls(tmp_path: Path) -> None:
    from station.cli import main

    path = tmp_path / "app.gbl"
    path.write_bytes(demo_gbl(NEW, size=8 * 1024))
    url = f"sim://gecko?slot=5&firmware=0x{OLD:08X}&unpaced"
    code = main(["flash", "--port", url, "--profile", "demo-gecko", "--allow-unsigned", str(path)])
    assert code == 0
    assert running_version(url, "none") == NEW

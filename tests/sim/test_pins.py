"""Simulated hubs' reset and boot pins driven by DTR/RTS (sim.pins), on ``sim://`` ports
through real pyserial, and the pin model's own API (which slot power reuses)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.lines import Wiring
from firmware_images.build import demo_payload
from sim import urlhandler
from sim.an3155 import APP_START_S, FLASH_BASE, An3155Hub, Mode
from sim.gecko import GeckoHub, menu_text
from sim.gecko import Mode as GeckoMode
from sim.pins import HubPins, PinFaults
from sim.pty import Pacer
from sim.urlhandler.protocol_sim import forget_hubs, with_pins

WIRED = "lines=reset=rts,boot=dtr"
BANNER = b"CHUB APP 0x01010000 READY\r\n"


@pytest.fixture(autouse=True)
def _fresh_hubs() -> Iterator[None]:
    urlhandler.register()
    forget_hubs()
    yield
    forget_hubs()


def open_port(url: str, *, dtr: bool = False, rts: bool = False) -> Any:
    """A port whose open leaves DTR/RTS as given (pyserial applies them at open)."""
    port = serial.serial_for_url(url, do_not_open=True)
    port.timeout = 0.3
    port.dtr, port.rts = dtr, rts
    port.open()
    return port


def pulse(port: Any, *, boot: bool) -> None:
    """Reset (RTS) with the boot pin (DTR) at ``boot``, then release the boot pin."""
    port.dtr = boot
    port.rts = True
    time.sleep(0.01)
    port.rts = False
    time.sleep(0.03)  # the application starts in 20 ms; the bootloader at once
    port.dtr = False


def synced(port: Any) -> bool:
    port.reset_input_buffer()
    port.write(b"\x7f")
    return port.read(1) == b"\x79"


def test_release_with_boot_selects_the_bootloader_else_the_application() -> None:
    port = open_port(f"sim://an3155?firmware=1.1.0.0&start-in=app&{WIRED}")
    assert port.read(len(BANNER)) == BANNER  # powered with the lines clear: it runs
    pulse(port, boot=True)
    assert synced(port)
    pulse(port, boot=False)
    assert port.read(len(BANNER)) == BANNER
    assert not synced(port)  # the application ignores 0x7F


def test_reset_held_silences_the_hub() -> None:
    port = open_port(f"sim://an3155?firmware=1.1.0.0&start-in=app&{WIRED}")
    port.read(len(BANNER))
    port.rts = True  # held in reset
    port.write(b"VER?\r\n")
    assert port.read(64) == b""
    port.dtr = True  # the boot pin is only sampled when reset is released
    port.rts = False
    assert synced(port)


def test_the_boot_pin_is_sampled_only_at_the_release() -> None:
    port = open_port(f"sim://an3155?firmware=1.1.0.0&start-in=app&{WIRED}")
    port.read(len(BANNER))
    port.dtr = True  # boot active while the application runs: no effect
    port.write(b"VER?\r\n")
    assert port.read(len(b"VER 0x01010000\r\n")) == b"VER 0x01010000\r\n"


def test_stuck_boot_line_boots_the_application_every_time() -> None:
    port = open_port(f"sim://an3155?firmware=1.1.0.0&start-in=app&{WIRED}&pin-faults=stuck-boot")
    port.read(len(BANNER))
    for _ in range(2):
        pulse(port, boot=True)
        assert port.read(len(BANNER)) == BANNER
        assert not synced(port)


def test_stuck_boot_line_on_a_blank_hub_still_reaches_the_bootloader() -> None:
    """No valid application: the bootloader runs whatever the boot pin says."""
    port = open_port(f"sim://an3155?start-in=app&{WIRED}&pin-faults=stuck-boot")
    pulse(port, boot=True)
    assert synced(port)


def test_a_hub_that_needs_two_resets() -> None:
    port = open_port(f"sim://an3155?firmware=1.1.0.0&start-in=app&{WIRED}&pin-faults=two-resets")
    port.read(len(BANNER))
    pulse(port, boot=True)
    assert not synced(port)  # hung after the first reset
    port.write(b"VER?\r\n")
    assert port.read(64) == b""
    pulse(port, boot=True)
    assert synced(port)


def test_open_drives_the_lines_and_close_clears_them() -> None:
    """pyserial's open asserts DTR and RTS unless told otherwise (here: reset held with
    the boot pin active); closing clears both, as HUPCL does, so the hub starts its
    application while the port is closed."""
    url = f"sim://an3155?firmware=1.1.0.0&start-in=app&{WIRED}"
    port = open_port(url, dtr=True, rts=True)
    port.write(b"VER?\r\n")
    assert port.read(64) == b""  # held in reset
    port.close()
    time.sleep(0.05)
    port = open_port(url)
    port.write(b"VER?\r\n")
    assert port.read(len(b"VER 0x01010000\r\n")) == b"VER 0x01010000\r\n"


def test_unwired_hub_refuses_line_changes_like_a_pseudo_terminal() -> None:
    port = serial.serial_for_url("sim://an3155", do_not_open=True)
    port.open()  # the open itself does not fail (pyserial's own open would not either)
    with pytest.raises(serial.SerialException, match="Inappropriate ioctl"):
        port.rts = True


def test_gecko_activation_pin_held_through_reset_shows_the_menu() -> None:
    port = open_port(f"sim://gecko?firmware=1.1.0.0&start-in=app&{WIRED}")
    assert port.read(len(BANNER)) == BANNER
    pulse(port, boot=True)
    menu = menu_text()
    port.reset_input_buffer()
    port.write(b"\n")
    assert port.read(len(menu)) == menu
    pulse(port, boot=False)
    assert BANNER in port.read(len(BANNER) + len(menu))


@pytest.mark.parametrize("text", ["nrst=rts", "reset=rts,boot=rts", "reset=cts"])
def test_bad_wiring_in_a_url_is_refused(text: str) -> None:
    with pytest.raises(serial.SerialException, match="reset"):
        serial.serial_for_url(f"sim://an3155?lines={text}")


def test_bad_pin_fault_in_a_url_is_refused() -> None:
    with pytest.raises(serial.SerialException, match="unknown pin fault"):
        serial.serial_for_url(f"sim://an3155?{WIRED}&pin-faults=stuck-reset")


# -- the pin model's API on a pacer, without a port (what slot power builds on) -----------


def pins_on(device: An3155Hub | GeckoHub, faults: str = "") -> HubPins:
    pacer = Pacer(device, baud=115200, paced=False)
    pacer.start(0.0)
    return HubPins(pacer, Wiring.parse("reset=rts,boot=dtr"), PinFaults.parse(faults))


def test_power_off_holds_the_core_and_power_on_samples_the_boot_pin() -> None:
    hub = An3155Hub(boot_pin_strapped=False)
    pins = pins_on(hub)
    assert hub.mode is Mode.WAIT_SYNC  # blank flash
    pins.power(False, 1.0)
    assert (pins.powered, pins.in_reset, hub.mode) == (False, True, Mode.OFF)
    pins.set_lines(1.5, dtr=True)  # boot pin held while off
    assert pins.boot
    pins.power(True, 2.0)
    assert (pins.in_reset, hub.mode) == (False, Mode.WAIT_SYNC)
    pins.set_lines(2.1, rts=True)  # reset held: power cannot start it
    pins.power(False, 2.2)
    pins.power(True, 2.3)
    assert hub.mode is Mode.OFF


def test_reset_pulse_api_and_faults() -> None:
    hub = GeckoHub(start_in_bootloader=False)
    pins = pins_on(hub, "stuck-boot")
    pins.set_lines(0.5, dtr=True)
    assert not pins.boot  # stuck
    pins.reset(1.0)
    assert hub.mode in (GeckoMode.BOOTING, GeckoMode.MENU)  # blank flash: its bootloader
    assert PinFaults.parse("two-resets, stuck-boot").text == "stuck-boot,two-resets"


# -- invariants against a reference -------------------------------------------------------

lines_states = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(lines_states, st.booleans(), st.booleans())
def test_the_hub_follows_its_pins(
    changes: list[tuple[bool, bool]], has_app: bool, two_resets: bool
) -> None:
    """Whatever DTR/RTS do: while reset is held the core is off; after a release it runs
    the bootloader exactly when the boot pin selected it at that release (or no valid
    application is in flash), except the hung first release of a two-reset hub."""
    hub = An3155Hub(boot_pin_strapped=False)
    if has_app:
        hub.flash.program(FLASH_BASE, demo_payload(0x01010000, size=4096))
    pins = pins_on(hub, "two-resets" if two_resets else "")
    expected = Mode.APP if has_app else Mode.WAIT_SYNC  # powered with both lines clear
    releases = 0
    for t, (dtr, rts) in enumerate(changes, start=1):
        held_before = pins.in_reset
        pins.set_lines(float(t), dtr=dtr, rts=rts)
        hub.settle()  # let the application finish starting (unpaced: at once)
        if rts:  # reset is on RTS, held while set
            expected = Mode.OFF
        elif held_before:
            releases += 1
            if two_resets and releases == 1:
                expected = Mode.OFF  # hung
            else:
                expected = Mode.WAIT_SYNC if dtr or not has_app else Mode.APP
        assert hub.mode is expected
        assert pins.in_reset is rts


def test_never_faster_than_the_wire_after_a_release() -> None:
    """Released into its application, the hub's banner comes no sooner than the start
    time plus the banner's bytes on the line (8E1 at 115200) and the adapter latency."""
    port = open_port(f"sim://an3155?firmware=1.1.0.0&start-in=app&latency-ms=2&{WIRED}")
    port.read(len(BANNER))
    port.rts = True
    time.sleep(0.01)
    released = time.monotonic()
    port.rts = False
    assert port.read(len(BANNER)) == BANNER
    floor = APP_START_S + len(BANNER) * 11 / 115200 + 0.002
    assert time.monotonic() - released >= floor


def test_power_through_with_pins_on_an_unwired_hub() -> None:
    """Slot power acts on any sim:// hub (wired or not) through :func:`with_pins`: off, it
    answers nothing; on again, it starts cold (its application, here)."""
    url = "sim://an3155?firmware=1.1.0.0&start-in=app"
    port = open_port(url)
    assert port.read(len(BANNER)) == BANNER
    with_pins(url, lambda pins, now: pins.power(False, now))
    port.write(b"VER?\r\n")
    assert port.read(64) == b""
    with_pins(url, lambda pins, now: pins.power(True, now))
    assert port.read(len(BANNER)) == BANNER

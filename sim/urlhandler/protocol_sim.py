"""``sim://PROTOCOL?options``: a simulated serial hub inside the opening process.

The same hub model and :class:`sim.pty.Pacer` as a pseudo-terminal hub, served by a pyserial
port class instead of a pty and a second process, so pyserial and the station's drivers run
unchanged above it. It is a discrete-event simulation driven by the caller: ``write`` puts
the host's bytes on the modelled line from the moment of the call; ``read`` returns only
bytes whose modelled delivery time has come, sleeping until then. Nothing is ever delivered
before the wire, the flash and the adapter latency allow, exactly as on the pty.

What it removes is the pseudo-terminal's own cost (two processes woken for every exchange,
0.1-0.2 ms on a small virtual machine), which a real USB-serial port does not have: the
benchmarks use it to measure the station's own cost against the protocol's floor, and
quick tests use it to flash a hub without starting a process.

Options (those of ``station sim``, one hub): ``slot`` (1), ``seed`` (0), ``baud`` (115200),
``firmware`` (``0x01020304`` or ``1.2.3.4``; default blank), ``firmware-size``,
``start-in`` (``bootloader`` or ``app``), ``faults``, ``latency-ms`` (1: the adapter's
latency in low-latency mode), ``adapter-latency-ms`` (16: its latency until low-latency
mode is asked for through the port, as an FTDI adapter's default timer), ``unpaced``,
``hw`` (2), ``product-id``, ``no-checksum`` (an AN3155 bootloader without Get Checksum,
0xA1), ``decompress`` (a Gecko bootloader's decompressors:
``lz4,lzma`` by default, ``none`` for a bootloader built without them), ``lines`` (how
DTR/RTS are wired to the hub's reset and boot pins, ``reset=rts,boot=dtr`` as
:class:`drivers.lines.Wiring` reads it; without it the port refuses modem-line changes as a
pseudo-terminal does), ``pin-faults`` (``stuck-boot``, ``two-resets``: :mod:`sim.pins`),
``power`` (a :class:`~sim.power.PowerBoard` folder: the hub's power follows the board's
channel numbered as its slot, switched by a relay command in any process), and ``wait``:
``sleep`` (default) sleeps until 0.3 ms before a delivery is due and polls the rest;
``poll`` never sleeps, so the reading thread, and the station code it returns to, never
pays a wake-up (tens of µs on a small virtual machine, as Linux's ``idle=poll`` would
avoid) at the price of a busy CPU: for benchmarks of the station's own cost. For example
``sim://gecko?slot=3&firmware=1.1.0.0&start-in=app``.

Adapter latency: the port class has pyserial's ``set_low_latency_mode``; ``True`` switches
the modelled adapter to ``latency-ms`` for the hub's next deliveries, ``False`` back to
``adapter-latency-ms``, and ``latency_timer_ms`` reports the one in force, as sysfs does
for an FTDI port. The setting stays with the hub (as the driver's flag stays with a tty).
Pseudo-terminal hubs cannot see that ioctl (Linux refuses it on a pty): they always
model ``--latency-ms``, i.e. an adapter already in low-latency mode.

A hub lives as long as the process: closing the port and opening the same URL again
reaches the same hub, in the state it has reached meanwhile (its time runs on while the port
is closed). A second open while the port is open fails as a locked port does, and a hub
whose port vanished (``faults=vanish=N``) cannot be opened again.
"""

from __future__ import annotations

import errno
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from drivers.lines import Wiring
from sim.core.spec import parse_version
from sim.pins import HubPins, PinFaults
from sim.power import PowerBoard, PowerWatch
from sim.pty import SPIN_S, HubSpec, Pacer, derive_eui64

_IDLE_S = 0.05
#: How a read waits for a delivery: sleep (then poll its last 0.3 ms), or poll all along.
WAIT_MODES = ("sleep", "poll")
_INT_OPTIONS = {"slot": 1, "seed": 0, "baud": 115200, "hw": 2}
#: An FTDI adapter's default latency timer: what the hub's deliveries wait until
#: low-latency mode is asked for through the port.
ADAPTER_LATENCY_S = 0.016


def parse_url(url: str) -> HubSpec:
    """The :class:`HubSpec` a ``sim://`` URL describes.

    Raises:
        ValueError: not a ``sim://`` URL, an unknown option, or a value out of range.
    """
    return _parse(url).spec


@dataclass(frozen=True)
class _Parsed:
    spec: HubSpec
    wait: str
    #: The adapter's latency before low-latency mode (seconds).
    adapter_s: float
    wiring: Wiring | None
    pin_faults: PinFaults
    #: The relay board folder the hub's power comes from (None: always powered).
    board: str | None = None


def _parse(url: str) -> _Parsed:
    """The hub a ``sim://`` URL describes, how a read waits for it (``wait``), its
    adapter's latency before low-latency mode, and how its pins are wired."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "sim" or not parts.netloc:
        raise ValueError(f"{url!r}: expected sim://PROTOCOL?option=value&...")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    options = {key: values[-1] for key, values in query.items()}
    ints: dict[str, int] = {}
    for key, default in _INT_OPTIONS.items():
        text = options.pop(key, None)
        try:
            ints[key] = default if text is None else int(text, 0)
        except ValueError:
            raise ValueError(f"{url!r}: {key}={text!r} is not a whole number") from None
    kwargs: dict[str, Any] = {
        "protocol": parts.netloc,
        "slot": ints["slot"],
        "seed": ints["seed"],
        "baud": ints["baud"],
        "hw_version": ints["hw"],
        "eui64": derive_eui64(ints["seed"], ints["slot"]),
        "start_in": options.pop("start-in", "bootloader"),
        "faults": options.pop("faults", ""),
        "paced": options.pop("unpaced", None) in (None, "0", "false", "no"),
        "checksum": options.pop("no-checksum", "0") in ("0", "false", "no"),
    }
    if (firmware := options.pop("firmware", None)) is not None:
        kwargs["firmware"] = parse_version(firmware)
    if (size := options.pop("firmware-size", None)) is not None:
        try:
            kwargs["firmware_size"] = int(size, 0)
        except ValueError:
            raise ValueError(f"{url!r}: firmware-size={size!r} is not a whole number") from None
    if (latency := options.pop("latency-ms", None)) is not None:
        try:
            kwargs["latency_s"] = float(latency) / 1000.0
        except ValueError:
            raise ValueError(f"{url!r}: latency-ms={latency!r} is not a number") from None
    adapter_s = ADAPTER_LATENCY_S
    if (adapter := options.pop("adapter-latency-ms", None)) is not None:
        try:
            adapter_s = float(adapter) / 1000.0
        except ValueError:
            raise ValueError(f"{url!r}: adapter-latency-ms={adapter!r} is not a number") from None
        if not (adapter_s >= 0 and math.isfinite(adapter_s)):
            raise ValueError(f"{url!r}: adapter-latency-ms={adapter!r} is out of range")
    if (product := options.pop("product-id", None)) is not None:
        try:
            kwargs["product_id"] = int(product, 0)
        except ValueError:
            raise ValueError(f"{url!r}: product-id={product!r} is not a whole number") from None
    if (methods := options.pop("decompress", None)) is not None:
        kwargs["decompressors"] = tuple(m for m in methods.split(",") if m and m != "none")
    if (wait := options.pop("wait", "sleep")) not in WAIT_MODES:
        raise ValueError(f"{url!r}: wait={wait!r}: expected one of {', '.join(WAIT_MODES)}")
    wiring = None
    try:
        if (lines := options.pop("lines", None)) is not None:
            wiring = Wiring.parse(lines)
        pin_faults = PinFaults.parse(options.pop("pin-faults", ""))
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    board = options.pop("power", None)
    if options:
        raise ValueError(f"{url!r}: unknown option(s) {', '.join(sorted(options))}")
    return _Parsed(HubSpec(**kwargs), wait, adapter_s, wiring, pin_faults, board)


@dataclass
class _Hub:
    """One simulated hub and what it has delivered that the host has not read yet."""

    spec: HubSpec
    pacer: Pacer
    adapter_latency_s: float = ADAPTER_LATENCY_S
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: bytearray = field(default_factory=bytearray)
    poll: bool = False
    clock: float = -math.inf  # how far the model has been run
    is_open: bool = False
    vanished: bool = False
    #: Its power, reset and boot pins (:mod:`sim.pins`); DTR/RTS reach them when ``wired``.
    pins: HubPins | None = None
    wired: bool = False
    #: Set when another thread's write or line change may have made output due sooner.
    wake: threading.Event = field(default_factory=threading.Event)
    #: Its relay board channel (``power=``), looked at each time the hub is used.
    power: PowerWatch | None = None

    def follow_power(self, now: float) -> None:
        """Switch the hub's power as its board channel did since the last look (a whole
        cycle in between is still a cold start)."""
        if self.power is None or self.pins is None:
            return
        powered, lost = self.power.look()
        if lost and self.pins.powered:
            self.pins.power(False, now)
        if powered != self.pins.powered:
            self.pins.power(powered, now)

    def pump(self, now: float) -> None:
        """Run the model up to ``now``: deliveries due by then become readable."""
        self.clock = max(self.clock, now)
        if self.vanished:
            return
        self.follow_power(now)
        for data in self.pacer.pop_due(now):
            if data is None:
                self.vanished = True
                return
            self.received += data


_HUBS: dict[str, _Hub] = {}
_HUBS_LOCK = threading.Lock()


def forget_hubs() -> None:
    """Drop every hub this process has made (tests start from power-on with this)."""
    with _HUBS_LOCK:
        _HUBS.clear()


def _hub_for(url: str) -> _Hub:
    with _HUBS_LOCK:
        hub = _HUBS.get(url)
        if hub is None:
            parsed = _parse(url)
            spec = parsed.spec
            pacer = Pacer(
                spec.build_device(),
                baud=spec.baud,
                paced=spec.paced,
                latency_s=parsed.adapter_s,  # until low-latency mode is asked for
                plan=spec.plan(),
                bits_per_byte=spec.bits_per_byte,
            )
            pacer.start(time.monotonic())
            hub = _HUBS[url] = _Hub(spec, pacer, parsed.adapter_s, poll=parsed.wait == "poll")
            hub.wired = parsed.wiring is not None
            hub.pins = HubPins(pacer, parsed.wiring or Wiring(None), parsed.pin_faults)
            if parsed.board is not None:
                hub.power = PowerWatch(PowerBoard(parsed.board), spec.slot)
                if not hub.power.seen.on:  # the channel is off: the hub never started
                    hub.pins.power(False, time.monotonic())
        return hub


def with_pins(url: str, action: Callable[[HubPins, float], None]) -> None:
    """Run ``action(pins, now)`` on the hub of ``url`` (made if new), under its lock and
    with its model run up to ``now``: for what acts on a hub besides its port (slot power,
    a reset supervisor, tests). Its power and pins exist whether or not DTR/RTS are wired.

    Raises:
        ValueError: a malformed URL.
    """
    hub = _hub_for(url)
    with hub.lock:
        now = max(time.monotonic(), hub.clock)
        hub.pump(now)
        assert hub.pins is not None
        action(hub.pins, now)
        hub.wake.set()


def device(url: str) -> Any:
    """The hub model behind ``url`` (made and powered on if new): for tests that set up its
    flash by hand or look at it, below the line the station talks over."""
    return _hub_for(url).pacer.device


def _sleep_until(due: float) -> None:
    """Return at ``due`` or a few µs after it, never before (sleep, then poll)."""
    while (left := due - time.monotonic()) > 0:
        if left > SPIN_S:
            time.sleep(left - SPIN_S)
        else:
            os.sched_yield()  # not sleep(0): that still costs the timer slack (50 µs)


class Serial(SerialBase):  # type: ignore[misc]  # pyserial is untyped
    """A pyserial port whose other end is a simulated hub in this process."""

    is_open: bool
    _port: str | None
    _timeout: float | None
    _hub: _Hub

    def open(self) -> None:
        """Connect to the URL's hub (made, powered on, the first time it is opened).

        Raises:
            SerialException: a malformed URL, the port is already open (``EBUSY``), or
                its hub's port has vanished (``ENOENT``).
        """
        if self.is_open:
            raise SerialException("port is already open")
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        try:
            hub = _hub_for(self._port)
        except ValueError as exc:
            raise SerialException(str(exc)) from exc
        with hub.lock:
            hub.pump(time.monotonic())
            if hub.vanished:
                raise SerialException(errno.ENOENT, f"could not open port {self._port}: gone")
            if hub.is_open:
                raise SerialException(
                    errno.EBUSY, f"could not exclusively lock port {self._port}: in use"
                )
            hub.is_open = True
            hub.received.clear()  # as pyserial's open flushes a real port's input
            if hub.wired and hub.pins is not None:  # a real open drives DTR and RTS as set
                hub.pins.set_lines(hub.clock, dtr=self._dtr_state, rts=self._rts_state)
        self._hub = hub
        self.is_open = True

    def close(self) -> None:
        """Disconnect; the hub keeps running."""
        if self.is_open:
            self.is_open = False
            hub = self._hub
            with hub.lock:
                hub.is_open = False
                if hub.wired and hub.pins is not None and not hub.vanished:
                    # Closing a real port clears DTR and RTS (HUPCL).
                    hub.pump(time.monotonic())
                    hub.pins.set_lines(hub.clock, dtr=False, rts=False)

    def _reconfigure_port(self, *args: Any) -> None:
        """Line settings are the hub's (from its URL), as on a pseudo-terminal."""

    def _live(self) -> _Hub:
        if not self.is_open:
            raise PortNotOpenError()
        return self._hub

    def _gone(self) -> SerialException:
        return SerialException(
            "device reports readiness to read but returned no data "
            "(device disconnected or multiple access on port?)"
        )

    @property
    def in_waiting(self) -> int:
        """Bytes delivered and not read yet."""
        hub = self._live()
        with hub.lock:
            hub.pump(time.monotonic())
            return len(hub.received)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes: returns when all came or the port's timeout ran out."""
        hub = self._live()
        deadline = math.inf if self._timeout is None else time.monotonic() + self._timeout
        got = bytearray()
        while True:
            with hub.lock:
                hub.wake.clear()
                hub.pump(time.monotonic())
                take = hub.received[: size - len(got)]
                del hub.received[: len(take)]
                got += take
                if hub.vanished and not hub.received and len(got) < size:
                    if got:
                        return bytes(got)
                    raise self._gone()
                due = hub.pacer.next_due()
            now = time.monotonic()
            if len(got) >= size or now >= deadline:
                return bytes(got)
            # Nothing due and no timeout: only another thread's write can change that.
            left = min(deadline, math.inf if due is None else due, now + _IDLE_S) - now
            if hub.poll:
                # Never sleep: the CPU stays awake, as with Linux's idle=poll. Watching
                # only the clock delivers within a µs of the due time.
                wake = now + left
                while time.monotonic() < wake:
                    pass
                continue
            if left > SPIN_S:
                hub.wake.wait(left - SPIN_S)
            else:
                # Poll by going round this loop; sched_yield lets other threads (other
                # slots) run meanwhile, and costs no timer slack as sleep(0) does.
                os.sched_yield()

    def write(self, data: bytes) -> int:
        """Put ``data`` on the modelled line now (the call returns at once, as the OS's)."""
        written = time.monotonic()  # the bytes' time on the line starts with the call
        hub = self._live()
        data = bytes(data)
        with hub.lock:
            now = max(written, hub.clock)  # never before what another thread has run
            hub.pump(now)  # what was due before these bytes happens before them
            if hub.vanished:
                raise SerialException(errno.EIO, "write failed: device disconnected")
            if data:
                hub.pacer.receive(data, now)
                hub.wake.set()
        return len(data)

    def flush(self) -> None:
        """Wait until the host's bytes have left the modelled line (tcdrain)."""
        hub = self._live()
        _sleep_until(hub.pacer.rx_free)

    def reset_input_buffer(self) -> None:
        """Discard what was delivered and not read."""
        hub = self._live()
        with hub.lock:
            hub.pump(time.monotonic())
            hub.received.clear()

    def reset_output_buffer(self) -> None:
        """Nothing to discard: written bytes are already on the modelled line."""
        self._live()

    @property
    def out_waiting(self) -> int:
        """Bytes written and not yet on the line: always none here."""
        self._live()
        return 0

    def set_low_latency_mode(self, low_latency_settings: bool) -> None:
        """Switch the modelled adapter's latency (pyserial's Linux-only method)."""
        hub = self._live()
        with hub.lock:
            hub.pump(time.monotonic())
            if hub.spec.paced:
                wanted = hub.spec.latency_s if low_latency_settings else hub.adapter_latency_s
                hub.pacer.latency_s = wanted

    @property
    def latency_timer_ms(self) -> float:
        """The modelled adapter's latency in force, in ms (as an FTDI port's sysfs file)."""
        return self._live().pacer.latency_s * 1000.0

    def _no_modem_lines(self) -> None:
        if self.is_open and not self._hub.wired:
            raise SerialException(errno.ENOTTY, "Inappropriate ioctl for device")

    def _drive(self, **levels: bool) -> None:
        """The hub's wired pins see DTR/RTS change now (unwired: ENOTTY, as a pty)."""
        if not self.is_open:
            return
        hub = self._hub
        if not hub.wired or hub.pins is None:
            self._no_modem_lines()
            return
        with hub.lock:
            now = max(time.monotonic(), hub.clock)
            hub.pump(now)  # what was due before the change happens before it
            hub.pins.set_lines(now, **levels)
            hub.wake.set()

    def _update_dtr_state(self) -> None:
        self._drive(dtr=bool(self._dtr_state))

    def _update_rts_state(self) -> None:
        self._drive(rts=bool(self._rts_state))

    _update_break_state = _no_modem_lines

    def _modem_line(self) -> bool:
        self._no_modem_lines()
        return False

    cts = dsr = ri = cd = property(_modem_line)

"""Serve simulated serial hubs on POSIX pseudo-terminals, one process per hub.

Any program (the station, stm32flash, a terminal) opens the hub's slave path like a serial
port. The hub process owns the master side and runs the pure model (:mod:`sim.an3155` or
:mod:`sim.gecko`) behind a :class:`Pacer`, which makes the link as slow as the wire it
pretends to be: 11 bit times per byte for 8E1 (AN3155) or 10 for 8N1 (Gecko) each way,
flash and core times, USB-serial adapter latency.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import functools
import hashlib
import heapq
import itertools
import math
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import tty
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from time import monotonic
from types import FrameType, TracebackType
from typing import Any, Protocol

from firmware_images.build import demo_payload
from firmware_images.descriptor import DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, format_version
from sim import gecko
from sim.an3155 import (
    FLASH_BASE,
    FLASH_SIZE,
    PRODUCT_ID,
    An3155Hub,
    Emit,
    Timer,
    Vanish,
    parse_eui64,
)
from sim.faults import ByteFaults, FaultPlan, fault_plan
from sim.gecko import Alarm, GeckoHub
from sim.wakeup import WakeMargin

PROFILE = "demo-an3155"
#: The hub profile that describes each simulated protocol's hubs.
PROFILES = {"an3155": "demo-an3155", "gecko": "demo-gecko"}
BITS_PER_BYTE = 11  # 8E1: start, 8 data, parity, stop
#: Bit times per byte on each protocol's line: AN3155 is 8E1, the Gecko bootloader 8N1.
LINE_BITS = {"an3155": 11, "gecko": 10}
START_MODES = ("bootloader", "app")
_APP_MODES = ("app-starting", "app")  # Mode values of a hub in (or starting) its application
_FEED_CHUNK = 256  # bytes given to a model at once, so alarms are checked between chunks
_PR_SET_TIMERSLACK = 29  # prctl option (linux/prctl.h)
# A sleeping process wakes 0.1-0.2 ms late on a busy or virtual machine; before an answer
# the host waits for, the hub sleeps until at most this long before it is due and polls
# the rest, so it delivers on time (sim.wakeup.WakeMargin learns how much less will do).
SPIN_S = 300e-6
_READ_SIZE = 4096
_IDLE_WAKE_S = 1.0  # how often an idle hub checks that its parent is still alive
_CTX = multiprocessing.get_context("spawn")
#: CPU time one hub process needs to come up: a fresh interpreter importing the sim and
#: (spawn does) the parent's main module; under ``station`` that is the whole CLI, 0.6-0.8 s
#: measured on the 2-core machine (0.2 s for the sim alone).
START_CPU_S = 1.0
#: Time a start may take on an idle machine beyond its CPU time (disk, scheduling).
START_SLACK_S = 10.0


class SimStartError(RuntimeError):
    """A simulated hub did not come up."""


def derive_eui64(seed: int, slot: int) -> str:
    """A deterministic EUI-64 ``00-DB-12-xx-xx-xx-xx-xx`` for (seed, slot)."""
    tail = hashlib.sha256(f"chub-sim/{seed}/{slot}".encode()).digest()[:5]
    return "-".join(f"{b:02X}" for b in (0x00, 0xDB, 0x12, *tail))


@dataclass(frozen=True)
class HubSpec:
    """Everything one simulated hub needs; validated on construction.

    ``firmware`` None means blank flash; otherwise flash holds ``demo_payload(firmware)``
    (``firmware_size`` bytes) at 0x08000000. ``start_in="bootloader"`` straps the boot pin
    (every reset lands in the bootloader); ``"app"`` leaves it free, so the hub boots its
    application when that is valid.
    """

    slot: int
    eui64: str
    hw_version: int = 2
    firmware: int | None = None
    start_in: str = "bootloader"
    baud: int = 115200
    paced: bool = True
    latency_s: float = 0.001
    faults: str = ""
    seed: int = 0
    firmware_size: int = 64 * 1024
    #: 0x44 (Extended Erase, bootloader v3.x) or 0x43 (Erase, older bootloaders).
    erase_command: int = 0x44
    #: "an3155" (STM32 USART bootloader) or "gecko" (Silicon Labs Gecko, UART XMODEM).
    protocol: str = "an3155"
    #: What an AN3155 hub's Get ID answers: another value makes it another MCU (model).
    product_id: int = PRODUCT_ID
    #: The decompressors a Gecko hub's bootloader is built with (compressed GBL files).
    decompressors: tuple[str, ...] = gecko.DECOMPRESSORS
    #: Whether an AN3155 hub's bootloader offers Get Checksum (0xA1); older ones do not.
    checksum: bool = True

    def __post_init__(self) -> None:
        if self.slot < 1:
            raise ValueError(f"slot {self.slot}: slots are numbered from 1")
        object.__setattr__(self, "eui64", self.eui64.upper())
        parse_eui64(self.eui64)
        if not 0 <= self.hw_version <= 0xFFFF:
            raise ValueError(f"hardware version {self.hw_version} does not fit in 16 bits")
        if not 0 <= self.product_id <= 0xFFFF:
            raise ValueError(f"product ID {self.product_id:#x} does not fit in 16 bits")
        if self.firmware is not None and not 0 <= self.firmware <= 0xFFFF_FFFF:
            raise ValueError(f"firmware version {self.firmware} does not fit in 32 bits")
        if self.start_in not in START_MODES:
            raise ValueError(f"start_in must be one of {START_MODES}, not {self.start_in!r}")
        if self.baud <= 0:
            raise ValueError(f"baud rate must be positive, not {self.baud}")
        if not (self.latency_s >= 0 and math.isfinite(self.latency_s)):
            raise ValueError(
                f"latency must be a non-negative number of seconds, not {self.latency_s}"
            )
        if self.protocol not in PROFILES:
            raise ValueError(f"protocol must be one of {tuple(PROFILES)}, not {self.protocol!r}")
        smallest = DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE
        largest = FLASH_SIZE if self.protocol == "an3155" else gecko.APP_MAX_SIZE
        if self.firmware_size % 4 or not smallest <= self.firmware_size <= largest:
            raise ValueError(
                f"firmware size {self.firmware_size} must be a multiple of 4 "
                f"from {smallest} to {largest} bytes"
            )
        if set(self.decompressors) - set(gecko.DECOMPRESSORS):
            raise ValueError(f"decompressors must be among {gecko.DECOMPRESSORS}")
        self.plan()  # raises ValueError on a bad fault SPEC

    def plan(self) -> FaultPlan:
        """This hub's fault plan."""
        return fault_plan(self.faults, self.slot, self.seed)

    @property
    def profile(self) -> str:
        """The hub profile that describes this hub."""
        return PROFILES[self.protocol]

    @property
    def bits_per_byte(self) -> int:
        """Bit times one byte costs on this hub's line."""
        return LINE_BITS[self.protocol]

    def build_device(self) -> An3155Hub | GeckoHub:
        """The model of this hub, powered off, flash loaded as the spec says."""
        if self.protocol == "gecko":
            hub = GeckoHub(
                eui64=self.eui64,
                hw_version=self.hw_version,
                start_in_bootloader=self.start_in == "bootloader",
                faults=self.plan(),
                decompressors=self.decompressors,
            )
            if self.firmware is not None:
                # Factory programming, not through the bootloader.
                hub.flash.program(
                    gecko.APP_BASE, gecko.demo_app(self.firmware, size=self.firmware_size)
                )
            return hub
        device = An3155Hub(
            eui64=self.eui64,
            hw_version=self.hw_version,
            boot_pin_strapped=self.start_in == "bootloader",
            erase_command=self.erase_command,
            faults=self.plan(),
            product_id=self.product_id,
            checksum=self.checksum,
        )
        if self.firmware is not None:
            # Factory programming, not through the bootloader.
            device.flash.program(FLASH_BASE, demo_payload(self.firmware, size=self.firmware_size))
        return device


DeviceOutput = Emit | Timer | Alarm | Vanish


class HubModel(Protocol):
    """What the pacer needs of a pure hub model (:class:`An3155Hub`, :class:`GeckoHub`)."""

    @property
    def mode(self) -> enum.Enum:
        """What the device is doing (its value names the application as ``"app"``)."""
        ...

    def power_on(self) -> Sequence[DeviceOutput]:
        """Power-on reset."""
        ...

    def feed(self, data: bytes) -> Sequence[DeviceOutput]:
        """Host bytes, in order."""
        ...

    def timer_expired(self, token: int) -> Sequence[DeviceOutput]:
        """A :class:`Timer` or :class:`Alarm` is due."""
        ...


class Pacer:
    """Turns model outputs into timed deliveries; time is passed in, so it is testable.

    Three clocks (seconds on the caller's clock): ``rx_free`` when the host-to-hub line is
    next free, ``dev_free`` when the device core is next free, ``tx_free`` when the hub-to-host
    line is next free. An output produced after input byte k is ready at
    ``max(arrival_k, dev_free) + busy`` and is delivered ``latency`` after its last byte has
    left the line. Unpaced, every delay is zero except injected stall durations and alarms
    (protocol timeouts kept while listening: a byte arriving before an alarm is due reaches
    the device first, one arriving after it only once the alarm has fired).
    """

    def __init__(
        self,
        device: HubModel,
        *,
        baud: int,
        paced: bool = True,
        latency_s: float = 0.001,
        plan: FaultPlan | None = None,
        bits_per_byte: int = BITS_PER_BYTE,
    ) -> None:
        self.device = device
        self.paced = paced
        self.byte_s = bits_per_byte / baud if paced else 0.0
        self.latency_s = latency_s if paced else 0.0
        self.rx_free = self.dev_free = self.tx_free = -math.inf
        self._rx_faults, self._tx_faults = ByteFaults.pair(plan or FaultPlan())
        self._outbox: list[tuple[float, int, bytes | None]] = []  # (at, seq, data | vanish)
        self._seq = itertools.count()
        self._timer: tuple[float, int] | None = None  # (due, token) while the device is deaf
        self._alarm: tuple[float, int] | None = None  # (due, token) while it listens
        self._held: list[tuple[float, int]] = []  # (arrival, byte) that arrive after `due`

    def start(self, now: float) -> None:
        """Power the device on at ``now``."""
        self._schedule(self.device.power_on(), None, now)

    def receive(self, data: bytes, now: float) -> None:
        """Host bytes read from the port at ``now``."""
        start = max(self.rx_free, now)
        self.rx_free = start + len(data) * self.byte_s
        kept, positions = self._rx_faults.apply(data)
        byte_s = self.byte_s
        if positions is None:

            def arrive(i: int) -> float:
                return start + (i + 1) * byte_s
        else:
            where = positions

            def arrive(i: int) -> float:
                return start + (where[i] + 1) * byte_s

        self._feed(kept, arrive)

    def interrupt(self, outputs: Sequence[DeviceOutput], now: float) -> None:
        """A hardware event at ``now`` (reset pin, power) that stopped or restarted the
        core: its waits and the input held for them are dropped, so is output it had not
        started to send, and ``outputs`` (what the model did) are scheduled from ``now``."""
        self._timer = self._alarm = None
        self._held = []
        self._outbox = [item for item in self._outbox if item[0] <= now + self.latency_s]
        heapq.heapify(self._outbox)
        self.dev_free = now
        self.tx_free = min(self.tx_free, now)
        self._schedule(outputs, None, now)

    def next_due(self) -> float | None:
        """When something is next due (delivery, timer or alarm); None if nothing is."""
        due = self._timer[0] if self._timer is not None else math.inf
        if self._alarm is not None:
            due = min(due, self._alarm[0])
        if self._outbox:
            due = min(due, self._outbox[0][0])
        return due if math.isfinite(due) else None

    def waited_for(self) -> bool:
        """Whether what is next due is a delivery with nothing queued behind it: the answer a
        host in lock-step waits for before it sends again, which must leave on time.

        A timer or alarm runs on the model's clock (what it causes is timed from when it
        was due, not from when it ran), and a delivery with more queued behind it answers
        bytes the host has already sent, all of whose answers it awaits: those may go a
        wake-up late (the hub does not poll for them), never early.
        """
        if len(self._outbox) != 1:
            return False
        at = self._outbox[0][0]
        timer, alarm = self._timer, self._alarm
        return (timer is None or timer[0] > at) and (alarm is None or alarm[0] > at)

    def pop_due(self, now: float) -> list[bytes | None]:
        """Run everything due by ``now``: returns data to write, in order; None = vanish."""
        out: list[bytes | None] = []
        while True:
            timer_due = self._timer[0] if self._timer is not None else math.inf
            alarm_due = self._alarm[0] if self._alarm is not None else math.inf
            send_due = self._outbox[0][0] if self._outbox else math.inf
            if min(timer_due, alarm_due, send_due) > now:
                return out
            if timer_due <= min(alarm_due, send_due):
                self._fire_timer()
            elif alarm_due <= send_due:
                self._fire_alarm()
            else:
                out.append(heapq.heappop(self._outbox)[2])

    # --- internals ---------------------------------------------------------------------------

    def _feed(self, data: bytes, arrive: Callable[[int], float]) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._timer is not None:
                self._hold(data, arrive, i)
                return
            end = min(n, i + _FEED_CHUNK)
            if self._alarm is not None:
                # Bytes that arrive once the alarm is due go in after it has fired.
                end = i + bisect_left(range(i, end), self._alarm[0], key=arrive)
                if end == i:
                    self._fire_alarm()
                    continue
            stopped_at = self._schedule(
                self.device.feed(data[i:end]), functools.partial(_shifted, arrive, i), 0.0
            )
            i = end if stopped_at is None else i + stopped_at + 1

    def _hold(self, data: bytes, arrive: Callable[[int], float], first: int) -> None:
        """Keep bytes that reach a deaf device only after it wakes; the rest are lost."""
        assert self._timer is not None
        due = self._timer[0]
        if not math.isfinite(due):
            return
        indices = range(first, len(data))
        start = bisect_left(indices, due, key=arrive)
        self._held += [(arrive(i), data[i]) for i in indices[start:]]

    def _fire_timer(self) -> None:
        assert self._timer is not None
        due, token = self._timer
        self._timer = None
        self._schedule(self.device.timer_expired(token), None, due)
        held, self._held = self._held, []
        if held:
            self._feed(bytes(b for _, b in held), lambda i: held[i][0])

    def _fire_alarm(self) -> None:
        assert self._alarm is not None
        due, token = self._alarm
        self._alarm = None
        self._schedule(self.device.timer_expired(token), None, due)

    def _schedule(
        self,
        outputs: Sequence[DeviceOutput],
        arrive: Callable[[int], float] | None,
        base: float,
    ) -> int | None:
        """Place outputs on the clocks; returns the input index a Timer stopped at."""
        for out in outputs:
            cause = arrive(out.after_index) if arrive is not None and out.after_index >= 0 else base
            ready = max(cause, self.dev_free)
            if isinstance(out, Emit):
                ready += out.busy_s if self.paced else 0.0
                self.dev_free = ready
                if out.data:
                    self._transmit(out.data, ready)
            elif isinstance(out, Timer):
                due = ready + (out.delay_s if self.paced or out.fault else 0.0)
                if math.isfinite(due):
                    self.dev_free = due
                self._timer = (due, out.token)
                self._alarm = None  # a deaf device keeps no listening timeout
                return out.after_index
            elif isinstance(out, Alarm):
                self._alarm = (ready + out.delay_s, out.token)
            else:  # Vanish: once what is already on the line has arrived
                at = max(ready, self.tx_free) + self.latency_s
                heapq.heappush(self._outbox, (at, next(self._seq), None))
        return None

    def _transmit(self, data: bytes, ready: float) -> None:
        start = max(ready, self.tx_free)
        self.tx_free = start + len(data) * self.byte_s
        kept, _ = self._tx_faults.apply(data)
        if kept:
            at = self.tx_free + self.latency_s
            heapq.heappush(self._outbox, (at, next(self._seq), kept))


def _shifted(arrive: Callable[[int], float], offset: int, index: int) -> float:
    """Arrival time of byte ``index`` of a slice that starts at ``offset``."""
    return arrive(offset + index)


# --- the hub process -------------------------------------------------------------------------


def _write(fd: int, data: bytes) -> None:
    """Write to the master; if the host does not drain the port, the rest is lost (overrun)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            return
        view = view[written:]


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _precise_wakeups() -> None:
    """Ask Linux to wake this process on time: its timer slack (default 50 µs, by which a
    sleep may overrun) becomes 1 µs, so deliveries leave when the timing model says."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _serve(spec: HubSpec, conn: Connection) -> None:
    """Child process: open the pty, report its path, then run the hub until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    _precise_wakeups()
    parent = os.getppid()
    master = slave = -1
    try:
        master, slave = os.openpty()
        # Raw and kept open by us: host closes then never hang up the master (no EIO).
        tty.setraw(slave)
        os.set_blocking(master, False)
        device = spec.build_device()
        pacer = Pacer(
            device,
            baud=spec.baud,
            paced=spec.paced,
            latency_s=spec.latency_s,
            plan=spec.plan(),
            bits_per_byte=spec.bits_per_byte,
        )
        pacer.start(monotonic())
        mode = "app" if device.mode.value in _APP_MODES else "bootloader"
        conn.send(("ready", os.ttyname(slave), mode))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    try:
        _loop(pacer, device, master, conn, parent)
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


def ground_truth(device: An3155Hub | GeckoHub, length: int) -> dict[str, Any]:
    """What the hub really is, read from its model, not over its line: its mode, the version
    of the application it runs (None: none runs) and the SHA-256 of the first ``length``
    bytes of its application area. For tests and campaigns that check a reported pass."""
    base = gecko.APP_BASE if isinstance(device, GeckoHub) else FLASH_BASE
    app = device.running_app
    return {
        "mode": device.mode.value,
        "running": None if app is None else app.firmware_version,
        "sha256": hashlib.sha256(device.flash.read(base, length)).hexdigest(),
    }


def _loop(
    pacer: Pacer, device: An3155Hub | GeckoHub, master: int, conn: Connection, parent: int
) -> None:
    master_quiet_until = 0.0
    pipe = conn.fileno()
    margin = WakeMargin(SPIN_S)
    while True:
        now = monotonic()
        for data in pacer.pop_due(now):
            if data is None:
                return  # vanish: the finally in _serve closes both ends
            _write(master, data)
        due = pacer.next_due()
        watch = [pipe] if now < master_quiet_until else [master, pipe]
        # Poll the last stretch only before an answer the host may be waiting for.
        lead = margin.seconds if due is not None and pacer.waited_for() else 0.0
        if due is not None and due - now <= lead:
            # A sleep this short would overrun (wake-up latency): poll the port until due.
            readable = _poll_until(due, watch)
        else:
            timeout = _IDLE_WAKE_S if due is None else min(due - now - lead, _IDLE_WAKE_S)
            readable, _, _ = select.select(watch, [], [], timeout)
            if not readable:
                if timeout < _IDLE_WAKE_S:
                    margin.observe(monotonic() - now - timeout)
                elif os.getppid() != parent:
                    return
        # The host's bytes were on the port by now: their time on the line starts here
        # (not after the read below), which is still never before the host wrote them.
        seen = monotonic()
        if pipe in readable:
            try:
                message = conn.recv()
            except EOFError:
                return  # the parent is gone
            if message == "stop":
                return
            if isinstance(message, tuple) and message[0] == "truth":
                # The truth as of now: first run what has come due since the loop's top.
                for data in pacer.pop_due(monotonic()):
                    if data is None:
                        return
                    _write(master, data)
                conn.send(("truth", ground_truth(device, int(message[1]))))
        if master in readable:
            try:
                data = os.read(master, _READ_SIZE)
            except BlockingIOError:
                data = b""
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                # No slave open at all (should not happen: we hold one); do not spin.
                master_quiet_until = monotonic() + 0.05
                data = b""
            if data:
                pacer.receive(data, seen)


def _poll_until(due: float, watch: list[int]) -> list[int]:
    """Poll ``watch`` until something is readable (returned) or ``due`` has come (empty).

    Each turn is one non-blocking select and one clock read, so a delivery leaves within
    a few µs after it is due (never before), and input that arrives meanwhile is read and
    timed as it comes.
    """
    while True:
        readable, _, _ = select.select(watch, [], [], 0.0)
        if readable or monotonic() >= due:
            return readable


def end_process(process: BaseProcess, timeout_s: float) -> None:
    """Wait for a simulator process told to stop; then SIGTERM, then SIGKILL, each after
    ``timeout_s``. Safe for a process that never started or has already ended."""
    if process.pid is None:
        return
    process.join(timeout_s)
    if process.is_alive():
        process.terminate()
        process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()


def _machine_load() -> float:
    """Processes wanting a CPU: the 1-minute load average, or the number runnable right
    now (``/proc/loadavg``) when that is higher (the average lags a sudden load)."""
    load = 0.0
    with contextlib.suppress(OSError):  # no load average on this platform
        load = os.getloadavg()[0]
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/loadavg") as f:
        load = max(load, float(f.read().split()[3].split("/")[0]))
    return load


def start_patience_s(starting: int) -> float:
    """How long to wait for the next of ``starting`` simulator processes to come up.

    They start together and share the CPUs with whatever else the machine runs, so they
    come up at about the same time: after :data:`START_CPU_S` stretched by the processes
    wanting each CPU (theirs and the machine's load). Twice that, plus
    :data:`START_SLACK_S`, is allowed. Only a process alive and silent for that long is
    taken as stuck: one that dies is known at once.
    """
    per_cpu = (_machine_load() + starting) / (os.cpu_count() or 1)
    return START_SLACK_S + 2 * START_CPU_S * max(1.0, per_cpu)


def receive_ready(
    conn: Connection, what: str, stop: Callable[[], None], process: BaseProcess
) -> tuple[Any, ...]:
    """Take a simulator process's first message, which :meth:`Connection.poll` said is
    there: ``("ready", ...)`` is returned; an error report, or its death, stops it.

    Raises:
        SimStartError: it reported an error or died while starting.
    """
    try:
        message: tuple[Any, ...] = conn.recv()
    except (EOFError, OSError) as exc:
        stop()
        raise SimStartError(
            f"{what} process died while starting (exit code {process.exitcode})"
        ) from exc
    if message[0] != "ready":
        stop()
        raise SimStartError(f"{what}: {message[1]}")
    return message


def await_ready(
    conn: Connection,
    what: str,
    timeout_s: float | None,
    stop: Callable[[], None],
    process: BaseProcess,
) -> tuple[Any, ...]:
    """Wait for a simulator process's ``("ready", ...)`` message; stop it on any failure.

    ``timeout_s`` None waits as :func:`start_patience_s` allows for one process.

    Raises:
        SimStartError: it reported an error, died, or said nothing within the time.
    """
    limit = start_patience_s(1) if timeout_s is None else timeout_s
    if not conn.poll(limit):
        stop()
        raise SimStartError(f"{what} not ready after {limit:.0f} s")
    return receive_ready(conn, what, stop, process)


def start_hubs(
    specs: Sequence[HubSpec],
    timeout_s: float | None = None,
    on_ready: Callable[[int, int], None] | None = None,
) -> list[SimHub]:
    """Start hubs in parallel and return them ready, in the order given.

    Every process is launched at once (the more of them, the larger their share of a busy
    machine), then they are waited on together, in whatever order they come up. A start
    fails only when a hub reports an error or its process dies, or when none comes up for
    :func:`start_patience_s` of those still starting (``timeout_s``, when given, instead):
    each hub that comes up starts the wait afresh, so a slow machine that makes progress
    is waited for. ``on_ready(ready, total)`` is called as each one comes up.

    Raises:
        SimStartError: a hub did not start (every hub launched is stopped again).
    """
    hubs: list[SimHub] = []
    try:
        for spec in specs:
            hubs.append(SimHub.launch(spec))
        starting = {hub.ready_connection: hub for hub in hubs}
        while starting:
            limit = start_patience_s(len(starting)) if timeout_s is None else timeout_s
            came = multiprocessing.connection.wait(list(starting), limit)
            if not came:
                slots = sorted(hub.spec.slot for hub in starting.values())
                raise SimStartError(
                    f"slot {slots[0]}: hub not ready: {len(slots)} simulated hub(s) still "
                    f"starting and none came up in {limit:.0f} s"
                )
            for conn in came:
                assert isinstance(conn, Connection)
                starting.pop(conn).take_ready()
                if on_ready is not None:
                    on_ready(len(hubs) - len(starting), len(hubs))
    except BaseException:
        stop_hubs(hubs)
        raise
    return hubs


def stop_hubs(hubs: Sequence[SimHub]) -> None:
    """Stop hubs: all are asked at once, then each is waited for."""
    for hub in hubs:
        hub.request_stop()
    for hub in hubs:
        hub.stop()


class SimHub:
    """The parent's handle on one hub process."""

    def __init__(self, spec: HubSpec, process: BaseProcess, conn: Connection) -> None:
        self.spec = spec
        self.port = ""
        self.mode = ""
        self._process = process
        self._conn: Connection | None = conn
        self._stop_requested = False

    @classmethod
    def launch(cls, spec: HubSpec) -> SimHub:
        """Start the hub process without waiting for it (see :meth:`wait_ready`)."""
        ours, theirs = _CTX.Pipe()
        process = _CTX.Process(
            target=_serve, args=(spec, theirs), name=f"sim-hub-{spec.slot}", daemon=True
        )
        process.start()
        theirs.close()  # so that our death reads as EOF in the child
        return cls(spec, process, ours)

    @property
    def ready_connection(self) -> Connection:
        """The pipe its readiness arrives on (to wait on many hubs at once)."""
        assert self._conn is not None
        return self._conn

    def _what(self) -> str:
        return f"slot {self.spec.slot}: hub"

    def take_ready(self) -> SimHub:
        """Take the readiness message that has arrived (see :meth:`ready_connection`).

        Raises:
            SimStartError: the hub failed or its process died (the process is stopped).
        """
        message = receive_ready(self.ready_connection, self._what(), self.stop, self._process)
        _, self.port, self.mode = message
        return self

    def wait_ready(self, timeout_s: float | None = None) -> SimHub:
        """Wait until the hub reports its port (``timeout_s`` None: as long as
        :func:`start_patience_s` allows one hub on this machine).

        Raises:
            SimStartError: it failed or did not report in time (the process is stopped).
        """
        message = await_ready(
            self.ready_connection, self._what(), timeout_s, self.stop, self._process
        )
        _, self.port, self.mode = message
        return self

    @classmethod
    def start(cls, spec: HubSpec, timeout_s: float | None = None) -> SimHub:
        """Start a hub and return once its port is ready."""
        return cls.launch(spec).wait_ready(timeout_s)

    @property
    def alive(self) -> bool:
        """Whether the hub process runs (False after stop, or once its port vanished)."""
        return self._process.is_alive()

    @property
    def pid(self) -> int | None:
        """Process id of the hub."""
        return self._process.pid

    def info(self) -> dict[str, Any]:
        """Where the hub is, as ``station sim --json`` prints it."""
        firmware = self.spec.firmware
        return {
            "slot": self.spec.slot,
            "port": self.port,
            "profile": self.spec.profile,
            "eui64": self.spec.eui64,
            "firmware": None if firmware is None else format_version(firmware),
        }

    def ground_truth(self, length: int, timeout_s: float = 5.0) -> dict[str, Any]:
        """The hub's :func:`ground_truth`, asked of its process (not over its port).

        Raises:
            SimStartError: the hub process is gone (stopped, or its port vanished) or did
                not answer within ``timeout_s``.
        """
        if self._conn is None or not self.alive:
            raise SimStartError(f"slot {self.spec.slot}: the hub process is not running")
        try:
            self._conn.send(("truth", length))
            if self._conn.poll(timeout_s):
                kind, truth = self._conn.recv()
                if kind == "truth":
                    return dict(truth)
        except (OSError, EOFError) as exc:
            raise SimStartError(f"slot {self.spec.slot}: the hub process is gone") from exc
        raise SimStartError(f"slot {self.spec.slot}: no answer from the hub process")

    def request_stop(self) -> None:
        """Ask the hub to stop without waiting (stopping many hubs: ask all, then stop)."""
        if self._conn is not None and not self._stop_requested:
            self._stop_requested = True
            with contextlib.suppress(OSError):  # already gone
                self._conn.send("stop")

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the hub (politely, then by signal) and wait for it; idempotent."""
        self.request_stop()
        conn, self._conn = self._conn, None
        end_process(self._process, timeout_s)
        if conn is not None:
            conn.close()

    def __enter__(self) -> SimHub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

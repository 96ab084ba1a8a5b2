"""Serve simulated AN3155 hubs on POSIX pseudo-terminals, one process per hub.

Any program (the station, stm32flash, a terminal) opens the hub's slave path like a serial
port. The hub process owns the master side and runs the pure model (:mod:`sim.an3155`)
behind a :class:`Pacer`, which makes the link as slow as the wire it pretends to be: 11 bit
times per byte (8E1) each way, flash and core times, USB-serial adapter latency.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import itertools
import math
import multiprocessing
import os
import select
import signal
import tty
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from time import monotonic
from types import FrameType, TracebackType
from typing import Any

from firmware_images.build import demo_payload
from firmware_images.descriptor import DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, format_version
from sim.an3155 import FLASH_BASE, FLASH_SIZE, An3155Hub, Emit, Mode, Output, Timer, parse_eui64
from sim.faults import ByteFaults, FaultPlan, fault_plan

PROFILE = "demo-an3155"
BITS_PER_BYTE = 11  # 8E1: start, 8 data, parity, stop
START_MODES = ("bootloader", "app")
_READ_SIZE = 4096
_IDLE_WAKE_S = 1.0  # how often an idle hub checks that its parent is still alive
_CTX = multiprocessing.get_context("spawn")


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

    def __post_init__(self) -> None:
        if self.slot < 1:
            raise ValueError(f"slot {self.slot}: slots are numbered from 1")
        object.__setattr__(self, "eui64", self.eui64.upper())
        parse_eui64(self.eui64)
        if not 0 <= self.hw_version <= 0xFFFF:
            raise ValueError(f"hardware version {self.hw_version} does not fit in 16 bits")
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
        smallest = DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE
        if self.firmware_size % 4 or not smallest <= self.firmware_size <= FLASH_SIZE:
            raise ValueError(
                f"firmware size {self.firmware_size} must be a multiple of 4 "
                f"from {smallest} to {FLASH_SIZE} bytes"
            )
        self.plan()  # raises ValueError on a bad fault SPEC

    def plan(self) -> FaultPlan:
        """This hub's fault plan."""
        return fault_plan(self.faults, self.slot, self.seed)

    def build_device(self) -> An3155Hub:
        """The model of this hub, powered off, flash loaded as the spec says."""
        device = An3155Hub(
            eui64=self.eui64,
            hw_version=self.hw_version,
            boot_pin_strapped=self.start_in == "bootloader",
            erase_command=self.erase_command,
            faults=self.plan(),
        )
        if self.firmware is not None:
            # Factory programming, not through the bootloader.
            device.flash.program(FLASH_BASE, demo_payload(self.firmware, size=self.firmware_size))
        return device


class Pacer:
    """Turns model outputs into timed deliveries; time is passed in, so it is testable.

    Three clocks (seconds on the caller's clock): ``rx_free`` when the host-to-hub line is
    next free, ``dev_free`` when the device core is next free, ``tx_free`` when the hub-to-host
    line is next free. An output produced after input byte k is ready at
    ``max(arrival_k, dev_free) + busy`` and is delivered ``latency`` after its last byte has
    left the line. Unpaced, every delay is zero except injected stall durations.
    """

    def __init__(
        self,
        device: An3155Hub,
        *,
        baud: int,
        paced: bool = True,
        latency_s: float = 0.001,
        plan: FaultPlan | None = None,
    ) -> None:
        self.device = device
        self.paced = paced
        self.byte_s = BITS_PER_BYTE / baud if paced else 0.0
        self.latency_s = latency_s if paced else 0.0
        self.rx_free = self.dev_free = self.tx_free = -math.inf
        self._rx_faults, self._tx_faults = ByteFaults.pair(plan or FaultPlan())
        self._outbox: list[tuple[float, int, bytes | None]] = []  # (at, seq, data | vanish)
        self._seq = itertools.count()
        self._timer: tuple[float, int] | None = None  # (due, token) while the device is deaf
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

    def next_due(self) -> float | None:
        """When something is next due (delivery or device timer); None if nothing is."""
        due = self._timer[0] if self._timer is not None else math.inf
        if self._outbox:
            due = min(due, self._outbox[0][0])
        return due if math.isfinite(due) else None

    def pop_due(self, now: float) -> list[bytes | None]:
        """Run everything due by ``now``: returns data to write, in order; None = vanish."""
        out: list[bytes | None] = []
        while True:
            timer_due = self._timer[0] if self._timer is not None else math.inf
            send_due = self._outbox[0][0] if self._outbox else math.inf
            if min(timer_due, send_due) > now:
                return out
            if timer_due <= send_due:
                self._fire_timer()
            else:
                out.append(heapq.heappop(self._outbox)[2])

    # --- internals ---------------------------------------------------------------------------

    def _feed(self, data: bytes, arrive: Callable[[int], float]) -> None:
        if not data:
            return
        if self._timer is not None:
            self._hold(data, arrive, 0)
            return
        stopped_at = self._schedule(self.device.feed(data), arrive, 0.0)
        if stopped_at is not None:
            self._hold(data, arrive, stopped_at + 1)

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

    def _schedule(
        self, outputs: list[Output], arrive: Callable[[int], float] | None, base: float
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
                return out.after_index
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


def _serve(spec: HubSpec, conn: Connection) -> None:
    """Child process: open the pty, report its path, then run the hub until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    parent = os.getppid()
    master = slave = -1
    try:
        master, slave = os.openpty()
        # Raw and kept open by us: host closes then never hang up the master (no EIO).
        tty.setraw(slave)
        os.set_blocking(master, False)
        device = spec.build_device()
        pacer = Pacer(
            device, baud=spec.baud, paced=spec.paced, latency_s=spec.latency_s, plan=spec.plan()
        )
        pacer.start(monotonic())
        mode = "app" if device.mode in (Mode.STARTING, Mode.APP) else "bootloader"
        conn.send(("ready", os.ttyname(slave), mode))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    try:
        _loop(pacer, master, conn, parent)
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


def _loop(pacer: Pacer, master: int, conn: Connection, parent: int) -> None:
    master_quiet_until = 0.0
    while True:
        now = monotonic()
        for data in pacer.pop_due(now):
            if data is None:
                return  # vanish: the finally in _serve closes both ends
            _write(master, data)
        due = pacer.next_due()
        timeout = _IDLE_WAKE_S if due is None else min(max(due - now, 0.0), _IDLE_WAKE_S)
        watch: list[int | Connection] = [conn] if now < master_quiet_until else [master, conn]
        readable, _, _ = select.select(watch, [], [], timeout)
        if conn in readable:
            try:
                if conn.recv() == "stop":
                    return
            except EOFError:
                return  # the parent is gone
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
                pacer.receive(data, monotonic())
        if os.getppid() != parent:
            return


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

    def wait_ready(self, timeout_s: float = 10.0) -> SimHub:
        """Wait until the hub reports its port.

        Raises:
            SimStartError: it failed or did not report in time (the process is stopped).
        """
        conn = self._conn
        assert conn is not None
        try:
            if not conn.poll(timeout_s):
                raise SimStartError(f"slot {self.spec.slot}: hub not ready after {timeout_s} s")
            message = conn.recv()
        except (EOFError, OSError) as exc:
            self.stop()
            raise SimStartError(
                f"slot {self.spec.slot}: hub process died while starting "
                f"(exit code {self._process.exitcode})"
            ) from exc
        except SimStartError:
            self.stop()
            raise
        if message[0] != "ready":
            self.stop()
            raise SimStartError(f"slot {self.spec.slot}: {message[1]}")
        _, self.port, self.mode = message
        return self

    @classmethod
    def start(cls, spec: HubSpec, timeout_s: float = 10.0) -> SimHub:
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
            "profile": PROFILE,
            "eui64": self.spec.eui64,
            "firmware": None if firmware is None else format_version(firmware),
        }

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
        if self._process.pid is not None:
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
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

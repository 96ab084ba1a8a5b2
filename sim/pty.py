"""Serve simulated serial hubs on POSIX pseudo-terminals, one process per hub.

Any program (the station, stm32flash, a terminal) opens the hub's slave path like a serial
port. The hub process owns the master side and runs the pure model that the spec's
protocol plug-in builds (:class:`sim.core.spec.SimModel`) behind a
:class:`~sim.core.pacing.Pacer`, which makes the link as slow as the wire it pretends to
be: the model's bit times per byte (11 for 8E1, 10 for 8N1) each way, flash and core
times, USB-serial adapter latency. Nothing here names a protocol.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import tty
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from time import monotonic
from types import FrameType, TracebackType
from typing import Any

from firmware_images.descriptor import format_version
from sim.core.pacing import BITS_PER_BYTE as BITS_PER_BYTE
from sim.core.pacing import HubModel as HubModel
from sim.core.pacing import Pacer as Pacer
from sim.core.spec import START_MODES as START_MODES
from sim.core.spec import HubSpec as HubSpec
from sim.core.spec import derive_eui64 as derive_eui64
from sim.wakeup import WakeMargin

_APP_MODES = ("app-starting", "app")  # Mode values of a hub in (or starting) its application
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
        _loop(pacer, spec, master, conn, parent)
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        conn.close()


def ground_truth(device: HubModel, length: int, base: int) -> dict[str, Any]:
    """What the hub really is, read from its model, not over its line: its mode, the version
    of the application it runs (None: none runs) and the SHA-256 of the first ``length``
    bytes of its application area (from ``base``). For tests and campaigns that check a
    reported pass."""
    app = device.running_app
    return {
        "mode": device.mode.value,
        "running": None if app is None else getattr(app, "firmware_version", None),
        "sha256": hashlib.sha256(device.flash.read(base, length)).hexdigest(),
    }


def _loop(pacer: Pacer, spec: HubSpec, master: int, conn: Connection, parent: int) -> None:
    device = pacer.device
    master_quiet_until = 0.0
    pipe = conn.fileno()
    margin = WakeMargin(SPIN_S)
    while True:
        now = monotonic()
        if not _deliver(pacer, master, now):
            return  # vanish: the finally in _serve closes both ends
        wake = pacer.next_wake()
        due, precise = wake if wake is not None else (None, False)
        watch = [pipe] if now < master_quiet_until else [master, pipe]
        # Poll the last stretch only before an answer the host may be waiting for.
        lead = margin.seconds if precise else 0.0
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
                if not _deliver(pacer, master, monotonic()):
                    return
                conn.send(("truth", ground_truth(device, int(message[1]), spec.model.app_base)))
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


def _deliver(pacer: Pacer, master: int, now: float) -> bool:
    """Write what is due by ``now``, what comes due together in one write (the host wakes
    once for it); False: the hub vanished."""
    run: list[bytes] = []
    for data in pacer.pop_due(now):
        if data is None:
            if run:
                _write(master, b"".join(run))
            return False
        run.append(data)
    if run:
        _write(master, b"".join(run))
    return True


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

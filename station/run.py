"""``station run``: a headless rig run for warehouses and CI.

Loads the rig, catalogue, trust store and (optionally) a consignment manifest, opens the
store (SQLite by default, PostgreSQL by URL), marks jobs left in flight by a previous crash
as interrupted, serves every slot, then writes the batch summary and reconciliation.

With ``--json`` stdout carries one event per line (:mod:`station.event_json`; the kinds and
their fields are tabled in docs/records.md, "Event lines"). Exit
status: 0 when every hub seen passed, was current or was refused by policy and no expected
hub is missing; 1 otherwise; 2 for bad input; 130 when interrupted before the batch ended.

With ``--metrics HOST:PORT`` the station's figures are served for Prometheus while it runs
(docs/metrics.md); ``--metrics-linger SECONDS`` keeps serving them after the batch, so the
last scrape sees its end.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console

from drivers.errors import ConfigError
from station.batch import BatchRun, describe_recovery, with_overrides
from station.event_json import to_line
from station.events import (
    Event,
    JobFinished,
    JobState,
    RecordError,
    Retry,
    SlotEmpty,
    SlotError,
    SlotFault,
    SlotPowered,
)
from station.render import EventBoard, console, shown_version, station_command, styled

if TYPE_CHECKING:  # prometheus-client is imported only when --metrics is given
    from station.metrics import MetricsServer


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``station run``."""
    p.add_argument("--rig", required=True, help="rig file (TOML): slots, bindings, policy")
    p.add_argument("--catalog", help="catalogue folder (default: the rig's)")
    p.add_argument("--trust", help="trust store folder (default station-data/trust)")
    p.add_argument("--manifest", help="consignment manifest CSV to reconcile against")
    p.add_argument("--operator", default="unknown", help="who runs the bench (audited)")
    p.add_argument(
        "--db",
        help="database: SQLite file path or URL (default: the rig's, else station-data/station.db)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON event per line on stdout (fields: docs/records.md, Event lines)",
    )
    p.add_argument(
        "--continuous",
        action="store_true",
        help="keep serving slots as hubs are swapped, until Ctrl-C; then print the summary",
    )
    p.add_argument("--allow-unsigned", action="store_true", help="override (audited)")
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="override (audited): write the newest release over a newer, uncatalogued version",
    )
    p.add_argument(
        "--allow-off-pathway",
        action="store_true",
        help="override (audited): write the newest release with no approved path to it",
    )
    add_metrics_arguments(p)
    p.add_argument(
        "--metrics-linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --metrics: keep serving the figures this long after the batch ends "
        "(Ctrl-C ends it sooner), so the last scrape sees the batch's end",
    )


def add_metrics_arguments(p: argparse.ArgumentParser) -> None:
    """``--metrics HOST:PORT`` (``station run``, ``station tui``, ``station demo``)."""
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (docs/metrics.md)",
    )


def start_metrics(address: str | None, err: Console) -> MetricsServer | None:
    """Bind the metrics endpoint, if asked for, and say where it is; before anything else
    starts, so a bad address or a port in use is reported before the station is taken.

    Raises:
        ConfigError: a bad address or a port that cannot be bound.
    """
    if not address:
        return None
    from station.metrics import serve

    server = serve(address)
    err.print(f"metrics: {server.url}", highlight=False)
    return server


@contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``stop`` (nothing new starts) instead of raising."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Sink:
    """Thread-safe publisher: JSON lines, or the live board and result lines."""

    def __init__(self, as_json: bool, err: Console) -> None:
        self.as_json = as_json
        self.err = err
        self.lock = threading.Lock()
        self.board = EventBoard(err, enabled=not as_json and err.is_terminal)

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.board(event)
            if self.as_json:
                print(to_line(event), flush=True)
            else:
                line = event_line(event)
                if line is not None:
                    self.err.print(styled(line))


def event_line(event: Event) -> str | None:
    """The line a person reads for an event on the console (None: the board shows it).

    Versions are dotted; a retry, a flagged slot or an error is a sentence, never the
    event's raw data.
    """
    slot = f"slot {event.slot}"
    match event:
        case JobFinished(state=JobState.PASSED):  # its message says versions and verification
            return f"{slot}: passed {event.eui64} {event.message}"
        case JobFinished():
            before, after = event.version_before, event.version_after
            versions = (
                f"{shown_version(before)} -> {shown_version(after)}"
                if after is not None
                else f"version before: {shown_version(before) if before is not None else 'unknown'}"
            )
            return (
                f"{slot}: {event.state} {event.eui64 or '(hub not identified)'} ({versions}): "
                f"{event.message}"
            )
        case Retry():
            return (
                f"{slot}: trying the same hub again (try {event.tries}), as the previous try "
                f"failed: {event.why}"
            )
        case SlotFault(power=power) if power:
            return f"{slot}: flagged: its power switch does not work: {power}"
        case SlotPowered(error=error) if error:
            return f"{slot}: power {event.action} failed ({event.why}): {error}"
        case SlotPowered():
            return f"{slot}: power {event.action} by {event.switch}: {event.why}"
        case SlotFault():
            return (
                f"{slot}: flagged: {event.failed_hubs} different hubs failed here in a row "
                f"(last: {event.last}); check the slot's cable and fixture"
            )
        case SlotEmpty():
            return f"{slot}: no hub at {event.binding}"
        case SlotError():
            return f"{slot}: internal error (a bug; please report it): {event.error}"
        case RecordError():
            return f"{slot}: could not record the job in the database: {event.error}"
    return None


def run_station(args: argparse.Namespace, err: Console) -> int:
    """Run a batch as ``station run`` does; returns the exit status."""
    linger = getattr(args, "metrics_linger", 0.0)
    if linger < 0:
        raise ConfigError(f"--metrics-linger {linger:g} is negative")
    server = start_metrics(getattr(args, "metrics", None), err)
    try:
        return _run(args, err, server, linger)
    finally:
        if server is not None:
            server.close()


def _run(
    args: argparse.Namespace, err: Console, server: MetricsServer | None, linger: float
) -> int:
    sink = _Sink(args.json, err)
    run = BatchRun.open(
        args.rig,
        catalog_dir=args.catalog,
        trust_dir=args.trust,
        manifest_path=args.manifest,
        db_url=args.db,
        operator=args.operator,
        allow_unsigned=args.allow_unsigned,
        publish=sink,
    )
    try:
        if server is not None:
            from station.metrics import watch

            watch(run, server)
        extra = {
            k: True for k in ("allow_downgrade", "allow_off_pathway") if getattr(args, k, False)
        }
        if extra:
            run.policy = with_overrides(run.policy, extra)
        batch = run.begin()
        for line in describe_recovery(run.recovery):
            err.print(styled(line))
        stop = threading.Event()
        with _stopped_by_signals(stop), sink.board:
            run.serve(continuous=args.continuous, stop=stop)
        summ, recon = run.finish()
        counts = recon.counts()
        problems = run.problems(recon)
        if not args.json:
            rate = f", {summ.hubs_per_hour:.0f} hubs/hour" if summ.hubs_per_hour else ""
            db = args.db or run.rig.storage
            where = f" --db {shlex.quote(db)}" if db else ""
            out = console()
            out.print(
                f"batch {batch}: "
                + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
                + f"{rate}",
                highlight=False,
            )
            out.print(
                f"reports: {station_command()} report consignment --batch {batch}{where}   "
                "(or dsp, junit, summary instead of consignment)",
                highlight=False,
            )
        for line in problems:  # on stderr with --json too: stdout is the event stream
            err.print(styled("exit status 1: ", line))
        if server is not None and linger > 0 and not stop.is_set():
            err.print(f"metrics: served for {linger:g} s more (Ctrl-C ends it)", highlight=False)
            with _stopped_by_signals(stop):
                stop.wait(linger)
        return 1 if problems else 0
    finally:
        run.close()

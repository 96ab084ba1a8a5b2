"""``station run``: a headless rig run for warehouses and CI.

Loads the rig, catalogue, trust store and (optionally) a consignment manifest, opens the
store (SQLite by default, PostgreSQL by URL), marks jobs left in flight by a previous crash
as interrupted, serves every slot, then writes the batch summary and reconciliation.

With ``--json`` stdout carries one event per line (see :class:`station.events.Event`):
``batch-started``, ``state``, ``progress``, ``note``, ``retry``, ``job-finished``,
``slot-empty``, ``slot-fault``, ``record-error``, ``slot-error``, ``batch-finished``. Exit
status: 0 when every hub seen passed, was current or was refused by policy and no expected
hub is missing; 1 otherwise; 2 for bad input; 130 when interrupted before the batch ended.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from types import FrameType

from rich.console import Console

from station.batch import BatchRun, describe_recovery, with_overrides
from station.events import Event
from station.render import EventBoard, console, shown_version, styled


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``station run``."""
    p.add_argument("--rig", required=True, help="rig file (TOML): slots, bindings, policy")
    p.add_argument("--catalog", help="catalogue folder (default: the rig's)")
    p.add_argument("--trust", help="trust store folder (default station-data/trust)")
    p.add_argument("--manifest", help="consignment manifest CSV to reconcile against")
    p.add_argument("--operator", default="unknown", help="who runs the bench (audited)")
    p.add_argument("--db", help="storage URL (default: the rig's, else station-data/station.db)")
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
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
                print(json.dumps(event.to_json()), flush=True)
            elif event.kind == "job-finished":
                d = event.data
                message = str(d.get("message") or "")
                before = shown_version(d.get("version_before"))
                versions = (
                    f"{before} -> {shown_version(d.get('version_after') or '-')}: "
                    if not message.startswith(before)  # a pass says them already
                    else ""
                )
                self.err.print(
                    styled(
                        f"slot {event.slot}: {event.state} {d.get('eui64') or '(hub unknown)'} "
                        f"{versions}{message}"
                    )
                )
            elif event.kind in ("slot-fault", "slot-empty", "retry", "slot-error", "record-error"):
                self.err.print(styled(f"slot {event.slot}: {event.kind} {event.data}"))


def run_station(args: argparse.Namespace, err: Console) -> int:
    """Run a batch as ``station run`` does; returns the exit status."""
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
        extra = {
            k: True for k in ("allow_downgrade", "allow_off_pathway") if getattr(args, k, False)
        }
        if extra:
            run.policy = with_overrides(run.policy, extra)
        batch = run.begin()
        for line in describe_recovery(run.recovery):
            err.print(styled(line))
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with sink.board:
                run.serve(continuous=args.continuous, stop=stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        summ, recon = run.finish()
        counts = recon.counts()
        problems = run.problems(recon)
        if not args.json:
            rate = f", {summ.hubs_per_hour:.0f} hubs/hour" if summ.hubs_per_hour else ""
            console().print(
                f"batch {batch}: "
                + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
                + f"{rate}. Reports: station report dsp|consignment|junit|summary "
                f"--batch {batch}",
                highlight=False,
            )
        for line in problems:  # on stderr with --json too: stdout is the event stream
            err.print(styled("exit status 1: ", line))
        return 1 if problems else 0
    finally:
        run.close()

"""``station tui`` arguments; Textual is imported only when the command runs."""

from __future__ import annotations

import argparse

from rich.console import Console

from station.run import add_metrics_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``station tui`` (those of ``station run`` that an operator needs)."""
    p.add_argument("--rig", required=True, help="rig file (TOML): slots, bindings, policy")
    p.add_argument("--catalog", help="catalogue folder (default: the rig's)")
    p.add_argument("--trust", help="trust store folder (default station-data/trust)")
    p.add_argument("--manifest", help="consignment manifest CSV (can also be loaded in the UI)")
    p.add_argument("--operator", help="who runs the bench (audited; asked when not given)")
    p.add_argument("--db", help="storage URL (default: the rig's, else station-data/station.db)")
    p.add_argument("--reports", help="folder for exported reports (default station-data/reports)")
    add_metrics_arguments(p)


def cmd_tui(args: argparse.Namespace, err: Console) -> int:
    """Run the UI; the exit status is that of ``station run`` for the batch."""
    from station.tui.app import run_tui

    return run_tui(
        args.rig,
        args.catalog,
        trust_dir=args.trust,
        manifest_path=args.manifest,
        operator=args.operator,
        db_url=args.db,
        reports_dir=args.reports,
        metrics=args.metrics,
    )

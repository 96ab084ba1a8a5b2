"""``station consignment load|status|close``, ``station stations`` and ``station fleet``: many
stations on one database.

Thin front end over :mod:`station.records.store` and :mod:`station.records.consignments`.
Everything shown is read from the database alone (no station is asked anything), so any PC
that reaches it sees the same warehouse. Commands that look at stations notice the ones
that are gone first (their hubs in flight interrupted, once); with a role that may only
read, they show them gone and change nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from station.records.consignments import ConsignmentStatus, check_manifest, status
from station.records.errors import StoreError
from station.records.manifest import Manifest
from station.records.reports import utc_text
from station.records.store import StationView, Store
from station.records_cli import open_store
from station.render import console, literal, styled

__all__ = ["add_commands", "fleet_json", "stations_json"]

#: The fastest ``station fleet --watch`` refreshes (it polls the database).
MIN_INTERVAL_S = 1.0
FLEET_FORMAT = "chub-station/fleet/1"
_STATE_STYLE = {"serving": "green", "idle": "cyan", "gone": "red"}


def _operator(args: argparse.Namespace) -> str:
    if args.operator:
        return str(args.operator)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _notice(store: Store) -> None:
    """Notice gone stations (a write); a read-only role just sees them gone."""
    with contextlib.suppress(StoreError):
        store.notice_gone()


# -- consignments ------------------------------------------------------------------------------


def cmd_consignment_load(args: argparse.Namespace, err: Console) -> int:
    manifest = Manifest.load(args.file)
    check_manifest(manifest, args.id, args.file)
    with open_store(args.db) as store:
        row = store.load_consignment(args.id, manifest, operator=_operator(args))
    err.print(
        styled(
            f"consignment {literal(row.consignment_id)} loaded: {row.hubs} hub(s) from "
            f"{literal(row.manifest)}; every station on this database serves it until "
            f"'station consignment close {literal(row.consignment_id)}'"
        ),
        highlight=False,
    )
    return 0


def cmd_consignment_status(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        _notice(store)
        st = status(store, args.id)
    if args.json:
        print(json.dumps(st.to_json()), flush=True)
    else:
        _print_status(console(), st)
    return 0


def cmd_consignment_close(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        row = store.close_consignment(args.id, operator=_operator(args))
        st = status(store, args.id)
    counts = st.counts()
    err.print(
        styled(
            f"consignment {literal(row.consignment_id)} closed: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
            + (
                f"; {len(st.waiting)} hub change(s) wait for their batch to close before the "
                "DSP update is final"
                if st.waiting
                else ""
            )
        ),
        highlight=False,
    )
    return 0


def _since(at: str | None) -> str:
    return "?" if at is None else at.replace("T", " ").replace("Z", " UTC")


def _print_status(out: Console, st: ConsignmentStatus) -> None:
    row = st.consignment
    state = "open" if row.open else f"closed {_since(utc_text(row.closed_at))}"
    out.print(
        styled(
            f"consignment {literal(row.consignment_id)} ({state}): {literal(row.manifest)}, "
            f"loaded {_since(utc_text(row.loaded_at))} by {literal(row.loaded_by)}"
        ),
        highlight=False,
    )
    counts = st.counts()
    out.print(
        styled(
            f"expected {len(st.hubs)}: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
            + (" (complete)" if st.complete else "")
        ),
        highlight=False,
    )
    for station, c in st.by_station.items():
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c.items() if v)
        out.print(styled(f"  station {literal(station)}: {shown}"), highlight=False)
    styles = {"in_flight": "blue", "failed": "red", "refused": "yellow", "missing": "magenta"}
    for hub in st.hubs:
        if hub.result not in styles:
            continue
        label = hub.result.replace("_", " ").upper()
        if hub.result == "in_flight":
            what = (
                f"at station {literal(hub.station_id)} slot {hub.slot} ({hub.state}) since "
                f"{_since(hub.since)}"
            )
        elif hub.result == "missing":
            what = "not seen at any station"
        else:
            what = (
                f"at station {literal(hub.station_id)} slot {hub.slot}: "
                f"{hub.phase or '?'}: {literal(hub.reason or '')}"
            )
        out.print(
            styled((f"{label:<10}", styles[hub.result]), f" {hub.eui64}  ", what),
            highlight=False,
        )
    out.print(
        styled(
            f"DSP update: {st.exported} hub change(s) exported"
            + (f", {len(st.waiting)} waiting for their batch to close" if st.waiting else "")
            + f" (station report dsp --consignment {literal(row.consignment_id)})"
        ),
        highlight=False,
    )


# -- stations and the fleet ------------------------------------------------------------------


def _station_json(view: StationView) -> dict[str, Any]:
    lease = view.lease
    return {
        "station_id": lease.station_id,
        "state": view.state,
        "host": lease.host,
        "pid": lease.pid,
        "rig": lease.rig,
        "software": lease.software,
        "started_at": utc_text(lease.started_at),
        "heartbeat_at": utc_text(lease.heartbeat_at),
        "heartbeat_age_s": round(view.heartbeat_age_s, 1),
        "ttl_s": lease.ttl_s,
        "released_at": utc_text(lease.released_at),
        "batch": view.batch,
        "counts": dict(view.counts),
        "slots": [
            {
                "slot": s.slot,
                "binding": s.binding,
                "profile": s.profile,
                "job": s.job,
                "eui64": s.eui64,
                "state": s.state,
                "since": utc_text(s.since),
            }
            for s in view.slots
        ],
    }


def stations_json(store: Store) -> list[dict[str, Any]]:
    """Every registered station as ``station stations --json`` prints it."""
    return [_station_json(v) for v in store.stations()]


def fleet_json(store: Store) -> dict[str, Any]:
    """The warehouse: every station and every open consignment's progress."""
    consignments = []
    for row in store.consignment_records(open_only=True):
        st = status(store, row.consignment_id)
        doc = st.to_json()
        consignments.append(
            {
                key: doc[key]
                for key in (
                    "consignment",
                    "manifest",
                    "loaded_at",
                    "expected",
                    "complete",
                    "counts",
                    "stations",
                    "in_flight",
                    "dsp",
                )
            }
        )
    return {
        "format": FLEET_FORMAT,
        "generated_at": utc_text(datetime.now(UTC)),
        "stations": stations_json(store),
        "consignments": consignments,
    }


def _print_stations(out: Console, stations: list[dict[str, Any]], *, slots: bool) -> None:
    if not stations:
        out.print("no stations registered on this database", highlight=False)
        return
    for s in stations:
        counts = s["counts"]
        done = {k: counts.get(k, 0) for k in ("passed", "skipped", "failed", "refused")}
        flying = sum(1 for slot in s["slots"] if slot["job"] is not None)
        out.print(
            styled(
                (f"{s['state']:<8}", _STATE_STYLE[s["state"]]),
                f" {literal(s['station_id'])}  {literal(s['host'])} pid {s['pid']}  "
                f"{literal(s['software'])}  heartbeat {s['heartbeat_age_s']:.0f} s ago",
            ),
            highlight=False,
        )
        out.print(
            styled(
                f"         started {_since(s['started_at'])}  batch {s['batch'] or '-'}; "
                f"{len(s['slots'])} slot(s), {flying} in flight; "
                f"jobs (tries) passed {done['passed']}, "
                f"current {done['skipped']}, failed {done['failed']}, refused {done['refused']}"
            ),
            highlight=False,
        )
        if not slots:
            continue
        for slot in s["slots"]:
            what = (
                f"{slot['eui64'] or 'hub not identified yet'} {slot['state']} since "
                f"{_since(slot['since'])}"
                if slot["job"] is not None
                else "no hub in flight"
            )
            out.print(
                styled(
                    f"    slot {slot['slot']:>3}  {literal(slot['binding'])}  "
                    f"{literal(slot['profile'])}  ",
                    what,
                ),
                highlight=False,
            )


def cmd_stations(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        _notice(store)
        doc = stations_json(store)
    if args.json:
        print(json.dumps(doc), flush=True)
    else:
        _print_stations(console(), doc, slots=True)
    return 0


def _print_fleet(out: Console, doc: dict[str, Any]) -> None:
    out.print(styled((f"warehouse at {_since(doc['generated_at'])}", "bold")), highlight=False)
    _print_stations(out, doc["stations"], slots=False)
    if not doc["consignments"]:
        out.print("no open consignments", highlight=False)
    for c in doc["consignments"]:
        counts = c["counts"]
        done = counts["passed"] + counts["current"]
        where = ", ".join(f"{literal(h['station_id'])}/{h['slot']}" for h in c["in_flight"][:6]) + (
            ", ..." if len(c["in_flight"]) > 6 else ""
        )
        out.print(
            styled(
                (f"consignment {literal(c['consignment'])}", "bold"),
                f" {done}/{c['expected']} done: "
                + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
                + (f" (in flight at {where})" if where else "")
                + f"; DSP exported {c['dsp']['exported']}, waiting {len(c['dsp']['waiting'])}",
            ),
            highlight=False,
        )


def cmd_fleet(args: argparse.Namespace, err: Console) -> int:
    interval = max(MIN_INTERVAL_S, float(args.interval))
    out = console()
    with open_store(args.db) as store:
        while True:
            _notice(store)
            doc = fleet_json(store)
            if args.json:
                print(json.dumps(doc), flush=True)
            else:
                if args.watch:
                    out.clear()
                _print_fleet(out, doc)
            if not args.watch:
                return 0
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                return 0


# -- parser ------------------------------------------------------------------------------------


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        help="the warehouse database URL (postgresql+psycopg://user@host/db); default "
        "$STATION_DB, else the station data folder's station.db",
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``consignment``, ``stations`` and ``fleet`` with the station's parser."""
    p = sub.add_parser(
        "consignment",
        help="a consignment served by every station on the database: load, status, close",
    )
    csub = p.add_subparsers(dest="consignment_command", required=True, metavar="ACTION")
    q = csub.add_parser(
        "load",
        help="load a consignment manifest once, for every station on the database",
        description="Load a consignment manifest (CSV: consignment id, EUI-64, model, "
        "firmware version; docs/records.md) once on the database: every station's batches "
        "serve its hubs until it is closed. Every line must name consignment ID. Refused "
        "(exit 2) when ID was loaded before or one of its hubs is listed by another open "
        "consignment.",
    )
    q.add_argument("file", help="the manifest CSV")
    q.add_argument("--id", required=True, help="the consignment id the file lists")
    q.add_argument("--operator", help="who loads it (audited); default the login name")
    _db_arg(q)
    q.set_defaults(func=cmd_consignment_load)

    q = csub.add_parser(
        "status",
        help="where each hub of the consignment is, across every station",
        description="Expected, passed, current, failed, refused, in flight (which station "
        "and slot, since when) and missing hubs of the consignment, across every station, "
        "and how many hub changes its DSP update holds. Read from the database alone.",
    )
    q.add_argument("id", help="the consignment id")
    q.add_argument("--json", action="store_true", help="one JSON object on standard output")
    _db_arg(q)
    q.set_defaults(func=cmd_consignment_status)

    q = csub.add_parser(
        "close",
        help="close a consignment: refused while one of its hubs is in flight",
    )
    q.add_argument("id", help="the consignment id")
    q.add_argument("--operator", help="who closes it (audited); default the login name")
    _db_arg(q)
    q.set_defaults(func=cmd_consignment_close)

    p = sub.add_parser(
        "stations",
        help="the stations on the database: serving, idle or gone, with their slots",
        description="Every station registered on the database (one per station id): host, "
        "rig, software, start, heartbeat, state (serving: a batch open; idle: running, no "
        "batch; gone: stopped, killed or silent past its lease), and each slot with the hub "
        "in flight in it. Stations found gone have their hubs in flight interrupted, once.",
    )
    p.add_argument("--json", action="store_true", help="one JSON array on standard output")
    _db_arg(p)
    p.set_defaults(func=cmd_stations)

    p = sub.add_parser(
        "fleet",
        help="the warehouse: every station's slots and counters, every open consignment",
        description="Every station's state, slots and counters and every open consignment's "
        "progress, read from the database alone. --watch redraws it every --interval "
        "seconds (at least 1) until Ctrl-C; with --json, one JSON object per refresh.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per refresh")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    _db_arg(p)
    p.set_defaults(func=cmd_fleet)

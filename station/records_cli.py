"""``station report ...``, ``station audit verify``, ``station batches`` and ``station hub``:
the records.

Thin front end over :mod:`station.records.store` and :mod:`station.records.reports`: it opens
the database
(``--db URL``, else ``$STATION_DB``, else ``station.db`` in the station data folder), turns
arguments into calls and results into text, JSON, files and exit codes. It never creates a
database: a report on a database that is not there is an error, not an empty report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from drivers.errors import ConfigError
from station.paths import DATA, keys_dir
from station.records.consignments import dsp_text as consignment_dsp_text
from station.records.keys import KeyRing
from station.records.report_check import check_report
from station.records.reports import (
    CATEGORIES,
    Reconciliation,
    junit_xml,
    reconcile,
    summarise,
    utc_text,
    write_text_atomic,
)
from station.records.store import EventRow, JobRow, Store
from station.render import console, error_line, literal, shown_version, styled

__all__ = ["add_commands", "open_store", "resolve_batch"]


def open_store(db: str | None) -> Store:
    """The station database named by ``--db``, ``$STATION_DB`` or the data folder.

    Raises:
        ConfigError: there is no database there.
        StoreError: it cannot be opened.
    """
    return Store.open(db or os.environ.get("STATION_DB") or None, data_dir=DATA, create=False)


def resolve_batch(store: Store, text: str) -> int:
    """A ``--batch`` value: a batch id, or ``latest``.

    Raises:
        ConfigError: not a number, or ``latest`` with no batches recorded.
        UnknownRecord: no such batch.
    """
    if text.strip().lower() == "latest":
        latest = store.latest_batch_id()
        if latest is None:
            raise ConfigError(f"no batches in {store.url}")
        return latest
    try:
        batch_id = int(text)
    except ValueError:
        raise ConfigError(f"--batch takes a batch id or 'latest', not {text!r}") from None
    store.batch(batch_id)
    return batch_id


def _write_file(path: str, text: str) -> None:
    """Write a report whole or not at all."""
    try:
        write_text_atomic(Path(path), text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


# -- report ----------------------------------------------------------------------------------


def _report_dsp_consignment(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        text, final = consignment_dsp_text(store, args.consignment, args.format)
        row = store.consignment_record(args.consignment)
    if not final:
        err.print(
            styled(
                f"consignment {row.consignment_id} is "
                + ("still open" if row.open else "closed, but hubs wait for their batch")
                + ": this is its DSP update so far (each row is final: its batch's export); "
                "more rows may follow"
            ),
            highlight=False,
        )
    if args.output:
        _write_file(args.output, text)
        err.print(
            styled(f"consignment {row.consignment_id}: DSP update written to {args.output}"),
            highlight=False,
        )
    else:
        print(text, end="", flush=True)
    return 0


def cmd_report_dsp(args: argparse.Namespace, err: Console) -> int:
    if args.consignment is not None:
        return _report_dsp_consignment(args, err)
    with open_store(args.db) as store:
        batch_id = resolve_batch(store, args.batch)
        text = store.dsp_text(batch_id, args.format)
        export, rows, _ = store.dsp(batch_id)
    if export is None:
        err.print(
            styled(
                f"batch {batch_id} is still open: this is a preview of its DSP update, which "
                "is made once, when the batch closes; do not send it"
            )
        )
    if args.output:
        _write_file(args.output, text)
        what = "preview" if export is None else f"export {export.id}"
        err.print(
            styled(
                f"batch {batch_id}: {len(rows)} hub(s) in its DSP update ({what}) written to "
                f"{args.output}"
            )
        )
    else:
        print(text, end="", flush=True)
    return 0


def _print_reconciliation(rec: Reconciliation) -> None:
    out = console()
    manifest = rec.manifest or "no manifest"
    out.print(
        f"batch {rec.batch} (station {literal(rec.station_id)}), {literal(manifest)}: "
        f"{rec.listed} listed, {rec.seen} seen",
        highlight=False,
    )
    counts = rec.counts()
    out.print(
        ", ".join(f"{c.replace('_', ' ')} {counts[c]}" for c in CATEGORIES if counts[c])
        or "nothing to reconcile",
        highlight=False,
    )
    style = {
        "passed": "green",
        "already_current": "cyan",
        "failed": "red",
        "refused": "yellow",
        "in_progress": "blue",
        "missing": "magenta",
        "unexpected": "magenta",
    }
    for category in CATEGORIES:
        for e in rec.lists[category]:
            label = category.replace("_", " ").upper()
            where = e.consignment_id or "not listed"
            if category in ("failed", "refused") or (category == "unexpected" and e.reason):
                what = f"{e.phase or '?'}: {e.reason or e.result}"
            elif category == "missing":
                what = "never seen on the bench"
            elif category == "unexpected":
                what = f"result {e.result}"
            elif category == "already_current":
                what = f"runs {shown_version(e.version_before)}"
            else:
                what = (
                    f"{shown_version(e.version_before or 'blank')} -> "
                    f"{shown_version(e.version_after or e.version_before)}"
                )
            tries = f" ({e.attempts} attempts)" if e.attempts > 1 else ""
            out.print(
                styled((f"{label:<16}", style[category]), f" {e.eui64}  {where}  {what}{tries}"),
                highlight=False,
            )
    for job in rec.unidentified_jobs:
        out.print(
            styled(
                (f"{'NO EUI-64':<16}", "red"),
                f" job {job['job']} slot {job['slot']} "
                f"{job['port']}: {job['result']} in {job['phase'] or '?'}: {job['reason'] or ''}",
            ),
            highlight=False,
        )
    for warning in rec.warnings:
        out.print(styled(("warning", "yellow"), " ", warning), highlight=False)


def cmd_report_consignment(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        rec = reconcile(store, resolve_batch(store, args.batch))
    if args.json:
        print(json.dumps(rec.to_json()), flush=True)
    else:
        _print_reconciliation(rec)
    return 0


def cmd_report_junit(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        batch_id = resolve_batch(store, args.batch)
        text = junit_xml(store, batch_id)
    _write_file(args.output, text)
    err.print(styled(f"batch {batch_id}: JUnit XML written to {args.output}"))
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(int(minutes), 60)
    return f"{hours}h{m:02d}m{s:04.1f}s" if hours else f"{m}m{s:04.1f}s" if m else f"{s:.1f}s"


def cmd_report_summary(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        summary = summarise(store, resolve_batch(store, args.batch))
    if args.json:
        print(json.dumps(summary.to_json()), flush=True)
        return 0
    out = console()
    s = summary
    out.print(
        f"batch {s.batch} (station {literal(s.station_id)}, operator {literal(s.operator)}): "
        f"{s.started_at} .. {s.finished_at or 'open'}",
        highlight=False,
    )
    out.print(
        f"{s.hubs} hubs: "
        + (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.counts.items() if v) or "none")
        + f"; {_tries(s.jobs, s.unidentified_jobs)}",
        highlight=False,
    )
    rate = "-" if s.hubs_per_hour is None else f"{s.hubs_per_hour:g}"
    out.print(
        f"wall time {_duration(s.wall_seconds)}, {rate} hubs/hour; job time total "
        f"{_duration(s.total_seconds)}, average {_duration(s.average_seconds)} "
        f"(passed: {_duration(s.average_passed_seconds)}); {s.bytes_written} bytes written",
        highlight=False,
    )
    for title, groups in (("failures", s.failures), ("refusals", s.refusals)):
        if groups:
            out.print(f"{title} by reason:", highlight=False)
            for g in groups:
                out.print(styled(f"  {g['count']:>4}  {g['reason']}"))
    return 0


# -- audit, batches --------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace, err: Console) -> int:
    ring = KeyRing.from_dir(args.keys or keys_dir())
    with open_store(args.db) as store:
        if args.report:
            head, problems = check_report(store, Path(args.report), ring)
            if args.json:
                doc = {"ok": not problems, "report": args.report, "head": head.to_json()}
                print(json.dumps({**doc, "problems": problems}), flush=True)
            elif not problems:
                print(
                    f"report {literal(args.report)} matches the records: head {head.seq} "
                    f"{head.hash} signed by station {literal(head.station_id or '?')}"
                )
            else:
                print(f"report {literal(args.report)} does NOT match the records:")
                for problem in problems:
                    print(f"  {literal(problem)}")
            return 0 if not problems else 1
        check = store.verify_audit(ring)
    if args.json:
        print(json.dumps(check.to_json()), flush=True)
    elif check.ok:
        print(
            f"audit chain intact: {check.entries} entries, {check.signed_heads} signed heads "
            f"verified with the keys in {literal(ring.source)}, every record matches it; head "
            f"{check.head_seq} {check.head}"
        )
    else:
        print(f"audit FAILED: {len(check.problems)} problem(s) ({check.entries} entries read)")
        for problem in check.problems:
            print(f"  {literal(problem)}")
    return 0 if check.ok else 1


def _tries(jobs: int, unidentified: int) -> str:
    """The jobs figure, labelled: a hub may take several tries."""
    text = f"{jobs} job{'s' if jobs != 1 else ''} (tries)"
    return text + (f", {unidentified} never identified its hub" if unidentified else "")


def cmd_batches(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        rows = store.batches()
        summaries = {b.id: summarise(store, b.id) for b in rows}
        orphaned = {b.id for b in rows if store.orphaned(b)}
    if args.json:
        doc: list[dict[str, Any]] = [
            {
                "id": b.id,
                "station_id": b.station_id,
                "operator": b.operator,
                "rig": b.rig,
                "catalog": b.catalog,
                "manifest": b.manifest,
                "started_at": utc_text(b.started_at),
                "finished_at": utc_text(b.finished_at),
                "closed_reason": b.closed_reason,
                "run_gone": b.id in orphaned,
                "hubs": summaries[b.id].hubs,
                "counts": summaries[b.id].counts,
                "jobs": summaries[b.id].jobs,
                "job_counts": dict(b.counts),
            }
            for b in rows
        ]
        print(json.dumps(doc), flush=True)
        return 0
    if not rows:
        err.print("no batches recorded", highlight=False)
        return 0
    table = Table(box=None, header_style="bold")
    for name in ("batch", "started (UTC)", "finished", "station", "operator", "manifest", "hubs"):
        table.add_column(name)
    for b in rows:
        s = summaries[b.id]
        hubs = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s.counts.items() if v)
        table.add_row(
            str(b.id),
            utc_text(b.started_at) or "",
            utc_text(b.finished_at)
            or ("open: its run stopped (the next start closes it)" if b.id in orphaned else "open"),
            literal(b.station_id),
            literal(b.operator),
            literal(b.manifest or "-"),
            f"{hubs or 'none'}; {_tries(s.jobs, s.unidentified_jobs)}",
        )
    # Whole ids and times matter more than fitting 80 columns in a log.
    console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


# -- hub history -----------------------------------------------------------------------------


def _job_doc(job: JobRow, events: list[EventRow]) -> dict[str, Any]:
    return {
        "job": job.id,
        "batch": job.batch_id,
        "slot": job.slot,
        "port": job.port,
        "profile": job.profile,
        "state": str(job.state),
        "found_in": job.found_in,
        "version_before": job.version_before,
        "version_after": job.version_after,
        "image_version": job.image_version,
        "image_sha256": job.image_sha256,
        "verify_method": job.verify_method,
        "phase": job.phase,
        "message": job.message,
        "hint": job.hint,
        "error": job.error,
        "overrides": list(job.overrides),
        "notes": list(job.notes),
        "started_at": utc_text(job.started_at),
        "finished_at": utc_text(job.finished_at),
        "seconds": job.seconds,
        "pages_written": job.pages_written,
        "pages_skipped": job.pages_skipped,
        "events": [{"state": str(e.state), "at": utc_text(e.at), **e.detail} for e in events],
    }


def cmd_hub(args: argparse.Namespace, err: Console) -> int:
    with open_store(args.db) as store:
        hub = store.hub(args.eui64)
        history = [(job, store.job_events(job.id)) for job in store.jobs_of_hub(args.eui64)]
    if hub is None and not history:
        err.print(error_line(f"no hub {args.eui64} in {store.url}"))
        return 2
    if args.json:
        doc = {
            "eui64": hub.eui64 if hub else args.eui64,
            "model": hub.model if hub else None,
            "hw_version": hub.hw_version if hub else None,
            "running_version": hub.running_version if hub else None,
            "baseline_version": hub.baseline_version if hub else None,
            "exported_version": hub.exported_version if hub else None,
            "export_id": hub.export_id if hub else None,
            "pending_dsp": hub.pending if hub else False,
            "first_seen": utc_text(hub.first_seen) if hub else None,
            "last_seen": utc_text(hub.last_seen) if hub else None,
            "jobs": [_job_doc(job, events) for job, events in history],
        }
        print(json.dumps(doc), flush=True)
        return 0
    out = console(width=None if sys.stdout.isatty() else 200)
    if hub is not None:
        out.print(
            styled(
                (f"hub {literal(hub.eui64)}", "bold"),
                f"  model {hub.model}  hardware {hub.hw_version}  "
                f"firmware {shown_version(hub.running_version or 'unknown')}  DSP told "
                f"{shown_version(hub.exported_version or '-')}"
                f"{' (update pending)' if hub.pending else ''}  "
                f"first seen {utc_text(hub.first_seen)}  last seen {utc_text(hub.last_seen)}",
            )
        )
    for job, events in history:
        change = f"{shown_version(job.version_before)} -> {shown_version(job.version_after or '-')}"
        where = f" in {job.phase}" if job.phase and str(job.state) != "passed" else ""
        out.print(
            styled(
                ("\n", ""),
                f"job {job.id}  batch {job.batch_id} slot {job.slot}  {utc_text(job.started_at)}  ",
                (literal(f"{job.state}{where}"), "bold"),
                f"  {change}  ({job.profile}, {job.port})",
            )
        )
        if job.message:
            out.print(styled(f"  {job.message}"))
        if job.hint:
            out.print(styled(f"  what to do: {job.hint}"))
        for note in job.notes:
            out.print(styled(f"  note: {note}"))
        if args.events or str(job.state) not in ("passed", "current"):
            for e in events:
                said = e.detail.get("message") or e.detail.get("note") or ""
                out.print(styled(f"  {utc_text(e.at)}  {e.state}" + (f"  {said}" if said else "")))
                exchanges = e.detail.get("exchanges") or []
                if exchanges:
                    out.print("  last exchanges before the failure (-> to the hub, <- from it):")
                    for line in exchanges:
                        out.print(styled(f"    {line}"))
    return 0


# -- parser ----------------------------------------------------------------------------------


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        help="database: a SQLite file path, or a URL (sqlite:///path.db, "
        "postgresql+psycopg://user@host/db); "
        f"default $STATION_DB, else {DATA / 'station.db'}",
    )


def _batch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", required=True, help="batch id, or 'latest'")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report``, ``audit`` and ``batches`` with the station's parser."""
    p = sub.add_parser("report", help="DSP export, consignment reconciliation, JUnit, summary")
    rsub = p.add_subparsers(dest="report_command", required=True, metavar="REPORT")

    q = rsub.add_parser(
        "dsp",
        help="firmware-version update for the DSP: one row per hub whose version changed",
        description="The DSP update the batch's close made: one row per hub whose running "
        "version (read back after a verified write, or found already current) differs from "
        "what the DSP was last told, each hub change in exactly one batch's update: EUI-64, "
        "model, version before and after, image SHA-256, time (UTC), station id and operator, "
        "and the export id and signed audit head. Printing it again gives the same rows. For "
        "a batch still open it prints a preview (and says so). CSV with a header row, or JSON. "
        "With --consignment ID: every hub change of that consignment across every station, "
        "each as exported by its batch, with its export id and station.",
    )
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--batch", help="batch id, or 'latest'")
    which.add_argument("--consignment", help="a consignment loaded with 'station consignment'")
    q.add_argument("--format", choices=["csv", "json"], default="csv")
    q.add_argument("-o", "--output", help="file to write (default: standard output)")
    _db_arg(q)
    q.set_defaults(func=cmd_report_dsp)

    q = rsub.add_parser(
        "consignment",
        help="reconcile the batch's manifest: passed, failed, refused, current, missing, "
        "unexpected",
    )
    _batch_arg(q)
    q.add_argument("--json", action="store_true", help="one JSON object on standard output")
    _db_arg(q)
    q.set_defaults(func=cmd_report_consignment)

    q = rsub.add_parser("junit", help="JUnit XML for CI rigs: one testcase per hub job")
    _batch_arg(q)
    q.add_argument("-o", "--output", required=True, help="file to write")
    _db_arg(q)
    q.set_defaults(func=cmd_report_junit)

    q = rsub.add_parser(
        "summary", help="counts by result, hubs per hour, failures by reason, times"
    )
    _batch_arg(q)
    q.add_argument("--json", action="store_true", help="one JSON object on standard output")
    _db_arg(q)
    q.set_defaults(func=cmd_report_summary)

    p = sub.add_parser("audit", help="the hash-chained audit log")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    q = asub.add_parser(
        "verify",
        help="recompute the audit chain: exit 0 intact, 1 with the first bad entry",
        description="Recompute every audit entry's hash from its contents and the previous "
        "entry's hash, check every signed head with the stations' public keys, and compare "
        "every batch, job, hub and DSP export in the database with its audited record. With "
        "--report FILE, check a report (DSP CSV/JSON, consignment, JUnit, summary) against "
        "the records: its signed head, the chain at that head, and its content. Exit 0 when "
        "everything agrees, 1 listing every problem. docs/records.md says what this does "
        "and does not catch.",
    )
    q.add_argument("--json", action="store_true", help="the result as one JSON object")
    q.add_argument("--report", help="a report file to check against the records")
    q.add_argument(
        "--keys",
        help="folder of the stations' public keys (*.pub); default $STATION_KEYS, else "
        "station-data/keys",
    )
    _db_arg(q)
    q.set_defaults(func=cmd_audit_verify)

    p = sub.add_parser(
        "hub",
        help="one hub's history: every job that reached it, failures with their timeline "
        "and last exchanges",
        description="What the station recorded of a hub across batches: its model, hardware "
        "and last known firmware, then every job that identified it (batch, slot, result, "
        "versions, failure phase, message and what to do). Jobs that did not pass show their "
        "timeline and the last bytes exchanged before the failure. Exit 2 if the database has "
        "no record of the hub.",
    )
    p.add_argument("eui64", help="the hub's EUI-64 (00-DB-12-... or 00DB12...)")
    p.add_argument("--events", action="store_true", help="show every job's timeline")
    p.add_argument("--json", action="store_true", help="one JSON document")
    _db_arg(p)
    p.set_defaults(func=cmd_hub)

    p = sub.add_parser("batches", help="list the recorded batches with their job counts")
    p.add_argument("--json", action="store_true", help="one JSON array on standard output")
    _db_arg(p)
    p.set_defaults(func=cmd_batches)

"""The DSP firmware-version update: defined by hub, exported exactly once.

What the Data Service Provider must learn is which hubs now run another firmware version
than it believes. That is a property of each hub, not of a job: a hub flashed to the target
whose job was then interrupted (the station killed between the write and the record) is
found already current by the next run, and must still be reported. So the ``hubs`` table
keeps, per hub:

- ``baseline_version``: what the DSP held before this station changed the hub: the
  version the consignment manifest lists for it, else the version first read from the hub;
- ``running_version``: the version the hub runs, as last read from it (at identification,
  or read back after a verified write), with the job that read it; unknown (NULL) from the
  moment a job starts writing until a version is read again;
- ``exported_version`` and ``export_id``: what the last export told the DSP, and which
  export carried it.

A hub is **pending** (:func:`is_pending`) when its running version is known and differs from
the version the DSP holds (the exported one, else the baseline) *and* is newer on the
pathway (the catalogue keeps release order and numeric order the same, so a numeric
comparison is the pathway's), unless the job that read it recorded an ``allow-downgrade``
override. A batch's export (:func:`export_batch`, made once, when the batch closes, in the
transaction that closes it) carries every pending hub whose running version was read by one
of the batch's jobs, and marks each hub exported: a hub's change is in exactly one export,
and reprinting an export gives the same rows (:func:`export_of`).

The CSV is RFC 4180 with a header row; every cell that a spreadsheet would take for a
formula (``=``, ``+``, ``-``, ``@``, tab, carriage return first) is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from sqlalchemy import Connection, func, insert, or_, select, update

from station.records.audit import Head, digest
from station.records.schema import (
    batches,
    checked,
    consignment_hubs,
    consignment_items,
    consignments,
    export_items,
    exports,
    hubs,
    jobs,
)

__all__ = [
    "DSP_COLUMNS",
    "DSP_FORMAT",
    "HEAD_COLUMNS",
    "DspRow",
    "ExportRow",
    "Pending",
    "export_batch",
    "export_of",
    "is_pending",
    "items_of",
    "neutralise",
    "pending_rows",
    "render",
]

#: The DSP export's columns, in order (CSV header and JSON keys).
DSP_COLUMNS: Final = (
    "eui64",
    "model",
    "hw_version",
    "consignment_id",
    "version_before",
    "version_after",
    "image_sha256",
    "verify_method",
    "evidence",
    "completed_at",
    "station_id",
    "operator",
)
#: How the running version was known: read back from the hub after a verified write and
#: boot, or found running on it (already current) when a job identified it.
READ_BACK: Final = "read-back-after-boot"
FOUND_RUNNING: Final = "found-running"
#: Columns the CSV adds to every row: the export and the audit head it was made under.
HEAD_COLUMNS: Final = ("export_id", "audit_seq", "audit_hash", "audit_signature")
#: Names the JSON document's shape, so a consumer can refuse one it does not know.
DSP_FORMAT: Final = "chub-station/dsp-firmware-update/2"
#: The override that lets a hub's change be older than what the DSP holds.
DOWNGRADE: Final = "allow-downgrade"
_FORMULA_FIRST: Final = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class DspRow:
    """One hub's change, as the CSP tells the DSP its new firmware version."""

    eui64: str
    model: str
    hw_version: str
    consignment_id: str
    version_before: str
    version_after: str
    image_sha256: str
    verify_method: str
    evidence: str
    completed_at: str
    station_id: str
    operator: str

    def as_dict(self) -> dict[str, str]:
        """The row as ``DSP_COLUMNS`` -> value."""
        return {name: getattr(self, name) for name in DSP_COLUMNS}


@dataclass(frozen=True)
class ExportRow:
    """One export: the batch whose close made it, and when."""

    id: int
    batch_id: int
    station_id: str
    operator: str
    created_at: datetime
    rows: int
    digest: str


def _version_number(text: str | None) -> int | None:
    try:
        return None if text is None else int(text, 16)
    except ValueError:
        return None


def is_pending(
    running: str | None, exported: str | None, baseline: str | None, overrides: str | None
) -> bool:
    """Whether a hub's running version is news to the DSP (see the module docstring)."""
    if running is None:
        return False
    held = exported if exported is not None else baseline
    if held is None:
        return True
    if running.lower() == held.lower():
        return False
    now, before = _version_number(running), _version_number(held)
    if now is not None and before is not None and now > before:
        return True
    return DOWNGRADE in (overrides or "")


def _utc_text(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Pending:
    """A hub change not yet exported: its row, the job that read it and when."""

    row: DspRow
    job_id: int
    at: datetime


def pending_rows(conn: Connection, batch_id: int) -> list[Pending]:
    """The hub changes a close of ``batch_id`` would export now, in the order they were
    read."""
    # This batch's manifest first, else the consignment loaded for every station (the
    # latest that lists the hub), else the latest other batch's manifest.
    own = (
        select(consignment_items.c.consignment_id)
        .where(consignment_items.c.eui64 == hubs.c.eui64)
        .where(consignment_items.c.batch_id == batch_id)
        .limit(1)
        .scalar_subquery()
    )
    loaded = (
        select(consignment_hubs.c.consignment_id)
        .join(consignments)
        .where(consignment_hubs.c.eui64 == hubs.c.eui64)
        .order_by(consignments.c.loaded_at.desc(), consignments.c.consignment_id)
        .limit(1)
        .scalar_subquery()
    )
    other = (
        select(consignment_items.c.consignment_id)
        .where(consignment_items.c.eui64 == hubs.c.eui64)
        .order_by(consignment_items.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    listed = func.coalesce(own, loaded, other)
    query = (
        select(
            hubs.c.eui64,
            hubs.c.model,
            hubs.c.hw_version,
            listed.label("consignment_id"),
            jobs.c.state,
            jobs.c.verify_method,
            hubs.c.baseline_version,
            hubs.c.running_version,
            hubs.c.running_sha256,
            hubs.c.running_at,
            hubs.c.running_job_id,
            hubs.c.exported_version,
            jobs.c.overrides,
            batches.c.station_id,
            batches.c.operator,
        )
        .join(jobs, jobs.c.id == hubs.c.running_job_id)
        .join(batches, batches.c.id == jobs.c.batch_id)
        .where(jobs.c.batch_id == batch_id)
        .where(hubs.c.running_version.is_not(None))
        .where(
            or_(
                hubs.c.exported_version.is_(None),
                hubs.c.exported_version != hubs.c.running_version,
            )
        )
        .order_by(hubs.c.running_at, hubs.c.eui64)
    )
    out = []
    for r in conn.execute(query):
        if not is_pending(r.running_version, r.exported_version, r.baseline_version, r.overrides):
            continue
        before = r.exported_version if r.exported_version is not None else r.baseline_version
        read_back = r.state == "passed"
        row = DspRow(
            eui64=r.eui64,
            model=r.model,
            hw_version="" if r.hw_version is None else str(r.hw_version),
            consignment_id=r.consignment_id or "",
            version_before=before or "",
            version_after=r.running_version,
            image_sha256=r.running_sha256 or "",
            verify_method=(r.verify_method or "") if read_back else "",
            evidence=READ_BACK if read_back else FOUND_RUNNING,
            completed_at=_utc_text(r.running_at),
            station_id=r.station_id,
            operator=r.operator,
        )
        out.append(Pending(row, int(r.running_job_id), r.running_at))
    return out


def export_batch(
    conn: Connection, batch_id: int, *, station_id: str, operator: str, at: datetime
) -> tuple[int, list[str]]:
    """Make ``batch_id``'s export of every pending hub it read; returns the export's id and
    the hubs it marked exported (their rows changed: the caller audits them)."""
    pending = pending_rows(conn, batch_id)
    records = [{**p.row.as_dict(), "job_id": p.job_id} for p in pending]
    export_id = conn.execute(
        insert(exports).values(
            **checked(
                exports,
                {
                    "batch_id": batch_id,
                    "station_id": station_id,
                    "operator": operator,
                    "created_at": at,
                    "rows": len(pending),
                    "digest": digest(records),
                },
            )
        )
    ).inserted_primary_key
    assert export_id is not None and export_id[0] is not None
    new_id = int(export_id[0])
    for p in pending:
        row = p.row
        conn.execute(
            insert(export_items).values(
                **checked(
                    export_items,
                    {
                        "export_id": new_id,
                        "eui64": row.eui64,
                        "model": row.model,
                        "hw_version": int(row.hw_version) if row.hw_version else None,
                        "consignment_id": row.consignment_id or None,
                        "verify_method": row.verify_method or None,
                        "evidence": row.evidence,
                        "version_before": row.version_before or None,
                        "version_after": row.version_after,
                        "image_sha256": row.image_sha256 or None,
                        "completed_at": p.at or at,
                        "job_id": p.job_id,
                        "station_id": row.station_id,
                        "operator": row.operator,
                    },
                )
            )
        )
        conn.execute(
            update(hubs)
            .where(hubs.c.eui64 == row.eui64)
            .values(exported_version=row.version_after, export_id=new_id)
        )
    return new_id, [p.row.eui64 for p in pending]


def export_of(conn: Connection, batch_id: int) -> tuple[ExportRow, list[DspRow]] | None:
    """``batch_id``'s export and its rows, as made (None: the batch has not closed)."""
    found = conn.execute(select(exports).where(exports.c.batch_id == batch_id)).first()
    if found is None:
        return None
    export = ExportRow(
        found.id,
        found.batch_id,
        found.station_id,
        found.operator,
        found.created_at,
        found.rows,
        found.digest,
    )
    items = conn.execute(
        select(export_items)
        .where(export_items.c.export_id == export.id)
        .order_by(export_items.c.id)
    )
    return export, [_item_row(r) for r in items]


def _item_row(r: Any) -> DspRow:
    return DspRow(
        eui64=r.eui64,
        model=r.model,
        hw_version="" if r.hw_version is None else str(r.hw_version),
        consignment_id=r.consignment_id or "",
        version_before=r.version_before or "",
        version_after=r.version_after,
        image_sha256=r.image_sha256 or "",
        verify_method=r.verify_method or "",
        evidence=r.evidence,
        completed_at=_utc_text(r.completed_at),
        station_id=r.station_id,
        operator=r.operator,
    )


def items_of(conn: Connection, where: Any) -> list[tuple[int, DspRow]]:
    """Exported hub changes across every export, with their export ids, in export order;
    ``where`` filters ``export_items`` joined with the job that read each change (``jobs``).
    """
    query = (
        select(export_items)
        .join(jobs, jobs.c.id == export_items.c.job_id)
        .where(where)
        .order_by(export_items.c.export_id, export_items.c.id)
    )
    return [(int(r.export_id), _item_row(r)) for r in conn.execute(query)]


def neutralise(cell: str) -> str:
    """A CSV cell a spreadsheet shows as text: formula-looking text gets a leading ``'``."""
    return "'" + cell if cell.startswith(_FORMULA_FIRST) else cell


def render(
    fmt: Literal["csv", "json"],
    rows: list[DspRow],
    *,
    batch: int,
    station_id: str,
    operator: str,
    export: ExportRow | None,
    head: Head,
) -> str:
    """The DSP update as CSV (RFC 4180, formula prefixes neutralised) or JSON text.

    ``export`` None: the batch is open and this is a preview of what its close would export
    (the JSON says ``"final": false``; the CSV has an empty ``export_id``).
    """
    if fmt == "csv":
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow((*DSP_COLUMNS, *HEAD_COLUMNS))
        tail = (
            "" if export is None else str(export.id),
            str(head.seq),
            head.hash,
            head.signature or "",
        )
        for row in rows:
            writer.writerow([neutralise(v) for v in (*row.as_dict().values(), *tail)])
        return buf.getvalue()
    if fmt == "json":
        doc: dict[str, Any] = {
            "format": DSP_FORMAT,
            "batch": batch,
            "export_id": None if export is None else export.id,
            "final": export is not None,
            "station_id": station_id,
            "operator": operator,
            "generated_at": None if export is None else _utc_text(export.created_at),
            "count": len(rows),
            "hubs": [r.as_dict() for r in rows],
            "audit": head.to_json(),
        }
        return json.dumps(doc, indent=2) + "\n"
    raise ValueError(f"unknown DSP export format {fmt!r} (csv or json)")

"""Consignments across stations: where each listed hub is, and its one DSP update.

A consignment is loaded once on the database (``station consignment load``) and served by
every station's batches until it is closed. Its status is computed from the records alone,
across every station, from the jobs on its hubs started while it was open:

- ``in_flight``: a job has the hub now (where: station, slot, state, since);
- otherwise the hub's latest job decides (a pass then found current stays ``passed``), not
  counting jobs refused because the hub was in flight elsewhere (they say nothing of the
  hub) unless there is nothing else: ``passed``, ``current`` (found already running its
  target), ``failed`` (failed or interrupted), ``refused``;
- ``missing``: no station has seen it.

The DSP update is per hub, made once by the close of the batch whose job read the change
(:mod:`station.records.dsp`), so across stations each hub's change is in exactly one export,
with the station that did it; the consignment's update gathers those rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from drivers.errors import ConfigError
from station.events import JobState
from station.records.audit import Head
from station.records.dsp import DSP_COLUMNS, DspRow, neutralise
from station.records.errors import HUB_IN_FLIGHT
from station.records.manifest import Manifest
from station.records.reports import utc_text
from station.records.store import ConsignmentJob, ConsignmentRow, Store

__all__ = [
    "CONSIGNMENT_DSP_FORMAT",
    "RESULTS",
    "STATUS_FORMAT",
    "ConsignmentStatus",
    "HubStatus",
    "check_manifest",
    "dsp_text",
    "status",
]

#: Name each JSON document's shape, so a consumer can refuse one it does not know.
STATUS_FORMAT: Final = "chub-station/consignment-status/1"
CONSIGNMENT_DSP_FORMAT: Final = "chub-station/dsp-firmware-update-consignment/1"
#: Where a listed hub can be, in the order reports show them.
RESULTS: Final = ("passed", "current", "failed", "refused", "in_flight", "missing")
_RESULT: Final = {
    JobState.PASSED: "passed",
    JobState.SKIPPED: "current",
    JobState.FAILED: "failed",
    JobState.INTERRUPTED: "failed",
    JobState.REFUSED: "refused",
}


def check_manifest(manifest: Manifest, consignment_id: str, where: str) -> None:
    """Refuse a manifest that lists a hub of another consignment than ``consignment_id``
    (``--id`` confirms what the file holds; a file of many consignments is split first).

    Raises:
        ConfigError: ``<file>:<line>: ...``, or no hubs at all.
    """
    if not consignment_id.strip():
        raise ConfigError("--id takes a consignment id, not an empty text")
    for item in manifest.items:
        if item.consignment_id != consignment_id:
            raise ConfigError(
                f"{where}:{item.line}: lists consignment {item.consignment_id!r}, not "
                f"{consignment_id!r}: load one consignment per file"
            )


@dataclass(frozen=True)
class HubStatus:
    """One listed hub: where it is, and what its deciding job did.

    ``station_id``, ``slot`` and ``job`` name the deciding job (for ``in_flight``: the job
    that has the hub now, ``since`` its start); all None for ``missing``.
    """

    eui64: str
    result: str
    expected_model: str | None = None
    model: str | None = None
    station_id: str | None = None
    slot: int | None = None
    job: int | None = None
    state: str | None = None
    since: str | None = None
    attempts: int = 0
    phase: str | None = None
    reason: str | None = None
    version_before: str | None = None
    version_after: str | None = None
    at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Every key present, None as null."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ConsignmentStatus:
    """A consignment's progress across every station (see the module docstring)."""

    consignment: ConsignmentRow
    hubs: list[HubStatus]
    exported: int
    waiting: list[str]
    head: Head
    by_station: dict[str, dict[str, int]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many listed hubs in each result."""
        out = dict.fromkeys(RESULTS, 0)
        for hub in self.hubs:
            out[hub.result] += 1
        return out

    @property
    def complete(self) -> bool:
        """Every listed hub passed or is already current."""
        return all(h.result in ("passed", "current") for h in self.hubs)

    def to_json(self) -> dict[str, Any]:
        """The status as one JSON-ready object (docs/records.md)."""
        row = self.consignment
        return {
            "format": STATUS_FORMAT,
            "consignment": row.consignment_id,
            "state": "open" if row.open else "closed",
            "manifest": row.manifest,
            "manifest_sha256": row.manifest_sha256,
            "loaded_at": utc_text(row.loaded_at),
            "loaded_by": row.loaded_by,
            "closed_at": utc_text(row.closed_at),
            "closed_by": row.closed_by,
            "expected": len(self.hubs),
            "complete": self.complete,
            "counts": self.counts(),
            "in_flight": [h.to_json() for h in self.hubs if h.result == "in_flight"],
            "stations": self.by_station,
            "dsp": {"exported": self.exported, "waiting": self.waiting},
            "hubs": [h.to_json() for h in self.hubs],
            "audit": self.head.to_json(),
        }


def _hub_status(item_eui: str, expected: str | None, tries: Sequence[ConsignmentJob]) -> HubStatus:
    if not tries:
        return HubStatus(item_eui, "missing", expected_model=expected)
    live = [t for t in tries if not t.job.state.final]
    if live:
        t = live[-1]
        return HubStatus(
            item_eui,
            "in_flight",
            expected_model=expected,
            model=t.job.profile,
            station_id=t.station_id,
            slot=t.job.slot,
            job=t.job.id,
            state=str(t.job.state),
            since=utc_text(t.job.started_at),
            attempts=len(tries),
            version_before=tries[0].job.version_before,
        )
    speaking = [t for t in tries if t.job.error != HUB_IN_FLIGHT] or list(tries)
    decisive = speaking[-1]
    if decisive.job.state is JobState.SKIPPED:
        passes = [t for t in speaking if t.job.state is JobState.PASSED]
        decisive = passes[-1] if passes else decisive
    job = decisive.job
    return HubStatus(
        item_eui,
        _RESULT.get(job.state, "failed"),
        expected_model=expected,
        model=job.profile,
        station_id=decisive.station_id,
        slot=job.slot,
        job=job.id,
        state=str(job.state),
        attempts=len(tries),
        phase=job.phase,
        reason=job.message,
        version_before=speaking[0].job.version_before,
        version_after=job.version_after
        or (job.version_before if job.state is JobState.SKIPPED else None),
        at=utc_text(job.finished_at),
    )


def status(store: Store, consignment_id: str) -> ConsignmentStatus:
    """Where every hub of the consignment is, across every station.

    Raises:
        UnknownRecord: no such consignment.
    """
    row = store.consignment_record(consignment_id)
    items = store.consignment_hubs(consignment_id)
    tries: dict[str, list[ConsignmentJob]] = {}
    for cj in store.consignment_jobs(consignment_id):
        if cj.job.eui64:
            tries.setdefault(cj.job.eui64, []).append(cj)
    hubs = [_hub_status(i.eui64, i.model, tries.get(i.eui64, [])) for i in items]
    by_station: dict[str, dict[str, int]] = {}
    for hub in hubs:
        if hub.station_id is not None:
            counts = by_station.setdefault(hub.station_id, dict.fromkeys(RESULTS[:-1], 0))
            counts[hub.result] += 1
    exported, waiting = store.consignment_exports(consignment_id)
    return ConsignmentStatus(
        row, hubs, len(exported), waiting, store.head(), dict(sorted(by_station.items()))
    )


def dsp_text(store: Store, consignment_id: str, fmt: Literal["csv", "json"]) -> tuple[str, bool]:
    """The consignment's DSP update across every station, as CSV or JSON text, and whether
    it is final (closed, nothing in flight or waiting for a batch to close).

    Each row is one hub change, exported once by the batch whose job read it, with that
    export's id and the station that did it (``station_id``); the audit head is the chain's
    head now (each export's own signed head is in its batch's report).
    """
    row = store.consignment_record(consignment_id)
    exported, waiting = store.consignment_exports(consignment_id)
    in_flight = sum(1 for h in status(store, consignment_id).hubs if h.result == "in_flight")
    final = not row.open and not waiting and not in_flight
    head = store.head()
    if fmt == "csv":
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow((*DSP_COLUMNS, "export_id"))
        for export_id, r in exported:
            writer.writerow([neutralise(v) for v in (*r.as_dict().values(), str(export_id))])
        return buf.getvalue(), final
    doc = {
        "format": CONSIGNMENT_DSP_FORMAT,
        "consignment": consignment_id,
        "state": "open" if row.open else "closed",
        "final": final,
        "count": len(exported),
        "waiting": waiting,
        "hubs": [_with_export(r, export_id) for export_id, r in exported],
        "audit": head.to_json(),
    }
    return json.dumps(doc, indent=2) + "\n", final


def _with_export(row: DspRow, export_id: int) -> dict[str, Any]:
    out: dict[str, Any] = dict(row.as_dict())
    out["export_id"] = export_id
    return out

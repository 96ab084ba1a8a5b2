"""Reports from the station's records: consignment reconciliation, JUnit, summary, and the
files of every report of a batch (the DSP update itself is :mod:`station.records.dsp`).

Every report is computed from the store alone (never from a live run), so it can be made
again at any time, on any machine that reaches the database, and says the same thing byte
for byte once its batch is closed: ``station audit verify --report FILE`` makes it again and
compares. Each carries the audit head it was made under (:class:`~station.records.audit.Head`:
signed by the station when its batch closed; for an open batch, the current head, unsigned).

Which job speaks for a hub: a hub may be run more than once in a batch (re-seated after a
failure). Its *latest* job decides its result, except that a hub that passed and was then
found already current (``SKIPPED``) still counts as passed: the skip confirms the pass.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from firmware_images.descriptor import dotted_text
from station.events import JobState
from station.records.audit import Head
from station.records.manifest import ManifestItem
from station.records.store import BatchRow, JobRow, Store

__all__ = [
    "CONSIGNMENT_FORMAT",
    "HUB_RESULTS",
    "SUMMARY_FORMAT",
    "BatchSummary",
    "HubEntry",
    "Reconciliation",
    "junit_xml",
    "reason_class",
    "reconcile",
    "summarise",
    "write_reports",
]

#: Name each JSON document's shape, so a consumer can refuse one it does not know.
CONSIGNMENT_FORMAT: Final = "chub-station/consignment/1"
SUMMARY_FORMAT: Final = "chub-station/batch-summary/1"


def utc_text(at: datetime | None) -> str | None:
    """``2024-05-01T12:34:56Z`` (UTC, whole seconds), or None."""
    return None if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- which job speaks for each hub ----------------------------------------------------------


@dataclass(frozen=True)
class _HubJobs:
    eui64: str
    jobs: tuple[JobRow, ...]  # in start order

    @property
    def decisive(self) -> JobRow:
        latest = self.jobs[-1]
        if latest.state is JobState.SKIPPED:
            passed = [j for j in self.jobs if j.state is JobState.PASSED]
            if passed:
                return passed[-1]
        return latest

    @property
    def version_before(self) -> str | None:
        """What the hub ran before the batch wrote to it: what its first try read (a later
        try may find the flash its first try erased)."""
        return self.jobs[0].version_before

    @property
    def outcome(self) -> str:
        """How the hub ended, as the summary counts it (see :data:`HUB_RESULTS`)."""
        return _HUB_RESULT.get(self.decisive.state, "in_progress")


#: How a hub can end, in the order reports show them: its decisive job's state, named.
HUB_RESULTS: Final = ("passed", "failed", "refused", "current", "interrupted", "in_progress")
_HUB_RESULT: Final = {
    JobState.PASSED: "passed",
    JobState.FAILED: "failed",
    JobState.REFUSED: "refused",
    JobState.SKIPPED: "current",
    JobState.INTERRUPTED: "interrupted",
}


def _by_hub(jobs: Sequence[JobRow]) -> tuple[dict[str, _HubJobs], list[JobRow]]:
    """Jobs grouped by EUI-64 (in first-seen order), and the jobs that never read one."""
    groups: dict[str, list[JobRow]] = {}
    unidentified: list[JobRow] = []
    for job in sorted(jobs, key=lambda j: j.id):
        if job.eui64:
            groups.setdefault(job.eui64, []).append(job)
        else:
            unidentified.append(job)
    return {eui: _HubJobs(eui, tuple(js)) for eui, js in groups.items()}, unidentified


# -- reconciliation ------------------------------------------------------------------------


@dataclass(frozen=True)
class HubEntry:
    """One hub in a reconciliation list.

    Attributes:
        eui64: the hub.
        consignment_id: the consignment that listed it (None: not listed).
        expected_model: the model the manifest expects (None: not stated).
        model: the model (profile) the station identified it as (None: never seen).
        result: the state of its deciding job (None: never seen).
        job: the deciding job's id (None: never seen).
        attempts: how many jobs the batch ran on it.
        phase: where it failed or was refused.
        reason: why (the job's message).
        version_before: what it ran before.
        version_after: what it runs now (read back after boot).
        image_sha256: the image written (passed hubs).
    """

    eui64: str
    consignment_id: str | None = None
    expected_model: str | None = None
    model: str | None = None
    result: str | None = None
    job: int | None = None
    attempts: int = 0
    phase: str | None = None
    reason: str | None = None
    version_before: str | None = None
    version_after: str | None = None
    image_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (every key present, None as null)."""
        return dict(self.__dict__)


#: The reconciliation's lists, in the order reports show them.
CATEGORIES: Final = (
    "passed",
    "failed",
    "refused",
    "already_current",
    "in_progress",
    "missing",
    "unexpected",
)


@dataclass(frozen=True)
class Reconciliation:
    """A batch's consignment manifest against what the bench did.

    Listed hubs fall in exactly one of ``passed``, ``failed`` (failed or interrupted, with
    the reason), ``refused``, ``already_current``, ``in_progress`` (still running) and
    ``missing`` (listed, never seen). ``unexpected`` holds hubs seen but not listed, with
    their result. Without a manifest every seen hub is classed by its result and nothing is
    missing or unexpected. ``unidentified_jobs`` are jobs that ended before the hub's EUI-64
    was read (they cannot be matched to the manifest); ``warnings`` name hubs identified as
    another model than the manifest expects.
    """

    batch: int
    station_id: str
    manifest: str | None
    manifest_sha256: str | None
    listed: int
    seen: int
    lists: dict[str, list[HubEntry]]
    unidentified_jobs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    head: Head | None = None

    @property
    def complete(self) -> bool:
        """Every listed hub passed or is already current, and nothing is unexpected."""
        bad = ("failed", "refused", "in_progress", "missing", "unexpected")
        return not any(self.lists[c] for c in bad) and not self.unidentified_jobs

    def counts(self) -> dict[str, int]:
        """How many hubs in each list."""
        out = {c: len(self.lists[c]) for c in CATEGORIES}
        out["unidentified_jobs"] = len(self.unidentified_jobs)
        return out

    def to_json(self) -> dict[str, Any]:
        """The reconciliation as one JSON-ready object (see docs/records.md)."""
        doc: dict[str, Any] = {
            "format": CONSIGNMENT_FORMAT,
            "batch": self.batch,
            "station_id": self.station_id,
            "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256,
            "listed": self.listed,
            "seen": self.seen,
            "complete": self.complete,
            "counts": self.counts(),
        }
        for c in CATEGORIES:
            doc[c] = [e.to_json() for e in self.lists[c]]
        doc["unidentified_jobs"] = self.unidentified_jobs
        doc["warnings"] = self.warnings
        doc["audit"] = None if self.head is None else self.head.to_json()
        return doc


_CATEGORY_OF_STATE: Final = {
    JobState.PASSED: "passed",
    JobState.FAILED: "failed",
    JobState.INTERRUPTED: "failed",
    JobState.REFUSED: "refused",
    JobState.SKIPPED: "already_current",
}


def _entry(group: _HubJobs, item: ManifestItem | None) -> tuple[str, HubEntry]:
    job = group.decisive
    category = _CATEGORY_OF_STATE.get(job.state, "in_progress")
    failed = job.state in (JobState.FAILED, JobState.INTERRUPTED, JobState.REFUSED)
    return category, HubEntry(
        eui64=group.eui64,
        consignment_id=None if item is None else item.consignment_id,
        expected_model=None if item is None else item.model,
        model=job.profile,
        result=str(job.state),
        job=job.id,
        attempts=len(group.jobs),
        phase=job.phase if failed else None,
        reason=(job.message or None) if failed else None,
        version_before=group.version_before,
        version_after=job.version_after,
        image_sha256=job.image_sha256 if job.state is JobState.PASSED else None,
    )


def reconcile(store: Store, batch_id: int) -> Reconciliation:
    """Reconcile the batch's consignment manifest against its jobs."""
    batch = store.batch(batch_id)
    items = store.consignment(batch_id)
    hubs, unidentified = _by_hub(store.jobs(batch_id))
    lists: dict[str, list[HubEntry]] = {c: [] for c in CATEGORIES}
    warnings: list[str] = []
    listed = {item.eui64: item for item in items}
    for item in items:
        group = hubs.get(item.eui64)
        if group is None:
            lists["missing"].append(
                HubEntry(item.eui64, item.consignment_id, item.model, attempts=0)
            )
            continue
        category, entry = _entry(group, item)
        lists[category].append(entry)
        if item.model and entry.model and item.model != entry.model:
            warnings.append(
                f"{item.eui64}: the manifest expects model {item.model}, the station "
                f"identified it as {entry.model}"
            )
    for eui, group in hubs.items():
        if eui in listed:
            continue
        category, entry = _entry(group, None)
        lists["unexpected" if items else category].append(entry)
    return Reconciliation(
        batch=batch.id,
        station_id=batch.station_id,
        manifest=batch.manifest,
        manifest_sha256=batch.manifest_sha256,
        listed=len(items),
        seen=len(hubs),
        lists=lists,
        unidentified_jobs=[
            {
                "job": j.id,
                "slot": j.slot,
                "port": j.port,
                "result": str(j.state),
                "phase": j.phase,
                "reason": j.message or None,
            }
            for j in unidentified
        ],
        warnings=warnings,
        head=store.report_head(batch_id),
    )


# -- JUnit XML -----------------------------------------------------------------------------

# XML 1.0 cannot hold most control characters, and a hub's garbled console text may carry
# them: drop them rather than write a file a CI server refuses.
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text: object) -> str:
    return _XML_BAD.sub("", str(text))


def _job_seconds(job: JobRow) -> float:
    if job.seconds is not None:
        return job.seconds
    if job.finished_at is not None:
        return (job.finished_at - job.started_at).total_seconds()
    return 0.0


def junit_xml(store: Store, batch_id: int) -> str:
    """The batch as JUnit XML: one ``testcase`` per hub, and one per job that never
    identified its hub (it cannot be matched to one).

    A hub's case is decided by its deciding job (see the module docstring): passed hubs pass;
    hubs found already current are ``skipped``; failed and refused hubs carry a ``failure``
    whose type is the phase and whose message is the reason; interrupted or unfinished hubs
    carry an ``error``. Every try (job) of the hub is listed in its ``system-out``.
    """
    batch = store.batch(batch_id)
    hubs, unidentified = _by_hub(store.jobs(batch_id))
    cases: list[tuple[JobRow, str, _HubJobs | None]] = [
        (g.decisive, g.eui64, g) for g in hubs.values()
    ] + [(j, f"unidentified hub (job {j.id}, {j.port})", None) for j in unidentified]
    cases.sort(key=lambda c: c[0].id if c[2] is None else c[2].jobs[0].id)
    counts = Counter(job.state for job, _, _ in cases)
    failures = counts[JobState.FAILED] + counts[JobState.REFUSED]
    skipped = counts[JobState.SKIPPED]
    errors = len(cases) - failures - skipped - counts[JobState.PASSED]
    total = sum(_job_seconds(j) for g in hubs.values() for j in g.jobs)
    total += sum(_job_seconds(j) for j in unidentified)
    attrs = {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{total:.3f}",
    }
    root = ET.Element("testsuites", {"name": f"station {batch.station_id}", **attrs})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": f"batch {batch.id}",
            "timestamp": utc_text(batch.started_at) or "",
            "hostname": _x(batch.station_id),
            **attrs,
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("station_id", batch.station_id),
        ("operator", batch.operator),
        ("rig", batch.rig),
        ("catalog", batch.catalog),
        ("manifest", batch.manifest or ""),
    ):
        ET.SubElement(props, "property", {"name": name, "value": _x(value)})
    for name, value in _head_properties(store.report_head(batch_id)):
        ET.SubElement(props, "property", {"name": name, "value": value})
    for job, name, group in cases:
        tries = group.jobs if group is not None else (job,)
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"batch{batch.id}.slot{job.slot:02d}",
                "name": _x(name),
                "time": f"{sum(_job_seconds(j) for j in tries):.3f}",
            },
        )
        before = group.version_before if group is not None else job.version_before
        phase = job.phase or "unknown"
        reason = job.message or str(job.state)
        body = "\n".join(
            line
            for line in (
                f"phase: {phase}",
                f"reason: {reason}",
                f"what to do: {job.hint}" if job.hint else "",
                f"version before: {dotted_text(before)}" if before else "",
                f"image: {job.image_path} sha256 {job.image_sha256}" if job.image_path else "",
            )
            if line
        )
        if job.state in (JobState.FAILED, JobState.REFUSED):
            el = ET.SubElement(
                case, "failure", {"type": _x(f"{job.state}:{phase}"), "message": _x(reason)}
            )
            el.text = _x(body)
        elif job.state is JobState.SKIPPED:
            ET.SubElement(case, "skipped", {"message": _x(reason)})
        elif job.state is not JobState.PASSED:
            why = reason if job.state is JobState.INTERRUPTED else f"not finished ({job.state})"
            el = ET.SubElement(case, "error", {"type": _x(str(job.state)), "message": _x(why)})
            el.text = _x(body)
        lines = []
        if job.state is JobState.PASSED:
            lines.append(
                f"{dotted_text(before or 'blank')} -> {dotted_text(job.version_after)}, "
                f"verified by {job.verify_method}, "
                f"image sha256 {job.image_sha256}"
            )
        if len(tries) > 1:
            lines += [_try_line(n, len(tries), t) for n, t in enumerate(tries, 1)]
        if lines:
            ET.SubElement(case, "system-out").text = _x("\n".join(lines))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _try_line(n: int, of: int, job: JobRow) -> str:
    """One try of a hub, for its testcase's output."""
    where = f" in {job.phase}" if job.phase and job.state is not JobState.PASSED else ""
    said = f": {job.message}" if job.message and job.state is not JobState.PASSED else ""
    return f"try {n} of {of}: {job.state}{where} (job {job.id}, {job.port}){said}"


def _head_properties(head: Head) -> list[tuple[str, str]]:
    """The audit head as JUnit properties (``audit_*``)."""
    return [
        ("audit_seq", str(head.seq)),
        ("audit_hash", head.hash),
        ("audit_station", head.station_id or ""),
        ("audit_key_id", head.key_id or ""),
        ("audit_signature", head.signature or ""),
    ]


# -- summary -------------------------------------------------------------------------------

_EUI = re.compile(r"\b[0-9A-Fa-f]{2}(?:[-:][0-9A-Fa-f]{2}){7}\b")
_HEX = re.compile(r"\b0x[0-9A-Fa-f]+\b")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


def reason_class(phase: str | None, message: str | None) -> str:
    """A failure's reason with its particulars (addresses, counts, EUI-64s) blanked.

    ``write block 37 at 0x08009400: NACK after 5 tries`` and ``write block 12 at
    0x08003000: NACK after 5 tries`` are one reason: ``write: write block N at 0x…: NACK
    after N tries``.
    """
    text = (message or "no reason recorded").strip().splitlines()[0]
    text = _EUI.sub("\x00", text)  # (a placeholder the number rule cannot touch)
    text = _HEX.sub("0x…", text)
    text = _NUMBER.sub("N", text).replace("\x00", "EUI-64")
    return f"{phase or 'unknown'}: {text}"


@dataclass(frozen=True)
class BatchSummary:
    """Counts, throughput and failure reasons of a batch.

    Attributes:
        hubs: distinct hubs identified.
        counts: hubs by how each ended (:data:`HUB_RESULTS`: its deciding job's state).
        jobs: every job (try) the batch ran, a hub's retries and jobs that never
            identified their hub included.
        job_counts: jobs by state name (``running`` for every live state).
        unidentified_jobs: jobs that ended before their hub's EUI-64 was read.
        wall_seconds: first job started to last job finished (None: none finished).
        hubs_per_hour: passed hubs per hour of ``wall_seconds``.
        total_seconds: the sum of every job's own time.
        average_seconds: the mean time of a finished job.
        average_passed_seconds: the mean time of a passed job.
        failures: failed and interrupted jobs by reason class, most frequent first.
        refusals: refused jobs by reason class.
    """

    batch: int
    station_id: str
    operator: str
    started_at: str | None
    finished_at: str | None
    hubs: int
    counts: dict[str, int]
    jobs: int
    job_counts: dict[str, int]
    unidentified_jobs: int
    wall_seconds: float | None
    hubs_per_hour: float | None
    total_seconds: float
    average_seconds: float | None
    average_passed_seconds: float | None
    bytes_written: int
    failures: list[dict[str, Any]]
    refusals: list[dict[str, Any]]
    head: Head | None = None

    def to_json(self) -> dict[str, Any]:
        """The summary as one JSON-ready object (see docs/records.md)."""
        out = {"format": SUMMARY_FORMAT, **{k: v for k, v in self.__dict__.items() if k != "head"}}
        out["audit"] = None if self.head is None else self.head.to_json()
        return out


def _by_reason(jobs: Sequence[JobRow]) -> list[dict[str, Any]]:
    groups: dict[str, list[int]] = {}
    for job in jobs:
        groups.setdefault(reason_class(job.phase, job.message), []).append(job.id)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [{"reason": r, "count": len(ids), "jobs": ids} for r, ids in ranked]


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def summarise(store: Store, batch_id: int) -> BatchSummary:
    """Counts by result, hubs per hour, failures by reason, total and average time."""
    batch: BatchRow = store.batch(batch_id)
    jobs = store.jobs(batch_id)
    job_counts = {
        s: 0 for s in ("passed", "failed", "refused", "skipped", "interrupted", "running")
    }
    for job in jobs:
        job_counts[str(job.state) if job.state.final else "running"] += 1
    finished = [j for j in jobs if j.state.final and j.finished_at is not None]
    wall = None
    if finished:
        start = min(j.started_at for j in jobs)
        end = max(j.finished_at for j in finished if j.finished_at is not None)
        wall = max((end - start).total_seconds(), 0.0)
    hubs, unidentified = _by_hub(jobs)
    counts = {name: 0 for name in HUB_RESULTS}
    for group in hubs.values():
        counts[group.outcome] += 1
    passed_hubs = counts["passed"]
    return BatchSummary(
        batch=batch.id,
        station_id=batch.station_id,
        operator=batch.operator,
        started_at=utc_text(batch.started_at),
        finished_at=utc_text(batch.finished_at),
        hubs=len(hubs),
        counts=counts,
        jobs=len(jobs),
        job_counts=job_counts,
        unidentified_jobs=len(unidentified),
        wall_seconds=None if wall is None else round(wall, 3),
        hubs_per_hour=round(passed_hubs * 3600 / wall, 1) if wall else None,
        total_seconds=round(sum(_job_seconds(j) for j in jobs), 3),
        average_seconds=_mean([_job_seconds(j) for j in finished]),
        average_passed_seconds=_mean(
            [_job_seconds(j) for j in finished if j.state is JobState.PASSED]
        ),
        bytes_written=sum(j.bytes_written for j in jobs),
        failures=_by_reason(
            [j for j in jobs if j.state in (JobState.FAILED, JobState.INTERRUPTED)]
        ),
        refusals=_by_reason([j for j in jobs if j.state is JobState.REFUSED]),
        head=store.report_head(batch_id),
    )


# -- files ---------------------------------------------------------------------------------


def write_text_atomic(target: Path, text: str) -> None:
    """Write a report whole or not at all (temporary file in the same folder, then rename),
    so a reader never sees half a DSP export.

    Raises:
        OSError: the folder cannot be made or written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Reports are meant to be shared: created 0666 less the user's umask (mkstemp's 0600
    # would hide them from everyone else); the name is random, and never an existing file.
    tmp = str(target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(store: Store, batch_id: int, folder: str | Path) -> dict[str, Path]:
    """Write every report of a batch into ``folder``; returns report name -> file.

    ``dsp.csv`` and ``dsp.json`` (the DSP firmware-version update), ``consignment.json``
    (the reconciliation), ``junit.xml`` and ``summary.json``: the documents of ``station
    report dsp|consignment|junit|summary --batch N``, each written whole or not at all.

    Raises:
        OSError: the folder cannot be made or written.
    """
    root = Path(folder)
    texts = {
        "dsp-csv": ("dsp.csv", store.dsp_text(batch_id, "csv")),
        "dsp-json": ("dsp.json", store.dsp_text(batch_id, "json")),
        "consignment": (
            "consignment.json",
            json.dumps(reconcile(store, batch_id).to_json(), indent=2) + "\n",
        ),
        "junit": ("junit.xml", junit_xml(store, batch_id)),
        "summary": (
            "summary.json",
            json.dumps(summarise(store, batch_id).to_json(), indent=2) + "\n",
        ),
    }
    written: dict[str, Path] = {}
    for name, (file_name, text) in texts.items():
        write_text_atomic(root / file_name, text)
        written[name] = root / file_name
    return written

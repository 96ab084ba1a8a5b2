"""The station's durable records: batches, consignments, hubs, jobs, exports and audit.

SQLAlchemy Core over SQLite by default (one file in the station's data folder, WAL journal,
``synchronous=FULL``, foreign keys on) or PostgreSQL by URL for a warehouse
(``postgresql+psycopg://user@host/db``). Queries use only portable SQL; every value is held
to its column's limit before it is written, the same on both (:func:`schema.checked`).

**Durable before acted on.** Every public write is one committed transaction: when a call
returns, what it recorded survives a ``kill -9`` (and, with ``synchronous=FULL`` /
PostgreSQL's synchronous commit, a power cut). The controller records each state *before*
the step it names: the identity read from a hub (``identified``: EUI-64, hardware and
running version) before anything is planned or written, the image chosen (``planned``)
before the erase, ``erasing`` before the first erase command. A call that raises recorded
nothing: its transaction rolled back whole.

**Ownership.** A process writes only under its station's lease (:meth:`Store.acquire_lease`,
:mod:`station.records.leases`): every batch and job names the lease it was opened under,
and only that lease's holder may record their states and end them. Jobs and batches whose
lease is gone (the process killed, or silent past its time to live on another host) are
ended by whoever notices first, once (:meth:`Store.recover`).

**Records match hubs.** The ``hubs`` table keeps each hub's running version as last read
from it and the version last exported to the DSP; the DSP update is made from those, per
hub, exactly once (:mod:`station.records.dsp`). A pass needs its evidence
(:mod:`station.records.pass_rule`); an outcome without it is recorded failed and audited.

**Audit.** Every write of a batch, a job's final record, a hub or an export appends a
snapshot of the row to the hash chain, and a batch's close appends the chain's head signed
with the station's key (:mod:`station.records.audit`).

Thread safety: one :class:`Store` is shared by every slot thread; each call takes its own
pooled connection, and writes are serialised within the process (SQLite allows one writer
at a time anyway). :meth:`Store.group` lets one thread (the controller's recorder) commit
many writes in one transaction, each in its own savepoint: one commit and one fsync for
all. Writers in other processes are serialised by the database: SQLite write transactions
start with ``BEGIN IMMEDIATE``; on PostgreSQL a lost race for a key is retried.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    make_url,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from drivers.errors import ConfigError
from station.events import CHAIN, JobState, legal
from station.outcome import FlashOutcome, Result
from station.records import audit as chain
from station.records import dsp, leases, migrations
from station.records.audit import AuditCheck, AuditEntry, Head
from station.records.errors import (
    HUB_IN_FLIGHT,
    BatchFinished,
    HubInFlight,
    IllegalTransition,
    LeaseLost,
    StoreError,
    UnknownRecord,
)
from station.records.keys import KeyRing, StationKey
from station.records.leases import Lease
from station.records.manifest import Manifest, ManifestItem, normalise_eui64
from station.records.pass_rule import pass_evidence_problem
from station.records.schema import (
    IN_FLIGHT_INDEX,
    SCHEMA_VERSION,
    audit,
    batches,
    checked,
    consignment_hubs,
    consignment_items,
    consignments,
    export_items,
    exports,
    hubs,
    job_events,
    jobs,
    station_leases,
    station_meta,
)

__all__ = [
    "HUB_IN_FLIGHT",
    "BatchClosed",
    "BatchRow",
    "ConsignmentJob",
    "ConsignmentRow",
    "EventRow",
    "HubRow",
    "JobRow",
    "Recovery",
    "SlotView",
    "StationView",
    "Store",
    "default_url",
    "open_engine",
]

#: Attempts of one write when another process wins a race for a unique key (PostgreSQL).
_WRITE_ATTEMPTS: Final = 5
#: PostgreSQL SQLSTATEs of a transaction that lost a race: deadlock, serialisation failure.
_RETRY_STATES: Final = frozenset({"40P01", "40001"})
#: The phase a job was in when it was interrupted in a state (for reports).
_PHASE_OF_STATE: Final = {
    JobState.DETECTED: "identify",
    JobState.IDENTIFIED: "plan",
    JobState.PLANNED: "plan",
    JobState.ERASING: "erase",
    JobState.WRITING: "write",
    JobState.VERIFYING: "verify",
    JobState.BOOTING: "boot",
}
#: What a state's detail may set on the job row (detail key -> column): what was read from
#: the hub and what was decided about it, recorded with the state that follows the reading.
_STATE_FIELDS: Final = {
    "eui64": "eui64",
    "hw_version": "hw_version",
    "found_in": "found_in",
    "version_before": "version_before",
    "target_version": "target_version",
    "image_version": "image_version",
    "image": "image_path",
    "image_sha256": "image_sha256",
    "signature": "signature",
    "signer": "signer",
    "plan": "plan",
    "behind": "behind",
    "overrides": "overrides",
}
_LIVE: Final = [str(s) for s in CHAIN]
_WRITTEN: Final = frozenset(CHAIN[CHAIN.index(JobState.ERASING) :])

T = TypeVar("T")


def _software() -> str:
    try:
        return f"chub-station {package_metadata.version('chub-station')}"
    except package_metadata.PackageNotFoundError:
        return "chub-station (not installed)"


# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchRow:
    """A batch: one operator's session on one rig.

    ``counts`` is the number of its jobs in each state (state name -> count).
    """

    id: int
    station_id: str
    lease_id: str
    operator: str
    rig: str
    catalog: str
    manifest: str | None
    manifest_sha256: str | None
    started_at: datetime
    finished_at: datetime | None
    closed_reason: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRow:
    """One hub's job, with every field of its outcome once finished."""

    id: int
    batch_id: int
    lease_id: str
    slot: int
    port: str
    profile: str
    eui64: str | None
    hw_version: int | None
    found_in: str | None
    state: JobState
    version_before: str | None
    version_after: str | None
    target_version: str | None
    image_version: str | None
    image_path: str | None
    image_sha256: str | None
    signature: str | None
    signer: str | None
    verify_method: str | None
    verify_detail: str | None
    phase: str | None
    message: str | None
    hint: str | None
    error: str | None
    plan: str | None
    behind: int | None
    overrides: tuple[str, ...]
    notes: tuple[str, ...]
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    bytes_written: int
    adapter_latency_ms: float | None = None
    #: Pages written and pages the flash already held (None: not written by pages).
    pages_written: int | None = None
    pages_skipped: int | None = None


@dataclass(frozen=True)
class EventRow:
    """One recorded transition of a job (``seq`` counts from 1 per job)."""

    job_id: int
    seq: int
    state: JobState
    at: datetime
    detail: dict[str, Any]


@dataclass(frozen=True)
class HubRow:
    """What the station knows about one hub across batches (see station.records.dsp)."""

    eui64: str
    model: str
    hw_version: int | None
    first_seen: datetime
    last_seen: datetime
    last_job_id: int | None
    baseline_version: str | None
    running_version: str | None
    running_sha256: str | None
    running_job_id: int | None
    running_at: datetime | None
    exported_version: str | None
    export_id: int | None

    @property
    def pending(self) -> bool:
        """Whether the hub's running version is news to the DSP (its next export has it)."""
        return dsp.is_pending(
            self.running_version, self.exported_version, self.baseline_version, None
        )


@dataclass(frozen=True)
class BatchClosed:
    """What closing a batch did.

    Attributes:
        batch: the batch.
        interrupted: its jobs that were still live (their outcome was never recorded).
        export_id: the DSP export its close made.
        exported: the hubs that export carried.
        head: the audit head signed at the close (unsigned when no key was given).
        reason: why it was closed by someone else than its owner (None: by its owner).
    """

    batch: int
    interrupted: list[int]
    export_id: int
    exported: list[str]
    head: Head
    reason: str | None = None


@dataclass(frozen=True)
class Recovery:
    """What :meth:`Store.recover` found left behind by stations that are gone."""

    noticed: list[Lease] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    closed: list[BatchClosed] = field(default_factory=list)


@dataclass(frozen=True)
class SlotView:
    """One slot of a registered station, and the job in it now (None: no hub in flight)."""

    slot: int
    binding: str
    profile: str
    job: int | None = None
    eui64: str | None = None
    state: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class StationView:
    """A station as the database knows it (see :meth:`Store.stations`).

    ``counts`` is its current run's jobs by state (state name -> count).
    """

    lease: Lease
    state: Literal["serving", "idle", "gone"]
    heartbeat_age_s: float
    batch: int | None
    slots: list[SlotView]
    counts: Mapping[str, int]


@dataclass(frozen=True)
class ConsignmentRow:
    """A consignment loaded on the database: served by every station until closed."""

    consignment_id: str
    manifest: str
    manifest_sha256: str
    hubs: int
    loaded_at: datetime
    loaded_by: str
    closed_at: datetime | None
    closed_by: str | None

    @property
    def open(self) -> bool:
        """Whether stations still serve it."""
        return self.closed_at is None


@dataclass(frozen=True)
class ConsignmentJob:
    """A job on one of a consignment's hubs, and the station that ran it."""

    job: JobRow
    station_id: str


def _eui_or_raw(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    try:
        return normalise_eui64(text)
    except ValueError:
        return text.strip()


def _valid_eui(text: str | None) -> str | None:
    try:
        return None if text is None else normalise_eui64(text)
    except ValueError:
        return None


def default_url(data_dir: Path) -> str:
    """The SQLite database URL in a station data folder."""
    return f"sqlite:///{(data_dir / 'station.db').as_posix()}"


# -- the store -----------------------------------------------------------------------------


class Store:
    """The station's durable records; thread-safe, one committed transaction per write.

    Open with :meth:`open`; close with :meth:`close` (or use it as a context manager).
    Writing batches and jobs needs this station's lease (:meth:`acquire_lease`).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        """Use :meth:`open`; this takes an engine already configured for the station."""
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._group = threading.local()  # the connection of this thread's open group, if any
        self._sqlite = engine.dialect.name == "sqlite"
        # One shared connection (in-memory SQLite): reads must not interleave with writes.
        self._shared = isinstance(engine.pool, StaticPool)
        #: This process's lease, once acquired.
        self.lease: Lease | None = None

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        data_dir: Path = Path("station-data"),
        create: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> Store:
        """Open (and with ``create``, make) the station database and its schema.

        Args:
            url: SQLAlchemy URL: ``sqlite:///path/station.db``, ``sqlite://`` (in memory,
                for tests), ``postgresql+psycopg://user@host/db``, or a plain file path (a
                SQLite database). None: the SQLite file ``station.db`` in ``data_dir``.
            data_dir: the station's data folder (used when ``url`` is None).
            create: make the SQLite file if missing and bring its schema to this release
                (by the migrations); False refuses a missing SQLite file (for read-only
                commands such as reports). A PostgreSQL schema is never made or upgraded
                here: its owner runs ``station db init|upgrade``.
            clock: the time source (default: now, UTC); tests pass a fake one.

        Raises:
            ConfigError: a bad URL, or no database where ``create`` is False.
            StoreError: the database cannot be opened, holds no schema (PostgreSQL), or
                one at another revision than this release's.
        """
        engine = open_engine(url or default_url(data_dir), create=create)
        store = cls(engine, clock=clock)
        try:
            store._prepare(create)
        except BaseException:
            engine.dispose()
            raise
        return store

    def _prepare(self, create: bool) -> None:
        """Check (on SQLite with ``create``: make or upgrade) the schema.

        PostgreSQL is shared by many stations whose role may not create tables: its schema
        is made and upgraded only by ``station db init|upgrade`` (docs/warehouse.md). A
        SQLite file belongs to one bench: the station runs the same migrations itself, so
        the demo and a single bench need no admin step.
        """
        if create and self._sqlite:
            try:
                with self._lock, self._engine.connect() as conn:
                    conn.execution_options(station_write=True)  # BEGIN IMMEDIATE
                    with conn.begin():
                        migrations.upgrade(conn, self.url)
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot open the station database: {_db_error(exc)}") from exc
        state = self._read(migrations.inspect_state)
        refusal = state.refusal(self.url)
        if refusal is not None:
            raise StoreError(
                refusal,
                hint="give a new database (--db) for this release; the old records stay "
                "readable by the release that wrote them",
            )
        db = f"--db {self.url}"
        if state.empty:
            raise StoreError(
                f"{self.url} holds no station database: run 'station db init {db}' first",
                hint="as the database's owner; docs/warehouse.md gives the roles"
                if not self._sqlite
                else "open it once from the station (which creates the schema)",
            )
        if not state.at_head:
            raise StoreError(
                f"{self.url} holds station schema {state.current}; this release needs "
                f"{state.head}: run 'station db upgrade {db}'",
                hint="as the database's owner, with every station stopped; back it up first",
            )
        if state.schema_version != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.url} holds station records of schema version "
                f"{state.schema_version}; this station writes version {SCHEMA_VERSION}",
                hint="give a new database (--db) for this release",
            )

    def close(self) -> None:
        """Release every connection (a held lease stays until :meth:`release_lease`)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def group(self) -> Iterator[None]:
        """Commit every write this thread makes inside the block in one transaction.

        Each write runs in its own savepoint, so one that raises (an illegal transition, a
        value too long) is undone alone and the others stand. Nothing is durable until the
        block ends; a failing commit raises :class:`StoreError` and loses the whole group,
        so callers act on what the group recorded only after it ends. Groups do not nest.

        Raises:
            StoreError: the transaction could not be begun or committed.
        """
        if getattr(self._group, "conn", None) is not None:
            raise StoreError("store groups do not nest")
        with self._lock:
            try:
                with self._engine.connect() as conn:
                    conn.execution_options(station_write=True)
                    with conn.begin():
                        self._group.conn = conn
                        try:
                            yield
                        finally:
                            self._group.conn = None
            except SQLAlchemyError as exc:
                raise StoreError(f"station database: {_db_error(exc)}") from exc

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one committed write transaction (retried on a lost key race),
        or in a savepoint of this thread's open :meth:`group`."""
        grouped: Connection | None = getattr(self._group, "conn", None)
        if grouped is not None:
            try:
                with grouped.begin_nested():
                    return work(grouped)
            except SQLAlchemyError as exc:
                raise StoreError(f"station database: {_db_error(exc)}") from exc
        with self._lock:
            for attempt in range(1, _WRITE_ATTEMPTS + 1):
                try:
                    with self._engine.connect() as conn:
                        conn.execution_options(station_write=True)
                        with conn.begin():
                            return work(conn)
                except (IntegrityError, OperationalError) as exc:
                    # Another process won a race (a row inserted first, a deadlock or a
                    # serialisation failure): the transaction rolled back whole, so run it
                    # again. SQLite writers are serialised (BEGIN IMMEDIATE): nothing to retry.
                    retry = isinstance(exc, IntegrityError) or _sqlstate(exc) in _RETRY_STATES
                    if self._sqlite or not retry or attempt == _WRITE_ATTEMPTS:
                        raise StoreError(f"station database: {_db_error(exc)}") from exc
                except SQLAlchemyError as exc:
                    raise StoreError(f"station database: {_db_error(exc)}") from exc
        raise AssertionError("unreachable")

    def _read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one read transaction (one consistent snapshot on SQLite)."""
        try:
            if self._shared:
                with self._lock, self._engine.connect() as conn:
                    return work(conn)
            with self._engine.connect() as conn:
                return work(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"station database: {_db_error(exc)}") from exc

    # -- leases ----------------------------------------------------------------------------

    def acquire_lease(
        self,
        station_id: str,
        *,
        rig: str = "",
        ttl_s: float = leases.DEFAULT_TTL_S,
        slots: Iterable[Mapping[str, Any]] = (),
    ) -> Lease:
        """Take ``station_id`` for this process (audited); needed before any batch or job.

        The lease row is the station's registration on the database (host, rig, software,
        start, heartbeat and ``slots``: ``{"slot", "binding", "profile"}`` each), which
        ``station stations`` and ``station fleet`` list.

        Raises:
            StationBusy: a live process serves this station already.
        """
        if self.lease is not None:
            raise StoreError(f"this store already holds station {self.lease.station_id}")

        def work(conn: Connection) -> Lease:
            now = self._clock()
            lease, old = leases.acquire(
                conn,
                station_id,
                now=now,
                rig=rig,
                software=_software(),
                ttl_s=ttl_s,
                slots=list(slots),
            )
            detail: dict[str, Any] = {
                "station_id": station_id,
                "lease": lease.lease_id,
                "host": lease.host,
                "pid": lease.pid,
                "software": lease.software,
                "rig": lease.rig,
                "slots": list(lease.slots),
            }
            if old is not None and old.released_at is None:
                detail["took_over"] = {
                    "lease": old.lease_id,
                    "host": old.host,
                    "pid": old.pid,
                    "last_heartbeat": chain.iso_utc(old.heartbeat_at),
                }
            chain.append(conn, "station", "lease-acquired", detail, now)
            return lease

        self.lease = self._write(work)
        return self.lease

    def heartbeat(self) -> None:
        """Renew this process's lease.

        Raises:
            LeaseLost: another process holds the station now.
        """
        lease = self._held()
        self._write(lambda conn: leases.heartbeat(conn, lease, self._clock()))

    def beat(self) -> None:
        """Renew this process's lease, then notice stations that are gone (their jobs in
        flight interrupted, once): what a running station's heartbeat thread does.

        Raises:
            LeaseLost: another process holds the station now.
        """
        self.heartbeat()
        self.notice_gone()

    def stations(self) -> list[StationView]:
        """Every station registered on the database: its lease, state (``serving``: an open
        batch; ``idle``: running, no batch open; ``gone``), slots with the job in each, and
        counters of its current run (jobs by state since it started)."""

        def read(conn: Connection) -> list[StationView]:
            now = self._clock()
            out = []
            for lease in leases.all_leases(conn):
                gone = leases.is_gone(lease, now)
                batch = conn.execute(
                    select(func.max(batches.c.id))
                    .where(batches.c.lease_id == lease.lease_id)
                    .where(batches.c.finished_at.is_(None))
                ).scalar_one_or_none()
                counts = {
                    str(state): int(n)
                    for state, n in conn.execute(
                        select(jobs.c.state, func.count())
                        .where(jobs.c.lease_id == lease.lease_id)
                        .group_by(jobs.c.state)
                    )
                }
                live = {
                    int(r.slot): r
                    for r in conn.execute(
                        select(
                            jobs.c.id, jobs.c.slot, jobs.c.eui64, jobs.c.state, jobs.c.started_at
                        )
                        .where(jobs.c.lease_id == lease.lease_id)
                        .where(jobs.c.state.in_(_LIVE))
                        .order_by(jobs.c.id)
                    )
                }
                slots = []
                registered = {int(s.get("slot", 0)): s for s in lease.slots}
                for number in sorted(set(registered) | set(live)):
                    reg = registered.get(number, {})
                    job = live.get(number)
                    slots.append(
                        SlotView(
                            slot=number,
                            binding=str(reg.get("binding", "")),
                            profile=str(reg.get("profile", "")),
                            job=None if job is None else int(job.id),
                            eui64=None if job is None else job.eui64,
                            state=None if job is None else str(job.state),
                            since=None if job is None else job.started_at,
                        )
                    )
                state: Literal["serving", "idle", "gone"] = (
                    "gone" if gone else "serving" if batch is not None else "idle"
                )
                out.append(
                    StationView(
                        lease=lease,
                        state=state,
                        heartbeat_age_s=max(0.0, (now - lease.heartbeat_at).total_seconds()),
                        batch=None if batch is None else int(batch),
                        slots=slots,
                        counts=counts,
                    )
                )
            return out

        return self._read(read)

    def release_lease(self) -> None:
        """Give the station up (audited); nothing more may be written for it."""
        lease = self.lease
        if lease is None:
            return

        def work(conn: Connection) -> None:
            now = self._clock()
            if leases.release(conn, lease, now):
                chain.append(
                    conn,
                    "station",
                    "lease-released",
                    {"station_id": lease.station_id, "lease": lease.lease_id},
                    now,
                )

        try:
            self._write(work)
        finally:
            self.lease = None

    def leases(self) -> list[Lease]:
        """Every station's recorded lease."""
        return self._read(leases.all_leases)

    def orphaned(self, batch: BatchRow) -> bool:
        """Whether an open batch's run is gone (killed, or silent past its lease): the next
        start of a station closes it (:meth:`recover`)."""
        if batch.finished_at is not None:
            return False
        held = {
            lease.lease_id for lease in self.leases() if not leases.is_gone(lease, self._clock())
        }
        return batch.lease_id not in held

    def _held(self) -> Lease:
        if self.lease is None:
            raise StoreError("this store holds no station lease: acquire_lease() first")
        return self.lease

    def _owned(self, conn: Connection) -> Lease:
        lease = self._held()
        leases.check_held(conn, lease)
        return lease

    # -- audit ---------------------------------------------------------------------------

    def audit(self, operator: str, action: str, detail: dict[str, Any]) -> None:
        """Append an entry to the audit log (who did what, with which image or override)."""
        if not operator or not action:
            raise StoreError("an audit entry needs an operator and an action")
        self._write(lambda conn: chain.append(conn, operator, action, detail, self._clock()))

    def audit_log(self) -> list[AuditEntry]:
        """Every audit entry, in order."""

        def read(conn: Connection) -> list[AuditEntry]:
            rows = conn.execute(select(audit).order_by(audit.c.seq))
            return [
                AuditEntry(
                    seq=r.seq,
                    at=r.at,
                    operator=r.operator,
                    action=r.action,
                    detail=_loads(r.detail),
                    prev_hash=r.prev_hash,
                    hash=r.hash,
                )
                for r in rows
            ]

        return self._read(read)

    def verify_audit(self, ring: KeyRing | None = None) -> AuditCheck:
        """Recompute the chain, check signed heads against ``ring`` and cross-check every
        covered record (see :func:`station.records.audit.verify`)."""
        return self._read(lambda conn: chain.verify(conn, ring or KeyRing()))

    def head(self) -> Head:
        """The chain's last entry, unsigned."""
        return self._read(chain.head)

    def chain_hash(self, seq: int) -> str | None:
        """The hash of audit entry ``seq`` as stored (None: there is no such entry)."""
        return self._read(
            lambda conn: conn.execute(
                select(audit.c.hash).where(audit.c.seq == seq)
            ).scalar_one_or_none()
        )

    def signed_heads(self) -> list[Head]:
        """Every signed head in the audit log, oldest first (unverified: see verify_audit)."""
        return self._read(chain.signed_heads)

    def report_head(self, batch_id: int) -> Head:
        """The head a batch's reports carry: the one signed when it closed, else (an open
        batch's preview) the current head, unsigned."""

        def read(conn: Connection) -> Head:
            self._batch_row(conn, batch_id)
            return chain.signed_head_of(conn, batch_id) or chain.head(conn)

        return self._read(read)

    # -- batches -------------------------------------------------------------------------

    def start_batch(
        self,
        *,
        station_id: str,
        operator: str,
        rig: str,
        catalog: str,
        manifest: Manifest | None = None,
    ) -> int:
        """Record a new batch (and its consignment manifest); returns the batch id.

        Raises:
            StoreError: no lease for ``station_id``, or a value the records cannot hold.
        """
        if not station_id or not operator:
            raise StoreError("a batch needs a station id and an operator")

        def work(conn: Connection) -> int:
            lease = self._owned(conn)
            if lease.station_id != station_id:
                raise StoreError(f"this process holds station {lease.station_id}, not {station_id}")
            at = self._clock()
            batch_id = _insert(
                conn,
                batches,
                {
                    "station_id": station_id,
                    "lease_id": lease.lease_id,
                    "operator": operator,
                    "rig": rig,
                    "catalog": catalog,
                    "manifest": None if manifest is None else manifest.name,
                    "manifest_sha256": None if manifest is None else manifest.sha256,
                    "started_at": at,
                },
            )
            if manifest is not None and manifest.items:
                conn.execute(
                    insert(consignment_items),
                    [
                        checked(
                            consignment_items,
                            {
                                "batch_id": batch_id,
                                "consignment_id": item.consignment_id,
                                "eui64": item.eui64,
                                "expected_model": item.model,
                                "expected_version": item.version,
                                "line": item.line,
                            },
                        )
                        for item in manifest.items
                    ],
                )
            chain.snapshot(conn, "batch", batch_id, operator, at)
            return batch_id

        return self._write(work)

    def close_batch(
        self, batch_id: int, key: StationKey | None, *, reason: str | None = None
    ) -> BatchClosed:
        """End this station's batch, in one transaction: any of its jobs still live become
        interrupted, its DSP export is made (every hub change it read that the DSP has not
        had), and the audit head is signed with ``key``.

        Raises:
            BatchFinished: it is closed already.
            LeaseLost: this process no longer holds the batch's station.
        """

        def work(conn: Connection) -> BatchClosed:
            lease = self._owned(conn)
            batch = self._batch_row(conn, batch_id)
            if batch.lease_id != lease.lease_id:
                raise StoreError(
                    f"batch {batch_id} was opened by another run of station "
                    f"{batch.station_id}; it is closed by the restart that notices it"
                )
            return self._close(conn, batch, key, reason)

        return self._write(work)

    def _close(
        self, conn: Connection, batch: BatchRow, key: StationKey | None, reason: str | None
    ) -> BatchClosed:
        if batch.finished_at is not None:
            raise BatchFinished(f"batch {batch.id} finished already")
        at = self._clock()
        live = conn.execute(
            select(jobs.c.id)
            .where(jobs.c.batch_id == batch.id)
            .where(jobs.c.state.in_(_LIVE))
            .order_by(jobs.c.id)
        ).scalars()
        why = reason or "the station could not record how this job ended"
        interrupted = [j for j in list(live) if self._interrupt(conn, j, why, at)]
        conn.execute(
            update(batches)
            .where(batches.c.id == batch.id)
            .values(**checked(batches, {"finished_at": at, "closed_reason": reason}))
        )
        export_id, exported = dsp.export_batch(
            conn, batch.id, station_id=batch.station_id, operator=batch.operator, at=at
        )
        for eui in exported:
            chain.snapshot(conn, "hub", eui, batch.operator, at)
        chain.snapshot(conn, "export", export_id, batch.operator, at)
        chain.snapshot(conn, "batch", batch.id, batch.operator, at)
        head = (
            chain.sign_head(conn, key, at, batch=batch.id) if key is not None else chain.head(conn)
        )
        return BatchClosed(batch.id, interrupted, export_id, exported, head, reason)

    def _batch_row(self, conn: Connection, batch_id: int) -> BatchRow:
        row = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        if row is None:
            raise UnknownRecord(f"no batch {batch_id} in the station database")
        return _batch(row, self._counts(conn, [batch_id]).get(batch_id, {}))

    @staticmethod
    def _counts(conn: Connection, ids: Iterable[int] | None) -> dict[int, dict[str, int]]:
        query = select(jobs.c.batch_id, jobs.c.state, func.count()).group_by(
            jobs.c.batch_id, jobs.c.state
        )
        if ids is not None:
            query = query.where(jobs.c.batch_id.in_(list(ids)))
        out: dict[int, dict[str, int]] = {}
        for batch_id, state, count in conn.execute(query):
            out.setdefault(int(batch_id), {})[str(state)] = int(count)
        return out

    def batch(self, batch_id: int) -> BatchRow:
        """One batch.

        Raises:
            UnknownRecord: no such batch.
        """
        return self._read(lambda conn: self._batch_row(conn, batch_id))

    def batches(self) -> list[BatchRow]:
        """Every batch, oldest first, with its job counts by state."""

        def read(conn: Connection) -> list[BatchRow]:
            counts = self._counts(conn, None)
            rows = conn.execute(select(batches).order_by(batches.c.id))
            return [_batch(r, counts.get(r.id, {})) for r in rows]

        return self._read(read)

    def latest_batch_id(self) -> int | None:
        """The id of the newest batch (None: there is none)."""
        return self._read(
            lambda conn: conn.execute(select(func.max(batches.c.id))).scalar_one_or_none()
        )

    def consignment(self, batch_id: int) -> list[ManifestItem]:
        """The hubs the batch's manifest listed, in file order (empty: no manifest)."""

        def read(conn: Connection) -> list[ManifestItem]:
            self._batch_row(conn, batch_id)
            rows = conn.execute(
                select(consignment_items)
                .where(consignment_items.c.batch_id == batch_id)
                .order_by(consignment_items.c.line, consignment_items.c.id)
            )
            return _manifest_items(rows)

        return self._read(read)

    # -- consignments --------------------------------------------------------------------

    def load_consignment(
        self, consignment_id: str, manifest: Manifest, *, operator: str
    ) -> ConsignmentRow:
        """Load a consignment, once, for every station on the database (audited).

        Raises:
            StoreError: it was loaded already, or one of its hubs is listed by another open
                consignment (a hub belongs to one consignment at a time).
        """
        if not consignment_id or not operator:
            raise StoreError("a consignment needs an id and an operator")

        def work(conn: Connection) -> ConsignmentRow:
            _serialise(conn)  # two loads of overlapping consignments queue here
            at = self._clock()
            found = self._consignment_row(conn, consignment_id, missing_ok=True)
            if found is not None:
                raise StoreError(
                    f"consignment {consignment_id} was loaded at "
                    f"{found.loaded_at:%Y-%m-%d %H:%M:%S} UTC by {found.loaded_by} "
                    f"(from {found.manifest}): a consignment is loaded once",
                    hint=f"'station consignment status {consignment_id}' shows its progress",
                )
            listed = [item.eui64 for item in manifest.items]
            clash = conn.execute(
                select(consignment_hubs.c.eui64, consignments.c.consignment_id)
                .join(consignments)
                .where(consignments.c.closed_at.is_(None))
                .where(consignment_hubs.c.eui64.in_(listed))
                .order_by(consignment_hubs.c.eui64)
            ).first()
            if clash is not None:
                raise StoreError(
                    f"{clash.eui64} is listed by open consignment {clash.consignment_id}: a "
                    "hub belongs to one open consignment at a time",
                    hint=f"close {clash.consignment_id} first, or take the hub off this manifest",
                )
            _insert_row(
                conn,
                consignments,
                {
                    "consignment_id": consignment_id,
                    "manifest": manifest.name,
                    "manifest_sha256": manifest.sha256,
                    "hubs": len(manifest.items),
                    "loaded_at": at,
                    "loaded_by": operator,
                },
            )
            if manifest.items:
                conn.execute(
                    insert(consignment_hubs),
                    [
                        checked(
                            consignment_hubs,
                            {
                                "consignment_id": consignment_id,
                                "eui64": item.eui64,
                                "expected_model": item.model,
                                "expected_version": item.version,
                                "line": item.line,
                            },
                        )
                        for item in manifest.items
                    ],
                )
            chain.snapshot(conn, "consignment", consignment_id, operator, at)
            row = self._consignment_row(conn, consignment_id)
            assert row is not None
            return row

        return self._write(work)

    def close_consignment(self, consignment_id: str, *, operator: str) -> ConsignmentRow:
        """Close a consignment (audited): stations stop counting its hubs as its own.

        Stations that are gone are noticed first (their jobs interrupted), so a hub left in
        flight by a killed station does not hold the close.

        Raises:
            UnknownRecord: no such consignment.
            StoreError: it is closed already, or one of its hubs is in flight.
        """

        def work(conn: Connection) -> ConsignmentRow:
            at = self._clock()
            self._notice(conn, at)
            row = self._consignment_row(conn, consignment_id)
            assert row is not None
            if row.closed_at is not None:
                raise StoreError(
                    f"consignment {consignment_id} was closed at "
                    f"{row.closed_at:%Y-%m-%d %H:%M:%S} UTC by {row.closed_by}"
                )
            live = conn.execute(
                select(jobs.c.eui64, jobs.c.slot, batches.c.station_id)
                .join(batches, batches.c.id == jobs.c.batch_id)
                .where(jobs.c.state.in_(_LIVE))
                .where(jobs.c.eui64.in_(_listed(consignment_id)))
                .order_by(jobs.c.id)
            ).all()
            if live:
                where = ", ".join(f"{r.eui64} at {r.station_id} slot {r.slot}" for r in live[:3])
                raise StoreError(
                    f"consignment {consignment_id} has {len(live)} hub(s) in flight ({where}"
                    f"{', ...' if len(live) > 3 else ''}): close it once they have ended"
                )
            conn.execute(
                update(consignments)
                .where(consignments.c.consignment_id == consignment_id)
                .values(**checked(consignments, {"closed_at": at, "closed_by": operator}))
            )
            chain.snapshot(conn, "consignment", consignment_id, operator, at)
            closed = self._consignment_row(conn, consignment_id)
            assert closed is not None
            return closed

        return self._write(work)

    def _consignment_row(
        self, conn: Connection, consignment_id: str, *, missing_ok: bool = False
    ) -> ConsignmentRow | None:
        r = conn.execute(
            select(consignments).where(consignments.c.consignment_id == consignment_id)
        ).first()
        if r is None:
            if missing_ok:
                return None
            raise UnknownRecord(f"no consignment {consignment_id!r} in the station database")
        return ConsignmentRow(
            consignment_id=r.consignment_id,
            manifest=r.manifest,
            manifest_sha256=r.manifest_sha256,
            hubs=r.hubs,
            loaded_at=r.loaded_at,
            loaded_by=r.loaded_by,
            closed_at=r.closed_at,
            closed_by=r.closed_by,
        )

    def consignment_record(self, consignment_id: str) -> ConsignmentRow:
        """One consignment.

        Raises:
            UnknownRecord: no such consignment.
        """

        def read(conn: Connection) -> ConsignmentRow:
            row = self._consignment_row(conn, consignment_id)
            assert row is not None
            return row

        return self._read(read)

    def consignment_records(self, *, open_only: bool = False) -> list[ConsignmentRow]:
        """Every consignment (or the open ones), in the order they were loaded."""

        def read(conn: Connection) -> list[ConsignmentRow]:
            query = select(consignments.c.consignment_id).order_by(
                consignments.c.loaded_at, consignments.c.consignment_id
            )
            if open_only:
                query = query.where(consignments.c.closed_at.is_(None))
            out = []
            for cid in list(conn.execute(query).scalars()):
                row = self._consignment_row(conn, str(cid))
                assert row is not None
                out.append(row)
            return out

        return self._read(read)

    def consignment_hubs(self, consignment_id: str) -> list[ManifestItem]:
        """The hubs a consignment lists, in file order."""

        def read(conn: Connection) -> list[ManifestItem]:
            self._consignment_row(conn, consignment_id)
            rows = conn.execute(
                select(consignment_hubs)
                .where(consignment_hubs.c.consignment_id == consignment_id)
                .order_by(consignment_hubs.c.line, consignment_hubs.c.id)
            )
            return _manifest_items(rows)

        return self._read(read)

    def consignment_jobs(self, consignment_id: str) -> list[ConsignmentJob]:
        """Every job, at any station, on a hub the consignment lists, started while it was
        open (a hub's earlier life is not this consignment's), in the order they started."""

        def read(conn: Connection) -> list[ConsignmentJob]:
            row = self._consignment_row(conn, consignment_id)
            assert row is not None
            query = (
                select(jobs, batches.c.station_id.label("batch_station"))
                .join(batches, batches.c.id == jobs.c.batch_id)
                .where(jobs.c.eui64.in_(_listed(consignment_id)))
                .where(jobs.c.started_at >= row.loaded_at)
                .order_by(jobs.c.id)
            )
            if row.closed_at is not None:
                query = query.where(jobs.c.started_at <= row.closed_at)
            return [ConsignmentJob(_job(r), r.batch_station) for r in conn.execute(query)]

        return self._read(read)

    def consignment_exports(
        self, consignment_id: str
    ) -> tuple[list[tuple[int, dsp.DspRow]], list[str]]:
        """A consignment's DSP update across every station: each exported hub change of its
        hubs read by a job of the consignment, with its export id, in the order they were
        exported; and the hubs whose change is read but not exported yet (its batch is open).
        """

        def read(conn: Connection) -> tuple[list[tuple[int, dsp.DspRow]], list[str]]:
            row = self._consignment_row(conn, consignment_id)
            assert row is not None
            window = jobs.c.started_at >= row.loaded_at
            if row.closed_at is not None:
                window = window & (jobs.c.started_at <= row.closed_at)
            exported = dsp.items_of(
                conn,
                (export_items.c.eui64.in_(_listed(consignment_id))) & window,
            )
            pending = conn.execute(
                select(hubs)
                .join(jobs, jobs.c.id == hubs.c.running_job_id)
                .where(hubs.c.eui64.in_(_listed(consignment_id)))
                .where(window)
                .order_by(hubs.c.eui64)
            )
            waiting = [r.eui64 for r in pending if _hub(r).pending]
            return exported, waiting

        return self._read(read)

    # -- recovery --------------------------------------------------------------------------

    def recover(self, key: StationKey | None) -> Recovery:
        """End what stations that are gone left behind, once, in one transaction: notice
        their leases (released), interrupt their live jobs (keeping what was read), and close
        their open batches (with the DSP export and a head signed by ``key``).

        Any station may call it; whoever calls it first does the work.
        """

        def work(conn: Connection) -> Recovery:
            now = self._clock()
            held, noticed, interrupted = self._notice(conn, now)
            open_batches = conn.execute(
                select(batches.c.id)
                .where(batches.c.finished_at.is_(None))
                .where(batches.c.lease_id.not_in(held) if held else batches.c.id.is_not(None))
                .order_by(batches.c.id)
            ).scalars()
            closed = []
            for batch_id in list(open_batches):
                batch = self._batch_row(conn, int(batch_id))
                reason = (
                    f"closed after a restart: the run of station {batch.station_id} that "
                    "opened it stopped without closing it"
                )
                closed.append(self._close(conn, batch, key, reason))
            return Recovery(noticed, interrupted, closed)

        return self._write(work)

    def notice_gone(self) -> Recovery:
        """Notice the stations that are gone and interrupt their jobs in flight, once (any
        station or command may, whoever looks first); their open batches are left for the
        next station start to close (:meth:`recover`: a close signs with a station's key)."""

        def work(conn: Connection) -> Recovery:
            _, noticed, interrupted = self._notice(conn, self._clock())
            return Recovery(noticed, interrupted, [])

        return self._write(work)

    def _notice(self, conn: Connection, now: datetime) -> tuple[set[str], list[Lease], list[int]]:
        """Mark gone leases released and interrupt their live jobs (audited); returns the
        lease ids still held, the leases noticed now, and the jobs interrupted now."""
        held, noticed = leases.expire(conn, now)
        if self.lease is not None:
            held.add(self.lease.lease_id)
        for lease in noticed:
            chain.append(
                conn,
                "station",
                "lease-expired",
                {
                    "station_id": lease.station_id,
                    "lease": lease.lease_id,
                    "host": lease.host,
                    "pid": lease.pid,
                    "last_heartbeat": chain.iso_utc(lease.heartbeat_at),
                },
                now,
            )
        orphans = conn.execute(
            select(jobs.c.id, jobs.c.state)
            .where(jobs.c.state.in_(_LIVE))
            .where(jobs.c.lease_id.not_in(held) if held else jobs.c.id.is_not(None))
            .order_by(jobs.c.id)
        ).all()
        interrupted: list[int] = []
        for job_id, state in orphans:
            why = (
                f"the station stopped while the job was {state}; the hub may hold a partly "
                "written image: run it again"
            )
            if self._interrupt(conn, int(job_id), why, now):
                interrupted.append(int(job_id))
        if interrupted:
            chain.append(conn, "station", "jobs-interrupted", {"jobs": interrupted}, now)
        return held, noticed, interrupted

    # -- jobs ----------------------------------------------------------------------------

    def start_job(self, batch_id: int, slot: int, port: str, profile: str) -> int:
        """Record a hub found in a slot (state ``DETECTED``); returns the job id.

        Raises:
            UnknownRecord: no such batch.
            BatchFinished: the batch has ended.
            LeaseLost: this process no longer holds the station.
        """

        def work(conn: Connection) -> int:
            lease = self._owned(conn)
            found = conn.execute(_BATCH_FOR_JOB, {"b_batch": batch_id}).first()
            if found is None:
                raise UnknownRecord(f"no batch {batch_id} in the station database")
            if found.finished_at is not None:
                raise BatchFinished(f"batch {batch_id} finished already: no new jobs in it")
            if found.lease_id != lease.lease_id:
                raise StoreError(f"batch {batch_id} belongs to another run of this station")
            at = self._clock()
            job_id = _insert(
                conn,
                jobs,
                {
                    "batch_id": batch_id,
                    "lease_id": lease.lease_id,
                    "slot": slot,
                    "port": port,
                    "profile": profile,
                    "state": str(JobState.DETECTED),
                    "started_at": at,
                    "overrides": "[]",
                    "notes": "[]",
                    "bytes_written": 0,
                },
            )
            self._add_event(
                conn,
                job_id,
                1,
                JobState.DETECTED,
                at,
                {"slot": slot, "port": port, "profile": profile},
            )
            return job_id

        return self._write(work)

    @staticmethod
    def _add_event(
        conn: Connection,
        job_id: int,
        seq: int,
        state: JobState,
        at: datetime,
        detail: Mapping[str, Any],
    ) -> None:
        conn.execute(
            _ADD_EVENT,
            checked(
                job_events,
                {
                    "job_id": job_id,
                    "seq": seq,
                    "state": str(state),
                    "at": at,
                    "detail": chain.canonical_json(dict(detail)),
                },
            ),
        )

    @staticmethod
    def _next_seq(conn: Connection, job_id: int) -> int:
        last = conn.execute(_LAST_SEQ, {"b_job": job_id}).scalar_one_or_none()
        return 1 if last is None else int(last) + 1

    def _own_job(self, conn: Connection, job_id: int) -> _Owned:
        """The job's row, once this process is known to hold its station's lease and the
        job belongs to this run; with its last event's ``seq`` and its batch's operator.

        One statement when all is well (the lease check, the job and what follows from it,
        read together); anything else runs the checks one by one, which raise.
        """
        lease = self._held()
        row = conn.execute(_OWN_JOB, {"b_job": job_id, "b_station": lease.station_id}).first()
        if (
            row is not None
            and row.x_holder == lease.lease_id
            and row.x_released is None
            and row.lease_id == lease.lease_id
        ):
            return _Owned(row, 0 if row.x_last_seq is None else int(row.x_last_seq), row.x_operator)
        self._owned(conn)
        job = conn.execute(_JOB, {"b_job": job_id}).first()
        if job is None:
            raise UnknownRecord(f"no job {job_id} in the station database")
        if job.lease_id != lease.lease_id:
            raise LeaseLost(f"job {job_id} belongs to another run of station {lease.station_id}")
        return _Owned(job, self._next_seq(conn, job_id) - 1, self._operator(conn, job.batch_id))

    def record_state(
        self, job_id: int, state: JobState, detail: dict[str, Any] | None = None
    ) -> None:
        """Record a job's move to the live ``state``, before the step it names is taken.

        ``detail`` goes into the job's event; its keys that name what was read from the hub
        or decided about it (``eui64``, ``hw_version``, ``version_before``, ``found_in``,
        ``target_version``, ``image``, ``image_version``, ``image_sha256``, ``signature``,
        ``signer``, ``plan``, ``behind``, ``overrides``) are stored on the job at once, and
        the hub's row follows: at ``identified`` its identity and running version, at
        ``erasing`` its running version becomes unknown until one is read again.

        At ``identified`` the job claims its hub: a hub is in flight in one job only across
        every station on the database (the unique index ``uq_jobs_hub_in_flight`` decides a
        race, not a check). A job of a station that is gone is interrupted first.

        Raises:
            IllegalTransition: the state machine does not allow it, or it is a final state
                (only :meth:`finish_job` ends a job).
            HubInFlight: at ``identified``: another job has this hub in flight (nothing was
                recorded: end the job refused, with this error's name as its ``error``).
            LeaseLost: this process no longer holds the job's station.
            ValueTooLong: a value the records cannot hold.
        """
        state = JobState(state)
        detail = dict(detail or {})

        def work(conn: Connection) -> None:
            owned = self._own_job(conn, job_id)
            job = owned.job
            src = _state(job)
            if state.final:
                raise IllegalTransition(job_id, src, state, "only finish_job ends a job")
            if not legal(src, state):
                raise IllegalTransition(job_id, src, state)
            at = self._clock()
            values: dict[str, Any] = {"state": str(state)}
            for key, column in _STATE_FIELDS.items():
                if key in detail:
                    value = detail[key]
                    if column == "eui64":
                        value = _eui_or_raw(value if isinstance(value, str) else None)
                    elif column == "overrides":
                        value = chain.canonical_json(list(value or []))
                    values[column] = value
            values = checked(jobs, values)
            seq = owned.last_seq + 1
            if state is JobState.IDENTIFIED and values.get("eui64"):
                # A claim may interrupt a gone station's jobs first: read the seq afresh.
                self._claim_hub(conn, job_id, str(values["eui64"]), values, at)
                seq = self._next_seq(conn, job_id)
            else:
                _set_job(conn, job_id, values)
            self._add_event(conn, job_id, seq, state, at, detail)
            if state is JobState.IDENTIFIED or state is JobState.ERASING:
                self._touch_hub(conn, job_id, at, owned.operator)

        self._write(work)

    def _in_flight(self, conn: Connection, eui64: str, job_id: int) -> Any:
        """The other live job that has ``eui64`` in flight (a row: ``id``, ``slot``,
        ``lease_id``, ``started_at``, ``station_id``), None: none."""
        return conn.execute(
            select(jobs.c.id, jobs.c.slot, jobs.c.lease_id, jobs.c.started_at, batches.c.station_id)
            .join(batches, batches.c.id == jobs.c.batch_id)
            .where(jobs.c.eui64 == eui64)
            .where(jobs.c.state.in_(_LIVE))
            .where(jobs.c.id != job_id)
        ).first()

    def _claim_hub(
        self, conn: Connection, job_id: int, eui64: str, values: Mapping[str, Any], at: datetime
    ) -> None:
        """Record ``identified`` (``values``) on the job, taking its hub in flight.

        The look first only names the holder and ends a gone station's job; what decides is
        the unique index: of two stations identifying one hub at once, the database refuses
        the second insert into the index (on PostgreSQL after the first commits).

        Raises:
            HubInFlight: another job has the hub in flight.
        """
        other = self._in_flight(conn, eui64, job_id)
        if other is not None:
            held = {le.lease_id for le in leases.all_leases(conn) if not leases.is_gone(le, at)}
            if self.lease is not None:
                held.add(self.lease.lease_id)
            if other.lease_id not in held:  # its station is gone: notice it, once
                self._notice(conn, at)
                other = self._in_flight(conn, eui64, job_id)
        if other is not None:
            raise HubInFlight(eui64, other.station_id, other.slot, other.id, other.started_at)
        try:
            with conn.begin_nested():
                _set_job(conn, job_id, values)
        except IntegrityError as exc:
            if IN_FLIGHT_INDEX not in str(exc.orig) and "jobs.eui64" not in str(exc.orig):
                raise
            other = self._in_flight(conn, eui64, job_id)
            if other is None:
                raise
            raise HubInFlight(
                eui64, other.station_id, other.slot, other.id, other.started_at
            ) from None

    def finish_job(self, job_id: int, outcome: FlashOutcome) -> JobState:
        """Record how a job ended, with every field of its outcome; returns the final state.

        The final state follows ``outcome.result``, except that a pass without its evidence
        (:func:`station.records.pass_rule.pass_evidence_problem`) is recorded ``FAILED`` with
        the reason and audited. The hub's row follows, every override used is audited, and
        the job's final record and its hub's row are appended to the audit chain, all in the
        same transaction. A job refused because its hub is in flight elsewhere (``error``
        :data:`HUB_IN_FLIGHT`) leaves the hub's row alone (it says nothing of the hub) and is
        audited ``hub-in-flight``.

        Raises:
            IllegalTransition: the job has already ended.
            LeaseLost: this process no longer holds the job's station.
            ValueTooLong: a value the records cannot hold (nothing was recorded).
        """

        def work(conn: Connection) -> JobState:
            owned = self._own_job(conn, job_id)
            job = owned.job
            src = _state(job)
            target = _final_state(outcome.result)
            if src.final:
                raise IllegalTransition(job_id, src, target, "the job has already ended")
            phase, message = outcome.phase, outcome.message
            refused_pass = None
            if target is JobState.PASSED:
                refused_pass = pass_evidence_problem(job._mapping, outcome)
                if refused_pass is not None:
                    target = JobState.FAILED
                    phase = phase or _PHASE_OF_STATE.get(src, "confirm")
                    message = f"not a confirmed pass: {refused_pass}" + (
                        f" (the flash reported: {outcome.message})" if outcome.message else ""
                    )
            if not legal(src, target):
                raise IllegalTransition(job_id, src, target)
            at = self._clock()
            # What was read before writing was recorded then and stands: an outcome that
            # says otherwise does not rewrite it (the pass rule has judged the difference).
            eui = job.eui64 or _eui_or_raw(outcome.eui64)
            values = {
                "state": str(target),
                "eui64": eui,
                "hw_version": _first(job.hw_version, outcome.hw_version),
                "found_in": job.found_in or outcome.found_in,
                "version_before": job.version_before or outcome.version_before,
                "version_after": outcome.version_after,
                "target_version": job.target_version or outcome.target_version,
                "image_version": outcome.image_version or None,
                "image_path": outcome.image or None,
                "image_sha256": outcome.image_sha256 or None,
                "signature": outcome.signature,
                "signer": outcome.signer,
                "verify_method": outcome.verify_method,
                "verify_detail": outcome.verify_detail,
                "phase": phase,
                "message": message,
                "hint": outcome.hint,
                "error": outcome.error,
                "plan": outcome.plan,
                "behind": outcome.behind,
                "overrides": chain.canonical_json(list(outcome.overrides)),
                "notes": chain.canonical_json(list(outcome.notes)),
                "finished_at": at,
                "seconds": float(outcome.seconds),
                "bytes_written": int(outcome.bytes_written),
                "adapter_latency_ms": outcome.adapter_latency_ms,
                "pages_written": outcome.pages_written,
                "pages_skipped": outcome.pages_skipped,
            }
            _set_job(conn, job_id, checked(jobs, values))
            event_detail: dict[str, Any] = {"result": str(outcome.result)}
            if phase:
                event_detail["phase"] = phase
            if message:
                event_detail["message"] = message
            if outcome.error:
                event_detail["error"] = outcome.error
            if outcome.exchanges:
                # The last bytes on the wire before a failure: kept for the post-mortem.
                event_detail["exchanges"] = list(outcome.exchanges)
            self._add_event(conn, job_id, owned.last_seq + 1, target, at, event_detail)
            operator = owned.operator
            base = {"batch": job.batch_id, "job": job_id, "slot": job.slot, "eui64": eui}
            for override in outcome.overrides:
                detail = {**base, "override": override, "image_sha256": outcome.image_sha256}
                chain.append(conn, operator, "override", detail, at)
            if refused_pass is not None:
                chain.append(conn, operator, "pass-refused", {**base, "reason": refused_pass}, at)
            elsewhere = target is JobState.REFUSED and outcome.error == HUB_IN_FLIGHT
            if elsewhere:
                station = conn.execute(
                    select(batches.c.station_id).where(batches.c.id == job.batch_id)
                ).scalar_one()
                detail = {**base, "station_id": station, "reason": message}
                chain.append(conn, operator, "hub-in-flight", detail, at)
            hub = None if elsewhere else self._touch_hub(conn, job_id, at, operator)
            chain.snapshot(conn, "job", job_id, operator, at)
            if hub is not None:
                chain.snapshot(conn, "hub", hub, operator, at)
            return target

        return self._write(work)

    def _operator(self, conn: Connection, batch_id: int) -> str:
        return str(conn.execute(_OPERATOR, {"b_batch": batch_id}).scalar_one())

    def _touch_hub(
        self, conn: Connection, job_id: int, at: datetime, operator: str | None = None
    ) -> str | None:
        """Bring the job's hub row up to date with what the job knows now (see
        station.records.dsp); returns the hub's EUI-64 (None: the job has no valid one).
        ``operator``: the job's batch's, when the caller has read it already."""
        job = conn.execute(_JOB, {"b_job": job_id}).one()
        eui = _valid_eui(job.eui64)
        if eui is None:
            return None
        state = _state(job)
        values: dict[str, Any] = {
            "model": job.profile,
            "last_seen": at,
            "last_job_id": job_id,
            "running_job_id": job_id,
            "running_at": at,
        }
        if job.hw_version is not None:
            values["hw_version"] = job.hw_version
        reached = {
            JobState(s) for s in conn.execute(_REACHED, {"b_job": job_id}).scalars() if s in _LIVE
        }
        if state is JobState.PASSED:
            values["running_version"] = job.version_after
            values["running_sha256"] = job.image_sha256
        elif reached & _WRITTEN:
            # A write began and no version was read back: what the hub runs is unknown.
            values["running_version"] = None
            values["running_sha256"] = None
        else:
            values["running_version"] = job.version_before
            current = (
                state is JobState.SKIPPED
                and job.target_version is not None
                and job.version_before is not None
                and job.target_version.lower() == job.version_before.lower()
            )
            values["running_sha256"] = job.image_sha256 if current else None
            known = conn.execute(_KNOWN_HUB, {"b_eui": eui}).one_or_none()
            if (
                known is not None
                and known.running_job_id not in (None, job_id)
                and (known.running_version or "").lower() == (job.version_before or "-").lower()
            ):
                # The hub runs what was already known (another station's pass, say): that
                # job stays the source, so the change is exported by the batch that made it,
                # with its station, not by whichever batch saw the hub next.
                for source in ("running_job_id", "running_at", "running_sha256"):
                    del values[source]
        values = checked(hubs, values)
        done = conn.execute(_SET_HUB, {**values, "b_eui": eui}).rowcount
        if not done:
            listed = (
                conn.execute(
                    select(consignment_items.c.expected_version)
                    .where(consignment_items.c.eui64 == eui)
                    .where(consignment_items.c.expected_version.is_not(None))
                    .order_by(consignment_items.c.batch_id.desc())
                    .limit(1)
                ).scalar_one_or_none()
                or conn.execute(
                    select(consignment_hubs.c.expected_version)
                    .join(consignments)
                    .where(consignment_hubs.c.eui64 == eui)
                    .where(consignment_hubs.c.expected_version.is_not(None))
                    .order_by(consignments.c.loaded_at.desc())
                    .limit(1)
                ).scalar_one_or_none()
            )
            conn.execute(
                insert(hubs).values(
                    eui64=eui,
                    first_seen=at,
                    baseline_version=listed or job.version_before,
                    **values,
                )
            )
        if state is JobState.IDENTIFIED or state is JobState.ERASING:
            who = operator if operator is not None else self._operator(conn, job.batch_id)
            chain.snapshot(conn, "hub", eui, who, at)
        return eui

    def _interrupt(self, conn: Connection, job_id: int, reason: str, at: datetime) -> bool:
        """End a live job as interrupted, keeping what it had read; False if it had ended
        already (someone else noticed first)."""
        job = conn.execute(select(jobs).where(jobs.c.id == job_id)).one()
        src = _state(job)
        done = conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .where(jobs.c.state.in_(_LIVE))
            .values(
                **checked(
                    jobs,
                    {
                        "state": str(JobState.INTERRUPTED),
                        "finished_at": at,
                        "phase": _PHASE_OF_STATE.get(src),
                        "message": reason,
                    },
                )
            )
        ).rowcount
        if not done:
            return False
        self._add_event(
            conn,
            job_id,
            self._next_seq(conn, job_id),
            JobState.INTERRUPTED,
            at,
            {"from": str(src), "reason": reason},
        )
        operator = self._operator(conn, job.batch_id)
        hub = self._touch_hub(conn, job_id, at)
        chain.snapshot(conn, "job", job_id, operator, at)
        if hub is not None:
            chain.snapshot(conn, "hub", hub, operator, at)
        return True

    # -- reading jobs and hubs -------------------------------------------------------------

    def job(self, job_id: int) -> JobRow:
        """One job.

        Raises:
            UnknownRecord: no such job.
        """

        def read(conn: Connection) -> JobRow:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise UnknownRecord(f"no job {job_id} in the station database")
            return _job(row)

        return self._read(read)

    def jobs(self, batch_id: int) -> list[JobRow]:
        """Every job of a batch, in the order they started."""

        def read(conn: Connection) -> list[JobRow]:
            self._batch_row(conn, batch_id)
            rows = conn.execute(select(jobs).where(jobs.c.batch_id == batch_id).order_by(jobs.c.id))
            return [_job(r) for r in rows]

        return self._read(read)

    def jobs_of_hub(self, eui64: str) -> list[JobRow]:
        """Every job that identified this hub, across batches, in the order they started."""
        key = _eui_or_raw(eui64)

        def read(conn: Connection) -> list[JobRow]:
            rows = conn.execute(select(jobs).where(jobs.c.eui64 == key).order_by(jobs.c.id))
            return [_job(r) for r in rows]

        return self._read(read)

    def job_events(self, job_id: int) -> list[EventRow]:
        """Every recorded transition of a job, in order."""

        def read(conn: Connection) -> list[EventRow]:
            if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
                raise UnknownRecord(f"no job {job_id} in the station database")
            rows = conn.execute(
                select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.seq)
            )
            return [
                EventRow(r.job_id, r.seq, _state_of(r.state, job_id), r.at, _loads(r.detail))
                for r in rows
            ]

        return self._read(read)

    def hub(self, eui64: str) -> HubRow | None:
        """What the station knows about a hub (None: never seen)."""
        key = _eui_or_raw(eui64)

        def read(conn: Connection) -> HubRow | None:
            r = conn.execute(select(hubs).where(hubs.c.eui64 == key)).first()
            return None if r is None else _hub(r)

        return self._read(read)

    # -- the DSP update ----------------------------------------------------------------------

    def dsp(self, batch_id: int) -> tuple[dsp.ExportRow | None, list[dsp.DspRow], Head]:
        """A batch's DSP update: its export and rows once closed (the same every time), or,
        while it is open, a preview of what its close would export (export None); with the
        audit head its reports carry."""

        def read(conn: Connection) -> tuple[dsp.ExportRow | None, list[dsp.DspRow], Head]:
            self._batch_row(conn, batch_id)
            made = dsp.export_of(conn, batch_id)
            head = chain.signed_head_of(conn, batch_id) or chain.head(conn)
            if made is not None:
                return made[0], made[1], head
            return None, [p.row for p in dsp.pending_rows(conn, batch_id)], head

        return self._read(read)

    def export_batch(self, export_id: int) -> int | None:
        """The batch whose close made export ``export_id`` (None: no such export)."""
        return self._read(
            lambda conn: conn.execute(
                select(exports.c.batch_id).where(exports.c.id == export_id)
            ).scalar_one_or_none()
        )

    def dsp_text(self, batch_id: int, fmt: Literal["csv", "json"]) -> str:
        """The batch's DSP update as CSV or JSON text (see :func:`station.records.dsp.render`)."""
        batch = self.batch(batch_id)
        export, rows, head = self.dsp(batch_id)
        return dsp.render(
            fmt,
            rows,
            batch=batch.id,
            station_id=batch.station_id,
            operator=batch.operator,
            export=export,
            head=head,
        )


# -- helpers -------------------------------------------------------------------------------


# -- the statements every job runs, built once ------------------------------------------------
# A job records eight or more states, each in a handful of statements; building a statement
# and its cache key cost more CPU than running it, so the hot ones are built here, once, with
# their values bound at execution.

_JOB = select(jobs).where(jobs.c.id == bindparam("b_job"))
_SET_JOB = update(jobs).where(jobs.c.id == bindparam("b_job"))
_LAST_SEQ = select(func.max(job_events.c.seq)).where(job_events.c.job_id == bindparam("b_job"))
_ADD_EVENT = insert(job_events)
_REACHED = select(job_events.c.state).where(job_events.c.job_id == bindparam("b_job"))
_OPERATOR = select(batches.c.operator).where(batches.c.id == bindparam("b_batch"))
_KNOWN_HUB = select(hubs.c.running_version, hubs.c.running_job_id).where(
    hubs.c.eui64 == bindparam("b_eui")
)
_SET_HUB = update(hubs).where(hubs.c.eui64 == bindparam("b_eui"))
_BATCH_FOR_JOB = select(batches.c.finished_at, batches.c.lease_id).where(
    batches.c.id == bindparam("b_batch")
)


# The job with what every write to it needs: the station's lease as recorded now (checked
# against this process's), the job's last event and its batch's operator.
_OWN_JOB = (
    select(
        jobs,
        station_leases.c.lease_id.label("x_holder"),
        station_leases.c.released_at.label("x_released"),
        batches.c.operator.label("x_operator"),
        select(func.max(job_events.c.seq))
        .where(job_events.c.job_id == jobs.c.id)
        .scalar_subquery()
        .label("x_last_seq"),
    )
    .select_from(
        jobs.join(batches, batches.c.id == jobs.c.batch_id).outerjoin(
            station_leases, station_leases.c.station_id == bindparam("b_station")
        )
    )
    .where(jobs.c.id == bindparam("b_job"))
)


@dataclass(frozen=True)
class _Owned:
    """A job this process may write (see :meth:`Store._own_job`)."""

    job: Row[Any]
    last_seq: int  # 0: no event yet
    operator: str


def _set_job(conn: Connection, job_id: int, values: Mapping[str, Any]) -> Any:
    """UPDATE the job's row with ``values`` (already :func:`checked`)."""
    return conn.execute(_SET_JOB, {**values, "b_job": job_id})


def _final_state(result: Result) -> JobState:
    """The job state an outcome's result ends in (the enums share their values)."""
    try:
        state = JobState(str(result))
    except ValueError:
        state = None
    if state is None or not state.final:
        raise StoreError(f"an outcome's result {result!r} is not a final job state")
    return state


def _first(recorded: Any, given: Any) -> Any:
    return recorded if recorded is not None else given


def _state_of(text: Any, job_id: Any) -> JobState:
    try:
        return JobState(str(text))
    except ValueError:
        raise StoreError(
            f"job {job_id} holds state {str(text)[:40]!r}, which is not a job state",
            hint="the records were changed outside the station: run 'station audit verify'",
        ) from None


def _state(job: Row[Any]) -> JobState:
    return _state_of(job.state, job.id)


def _insert(conn: Connection, table: Table, values: Mapping[str, Any]) -> int:
    """Insert one row, its values held to their limits; returns its new id."""
    key = conn.execute(insert(table).values(**checked(table, values))).inserted_primary_key
    if key is None or key[0] is None:
        raise StoreError("the database did not return the new row's id")
    return int(key[0])


def _insert_row(conn: Connection, table: Table, values: Mapping[str, Any]) -> None:
    """Insert one row (of a table keyed by its own values), held to its limits."""
    conn.execute(insert(table).values(**checked(table, values)))


def _serialise(conn: Connection) -> None:
    """Queue this write transaction behind any other that calls it (the audit lock row)."""
    conn.execute(
        update(station_meta)
        .where(station_meta.c.key == "audit_lock")
        .values(value=station_meta.c.value)
    )


def _listed(consignment_id: str) -> Any:
    """The EUI-64s a consignment lists (a subquery)."""
    return select(consignment_hubs.c.eui64).where(
        consignment_hubs.c.consignment_id == consignment_id
    )


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"unreadable": str(text)[:200]}
    return value if isinstance(value, dict) else {"value": value}


def _strings(text: str | None) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return (str(text),)
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def _batch(r: Row[Any], counts: Mapping[str, int]) -> BatchRow:
    return BatchRow(
        id=r.id,
        station_id=r.station_id,
        lease_id=r.lease_id,
        operator=r.operator,
        rig=r.rig,
        catalog=r.catalog,
        manifest=r.manifest,
        manifest_sha256=r.manifest_sha256,
        started_at=r.started_at,
        finished_at=r.finished_at,
        closed_reason=r.closed_reason,
        counts=dict(counts),
    )


def _job(r: Row[Any]) -> JobRow:
    return JobRow(
        id=r.id,
        batch_id=r.batch_id,
        lease_id=r.lease_id,
        slot=r.slot,
        port=r.port,
        profile=r.profile,
        eui64=r.eui64,
        hw_version=r.hw_version,
        found_in=r.found_in,
        state=_state(r),
        version_before=r.version_before,
        version_after=r.version_after,
        target_version=r.target_version,
        image_version=r.image_version,
        image_path=r.image_path,
        image_sha256=r.image_sha256,
        signature=r.signature,
        signer=r.signer,
        verify_method=r.verify_method,
        verify_detail=r.verify_detail,
        phase=r.phase,
        message=r.message,
        hint=r.hint,
        error=r.error,
        plan=r.plan,
        behind=r.behind,
        overrides=_strings(r.overrides),
        notes=_strings(r.notes),
        started_at=r.started_at,
        finished_at=r.finished_at,
        seconds=r.seconds,
        bytes_written=r.bytes_written or 0,
        adapter_latency_ms=r.adapter_latency_ms,
        pages_written=r.pages_written,
        pages_skipped=r.pages_skipped,
    )


def _hub(r: Row[Any]) -> HubRow:
    return HubRow(
        eui64=r.eui64,
        model=r.model,
        hw_version=r.hw_version,
        first_seen=r.first_seen,
        last_seen=r.last_seen,
        last_job_id=r.last_job_id,
        baseline_version=r.baseline_version,
        running_version=r.running_version,
        running_sha256=r.running_sha256,
        running_job_id=r.running_job_id,
        running_at=r.running_at,
        exported_version=r.exported_version,
        export_id=r.export_id,
    )


def _sqlstate(exc: SQLAlchemyError) -> str | None:
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) else None


def _db_error(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


def open_engine(url: str, *, create: bool) -> Engine:
    """An engine for a station database URL (or a SQLite file's path), configured as the
    station uses it (SQLite: see :func:`_sqlite_engine`); ``create`` lets it make a missing
    SQLite file.

    Raises:
        ConfigError: a bad URL, a missing SQLite file, or no driver for the backend.
    """
    if "://" not in url:  # a plain file path, as a user types it: a SQLite database
        url = f"sqlite:///{Path(url).as_posix()}"
    try:
        parsed = make_url(url)
    except SQLAlchemyError as exc:
        raise ConfigError(f"not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        return _plain_savepoints(_sqlite_engine(parsed.database, create=create))
    try:
        return _plain_savepoints(create_engine(parsed, pool_pre_ping=True))
    except (SQLAlchemyError, ImportError) as exc:
        raise ConfigError(
            f"cannot use database {parsed.render_as_string(hide_password=True)}: {exc}",
            hint="PostgreSQL needs the psycopg package: pip install 'psycopg[binary]'",
        ) from exc


def _plain_savepoints(engine: Engine) -> Engine:
    """Send SAVEPOINT and RELEASE as the plain SQL they are.

    Every record in a group runs in a savepoint, and SQLAlchemy compiles a new statement for
    each (its name changes every time, so no cache can hold it): that compiling was a sixth
    of the store's CPU per record. The names are SQLAlchemy's own (``sa_savepoint_N``).
    """

    def savepoint(conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"SAVEPOINT {name}")

    def release(conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"RELEASE SAVEPOINT {name}")

    def rollback_to(conn: Connection, name: str) -> None:
        conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")

    dialect: Any = engine.dialect
    dialect.do_savepoint = savepoint
    dialect.do_release_savepoint = release
    dialect.do_rollback_to_savepoint = rollback_to
    return engine


def _sqlite_engine(database: str | None, *, create: bool) -> Engine:
    """A SQLite engine: WAL, synchronous=FULL, foreign keys, BEGIN IMMEDIATE for writes."""
    memory = database in (None, "", ":memory:")
    if memory:
        engine = create_engine(
            "sqlite://",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
    else:
        assert database is not None
        path = Path(database)
        if not path.exists():
            if not create:
                raise ConfigError(
                    f"no station database at {path}",
                    hint="give --db PATH or URL (the demo keeps its own records: --db "
                    "station-data/demo/station.db), or run from the folder that holds "
                    "station-data/; a new one is made by a station run or by "
                    f"'station db init --db {path}'",
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot make {path.parent}: {exc.strerror or exc}") from exc
        engine = create_engine(
            f"sqlite:///{path.as_posix()}",
            connect_args={"check_same_thread": False, "timeout": 60.0},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        # The driver must not open transactions behind our back: we issue BEGIN ourselves
        # (below) so that write transactions take the write lock at once.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            if not memory:
                mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(
                        f"SQLite would not use WAL for {database} (journal mode {mode})",
                        hint="keep the station database on a local disk",
                    )
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("station_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _manifest_items(rows: Iterable[Any]) -> list[ManifestItem]:
    """Manifest lines as stored (a batch's own, or a loaded consignment's), as items."""
    return [
        ManifestItem(r.consignment_id, r.eui64, r.expected_model, r.line, r.expected_version)
        for r in rows
    ]

"""The station's durable records: batches, consignments, hubs, jobs, job events and audit.

SQLAlchemy Core over SQLite by default (one file in the station's data folder, WAL journal,
``synchronous=FULL``, foreign keys on) or PostgreSQL by URL for a warehouse
(``postgresql+psycopg://user@host/db``). Queries use only portable SQL.

Durability rule: every public write is one committed transaction. When a call returns, what
it recorded survives a ``kill -9`` of the station, or (SQLite ``synchronous=FULL``, PostgreSQL
``synchronous_commit=on``) a power cut. The controller records each transition *before* it
publishes it, so nothing a user was shown can be lost. On start-up, :meth:`Store.mark_interrupted`
turns every job that was still running into ``INTERRUPTED``.

Thread safety: one :class:`Store` is shared by every slot thread; each call takes its own
pooled connection, and writes are serialised within the process (SQLite allows one writer
at a time anyway). :meth:`Store.group` lets one thread (the controller's recorder) commit
many writes in one transaction, each in its own savepoint: one commit and one fsync for
all, and the durability rule then holds when the group ends. Writers in other processes are
serialised by the database: SQLite write transactions start with ``BEGIN IMMEDIATE``; on
PostgreSQL a lost race for the next audit sequence number or a hub row is retried.

The store never launders a false pass: a job ends ``PASSED`` only through
:meth:`Store.finish_job` with an outcome that says passed *and* carries the evidence (the job
walked the state machine to ``BOOTING``, a verify method, a running version read back equal to
the image's, the hub's EUI-64 and the image's SHA-256). Otherwise it is recorded ``FAILED``
with the reason, and the refusal is audited.

The audit log is append-only and hash-chained: each entry's ``hash`` is SHA-256 over a
canonical encoding of the entry and the previous entry's hash (see :func:`audit_hash`), so an
edited, inserted or deleted entry breaks the chain at that point (:meth:`Store.verify_audit`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
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

from drivers.errors import ConfigError, StationError
from station.events import CHAIN, JobState, legal
from station.outcome import FlashOutcome, Result
from station.records.audit import (
    GENESIS_HASH,
    AuditCheck,
    AuditEntry,
    audit_hash,
    canonical_json,
)
from station.records.manifest import Manifest, ManifestItem, normalise_eui64
from station.records.pass_rule import pass_evidence_problem
from station.records.schema import (
    SCHEMA_VERSION,
    audit,
    batches,
    consignment_items,
    hubs,
    job_events,
    jobs,
    metadata,
    station_meta,
)

__all__ = [
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "AuditCheck",
    "AuditEntry",
    "BatchFinished",
    "BatchRow",
    "EventRow",
    "HubRow",
    "IllegalTransition",
    "JobRow",
    "Store",
    "StoreError",
    "UnknownRecord",
    "audit_hash",
    "canonical_json",
    "default_url",
    "metadata",
    "pass_evidence_problem",
]

#: Attempts of one write when another process wins a race for a unique key (PostgreSQL).
_WRITE_ATTEMPTS: Final = 5
#: PostgreSQL SQLSTATEs of a transaction that lost a race: deadlock, serialisation failure.
_RETRY_STATES: Final = frozenset({"40P01", "40001"})
#: Rows of station_meta made with the schema. Every audit append first updates the
#: ``audit_lock`` row: on PostgreSQL that row lock queues concurrent appenders from other
#: processes, so each one reads the chain head only after the previous append committed.
_META_ROWS: Final = {
    "schema_version": str(SCHEMA_VERSION),
    "audit_lock": "audit appends serialise on this row",
}
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

T = TypeVar("T")


# -- errors --------------------------------------------------------------------------------


class StoreError(StationError):
    """The station database refused or failed a read or write."""

    default_hint = (
        "check that the station database is reachable and writable (--db URL, or the "
        "station-data folder); nothing was recorded by the failed call"
    )


class UnknownRecord(StoreError):
    """A batch or job id that the store does not hold."""

    default_hint = "'station batches' lists the batches this database holds"


class IllegalTransition(StoreError):
    """A job state change the state machine does not allow (station.events.legal).

    Attributes:
        job_id: the job.
        src: its recorded state.
        dst: the state that was refused.
    """

    default_hint = "this is a bug in the caller: a job walks its states forward, one at a time"

    def __init__(self, job_id: int, src: JobState, dst: JobState, why: str = "") -> None:
        super().__init__(
            f"job {job_id}: {src} -> {dst} is not a legal transition" + (f": {why}" if why else "")
        )
        self.job_id = job_id
        self.src = src
        self.dst = dst


class BatchFinished(StoreError):
    """A job was started in a batch that is already finished."""

    default_hint = "start a new batch"


# -- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchRow:
    """A batch: one operator's session on one rig.

    ``counts`` is the number of its jobs in each state (state name -> count).
    """

    id: int
    station_id: str
    operator: str
    rig: str
    catalog: str
    manifest: str | None
    manifest_sha256: str | None
    started_at: datetime
    finished_at: datetime | None
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRow:
    """One hub's job, with every field of its outcome once finished."""

    id: int
    batch_id: int
    slot: int
    port: str
    profile: str
    eui64: str | None
    hw_version: int | None
    found_in: str | None
    state: JobState
    version_before: str | None
    version_after: str | None
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
    """What the station knows about one hub across batches."""

    eui64: str
    model: str
    hw_version: int | None
    firmware_version: str | None
    first_seen: datetime
    last_seen: datetime
    last_job_id: int | None


def _eui_or_raw(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    try:
        return normalise_eui64(text)
    except ValueError:
        return text.strip()


def default_url(data_dir: Path) -> str:
    """The SQLite database URL in a station data folder."""
    return f"sqlite:///{(data_dir / 'station.db').as_posix()}"


# -- the store -----------------------------------------------------------------------------


class Store:
    """The station's durable records; thread-safe, one committed transaction per write.

    Open with :meth:`open`; close with :meth:`close` (or use it as a context manager).
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
                for tests), ``postgresql+psycopg://user@host/db``. None: the SQLite file
                ``station.db`` in ``data_dir``.
            data_dir: the station's data folder (used when ``url`` is None).
            create: make the SQLite file and the schema if missing; False refuses a missing
                SQLite file (for read-only commands such as reports).
            clock: the time source (default: now, UTC); tests pass a fake one.

        Raises:
            ConfigError: a bad URL, or no database where ``create`` is False.
            StoreError: the database cannot be opened, or holds another schema version.
        """
        url = url or default_url(data_dir)
        try:
            parsed = make_url(url)
        except SQLAlchemyError as exc:
            raise ConfigError(f"not a database URL: {url!r}") from exc
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed.database, create=create)
        else:
            try:
                engine = create_engine(parsed, pool_pre_ping=True)
            except (SQLAlchemyError, ImportError) as exc:
                raise ConfigError(
                    f"cannot use database {parsed.render_as_string(hide_password=True)}: {exc}",
                    hint="PostgreSQL needs the psycopg package: pip install 'psycopg[binary]'",
                ) from exc
        store = cls(engine, clock=clock)
        try:
            store._prepare(create)
        except BaseException:
            engine.dispose()
            raise
        return store

    def _prepare(self, create: bool) -> None:
        def read_version(conn: Connection) -> str | None:
            query = select(station_meta.c.value).where(station_meta.c.key == "schema_version")
            return conn.execute(query).scalar()

        def initialise(conn: Connection) -> str | None:
            have = {str(k): str(v) for k, v in conn.execute(select(station_meta)).all()}
            for key, value in _META_ROWS.items():
                if key not in have:
                    conn.execute(insert(station_meta).values(key=key, value=value))
            return have.get("schema_version")

        if create:
            for attempt in (1, 2):
                try:
                    with self._lock:
                        metadata.create_all(self._engine)  # only the tables that are missing
                    break
                except SQLAlchemyError as exc:
                    # Two stations creating a new PostgreSQL schema at once: the loser's
                    # second look finds the tables made.
                    if attempt == 2:
                        raise StoreError(
                            f"cannot open the station database: {_db_error(exc)}"
                        ) from exc
            version = self._write(initialise)
        else:
            version = self._read(read_version)
        if version is None and not create:
            raise StoreError(
                f"{self.url} holds no station database",
                hint="open it once from the station (which creates the schema)",
            )
        if version is not None and version != str(SCHEMA_VERSION):
            raise StoreError(
                f"the station database has schema version {version}; this station writes "
                f"version {SCHEMA_VERSION}",
                hint="use a station release that matches the database, or a new database",
            )

    def close(self) -> None:
        """Release every connection."""
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
        bad record) is undone alone and the others stand. Nothing is durable until the
        block ends; a failing commit raises :class:`StoreError` and loses the whole group,
        so callers publish what the group recorded only after it ends. Groups do not nest.

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
                    # Another process won a race (a hub row inserted first, a deadlock or
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

    # -- audit ---------------------------------------------------------------------------

    def _append_audit(
        self,
        conn: Connection,
        operator: str,
        action: str,
        detail: Mapping[str, Any],
        at: datetime | None = None,
    ) -> int:
        conn.execute(
            update(station_meta)
            .where(station_meta.c.key == "audit_lock")
            .values(value=station_meta.c.value)
        )
        last = conn.execute(
            select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
        ).first()
        seq = 1 if last is None else int(last.seq) + 1
        prev = GENESIS_HASH if last is None else str(last.hash)
        at = at or self._clock()
        text = canonical_json(dict(detail))
        conn.execute(
            insert(audit).values(
                seq=seq,
                at=at,
                operator=operator,
                action=action,
                detail=text,
                prev_hash=prev,
                hash=audit_hash(seq, at, operator, action, text, prev),
            )
        )
        return seq

    def audit(self, operator: str, action: str, detail: dict[str, Any]) -> None:
        """Append an entry to the audit log (who did what, with which image or override)."""
        if not operator or not action:
            raise StoreError("an audit entry needs an operator and an action")
        self._write(lambda conn: self._append_audit(conn, operator, action, detail))

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

    def verify_audit(self) -> AuditCheck:
        """Recompute the audit chain from the first entry; name the first entry that breaks.

        An entry breaks the chain when its sequence number is not the next one (an entry
        was deleted or inserted), its ``prev_hash`` is not the previous entry's hash, or its
        hash does not match its own contents (it was edited). Deleting the *last* entries
        cannot be seen from inside the chain: compare ``head`` with a copy kept elsewhere.
        """

        def check(conn: Connection) -> AuditCheck:
            prev, expected, count = GENESIS_HASH, 1, 0
            for r in conn.execute(select(audit).order_by(audit.c.seq)):
                count += 1
                why = ""
                if r.seq != expected:
                    why = (
                        f"entry {expected} is missing (the next entry is {r.seq})"
                        if r.seq > expected
                        else f"sequence number {r.seq} is out of order"
                    )
                elif r.prev_hash != prev:
                    why = "its prev_hash is not the hash of the entry before it"
                elif r.hash != audit_hash(r.seq, r.at, r.operator, r.action, r.detail, r.prev_hash):
                    why = "its hash does not match its contents: the entry was altered"
                if why:
                    return AuditCheck(
                        ok=False, entries=count, bad_seq=expected, reason=why, head=prev
                    )
                prev, expected = r.hash, expected + 1
            return AuditCheck(ok=True, entries=count, head=prev)

        return self._read(check)

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
        """Record a new batch (and its consignment manifest); returns the batch id."""
        if not station_id or not operator:
            raise StoreError("a batch needs a station id and an operator")

        def work(conn: Connection) -> int:
            batch_id = _new_id(
                conn.execute(
                    insert(batches).values(
                        station_id=station_id,
                        operator=operator,
                        rig=rig,
                        catalog=catalog,
                        manifest=None if manifest is None else manifest.name,
                        manifest_sha256=None if manifest is None else manifest.sha256,
                        started_at=self._clock(),
                    )
                ).inserted_primary_key
            )
            if manifest is not None and manifest.items:
                conn.execute(
                    insert(consignment_items),
                    [
                        {
                            "batch_id": batch_id,
                            "consignment_id": item.consignment_id,
                            "eui64": item.eui64,
                            "expected_model": item.model,
                            "line": item.line,
                        }
                        for item in manifest.items
                    ],
                )
            self._append_audit(
                conn,
                operator,
                "batch-started",
                {
                    "batch": batch_id,
                    "station_id": station_id,
                    "rig": rig,
                    "catalog": catalog,
                    "manifest": None if manifest is None else manifest.name,
                    "manifest_sha256": None if manifest is None else manifest.sha256,
                    "listed": 0 if manifest is None else len(manifest.items),
                },
            )
            return batch_id

        return self._write(work)

    def finish_batch(self, batch_id: int) -> None:
        """Record that a batch ended (its counts go into the audit log)."""

        def work(conn: Connection) -> None:
            batch = self._batch_row(conn, batch_id)
            if batch.finished_at is not None:
                raise BatchFinished(f"batch {batch_id} finished already")
            conn.execute(
                update(batches).where(batches.c.id == batch_id).values(finished_at=self._clock())
            )
            self._append_audit(
                conn,
                batch.operator,
                "batch-finished",
                {"batch": batch_id, "counts": dict(sorted(batch.counts.items()))},
            )

        self._write(work)

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
            return [ManifestItem(r.consignment_id, r.eui64, r.expected_model, r.line) for r in rows]

        return self._read(read)

    # -- jobs ----------------------------------------------------------------------------

    def start_job(self, batch_id: int, slot: int, port: str, profile: str) -> int:
        """Record a hub found in a slot (state ``DETECTED``); returns the job id.

        Raises:
            UnknownRecord: no such batch.
            BatchFinished: the batch has ended.
        """

        def work(conn: Connection) -> int:
            # Only whether the batch has ended: its job counts would cost more than the job.
            found = conn.execute(
                select(batches.c.finished_at).where(batches.c.id == batch_id)
            ).first()
            if found is None:
                raise UnknownRecord(f"no batch {batch_id} in the station database")
            if found.finished_at is not None:
                raise BatchFinished(f"batch {batch_id} finished already: no new jobs in it")
            at = self._clock()
            job_id = _new_id(
                conn.execute(
                    insert(jobs).values(
                        batch_id=batch_id,
                        slot=slot,
                        port=port,
                        profile=profile,
                        state=str(JobState.DETECTED),
                        started_at=at,
                        overrides="[]",
                        notes="[]",
                        bytes_written=0,
                    )
                ).inserted_primary_key
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
            insert(job_events).values(
                job_id=job_id,
                seq=seq,
                state=str(state),
                at=at,
                detail=canonical_json(dict(detail)),
            )
        )

    @staticmethod
    def _next_seq(conn: Connection, job_id: int) -> int:
        last = conn.execute(
            select(func.max(job_events.c.seq)).where(job_events.c.job_id == job_id)
        ).scalar_one_or_none()
        return 1 if last is None else int(last) + 1

    @staticmethod
    def _job_state(conn: Connection, job_id: int) -> JobState:
        state = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
        if state is None:
            raise UnknownRecord(f"no job {job_id} in the station database")
        return JobState(state)

    def record_state(
        self, job_id: int, state: JobState, detail: dict[str, Any] | None = None
    ) -> None:
        """Record a job's move to ``state`` (before it is published).

        ``PASSED`` is never taken here: only :meth:`finish_job` may pass a job, with the
        outcome's evidence. A ``detail`` with an ``eui64`` (the hub identified) fills in the
        job's EUI-64 at once, so an interrupted job still names its hub.

        Raises:
            IllegalTransition: the state machine does not allow it, or it is ``PASSED``.
            UnknownRecord: no such job.
        """
        state = JobState(state)
        detail = dict(detail or {})

        def work(conn: Connection) -> None:
            src = self._job_state(conn, job_id)
            if state is JobState.PASSED:
                raise IllegalTransition(
                    job_id, src, state, "only finish_job, with a verified and confirmed outcome"
                )
            if not legal(src, state):
                raise IllegalTransition(job_id, src, state)
            at = self._clock()
            values: dict[str, Any] = {"state": str(state)}
            if state.final:
                values["finished_at"] = at
                values["phase"] = _PHASE_OF_STATE.get(src)
                if "reason" in detail:
                    values["message"] = str(detail["reason"])
            eui = detail.get("eui64")
            if isinstance(eui, str):
                values["eui64"] = _eui_or_raw(eui)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            self._add_event(conn, job_id, self._next_seq(conn, job_id), state, at, detail)

        self._write(work)

    def finish_job(self, job_id: int, outcome: FlashOutcome) -> JobState:
        """Record how a job ended, with every field of its outcome; returns the final state.

        The final state follows ``outcome.result``, except that a pass without its evidence
        (see :func:`pass_evidence_problem`) is recorded as ``FAILED`` with the reason and
        audited. The hub's row is created or updated; every override used and every passed
        hub (with its image hash) is written to the audit log, in the same transaction.

        Raises:
            IllegalTransition: the job has already ended.
            UnknownRecord: no such job.
        """

        def work(conn: Connection) -> JobState:
            job = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if job is None:
                raise UnknownRecord(f"no job {job_id} in the station database")
            src = JobState(job.state)
            target = _final_state(outcome.result)
            if src.final:
                raise IllegalTransition(job_id, src, target, "the job has already ended")
            phase, message = outcome.phase, outcome.message
            refused_pass = None
            if target is JobState.PASSED:
                refused_pass = pass_evidence_problem(src, outcome)
                if refused_pass is not None:
                    target = JobState.FAILED
                    phase = phase or _PHASE_OF_STATE.get(src, "confirm")
                    message = f"not a confirmed pass: {refused_pass}" + (
                        f" (the flash reported: {outcome.message})" if outcome.message else ""
                    )
            if not legal(src, target):
                raise IllegalTransition(job_id, src, target)
            at = self._clock()
            eui = _eui_or_raw(outcome.eui64) or job.eui64
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    state=str(target),
                    eui64=eui,
                    hw_version=outcome.hw_version,
                    found_in=outcome.found_in,
                    version_before=outcome.version_before,
                    version_after=outcome.version_after,
                    image_version=outcome.image_version or None,
                    image_path=outcome.image or None,
                    image_sha256=outcome.image_sha256 or None,
                    signature=outcome.signature,
                    signer=outcome.signer,
                    verify_method=outcome.verify_method,
                    verify_detail=outcome.verify_detail,
                    phase=phase,
                    message=message,
                    hint=outcome.hint,
                    error=outcome.error,
                    plan=outcome.plan,
                    behind=outcome.behind,
                    overrides=canonical_json(list(outcome.overrides)),
                    notes=canonical_json(list(outcome.notes)),
                    finished_at=at,
                    seconds=float(outcome.seconds),
                    bytes_written=int(outcome.bytes_written),
                )
            )
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
            self._add_event(conn, job_id, self._next_seq(conn, job_id), target, at, event_detail)
            self._upsert_hub(conn, eui, outcome, target, job_id, at)
            operator = conn.execute(
                select(batches.c.operator).where(batches.c.id == job.batch_id)
            ).scalar_one()
            self._audit_outcome(conn, operator, job, eui, outcome, target, refused_pass, at)
            return target

        return self._write(work)

    def _upsert_hub(
        self,
        conn: Connection,
        eui: str | None,
        outcome: FlashOutcome,
        state: JobState,
        job_id: int,
        at: datetime,
    ) -> None:
        if eui is None or eui != _eui_or_raw(eui) or len(eui) != 23:
            return  # no hub row for a hub whose EUI-64 was not read, or not read right
        running = outcome.version_after if state is JobState.PASSED else outcome.version_before
        values: dict[str, Any] = {"model": outcome.profile, "last_seen": at, "last_job_id": job_id}
        if outcome.hw_version is not None:
            values["hw_version"] = outcome.hw_version
        if running:
            values["firmware_version"] = running
        done = conn.execute(update(hubs).where(hubs.c.eui64 == eui).values(**values)).rowcount
        if not done:
            conn.execute(insert(hubs).values(eui64=eui, first_seen=at, **values))

    def _audit_outcome(
        self,
        conn: Connection,
        operator: str,
        job: Row[Any],
        eui: str | None,
        outcome: FlashOutcome,
        state: JobState,
        refused_pass: str | None,
        at: datetime,
    ) -> None:
        base = {
            "batch": job.batch_id,
            "job": job.id,
            "slot": job.slot,
            "eui64": eui,
            "image": outcome.image or None,
            "image_sha256": outcome.image_sha256 or None,
        }
        for override in outcome.overrides:
            detail = {**base, "override": override, "result": str(state)}
            self._append_audit(conn, operator, "override", detail, at)
        if refused_pass is not None:
            detail = {**base, "reason": refused_pass}
            self._append_audit(conn, operator, "pass-refused", detail, at)
        if state is JobState.PASSED:
            self._append_audit(
                conn,
                operator,
                "hub-passed",
                {
                    **base,
                    "model": outcome.profile,
                    "version_before": outcome.version_before,
                    "version_after": outcome.version_after,
                    "verify_method": outcome.verify_method,
                    "signature": outcome.signature,
                    "signer": outcome.signer,
                },
                at,
            )

    def mark_interrupted(self, *, station_id: str | None = None) -> list[int]:
        """On start-up: every job not in a final state becomes ``INTERRUPTED``.

        Args:
            station_id: only this station's jobs (for a database shared by several rigs,
                so one rig's restart never interrupts another's live jobs). None: all.

        Returns:
            the ids of the jobs it interrupted, in order.
        """
        live = [str(s) for s in CHAIN]

        def work(conn: Connection) -> list[int]:
            query = select(jobs.c.id, jobs.c.state).where(jobs.c.state.in_(live))
            if station_id is not None:
                query = query.join(batches, batches.c.id == jobs.c.batch_id).where(
                    batches.c.station_id == station_id
                )
            found = [
                (int(r.id), JobState(r.state)) for r in conn.execute(query.order_by(jobs.c.id))
            ]
            at = self._clock()
            for job_id, src in found:
                reason = (
                    f"the station stopped while the job was {src}; the hub may hold a partly "
                    "written image: run it again"
                )
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(
                        state=str(JobState.INTERRUPTED),
                        finished_at=at,
                        phase=_PHASE_OF_STATE[src],
                        message=reason,
                    )
                )
                self._add_event(
                    conn,
                    job_id,
                    self._next_seq(conn, job_id),
                    JobState.INTERRUPTED,
                    at,
                    {"from": str(src), "reason": reason},
                )
            if found:
                self._append_audit(
                    conn,
                    "station",
                    "jobs-interrupted",
                    {"jobs": [j for j, _ in found], "station_id": station_id},
                )
            return [j for j, _ in found]

        return self._write(work)

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
            self._job_state(conn, job_id)
            rows = conn.execute(
                select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.seq)
            )
            return [
                EventRow(r.job_id, r.seq, JobState(r.state), r.at, _loads(r.detail)) for r in rows
            ]

        return self._read(read)

    def hub(self, eui64: str) -> HubRow | None:
        """What the station knows about a hub (None: never seen)."""
        key = _eui_or_raw(eui64)

        def read(conn: Connection) -> HubRow | None:
            r = conn.execute(select(hubs).where(hubs.c.eui64 == key)).first()
            if r is None:
                return None
            return HubRow(
                r.eui64,
                r.model,
                r.hw_version,
                r.firmware_version,
                r.first_seen,
                r.last_seen,
                r.last_job_id,
            )

        return self._read(read)


# -- helpers -------------------------------------------------------------------------------


def _final_state(result: Result) -> JobState:
    """The job state an outcome's result ends in (the enums share their values)."""
    try:
        state = JobState(str(result))
    except ValueError:
        state = None
    if state is None or not state.final:
        raise StoreError(f"an outcome's result {result!r} is not a final job state")
    return state


def _new_id(key: Any) -> int:
    if key is None or key[0] is None:
        raise StoreError("the database did not return the new row's id")
    return int(key[0])


def _loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def _batch(r: Row[Any], counts: Mapping[str, int]) -> BatchRow:
    return BatchRow(
        id=r.id,
        station_id=r.station_id,
        operator=r.operator,
        rig=r.rig,
        catalog=r.catalog,
        manifest=r.manifest,
        manifest_sha256=r.manifest_sha256,
        started_at=r.started_at,
        finished_at=r.finished_at,
        counts=dict(counts),
    )


def _job(r: Row[Any]) -> JobRow:
    return JobRow(
        id=r.id,
        batch_id=r.batch_id,
        slot=r.slot,
        port=r.port,
        profile=r.profile,
        eui64=r.eui64,
        hw_version=r.hw_version,
        found_in=r.found_in,
        state=JobState(r.state),
        version_before=r.version_before,
        version_after=r.version_after,
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
        overrides=tuple(json.loads(r.overrides or "[]")),
        notes=tuple(json.loads(r.notes or "[]")),
        started_at=r.started_at,
        finished_at=r.finished_at,
        seconds=r.seconds,
        bytes_written=r.bytes_written or 0,
    )


def _sqlstate(exc: SQLAlchemyError) -> str | None:
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) else None


def _db_error(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


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
                    hint="give --db URL, or run from the folder that holds station-data/",
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

"""The station database's tables, the schema version they make, and their value limits.

Every table the store writes is defined here, so a reader finds the whole schema (and
docs/records.md describes it) in one place. :func:`checked` holds every value to its
column's limit *before* it reaches the database, so SQLite (which stores a string of any
length in a ``VARCHAR(32)``) and PostgreSQL (which refuses it) keep exactly the same
records, and a refusal is a clear :class:`ValueTooLong` naming the column, not a driver
error in the middle of a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    Column,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import DateTime, TypeDecorator, TypeEngine

from station.events import CHAIN
from station.records.errors import StoreError, ValueTooLong

__all__ = [
    "IN_FLIGHT_INDEX",
    "LIVE_STATES",
    "SCHEMA_VERSION",
    "TEXT_LIMIT",
    "BadTimestamp",
    "UtcDateTime",
    "checked",
    "metadata",
    "parse_stored_time",
]

#: Version 2: station leases, job ownership, per-hub running/exported versions, DSP exports.
#: Version 3: a station's slots on its lease row, one job in flight per hub (a partial unique
#: index), consignments loaded once and served by every station.
#: Version 4: the latency each job's serial adapter ran at (``jobs.adapter_latency_ms``).
SCHEMA_VERSION: Final = 4
#: The states of a job still in flight (not ended), as stored.
LIVE_STATES: Final = tuple(str(s) for s in CHAIN)
#: The index that lets a hub (an EUI-64) be in flight in one job only, across every station
#: on the database: the database refuses the second, whatever the race.
IN_FLIGHT_INDEX: Final = "uq_jobs_hub_in_flight"
#: The longest text a ``Text`` column takes (messages, details, JSON lists): a hub's garbled
#: answer or a hostile file name must not fill the database.
TEXT_LIMIT: Final = 65536


class BadTimestamp(StoreError):
    """A stored time that is not a time: the database was edited by hand."""

    default_hint = "run 'station audit verify': the records were changed outside the station"


#: How SQLite keeps a time (UTC, microseconds), which sorts as text in time order.
_SQLITE_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on every backend.

    PostgreSQL keeps it as ``timestamptz``; SQLite as text (``2025-03-04 09:01:00.000000``,
    UTC by construction). Microseconds are kept on both (the audit hash covers them). Text
    that is not such a time (a hand edit) reads as :class:`BadTimestamp`, a one-line error,
    never a traceback.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError("the store takes timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.strftime(_SQLITE_FORMAT) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        return parse_stored_time(value)


def parse_stored_time(value: Any) -> datetime | None:
    """A time as a backend returns it (a ``datetime``, or SQLite's text) in UTC.

    Raises:
        BadTimestamp: anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return datetime.strptime(value, _SQLITE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise BadTimestamp(f"the station database holds {str(value)[:40]!r} where a time belongs")


metadata = MetaData()

station_meta = Table(
    "station_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

#: One row per station id: the lease of the process that runs it (see leases.py).
station_leases = Table(
    "station_leases",
    metadata,
    Column("station_id", String(64), primary_key=True),
    Column("lease_id", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_start", String(32)),
    Column("software", String(64), nullable=False),
    Column("rig", String(512), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    Column("ttl_s", Float, nullable=False),
    Column("released_at", UtcDateTime),
    #: The rig's slots as the station registered them: canonical JSON, a list of
    #: ``{"slot": n, "binding": "...", "profile": "..."}`` (version 3).
    Column("slots", Text),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(64), nullable=False),
    Column("lease_id", String(32), nullable=False),
    Column("operator", String(128), nullable=False),
    Column("rig", String(512), nullable=False),
    Column("catalog", String(1024), nullable=False),
    Column("manifest", String(512)),
    Column("manifest_sha256", String(64)),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("closed_reason", Text),
)

consignment_items = Table(
    "consignment_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("consignment_id", String(128), nullable=False),
    Column("eui64", String(23), nullable=False),
    Column("expected_model", String(128)),
    Column("expected_version", String(32)),
    Column("line", Integer, nullable=False),
    UniqueConstraint("batch_id", "eui64", name="uq_consignment_batch_eui64"),
)

#: What the station knows of each hub. The DSP update is defined on these rows: a hub whose
#: running version differs from the version last exported for it (or, never exported, its
#: baseline) is in the next export (see dsp.py).
hubs = Table(
    "hubs",
    metadata,
    Column("eui64", String(23), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("hw_version", Integer),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("last_job_id", Integer),
    Column("baseline_version", String(32)),
    Column("running_version", String(32)),
    Column("running_sha256", String(64)),
    Column("running_job_id", Integer),
    Column("running_at", UtcDateTime),
    Column("exported_version", String(32)),
    Column("export_id", Integer),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("lease_id", String(32), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("port", String(512), nullable=False),
    Column("profile", String(128), nullable=False),
    Column("eui64", String(64)),
    Column("hw_version", Integer),
    Column("found_in", String(32)),
    Column("state", String(16), nullable=False),
    Column("version_before", String(32)),
    Column("version_after", String(32)),
    Column("target_version", String(32)),
    Column("image_version", String(32)),
    Column("image_path", String(1024)),
    Column("image_sha256", String(64)),
    Column("signature", String(32)),
    Column("signer", String(256)),
    Column("verify_method", String(32)),
    Column("verify_detail", Text),
    Column("phase", String(16)),
    Column("message", Text),
    Column("hint", Text),
    Column("error", String(64)),
    Column("plan", Text),
    Column("behind", Integer),
    Column("overrides", Text, nullable=False, default="[]"),
    Column("notes", Text, nullable=False, default="[]"),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("seconds", Float),
    Column("bytes_written", Integer, nullable=False, default=0),
    # What the port's USB-serial adapter ran at after low-latency mode was asked for
    # (ms; NULL: not a serial port, or the adapter does not say).
    Column("adapter_latency_ms", Float),
    # Pages of the image written, and left as they were because the flash already held
    # them (NULL: a protocol that does not write by pages, a job that wrote nothing).
    Column("pages_written", Integer),
    Column("pages_skipped", Integer),
    Index("ix_jobs_batch", "batch_id"),
    Index("ix_jobs_eui64", "eui64"),
    Index("ix_jobs_state", "state"),
    # NULL EUI-64s (a job not yet identified) never collide; an ended job leaves the index.
    Index(
        IN_FLIGHT_INDEX,
        "eui64",
        unique=True,
        sqlite_where=text("state IN (" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"),
        postgresql_where=text("state IN (" + ", ".join(f"'{s}'" for s in LIVE_STATES) + ")"),
    ),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("detail", Text, nullable=False),
    UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),
)

#: One DSP firmware-version update: made once, when its batch closes; its items are the hub
#: changes it carried, each hub change in exactly one export.
exports = Table(
    "exports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False, unique=True),
    Column("station_id", String(64), nullable=False),
    Column("operator", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
)

export_items = Table(
    "export_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("export_id", Integer, ForeignKey("exports.id"), nullable=False),
    Column("eui64", String(23), nullable=False),
    Column("model", String(128), nullable=False),
    Column("hw_version", Integer),
    Column("consignment_id", String(128)),
    Column("version_before", String(32)),
    Column("version_after", String(32), nullable=False),
    Column("image_sha256", String(64)),
    Column("verify_method", String(32)),
    Column("evidence", String(32), nullable=False),
    Column("completed_at", UtcDateTime, nullable=False),
    Column("job_id", Integer, nullable=False),
    Column("station_id", String(64), nullable=False),
    Column("operator", String(128), nullable=False),
    UniqueConstraint("export_id", "eui64", name="uq_export_items_export_eui64"),
)

#: A consignment: a manifest loaded once (by any station or command) and served by every
#: station on the database until it is closed. Its hubs are ``consignment_hubs``.
consignments = Table(
    "consignments",
    metadata,
    Column("consignment_id", String(128), primary_key=True),
    Column("manifest", String(1024), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("hubs", Integer, nullable=False),
    Column("loaded_at", UtcDateTime, nullable=False),
    Column("loaded_by", String(128), nullable=False),
    Column("closed_at", UtcDateTime),
    Column("closed_by", String(128)),
)

consignment_hubs = Table(
    "consignment_hubs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "consignment_id",
        String(128),
        ForeignKey("consignments.consignment_id"),
        nullable=False,
    ),
    Column("eui64", String(23), nullable=False),
    Column("expected_model", String(128)),
    Column("expected_version", String(32)),
    Column("line", Integer, nullable=False),
    UniqueConstraint("consignment_id", "eui64", name="uq_consignment_hubs_eui64"),
    Index("ix_consignment_hubs_eui64", "eui64"),
)

audit = Table(
    "audit",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime, nullable=False),
    Column("operator", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)


def checked(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` for an insert or update of ``table``, each string held to its column's
    limit (``String(n)``: n characters; ``Text``: :data:`TEXT_LIMIT`) and free of NUL.

    The same rule on every backend: SQLite would store what PostgreSQL refuses.

    Raises:
        ValueTooLong: naming the table, the column and the length.
    """
    out = dict(values)
    for name, value in out.items():
        if not isinstance(value, str):
            continue
        column = table.c[name]
        limit = getattr(column.type, "length", None) or TEXT_LIMIT
        if len(value) > limit:
            raise ValueTooLong(
                f"{table.name}.{name} takes at most {limit} characters; this value has "
                f"{len(value)} ({value[:40]!r}...)"
            )
        if "\0" in value:
            raise ValueTooLong(f"{table.name}.{name}: the value holds a NUL character")
    return out

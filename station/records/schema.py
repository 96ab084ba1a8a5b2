"""The station database's tables and the schema version they make.

Every table the store writes is defined here, so a reader finds the whole schema (and
docs/records.md describes it) in one place.
"""

from __future__ import annotations

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
)
from sqlalchemy.types import DateTime, TypeDecorator

__all__ = ["SCHEMA_VERSION", "UtcDateTime", "metadata"]

SCHEMA_VERSION: Final = 1


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on every backend.

    PostgreSQL keeps it as ``timestamptz``; SQLite as text without an offset, which is UTC
    by construction here. Microseconds are kept on both (the audit hash covers them).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store takes timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

station_meta = Table(
    "station_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(128), nullable=False),
    Column("operator", String(128), nullable=False),
    Column("rig", String(512), nullable=False),
    Column("catalog", String(1024), nullable=False),
    Column("manifest", String(512)),
    Column("manifest_sha256", String(64)),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
)

consignment_items = Table(
    "consignment_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("consignment_id", String(128), nullable=False),
    Column("eui64", String(23), nullable=False),
    Column("expected_model", String(128)),
    Column("line", Integer, nullable=False),
    UniqueConstraint("batch_id", "eui64", name="uq_consignment_batch_eui64"),
)

hubs = Table(
    "hubs",
    metadata,
    Column("eui64", String(23), primary_key=True),
    Column("model", String(128), nullable=False),
    Column("hw_version", Integer),
    Column("firmware_version", String(32)),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("last_job_id", Integer),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("port", String(512), nullable=False),
    Column("profile", String(128), nullable=False),
    Column("eui64", String(64)),
    Column("hw_version", Integer),
    Column("found_in", String(32)),
    Column("state", String(16), nullable=False),
    Column("version_before", String(32)),
    Column("version_after", String(32)),
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
    Index("ix_jobs_batch", "batch_id"),
    Index("ix_jobs_eui64", "eui64"),
    Index("ix_jobs_state", "state"),
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

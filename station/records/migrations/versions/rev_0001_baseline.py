"""Baseline: schema version 2 exactly as schema.py made it before migrations.

A database made before migrations (no alembic_version table, station_meta schema_version 2)
is stamped at this revision by 'station db upgrade', not migrated.

Revision ID: 0001
Revises:
Create Date: 2026-12-06 04:09:33.799462
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from station.records.schema import UtcDateTime

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Every table of schema version 2, and station_meta's rows."""
    op.create_table(
        "audit",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("lease_id", sa.String(length=32), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("rig", sa.String(length=512), nullable=False),
        sa.Column("catalog", sa.String(length=1024), nullable=False),
        sa.Column("manifest", sa.String(length=512), nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("closed_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "hubs",
        sa.Column("eui64", sa.String(length=23), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("hw_version", sa.Integer(), nullable=True),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=False),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.Column("baseline_version", sa.String(length=32), nullable=True),
        sa.Column("running_version", sa.String(length=32), nullable=True),
        sa.Column("running_sha256", sa.String(length=64), nullable=True),
        sa.Column("running_job_id", sa.Integer(), nullable=True),
        sa.Column("running_at", UtcDateTime(), nullable=True),
        sa.Column("exported_version", sa.String(length=32), nullable=True),
        sa.Column("export_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("eui64"),
    )
    op.create_table(
        "station_leases",
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("lease_id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_start", sa.String(length=32), nullable=True),
        sa.Column("software", sa.String(length=64), nullable=False),
        sa.Column("rig", sa.String(length=512), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("ttl_s", sa.Float(), nullable=False),
        sa.Column("released_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("station_id"),
    )
    op.create_table(
        "station_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "consignment_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("consignment_id", sa.String(length=128), nullable=False),
        sa.Column("eui64", sa.String(length=23), nullable=False),
        sa.Column("expected_model", sa.String(length=128), nullable=True),
        sa.Column("expected_version", sa.String(length=32), nullable=True),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "eui64", name="uq_consignment_batch_eui64"),
    )
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("lease_id", sa.String(length=32), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("port", sa.String(length=512), nullable=False),
        sa.Column("profile", sa.String(length=128), nullable=False),
        sa.Column("eui64", sa.String(length=64), nullable=True),
        sa.Column("hw_version", sa.Integer(), nullable=True),
        sa.Column("found_in", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version_before", sa.String(length=32), nullable=True),
        sa.Column("version_after", sa.String(length=32), nullable=True),
        sa.Column("target_version", sa.String(length=32), nullable=True),
        sa.Column("image_version", sa.String(length=32), nullable=True),
        sa.Column("image_path", sa.String(length=1024), nullable=True),
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("signature", sa.String(length=32), nullable=True),
        sa.Column("signer", sa.String(length=256), nullable=True),
        sa.Column("verify_method", sa.String(length=32), nullable=True),
        sa.Column("verify_detail", sa.Text(), nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("hint", sa.Text(), nullable=True),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("plan", sa.Text(), nullable=True),
        sa.Column("behind", sa.Integer(), nullable=True),
        sa.Column("overrides", sa.Text(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("bytes_written", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_batch", "jobs", ["batch_id"], unique=False)
    op.create_index("ix_jobs_eui64", "jobs", ["eui64"], unique=False)
    op.create_index("ix_jobs_state", "jobs", ["state"], unique=False)

    op.create_table(
        "export_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("export_id", sa.Integer(), nullable=False),
        sa.Column("eui64", sa.String(length=23), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("hw_version", sa.Integer(), nullable=True),
        sa.Column("consignment_id", sa.String(length=128), nullable=True),
        sa.Column("version_before", sa.String(length=32), nullable=True),
        sa.Column("version_after", sa.String(length=32), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("verify_method", sa.String(length=32), nullable=True),
        sa.Column("evidence", sa.String(length=32), nullable=False),
        sa.Column("completed_at", UtcDateTime(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"],
            ["exports.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("export_id", "eui64", name="uq_export_items_export_eui64"),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),
    )
    meta = sa.table("station_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.bulk_insert(
        meta,
        [
            # Older releases read this and refuse any other version.
            {"key": "schema_version", "value": "2"},
            # The row every audit append updates first (see audit.append).
            {"key": "audit_lock", "value": "audit appends serialise on this row"},
        ],
    )


def downgrade() -> None:
    """Stations do not downgrade: restore the backup taken before the upgrade."""
    raise NotImplementedError("restore the database backup taken before 'station db upgrade'")

"""Schema version 3: many stations on one database.

A station's slots on its lease row (its registration), the partial unique index that keeps a
hub in flight in one job only across every station, and consignments loaded once and served
by every station (docs/records.md, "Many stations on one database").

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 04:32:36.612433
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from station.records.errors import StoreError
from station.records.schema import UtcDateTime

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

#: A job still in flight (schema.LIVE_STATES as of this revision).
_LIVE = (
    "state IN ('detected', 'identified', 'planned', 'erasing', 'writing', 'verifying', 'booting')"
)


def upgrade() -> None:
    """The consignment tables, the in-flight index, the slots column; schema version 3."""
    # The index cannot be made over two live jobs of one hub (stations of the release before
    # let that happen): they are ended by a station's recovery, not by a migration, which
    # would change records behind the audit chain's back.
    clash = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT eui64, COUNT(*) FROM jobs WHERE eui64 IS NOT NULL AND {_LIVE} "
                "GROUP BY eui64 HAVING COUNT(*) > 1"
            )
        )
        .first()
    )
    if clash is not None:
        raise StoreError(
            f"{clash[1]} jobs have hub {clash[0]} in flight at once: this schema allows one",
            hint="start each station once with the release that wrote them (its recovery "
            "ends the jobs of stations that are gone), then upgrade",
        )
    op.create_table(
        "consignments",
        sa.Column("consignment_id", sa.String(length=128), nullable=False),
        sa.Column("manifest", sa.String(length=1024), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("hubs", sa.Integer(), nullable=False),
        sa.Column("loaded_at", UtcDateTime(), nullable=False),
        sa.Column("loaded_by", sa.String(length=128), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.Column("closed_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("consignment_id"),
    )
    op.create_table(
        "consignment_hubs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("consignment_id", sa.String(length=128), nullable=False),
        sa.Column("eui64", sa.String(length=23), nullable=False),
        sa.Column("expected_model", sa.String(length=128), nullable=True),
        sa.Column("expected_version", sa.String(length=32), nullable=True),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["consignment_id"],
            ["consignments.consignment_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("consignment_id", "eui64", name="uq_consignment_hubs_eui64"),
    )
    with op.batch_alter_table("consignment_hubs", schema=None) as batch_op:
        batch_op.create_index("ix_consignment_hubs_eui64", ["eui64"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "uq_jobs_hub_in_flight",
            ["eui64"],
            unique=True,
            sqlite_where=sa.text(_LIVE),
            postgresql_where=sa.text(_LIVE),
        )

    with op.batch_alter_table("station_leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slots", sa.Text(), nullable=True))

    meta = sa.table("station_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    # Stations of the release before read this and refuse the new schema.
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="3"))


def downgrade() -> None:
    """Stations do not downgrade: restore the backup taken before the upgrade."""
    raise NotImplementedError("restore the database backup taken before 'station db upgrade'")

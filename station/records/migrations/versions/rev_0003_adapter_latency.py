"""Schema version 4: the latency each job's serial adapter ran at.

``jobs.adapter_latency_ms`` (nullable): what the port's USB-serial adapter ended up with
after the station asked for low-latency mode (docs/hardware.md, "Adapter latency"). Jobs
recorded before stay NULL; the audit chain compares a missing key as NULL, so they still
match their audited records.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """The adapter_latency_ms column; schema version 4."""
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("adapter_latency_ms", sa.Float(), nullable=True))
    meta = sa.table("station_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    # Stations of the release before read this and refuse the new schema.
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="4"))


def downgrade() -> None:
    """Stations do not downgrade: restore the backup taken before the upgrade."""
    raise NotImplementedError("restore the database backup taken before 'station db upgrade'")

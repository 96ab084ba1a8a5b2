"""Pages written and skipped per job: a write of only what changed says how much it left.

Two nullable columns on ``jobs``; jobs recorded before have NULL (not written by pages, as
far as anyone knows). Schema version stays 3: stations of the release before refuse a
database at a revision they do not know.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 07:00:34.100636
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """The two columns on ``jobs``."""
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pages_written", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pages_skipped", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Stations do not downgrade: restore the backup taken before the upgrade."""
    raise NotImplementedError("restore the database backup taken before 'station db upgrade'")

"""Write a new revision: ``python -m station.records.migrations new "what it adds"``.

For developers changing :mod:`station.records.schema` (recipe: docs/records.md, "Changing the
schema"). Alembic compares the tables in schema.py with a scratch SQLite database migrated
to the current head and writes what differs as ``versions/rev_NNNN_<slug>.py``, numbered
after the head. Read it, fix what autogenerate cannot know (data, server defaults), format it.
"""

from __future__ import annotations

import sys

from alembic import command
from sqlalchemy import create_engine

from station.records import migrations


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "new" or not argv[1].strip():
        print('usage: python -m station.records.migrations new "what the revision adds"')
        return 2
    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            migrations.upgrade(conn, "the scratch database")
            rev_id = f"{int(migrations.head()) + 1:04d}"
            script = command.revision(
                migrations.alembic_config(conn), argv[1], autogenerate=True, rev_id=rev_id
            )
    finally:
        engine.dispose()
    path = getattr(script, "path", None)
    print(f"wrote {path}: read it, then run ruff format and the migration tests")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

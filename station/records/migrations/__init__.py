"""Migrations of the station database (Alembic), run by the station itself: no alembic.ini.

The schema is made and changed only by the revisions in ``versions/``, in order, on SQLite and
PostgreSQL alike: revision ``0001`` is schema version 2 exactly as :mod:`schema` defines it.
Who runs them differs by backend (see docs/warehouse.md): on PostgreSQL the database's owner
runs ``station db init|upgrade`` and stations only check that the schema is at this release's
head; on SQLite (a single bench, the demo) the station runs them itself when it opens its file.

A database made before the migrations (schema version 2, no ``alembic_version`` table) counts
as the baseline: it is stamped there, and upgraded from there, by the first upgrade.
Adding a revision is the recipe in docs/records.md ("Changing the schema").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import Connection, inspect, select, text

from station.records.errors import StoreError
from station.records.schema import SCHEMA_VERSION, metadata, station_meta

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "BASELINE",
    "SchemaState",
    "alembic_config",
    "alembic_head",
    "head",
    "init",
    "inspect_state",
    "upgrade",
]

#: The first revision: schema version 2 as it was before migrations.
BASELINE: Final = "0001"
#: ``station_meta.schema_version`` of a database made before migrations that equals BASELINE.
_BASELINE_SCHEMA_VERSION: Final = "2"
#: PostgreSQL advisory lock key that serialises schema changes (two admins, two benches).
_LOCK_KEY: Final = 0x5354_4E44_4200  # "STNDB"
_HERE: Final = Path(__file__).resolve().parent


def alembic_config(conn: Connection | None = None) -> Config:
    """Alembic's configuration for the station's revisions, running on ``conn``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    # Revision files must be importable module names (mypy checks them): rev_0002_slug.py.
    cfg.set_main_option("file_template", "rev_%%(rev)s_%%(slug)s")
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    """Alembic's view of ``versions/`` (imported only when a migration or an unknown
    revision needs it: Alembic takes a good part of a second to import, and every station
    start checks the revision)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def head() -> str:
    """The revision this release writes: the highest-numbered ``versions/rev_NNNN_*.py``
    (revision ids are the numbers; tests check that this is Alembic's single head)."""
    numbers = [
        found.group(1)
        for path in (_HERE / "versions").glob("rev_*.py")
        if (found := re.fullmatch(r"rev_(\d{4})_\w+\.py", path.name))
    ]
    if not numbers:
        raise StoreError(f"no migrations in {_HERE / 'versions'}: the installation is broken")
    return max(numbers)


def alembic_head() -> str:
    """The single head of ``versions/`` as Alembic reads it."""
    heads = _scripts().get_heads()
    if len(heads) != 1:
        raise StoreError(f"the station's migrations have {len(heads)} heads: {sorted(heads)}")
    return heads[0]


@dataclass(frozen=True)
class SchemaState:
    """What a database holds of the station schema.

    Attributes:
        revision: the ``alembic_version`` row (None: no such table, or empty).
        schema_version: ``station_meta``'s ``schema_version`` (None: no such row).
        tables: the station's tables present.
        head: the revision this release writes.
    """

    revision: str | None
    schema_version: str | None
    tables: frozenset[str]
    head: str

    @property
    def empty(self) -> bool:
        """No station schema at all: ``station db init`` makes one."""
        return self.revision is None and not self.tables

    @property
    def current(self) -> str | None:
        """The revision the schema is at: a database made before migrations at schema
        version 2 is at the baseline; None when empty or not a schema we know."""
        if self.revision is not None:
            return self.revision
        if self.schema_version == _BASELINE_SCHEMA_VERSION:
            return BASELINE
        return None

    @property
    def at_head(self) -> bool:
        """Whether this release can use the database as it is."""
        return self.current == self.head

    def refusal(self, where: str) -> str | None:
        """Why no migration of this release can bring the database to head, or None."""
        if self.empty:
            return None
        if self.revision is None and self.current is None:
            have = self.schema_version or "unknown"
            return (
                f"{where} holds station records of schema version {have}; this station "
                f"writes version {SCHEMA_VERSION}"
            )
        if self.revision is not None and self.revision != self.head and not _known(self.revision):
            return (
                f"{where} holds station schema revision {self.revision}, unknown to this "
                f"release (head {self.head}): it was upgraded by a newer release"
            )
        return None

    def describe(self) -> str:
        """One line: the revision against head."""
        if self.empty:
            return f"no station schema (head {self.head})"
        stamped = "" if self.revision is not None else " (made before migrations, not stamped)"
        state = "up to date" if self.at_head else "upgrade needed"
        return f"revision {self.current or '?'}{stamped}, head {self.head}: {state}"


def _known(revision: str) -> bool:
    return revision in {s.revision for s in _scripts().walk_revisions()}


def inspect_state(conn: Connection) -> SchemaState:
    """Read what ``conn``'s database holds of the schema (reads only)."""
    present = set(inspect(conn).get_table_names())
    revision: str | None = None
    if "alembic_version" in present:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(rows) > 1:
            raise StoreError(f"the database is at {len(rows)} revisions at once: {sorted(rows)}")
        revision = str(rows[0]) if rows else None
    schema_version: str | None = None
    if station_meta.name in present:
        query = select(station_meta.c.value).where(station_meta.c.key == "schema_version")
        found = conn.execute(query).scalar()
        schema_version = None if found is None else str(found)
    tables = frozenset(present & set(metadata.tables))
    return SchemaState(revision, schema_version, tables, head())


def _lock(conn: Connection) -> None:
    """Serialise schema changes on PostgreSQL (SQLite: the caller's BEGIN IMMEDIATE does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def upgrade(conn: Connection, where: str) -> SchemaState:
    """Bring the schema to head inside ``conn``'s open transaction, making it if empty;
    a database made before migrations is stamped at the baseline first.

    Returns:
        what the database held before.

    Raises:
        StoreError: a schema no revision of this release leads from.
    """
    _lock(conn)
    state = inspect_state(conn)
    refusal = state.refusal(where)
    if refusal is not None:
        raise StoreError(refusal, hint="give this release a database it made (--db)")
    if state.at_head and state.revision is not None:
        return state
    from alembic import command

    cfg = alembic_config(conn)
    if state.revision is None and state.current is not None:
        command.stamp(cfg, state.current)
    command.upgrade(cfg, "head")
    return state


def init(conn: Connection, where: str) -> str:
    """Make the schema at head inside ``conn``'s open transaction; returns head.

    Raises:
        StoreError: the database holds a station schema already.
    """
    _lock(conn)
    state = inspect_state(conn)
    if not state.empty:
        raise StoreError(
            f"{where} holds a station schema already: {state.describe()}",
            hint="'station db upgrade' brings it to this release; 'station db status' shows it",
        )
    from alembic import command

    command.upgrade(alembic_config(conn), "head")
    return state.head

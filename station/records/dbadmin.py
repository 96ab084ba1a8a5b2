"""What ``station db init|upgrade|status`` do to a database, by URL.

The admin's side of :mod:`station.records.migrations`: each call opens its own engine, runs in
one transaction (PostgreSQL: all or nothing; SQLite: ``BEGIN IMMEDIATE``, so a station opening
the same file waits) and closes it. Stations never call these on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from station.records import migrations
from station.records.errors import StoreError
from station.records.migrations import SchemaState
from station.records.store import open_engine

__all__ = ["database_state", "init_database", "upgrade_database"]

T = TypeVar("T")


def _run(url: str, work: Callable[[Connection, str], T], *, create: bool, write: bool) -> T:
    engine = open_engine(url, create=create)
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.execution_options(station_write=write)
            with conn.begin():
                return work(conn, where)
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        said = str(orig if orig is not None else exc).strip().splitlines()[0]
        raise StoreError(f"{where}: {said}") from exc
    finally:
        engine.dispose()


def init_database(url: str) -> str:
    """Make the station schema at head in an empty database (a SQLite file is made);
    returns the revision.

    Raises:
        StoreError: the database holds a station schema already, or cannot be reached.
    """
    return _run(url, migrations.init, create=True, write=True)


def upgrade_database(url: str) -> SchemaState:
    """Bring an existing station schema to head (stamping one made before migrations);
    returns what the database held before.

    Raises:
        StoreError: no station schema there (``init`` makes one), or one this release
            cannot upgrade.
    """

    def work(conn: Connection, where: str) -> SchemaState:
        if migrations.inspect_state(conn).empty:
            raise StoreError(
                f"{where} holds no station schema to upgrade",
                hint=f"'station db init --db {where}' makes one",
            )
        return migrations.upgrade(conn, where)

    return _run(url, work, create=False, write=True)


def database_state(url: str) -> SchemaState:
    """What the database holds of the schema (reads only)."""
    return _run(url, lambda conn, _where: migrations.inspect_state(conn), create=False, write=False)

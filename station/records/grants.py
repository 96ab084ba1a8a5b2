"""PostgreSQL roles for a warehouse: the GRANTs that ``station db grants`` prints.

Three roles (docs/warehouse.md, "Database roles"): the **owner** makes and upgrades the schema
(``station db init|upgrade``) and runs these statements; the **station** role records
batches, jobs and hubs, and may only append to the history tables (audit, job events,
exports), never change or delete a row of them; the **report** role reads only. Nobody but
the owner may DELETE, TRUNCATE or alter anything.

The station updates one row that is not its own record: ``station_meta``'s ``audit_lock``,
which every audit append touches to queue appenders (:func:`station.records.audit.append`).
A row-level policy keeps that UPDATE to that row, so a station cannot rewrite
``schema_version``.
"""

from __future__ import annotations

import re
from typing import Final

from drivers.errors import ConfigError
from station.records.schema import metadata

__all__ = ["STATION_PRIVILEGES", "grant_statements"]

#: What the station role may do on each table of the schema, and why. Every table of
#: schema.py must be here (a test checks): a new table is not usable by stations until its
#: revision's author says what they may do with it.
STATION_PRIVILEGES: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    "station_meta": (
        ("SELECT", "UPDATE (value)"),
        "reads schema_version; updates the audit_lock row only (row policy)",
    ),
    "station_leases": (
        ("SELECT", "INSERT", "UPDATE"),
        "registers, renews, releases and takes over station leases",
    ),
    "batches": (("SELECT", "INSERT", "UPDATE"), "opens and closes batches"),
    "consignment_items": (("SELECT", "INSERT"), "loads a batch's manifest"),
    "consignments": (
        ("SELECT", "INSERT", "UPDATE"),
        "loads a consignment once for every station, and closes it",
    ),
    "consignment_hubs": (("SELECT", "INSERT"), "lists a loaded consignment's hubs"),
    "hubs": (("SELECT", "INSERT", "UPDATE"), "keeps each hub's running and exported version"),
    "jobs": (("SELECT", "INSERT", "UPDATE"), "records each job's state and outcome"),
    "job_events": (("SELECT", "INSERT"), "appends job transitions; never changes one"),
    "exports": (("SELECT", "INSERT"), "appends a DSP export at a batch's close"),
    "export_items": (("SELECT", "INSERT"), "appends the hub changes an export carried"),
    "audit": (("SELECT", "INSERT"), "appends to the hash chain; never updates or deletes"),
}
#: Alembic's table: stations read it to check the schema is at their release's head.
VERSION_TABLE: Final = "alembic_version"
_ROLE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*$")


def _role(name: str, option: str) -> str:
    if not _ROLE.match(name) or len(name.encode()) > 63:
        raise ConfigError(
            f"{option} takes a PostgreSQL role name (letters, digits, _ $ -, at most 63 "
            f"bytes), not {name!r}"
        )
    return f'"{name}"'  # quoted: the name exactly as given (case kept, keywords allowed)


def _sequences() -> list[str]:
    """The sequences behind autoincrement keys (PostgreSQL names them table_column_seq)."""
    out = []
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is not None:
            out.append(f"{table.name}_{column.name}_seq")
    return out


def grant_statements(station_role: str, report_role: str) -> list[str]:
    """The SQL the schema's owner runs to give the station and report roles their rights;
    idempotent (it revokes first), to run again after every ``station db upgrade``.

    Raises:
        ConfigError: a role name that is not one, or the same role twice.
    """
    station = _role(station_role, "--station-role")
    report = _role(report_role, "--report-role")
    if station == report:
        raise ConfigError("the station and report roles must differ: one writes, one reads")
    missing = sorted(set(metadata.tables) - set(STATION_PRIVILEGES))
    if missing:
        raise ConfigError(f"no station privileges defined for tables {missing} (grants.py)")
    tables = [t.name for t in metadata.sorted_tables]
    everything = ", ".join([*tables, VERSION_TABLE])
    out = [
        "BEGIN;",
        f"REVOKE ALL ON {everything} FROM {station}, {report};",
        f"GRANT USAGE ON SCHEMA public TO {station}, {report};",
        f"GRANT SELECT ON {VERSION_TABLE} TO {station};",
    ]
    for name in tables:
        privileges, _why = STATION_PRIVILEGES[name]
        out.append(f"GRANT {', '.join(privileges)} ON {name} TO {station};")
    out += [f"GRANT USAGE ON SEQUENCE {s} TO {station};" for s in _sequences()]
    out += [
        "ALTER TABLE station_meta ENABLE ROW LEVEL SECURITY;",
        "DROP POLICY IF EXISTS station_meta_read ON station_meta;",
        "CREATE POLICY station_meta_read ON station_meta FOR SELECT USING (true);",
        "DROP POLICY IF EXISTS station_meta_audit_lock ON station_meta;",
        f"CREATE POLICY station_meta_audit_lock ON station_meta FOR UPDATE TO {station} "
        "USING (key = 'audit_lock') WITH CHECK (key = 'audit_lock');",
        f"GRANT SELECT ON {everything} TO {report};",
        "COMMIT;",
    ]
    return out

"""``station db init|upgrade|status|grants``: the database admin's commands.

On PostgreSQL the schema is made and upgraded only by these, run as the database's owner;
stations refuse a database that is missing the schema or behind their release
(docs/warehouse.md). On SQLite the station runs the same migrations itself when it opens its
file, so these are optional there.
"""

from __future__ import annotations

import argparse
import json
import os

from rich.console import Console

from station.paths import DATA
from station.records.dbadmin import database_state, init_database, upgrade_database
from station.records.grants import grant_statements
from station.records.store import default_url

__all__ = ["add_commands"]


def _url(args: argparse.Namespace) -> str:
    return str(args.db or os.environ.get("STATION_DB") or default_url(DATA))


def cmd_db_init(args: argparse.Namespace, err: Console) -> int:
    url = _url(args)
    revision = init_database(url)
    print(f"made the station schema at revision {revision}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace, err: Console) -> int:
    was = upgrade_database(_url(args))
    if was.revision is None:
        print(f"stamped the station schema made before migrations at revision {was.current}")
    if was.current == was.head:
        if was.revision is not None:
            print(f"the station schema is at revision {was.head} already")
    else:
        print(f"upgraded the station schema from revision {was.current} to {was.head}")
    return 0


def cmd_db_status(args: argparse.Namespace, err: Console) -> int:
    state = database_state(_url(args))
    if args.json:
        doc = {
            "revision": state.revision,
            "current": state.current,
            "head": state.head,
            "schema_version": state.schema_version,
            "up_to_date": state.at_head,
            "empty": state.empty,
        }
        print(json.dumps(doc, sort_keys=True))
    else:
        print(state.describe())
    return 0 if state.at_head else 1


def cmd_db_grants(args: argparse.Namespace, err: Console) -> int:
    for line in grant_statements(args.station_role, args.report_role):
        print(line)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``db`` with the station's parser."""
    p = sub.add_parser(
        "db",
        help="make, upgrade and inspect the station schema; print the PostgreSQL grants",
        description="The database admin's commands (docs/warehouse.md). On PostgreSQL run "
        "them as the database's owner: stations neither create nor upgrade the schema there. "
        "On SQLite a station does both itself when it opens its file.",
    )
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    def db_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--db",
            help="database URL (sqlite:///path.db, postgresql+psycopg://owner@host/db); "
            f"default $STATION_DB, else {DATA / 'station.db'}",
        )

    q = dsub.add_parser(
        "init",
        help="make the station schema in an empty database (refuses one that has it)",
        epilog="exit status: 0 made, 2 the schema is there already or the database failed.",
    )
    db_arg(q)
    q.set_defaults(func=cmd_db_init)

    q = dsub.add_parser(
        "upgrade",
        help="bring the station schema to this release's revision (back it up first, stop "
        "the stations)",
        description="Run every migration between the database's revision and this release's. "
        "A schema made before migrations (schema version 2, no alembic_version table) is "
        "recognised and stamped at the baseline revision first.",
        epilog="exit status: 0 up to date, 2 no schema (use init) or one this release cannot "
        "upgrade.",
    )
    db_arg(q)
    q.set_defaults(func=cmd_db_upgrade)

    q = dsub.add_parser(
        "status",
        help="the database's schema revision against this release's",
        epilog="exit status: 0 up to date, 1 an upgrade (or init) is needed, 2 unreachable.",
    )
    db_arg(q)
    q.add_argument("--json", action="store_true", help="one JSON object on standard output")
    q.set_defaults(func=cmd_db_status)

    q = dsub.add_parser(
        "grants",
        help="print the SQL that gives a station role and a read-only report role their "
        "rights on PostgreSQL",
        description="Print the GRANT statements (and the row policy on station_meta) the "
        "schema's owner runs, e.g. 'station db grants ... | psql -v ON_ERROR_STOP=1 URL'. "
        "The station role may append to audit, job_events, exports and export_items but "
        "never update or delete them; the report role reads only. Idempotent: run it again "
        "after every 'station db upgrade'. docs/warehouse.md explains each grant.",
    )
    q.add_argument("--station-role", required=True, help="the role stations log in as")
    q.add_argument("--report-role", required=True, help="the read-only reporting role")
    q.set_defaults(func=cmd_db_grants)

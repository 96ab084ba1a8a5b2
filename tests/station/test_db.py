"""The schema under migrations, ``station db init|upgrade|status|grants``, and the warehouse's
least-privilege roles on a real PostgreSQL.

Tests taking ``db_url`` run on SQLite, and on PostgreSQL too when STATION_TEST_PG_URL is set
(every station table there is dropped first).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.exc import ProgrammingError

from firmware_images.catalog import Catalog
from firmware_images.trust import TrustStore
from sim.pty import SimHub
from station.demo import DEMO_TARGET, prepare_demo_catalog
from station.events import JobState
from station.records import migrations
from station.records.dbadmin import database_state, init_database, upgrade_database
from station.records.errors import StoreError
from station.records.grants import STATION_PRIVILEGES, grant_statements
from station.records.keys import KeyRing, StationKey
from station.records.schema import SCHEMA_VERSION, metadata
from station.records.store import Store

from .recordkit import PG_URL, STATION, drop_pg_schema, eui, open_store, passed, walk

CLI = [sys.executable, "-m", "station.cli"]
SIZE = 8192


def _station(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _empty_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{(tmp_path / 'station.db').as_posix()}"
    if not PG_URL:
        pytest.skip("STATION_TEST_PG_URL is not set: no PostgreSQL to test against")
    drop_pg_schema(PG_URL)
    return PG_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no station schema."""
    return _empty_url(request.param, tmp_path)


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _legacy_v2(url: str) -> None:
    """A database as releases before migrations made it: schema v2 (the baseline, which
    test_the_migrated_schema_is_exactly_schema_py proves equal to what create_all made then)
    with its meta rows, and no alembic_version."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrations.alembic_config(conn), migrations.BASELINE)
            conn.execute(text("DROP TABLE alembic_version"))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


# -- migrations ------------------------------------------------------------------------------


def test_the_migrations_have_one_head_and_importable_file_names() -> None:
    """Stations read head from the file names (no Alembic import at start): they must
    agree with Alembic's one head, and each file's revision id is its number."""
    scripts = ScriptDirectory.from_config(migrations.alembic_config())
    chain = [s.revision for s in scripts.walk_revisions()]  # head first
    assert chain[0] == migrations.head() == migrations.alembic_head()
    assert chain[-1] == migrations.BASELINE
    versions = Path(migrations.__file__).parent / "versions"
    for path in versions.glob("*.py"):
        found = re.fullmatch(r"rev_(\d{4})_\w+\.py", path.name)
        assert found or path.name == "__init__.py", path.name
        if found:
            assert scripts.get_revision(found.group(1)).path == str(path), path.name


def test_the_migrated_schema_is_exactly_schema_py(empty_url: str) -> None:
    """The baseline revision makes schema.py's tables, nothing more or less, on both."""
    assert init_database(empty_url) == migrations.head()
    assert _differences(empty_url) == []
    state = database_state(empty_url)
    assert state.revision == migrations.head() and state.at_head
    assert state.schema_version == str(SCHEMA_VERSION)


def test_db_init_refuses_a_database_that_has_the_schema(empty_url: str) -> None:
    init_database(empty_url)
    done = _station("db", "init", "--db", empty_url)
    assert done.returncode == 2
    head = migrations.head()
    assert f"holds a station schema already: revision {head}, head {head}: up to date" in (
        done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_db_commands_make_upgrade_and_report_status(empty_url: str) -> None:
    status = _station("db", "status", "--db", empty_url, "--json")
    if empty_url.startswith("sqlite"):  # no file: nothing to report on, and none is made
        assert status.returncode == 2 and "no station database at" in status.stderr
    else:
        assert status.returncode == 1, status.stderr
        assert json.loads(status.stdout)["empty"] is True
    upgrade = _station("db", "upgrade", "--db", empty_url)
    assert upgrade.returncode == 2
    if empty_url.startswith("sqlite"):
        assert "no station database at" in upgrade.stderr
    else:
        assert "holds no station schema to upgrade" in upgrade.stderr
        assert "station db init" in upgrade.stderr
    init = _station("db", "init", "--db", empty_url)
    assert init.returncode == 0, init.stderr
    head = migrations.head()
    assert f"made the station schema at revision {head}" in init.stdout
    status = _station("db", "status", "--db", empty_url)
    assert status.returncode == 0
    assert status.stdout.strip() == f"revision {head}, head {head}: up to date"
    upgrade = _station("db", "upgrade", "--db", empty_url)
    assert upgrade.returncode == 0
    assert f"at revision {head} already" in upgrade.stdout


def test_a_database_made_before_migrations_is_stamped_by_upgrade(empty_url: str) -> None:
    """Schema v2 made before migrations (no alembic_version) is the baseline: readable as
    is while the baseline is head, and stamped (its tables and rows kept), then upgraded to
    head, by ``station db upgrade``."""
    _legacy_v2(empty_url)
    head = migrations.head()
    status = _station("db", "status", "--db", empty_url)
    assert status.returncode == (0 if head == migrations.BASELINE else 1)
    assert "revision 0001 (made before migrations, not stamped)" in status.stdout
    engine = create_engine(empty_url)
    with engine.begin() as conn:  # a record from before the upgrade
        conn.execute(
            text(
                "INSERT INTO hubs (eui64, model, first_seen, last_seen) "
                "VALUES ('00-DB-12-00-00-00-00-01', 'm', :t, :t)"
            ),
            {"t": "2025-01-01 00:00:00.000000"},
        )
    engine.dispose()
    if head == migrations.BASELINE:
        with Store.open(empty_url, create=False) as store:
            assert store.batches() == []
    done = _station("db", "upgrade", "--db", empty_url)
    assert done.returncode == 0, done.stderr
    said = done.stdout.splitlines()
    assert said[0] == "stamped the station schema made before migrations at revision 0001"
    if head != migrations.BASELINE:
        assert said[1] == f"upgraded the station schema from revision 0001 to {head}"
    state = database_state(empty_url)
    assert state.revision == head and state.at_head
    assert _differences(empty_url) == []
    with open_store(empty_url) as store:
        assert store.hub("00-DB-12-00-00-00-00-01") is not None  # the records were kept
        store.start_batch(station_id=STATION, operator="o", rig="r", catalog="c")
        store.release_lease()


def test_a_version_1_database_is_refused_by_stations_and_upgrade(empty_url: str) -> None:
    _legacy_v2(empty_url)
    engine = create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE station_meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()
    with pytest.raises(
        StoreError, match=f"schema version 1; this station writes version {SCHEMA_VERSION}"
    ):
        Store.open(empty_url)
    with pytest.raises(
        StoreError, match=f"schema version 1; this station writes version {SCHEMA_VERSION}"
    ):
        upgrade_database(empty_url)
    assert "alembic_version" not in _tables(empty_url)


def test_a_database_upgraded_by_a_newer_release_is_refused(empty_url: str) -> None:
    init_database(empty_url)
    engine = create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreError, match="revision 0099, unknown to this release"):
        Store.open(empty_url)
    done = _station("db", "upgrade", "--db", empty_url)
    assert done.returncode == 2 and "upgraded by a newer release" in done.stderr


def test_sqlite_stations_make_their_schema_through_the_migrations(tmp_path: Path) -> None:
    """A bench's SQLite file needs no admin step: opening it runs the migrations."""
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    Store.open(url).close()
    assert database_state(url).revision == migrations.head()
    assert _differences(url) == []


def test_a_postgresql_station_does_not_make_the_schema(
    tmp_path: Path, catalogue: tuple[Catalog, TrustStore]
) -> None:
    """On PostgreSQL the station refuses an empty database in one line naming the command,
    and creates nothing."""
    url = _empty_url("postgresql", tmp_path)
    with pytest.raises(StoreError, match=r"holds no station database: run 'station db init"):
        Store.open(url)
    cat, trust = catalogue
    rig = tmp_path / "rig.toml"
    rig.write_text(
        'station_id = "bench-pg"\n[[slot]]\nnumber = 1\nport = "socket://127.0.0.1:1"\n'
        'profile = "demo-an3155"\n'
    )
    done = _station(
        *("run", "--rig", str(rig), "--catalog", str(cat.root), "--trust", trust.source),
        *("--db", url),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    shown = make_url(url).render_as_string(hide_password=True)
    assert f"holds no station database: run 'station db init --db {shown}' first" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not _tables(url) & set(metadata.tables)


# -- roles and grants --------------------------------------------------------------------------


def test_every_table_says_what_the_station_role_may_do() -> None:
    """A table added to schema.py without its privileges fails here (and in grants)."""
    assert set(STATION_PRIVILEGES) == set(metadata.tables)
    for name in ("audit", "job_events", "exports", "export_items"):
        privileges, _why = STATION_PRIVILEGES[name]
        assert set(privileges) == {"SELECT", "INSERT"}, name


def test_db_grants_refuses_bad_role_names() -> None:
    done = _station("db", "grants", "--station-role", "st; DROP TABLE audit", "--report-role", "r")
    assert done.returncode == 2
    assert "--station-role takes a PostgreSQL role name" in done.stderr
    same = _station("db", "grants", "--station-role", "st", "--report-role", "st")
    assert same.returncode == 2 and "must differ" in same.stderr


STATION_ROLE = "chub_test_station"
REPORT_ROLE = "chub_test_report"


def _psql_as_postgres(sql: str) -> None:
    subprocess.run(
        ["su", "postgres", "-c", "psql -v ON_ERROR_STOP=1 -q"],
        input=sql,
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def roles() -> Iterator[tuple[str, str]]:
    """The station and report roles (LOGIN, password = name), made by the cluster's
    superuser: the admin role the tests connect as lacks CREATEROLE."""
    if not PG_URL:
        pytest.skip("STATION_TEST_PG_URL is not set: no PostgreSQL to test against")
    if os.geteuid() != 0:
        pytest.skip("making PostgreSQL roles needs 'su postgres' (run as root, as .ci/run does)")
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed: the grants are applied with it, as documented")
    for role in (STATION_ROLE, REPORT_ROLE):
        _psql_as_postgres(
            f"DO $$BEGIN CREATE ROLE {role} LOGIN PASSWORD '{role}'; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END$$;"
        )
    yield STATION_ROLE, REPORT_ROLE


def _as(role: str) -> str:
    assert PG_URL
    url = make_url(PG_URL).set(username=role, password=role)
    return url.render_as_string(hide_password=False)


def _refused(url: str, sql: str) -> str:
    """Run ``sql`` as ``url``'s role; the database's refusal (it must refuse)."""
    engine = create_engine(url)
    try:
        with pytest.raises(ProgrammingError) as caught, engine.begin() as conn:
            conn.execute(text(sql))
        return str(caught.value.orig)
    finally:
        engine.dispose()


def _rowcount(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return int(conn.execute(text(sql)).rowcount)
    finally:
        engine.dispose()


@pytest.fixture
def catalogue(tmp_path: Path) -> tuple[Catalog, TrustStore]:
    return prepare_demo_catalog(tmp_path / "demo", size=SIZE)


def test_least_privilege_roles_on_postgresql(
    roles: tuple[str, str],
    start_hub: Callable[..., SimHub],
    catalogue: tuple[Catalog, TrustStore],
    tmp_path: Path,
) -> None:
    """The owner makes the schema and applies ``station db grants``; a ``station run`` as
    the station role flashes its hubs; that role cannot change or delete audit entries (or
    any history), create tables or rewrite the schema version; the report role reads the
    records and verifies the audit chain but cannot write."""
    station_role, report_role = roles
    assert PG_URL
    admin = PG_URL
    drop_pg_schema(admin)
    init = _station("db", "init", "--db", admin)
    assert init.returncode == 0, init.stderr
    grants = _station("db", "grants", "--station-role", station_role, "--report-role", report_role)
    assert grants.returncode == 0, grants.stderr
    libpq = make_url(admin).set(drivername="postgresql").render_as_string(hide_password=False)
    psql = subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-q", libpq],
        input=grants.stdout,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert psql.returncode == 0, psql.stderr
    station_url, report_url = _as(station_role), _as(report_role)

    # A station batch as the station role: two hubs flashed, the batch closed and exported.
    cat, trust = catalogue
    hubs = [start_hub(n, firmware_size=SIZE) for n in (1, 2)]
    rig = 'station_id = "bench-least"\n'
    for h in hubs:
        rig += f'[[slot]]\nnumber = {h.spec.slot}\nport = "{h.port}"\nprofile = "demo-an3155"\n'
    (tmp_path / "rig.toml").write_text(rig)
    run = _station(
        *("run", "--rig", str(tmp_path / "rig.toml"), "--catalog", str(cat.root)),
        *("--trust", trust.source, "--db", station_url),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    for hub in hubs:
        assert hub.ground_truth(SIZE)["running"] == DEMO_TARGET
    # The store API as the station role too: a job walked and passed, audited.
    keys = Path(os.environ["STATION_KEYS"])  # where this test's stations keep their keys
    with open_store(station_url) as store:
        batch = store.start_batch(station_id=STATION, operator="o", rig="r", catalog="c")
        job = store.start_job(batch, 1, "/dev/pts/9", "demo-an3155")
        walk(store, job, JobState.BOOTING, eui(1))
        assert store.finish_job(job, passed(eui(1))) is JobState.PASSED
        store.close_batch(batch, StationKey.load_or_create(keys, STATION))
        store.release_lease()

    # A consignment loaded and closed as the station role (any station may), watched as
    # the report role (which notices nothing: it may not write, and says so by nothing).
    manifest = tmp_path / "cn.csv"
    manifest.write_text(f"consignment id,EUI-64\nCN-L,{eui(1)}\nCN-L,{eui(2)}\n")
    load = _station("consignment", "load", str(manifest), "--id", "CN-L", "--db", station_url)
    assert load.returncode == 0, load.stderr
    for argv in (("fleet", "--json"), ("stations", "--json"), ("consignment", "status", "CN-L")):
        seen = _station(*argv, "--db", report_url, cwd=tmp_path)
        assert seen.returncode == 0 and seen.stderr == "", (argv, seen.stderr)
    shut = _station("consignment", "close", "CN-L", "--db", station_url)
    assert shut.returncode == 0, shut.stderr

    # The station role appends history but never rewrites it.
    for sql in (
        "UPDATE audit SET detail = '{}' WHERE seq = 1",
        "DELETE FROM audit",
        "DELETE FROM job_events",
        "UPDATE job_events SET detail = '{}'",
        "UPDATE exports SET rows = 0",
        "UPDATE consignment_hubs SET eui64 = 'x'",
        "DELETE FROM consignments",
        "DELETE FROM jobs",
        "TRUNCATE audit",
        "DROP TABLE audit",
        "CREATE TABLE station_notes (x integer)",
    ):
        said = _refused(station_url, sql)
        assert "permission denied" in said or "must be owner" in said, (sql, said)
    # Only the audit_lock row of station_meta: the schema version is out of its reach.
    assert _rowcount(station_url, "UPDATE station_meta SET value = '9' WHERE key <> ''") == 1
    assert database_state(admin).schema_version == str(SCHEMA_VERSION)

    # The report role reads everything, verifies the chain, and writes nothing.
    verify = _station("audit", "verify", "--db", report_url, "--keys", str(keys), cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    batches = _station("batches", "--db", report_url, "--json", cwd=tmp_path)
    assert batches.returncode == 0, batches.stderr
    assert len(json.loads(batches.stdout)) == 2
    with Store.open(report_url, create=False) as reader:
        check = reader.verify_audit(KeyRing.from_dir(keys))
        assert check.ok and check.signed_heads == 2, check.problems
    for sql in (
        "INSERT INTO audit (seq, at, operator, action, detail, prev_hash, hash) "
        "VALUES (999, now(), 'x', 'x', '{}', 'x', 'x')",
        "UPDATE jobs SET state = 'passed'",
        "UPDATE station_meta SET value = value WHERE key = 'audit_lock'",
        "DELETE FROM hubs",
    ):
        assert "permission denied" in _refused(report_url, sql), sql
    assert _rowcount(report_url, "SELECT * FROM audit") > 0
    drop_pg_schema(admin)


def test_grants_name_every_table_and_no_delete() -> None:
    sql = "\n".join(grant_statements("st", "rep"))
    assert "DELETE" not in sql and "TRUNCATE" not in sql
    for name in metadata.tables:
        assert re.search(rf"GRANT [^;]* ON {name} TO \"st\";", sql), name
    assert 'GRANT SELECT, INSERT ON audit TO "st";' in sql


def test_upgrading_to_one_hub_in_flight_refuses_two_live_jobs_of_one_hub(empty_url: str) -> None:
    """Revision 0002's unique index over hubs in flight cannot be made while two live jobs
    (left by stations of the release before) hold one hub: the upgrade says so and changes
    nothing; once a station's recovery has ended one, it goes through."""
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrations.alembic_config(conn), migrations.BASELINE)
            conn.execute(
                text(
                    "INSERT INTO batches (id, station_id, lease_id, operator, rig, catalog, "
                    "started_at) VALUES (1, 's', 'l', 'o', 'r', 'c', :t)"
                ),
                {"t": "2025-01-01 00:00:00.000000"},
            )
            for job, state in ((1, "writing"), (2, "identified")):
                conn.execute(
                    text(
                        "INSERT INTO jobs (id, batch_id, lease_id, slot, port, profile, eui64, "
                        "state, overrides, notes, started_at, bytes_written) VALUES "
                        f"({job}, 1, 'l', {job}, 'p', 'm', '{eui(3)}', '{state}', '[]', '[]', "
                        ":t, 0)"
                    ),
                    {"t": "2025-01-01 00:00:00.000000"},
                )
    finally:
        engine.dispose()
    refused = _station("db", "upgrade", "--db", empty_url)
    assert refused.returncode == 2
    assert f"error: 2 jobs have hub {eui(3)} in flight at once" in refused.stderr
    assert database_state(empty_url).revision == migrations.BASELINE
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET state = 'interrupted' WHERE id = 1"))
    finally:
        engine.dispose()
    done = _station("db", "upgrade", "--db", empty_url)
    assert done.returncode == 0, done.stderr
    assert database_state(empty_url).at_head

"""Helpers for the records tests: database URLs, a fake clock, outcomes and job walks."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from station.events import CHAIN, JobState
from station.outcome import FlashOutcome, Result
from station.records import migrations
from station.records.schema import metadata
from station.records.store import Store

#: Set to a PostgreSQL URL (postgresql+psycopg://user@host/db) to run the store tests on it
#: as well; every table of the station schema in that database is dropped first, and the
#: schema made again as ``station db init`` makes it.
PG_URL = os.environ.get("STATION_TEST_PG_URL")

OLD = "0x01010000"
NEW = "0x01050000"
SHA = "5e" * 32
STATION = "bench-07"


def eui(n: int) -> str:
    """A distinct EUI-64 for hub number ``n``."""
    return f"00-DB-12-00-00-00-{n >> 8:02X}-{n & 0xFF:02X}"


def backend_url(backend: str, tmp_path: Path) -> str:
    """A fresh database of the named backend (PostgreSQL: skipped unless configured)."""
    if backend == "sqlite":
        return f"sqlite:///{(tmp_path / 'station.db').as_posix()}"
    if not PG_URL:
        pytest.skip("STATION_TEST_PG_URL is not set: no PostgreSQL to test against")
    fresh_pg_schema(PG_URL)
    return PG_URL


def drop_pg_schema(url: str) -> None:
    """Drop every table of the station schema, and Alembic's, from ``url``."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


def fresh_pg_schema(url: str) -> None:
    """A new station schema on ``url``, made as the admin makes it (``station db init``):
    stations do not create the schema on PostgreSQL."""
    drop_pg_schema(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            migrations.init(conn, url)
    finally:
        engine.dispose()


class FakeClock:
    """A clock that moves only when told to (UTC)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 3, 4, 9, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def open_store(url: str, *, station: str = STATION, clock: FakeClock | None = None) -> Store:
    """A store on ``url`` holding ``station``'s lease (what a running station has)."""
    store = Store.open(url, clock=clock)
    store.acquire_lease(station)
    return store


def identity(eui64: str | None, version_before: str | None = OLD) -> dict[str, object]:
    """The detail of ``identified``: what a job read from its hub."""
    return {"eui64": eui64, "hw_version": 2, "version_before": version_before, "found_in": "app"}


def plan(target: str = NEW, sha: str = SHA) -> dict[str, object]:
    """The detail of ``planned``: the image and target the catalogue chose."""
    return {
        "target_version": target,
        "image": "releases/1234-0401-01050000.zigbee",
        "image_version": target,
        "image_sha256": sha,
        "signature": "valid",
    }


def walk(
    store: Store,
    job_id: int,
    to: JobState,
    eui64: str | None = None,
    *,
    version_before: str | None = OLD,
    target: str = NEW,
) -> None:
    """Record the live states after DETECTED up to and including ``to``, with the identity
    read at ``identified`` (when ``eui64`` is given) and the plan at ``planned``."""
    for state in CHAIN[1 : CHAIN.index(to) + 1]:
        detail: dict[str, object] | None = None
        if state is JobState.IDENTIFIED and eui64:
            detail = identity(eui64, version_before)
        elif state is JobState.PLANNED:
            detail = plan(target)
        store.record_state(job_id, state, detail)


def passed(hub: str, **kw: object) -> FlashOutcome:
    """A passed outcome with all its evidence."""
    out = FlashOutcome(
        port=str(kw.pop("port", "/dev/pts/9")),
        profile=str(kw.pop("profile", "demo-an3155")),
        result=Result.PASSED,
        image="releases/1234-0401-01050000.zigbee",
        image_version=NEW,
        target_version=NEW,
        image_sha256=SHA,
        eui64=hub,
        eui64_confirmed=hub,
        hw_version=2,
        found_in="app",
        version_before=OLD,
        version_after=NEW,
        verify_method="crc",
        verify_detail="device CRC 0x1234ABCD matches",
        signature="valid",
        signer="demo-signer",
        bytes_written=65536,
        seconds=42.5,
        message=f"{OLD} -> {NEW}, verified by crc, running version read back",
    )
    for key, value in kw.items():
        setattr(out, key, value)
    return out


def ended(hub: str | None, result: Result, phase: str, message: str, **kw: object) -> FlashOutcome:
    """A failed, refused or skipped outcome."""
    out = FlashOutcome(
        port="/dev/pts/9",
        profile="demo-an3155",
        result=result,
        eui64=hub,
        version_before=OLD if hub else None,
        phase=phase if result is not Result.SKIPPED else None,
        message=message,
        seconds=3.0,
    )
    for key, value in kw.items():
        setattr(out, key, value)
    return out

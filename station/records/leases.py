"""Station leases: which process owns a station's jobs, and when that owner is gone.

A running station holds one lease per station id (a row of ``station_leases``: a random
lease id, host, pid, the pid's start time, heartbeat and time to live). Every batch and job
it opens names its lease, and the store lets only the holder of that lease write them.

Whether a lease is still held is decided the same way by everyone who looks:

- released (the process ended cleanly, or somebody noticed it expired): gone;
- on *this* host: held exactly while the process lives (its pid exists with the same start
  time, so a recycled pid is not mistaken for it). A ``kill -9`` frees the station at once;
  a process that is alive but stalled keeps it, because it may still be writing to a hub;
- on another host: held while its heartbeat is younger than its time to live.

A lease that is gone is *noticed* once (:func:`expire`, inside the transaction that also
interrupts its jobs): its row is marked released, so the old process, should it wake up,
finds it has lost the lease and stops recording instead of overwriting what the noticer
decided.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from station.records.errors import LeaseLost, StationBusy
from station.records.schema import checked, station_leases

__all__ = [
    "DEFAULT_TTL_S",
    "Lease",
    "acquire",
    "all_leases",
    "check_held",
    "expire",
    "heartbeat",
    "is_gone",
    "release",
    "this_host",
]

#: How long a lease outlives its last heartbeat, as judged from another host.
DEFAULT_TTL_S: Final = 30.0


@dataclass(frozen=True)
class Lease:
    """One station's lease, as recorded."""

    station_id: str
    lease_id: str
    host: str
    pid: int
    pid_start: str | None
    software: str
    rig: str
    started_at: datetime
    heartbeat_at: datetime
    ttl_s: float
    released_at: datetime | None = None
    #: The rig's slots as registered: ``{"slot": n, "binding": "...", "profile": "..."}``.
    slots: tuple[dict[str, Any], ...] = ()

    def describe(self) -> str:
        """``pid 4242 on bench-pc``, for messages."""
        return f"pid {self.pid} on {self.host}"


def this_host() -> str:
    """The host name leases record (and compare, to decide how to judge liveness)."""
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None
    where that cannot be read: with the pid it names one process, never a recycled pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and ')'
    return fields[19] if len(fields) > 19 else None


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def is_gone(lease: Lease, now: datetime, host: str | None = None) -> bool:
    """Whether ``lease`` no longer holds its station (see the module docstring)."""
    if lease.released_at is not None:
        return True
    if lease.host == (host or this_host()):
        return not _process_alive(lease.pid, lease.pid_start)
    return (now - lease.heartbeat_at).total_seconds() > lease.ttl_s


def _lease(row: Row[Any]) -> Lease:
    return Lease(
        station_id=row.station_id,
        lease_id=row.lease_id,
        host=row.host,
        pid=row.pid,
        pid_start=row.pid_start,
        software=row.software,
        rig=row.rig,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        ttl_s=row.ttl_s,
        released_at=row.released_at,
        slots=_slots(row.slots),
    )


def _slots(text: str | None) -> tuple[dict[str, Any], ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, dict))


#: Built once: every record a station writes checks its lease, and building the statement
#: (and its cache key) each time cost more CPU than running it.
_CURRENT = select(station_leases).where(station_leases.c.station_id == bindparam("station_id"))


def current(conn: Connection, station_id: str) -> Lease | None:
    """The lease recorded for ``station_id`` (held or not), None if there never was one."""
    row = conn.execute(_CURRENT, {"station_id": station_id}).first()
    return None if row is None else _lease(row)


def all_leases(conn: Connection) -> list[Lease]:
    """Every station's recorded lease, by station id."""
    rows = conn.execute(select(station_leases).order_by(station_leases.c.station_id))
    return [_lease(r) for r in rows]


def acquire(
    conn: Connection,
    station_id: str,
    *,
    now: datetime,
    rig: str,
    software: str,
    ttl_s: float,
    slots: Sequence[Mapping[str, Any]] = (),
) -> tuple[Lease, Lease | None]:
    """Take ``station_id``'s lease for this process; returns it and the lease it replaced
    (a gone one, whose jobs the caller must interrupt), if any.

    Raises:
        StationBusy: a live process holds the station.
    """
    old = current(conn, station_id)
    if old is not None and not is_gone(old, now):
        seen = (now - old.heartbeat_at).total_seconds()
        raise StationBusy(
            f"station {station_id} is already running: {old.describe()}, started "
            f"{old.started_at:%Y-%m-%d %H:%M:%S} UTC, last heartbeat {seen:.0f} s ago"
        )
    pid = os.getpid()
    values = checked(
        station_leases,
        {
            "lease_id": uuid.uuid4().hex,
            "host": this_host(),
            "pid": pid,
            "pid_start": process_start(pid),
            "software": software,
            "rig": rig,
            "started_at": now,
            "heartbeat_at": now,
            "ttl_s": float(ttl_s),
            "released_at": None,
            "slots": json.dumps(
                [dict(s) for s in slots], sort_keys=True, separators=(",", ":"), default=str
            ),
        },
    )
    if old is None:
        conn.execute(insert(station_leases).values(station_id=station_id, **values))
    else:
        done = conn.execute(
            update(station_leases)
            .where(station_leases.c.station_id == station_id)
            .where(station_leases.c.lease_id == old.lease_id)
            .values(**values)
        ).rowcount
        if done != 1:  # somebody else took it between our read and our write
            raise StationBusy(f"station {station_id} was taken by another process just now")
    lease = current(conn, station_id)
    assert lease is not None
    return lease, old


def check_held(conn: Connection, lease: Lease) -> None:
    """Refuse to go on writing for ``lease`` once it is no longer this station's lease.

    Raises:
        LeaseLost: another process took the station, or noticed this one gone.
    """
    row = current(conn, lease.station_id)
    if row is None or row.lease_id != lease.lease_id:
        holder = "nobody" if row is None else row.describe()
        raise LeaseLost(f"station {lease.station_id}'s lease is now held by {holder}")
    if row.released_at is not None:
        raise LeaseLost(
            f"station {lease.station_id}'s lease was released at "
            f"{row.released_at:%Y-%m-%d %H:%M:%S} UTC (it expired and was noticed)"
        )


def heartbeat(conn: Connection, lease: Lease, now: datetime) -> None:
    """Renew ``lease``.

    Raises:
        LeaseLost: it is no longer held.
    """
    check_held(conn, lease)
    conn.execute(
        update(station_leases)
        .where(station_leases.c.station_id == lease.station_id)
        .where(station_leases.c.lease_id == lease.lease_id)
        .values(heartbeat_at=now)
    )


def release(conn: Connection, lease: Lease, now: datetime) -> bool:
    """Give the station up (a clean end); False when the lease was no longer held."""
    done = conn.execute(
        update(station_leases)
        .where(station_leases.c.station_id == lease.station_id)
        .where(station_leases.c.lease_id == lease.lease_id)
        .where(station_leases.c.released_at.is_(None))
        .values(released_at=now)
    ).rowcount
    return bool(done)


def expire(conn: Connection, now: datetime) -> tuple[set[str], list[Lease]]:
    """Notice every gone lease (mark it released); returns the lease ids still held, and the
    leases this call noticed (to be audited)."""
    held: set[str] = set()
    noticed: list[Lease] = []
    for lease in all_leases(conn):
        if not is_gone(lease, now):
            held.add(lease.lease_id)
        elif lease.released_at is None:
            # Only the first noticer's update matches (PostgreSQL re-reads the row once the
            # other's transaction commits): a lease is noticed, and audited, once.
            done = conn.execute(
                update(station_leases)
                .where(station_leases.c.station_id == lease.station_id)
                .where(station_leases.c.lease_id == lease.lease_id)
                .where(station_leases.c.released_at.is_(None))
                .values(released_at=now)
            ).rowcount
            if done:
                noticed.append(lease)
    return held, noticed

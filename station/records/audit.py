"""The audit log: a hash chain that covers the records every report is built from.

Each entry's ``hash`` is SHA-256 over a canonical encoding of the entry and the previous
entry's hash (:func:`audit_hash`), so an edited, inserted or deleted entry breaks the chain at
that point. The chain holds two kinds of entries:

- **record snapshots** (actions ``batch``, ``job``, ``hub``, ``export``, ``consignment``): each
  time the store writes a batch, a job's final record, a hub, a DSP export or a consignment
  (loaded, closed), the row as written is appended
  (:func:`snapshot`), with a digest of the rows that hang off it (a batch's consignment, an
  export's items). :func:`verify` compares every such row in the database with its latest
  snapshot, so ``UPDATE jobs SET state='passed'`` is caught even though the chain itself is
  untouched;
- **events** for people (overrides, refused passes, slot faults, leases noticed gone) and
  **signed heads** (``head-signed``): the station's key over the chain's head when a batch
  closes (see :mod:`station.records.keys`). A database writer who edits a record *and*
  recomputes the chain breaks every signed head after the edit; the reports carry the head
  they were made under, so truncating the chain after the last signed head is caught by any
  report made later (``station audit verify --report FILE``).

Everything here works on an open connection; the store decides the transactions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Table, bindparam, insert, select, type_coerce, update
from sqlalchemy import String as SqlString

from station.events import JobState
from station.records.errors import StoreError
from station.records.keys import KeyRing, StationKey
from station.records.schema import (
    UtcDateTime,
    audit,
    batches,
    consignment_hubs,
    consignment_items,
    consignments,
    export_items,
    exports,
    hubs,
    jobs,
    parse_stored_time,
    station_meta,
)

__all__ = [
    "GENESIS_HASH",
    "AuditCheck",
    "AuditEntry",
    "Head",
    "append",
    "audit_hash",
    "canonical_json",
    "head",
    "iso_utc",
    "record_of",
    "sign_head",
    "signed_head_of",
    "signed_heads",
    "snapshot",
    "verify",
]

#: The ``prev_hash`` of the first audit entry.
GENESIS_HASH: Final = "0" * 64
#: The tables whose rows the chain covers: snapshot action -> (table, primary key column).
COVERED: Final[dict[str, tuple[Table, str]]] = {
    "batch": (batches, "id"),
    "job": (jobs, "id"),
    "hub": (hubs, "eui64"),
    "export": (exports, "id"),
    "consignment": (consignments, "consignment_id"),
}
_ACTION_OF: Final = {table.name: action for action, (table, _) in COVERED.items()}


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the hash-chained audit log."""

    seq: int
    at: datetime
    operator: str
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Head:
    """A point of the chain, signed by a station or not (an open batch's reports).

    Attributes:
        seq, hash: the entry and its hash.
        station_id, key_id, signature: who signed it and the hex Ed25519 signature (None:
            unsigned).
    """

    seq: int
    hash: str
    station_id: str | None = None
    key_id: str | None = None
    signature: str | None = None
    batch: int | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        """As reports print it."""
        return {
            "seq": self.seq,
            "hash": self.hash,
            "signed": self.signature is not None,
            "station_id": self.station_id,
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass(frozen=True)
class AuditCheck:
    """What :func:`verify` found.

    Attributes:
        ok: the chain recomputes, every signed head verifies, and every covered record
            matches its latest snapshot.
        entries: how many entries were read.
        bad_seq: the first entry that breaks the chain (None: none does).
        reason: why it breaks.
        head: the hash of the last good entry.
        head_seq: its sequence number.
        signed_heads: how many signed heads verified.
        problems: every finding, one sentence each (chain, signatures, records).
    """

    ok: bool
    entries: int
    bad_seq: int | None = None
    reason: str = ""
    head: str = GENESIS_HASH
    head_seq: int = 0
    signed_heads: int = 0
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, for ``station audit verify --json``."""
        out = dict(self.__dict__)
        out["problems"] = list(self.problems)
        return out


# -- encoding ------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, ASCII only.

    Values JSON cannot hold (paths, enums) are written as their ``str``.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def iso_utc(at: datetime) -> str:
    """``2024-05-01T12:34:56.123456Z``: the audit hash's form of a time."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_hash(
    seq: int, at: datetime, operator: str, action: str, detail_json: str, prev_hash: str
) -> str:
    """SHA-256 (hex) of an audit entry chained to the previous entry's hash.

    The hashed bytes are the UTF-8 of ``canonical_json([seq, iso_utc(at), operator, action,
    detail_json, prev_hash])``, where ``detail_json`` is the entry's stored canonical JSON
    text.
    """
    encoded = canonical_json([seq, iso_utc(at), operator, action, detail_json, prev_hash])
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def digest(records: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of a list of records in their canonical JSON: what a snapshot keeps of the
    rows that hang off a covered row (a batch's consignment, an export's items)."""
    return hashlib.sha256(canonical_json(list(records)).encode("utf-8")).hexdigest()


# -- writing -------------------------------------------------------------------------------


# Built once (each job appends several entries; building a statement costs more CPU than
# running it).
_HEAD = select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
_LOCK = (
    update(station_meta)
    .where(station_meta.c.key == "audit_lock")
    .values(value=station_meta.c.value)
)
_APPEND = insert(audit)


def head(conn: Connection) -> Head:
    """The chain's last entry (seq 0 and the genesis hash when it is empty)."""
    last = conn.execute(_HEAD)
    row = last.first()
    return Head(0, GENESIS_HASH) if row is None else Head(int(row.seq), str(row.hash))


def append(
    conn: Connection, operator: str, action: str, detail: Mapping[str, Any], at: datetime
) -> Head:
    """Append one entry; returns it as the new head.

    Every append first updates the ``audit_lock`` row of ``station_meta``: on PostgreSQL that
    row lock queues appenders from other processes, so each reads the head only after the
    previous append committed (SQLite writers are serialised anyway).
    """
    conn.execute(_LOCK)
    last = head(conn)
    seq = last.seq + 1
    text = canonical_json(dict(detail))
    entry_hash = audit_hash(seq, at, operator, action, text, last.hash)
    conn.execute(
        _APPEND,
        {
            "seq": seq,
            "at": at,
            "operator": operator,
            "action": action,
            "detail": text,
            "prev_hash": last.hash,
            "hash": entry_hash,
        },
    )
    return Head(seq, entry_hash)


def _raw_columns(table: Table) -> list[Any]:
    """The table's columns with times read as stored (so a hand-edited time is a value to
    compare, never an exception)."""
    return [
        type_coerce(c, SqlString()).label(c.name) if isinstance(c.type, UtcDateTime) else c
        for c in table.columns
    ]


def _project(table: Table, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row[column.name]
        if isinstance(column.type, UtcDateTime):
            try:
                when = parse_stored_time(value)
            except StoreError:
                out[column.name] = f"not a time: {str(value)[:40]}"
                continue
            out[column.name] = None if when is None else iso_utc(when)
        else:
            out[column.name] = value
    return out


def _rows(
    conn: Connection, table: Table, where: Any = None, order: Any = None
) -> list[dict[str, Any]]:
    query = select(*_raw_columns(table))
    if where is not None:
        query = query.where(where)
    if order is not None:
        query = query.order_by(order)
    return [_project(table, r._mapping) for r in conn.execute(query)]


_ROW_OF: dict[str, Any] = {}


def _row_of(action: str) -> Any:
    """The statement reading one covered row by its key (built once per table)."""
    query = _ROW_OF.get(action)
    if query is None:
        table, pk = COVERED[action]
        query = select(*_raw_columns(table)).where(table.c[pk] == bindparam("key"))
        _ROW_OF[action] = query
    return query


def record_of(conn: Connection, action: str, key: Any) -> dict[str, Any] | None:
    """A covered row as the chain keeps it: every column (times as ISO text), plus the digest
    of the rows hanging off it. None: no such row."""
    table, _ = COVERED[action]
    found = [_project(table, r._mapping) for r in conn.execute(_row_of(action), {"key": key})]
    if not found:
        return None
    record = found[0]
    if action == "batch":
        items = _rows(
            conn, consignment_items, consignment_items.c.batch_id == key, consignment_items.c.id
        )
        record["consignment"] = digest(items)
    elif action == "export":
        items = _rows(conn, export_items, export_items.c.export_id == key, export_items.c.id)
        record["items"] = digest(items)
    elif action == "consignment":
        items = _rows(
            conn, consignment_hubs, consignment_hubs.c.consignment_id == key, consignment_hubs.c.id
        )
        record["hubs"] = digest(items)
    return record


def snapshot(conn: Connection, action: str, key: Any, operator: str, at: datetime) -> Head:
    """Append the covered row ``key`` (of the table ``action`` names) as written now."""
    record = record_of(conn, action, key)
    if record is None:
        raise StoreError(f"cannot audit {action} {key!r}: it is not in the database")
    return append(conn, operator, action, {"key": key, "record": record}, at)


def sign_head(conn: Connection, key: StationKey, at: datetime, *, batch: int | None = None) -> Head:
    """Sign the chain's head with the station's key and append the signature; returns the
    signed head (the entry signed, not the signature's own entry)."""
    signed = head(conn)
    signature = key.sign_head(signed.seq, signed.hash)
    append(
        conn,
        "station",
        "head-signed",
        {
            "seq": signed.seq,
            "hash": signed.hash,
            "station_id": key.station_id,
            "key_id": key.key_id,
            "signature": signature,
            "batch": batch,
        },
        at,
    )
    return Head(signed.seq, signed.hash, key.station_id, key.key_id, signature, batch)


def signed_heads(conn: Connection) -> list[Head]:
    """Every head signed so far, oldest first, as the entries state them (unverified)."""
    out = []
    rows = conn.execute(
        select(audit.c.detail).where(audit.c.action == "head-signed").order_by(audit.c.seq)
    )
    for (text,) in rows:
        detail = _loads(text)
        try:
            out.append(
                Head(
                    int(detail["seq"]),
                    str(detail["hash"]),
                    str(detail["station_id"]),
                    str(detail["key_id"]),
                    str(detail["signature"]),
                    batch=detail.get("batch"),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


def signed_head_of(conn: Connection, batch_id: int) -> Head | None:
    """The head signed when ``batch_id`` closed (None: it has not closed, or was not signed)."""
    found = [h for h in signed_heads(conn) if h.batch == batch_id]
    return found[-1] if found else None


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# -- verifying -----------------------------------------------------------------------------


@dataclass
class _Walk:
    """What one pass over the chain learned."""

    entries: int = 0
    hashes: dict[int, str] = field(default_factory=dict)
    bad_seq: int | None = None
    reason: str = ""
    head: Head = field(default_factory=lambda: Head(0, GENESIS_HASH))
    latest: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    heads: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def _walk_chain(conn: Connection) -> _Walk:
    walk = _Walk()
    prev, expected = GENESIS_HASH, 1
    query = select(*_raw_columns(audit)).order_by(audit.c.seq)
    for r in conn.execute(query):
        walk.entries += 1
        try:
            at = parse_stored_time(r.at)
        except StoreError:
            at = None
        why = ""
        if r.seq != expected:
            why = (
                f"entry {expected} is missing (the next entry is {r.seq})"
                if r.seq > expected
                else f"sequence number {r.seq} is out of order"
            )
        elif r.prev_hash != prev:
            why = "its prev_hash is not the hash of the entry before it"
        elif at is None:
            why = f"its time {str(r.at)[:40]!r} is not a time: the entry was altered"
        elif r.hash != audit_hash(r.seq, at, r.operator, r.action, r.detail, r.prev_hash):
            why = "its hash does not match its contents: the entry was altered"
        if why:
            walk.bad_seq, walk.reason = expected, why
            return walk
        walk.hashes[r.seq] = r.hash
        detail = _loads(r.detail)
        if r.action in COVERED and "key" in detail:
            walk.latest[(r.action, str(detail["key"]))] = (r.seq, detail.get("record") or {})
        elif r.action == "head-signed":
            walk.heads.append((r.seq, detail))
        prev, expected = r.hash, expected + 1
        walk.head = Head(r.seq, r.hash)
    return walk


def verify(conn: Connection, ring: KeyRing) -> AuditCheck:
    """Recompute the chain, check every signed head against ``ring``, and compare every
    covered record with its latest snapshot. Every finding is a problem; none: ok."""
    walk = _walk_chain(conn)
    problems: list[str] = []
    if walk.bad_seq is not None:
        problems.append(f"the chain breaks at entry {walk.bad_seq}: {walk.reason}")
    signed = 0
    signed_batches: set[Any] = set()
    for seq, detail in walk.heads:
        try:
            at_seq, at_hash = int(detail["seq"]), str(detail["hash"])
            why = ring.problem(
                str(detail["key_id"]),
                str(detail["station_id"]),
                at_seq,
                at_hash,
                str(detail["signature"]),
            )
        except (KeyError, TypeError, ValueError):
            why = "it is malformed"
        else:
            if why is None and walk.hashes.get(at_seq) != at_hash:
                why = f"entry {at_seq} no longer has the hash it signed: the chain was rewritten"
        if why:
            problems.append(f"signed head at entry {seq}: {why}")
        else:
            signed += 1
            signed_batches.add(detail.get("batch"))
    if walk.bad_seq is None:
        problems += _cross_check(conn, walk, signed_batches)
    return AuditCheck(
        ok=not problems,
        entries=walk.entries,
        bad_seq=walk.bad_seq,
        reason=walk.reason,
        head=walk.head.hash,
        head_seq=walk.head.seq,
        signed_heads=signed,
        problems=tuple(problems),
    )


def _cross_check(conn: Connection, walk: _Walk, signed_batches: set[Any]) -> list[str]:
    problems: list[str] = []
    if walk.entries == 0:
        held = sum(len(_rows(conn, table)) for table, _ in COVERED.values())
        if held:
            return [f"the audit log is empty, but the database holds {held} records"]
    for action, (table, pk) in COVERED.items():
        keys = [str(r[pk]) for r in _rows(conn, table)]
        for key in keys:
            stored = walk.latest.get((action, key))
            typed_key: Any = int(key) if pk == "id" else key
            record = record_of(conn, action, typed_key)
            assert record is not None
            if action == "job" and not _is_final(record.get("state")):
                if stored is not None:
                    problems.append(
                        f"job {key} is recorded as {record.get('state')} (still running), but "
                        f"the audit log has its final record ({stored[1].get('state')}) at "
                        f"entry {stored[0]}"
                    )
                continue
            if stored is None:
                problems.append(f"{action} {key} is in the database but not in the audit log")
                continue
            changed = sorted(
                k for k in set(record) | set(stored[1]) if record.get(k) != stored[1].get(k)
            )
            if changed:
                shown = ", ".join(
                    f"{k} {stored[1].get(k)!r} -> {record.get(k)!r}" for k in changed[:4]
                )
                problems.append(
                    f"{action} {key} differs from its audited record (entry {stored[0]}): {shown}"
                )
            if action == "batch" and record.get("finished_at") and int(key) not in signed_batches:
                problems.append(f"batch {key} is closed but no valid signed head covers it")
        present = set(keys)
        for kind, key in walk.latest:
            if kind == action and key not in present:
                problems.append(f"{action} {key} is in the audit log but not in the database")
    return problems


def _is_final(state: Any) -> bool:
    try:
        return JobState(str(state)).final
    except ValueError:
        return True  # not a state at all: compare it, so the edit shows

"""The audit log's hash chain: its entries, their canonical encoding and hash.

An entry's ``hash`` is SHA-256 over a canonical encoding of the entry and the previous
entry's hash, so an edited, inserted or deleted entry breaks the chain at that point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["GENESIS_HASH", "AuditCheck", "AuditEntry", "audit_hash", "canonical_json", "iso_utc"]

#: The ``prev_hash`` of the first audit entry.
GENESIS_HASH: Final = "0" * 64


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
class AuditCheck:
    """The result of :meth:`Store.verify_audit`.

    Attributes:
        ok: the whole chain recomputes.
        entries: how many entries were checked.
        bad_seq: the first entry that does not (None when ok).
        reason: why it does not.
        head: the hash of the last good entry (record it elsewhere to detect truncation).
    """

    ok: bool
    entries: int
    bad_seq: int | None = None
    reason: str = ""
    head: str = GENESIS_HASH


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

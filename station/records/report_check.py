"""Check a report file against the records: ``station audit verify --report FILE``.

A report that left the station (the DSP update sent, a consignment reconciliation filed, a
CI rig's JUnit) carries the audit head it was made under, signed with the station's key when
its batch closed. Holding the file, anyone with the database and the station's public key
can tell whether either was changed since:

- the head's signature verifies with the station's public key (the file's head is real);
- the chain in the database still has that hash at that entry (nothing before it was
  rewritten, and the chain was not cut back behind it);
- the whole chain and every covered record verify (station.records.audit.verify);
- the report made again from the database now is the file's report (its rows were not
  edited, in the file or in the database).
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from drivers.errors import ConfigError
from firmware_images.files import read_regular_text
from station.records import dsp
from station.records.audit import Head
from station.records.errors import StoreError
from station.records.keys import KeyRing
from station.records.reports import (
    CONSIGNMENT_FORMAT,
    SUMMARY_FORMAT,
    junit_xml,
    reconcile,
    summarise,
)
from station.records.store import Store

__all__ = ["check_report"]

#: Reports are small; a file much larger than any batch's report is not one.
_MAX_REPORT = 64 * 1024 * 1024


def _read(path: Path) -> str:
    return read_regular_text(path, limit=_MAX_REPORT, what="report", error=ConfigError)


def _head_of(fields: dict[str, Any]) -> Head:
    try:
        return Head(
            int(fields["seq"]),
            str(fields["hash"]),
            fields.get("station_id") or None,
            fields.get("key_id") or None,
            fields.get("signature") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the report's audit head is malformed: {exc}") from exc


def _parse(text: str, where: str) -> tuple[str, int | None, Head, Any]:
    """(kind, batch, head, content) of a report's text."""
    stripped = text.lstrip()
    if stripped.startswith("<?xml") or stripped.startswith("<testsuites"):
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise ConfigError(f"{where}: not JUnit XML: {exc}") from exc
        suite = root.find("testsuite")
        props = {
            p.get("name", ""): p.get("value", "")
            for p in root.iter("property")
            if p.get("name", "").startswith("audit_")
        }
        name = "" if suite is None else suite.get("name", "")
        batch = int(name.split()[-1]) if name.startswith("batch ") else None
        head = _head_of(
            {
                "seq": props.get("audit_seq"),
                "hash": props.get("audit_hash"),
                "station_id": props.get("audit_station"),
                "key_id": props.get("audit_key_id"),
                "signature": props.get("audit_signature"),
            }
        )
        return "junit", batch, head, text
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON: {exc}") from exc
        kinds = {
            dsp.DSP_FORMAT: "dsp",
            CONSIGNMENT_FORMAT: "consignment",
            SUMMARY_FORMAT: "summary",
        }
        kind = kinds.get(doc.get("format"))
        if kind is None or not isinstance(doc.get("audit"), dict):
            raise ConfigError(f"{where}: not a station report (no known format and audit head)")
        return kind, doc.get("batch"), _head_of(doc["audit"]), doc
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or tuple(rows[0]) != (*dsp.DSP_COLUMNS, *dsp.HEAD_COLUMNS):
        raise ConfigError(f"{where}: not a station report (JUnit XML, JSON or the DSP CSV)")
    if len(rows) < 2:
        raise ConfigError(f"{where}: a DSP update with no rows carries no audit head to check")
    first = dict(zip(rows[0], rows[1], strict=False))
    head = Head(
        int(first["audit_seq"]),
        first["audit_hash"],
        first.get("station_id") or None,
        None,
        first["audit_signature"] or None,
    )
    return "dsp-csv", None, head, (rows, first.get("export_id") or "")


def check_report(store: Store, path: Path, ring: KeyRing) -> tuple[Head, list[str]]:
    """The head a report carries and every problem found with it against the records
    (see the module docstring); no problems: the report and the records agree."""
    text = _read(path)
    kind, batch, head, content = _parse(text, str(path))
    check = store.verify_audit(ring)
    problems = list(check.problems)
    if head.signature is None:
        problems.append(
            "the report was made while its batch was open: its head is not signed, only a "
            "closed batch's reports can be checked"
        )
    else:
        key_id = head.key_id or next(  # the CSV names the station, not the key
            (h.key_id for h in store.signed_heads() if h.signature == head.signature), None
        )
        why = ring.problem(
            key_id or "?", head.station_id or "?", head.seq, head.hash, head.signature
        )
        if why:
            problems.append(f"the report's audit head: {why}")
    if store.chain_hash(head.seq) != head.hash:
        problems.append(
            f"the audit chain no longer has the report's head at entry {head.seq}: the "
            "records were rewritten or cut back since the report was made"
        )
    try:
        problems += _same_content(store, kind, batch, content)
    except StoreError as exc:
        problems.append(f"cannot make the report again: {exc.message}")
    return head, problems


def _same_content(store: Store, kind: str, batch: int | None, content: Any) -> list[str]:
    if kind == "dsp-csv":
        rows, export_id = content
        if not export_id:
            return ["the DSP rows are a preview of an open batch, not an export"]
        batch = store.export_batch(int(export_id))
        if batch is None:
            return [f"export {export_id} is not in the database"]
        again = list(csv.reader(io.StringIO(store.dsp_text(batch, "csv"), newline="")))
        return [] if again == rows else [f"the DSP rows differ from export {export_id}'s"]
    if batch is None:
        return ["the report names no batch"]
    if kind == "junit":
        same = junit_xml(store, batch) == content
    elif kind == "dsp":
        same = json.loads(store.dsp_text(batch, "json")) == content
    elif kind == "consignment":
        same = _json(reconcile(store, batch).to_json()) == content
    else:
        same = _json(summarise(store, batch).to_json()) == content
    return [] if same else [f"the {kind} report differs from batch {batch}'s records"]


def _json(doc: Any) -> Any:
    return json.loads(json.dumps(doc))

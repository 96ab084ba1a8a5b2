"""Consignment manifests: the hubs a DCC User asked to be re-flashed, as a CSV file.

A manifest has a header row and one hub per line::

    Consignment ID, EUI-64, Model, Firmware version
    CN-2024-0117, 00-DB-12-34-56-78-90-A0, demo-an3155, 0x01010000
    CN-2024-0117, 00DB1234567890A1,,

Header names are matched without regard to case, spaces, ``-`` or ``_`` (``consignment_id``,
``Consignment ID``); the model and firmware version columns are optional and may be empty on
any line; extra columns are ignored. The firmware version is what the DSP holds for the hub
(``0x01010000`` or ``1.1.0.0``): when given, it is the version a change is reported against
(see station.records.dsp). EUI-64s are accepted as ``00-DB-12-34-56-78-90-A0``, ``00:DB:...`` or
``00DB1234567890A0`` and kept in the DUIS form ``00-DB-12-34-56-78-90-A0``. A bad file is
refused as a whole, naming the line and the reason: a manifest is reconciled against what
the bench did, so half a manifest would report hubs as missing or unexpected that are not.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from drivers.errors import ConfigError
from firmware_images.files import read_regular_file

__all__ = ["Manifest", "ManifestItem", "normalise_eui64"]

_HEX16 = re.compile(r"[0-9A-F]{16}")
#: Largest manifest read: a consignment of 500,000 hubs at 60 bytes a line fits.
MANIFEST_LIMIT = 32 << 20

#: Accepted header names (lower case, without spaces, ``-`` and ``_``) for each column.
_COLUMNS: dict[str, frozenset[str]] = {
    "consignment_id": frozenset({"consignmentid", "consignment", "consignmentno"}),
    "eui64": frozenset({"eui64", "eui", "deviceid", "chfeui64", "chfdeviceid"}),
    "model": frozenset({"model", "expectedmodel", "hubmodel"}),
    "version": frozenset({"firmwareversion", "version", "currentversion", "dspversion"}),
}


def normalise_eui64(text: str) -> str:
    """An EUI-64 in the DUIS form ``00-DB-12-34-56-78-90-A0``.

    Accepts upper or lower case hex, with ``-``, ``:`` or spaces between the octets, or
    none at all.

    Raises:
        ValueError: it is not 16 hex digits.
    """
    digits = re.sub(r"[-:\s]", "", text).upper()
    if not _HEX16.fullmatch(digits):
        raise ValueError(f"{text.strip()!r} is not an EUI-64 (16 hex digits)")
    return "-".join(digits[i : i + 2] for i in range(0, 16, 2))


@dataclass(frozen=True)
class ManifestItem:
    """One listed hub.

    Attributes:
        consignment_id: the consignment or return request it came in.
        eui64: its EUI-64, normalised.
        model: the model the manifest expects (None: not stated).
        line: the line of the file it came from (1 is the header).
        version: the firmware version the DSP holds for it, ``0x01010000`` (None: not
            stated).
    """

    consignment_id: str
    eui64: str
    model: str | None
    line: int
    version: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed consignment manifest.

    Attributes:
        name: the file name (recorded with the batch).
        items: the listed hubs, in file order.
        sha256: SHA-256 of the file's bytes (recorded in the audit log).
    """

    name: str
    items: tuple[ManifestItem, ...]
    sha256: str

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and check a manifest file.

        Raises:
            ConfigError: the file cannot be read, or a line is bad (named in the message).
        """
        path = Path(path)
        data = read_regular_file(path, limit=MANIFEST_LIMIT, what="manifest", error=ConfigError)
        return cls.parse(data, name=path.name, where=str(path))

    @classmethod
    def parse(cls, data: bytes, *, name: str, where: str | None = None) -> Manifest:
        """Parse a manifest's bytes; ``where`` names it in errors (default ``name``).

        Raises:
            ConfigError: a line is bad, a column is missing or an EUI-64 is listed twice.
        """
        where = where or name
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{where}:{line}: not UTF-8 text") from exc
        items = _read_rows(text, where)
        return cls(name=name, items=tuple(items), sha256=hashlib.sha256(data).hexdigest())

    def eui64s(self) -> frozenset[str]:
        """Every listed EUI-64."""
        return frozenset(item.eui64 for item in self.items)


def _column_key(header: str) -> str:
    return re.sub(r"[\s_\-]", "", header).lower()


def _read_rows(text: str, where: str) -> list[ManifestItem]:
    rows = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header: dict[str, int] | None = None
    width = 0
    items: list[ManifestItem] = []
    seen: dict[str, int] = {}
    while True:
        try:
            fields = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ConfigError(f"{where}:{rows.line_num}: bad CSV: {exc}") from None
        line = rows.line_num
        cells = [f.strip() for f in fields]
        if not any(cells):
            continue  # blank lines (and lines of empty cells) carry nothing
        if header is None:
            header, width = _parse_header(cells, where, line), len(cells)
            continue
        if len(cells) > width and any(cells[width:]):
            raise ConfigError(f"{where}:{line}: {len(cells)} fields, but the header has {width}")
        cells += [""] * (width - len(cells))
        consignment = cells[header["consignment_id"]]
        if not consignment:
            raise ConfigError(f"{where}:{line}: the consignment id is empty")
        try:
            eui = normalise_eui64(cells[header["eui64"]])
        except ValueError as exc:
            raise ConfigError(f"{where}:{line}: {exc}") from None
        if eui in seen:
            raise ConfigError(
                f"{where}:{line}: EUI-64 {eui} is listed twice (first on line {seen[eui]})"
            )
        seen[eui] = line
        model = cells[header["model"]] if "model" in header else ""
        version = cells[header["version"]] if "version" in header else ""
        items.append(
            ManifestItem(consignment, eui, model or None, line, _version(version, where, line))
        )
    if header is None:
        raise ConfigError(f"{where}: empty manifest (no header row)")
    if not items:
        raise ConfigError(f"{where}: the manifest lists no hubs")
    return items


def _version(text: str, where: str, line: int) -> str | None:
    """A firmware version cell as ``0x01020304`` (None when empty)."""
    if not text:
        return None
    parts = text.split(".")
    try:
        if len(parts) == 4 and all(0 <= int(p) < 256 for p in parts):
            value = int.from_bytes(bytes(int(p) for p in parts), "big")
        else:
            value = int(text, 16)
    except ValueError:
        value = -1
    if not 0 <= value <= 0xFFFFFFFF:
        raise ConfigError(f"{where}:{line}: firmware version {text!r} is not 0x01020304 or 1.2.3.4")
    return f"0x{value:08X}"


def _parse_header(cells: list[str], where: str, line: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        key = _column_key(cell)
        for column, names in _COLUMNS.items():
            if key in names:
                if column in found:
                    raise ConfigError(f"{where}:{line}: column {column!r} appears twice")
                found[column] = index
    for column in ("consignment_id", "eui64"):
        if column not in found:
            raise ConfigError(
                f"{where}:{line}: no {column.replace('_', ' ')} column in the header "
                f"(found: {', '.join(repr(c) for c in cells)}); the header row must name "
                "'consignment id' and 'EUI-64' (and optionally 'model', 'firmware version')"
            )
    return found

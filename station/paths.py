"""Where the station keeps its files by default, in one place.

Everything lives under the data folder (``$STATION_DATA``, default ``station-data`` in the
current folder): the SQLite database, the trust store, the catalogue, the reports and the
station's signing keys (``keys/``, or ``$STATION_KEYS``).
"""

from __future__ import annotations

import os
from pathlib import Path

from firmware_images.trust import TrustStore

__all__ = ["DATA", "DEFAULT_CATALOG", "DEFAULT_TRUST", "keys_dir", "trust_store"]

DATA = Path(os.environ.get("STATION_DATA", "station-data"))
DEFAULT_TRUST = DATA / "trust"
DEFAULT_CATALOG = DATA / "catalog"


def keys_dir() -> Path:
    """The folder of the station's signing key and the stations' public keys."""
    return Path(os.environ.get("STATION_KEYS") or DATA / "keys")


def trust_store(folder: str | None) -> TrustStore | None:
    """The trust store named on the command line, or the default one if it exists."""
    if folder is not None:
        return TrustStore.from_dir(folder)
    return TrustStore.from_dir(DEFAULT_TRUST) if DEFAULT_TRUST.is_dir() else None

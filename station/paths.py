"""Where the station keeps its files by default, in one place.

Everything lives under the data folder (``$STATION_DATA``, default ``station-data`` in the
current folder): the SQLite database, the trust store, the catalogue, the reports and the
station's signing keys (``keys/``, or ``$STATION_KEYS``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA", "keys_dir"]

DATA = Path(os.environ.get("STATION_DATA", "station-data"))


def keys_dir() -> Path:
    """The folder of the station's signing key and the stations' public keys."""
    return Path(os.environ.get("STATION_KEYS") or DATA / "keys")

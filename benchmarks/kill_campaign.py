"""Kill campaign, long: ``station run`` killed with SIGKILL many times over one database.

The same campaign as tests/station/test_kill_campaign.py (tests/station/killkit.py says how
runs are killed and what is checked), with more kills, on SQLite or PostgreSQL. It prints
where the kills landed and every problem found; exit status 1 when there is one.

Run: ``.venv/bin/python benchmarks/kill_campaign.py [--kills 200] [--slots 4] [--seed 1]
[--db sqlite|URL]``. With ``--db postgresql+psycopg://...`` every table of the station schema
in that database is dropped first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.station.killkit

from sqlalchemy import create_engine

from station.records.schema import metadata
from tests.station.killkit import run_campaign


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", default="sqlite", help="sqlite, or a PostgreSQL URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        db = f"sqlite:///{root}/campaign.db"
        if args.db != "sqlite":
            db = args.db
            engine = create_engine(db)
            metadata.drop_all(engine)
            engine.dispose()
        result = run_campaign(root, db, kills=args.kills, slots=args.slots, seed=args.seed)
    print(result.summary())
    for problem in result.problems:
        print(f"PROBLEM {problem}")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())

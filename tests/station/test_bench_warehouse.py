"""The warehouse benchmark runs end to end on a small scale and prints what it promises.

The figures themselves are the benchmark's business (docs/warehouse.md, "Capacity"); this
only keeps ``benchmarks/bench_warehouse.py`` working: two station processes of two slots
each, on SQLite, drive the real store and recorder through whole passed jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_warehouse.py"


@pytest.mark.timeout(60)
def test_bench_warehouse_reports_rates_latencies_and_a_conclusion(tmp_path: Path) -> None:
    db = f"sqlite:///{(tmp_path / 'station.db').as_posix()}"
    args = ["--db", db, "--stations", "2", "--slots", "2", "--seconds", "2", "--job-seconds", "1"]
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    (case,) = out["cases"]
    assert (case["stations"], case["slots"], case["errors"]) == (2, 2, 0)
    assert case["records"] > 0 and case["records_per_s"] > 0
    assert case["jobs"] > 0  # whole jobs passed, not only states
    assert 0 < case["state_p50_ms"] <= case["state_p99_ms"] <= case["state_max_ms"]
    assert case["db_cpu_ms_per_record"] is None  # SQLite: no server to measure
    assert "stations" in out["conclusion"]


def test_bench_warehouse_refuses_a_bad_station_list_in_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{(tmp_path / 'station.db').as_posix()}"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--db", db, "--stations", "four"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--stations" in done.stderr

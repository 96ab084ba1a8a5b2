"""``kill -9`` of ``station run`` at random moments, each followed by a restart, then every
hub's true state against the records and the DSP update (tests/station/killkit.py says what
is checked): a short campaign in every run, and at least 50 kills (25 on SQLite, 25 on
PostgreSQL) in ``make test-all``. ``benchmarks/kill_campaign.py`` runs a longer one."""

from __future__ import annotations

from pathlib import Path

import pytest

from .killkit import run_campaign
from .recordkit import backend_url

KILLS = 25
SHORT = 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_short_kill_campaign(backend: str, tmp_path: Path) -> None:
    db = backend_url(backend, tmp_path)
    result = run_campaign(tmp_path, db, kills=SHORT, seed=3 if backend == "sqlite" else 5)
    print(result.summary())
    assert result.problems == []
    assert result.kills >= SHORT


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_campaign_records_and_dsp_update_tell_the_truth(backend: str, tmp_path: Path) -> None:
    db = backend_url(backend, tmp_path)
    result = run_campaign(tmp_path, db, kills=KILLS, seed=7 if backend == "sqlite" else 11)
    print(result.summary())
    assert result.problems == []
    assert result.kills >= KILLS
    assert len(result.by_moment) >= 6  # kills landed at many different moments
    assert result.upgraded >= result.kills // 3  # and there was real work to cut into

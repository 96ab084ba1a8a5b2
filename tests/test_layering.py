"""The layering holds: imports point down only, no package has an import cycle among its
modules, and only a protocol's plug-in imports that protocol's code.

The contracts are in pyproject.toml ([tool.importlinter]); ``make lint`` runs them too.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_contracts_cover_the_layers_and_the_cycles() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    forbidden = {
        source: set(c["forbidden_modules"])
        for c in config["contracts"]
        if c["type"] == "forbidden"
        for source in c["source_modules"]
    }
    assert {"station", "sim", "firmware_images"} <= forbidden["drivers"]
    assert {"station", "sim"} <= forbidden["firmware_images"]
    assert "station" in forbidden["sim"]
    acyclic = next(c for c in config["contracts"] if c["type"] == "acyclic_siblings")
    assert {"station", "drivers", "firmware_images", "sim"} <= set(acyclic["ancestors"])
    assert not any("station" in rule for rule in acyclic.get("ignore_imports", []))

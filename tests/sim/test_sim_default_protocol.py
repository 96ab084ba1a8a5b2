"""No code outside a plug-in names a protocol: a hub spec names its own, and ``station sim``
without ``--protocol`` serves the simulator its plug-in marks as the default."""

from __future__ import annotations

import argparse

import pytest

import sim.core.spec as spec_mod
from sim.cli import add_arguments, run
from sim.core.spec import HubSpec, default_protocol


def test_a_hub_spec_names_its_protocol() -> None:
    with pytest.raises(TypeError, match="protocol"):
        HubSpec(slot=1, eui64="00-DB-12-34-56-78-90-A0")  # type: ignore[call-arg]
    assert HubSpec(slot=1, eui64="00-DB-12-34-56-78-90-A0", protocol="smp").protocol == "smp"


def test_the_built_in_default_is_marked_by_its_plug_in() -> None:
    assert default_protocol() == "an3155"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--hubs", "1"]).protocol is None


def test_without_a_default_station_sim_asks_for_protocol(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = {n: m for n, m in spec_mod.sim_models().items() if not m.default}
    monkeypatch.setattr(spec_mod, "sim_models", lambda: models)
    assert default_protocol() is None
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args(["--hubs", "1"])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--protocol is required" in err

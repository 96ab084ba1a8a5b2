"""Protocols are plug-ins: a package installed with pip adds one, and the station flashes
its hubs without a line of station code naming it.

The example package (tests/plugins/example_protocol: driver, session, simulated hub, one
entry point) is installed into this environment for the session and removed after.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.errors import ConfigError, ImageError
from firmware_images.loader import LoadedImage, load_image
from sim.core.spec import HubSpec, derive_eui64, sim_models
from sim.pty import SimHub
from station import protocols
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile, parse_profile
from station.protocols import Link, plugin, plugin_problems, plugins

from ..conftest import NEW, OLD
from ..plugins.wheelkit import build_wheel, pip

EXAMPLE = Path(__file__).parents[1] / "plugins" / "example_protocol"
UNSIGNED_OK = Policy(allow_unsigned=True)


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example protocol package, pip-installed for these tests; its protocol name."""
    name, wheel = build_wheel(EXAMPLE, tmp_path_factory.mktemp("wheel"))
    done = pip("install", "--no-deps", "--no-index", "--force-reinstall", str(wheel))
    if done.returncode != 0:
        pytest.fail(f"pip could not install the example plug-in: {done.stderr}")
    importlib.invalidate_caches()
    protocols.reload()
    try:
        yield "exline"
    finally:
        pip("uninstall", "-y", name)
        importlib.invalidate_caches()
        protocols.reload()


def test_builtin_protocols_register_through_entry_points() -> None:
    found = plugins()
    assert {"an3155", "gecko", "dfu"} <= set(found)
    assert found["dfu"].link is Link.USB and found["an3155"].link is Link.SERIAL
    assert found["gecko"].image_formats == frozenset({"gbl"})
    assert not found["gecko"].accepts("ihex") and found["an3155"].accepts("ihex")
    assert found["dfu"].verify_methods == ("readback",)
    for name, p in found.items():  # every built-in has simulated hubs of the same name
        assert p.sim_model is not None and p.sim_model.name == name
        assert sim_models()[name] is p.sim_model


def test_an_installed_plugin_flashes_a_simulated_hub(
    example_plugin: str, new_image: LoadedImage, tmp_path: Path
) -> None:
    own = plugin(example_plugin)
    assert own.link is Link.SERIAL and example_plugin in sim_models()
    profile = load_profile(str(EXAMPLE / "exline-demo.toml"))
    assert profile.protocol == example_plugin
    # Its bootloader takes its own container, which the plug-in brings to the loader.
    with pytest.raises(ImageError, match=r"exline-demo hubs \(exline\) take exline images"):
        flash_hub("/dev/null", profile, new_image, policy=UNSIGNED_OK)
    path = tmp_path / "app.bin"  # a name that says nothing: its magic does
    path.write_bytes(b"EXLN" + new_image.address.to_bytes(4, "little") + new_image.data)
    image = load_image(path)
    assert (image.kind, image.address, image.data) == ("exline", new_image.address, new_image.data)
    spec = HubSpec(
        slot=1,
        eui64=derive_eui64(5, 1),
        protocol=example_plugin,
        firmware=OLD,
        start_in="app",
        baud=profile.baud,
    )
    with SimHub.start(spec) as hub:
        out = flash_hub(hub.port, profile, image, policy=UNSIGNED_OK)
        assert out.result is Result.PASSED, (out.message, out.exchanges)
        assert out.found_in == "application"
        assert (out.version_before, out.version_after) == (f"0x{OLD:08X}", f"0x{NEW:08X}")
        assert out.eui64 == spec.eui64 and out.verify_method == "device-crc"
        truth = hub.ground_truth(len(new_image.data))
        assert truth["running"] == NEW  # the hub itself, not the job, says so


def test_station_sim_offers_an_installed_protocol(example_plugin: str) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "station.cli", "sim", "--protocol", example_plugin, "--hubs", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The protocol is accepted; only the hub count is refused (nothing is started).
    assert listed.returncode == 2 and "--hubs: 0 must be at least 1" in listed.stderr


Dist = Callable[[str, str], None]


@pytest.fixture
def dist(tmp_path: Path) -> Iterator[Dist]:
    """Puts a distribution's metadata on sys.path, as an installed package leaves it
    (``dist(name, entry point lines)``); all are taken away again after the test."""
    added: list[str] = []

    def add(name: str, entries: str) -> None:
        folder = tmp_path / name
        info = folder / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[chub_station.protocols]\n{entries}\n")
        sys.path.insert(0, str(folder))
        added.append(str(folder))
        importlib.invalidate_caches()
        protocols.reload()

    yield add
    for folder in added:
        sys.path.remove(folder)
    importlib.invalidate_caches()
    protocols.reload()


PROFILE_TEXT = """\
name = "hub"
protocol = "{protocol}"
[link]
baud = 115200
parity = "none"
[memory]
flash_start = 0x0800_0000
flash_size = 0x2_0000
page_size = 0x400
app_address = 0x0800_0000
[model]
manufacturer_code = 0x1234
image_type = 0x0401
[bootloader]
verify = "{verify}"
"""


def _parse(protocol: str, verify: str = "auto") -> None:
    import tomllib

    text = PROFILE_TEXT.format(protocol=protocol, verify=verify)
    parse_profile(tomllib.loads(text), "hub.toml", text)


def test_a_broken_plugin_costs_only_its_own_protocol(
    dist: Dist,
) -> None:
    dist("acme-broken", "acme = acme_missing:PLUGIN")
    assert "acme" not in plugins() and "an3155" in plugins()
    assert "ModuleNotFoundError" in plugin_problems()["acme"]
    with pytest.raises(ConfigError) as raised:
        _parse("acme")
    message = raised.value.message
    assert message.startswith("hub.toml line 2: protocol = 'acme': plug-in acme_missing:PLUGIN")
    assert "(package acme-broken) does not load: ModuleNotFoundError" in message


def test_a_plugin_object_of_the_wrong_kind_or_name_is_refused(
    dist: Dist,
) -> None:
    dist(
        "acme-odd", "notaplugin = station.protocols:Link\nmisnamed = station.sessions.gecko:PLUGIN"
    )
    assert "is a EnumType, not a ProtocolPlugin" in plugin_problems()["notaplugin"]
    assert "is named 'gecko', not 'misnamed'" in plugin_problems()["misnamed"]
    with pytest.raises(ConfigError, match="no protocol plug-in named 'nothing'"):
        plugin("nothing")


def test_a_protocol_registered_twice_is_used_by_neither(
    dist: Dist,
) -> None:
    dist("acme-clash", "gecko = station.sessions.gecko:PLUGIN")
    assert "gecko" not in plugins() and "registered twice" in plugin_problems()["gecko"]


def test_a_profile_may_ask_only_for_a_verify_method_its_protocol_offers() -> None:
    _parse("dfu", verify="readback")
    with pytest.raises(ConfigError) as raised:
        _parse("dfu", verify="crc")
    assert raised.value.message == (
        "hub.toml line 15 ([bootloader]): verify = 'crc': dfu hubs offer auto, readback"
    )


def test_station_protocols_lists_plugins_and_names_a_broken_one(
    example_plugin: str, dist: Dist, capsys: pytest.CaptureFixture[str]
) -> None:
    from station.cli import main

    assert main(["protocols"]) == 0
    listed = capsys.readouterr().out
    assert "exline     serial verify auto/crc" in listed and "(chub_example.session)" in listed
    dist("acme-broken", "acme = acme_missing:PLUGIN")
    assert main(["protocols", "--json"]) == 2
    out, err = capsys.readouterr()
    assert '"protocol": "exline"' in out
    assert "error: protocol acme: plug-in acme_missing:PLUGIN" in " ".join(err.split())

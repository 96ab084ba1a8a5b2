"""What an operator used to esptool or stm32flash expects of the ``station`` command:
``--version``, the licence and changes it points to, help that says what each command
accepts and how it exits, ``--baud``, a hex trace, a read-only ``station info``, and errors
that say what was really wrong with what was given.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from sim.pty import SimHub
from station.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"station {version('chub-station')} (chub-station)"


def test_installed_version_is_the_projects() -> None:
    """``--version`` reads the installed metadata: it must be pyproject's, not a stale one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version("chub-station") == project["version"]


def test_licence_is_the_apache_license_the_project_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_bytes()
    # The text as apache.org publishes it (LICENSE-2.0.txt), byte for byte.
    assert hashlib.md5(text).hexdigest() == "3b83ef96387f14655fc854ddc3c6bd57"


def test_changelog_has_the_running_release() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## (\d+\.\d+\.\d+) - (\d{4}-\d{2}-\d{2})", text, re.MULTILINE)
    assert releases, "no '## X.Y.Z - YYYY-MM-DD' release headings"
    assert releases[0][0] == version("chub-station")  # newest first
    # the newest release's section (an "Unreleased" one may come first)
    newest = next(part for part in text.split("\n## ")[1:] if part.startswith(releases[0][0]))
    for words in ("lease", "DSP update", "audit", "docs/records.md"):
        assert words in newest


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse re-wraps: compare words


def test_flash_help_names_every_image_format_it_takes(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "flash")
    for kind in ("GBCS", "Zigbee OTA", "GBL", "DFU", "DfuSe", "Intel HEX", "S-record", "raw"):
        assert kind in text, kind


def test_flash_help_gives_flashs_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "flash")
    for status in ("0 the hub passed", "1 the hub failed", "2 bad input", "3 refused by policy"):
        assert status in text, status
    assert "4 skipped" in text and "130 interrupted" in text


@pytest.mark.parametrize("command", ["run", "tui"])
def test_batch_commands_give_a_batchs_exit_statuses(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(capsys, command)
    epilog = text[text.index("exit status:") :]
    assert "0 every hub passed, was already current or was refused by policy" in epilog
    for reason in (
        "failed or was interrupted",
        "ended before its hub was identified",
        "a record was refused",
        "the lease was lost",
        "a listed hub is missing",
        "already running",
        "130 interrupted before the batch began",
    ):
        assert reason in epilog, reason
    # A batch never exits 3 or 4: those are one hub's outcomes under 'station flash'.
    assert "3 refused" not in epilog and "4 skipped" not in epilog


def test_top_level_help_sends_each_command_to_its_own_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(capsys)
    assert "4 skipped" not in text
    assert "Each command's --help gives its exit statuses" in text


@pytest.mark.parametrize("command", ["demo", "flash", "sim", "run", "tui", "ports", "profiles"])
def test_each_command_gives_its_own_exit_statuses(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "exit status: 0 " in _help(capsys, command)


# -- errors that say what was really wrong ---------------------------------------------------


def test_a_photo_named_zigbee_is_not_called_a_raw_binary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "hub-label.zigbee"
    photo.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(5000))
    code = main(["flash", "--port", "/dev/null", "--profile", "demo-an3155", str(photo)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {photo}: zigbee-ota: no Zigbee OTA file identifier"), err
    assert "read as a Zigbee/GBCS OTA file, as its name says (.zigbee)" in err
    assert "it looks like a JPEG image" in err and "raw binary" not in err


def test_a_profile_file_that_is_not_there_is_called_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["flash", "--port", "/dev/null", "--profile", "nosuch.toml", "x.hex"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: profile file nosuch.toml does not exist"), err
    assert "give a .toml path" not in err


def test_a_catalogue_folder_that_is_not_there_is_called_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "catalgoue"
    code = main(
        ["flash", "--port", "/dev/null", "--profile", "demo-an3155", "--catalog", str(folder)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: no catalogue at {folder}: the folder does not exist"), err
    assert "give --catalog" not in err


@pytest.mark.parametrize("setting", ["", "sim:/nonexistent/bus.sock"], ids=["libusb", "sim-bus"])
def test_no_usb_backend_is_a_station_problem_not_a_failed_hub(
    setting: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import usb.backend.libusb1

    from firmware_images.build import demo_payload
    from firmware_images.dfu import build_dfuse

    monkeypatch.setattr(usb.backend.libusb1, "get_backend", lambda: None)  # no libusb here
    monkeypatch.setenv("STATION_USB_BACKEND", setting)
    image = tmp_path / "app.dfu"
    payload = demo_payload(0x0105_0000, size=4096)
    image.write_bytes(build_dfuse([(0, "", [(0x0800_0000, payload)])], vid=0x0483, pid=0xDF11))
    argv = ["flash", "--port", "usb:1-1.1", "--profile", "demo-dfu", "--allow-unsigned"]
    code = main([*argv, str(image)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out == "" and "FAILED" not in err
    fix = "install libusb-1.0" if not setting else "is 'station sim --protocol dfu' running?"
    assert err.startswith("error: usb:1-1.1: ") and fix in err, err


# -- a hub flashed with another model's profile ----------------------------------------------

HINT = "the right profile for this hub? station info --port"


@pytest.fixture
def fresh_sim_hubs() -> Iterator[None]:
    from sim.urlhandler import protocol_sim, register

    register()
    protocol_sim.forget_hubs()
    yield
    protocol_sim.forget_hubs()


@pytest.mark.parametrize(
    ("port", "profile", "image"),
    [
        ("sim://gecko?firmware=1.1.0.0", "demo-an3155", "hex"),
        ("sim://gecko?firmware=1.1.0.0&start-in=app", "demo-an3155", "hex"),
        ("sim://an3155?firmware=1.1.0.0", "demo-gecko", "gbl"),
        ("sim://an3155?firmware=1.1.0.0&start-in=app", "demo-gecko", "gbl"),
    ],
    ids=["gecko-bootloader", "gecko-app", "an3155-bootloader", "an3155-app"],
)
def test_a_hub_of_another_protocol_asks_whether_the_profile_is_right(
    port: str,
    profile: str,
    image: str,
    tmp_path: Path,
    fresh_sim_hubs: None,
) -> None:
    import dataclasses

    from firmware_images.loader import load_image
    from sim.gecko import demo_gbl
    from station.demo import write_demo_image
    from station.flash import Policy, Result, flash_hub
    from station.profiles import load_profile

    # Short waits: the hub answers at once when it answers at all.
    prof = dataclasses.replace(load_profile(profile), resync_timeout_s=0.5, boot_timeout_s=1.0)
    if image == "gbl":
        (tmp_path / "app.gbl").write_bytes(demo_gbl(0x0105_0000, size=8192))
        loaded = load_image(tmp_path / "app.gbl", default_address=prof.app_address)
    else:
        loaded = load_image(write_demo_image(tmp_path / "app.hex", 0x0105_0000, size=8192))
    out = flash_hub(port, prof, loaded, policy=Policy(allow_unsigned=True))
    assert (out.result, out.phase) == (Result.FAILED, "connect"), out
    assert f"is {profile} {HINT} '{port}' --profile auto identifies it" in out.hint, out.hint


def test_a_usb_hub_of_other_ids_asks_whether_the_profile_is_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib import resources

    from drivers.transport.usb import ENV_BACKEND, register_backend
    from firmware_images.loader import load_image
    from sim.dfu_rig import dfu_rig_specs
    from sim.usb_backend import SimUsbBackend, SimUsbService, VirtualClock
    from station.demo import write_demo_image
    from station.flash import Policy, Result, flash_hub
    from station.profiles import load_profile

    text = (resources.files("station.profiles") / "demo-dfu.toml").read_text()
    other = tmp_path / "other-dfu.toml"
    other.write_text(
        text.replace('name = "demo-dfu"', 'name = "other-dfu"')
        .replace("[0x1209, 0x0001]", "[0x1234, 0x0001]")
        .replace("[0x0483, 0xDF11]", "[0x1234, 0xDF11]")
    )
    profile = load_profile(str(other))
    service = SimUsbService.of(dfu_rig_specs(1, firmware=0x0101_0000), clock=VirtualClock())
    register_backend("test-other-ids", lambda: SimUsbBackend(service))
    monkeypatch.setenv(ENV_BACKEND, "test-other-ids")
    try:
        image = load_image(write_demo_image(tmp_path / "app.hex", 0x0105_0000, size=8192))
        out = flash_hub("usb:1-1.1", profile, image, policy=Policy(allow_unsigned=True))
    finally:
        register_backend("test-other-ids", None)
    assert (out.result, out.phase) == (Result.FAILED, "connect"), out
    assert "usb:1-1.1 holds 0483:df11, not a device with the ids looked for" in out.message
    assert "is other-dfu the right profile for this hub? station info --port usb:1-1.1" in out.hint


# -- --baud and --trace ----------------------------------------------------------------------


def test_baud_overrides_the_profiles_rate(
    start_hub: Callable[..., SimHub],
    new_image_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import os
    import termios

    hub = start_hub(start_in="app")
    argv = ["flash", "--port", hub.port, "--profile", "demo-an3155", "--allow-unsigned"]
    code = main([*argv, "--baud", "57600", str(new_image_path), "--json"])
    assert code == 0, capsys.readouterr()
    # The line the station set up is still there (the hub holds the pseudo-terminal): its
    # speed is the one given, not the profile's 115200.
    fd = os.open(hub.port, os.O_RDWR | os.O_NOCTTY)
    try:
        ispeed, ospeed = termios.tcgetattr(fd)[4:6]
    finally:
        os.close(fd)
    assert ispeed == ospeed == termios.B57600


def test_baud_is_refused_for_a_usb_hub(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["flash", "--port", "usb:1-1.1", "--profile", "demo-dfu", "--baud", "9600"]
    code = main([*argv, str(tmp_path / "x.dfu")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --baud sets a serial line's rate; demo-dfu hubs are on USB"), err


@pytest.mark.parametrize("flag", ["-v", "--trace"])
def test_trace_prints_every_exchange_in_hex(
    flag: str,
    start_hub: Callable[..., SimHub],
    new_image_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub = start_hub()  # in its bootloader
    argv = ["flash", "--port", hub.port, "--profile", "demo-an3155", "--allow-unsigned"]
    code = main([*argv, flag, "--baud", "57600", str(new_image_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count("\n") == 1 and '"result": "passed"' in out  # stdout stays the result
    lines = err.splitlines()
    assert re.fullmatch(
        rf"trace \+0\.000 open {re.escape(hub.port)} at 57600 baud, 8N1.*", lines[0]
    )
    # The bootloader's answer to the sync byte (ACK; a second 0x7F goes out first if the
    # answer is slower than the driver's short wait, as on a loaded machine).
    get = next(i for i, line in enumerate(lines) if line.endswith(" -> 00 FF"))
    sync = max(i for i, line in enumerate(lines[:get]) if line.endswith(" -> 7F"))
    assert lines[sync + 1].endswith(" <- 79"), lines[: get + 1]
    # Write Memory (31 CE) goes out with its address and data in one burst.
    assert any(" -> 31 CE 08 00 " in line for line in lines)
    # What the application console says is shown as text too.
    assert any(line.endswith(' -> 56 45 52 3F 0D 0A  "VER?\\r\\n"') for line in lines), err
    # Every byte of every block is there: 24 KiB of data in 256-byte Write Memory frames.
    sent = sum(
        len(line.split(" -> ")[1].split('  "')[0].split()) for line in lines if " -> " in line
    )
    assert sent > 24 * 1024


def test_trace_of_a_usb_hub_shows_each_request_and_all_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drivers.transport.usb import ENV_BACKEND, register_backend
    from firmware_images.build import demo_payload
    from firmware_images.dfu import build_dfuse
    from firmware_images.loader import load_image
    from sim.dfu_rig import dfu_rig_specs
    from sim.usb_backend import SimUsbBackend, SimUsbService, VirtualClock
    from station.flash import Policy, Result, flash_hub
    from station.profiles import load_profile
    from station.sessions.trace import trace_to

    payload = demo_payload(0x0105_0000, size=8192)
    path = tmp_path / "app.dfu"
    path.write_bytes(build_dfuse([(0, "", [(0x0800_0000, payload)])], vid=0x0483, pid=0xDF11))
    service = SimUsbService.of(dfu_rig_specs(1, firmware=0x0101_0000), clock=VirtualClock())
    register_backend("test-trace", lambda: SimUsbBackend(service))
    monkeypatch.setenv(ENV_BACKEND, "test-trace")
    lines: list[str] = []
    try:
        with trace_to(lines.append):
            out = flash_hub(
                "usb:1-1.1",
                load_profile("demo-dfu"),
                load_image(path),
                policy=Policy(allow_unsigned=True),
            )
    finally:
        register_backend("test-trace", None)
    assert out.result is Result.PASSED, out
    assert any(" -> DNLOAD wValue=2 " in line for line in lines)  # the first data block
    shown = " ".join(line.split("    ", 1)[1] for line in lines if "    " in line)
    assert payload[:64].hex(" ").upper() in shown  # every byte, not the 8 a failure keeps

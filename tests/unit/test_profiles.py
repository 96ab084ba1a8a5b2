"""Profiles load, and bad ones are refused with the file and key named; image prechecks."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.errors import ConfigError, ImageError
from firmware_images.build import demo_payload
from firmware_images.loader import load_image
from station.flash import precheck
from station.profiles import builtin_names, load_profile


def test_builtin_profile() -> None:
    assert "demo-an3155" in builtin_names()
    p = load_profile("demo-an3155")
    assert (p.flash_start, p.flash_size, p.page_size) == (0x0800_0000, 512 * 1024, 2048)
    assert p.pages_for(0x0800_0000, 0x0800_0801) == [0, 1]
    assert p.page_start(0x0800_0FFF) == 0x0800_0800


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile("no-such-hub")
    assert "demo-an3155" in str(exc.value)


def test_bad_profile_file_names_key(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "station/profiles/demo-an3155.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("baud = 115200", 'baud = "fast"'))
    with pytest.raises(
        ConfigError, match=r"bad\.toml line 8 \(\[link\]\): 'baud' must be an integer"
    ):
        load_profile(str(bad))
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_profile(str(bad))


PROFILES = Path(__file__).parents[2] / "station" / "profiles"
COMMON = "(known: bootloader, description, lines, link, memory, model, name, protocol"


@pytest.mark.parametrize(
    ("profile", "change", "says"),
    [
        # Misspelt keys and sections, in the common sections and the protocol's own.
        (
            "an3155",
            ("baud = 115200", "bawd = 115200"),
            "line 8 ([link]): unknown key 'bawd' (known: baud, parity)",
        ),
        (
            "an3155",
            ("[bootloader]", "[bootlaoder]"),
            f"line 23: unknown key 'bootlaoder' {COMMON})",
        ),
        (
            "an3155",
            ("retries = 5", "retires = 5"),
            "line 27 ([bootloader]): unknown key 'retires' "
            "(known: ack_timeout_s, boot_timeout_s, entry",
        ),
        (
            "an3155",
            ('name = "demo-an3155"', 'name = "demo-an3155"\nnmae = "x"'),
            f"line 4: unknown key 'nmae' {COMMON})",
        ),
        (
            "gecko",
            ("upload_attempts = 3", "upload_attempt = 3"),
            "line 39 ([gecko]): unknown key 'upload_attempt' (known: identify_via_application, "
            "menu_timeout_s, start_timeout_s, upload_attempts)",
        ),
        (
            "gecko",
            ("[gecko]", "[dfu]"),
            "line 37: unknown key 'dfu' (known: bootloader, description, gecko, lines, link, "
            "memory",
        ),
        (
            "dfu",
            ("flash_alt = 0", "flash_alt = 0\nflash_alt_ = 1"),
            "line 39 ([dfu]): unknown key 'flash_alt_'",
        ),
        (
            "an3155",
            ("[bootloader]", "[an3155]\nx = 1\n[bootloader]"),
            f"line 23: unknown key 'an3155' {COMMON})",
        ),
        # Wrong types.
        (
            "an3155",
            ('parity = "even"', "parity = 1"),
            "line 9 ([link]): 'parity' must be one of even, none, odd, not 1",
        ),
        (
            "an3155",
            ("[link]\nbaud = 115200", "link = 5\nbaud = 115200"),
            "line 7: 'link' must be a table, not 5",
        ),
        (
            "an3155",
            ("pipeline_writes = true", "pipeline_writes = 1"),
            "line 26 ([bootloader]): 'pipeline_writes' must be true or false, not 1",
        ),
        (
            "an3155",
            ("boot_timeout_s = 3.0", 'boot_timeout_s = "3"'),
            "line 30 ([bootloader]): 'boot_timeout_s' must be a number",
        ),
        (
            "an3155",
            ('description = "Sim', 'description = 5 # "Sim'),
            "line 4: 'description' must be a string",
        ),
        (
            "gecko",
            ("upload_attempts = 3", "upload_attempts = 3.5"),
            "line 39 ([gecko]): 'upload_attempts' must be an integer 1..100, not 3.5",
        ),
        (
            "gecko",
            ("identify_via_application = true", 'identify_via_application = "yes"'),
            "line 46 ([gecko]): 'identify_via_application' must be true or false",
        ),
        (
            "dfu",
            ("dfu_id = [0x0483, 0xDF11]", 'dfu_id = "0483:df11"'),
            "line 36 ([dfu]): 'dfu_id' must be a list of 2 integers 0..65535, not '0483:df11'",
        ),
        (
            "dfu",
            ('version_from = "string"', 'version_from = "strings"'),
            "line 42 ([dfu]): 'version_from' must be one of bcdDevice, string, not 'strings'",
        ),
        (
            "dfu",
            ("same_serial = true", "same_serial = 1"),
            "line 53 ([dfu]): 'same_serial' must be true or false",
        ),
        # Absurd values.
        (
            "an3155",
            ("baud = 115200", "baud = 0"),
            "line 8 ([link]): 'baud' must be an integer 50..12000000, not 0",
        ),
        (
            "an3155",
            ("retries = 5", "retries = 9223372036854775807"),
            "line 27 ([bootloader]): 'retries' must be an integer 0..100",
        ),
        (
            "an3155",
            ("ack_timeout_s = 0.25", "ack_timeout_s = 0"),
            "line 35 ([bootloader]): 'ack_timeout_s' must be a number 0.001..60, not 0",
        ),
        (
            "an3155",
            ("ack_timeout_s = 0.25", "ack_timeout_s = nan"),
            "'ack_timeout_s' must be a number 0.001..60, not nan",
        ),
        (
            "an3155",
            ("boot_timeout_s = 3.0", "boot_timeout_s = inf"),
            "'boot_timeout_s' must be a number 0..600, not inf",
        ),
        (
            "an3155",
            ("page_size = 0x800", "page_size = 0"),
            "line 14 ([memory]): 'page_size' must be an integer 1..16777216, not 0",
        ),
        (
            "an3155",
            ("flash_size = 0x8_0000", "flash_size = 0x1_0000_0000_0000"),
            "line 13 ([memory]): 'flash_size' must be an integer 1..4294967296",
        ),
        (
            "an3155",
            ("app_address = 0x0800_0000", "app_address = 0x0900_0000"),
            "line 15 ([memory]): 'app_address' 0x09000000 is outside the flash "
            "0x08000000..0x0807FFFF",
        ),
        (
            "an3155",
            ("manufacturer_code = 0x1234", "manufacturer_code = 0x12345"),
            "line 20 ([model]): 'manufacturer_code' must be an integer 0..65535, not 74565",
        ),
        (
            "an3155",
            ('name = "demo-an3155"', 'name = ""'),
            "line 3: 'name' must be a string of 1..64 printable characters, not ''",
        ),
        (
            "an3155",
            ('name = "demo-an3155"', 'name = "demo\\u001b[2J"'),
            "line 3: 'name' must be a string of 1..64 printable characters, not 'demo\\x1b[2J'",
        ),
        (
            "gecko",
            ("menu_timeout_s = 0.5", "menu_timeout_s = -1"),
            "line 41 ([gecko]): 'menu_timeout_s' must be a number 0.01..60, not -1",
        ),
        (
            "dfu",
            ("transfer_size = 0", "transfer_size = 65536"),
            "line 47 ([dfu]): 'transfer_size' must be an integer 0..65535",
        ),
        (
            "dfu",
            ("dfu_id = [0x0483, 0xDF11]", "dfu_id = [0x0483, 0xDF11, 1]"),
            "line 36 ([dfu]): 'dfu_id' must be a list of 2 integers 0..65535",
        ),
        # Missing: the section's header, or the file.
        (
            "an3155",
            ("baud = 115200\n", ""),
            "line 7 ([link]): 'baud' (an integer 50..12000000) is required",
        ),
        (
            "an3155",
            ('protocol = "an3155"\n', ""),
            "demo-an3155.toml: 'protocol' (one of an3155, dfu, gecko, smp) is required",
        ),
    ],
)
def test_bad_profile_names_file_line_and_key(
    tmp_path: Path, profile: str, change: tuple[str, str], says: str
) -> None:
    text = (PROFILES / f"demo-{profile}.toml").read_text()
    bad = tmp_path / f"demo-{profile}.toml"
    assert change[0] in text
    bad.write_text(text.replace(*change, 1))
    with pytest.raises(ConfigError) as exc:
        load_profile(str(bad))
    assert f"{bad} " in str(exc.value) or f"{bad}:" in str(exc.value)
    assert says in str(exc.value)


def test_bad_profile_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from station.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text((PROFILES / "demo-an3155.toml").read_text().replace("[model]", "[modle]"))
    assert main(["flash", "--profile", str(bad), "--port", "/dev/null", "x.hex"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {bad} line 18: unknown key 'modle' (known: bootloader,")


def test_builtin_profiles_pass_the_strict_checks() -> None:
    for name in builtin_names():
        assert load_profile(name).name == name


def _image(tmp_path: Path, size: int, address: int = 0x0800_0000, **kw: int) -> object:
    path = tmp_path / "app.bin"
    path.write_bytes(demo_payload(0x01050000, size=size, **kw))
    return load_image(path, address)


def test_precheck_accepts_the_demo_image(tmp_path: Path) -> None:
    precheck(_image(tmp_path, 4096), load_profile("demo-an3155"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "address", "kw", "match"),
    [
        (600 * 1024, 0x0800_0000, {}, "does not fit in flash"),
        (4096, 0x0800_0100, {}, "start at 0x08000000"),
        (4096, 0x0800_0000, {"manufacturer_code": 0x9999}, "manufacturer code 0x9999"),
        (4096, 0x0800_0000, {"image_type": 0x0001}, "image type 0x0001"),
    ],
)
def test_precheck_refuses(
    tmp_path: Path, size: int, address: int, kw: dict[str, int], match: str
) -> None:
    with pytest.raises(ImageError, match=match):
        precheck(_image(tmp_path, size, address, **kw), load_profile("demo-an3155"))  # type: ignore[arg-type]


def _user_profile(folder: Path, name: str, file_name: str | None = None) -> Path:
    builtin = (Path(__file__).parents[2] / "station/profiles/demo-an3155.toml").read_text()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{file_name or name}.toml"
    path.write_text(builtin.replace('name = "demo-an3155"', f'name = "{name}"'))
    return path


def test_user_folder_adds_profiles_and_never_shadows_a_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from station.cli import main

    first, second = tmp_path / "site", tmp_path / "team"
    _user_profile(first, "acme-chub-v2")
    _user_profile(second, "acme-chub-v3")
    (second / "demo-an3155.toml").write_text('name = "demo-an3155"\nprotocol = "gecko"\n')
    monkeypatch.setenv("STATION_PROFILES", f"{first}:{second}")
    assert load_profile("acme-chub-v2").protocol == "an3155"
    assert load_profile("acme-chub-v3").name == "acme-chub-v3"
    assert load_profile("demo-an3155").protocol == "an3155"  # the built-in, not the user file
    assert main(["profiles"]) == 0
    out, err = capsys.readouterr()
    assert "acme-chub-v2" in out and "acme-chub-v3" in out
    assert "ignored, the built-in profile 'demo-an3155'" in err
    with pytest.raises(ConfigError) as exc:
        load_profile("acme-chub-v9")
    assert "acme-chub-v2" in (exc.value.hint or "") and str(first) in (exc.value.hint or "")


def test_user_profile_must_be_named_after_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _user_profile(tmp_path, "acme-other", file_name="acme-chub")
    monkeypatch.setenv("STATION_PROFILES", str(tmp_path))
    with pytest.raises(ConfigError, match="named after its file"):
        load_profile("acme-chub")


@pytest.mark.parametrize("given", ["nosuch.toml", "profiles/hub.toml", "./hub-v2"])
def test_a_profile_path_that_does_not_exist_is_called_a_missing_file(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_profile(given)
    text = str(info.value)
    assert text.startswith(f"profile file {given} does not exist"), text
    assert "give a .toml path" not in text and "unknown profile" not in text, text


def test_a_builtin_name_given_as_a_file_name_is_pointed_at_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_profile("demo-gecko.toml")
    assert "profile file demo-gecko.toml does not exist" in str(info.value)
    assert "the built-in profile is --profile demo-gecko" in str(info.value)


def test_a_name_is_still_looked_up_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="unknown profile 'no-such-hub'"):
        load_profile("no-such-hub")

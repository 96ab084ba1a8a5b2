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
    with pytest.raises(ConfigError, match=r"\[link\]: 'baud' must be int"):
        load_profile(str(bad))
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_profile(str(bad))


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

"""Hub profiles: one TOML file per hub model.

Built-in profiles (the simulated hub models) live in this folder. A station's own models
go in its user profile folders: ``station-data/profiles/`` by default, or the folders
listed (``:``-separated) in ``STATION_PROFILES``; ``<name>.toml`` there is profile
``<name>``. A user file never replaces a built-in of the same name (``station profiles``
says it is shadowed), so a rig's ``demo-an3155`` means the same everywhere. A rig or a
command may also name a profile file by its path.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from drivers.errors import ConfigError
from drivers.lines import LinePlan, Wire, Wiring, parse_sequence
from firmware_images.files import read_regular_text
from firmware_images.tomlfile import TomlLines
from station.config import Spec, Table, shown
from station.hubprofile import Profile
from station.protocols import plugin, plugin_problems, plugins

__all__ = ["Profile", "builtin_names", "load_profile", "parse_profile", "user_dirs"]

_ADDRESS = Spec(int, 0, 0xFFFF_FFFF)
_CODE = Spec(int, 0, 0xFFFF)
#: The common sections of every profile: unknown keys, wrong types and values out of these
#: bounds are refused. A protocol's own section (``[gecko]``, ``[dfu]``) is checked against
#: its plug-in's ``section`` (:mod:`station.protocols`).
PROFILE_KEYS = {
    "name": Spec(str, max_len=64, required=True),
    "description": Spec(str, max_len=200),
    "link": Spec(dict, required=True),
    "memory": Spec(dict, required=True),
    "model": Spec(dict, required=True),
    "bootloader": Spec(dict),
    "lines": Spec(dict),
}
LINK_KEYS = {
    "baud": Spec(int, 50, 12_000_000, required=True),
    "parity": Spec(str, choices=("none", "even", "odd"), required=True),
}
MEMORY_KEYS = {
    "flash_start": Spec(int, 0, 0xFFFF_FFFF, required=True),
    "flash_size": Spec(int, 1, 1 << 32, required=True),
    "page_size": Spec(int, 1, 1 << 24, required=True),
    "app_address": Spec(int, 0, 0xFFFF_FFFF, required=True),
    "identity_address": _ADDRESS,
}
MODEL_KEYS = {
    "product_id": _CODE,
    "manufacturer_code": Spec(int, 0, 0xFFFF, required=True),
    "image_type": Spec(int, 0, 0xFFFF, required=True),
}
BOOTLOADER_KEYS = {
    "entry": Spec(str, choices=("console", "strapped", "detach", "lines")),
    "exit": Spec(str, choices=("command", "lines")),
    "pipeline_writes": Spec(bool),
    "retries": Spec(int, 0, 100),
    "verify": Spec(str, choices=("auto", "crc", "readback")),
    "boot_timeout_s": Spec(float, 0, 600),
    "resync_timeout_s": Spec(float, 0, 600),
    "ack_timeout_s": Spec(float, 0.001, 60),
}
_WIRE = Spec(str, choices=("dtr", "-dtr", "rts", "-rts", "none"))
#: ``[lines]``: DTR/RTS wired to the hub's reset and boot pins (docs/hardware.md).
LINES_KEYS = {
    "reset": Spec(str, choices=("dtr", "-dtr", "rts", "-rts"), required=True),
    "boot": _WIRE,
    "entry_sequence": Spec(str, max_len=400),
    "exit_sequence": Spec(str, max_len=400),
    "attempts": Spec(int, 1, 10),
}


def parse_profile(data: dict[str, Any], where: str, text: str | None = None) -> Profile:
    """Build a profile from parsed TOML, naming the file, the line (when ``text``, the
    file's content, is given) and the key of any problem.

    Raises:
        ConfigError: an unknown key or section, a value of the wrong type or out of
            bounds, a missing key, or settings that contradict each other.
    """
    root = Table(data, (), where, TomlLines(text or ""))
    broken = plugin_problems().get(str(data.get("protocol")))
    if broken is not None:
        raise root.error(
            "protocol", f"protocol = {data['protocol']!r}: {broken}", hint="reinstall or fix it"
        )
    protocol = root.value("protocol", Spec(str, choices=tuple(plugins()), required=True))
    own_plugin = plugin(protocol)
    own = {protocol: Spec(dict)} if own_plugin.section else {}
    root.check({**PROFILE_KEYS, "protocol": Spec(str), **own})
    sections: list[tuple[str, Mapping[str, Spec]]] = [
        ("link", LINK_KEYS),
        ("memory", MEMORY_KEYS),
        ("model", MODEL_KEYS),
        ("bootloader", BOOTLOADER_KEYS),
    ]
    if "lines" in data:
        sections.append(("lines", LINES_KEYS))
    if own:
        sections.append((protocol, own_plugin.section))
    tables = {key: root.table(key) for key, _ in sections}
    for key, schema in sections:
        tables[key].check(schema)
    link, mem, model, boot = (tables[k].data for k in ("link", "memory", "model", "bootloader"))
    profile = Profile(
        name=data["name"],
        description=data.get("description", ""),
        protocol=protocol,
        baud=link["baud"],
        parity=link["parity"],
        flash_start=mem["flash_start"],
        flash_size=mem["flash_size"],
        page_size=mem["page_size"],
        app_address=mem["app_address"],
        identity_address=mem.get("identity_address"),
        product_id=model.get("product_id"),
        manufacturer_code=model["manufacturer_code"],
        image_type=model["image_type"],
        entry=boot.get("entry", "console"),
        pipeline_writes=boot.get("pipeline_writes", True),
        retries=boot.get("retries", 3),
        verify=boot.get("verify", "auto"),
        boot_timeout_s=float(boot.get("boot_timeout_s", 3.0)),
        resync_timeout_s=float(boot.get("resync_timeout_s", 10.0)),
        ack_timeout_s=float(boot.get("ack_timeout_s", 1.0)),
        options=MappingProxyType(data),
        exit=boot.get("exit", "command"),
        lines=_line_plan(tables["lines"]) if "lines" in data else None,
    )
    if profile.lines is None and "lines" in (profile.entry, profile.exit):
        key = "entry" if profile.entry == "lines" else "exit"
        raise tables["bootloader"].error(
            key, f"{key} = 'lines' needs a [lines] section saying how DTR/RTS are wired"
        )
    if profile.lines is not None and not own_plugin.modem_lines:
        raise tables["lines"].error(None, f"{profile.protocol} hubs are not reset by modem lines")
    memory = tables["memory"]
    if profile.verify != "auto" and profile.verify not in own_plugin.verify_methods:
        offered = ", ".join(("auto", *own_plugin.verify_methods))
        raise tables["bootloader"].error(
            "verify", f"verify = {profile.verify!r}: {protocol} hubs offer {offered}"
        )
    for problem in own_plugin.check(profile):
        table = tables.get(problem.section) or root.table(problem.section)
        raise table.error(problem.key, problem.message)
    if profile.flash_size % profile.page_size:
        raise memory.error("flash_size", "flash_size must be a multiple of page_size")
    if profile.flash_end > 1 << 32:
        raise memory.error("flash_size", "the flash would end beyond 0xFFFFFFFF")
    if not profile.flash_start <= profile.app_address < profile.flash_end:
        raise memory.error(
            "app_address",
            f"'app_address' 0x{profile.app_address:08X} is outside the flash "
            f"0x{profile.flash_start:08X}..0x{profile.flash_end - 1:08X}",
        )
    return profile


#: Environment setting: the user profile folders, separated by ``os.pathsep``.
PROFILES_ENV = "STATION_PROFILES"
DEFAULT_USER_DIR = Path("station-data") / "profiles"


def user_dirs() -> list[Path]:
    """The user profile folders, in search order."""
    setting = os.environ.get(PROFILES_ENV)
    if setting is None:
        return [DEFAULT_USER_DIR]
    return [Path(p) for p in setting.split(os.pathsep) if p]


def user_profiles() -> dict[str, Path]:
    """User profile files by name (the first folder that has a name wins)."""
    found: dict[str, Path] = {}
    for folder in user_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def builtin_names() -> list[str]:
    """Names of the profiles shipped with the station."""
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(__package__).iterdir()
        if p.name.endswith(".toml")
    )


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (built-in, then the user folders), or a profile TOML file by path.

    Raises:
        ConfigError: unknown name, unreadable file or invalid content, or a user file
            whose ``name`` is not its file name.
    """
    try:
        return _load(name_or_path)
    except OSError as exc:  # a name the file system cannot even look up (too long...)
        raise ConfigError(f"cannot look up profile {shown(name_or_path)}: {exc.strerror}") from exc


def _is_path(name_or_path: str) -> bool:
    """Whether the user gave a file (``hub.toml``, ``profiles/hub``), not a profile name."""
    separators = [s for s in (os.sep, os.altsep) if s]
    return name_or_path.endswith(".toml") or any(s in name_or_path for s in separators)


def _missing_file(given: str) -> ConfigError:
    """A profile file that is not there: say so, and name the profile it may have meant."""
    stem = Path(given).name.removesuffix(".toml")
    if stem in builtin_names():
        hint = f"the built-in profile is --profile {stem}, without .toml"
    elif stem in user_profiles():
        hint = f"the user profile {stem} ({user_profiles()[stem]}) is --profile {stem}"
    else:
        hint = f"check the path (relative to {Path.cwd()}); 'station profiles' lists the names"
    return ConfigError(f"profile file {given} does not exist", hint=hint)


def _load(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    res = resources.files(__package__) / f"{name_or_path}.toml"
    user = None
    if _is_path(name_or_path):
        if not path.exists():
            raise _missing_file(name_or_path)
        user = path
    elif not res.is_file():
        user = user_profiles().get(name_or_path)
        if user is None:
            folders = ", ".join(str(d) for d in user_dirs())
            raise ConfigError(
                f"unknown profile {name_or_path!r}",
                hint=f"built-in profiles: {', '.join(builtin_names())}; user profiles: "
                f"{', '.join(sorted(user_profiles())) or 'none'} (in {folders}, or "
                f"${PROFILES_ENV}); or give a profile file's path (.toml)",
            )
    if user is not None:
        text = read_regular_text(user, what="profile", error=ConfigError)
        where = str(user)
    else:
        text, where = res.read_text(), f"profile {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    profile = parse_profile(data, where, text)
    if user is not None and user.parent in user_dirs() and profile.name != user.stem:
        raise ConfigError(
            f"{where}: name = {profile.name!r}, but a profile in a user folder must be named "
            f"after its file ({user.stem!r})",
            hint="rename the file or fix its name, so a rig's profile name finds this file",
        )
    return profile


def _line_plan(table: Table) -> LinePlan:
    """The ``[lines]`` section: wiring, sequences (checked against the wiring), attempts."""
    data = table.data
    try:
        wiring = Wiring(Wire.parse(data["reset"]), Wire.parse(data.get("boot", "none")))
    except ValueError as exc:
        raise table.error("boot", str(exc)) from None
    sequences = []
    for key, default, to_bootloader in (
        ("entry_sequence", wiring.default_entry, True),
        ("exit_sequence", wiring.default_exit, False),
    ):
        try:
            steps = parse_sequence(data[key]) if key in data else default()
            wiring.check(steps, to_bootloader=to_bootloader)
        except ValueError as exc:
            shown = repr(data[key]) if key in data else "the default sequence"
            raise table.error(key, f"{shown}: {exc}") from None
        sequences.append(steps)
    return LinePlan(wiring, sequences[0], sequences[1], data.get("attempts", 2))

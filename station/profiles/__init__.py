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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from drivers.errors import ConfigError

_VERIFY = {"auto", "crc", "readback"}
_ENTRY = {"console", "strapped", "detach"}


@dataclass(frozen=True)
class Profile:
    """Everything the station needs to know about one hub model."""

    name: str
    description: str
    protocol: str
    baud: int
    parity: str
    flash_start: int
    flash_size: int
    page_size: int
    app_address: int
    identity_address: int | None  # where the bootloader can read EUI-64 and hardware version
    product_id: int | None  # what the bootloader reports as its chip/product ID
    manufacturer_code: int
    image_type: int
    entry: str
    pipeline_writes: bool
    retries: int
    verify: str
    boot_timeout_s: float
    resync_timeout_s: float
    ack_timeout_s: float
    #: Protocol-specific settings (the whole TOML table), read by that protocol's session.
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def flash_end(self) -> int:
        """First address after the main flash."""
        return self.flash_start + self.flash_size

    def pages_for(self, start: int, end: int) -> list[int]:
        """Page numbers covering [start, end)."""
        first = (start - self.flash_start) // self.page_size
        last = (end - 1 - self.flash_start) // self.page_size
        return list(range(first, last + 1))

    def page_start(self, address: int) -> int:
        """Start address of the page holding ``address``."""
        return address - (address - self.flash_start) % self.page_size


def _get(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = table[key]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, not {value!r}")
    return value


def _optional(table: dict[str, Any], key: str, where: str) -> int | None:
    return _get(table, key, int, where) if key in table else None


def parse_profile(data: dict[str, Any], where: str) -> Profile:
    """Build a profile from parsed TOML, naming the file and key of any problem."""
    link = data.get("link", {})
    mem = data.get("memory", {})
    model = data.get("model", {})
    boot = data.get("bootloader", {})
    profile = Profile(
        name=_get(data, "name", str, where),
        description=data.get("description", ""),
        protocol=_get(data, "protocol", str, where),
        baud=_get(link, "baud", int, f"{where} [link]"),
        parity=_get(link, "parity", str, f"{where} [link]"),
        flash_start=_get(mem, "flash_start", int, f"{where} [memory]"),
        flash_size=_get(mem, "flash_size", int, f"{where} [memory]"),
        page_size=_get(mem, "page_size", int, f"{where} [memory]"),
        app_address=_get(mem, "app_address", int, f"{where} [memory]"),
        identity_address=_optional(mem, "identity_address", f"{where} [memory]"),
        product_id=_optional(model, "product_id", f"{where} [model]"),
        manufacturer_code=_get(model, "manufacturer_code", int, f"{where} [model]"),
        image_type=_get(model, "image_type", int, f"{where} [model]"),
        entry=boot.get("entry", "console"),
        pipeline_writes=boot.get("pipeline_writes", True),
        retries=boot.get("retries", 3),
        verify=boot.get("verify", "auto"),
        boot_timeout_s=float(boot.get("boot_timeout_s", 3.0)),
        resync_timeout_s=float(boot.get("resync_timeout_s", 10.0)),
        ack_timeout_s=float(boot.get("ack_timeout_s", 1.0)),
        options=MappingProxyType(data),
    )
    from station.sessions import SESSIONS

    if profile.protocol not in SESSIONS:
        raise ConfigError(
            f"{where}: protocol {profile.protocol!r} is not one of {', '.join(SESSIONS)}"
        )
    if profile.protocol == "an3155" and (
        profile.identity_address is None or profile.product_id is None
    ):
        raise ConfigError(f"{where}: an3155 profiles need identity_address and product_id")
    if profile.verify not in _VERIFY:
        raise ConfigError(f"{where} [bootloader]: verify must be one of {sorted(_VERIFY)}")
    if profile.entry not in _ENTRY:
        raise ConfigError(f"{where} [bootloader]: entry must be one of {sorted(_ENTRY)}")
    if profile.page_size <= 0 or profile.flash_size % profile.page_size:
        raise ConfigError(f"{where} [memory]: flash_size must be a multiple of page_size")
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
    path = Path(name_or_path)
    res = resources.files(__package__) / f"{name_or_path}.toml"
    user = None
    if path.suffix == ".toml" and path.exists():
        user = path
    elif not res.is_file():
        user = user_profiles().get(name_or_path)
        if user is None:
            folders = ", ".join(str(d) for d in user_dirs())
            raise ConfigError(
                f"unknown profile {name_or_path!r}",
                hint=f"built-in profiles: {', '.join(builtin_names())}; user profiles: "
                f"{', '.join(sorted(user_profiles())) or 'none'} (in {folders}, or "
                f"${PROFILES_ENV}); or give a .toml path",
            )
    if user is not None:
        try:
            text, where = user.read_text(), str(user)
        except OSError as exc:
            raise ConfigError(f"cannot read profile {user}: {exc.strerror or exc}") from exc
    else:
        text, where = res.read_text(), f"profile {name_or_path}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    profile = parse_profile(data, where)
    if user is not None and user.parent in user_dirs() and profile.name != user.stem:
        raise ConfigError(
            f"{where}: name = {profile.name!r}, but a profile in a user folder must be named "
            f"after its file ({user.stem!r})",
            hint="rename the file or fix its name, so a rig's profile name finds this file",
        )
    return profile

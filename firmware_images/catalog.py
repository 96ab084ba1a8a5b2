"""The firmware catalogue: approved releases per hub model, and the upgrade pathways.

A catalogue is a folder holding image files and ``catalog.toml``::

    [[model]]
    name = "demo-an3155"            # also the hub profile's name unless `profile` is given
    manufacturer_code = 0x1234
    image_type = 0x0401
    hw_min = 1
    hw_max = 3
    max_image_size = 0x80000        # bytes of flash the application may use

    [[release]]                     # releases of a model, oldest first
    model = "demo-an3155"
    version = 0x01040000            # or "1.4.0.0"
    file = "1234-0401-01040000-<sha256>.zigbee"
    sha256 = "<sha256 of the Manufacturer Image>"
    from = [0x01030000]             # versions allowed to move to this release
                                    # (omitted: any earlier release of the model)

The order of releases, never numeric comparison, decides what is newer and how far behind
("n-k") a hub is; ``from`` lists encode MP231-style pathways where a model must step through
intermediate releases.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from drivers.errors import ConfigError, ImageError
from firmware_images.descriptor import format_version
from firmware_images.files import (
    CONFIG_FILE_LIMIT,
    IMAGE_FILE_LIMIT,
    not_regular,
    read_regular_file,
)
from firmware_images.identity import (
    IdentityError,
    disagreements,
    require_trusted_identity,
    why_untrusted,
)
from firmware_images.loader import parse_bytes
from firmware_images.model import ParsedImage
from firmware_images.tomlfile import TomlLines

INDEX = "catalog.toml"


def parse_version_text(value: object, where: str) -> int:
    """A version from TOML: an integer, ``"0x01020304"`` or ``"1.2.3.4"``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return value
    if isinstance(value, str):
        text = value.strip()
        parts = text.split(".")
        try:
            if len(parts) == 4:
                octets = [int(p) for p in parts]
                if all(0 <= o < 256 for o in octets):
                    return int.from_bytes(bytes(octets), "big")
            elif len(parts) == 1:
                number = int(text, 0)
                if 0 <= number <= 0xFFFFFFFF:
                    return number
        except ValueError:
            pass
    raise ConfigError(f"{where}: {value!r} is not a firmware version (0x01020304 or 1.2.3.4)")


@dataclass(frozen=True)
class HubModel:
    """One hub model as the catalogue knows it."""

    name: str
    profile: str
    manufacturer_code: int
    image_type: int
    hw_min: int
    hw_max: int
    max_image_size: int


@dataclass(frozen=True)
class Release:
    """One approved release of a model."""

    model: str
    version: int
    file: str
    sha256: str
    predecessors: tuple[int, ...] | None = None  # None: any earlier release

    @property
    def version_text(self) -> str:
        """``0x01020304``."""
        return format_version(self.version)


class Decision(StrEnum):
    """What the catalogue says a hub should get."""

    TARGET = "target"  # the newest release, reachable in one step
    NEXT_HOP = "next-hop"  # an intermediate release on the way to the newest
    CURRENT = "current"  # already runs the newest release
    REFUSED = "refused"


@dataclass(frozen=True)
class Plan:
    """The catalogue's answer for one hub.

    Attributes:
        release: what to flash now (the target or the next hop), None if nothing.
        newest: the model's newest release.
        behind: how many releases the running version is behind the newest (n-k), when the
            running version is a catalogued release.
        path: the versions the hub will pass through to reach the newest.
    """

    decision: Decision
    model: str
    reason: str = ""
    release: Release | None = None
    newest: Release | None = None
    behind: int | None = None
    path: tuple[int, ...] = ()


_MODEL_KEYS = (
    "name",
    "profile",
    "manufacturer_code",
    "image_type",
    "hw_min",
    "hw_max",
    "max_image_size",
)
_RELEASE_KEYS = ("model", "version", "file", "sha256", "from")
_TOML_TYPES = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
}
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _toml_type(value: object) -> str:
    return next((name for t, name in _TOML_TYPES.items() if isinstance(value, t)), "a date/time")


#: Room a container takes beside its payload: headers, signatures, certificates, tags.
CONTAINER_ROOM = 64 << 10
#: Payload bytes to file bytes in the most verbose container, Intel HEX (2.75 with the
#: usual 16-byte records), which a catalogue may hold as well as GBCS images.
TEXT_EXPANSION = 3


def release_file_limit(model: HubModel) -> int:
    """The most bytes a release file of ``model`` may have: what its payload may take in the
    most verbose container, and never more than any image file
    (:data:`~firmware_images.files.IMAGE_FILE_LIMIT`)."""
    return min(IMAGE_FILE_LIMIT, TEXT_EXPANSION * model.max_image_size + CONTAINER_ROOM)


def file_value_refusal(value: str) -> str | None:
    """Why ``value`` may not be a catalogue ``file`` entry, or None if it may.

    A catalogue names its files relative to its folder: an absolute path or a ``..`` step
    could make the station read (and report on, or flash) any file of the machine.
    """
    parts = PurePosixPath(value).parts
    if not value or "\0" in value or not parts:
        return "names no file"
    if value.startswith("/"):
        return "is an absolute path"
    if ".." in parts:
        return "steps out with '..'"
    return None


class _Entry:
    """One table of ``catalog.toml`` being read: every error names file, line and key."""

    def __init__(
        self,
        index: Path,
        lines: TomlLines,
        table: dict[str, Any],
        path: tuple[str | int, ...],
        label: str,
    ) -> None:
        self.index, self.lines, self.table, self.path = index, lines, table, path
        self.label = f"{label}: " if label else ""

    def line(self, key: str | None) -> int | None:
        return self.lines.key_line(self.path, key)

    def where(self, key: str | None) -> str:
        """``catalog.toml:12: [[release]] #1: ``, the line being ``key``'s."""
        line = self.line(key)
        at = f"{self.index}:{line}" if line is not None else str(self.index)
        return f"{at}: {self.label}"

    def fail(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(self.where(key) + message, hint=hint)

    def only(self, allowed: Iterable[str], what: str) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(
                    key, f"unknown key {key!r} ({what} holds {', '.join(sorted(allowed))})"
                )

    def get(self, key: str, kind: type, default: Any = None) -> Any:
        if key not in self.table:
            if default is not None:
                return default
            raise self.fail(key, f"missing key {key!r}")
        value = self.table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(
                key,
                f"{key!r} must be {_TOML_TYPES[kind]}, not {_toml_type(value)} ({value!r})",
            )
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value: str = self.get(key, str, default)
        if not value.strip():
            raise self.fail(key, f"{key!r} must not be empty")
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value: int = self.get(key, int)
        if not low <= value <= high:
            raise self.fail(key, f"{key!r} must be {low}..0x{high:X}, not {value}")
        return value

    def version(self, key: str, value: object) -> int:
        return parse_version_text(value, f"{self.where(key)}{key!r}")


@dataclass
class Catalog:
    """A catalogue folder, loaded."""

    root: Path
    models: dict[str, HubModel] = field(default_factory=dict)
    releases: dict[str, list[Release]] = field(default_factory=dict)

    # -- loading and saving ----------------------------------------------------------------

    @classmethod
    def load(cls, root: str | Path, *, create: bool = False) -> Catalog:
        """Read ``root/catalog.toml``; with ``create``, an absent catalogue is empty.

        The index is strict, because a catalogue decides what is flashed: an unknown key
        (a typo such as ``sha265`` would otherwise silently drop a check), a wrong type or
        an absurd value (a negative size, ``hw_min`` above ``hw_max``, a version past 32
        bits, a ``file`` outside the folder) is refused. So are releases of a model whose
        versions do not increase in file order: the order decides what is newer, and an
        order that disagrees with the numbers is a crafted or broken catalogue.

        Raises:
            ConfigError: an unreadable index (not a regular file, too large, not UTF-8),
                bad TOML (with its line), or an invalid entry: ``file:line: table: key``.
        """
        folder = Path(root)
        index = folder / INDEX
        if folder.exists() and not folder.is_dir():
            hint = f"give its folder, {folder.parent}" if folder.name == INDEX else None
            raise ConfigError(
                f"{folder} is a file, not a folder: a catalogue is a folder with {INDEX}",
                hint=hint or "give the catalogue's folder",
            )
        if not index.exists():
            if create:
                return cls(folder)
            # Said of the folder given (--catalog, a rig's catalog, or the default one):
            # pointing at --catalog helps nobody who gave one.
            if not folder.exists():
                raise ConfigError(
                    f"no catalogue at {folder}: the folder does not exist",
                    hint="check the path; 'station catalog add' makes a catalogue",
                )
            raise ConfigError(
                f"no catalogue at {folder}: the folder has no {INDEX}",
                hint="is this the catalogue's folder? 'station catalog add' makes one",
            )
        raw = read_regular_file(
            index, limit=CONFIG_FILE_LIMIT, what="catalogue index", error=ConfigError
        )
        try:
            text = raw.decode("utf-8")
            data = tomllib.loads(text)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{index}: not UTF-8 text ({exc})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{index}: {exc}") from exc
        lines = TomlLines(text)
        top = _Entry(index, lines, data, (), "")
        top.only(("model", "release"), "a catalogue")
        cat = cls(folder)
        for i, m in enumerate(cls._tables(top, "model")):
            e = _Entry(index, lines, m, ("model", i), f"[[model]] #{i + 1}")
            e.only(_MODEL_KEYS, "[[model]]")
            name = e.text("name")
            if name in cat.models:
                raise e.fail("name", f"model {name!r} is defined twice")
            hub = HubModel(
                name=name,
                profile=e.text("profile", name),
                manufacturer_code=e.integer("manufacturer_code", 0, 0xFFFF),
                image_type=e.integer("image_type", 0, 0xFFFF),
                hw_min=e.integer("hw_min", 0, 0xFFFF),
                hw_max=e.integer("hw_max", 0, 0xFFFF),
                max_image_size=e.integer("max_image_size", 1, 0xFFFFFFFF),
            )
            if hub.hw_min > hub.hw_max:
                raise e.fail("hw_min", f"'hw_min' {hub.hw_min} is above 'hw_max' {hub.hw_max}")
            cat.models[name] = hub
            cat.releases[name] = []
        placed: dict[tuple[str, int], tuple[int, int | None]] = {}  # release -> (#, line)
        for i, r in enumerate(cls._tables(top, "release")):
            e = _Entry(index, lines, r, ("release", i), f"[[release]] #{i + 1}")
            e.only(_RELEASE_KEYS, "[[release]]")
            model = e.text("model")
            if model not in cat.models:
                raise e.fail("model", f"'model' {model!r} is not a [[model]] of this catalogue")
            file: str = e.get("file", str)
            why = file_value_refusal(file)
            if why is not None:
                raise e.fail(
                    "file",
                    f"'file' {file!r} {why}: a release file must be inside the catalogue folder",
                )
            sha256 = e.get("sha256", str)
            if not _SHA256.fullmatch(sha256):
                raise e.fail("sha256", f"'sha256' must be 64 hex digits, not {sha256!r}")
            preds = e.get("from", list) if "from" in r else None
            rel = Release(
                model=model,
                version=e.version("version", e.get("version", object)),
                file=file,
                sha256=sha256.lower(),
                predecessors=None if preds is None else tuple(e.version("from", v) for v in preds),
            )
            cls._check_order(cat.releases[model], rel, e, placed)
            placed[model, rel.version] = (i + 1, e.line("version"))
            cat.releases[model].append(rel)
        return cat

    @staticmethod
    def _tables(top: _Entry, key: str) -> list[dict[str, Any]]:
        """``[[key]]`` tables of the index (none when absent); any other shape refused."""
        value = top.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise top.fail(key, f"{key!r} must be an array of tables ([[{key}]])")
        return value

    @staticmethod
    def _check_order(
        earlier: list[Release],
        rel: Release,
        e: _Entry,
        placed: dict[tuple[str, int], tuple[int, int | None]],
    ) -> None:
        """Refuse a release that is not newer than the model's release listed before it."""
        if not earlier or rel.version > earlier[-1].version:
            return
        clash = next((x for x in earlier if x.version == rel.version), earlier[-1])
        number, line = placed[rel.model, clash.version]
        there = f"[[release]] #{number}, line {line}"
        if clash.version == rel.version:
            raise e.fail("version", f"{rel.model} {rel.version_text} is listed twice ({there})")
        raise e.fail(
            "version",
            f"{rel.model} {rel.version_text} is listed after {rel.model} {clash.version_text} "
            f"({there}): a model's releases go oldest first, in increasing versions",
        )

    def save(self) -> None:
        """Write ``catalog.toml`` (atomically: a crash leaves the old one intact)."""
        lines = ["# Firmware catalogue: see firmware_images/catalog.py for the format.", ""]
        for m in self.models.values():
            lines += [
                "[[model]]",
                f'name = "{m.name}"',
                f'profile = "{m.profile}"',
                f"manufacturer_code = 0x{m.manufacturer_code:04X}",
                f"image_type = 0x{m.image_type:04X}",
                f"hw_min = {m.hw_min}",
                f"hw_max = {m.hw_max}",
                f"max_image_size = 0x{m.max_image_size:X}",
                "",
            ]
        for rels in self.releases.values():
            for r in rels:
                lines += [
                    "[[release]]",
                    f'model = "{r.model}"',
                    f"version = 0x{r.version:08X}",
                    f'file = "{r.file}"',
                    f'sha256 = "{r.sha256}"',
                ]
                if r.predecessors is not None:
                    lines.append("from = [" + ", ".join(f"0x{v:08X}" for v in r.predecessors) + "]")
                lines.append("")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / (INDEX + ".tmp")
        tmp.write_text("\n".join(lines))
        tmp.replace(self.root / INDEX)

    # -- queries ---------------------------------------------------------------------------

    def model(self, name: str) -> HubModel:
        """The model called ``name``.

        Raises:
            ConfigError: not in the catalogue.
        """
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(f"model {name!r} is not in the catalogue (known: {known})")
        return self.models[name]

    def model_for(self, manufacturer_code: int, image_type: int) -> HubModel | None:
        """The model whose images carry this manufacturer code and image type."""
        for m in self.models.values():
            if (m.manufacturer_code, m.image_type) == (manufacturer_code, image_type):
                return m
        return None

    def path_of(self, release: Release) -> Path:
        """Where a release's image file is: inside the catalogue folder, links resolved.

        A catalogue only ever names its own files. Its ``file`` entries are checked when
        it is loaded (no absolute path, no ``..``); a symbolic link can still lead out (to
        ``/dev/zero``, ``/etc/passwd``), so the resolved path must be inside the resolved
        folder, and what is there must be a regular file if it exists.

        Raises:
            ConfigError: the file is outside the folder, or is a directory, FIFO, device.
        """
        where = f"catalogue {self.root}: {release.model} {release.version_text}"
        why = file_value_refusal(release.file)
        if why is not None:
            raise ConfigError(f"{where}: file {release.file!r} {why}")
        root = self.root.resolve()
        path = (root / release.file).resolve()
        if not path.is_relative_to(root):
            raise ConfigError(
                f"{where}: file {release.file!r} resolves to {path}, outside the catalogue folder",
                hint="a catalogue holds its own files; copy the image into the folder",
            )
        kind = not_regular(path)
        if kind is not None:
            raise ConfigError(f"catalogue file {self.root / release.file} {kind}")
        return path

    def load_release(self, release: Release) -> ParsedImage:
        """Read and parse a release's file: confined (:meth:`path_of`) and size-capped.

        The file is read only if it is at most :func:`release_file_limit` bytes, so a
        file swapped for something huge costs nothing. Whether it is *the* approved file
        is :meth:`image_refusals`' question.

        Raises:
            ConfigError: the file is outside the folder or not a regular file.
            ImageError: missing, unreadable, too large for the model, or malformed.
        """
        path = self.path_of(release)
        limit = release_file_limit(self.model(release.model))
        data = read_regular_file(
            path, limit=limit, what=f"{release.model} catalogue file", error=ImageError
        )
        return parse_bytes(data, str(self.root / release.file))

    def release(self, model: str, version: int) -> Release | None:
        """The release of ``model`` with ``version``, if catalogued."""
        return next((r for r in self.releases.get(model, []) if r.version == version), None)

    def _can_move(self, model: str, src: int | None, dst: Release) -> bool:
        rels = self.releases[model]
        if src is None:  # blank flash: only a release that names no predecessors
            return dst.predecessors is None
        if dst.predecessors is not None:
            return src in dst.predecessors
        order = [r.version for r in rels]
        return src in order and order.index(src) < order.index(dst.version)

    def plan(self, model_name: str, hw_version: int | None, running: int | None) -> Plan:
        """What a hub of ``model_name`` with ``hw_version`` running ``running`` should get.

        ``running`` None means the hub's flash holds no recognisable application.
        """
        if model_name not in self.models:
            return Plan(Decision.REFUSED, model_name, f"model {model_name!r} is not catalogued")
        model = self.models[model_name]
        rels = self.releases[model_name]
        if not rels:
            return Plan(Decision.REFUSED, model_name, f"model {model_name} has no releases")
        newest = rels[-1]
        if hw_version is not None and not model.hw_min <= hw_version <= model.hw_max:
            return Plan(
                Decision.REFUSED,
                model_name,
                f"hardware version {hw_version} is outside {model_name}'s approved range "
                f"{model.hw_min}..{model.hw_max}",
                newest=newest,
            )
        order = [r.version for r in rels]
        behind = len(order) - 1 - order.index(running) if running in order else None
        if running == newest.version:
            return Plan(Decision.CURRENT, model_name, "already current", newest=newest, behind=0)
        if running is not None and running not in order:
            return Plan(
                Decision.REFUSED,
                model_name,
                f"running version {format_version(running)} is not a catalogued release of "
                f"{model_name}: its upgrade path is unknown",
                newest=newest,
            )
        # Shortest pathway to the newest release (breadth-first over allowed moves).
        start: int | None = running
        came: dict[int | None, int | None] = {start: None}
        queue: deque[int | None] = deque([start])
        while queue:
            at = queue.popleft()
            for r in rels:
                if r.version not in came and self._can_move(model_name, at, r):
                    came[r.version] = at
                    queue.append(r.version)
        if newest.version not in came:
            allowed = (
                "any earlier release"
                if newest.predecessors is None
                else ", ".join(format_version(v) for v in newest.predecessors)
            )
            return Plan(
                Decision.REFUSED,
                model_name,
                f"off-pathway: no approved upgrade path from "
                f"{format_version(running) if running is not None else 'blank flash'} to "
                f"{newest.version_text} (it accepts {allowed})",
                newest=newest,
                behind=behind,
            )
        path: list[int] = []
        node: int | None = newest.version
        while node is not None and node != start:
            path.append(node)
            node = came[node]
        path.reverse()
        hop = self.release(model_name, path[0])
        assert hop is not None
        decision = Decision.TARGET if hop is newest else Decision.NEXT_HOP
        reason = (
            f"upgrade to {newest.version_text}"
            if hop is newest
            else f"step to {hop.version_text} first (path: "
            + " -> ".join(format_version(v) for v in path)
            + ")"
        )
        return Plan(decision, model_name, reason, hop, newest, behind, tuple(path))

    def image_refusals(self, image: ParsedImage, release: Release) -> list[str]:
        """Why ``image`` is not the approved file of ``release``; empty when it is.

        Every copy of the image's identity must agree with the others and with this entry
        (the model's manufacturer code, image type and hardware range; the release's version
        and SHA-256; the name the file is stored under), the trusted one being the signed
        application descriptor (:mod:`firmware_images.identity`). Each reason names both
        values and where each came from.
        """
        model = self.models[release.model]
        out = []
        missing = why_untrusted(image)
        if missing is not None:
            out.append(missing)
        found = disagreements(image, release=release, model=model, file_name=release.file)
        out += [d.reason for d in found]
        if len(image.payload) > model.max_image_size:
            out.append(
                f"payload is {len(image.payload)} bytes, {model.name} has room for "
                f"{model.max_image_size}"
            )
        return out

    # -- changes ---------------------------------------------------------------------------

    def add(
        self,
        image: ParsedImage,
        source: Path,
        *,
        model_name: str,
        predecessors: tuple[int, ...] | None,
        file_name: str,
    ) -> Release:
        """Copy an image into the catalogue as the model's newest release and save.

        The release's version is the signed application descriptor's (the trusted identity),
        never the OTA header's alone: the header is outside the GBCS signature, and every
        copy of the identity (header, file names, this model) must agree with it.

        Raises:
            ImageError: no trusted identity, copies of it disagree (:class:`IdentityError`),
                the image does not fit the model, or it is not newer than the newest release.
        """
        model = self.model(model_name)  # raises for an unknown model
        version = require_trusted_identity(image).version
        assert version is not None  # a descriptor always states one
        found = disagreements(image, model=model, file_name=file_name)
        if found:
            raise IdentityError(str(source), found)
        rels = self.releases[model_name]
        if any(r.version == version for r in rels):
            raise ImageError(f"{model_name} already has release {format_version(version)}")
        if rels and version < rels[-1].version:
            raise ImageError(
                f"{format_version(version)} is older than {model_name}'s newest "
                f"release {rels[-1].version_text}; releases are added in order"
            )
        rel = Release(model_name, version, file_name, image.sha256, predecessors)
        problems = self.image_refusals(image, rel)
        if problems:
            raise ImageError(f"{source} cannot be a {model_name} release: " + "; ".join(problems))
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.root / file_name)
        rels.append(rel)
        self.save()
        return rel

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

import shutil
import tomllib
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from drivers.errors import ConfigError, ImageError
from firmware_images.descriptor import format_version
from firmware_images.identity import (
    IdentityError,
    disagreements,
    require_trusted_identity,
    why_untrusted,
)
from firmware_images.model import ParsedImage

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


def _require(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, not {value!r}")
    return value


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

        Raises:
            ConfigError: unreadable TOML (with its line), or an invalid entry (named).
        """
        folder = Path(root)
        index = folder / INDEX
        if not index.exists():
            if create:
                return cls(folder)
            raise ConfigError(
                f"no catalogue at {folder} ({INDEX} missing)",
                hint="create one with 'station catalog add', or give --catalog",
            )
        try:
            data = tomllib.loads(index.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{index}: {exc}") from exc
        cat = cls(folder)
        for i, m in enumerate(data.get("model", []), 1):
            where = f"{index} [[model]] #{i}"
            name = _require(m, "name", str, where)
            if name in cat.models:
                raise ConfigError(f"{where}: model {name!r} is defined twice")
            cat.models[name] = HubModel(
                name=name,
                profile=m.get("profile", name),
                manufacturer_code=_require(m, "manufacturer_code", int, where),
                image_type=_require(m, "image_type", int, where),
                hw_min=_require(m, "hw_min", int, where),
                hw_max=_require(m, "hw_max", int, where),
                max_image_size=_require(m, "max_image_size", int, where),
            )
            cat.releases[name] = []
        for i, r in enumerate(data.get("release", []), 1):
            where = f"{index} [[release]] #{i}"
            model = _require(r, "model", str, where)
            if model not in cat.models:
                raise ConfigError(f"{where}: unknown model {model!r}")
            preds = r.get("from")
            if preds is not None and not isinstance(preds, list):
                raise ConfigError(f"{where}: 'from' must be a list of versions")
            rel = Release(
                model=model,
                version=parse_version_text(_require(r, "version", object, where), where),
                file=_require(r, "file", str, where),
                sha256=_require(r, "sha256", str, where).lower(),
                predecessors=None
                if preds is None
                else tuple(parse_version_text(v, where) for v in preds),
            )
            if any(x.version == rel.version for x in cat.releases[model]):
                raise ConfigError(f"{where}: {model} {rel.version_text} is listed twice")
            cat.releases[model].append(rel)
        return cat

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
        """Where a release's image file is."""
        return self.root / release.file

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

"""Image containers that protocol plug-ins bring (an MCUboot image, a vendor's own format).

A protocol plug-in (entry-point group ``chub_station.protocols``, docs/plugins.md) may list
the containers its bootloader is sent as ``containers``: each an :class:`ImageFormat` that
says how the loader recognises the file (its magic at offset 0, its name suffixes) and
parses it. The loader reads only that attribute, so this package names no protocol and
imports no station code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata

from firmware_images.model import ParsedImage

#: The entry-point group protocol plug-ins register in.
GROUP = "chub_station.protocols"


@dataclass(frozen=True, kw_only=True)
class ImageFormat:
    """One firmware container a plug-in brings.

    Attributes:
        kind: the container's name (``ParsedImage.container``, a profile's accepted
            formats); must not be a built-in one (ota, gbl, dfu, ihex, srec, raw).
        description: what errors say the file was read as (``an MCUboot image``).
        parse: ``(file bytes, path) -> ParsedImage``; raises
            :class:`firmware_images.model.ImageFormatError` for a malformed file.
        magic: the bytes at offset 0 that mark it (empty: only its suffixes do).
        suffixes: file name suffixes (``.signed.bin`` is not one: ``.bin`` only) that say
            it when the content does not.
        signed_parts: what the container's own signature covers, in words, when that
            signature covers the payload and its scheme is one the trust store verifies
            (``ParsedImage.signature``): then the payload's identity counts as signed, as a
            GBCS Manufacturer Image's does. Empty: nothing in the file counts as signed.
        unsigned_parts: what lies outside that signature, in words.
    """

    kind: str
    description: str
    parse: Callable[[bytes, str], ParsedImage]
    magic: bytes = b""
    suffixes: tuple[str, ...] = ()
    signed_parts: tuple[str, ...] = ()
    unsigned_parts: tuple[str, ...] = ()


BUILT_IN = frozenset({"ota", "gbl", "dfu", "ihex", "srec", "raw"})


@functools.cache
def plugin_formats() -> Mapping[str, ImageFormat]:
    """Every installed plug-in's containers, by kind (cached; a plug-in that does not load
    is left out here: the station names it when its protocol is used)."""
    found: dict[str, ImageFormat] = {}
    for entry in metadata.entry_points(group=GROUP):
        try:
            plugin = entry.load()
        except Exception:  # a broken private package must not hide the others
            continue
        for fmt in getattr(plugin, "containers", ()):
            if isinstance(fmt, ImageFormat) and fmt.kind not in BUILT_IN:
                found.setdefault(fmt.kind, fmt)
    return found

"""Which image is this? Every copy of an image's identity, the one to trust, and conflicts.

An image states which firmware it is in several places, and only some of them are covered
by a signature the station checks:

=============================  ===================================  ======================
copy                           fields                               inside the GBCS
                                                                    signature?
=============================  ===================================  ======================
application descriptor         manufacturer code, image type,       yes: it sits in the
(payload offset 0x200)         firmware version, hardware range     Manufacturer Image
GBL APP_INFO (GBL payloads)    application version                  yes, likewise
the Manufacturer Image bytes   SHA-256                              yes: it is what is signed
OTA header                     manufacturer code, image type,       **no**
                               file version, hardware range
file name                      ``MMMM-TTTT-VVVVVVVV[-<SHA-256>]``   **no**
catalogue model / release      manufacturer code, image type,       no (the station's own
                               hardware range / version, SHA-256    approval record)
=============================  ===================================  ======================

A GBCS signature covers the Manufacturer Image only (GBCS 11.2.3, domain.md §1b), so the
four bytes of the header's file version can be edited and the signature still verifies.
The station therefore acts on one copy only, the **trusted identity**
(:func:`trusted_identity`): the payload's application descriptor, which is what the hub
boots, checks and reports back, and for GBCS what the signature covers. Every other copy
is cross-checked against it (:func:`disagreements`, :func:`check_identity`) and any
difference refuses the image, naming both values and where each came from. Refusing,
rather than quietly preferring the signed copy, is deliberate: a file whose copies
disagree was built wrongly or edited, and nobody should ship it or record it.

The same rule applies to containers nothing signs (Zigbee OTA files, GBL, Intel HEX, raw):
whatever copies exist must agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

from drivers.errors import ImageError
from firmware_images.descriptor import AppDescriptor, format_version
from firmware_images.formats import plugin_formats
from firmware_images.gbl import TAG_HEADER, parse_gbl
from firmware_images.model import ParsedImage

if TYPE_CHECKING:
    from firmware_images.catalog import HubModel, Release

__all__ = [
    "FIELDS",
    "Coverage",
    "Disagreement",
    "Identity",
    "IdentityError",
    "check_identity",
    "claims",
    "descriptor_identity",
    "disagreements",
    "require_trusted_identity",
    "signature_coverage",
    "trusted_identity",
    "why_untrusted",
]

#: The identity fields compared between copies, in the order disagreements are reported.
FIELDS = ("manufacturer_code", "image_type", "version", "hw_range", "sha256")
_OTA_CONTAINERS = ("gbcs-ota", "zigbee-ota")
_GBL_MAGIC = TAG_HEADER.to_bytes(4, "little")
_HEX = "[0-9A-Fa-f]"
# gbcs.py names GBCS images MMMM-TTTT-VVVVVVVV-<SHA-256>.zigbee; many Zigbee OTA vendors
# start their names with the same MMMM-TTTT-VVVVVVVV. Only a name that starts so is read.
_FILE_NAME = re.compile(
    rf"^(?P<manufacturer_code>{_HEX}{{4}})-(?P<image_type>{_HEX}{{4}})-"
    rf"(?P<version>{_HEX}{{8}})(?:-(?P<sha256>{_HEX}{{64}}))?(?=[-_.]|$)"
)
_DESCRIPTOR_FIELDS = "manufacturer code, image type, firmware version, hardware range"


@dataclass(frozen=True)
class Identity:
    """One place's statement of which image this is; fields it does not state are None.

    Attributes:
        source: where the statement is, as messages name it ("the OTA header (not signed)").
        signed: whether it lies inside what the container's signature covers (GBCS: the
            Manufacturer Image). Whether that signature *verifies* is the trust store's
            decision (:mod:`firmware_images.trust`), made separately.
        version: the firmware version (OTA header: file version; descriptor: firmware
            version; GBL: application version; catalogue: release version).
        hw_range: lowest and highest hardware version the image is for.
        sha256: the Manufacturer Image (or payload) hash, lower-case hex.
        version_name: what this place calls its version, for messages.
    """

    source: str
    signed: bool = False
    manufacturer_code: int | None = None
    image_type: int | None = None
    version: int | None = None
    hw_range: tuple[int, int] | None = None
    sha256: str | None = None
    version_name: str = "version"

    def value(self, key: str) -> int | str | tuple[int, int] | None:
        """The value of identity field ``key`` (one of :data:`FIELDS`)."""
        value: int | str | tuple[int, int] | None = getattr(self, key)
        return value

    def shown(self, key: str) -> str:
        """Field ``key`` as messages write it: ``0x1234``, ``0x01050000``, ``1..3``."""
        value = self.value(key)
        if value is None:
            return "absent"
        if isinstance(value, tuple):
            return f"{value[0]}..{value[1]}"
        if isinstance(value, str):
            return value
        return format_version(value) if key == "version" else f"0x{value:04X}"

    def name_of(self, key: str, hash_name: str = "SHA-256") -> str:
        """What this place calls field ``key``."""
        names = {
            "manufacturer_code": "manufacturer code",
            "image_type": "image type",
            "version": self.version_name,
            "hw_range": "hardware range",
            "sha256": hash_name,
        }
        return names[key]


@dataclass(frozen=True)
class Disagreement:
    """Two copies of one identity field that differ.

    Attributes:
        file: the image's path, for messages.
        key: which field (one of :data:`FIELDS`).
        field: the field as the disagreeing copy calls it ("file version").
        value, source: the disagreeing copy's value and where it is.
        reference, reference_source: the value it was checked against (the trusted copy
            when the field has one) and where that is.
    """

    file: str
    key: str
    field: str
    value: str
    source: str
    reference: str
    reference_source: str

    @property
    def reason(self) -> str:
        """The disagreement without the file name (for lists that already name it)."""
        return (
            f"{self.field} {self.value} in {self.source} disagrees with {self.reference} "
            f"in {self.reference_source}"
        )

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class IdentityError(ImageError):
    """Copies of an image's identity disagree; the image must not be used.

    Attributes:
        disagreements: each one, in the order reported.
    """

    default_hint = (
        "every copy of an image's identity must agree: a field outside the signature (the OTA "
        "header, the file name) was edited or the image was built wrongly; get the file again "
        "from its supplier"
    )

    def __init__(self, where: str, found: Sequence[Disagreement]) -> None:
        super().__init__(f"{where}: " + "; ".join(d.reason for d in found))
        self.disagreements = tuple(found)


@dataclass(frozen=True)
class Coverage:
    """What an image's signature covers and what lies outside it.

    Attributes:
        scheme: the signature scheme, None when the image carries no signature.
        covered: the parts whose bytes the signature covers (empty when nothing is
            covered by a signature the station verifies).
        outside: the parts it does not cover: untrusted input, only cross-checked.
        note: one sentence on the signature as a whole.
    """

    scheme: str | None
    covered: tuple[str, ...]
    outside: tuple[str, ...]
    note: str


# -- the copies -------------------------------------------------------------------------


def _label(image: ParsedImage) -> str:
    return image.path or "image"


def _payload_signed(image: ParsedImage) -> bool:
    """Whether the payload lies inside a signature the station can verify (GBCS, or a
    plug-in's container that says what its signature covers)."""
    if image.signature is None:
        return False
    if image.container == "gbcs-ota":
        return True
    fmt = plugin_formats().get(image.container)
    return fmt is not None and bool(fmt.signed_parts)


def _wrapped_gbl(image: ParsedImage) -> tuple[ParsedImage | None, str | None]:
    """The GBL an OTA image carries as its payload, or why it cannot be read."""
    if image.container not in _OTA_CONTAINERS or image.payload[:4] != _GBL_MAGIC:
        return None, None
    try:
        return parse_gbl(image.payload, f"{_label(image)} (its GBL payload)"), None
    except ImageError as exc:
        return None, exc.message


def descriptor_identity(
    descriptor: AppDescriptor, container: ParsedImage, *, in_gbl: bool = False
) -> Identity:
    """The identity an application descriptor states, found in ``container``'s payload
    (``in_gbl``: in the application of a GBL, wrapped by ``container`` or being it)."""
    signed = _payload_signed(container)
    where = "GBL application's descriptor" if in_gbl else "payload's descriptor"
    return Identity(
        source=f"the {'signed ' if signed else ''}{where}",
        signed=signed,
        manufacturer_code=descriptor.manufacturer_code,
        image_type=descriptor.image_type,
        version=descriptor.firmware_version,
        hw_range=(descriptor.hw_min, descriptor.hw_max),
        version_name="firmware version",
    )


def _trusted(image: ParsedImage, inner: ParsedImage | None) -> Identity | None:
    if inner is not None and inner.descriptor is not None:
        return descriptor_identity(inner.descriptor, image, in_gbl=True)
    if image.descriptor is not None:
        return descriptor_identity(image.descriptor, image, in_gbl=image.container == "gbl")
    return None


def trusted_identity(image: ParsedImage) -> Identity | None:
    """The identity the station acts on: the payload's application descriptor.

    For a GBCS image it lies inside the signed Manufacturer Image; for a GBL payload, in
    the GBL's application. None when the payload carries no valid descriptor (a foreign
    vendor file), and then nothing says which image it is in a way the station trusts.
    The header fields of :class:`ParsedImage` are outside any signature and are only
    cross-checked against this (:func:`disagreements`).
    """
    return _trusted(image, _wrapped_gbl(image)[0])


def why_untrusted(image: ParsedImage) -> str | None:
    """Why ``image`` has no trusted identity, or None when it has one."""
    inner, problem = _wrapped_gbl(image)
    if _trusted(image, inner) is not None:
        return None
    if problem is not None:
        return f"its GBL payload cannot be read ({problem}), so nothing states its identity"
    where = "the Manufacturer Image" if image.container == "gbcs-ota" else "the payload"
    header = " (the OTA header is not signed)" if image.container in _OTA_CONTAINERS else ""
    return (
        f"no application descriptor in {where}: nothing the station trusts says which image "
        f"it is{header}"
    )


def require_trusted_identity(image: ParsedImage) -> Identity:
    """The trusted identity of ``image``.

    Raises:
        ImageError: it has none (see :func:`why_untrusted`).
    """
    identity = trusted_identity(image)
    if identity is None:
        raise ImageError(
            f"{_label(image)}: {why_untrusted(image)}",
            hint="the station flashes and catalogues only applications carrying a descriptor",
        )
    return identity


def _file_name_identity(name: str, source: str) -> Identity | None:
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    sha = match["sha256"]
    return Identity(
        source=source,
        manufacturer_code=int(match["manufacturer_code"], 16),
        image_type=int(match["image_type"], 16),
        version=int(match["version"], 16),
        sha256=sha.lower() if sha else None,
    )


def claims(
    image: ParsedImage,
    *,
    release: Release | None = None,
    model: HubModel | None = None,
    file_name: str | None = None,
) -> tuple[Identity, ...]:
    """Every copy of ``image``'s identity, the trusted one (if any) first, then the signed
    ones, then the rest.

    Args:
        release, model: the catalogue entry the image is meant to be.
        file_name: a name the file goes by besides the one in ``image.path`` (e.g. the
            name a catalogue stores it under). A name is read only when it starts
            ``MMMM-TTTT-VVVVVVVV`` (hex), optionally followed by ``-<SHA-256>``.
    """
    inner, _ = _wrapped_gbl(image)
    out: list[Identity] = []
    trusted = _trusted(image, inner)
    if trusted is not None:
        out.append(trusted)
    signed = _payload_signed(image)
    what = "Manufacturer Image" if image.container == "gbcs-ota" else "payload"
    out.append(
        Identity(f"the {'signed ' if signed else ''}{what} as read", signed, sha256=image.sha256)
    )
    gbl = inner if inner is not None else image if image.container == "gbl" else None
    app_version = None if gbl is None else gbl.fields.get("app_version")
    if isinstance(app_version, int):
        out.append(
            Identity(
                f"the {'signed ' if signed else ''}GBL's APP_INFO tag",
                signed,
                version=app_version,
                version_name="application version",
            )
        )
    if image.container in _OTA_CONTAINERS:
        # GBCS: outside the signature. Zigbee OTA: a crypto-suite signature may cover it,
        # but nobody here verifies those, so it is no more trusted than an unsigned one.
        unchecked = not signed and image.signature is not None
        hw = None
        if image.hw_min is not None and image.hw_max is not None:
            hw = (image.hw_min, image.hw_max)
        out.append(
            Identity(
                f"the OTA header ({'signature not checked' if unchecked else 'not signed'})",
                manufacturer_code=image.manufacturer_code,
                image_type=image.image_type,
                version=image.file_version,
                hw_range=hw,
                version_name="file version",
            )
        )
    own = PurePath(image.path).name if image.path else ""
    names = [(own, "the file name")]
    if file_name and file_name != own:
        names.append((file_name, f"the file name {file_name}"))
    for name, source in names:
        named = _file_name_identity(name, source) if name else None
        if named is not None:
            out.append(named)
    if release is not None:
        out.append(
            Identity(
                f"the catalogue's {release.model} release",
                version=release.version,
                sha256=release.sha256.lower(),
                version_name="release version",
            )
        )
    if model is not None:
        out.append(
            Identity(
                f"the catalogue's model {model.name}",
                manufacturer_code=model.manufacturer_code,
                image_type=model.image_type,
                hw_range=(model.hw_min, model.hw_max),
            )
        )
    return tuple(out)


def disagreements(
    image: ParsedImage,
    *,
    release: Release | None = None,
    model: HubModel | None = None,
    file_name: str | None = None,
) -> list[Disagreement]:
    """Every identity field whose copies differ; empty when all copies agree.

    Each field is checked against its first copy in :func:`claims` order: the trusted
    identity where it states the field, so a message says which copy is the signed one.
    Arguments as for :func:`claims`.
    """
    copies = claims(image, release=release, model=model, file_name=file_name)
    hash_name = "Manufacturer Image hash" if image.container == "gbcs-ota" else "payload SHA-256"
    out = []
    for key in FIELDS:
        having = [c for c in copies if c.value(key) is not None]
        for other in having[1:]:
            if other.value(key) != having[0].value(key):
                out.append(
                    Disagreement(
                        file=_label(image),
                        key=key,
                        field=other.name_of(key, hash_name),
                        value=other.shown(key),
                        source=other.source,
                        reference=having[0].shown(key),
                        reference_source=having[0].source,
                    )
                )
    return out


def check_identity(
    image: ParsedImage,
    *,
    release: Release | None = None,
    model: HubModel | None = None,
    file_name: str | None = None,
) -> None:
    """Refuse ``image`` unless every copy of its identity agrees (see :func:`disagreements`).

    Raises:
        IdentityError: naming each disagreement, both values and where each came from.
    """
    found = disagreements(image, release=release, model=model, file_name=file_name)
    if found:
        raise IdentityError(_label(image), found)


# -- what the signature covers ------------------------------------------------------------


def signature_coverage(image: ParsedImage) -> Coverage:
    """Which parts of ``image`` its signature covers, and which are outside it."""
    sig = image.signature
    if image.container == "gbcs-ota":
        start = int(image.fields.get("manufacturer_image_offset", 0))
        end = start + len(image.payload) - 1
        outside = (
            "the OTA header: manufacturer code, image type, file version, hardware range, "
            "header string, stack version, total image size",
            "the force-replace byte",
            "the signature length byte (0x40)",
            "the file name",
        )
        if sig is None:
            return Coverage(None, (), outside, "unsigned (all-zero signature): nothing is covered")
        inner, _ = _wrapped_gbl(image)
        covered = [f"the Manufacturer Image (bytes {start}..{end}), hashed as SHA-256"]
        if inner is not None:
            covered.append("its GBL file, with the APP_INFO application version")
            if inner.descriptor is not None:
                covered.append(f"the GBL application's descriptor: {_DESCRIPTOR_FIELDS}")
        elif image.descriptor is not None:
            covered.append(f"the application descriptor: {_DESCRIPTOR_FIELDS}")
        return Coverage(
            sig.scheme,
            tuple(covered),
            outside,
            "ECDSA P-256 over the Manufacturer Image only; the station acts on the identity "
            "inside it and cross-checks the rest",
        )
    fmt = plugin_formats().get(image.container)
    if sig is not None and fmt is not None and fmt.signed_parts:
        return Coverage(
            sig.scheme,
            fmt.signed_parts,
            fmt.unsigned_parts,
            f"{sig.scheme} over {fmt.description}'s signed parts; the station acts on the "
            "identity inside them and cross-checks the rest",
        )
    everything = ("the whole file",)
    if sig is not None:
        return Coverage(
            sig.scheme,
            (),
            everything,
            f"a {sig.scheme} signature is present but not verified here, so nothing counts as "
            "signed",
        )
    return Coverage(None, (), everything, "no signature: nothing is covered")

"""Build images whose copies of their identity agree, or disagree in chosen fields.

An image states its identity in several places (OTA header, application descriptor, GBL
APP_INFO, file name, catalogue): these helpers let a test set each copy independently, so
it can prove every path refuses any disagreement and accepts agreement.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import strategies as st

from firmware_images.build import demo_payload
from firmware_images.catalog import Catalog, HubModel, Release
from firmware_images.gbl import build_gbl
from firmware_images.zigbee import build_gbcs_image, build_zigbee_ota, ecdsa_p256_sign

KEY = ec.generate_private_key(ec.SECP256R1())
SIGN = ecdsa_p256_sign(KEY)
APP_ADDRESS = 0x0800_0000
GBL_ADDRESS = 0x0000_4000
SIZE = 1024
FIELDS = ("manufacturer_code", "image_type", "version", "hw_range")
#: Container kinds whose header carries an identity of its own.
HEADER_KINDS = ("gbcs", "zigbee", "gbl-in-gbcs")


@dataclass(frozen=True)
class Ident:
    """One copy of an image's identity."""

    manufacturer_code: int
    image_type: int
    version: int
    hw_range: tuple[int, int]

    def shown(self, field: str) -> str:
        """The value as messages write it."""
        if field in ("manufacturer_code", "image_type"):
            return f"0x{getattr(self, field):04X}"
        if field == "version":
            return f"0x{self.version:08X}"
        return f"{self.hw_range[0]}..{self.hw_range[1]}"


DEMO = Ident(0x1234, 0x0401, 0x0101_0000, (1, 3))

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)


@st.composite
def idents(draw: st.DrawFn) -> Ident:
    lo = draw(u16)
    return Ident(draw(u16), draw(u16), draw(u32), (lo, draw(st.integers(lo, 0xFFFF))))


@st.composite
def changed(draw: st.DrawFn, base: Ident, fields: frozenset[str] | set[str]) -> Ident:
    """``base`` with a different value in each of ``fields``."""
    values: dict[str, object] = {}
    for f in sorted(fields):
        if f == "hw_range":
            lo = draw(u16)
            hw = (lo, draw(st.integers(lo, 0xFFFF)))
            values[f] = hw if hw != base.hw_range else ((lo + 1) % 0x10000,) * 2
        else:
            old: int = getattr(base, f)
            top = 0xFFFF_FFFF if f == "version" else 0xFFFF
            values[f] = draw(st.integers(0, top).filter(old.__ne__))
    return replace(base, **values)  # type: ignore[arg-type]


def app(ident: Ident, *, address: int = APP_ADDRESS) -> bytes:
    """An application payload whose descriptor states ``ident``."""
    return demo_payload(
        ident.version,
        size=SIZE,
        load_address=address,
        manufacturer_code=ident.manufacturer_code,
        image_type=ident.image_type,
        hw_min=ident.hw_range[0],
        hw_max=ident.hw_range[1],
    )


def gbl(desc: Ident, app_version: int | None = None) -> bytes:
    """A GBL whose APP_INFO says ``app_version`` (default: the descriptor's version)."""
    version = desc.version if app_version is None else app_version
    return build_gbl([(GBL_ADDRESS, app(desc, address=GBL_ADDRESS))], app_version=version)


def gbcs(desc: Ident, header: Ident | None = None, *, signed: bool = True) -> bytes:
    """A GBCS image: descriptor ``desc``, OTA header ``header`` (default: the same)."""
    return wrap_gbcs(app(desc), header or desc, signed=signed)


def wrap_gbcs(manufacturer_image: bytes, header: Ident, *, signed: bool = True) -> bytes:
    return build_gbcs_image(
        manufacturer_image,
        manufacturer_code=header.manufacturer_code,
        image_type=header.image_type,
        file_version=header.version,
        hw_min=header.hw_range[0],
        hw_max=header.hw_range[1],
        sign=SIGN if signed else None,
    )


def zigbee(desc: Ident, header: Ident | None = None) -> bytes:
    """A Zigbee OTA file with one upgrade image sub-element (unsigned)."""
    header = header or desc
    return build_zigbee_ota(
        [(0x0000, app(desc))],
        manufacturer_code=header.manufacturer_code,
        image_type=header.image_type,
        file_version=header.version,
        hw_range=header.hw_range,
    )


def build(
    kind: str, desc: Ident, header: Ident | None = None, app_version: int | None = None
) -> tuple[bytes, int]:
    """An image of ``kind`` (gbcs, zigbee, gbl-in-gbcs) and the address it loads at."""
    if kind == "gbcs":
        return gbcs(desc, header), APP_ADDRESS
    if kind == "zigbee":
        return zigbee(desc, header), APP_ADDRESS
    return wrap_gbcs(gbl(desc, app_version), header or desc), GBL_ADDRESS


def manufacturer_image(data: bytes) -> bytes:
    """The Manufacturer Image of a GBCS image built here (60-byte header, 66-byte trailer)."""
    return data[60:-66]


def gbcs_name(ident: Ident, sha256: str) -> str:
    return (
        f"{ident.manufacturer_code:04X}-{ident.image_type:04X}-{ident.version:08X}-"
        f"{sha256.upper()}.zigbee"
    )


def name_for(data: bytes, ident: Ident) -> str:
    """The GBCS file name of a GBCS image ``data``, stating ``ident``."""
    return gbcs_name(ident, hashlib.sha256(manufacturer_image(data)).hexdigest())


def write_trust(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kit.pem").write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return folder


def model_of(ident: Ident, name: str = "m") -> HubModel:
    return HubModel(
        name,
        name,
        ident.manufacturer_code,
        ident.image_type,
        ident.hw_range[0],
        ident.hw_range[1],
        0x80000,
    )


def catalogue(root: Path, model: HubModel, releases: list[Release]) -> Catalog:
    """A saved catalogue holding ``model`` and ``releases`` (files written by the caller)."""
    cat = Catalog(root)
    cat.models[model.name] = model
    cat.releases[model.name] = list(releases)
    cat.save()
    return cat

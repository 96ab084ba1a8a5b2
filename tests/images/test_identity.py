"""Every copy of an image's identity must agree, and the station acts on the signed one.

The OTA header of a GBCS image is outside its signature: editing its file version, image
type, manufacturer code or hardware range leaves the signature valid. These tests build
images whose copies (OTA header, application descriptor, GBL APP_INFO, file name,
catalogue entry) disagree in any combination of fields and check that each disagreement is
found, named with both values and where each came from, and refused by every path that
takes an image; and that images whose copies agree pass.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path

import bincopy
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drivers.errors import ImageError
from firmware_images.catalog import Catalog, Release
from firmware_images.identity import (
    Identity,
    IdentityError,
    check_identity,
    claims,
    disagreements,
    signature_coverage,
    trusted_identity,
)
from firmware_images.loader import flashable, load_image, parse_bytes

from .identitykit import (
    APP_ADDRESS,
    DEMO,
    FIELDS,
    GBL_ADDRESS,
    HEADER_KINDS,
    Ident,
    app,
    build,
    changed,
    gbcs,
    gbcs_name,
    gbl,
    idents,
    manufacturer_image,
    model_of,
    name_for,
    u32,
    wrap_gbcs,
    zigbee,
)

PROPERTY = settings(max_examples=120, deadline=None)
V16 = 0x0106_0000


# -- the reported attack, exactly ---------------------------------------------------------


def test_edited_header_version_is_named_with_both_values_and_where_each_came_from() -> None:
    raw = gbcs(DEMO, replace(DEMO, version=V16))
    name = name_for(raw, replace(DEMO, version=V16))
    image = parse_bytes(raw, name)
    found = disagreements(image)
    assert [str(d) for d in found] == [
        f"{name}: file version 0x01060000 in the OTA header (not signed) disagrees with "
        "0x01010000 in the signed payload's descriptor",
        f"{name}: version 0x01060000 in the file name disagrees with 0x01010000 in the signed "
        "payload's descriptor",
    ]
    # The parsed header keeps what the file says; the station acts on the signed copy.
    assert image.file_version == V16
    assert image.trusted_identity == Identity(
        source="the signed payload's descriptor",
        signed=True,
        manufacturer_code=0x1234,
        image_type=0x0401,
        version=0x0101_0000,
        hw_range=(1, 3),
        version_name="firmware version",
    )
    with pytest.raises(IdentityError) as caught:
        check_identity(image)
    assert caught.value.disagreements == tuple(found)
    assert caught.value.message.startswith(f"{name}: file version 0x01060000 in the OTA header")


def test_edited_header_image_type_is_refused() -> None:
    raw = gbcs(DEMO, replace(DEMO, image_type=0x0402))
    image = parse_bytes(raw, "x.zigbee")
    assert [d.reason for d in disagreements(image)] == [
        "image type 0x0402 in the OTA header (not signed) disagrees with 0x0401 in the signed "
        "payload's descriptor"
    ]
    with pytest.raises(ImageError, match="image type 0x0402 in the OTA header"):
        flashable(image, APP_ADDRESS)


# -- header copies: GBCS, Zigbee OTA, GBL in GBCS ------------------------------------------


@PROPERTY
@given(kind=st.sampled_from(HEADER_KINDS), data=st.data())
def test_header_disagreements_are_found_and_refused(kind: str, data: st.DataObject) -> None:
    desc = data.draw(idents(), "descriptor")
    fields = data.draw(st.sets(st.sampled_from(FIELDS)), "fields edited in the header")
    header = data.draw(changed(desc, fields), "header")
    raw, address = build(kind, desc, header)
    image = parse_bytes(raw, "image.zigbee")
    found = disagreements(image)
    assert {d.key for d in found} == fields
    for d in found:
        assert (d.value, d.reference) == (header.shown(d.key), desc.shown(d.key))
        assert d.source == "the OTA header (not signed)"
        assert d.reference_source.endswith("descriptor")
        assert d.reason in str(d) and str(d).startswith("image.zigbee: ")
    trusted = image.trusted_identity
    assert trusted is not None and trusted.version == desc.version
    assert trusted.signed is (kind != "zigbee")
    if fields:
        with pytest.raises(IdentityError) as caught:
            flashable(image, address)
        assert all(d.reason in caught.value.message for d in found)
    else:
        loaded = flashable(image, address)
        assert loaded.trusted_identity == trusted
        assert loaded.descriptor.firmware_version == desc.version


@PROPERTY
@given(desc=idents(), app_version=u32, wrapped=st.booleans())
# an application version whose bytes are the OTA file identifier 1E F1 EE 0B (CI found it)
@example(desc=Ident(0, 0, 0, (0, 0)), app_version=0x0BEEF11E, wrapped=False)
def test_gbl_app_info_version_must_agree(desc: Ident, app_version: int, wrapped: bool) -> None:
    raw = gbl(desc, app_version)
    if wrapped:
        raw = wrap_gbcs(raw, desc)
    image = parse_bytes(raw, "radio.zigbee" if wrapped else "radio.gbl")
    found = disagreements(image)
    if app_version == desc.version:
        assert found == []
        assert flashable(image, GBL_ADDRESS).trusted_identity.version == desc.version
        return
    signed = "signed " if wrapped else ""
    assert [d.reason for d in found] == [
        f"application version 0x{app_version:08X} in the {signed}GBL's APP_INFO tag disagrees "
        f"with 0x{desc.version:08X} in the {signed}GBL application's descriptor"
    ]
    with pytest.raises(ImageError, match="APP_INFO tag disagrees"):
        flashable(image, GBL_ADDRESS)


def test_gbl_in_gbcs_trusts_the_application_descriptor() -> None:
    raw = wrap_gbcs(gbl(DEMO), DEMO)
    image = parse_bytes(raw, "radio.zigbee")
    assert image.descriptor is None  # the Manufacturer Image is a GBL, not an application
    trusted = image.trusted_identity
    assert trusted is not None
    assert (trusted.source, trusted.signed, trusted.version) == (
        "the signed GBL application's descriptor",
        True,
        DEMO.version,
    )
    sources = [c.source for c in claims(image)]
    assert sources == [
        "the signed GBL application's descriptor",
        "the signed Manufacturer Image as read",
        "the signed GBL's APP_INFO tag",
        "the OTA header (not signed)",
    ]


# -- file names ---------------------------------------------------------------------------


@PROPERTY
@given(
    desc=idents(),
    fields=st.sets(st.sampled_from(("manufacturer_code", "image_type", "version"))),
    bad_hash=st.booleans(),
    lower=st.booleans(),
    data=st.data(),
)
def test_gbcs_file_name_must_agree(
    desc: Ident,
    fields: set[str],
    bad_hash: bool,
    lower: bool,
    data: st.DataObject,
) -> None:
    raw = gbcs(desc)
    sha = hashlib.sha256(manufacturer_image(raw)).hexdigest()
    if bad_hash:
        hexdigits = "0123456789abcdef"
        sha = data.draw(st.text(hexdigits, min_size=64, max_size=64).filter(lambda h: h != sha))
    name = gbcs_name(data.draw(changed(desc, fields)), sha)
    image = parse_bytes(raw, f"/bench/images/{name.lower() if lower else name}")
    found = disagreements(image)
    assert {d.key for d in found} == fields | ({"sha256"} if bad_hash else set())
    assert all(d.source == "the file name" for d in found)
    if found:
        with pytest.raises(IdentityError):
            flashable(image, APP_ADDRESS)
    else:
        flashable(image, APP_ADDRESS)


@settings(max_examples=60, deadline=None)
@given(
    desc=idents(),
    fields=st.sets(st.sampled_from(("manufacturer_code", "image_type", "version"))),
    rest=st.sampled_from([".hex", "-app.hex", "_build7.hex", "-release-notes.bin"]),
    data=st.data(),
)
def test_ota_style_prefix_on_a_plain_payload_must_agree(
    desc: Ident, fields: set[str], rest: str, data: st.DataObject
) -> None:
    named = data.draw(changed(desc, fields))
    name = f"{named.manufacturer_code:04X}-{named.image_type:04X}-{named.version:08X}{rest}"
    payload = app(desc)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        if rest.endswith(".hex"):
            bf = bincopy.BinFile()
            bf.add_binary(payload, address=APP_ADDRESS)
            path.write_text(bf.as_ihex())
            address = None
        else:
            path.write_bytes(payload)
            address = APP_ADDRESS
        if fields:
            with pytest.raises(IdentityError) as caught:
                load_image(path, address)
            assert {d.key for d in caught.value.disagreements} == fields
            assert "in the file name disagrees with" in caught.value.message
            assert "in the payload's descriptor" in caught.value.message
        else:
            assert load_image(path, address).trusted_identity.version == desc.version


def test_names_that_do_not_follow_the_pattern_are_not_read() -> None:
    raw = gbcs(DEMO)
    for name in ("radio.zigbee", "1234-0401-0101.zigbee", "x1234-0401-01010000.zigbee"):
        assert disagreements(parse_bytes(raw, name)) == []


# -- the catalogue ------------------------------------------------------------------------


@PROPERTY
@given(
    desc=idents(),
    model_fields=st.sets(st.sampled_from(("manufacturer_code", "image_type", "hw_range"))),
    other_version=st.booleans(),
    other_hash=st.booleans(),
    data=st.data(),
)
def test_catalogue_entry_must_agree(
    desc: Ident,
    model_fields: set[str],
    other_version: bool,
    other_hash: bool,
    data: st.DataObject,
) -> None:
    raw = gbcs(desc)
    image = parse_bytes(raw, "image.zigbee")
    model = model_of(data.draw(changed(desc, model_fields)))
    version = data.draw(u32.filter(lambda v: v != desc.version)) if other_version else desc.version
    sha = "ab" * 32 if other_hash else image.sha256
    release = Release("m", version, "image.zigbee", sha)
    cat = Catalog(Path("unused"))
    cat.models["m"], cat.releases["m"] = model, [release]
    found = disagreements(image, release=release, model=model)
    expected = set(model_fields)
    expected |= {"version"} if other_version else set()
    expected |= {"sha256"} if other_hash and sha != image.sha256 else set()
    assert {d.key for d in found} == expected
    for d in found:
        in_model = d.key in model_fields
        assert d.source == ("the catalogue's model m" if in_model else "the catalogue's m release")
    assert set(cat.image_refusals(image, release)) == {d.reason for d in found}


@PROPERTY
@given(kind=st.sampled_from(HEADER_KINDS), data=st.data())
def test_catalog_add_refuses_disagreement_and_takes_the_signed_version(
    kind: str, data: st.DataObject
) -> None:
    desc = data.draw(idents(), "descriptor")
    fields = data.draw(st.sets(st.sampled_from(FIELDS)), "fields edited in the header")
    raw, _ = build(kind, desc, data.draw(changed(desc, fields), "header"))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.zigbee"
        source.write_bytes(raw)
        cat = Catalog(Path(tmp) / "cat")
        cat.models["m"], cat.releases["m"] = model_of(desc), []
        image = parse_bytes(raw, str(source))
        if fields:
            with pytest.raises(ImageError) as caught:
                cat.add(image, source, model_name="m", predecessors=None, file_name="r.zigbee")
            assert "in the OTA header (not signed) disagrees with" in caught.value.message
            assert cat.releases["m"] == [] and not (cat.root / "r.zigbee").exists()
        else:
            rel = cat.add(image, source, model_name="m", predecessors=None, file_name="r.zigbee")
            assert (rel.version, rel.sha256) == (desc.version, image.sha256)
            assert Catalog.load(cat.root).releases["m"] == [rel]


def test_catalog_add_refuses_an_image_with_no_descriptor(tmp_path: Path) -> None:
    raw = wrap_gbcs(b"\x20" * 2048, DEMO)  # a Manufacturer Image that is not our application
    source = tmp_path / "foreign.zigbee"
    source.write_bytes(raw)
    cat = Catalog(tmp_path / "cat")
    cat.models["m"], cat.releases["m"] = model_of(DEMO), []
    image = parse_bytes(raw, str(source))
    assert image.trusted_identity is None
    with pytest.raises(ImageError, match="no application descriptor"):
        cat.add(image, source, model_name="m", predecessors=None, file_name="r.zigbee")
    release = Release("m", DEMO.version, "r.zigbee", image.sha256)
    assert any("no application descriptor" in r for r in cat.image_refusals(image, release))


# -- what the signature covers ------------------------------------------------------------


def test_signature_coverage_of_a_gbcs_image() -> None:
    image = parse_bytes(gbcs(DEMO), "x.zigbee")
    cover = signature_coverage(image)
    assert cover.scheme == "ecdsa-p256-sha256"
    assert cover.covered[0].startswith("the Manufacturer Image (bytes 60..")
    assert any("application descriptor" in c and "firmware version" in c for c in cover.covered)
    assert any(o.startswith("the OTA header") and "file version" in o for o in cover.outside)
    assert "the file name" in cover.outside
    unsigned = signature_coverage(parse_bytes(gbcs(DEMO, signed=False), "x.zigbee"))
    assert unsigned.covered == () and "unsigned" in unsigned.note
    assert trusted_identity(parse_bytes(gbcs(DEMO, signed=False), "x.zigbee")) == Identity(
        source="the payload's descriptor",
        signed=False,
        manufacturer_code=0x1234,
        image_type=0x0401,
        version=DEMO.version,
        hw_range=(1, 3),
        version_name="firmware version",
    )
    plain = signature_coverage(parse_bytes(zigbee(DEMO), "x.zigbee"))
    assert plain.covered == () and plain.scheme is None


# -- real vendor files: their names agree with their headers -------------------------------

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "zigbee-ota"


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS}")
def test_real_vendor_file_names_agree_with_their_headers() -> None:
    read, named, other = 0, 0, set()
    for path in sorted(CORPUS.glob("[0-9]*")):
        vendor_name = path.name.split("-", 1)[1]  # without the corpus' "NN-" index
        try:
            image = parse_bytes(path.read_bytes(), vendor_name)
        except ImageError:
            continue
        read += 1
        named += any(c.source == "the file name" for c in claims(image))
        found = disagreements(image)
        assert [d for d in found if "file name" in d.source] == [], vendor_name
        other |= {(vendor_name, d.reason) for d in found}
    assert read >= 10 and named >= 3
    # Vendors do not keep a GBL's APP_INFO version equal to the OTA file version; such
    # files carry no descriptor of ours, so the station could not flash them anyway.
    assert other == {
        (
            "128b-2002-040300-700_p2022_HSP_tphu_fw_efr32_V040300.zigbee",
            "file version 0x00040300 in the OTA header (not signed) disagrees with 0x00000001 "
            "in the GBL's APP_INFO tag",
        )
    }

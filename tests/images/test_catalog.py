"""The catalogue: release order, n-k, pathways with intermediate hops, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ConfigError
from firmware_images.catalog import Catalog, Decision, HubModel, Release

V = [0x0100_0000, 0x0101_0000, 0x0102_0000, 0x0103_0000, 0x0104_0000, 0x0105_0000]


def catalog(tmp_path: Path, preds: dict[int, tuple[int, ...] | None] | None = None) -> Catalog:
    preds = preds or {}
    cat = Catalog(tmp_path)
    cat.models["m"] = HubModel("m", "m", 0x1234, 0x0401, 1, 3, 0x80000)
    cat.releases["m"] = [Release("m", v, f"{v:08x}.zigbee", "00" * 32, preds.get(v)) for v in V]
    return cat


def test_target_current_and_behind(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    plan = cat.plan("m", 2, V[1])
    assert (plan.decision, plan.behind, plan.path) == (Decision.TARGET, 4, (V[-1],))
    assert plan.release is not None and plan.release.version == V[-1]
    assert cat.plan("m", 2, V[-1]).decision is Decision.CURRENT
    assert cat.plan("m", 2, V[-1]).behind == 0


def test_pathway_with_intermediate_release(tmp_path: Path) -> None:
    # 1.5 only accepts 1.4; 1.4 only accepts 1.2 or 1.3: a hub on 1.1 goes 1.1 -> 1.2 ...
    cat = catalog(tmp_path, {V[5]: (V[4],), V[4]: (V[2], V[3])})
    plan = cat.plan("m", 1, V[1])
    assert plan.decision is Decision.NEXT_HOP
    assert plan.path == (V[2], V[4], V[5])
    assert plan.release is not None and plan.release.version == V[2]
    assert "step to 0x01020000 first" in plan.reason
    assert cat.plan("m", 1, V[4]).decision is Decision.TARGET


def test_off_pathway_refused(tmp_path: Path) -> None:
    cat = catalog(tmp_path, {V[5]: (V[4],), V[4]: (V[3],), V[3]: (V[2],), V[2]: (V[1],), V[1]: ()})
    plan = cat.plan("m", 1, V[0])
    assert plan.decision is Decision.REFUSED
    assert "off-pathway" in plan.reason and "0x01000000" in plan.reason


def test_refusals_name_the_field_and_both_values(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    hw = cat.plan("m", 9, V[1])
    assert hw.decision is Decision.REFUSED and "hardware version 9" in hw.reason
    assert "1..3" in hw.reason
    unknown = cat.plan("m", 2, 0x0100_0500)
    assert "not a catalogued release" in unknown.reason and "0x01000500" in unknown.reason
    newer = cat.plan("m", 2, 0x0200_0000)
    assert newer.decision is Decision.REFUSED  # unknown running version: no path
    assert cat.plan("x", 2, V[1]).decision is Decision.REFUSED


@given(
    running=st.sampled_from(V),
    preds=st.dictionaries(
        st.sampled_from(V[1:]),
        st.none() | st.sets(st.sampled_from(V), max_size=3).map(lambda s: tuple(sorted(s))),
    ),
)
def test_plans_only_follow_allowed_moves(
    tmp_path_factory: pytest.TempPathFactory,
    running: int,
    preds: dict[int, tuple[int, ...] | None],
) -> None:
    cat = catalog(tmp_path_factory.mktemp("c"), preds)
    plan = cat.plan("m", 2, running)
    if plan.decision in (Decision.TARGET, Decision.NEXT_HOP):
        at = running
        for step in plan.path:
            rel = cat.release("m", step)
            assert rel is not None
            if rel.predecessors is None:
                assert V.index(at) < V.index(step)  # never a downgrade
            else:
                assert at in rel.predecessors
            at = step
        assert at == V[-1]
    elif plan.decision is Decision.CURRENT:
        assert running == V[-1]


def test_save_load_round_trip(tmp_path: Path) -> None:
    cat = catalog(tmp_path, {V[5]: (V[4], V[3])})
    cat.save()
    again = Catalog.load(tmp_path)
    assert again.models == cat.models and again.releases == cat.releases


def test_bad_index_names_the_entry(tmp_path: Path) -> None:
    (tmp_path / "catalog.toml").write_text('[[model]]\nname = "m"\n')
    with pytest.raises(ConfigError, match=r"\[\[model\]\] #1: missing key 'manufacturer_code'"):
        Catalog.load(tmp_path)
    (tmp_path / "catalog.toml").write_text("[[model]\n")
    with pytest.raises(ConfigError, match=r"catalog\.toml"):
        Catalog.load(tmp_path)
    with pytest.raises(ConfigError, match="no catalogue"):
        Catalog.load(tmp_path / "none")


def test_image_refusals_name_field_and_values(tmp_path: Path) -> None:
    from firmware_images.build import demo_payload
    from firmware_images.loader import parse_bytes
    from firmware_images.zigbee import build_gbcs_image

    cat = catalog(tmp_path)
    cat.models["m"] = HubModel("m", "m", 0x1234, 0x0401, 1, 3, 1024)  # room for 1 KiB only
    rel = Release("m", V[-1], "f", "ab" * 32)
    payload = demo_payload(V[-2], size=2048, manufacturer_code=0x9999, hw_min=5, hw_max=6)
    image = parse_bytes(
        build_gbcs_image(
            payload,
            manufacturer_code=0x9999,
            image_type=0x0401,
            file_version=V[-2],
            hw_min=5,
            hw_max=6,
        ),
        "x",
    )
    reasons = cat.image_refusals(image, rel)
    assert reasons == [
        "manufacturer code 0x1234 in the catalogue's model m disagrees with 0x9999 in the "
        "payload's descriptor",
        "release version 0x01050000 in the catalogue's m release disagrees with 0x01040000 in "
        "the payload's descriptor",
        "hardware range 1..3 in the catalogue's model m disagrees with 5..6 in the payload's "
        "descriptor",
        f"Manufacturer Image hash {'ab' * 32} in the catalogue's m release disagrees with "
        f"{image.sha256} in the Manufacturer Image as read",
        "payload is 2048 bytes, m has room for 1024",
    ]


def test_image_refusals_without_a_descriptor(tmp_path: Path) -> None:
    from firmware_images.model import ParsedImage, Segment

    cat = catalog(tmp_path)
    rel = Release("m", V[-1], "f", "ab" * 32)
    image = ParsedImage(
        path="x",
        container="gbcs-ota",
        fields={},
        segments=(Segment(None, b"\0" * 2048),),
        manufacturer_code=0x1234,
        image_type=0x0401,
        file_version=V[-1],
        hw_min=1,
        hw_max=3,
    )
    reasons = cat.image_refusals(image, rel)
    # Nothing signed says which image this is: the header agreeing does not make it one.
    assert reasons[0] == (
        "no application descriptor in the Manufacturer Image: nothing the station trusts says "
        "which image it is (the OTA header is not signed)"
    )

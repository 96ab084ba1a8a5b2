"""The catalogue: release order, n-k, pathways with intermediate hops, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ConfigError, ImageError
from firmware_images.catalog import Catalog, Decision, HubModel, Release, release_file_limit

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


# -- catalog.toml is strict: unknown keys, wrong types and absurd values name file, line, key --

SHA = "ab" * 32
BASE = f"""\
# catalogue
[[model]]
name = "m"
manufacturer_code = 0x1234
image_type = 0x0401
hw_min = 1
hw_max = 3
max_image_size = 0x80000

[[release]]
model = "m"
version = 0x01040000
file = "a.zigbee"
sha256 = "{SHA}"

[[release]]
model = "m"
version = "1.5.0.0"
file = "sub/b.zigbee"
sha256 = "{SHA.upper()}"
from = [0x01040000]
"""


def _load_text(tmp_path: Path, text: str) -> Catalog:
    (tmp_path / "catalog.toml").write_text(text)
    return Catalog.load(tmp_path)


def _refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load_text(tmp_path, text)
    return info.value.message


def _edit(line: int, new: str) -> str:
    lines = BASE.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


def test_the_base_catalogue_loads(tmp_path: Path) -> None:
    cat = _load_text(tmp_path, BASE)
    assert [r.version for r in cat.releases["m"]] == [0x0104_0000, 0x0105_0000]
    assert cat.releases["m"][1].sha256 == SHA and cat.releases["m"][1].file == "sub/b.zigbee"


@pytest.mark.parametrize(
    ("line", "new", "want"),
    [
        (1, "title = 'x'", "catalog.toml:1: unknown key 'title'"),
        (8, "max_image_sise = 1", "catalog.toml:8: [[model]] #1: unknown key 'max_image_sise'"),
        (15, "sha265 = 'x'", "catalog.toml:15: [[release]] #1: unknown key 'sha265'"),
        (15, "[release.extra]", "catalog.toml:15: [[release]] #1: unknown key 'extra'"),
        (6, "hw_min = '1'", "catalog.toml:6: [[model]] #1: 'hw_min' must be an integer"),
        (6, "hw_min = 1.0", "catalog.toml:6: [[model]] #1: 'hw_min' must be an integer"),
        (6, "hw_min = true", "catalog.toml:6: [[model]] #1: 'hw_min' must be an integer"),
        (3, "name = 7", "catalog.toml:3: [[model]] #1: 'name' must be a string"),
        (3, "name = ''", "catalog.toml:3: [[model]] #1: 'name' must not be empty"),
        (8, "max_image_size = -1", "catalog.toml:8: [[model]] #1: 'max_image_size' must be"),
        (8, "max_image_size = 0", "catalog.toml:8: [[model]] #1: 'max_image_size' must be"),
        (4, "manufacturer_code = 0x10000", "catalog.toml:4: [[model]] #1: 'manufacturer_code'"),
        (7, "hw_max = 0", "catalog.toml:6: [[model]] #1: 'hw_min' 1 is above 'hw_max' 0"),
        (12, "version = 0x100000000", "catalog.toml:12: [[release]] #1: 'version'"),
        (12, "version = -1", "catalog.toml:12: [[release]] #1: 'version'"),
        (12, "version = 1.5", "catalog.toml:12: [[release]] #1: 'version'"),
        (12, "version = '1.2.3.256'", "catalog.toml:12: [[release]] #1: 'version'"),
        (14, "sha256 = 'abc'", "catalog.toml:14: [[release]] #1: 'sha256' must be 64 hex"),
        (14, "sha256 = 5", "catalog.toml:14: [[release]] #1: 'sha256' must be a string"),
        (21, "from = 0x01040000", "catalog.toml:21: [[release]] #2: 'from' must be an array"),
        (21, "from = [[1]]", "catalog.toml:21: [[release]] #2: 'from'"),
        (11, "model = 'x'", "catalog.toml:11: [[release]] #1: 'model' 'x' is not a [[model]]"),
        (11, "", "catalog.toml:10: [[release]] #1: missing key 'model'"),
        (13, "file = ['a']", "catalog.toml:13: [[release]] #1: 'file' must be a string"),
    ],
)
def test_bad_entries_name_file_line_and_key(tmp_path: Path, line: int, new: str, want: str) -> None:
    assert _refusal(tmp_path, _edit(line, new)).startswith(f"{tmp_path / want}")


@pytest.mark.parametrize(
    "value",
    ["/etc/passwd", "../../etc/passwd", "sub/../../x", "..", ".", "", "a\\u0000b"],
)
def test_file_outside_the_catalogue_is_refused_at_load(tmp_path: Path, value: str) -> None:
    message = _refusal(tmp_path, _edit(13, f'file = "{value}"'))
    assert message.startswith(f"{tmp_path / 'catalog.toml'}:13: [[release]] #1: 'file' ")
    assert "inside the catalogue folder" in message


def test_tables_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    assert _refusal(tmp_path, "model = 3\n").startswith(
        f"{tmp_path / 'catalog.toml'}:1: 'model' must be an array of tables ([[model]])"
    )
    assert "'release' must be an array of tables" in _refusal(tmp_path, "[release]\nmodel = 1\n")
    assert "'model' must be an array of tables" in _refusal(tmp_path, "model = [1, 2]\n")


def test_releases_out_of_order_name_both(tmp_path: Path) -> None:
    text = _edit(18, 'version = "1.3.0.0"')
    assert _refusal(tmp_path, text) == (
        f"{tmp_path / 'catalog.toml'}:18: [[release]] #2: m 0x01030000 is listed after "
        "m 0x01040000 ([[release]] #1, line 12): a model's releases go oldest first, in "
        "increasing versions"
    )
    twice = _refusal(tmp_path, _edit(18, "version = 0x01040000"))
    assert "m 0x01040000 is listed twice" in twice and "line 12" in twice


def test_index_that_is_not_a_regular_file(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "catalog.toml")
    with pytest.raises(ConfigError, match=r"catalog\.toml is a FIFO"):
        Catalog.load(tmp_path)


def test_index_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "catalog.toml").write_bytes(b'[[model]]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match=r"catalog\.toml: not UTF-8"):
        Catalog.load(tmp_path)


# Generated catalogues: one key of one table gets a value of a wrong type, or an unknown key
# is added. Loading must refuse with a ConfigError naming the key and its line, never crash.

_TOML_VALUES: dict[str, st.SearchStrategy[str]] = {
    "integer": st.integers(-(2**63), 2**63 - 1).map(str),
    "float": st.sampled_from(["1.5", "-0.0", "inf", "nan", "1e3"]),
    "boolean": st.sampled_from(["true", "false"]),
    "string": st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    "date": st.sampled_from(["1979-05-27", "1979-05-27T07:32:00Z", "07:32:00"]),
    "array": st.sampled_from(["[]", "[1, 2]", '["a"]', "[[1]]", "[{a = 1}]"]),
    "table": st.sampled_from(["{}", "{a = 1}", '{name = "m"}']),
}
#: The TOML types each key refuses (a version may be an integer or a string).
_WRONG: dict[str, tuple[str, ...]] = {
    "name": ("integer", "float", "boolean", "date", "array", "table"),
    "profile": ("integer", "float", "boolean", "date", "array", "table"),
    "manufacturer_code": ("float", "boolean", "string", "date", "array", "table"),
    "image_type": ("float", "boolean", "string", "date", "array", "table"),
    "hw_min": ("float", "boolean", "string", "date", "array", "table"),
    "hw_max": ("float", "boolean", "string", "date", "array", "table"),
    "max_image_size": ("float", "boolean", "string", "date", "array", "table"),
    "model": ("integer", "float", "boolean", "date", "array", "table"),
    "version": ("float", "boolean", "date", "array", "table"),
    "file": ("integer", "float", "boolean", "date", "array", "table"),
    "sha256": ("integer", "float", "boolean", "date", "array", "table"),
    "from": ("integer", "float", "boolean", "string", "date", "table"),
}
# Each key of BASE and the line it is written on.
_BASE_KEYS = [
    (text.split(" = ")[0], n) for n, text in enumerate(BASE.splitlines(), 1) if " = " in text
]


@st.composite
def _broken_catalogue(draw: st.DrawFn) -> tuple[str, str, int]:
    """(catalog.toml text, the key at fault, its line)."""
    lines = BASE.splitlines()
    if draw(st.booleans()):
        key, line = draw(st.sampled_from(_BASE_KEYS))
        kind = draw(st.sampled_from(_WRONG[key]))
        lines[line - 1] = f"{key} = {draw(_TOML_VALUES[kind])}"
    else:
        key = draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
        if key in _WRONG:
            key = "x_" + key
        line = draw(st.sampled_from([1, 9, 15, 22]))  # top level, after each table's keys
        kind = draw(st.sampled_from(sorted(_TOML_VALUES)))
        if line == 1:
            lines[0] = f"{key} = {draw(_TOML_VALUES[kind])}"
        else:
            lines.insert(line - 1, f"{key} = {draw(_TOML_VALUES[kind])}")
    return "\n".join(lines) + "\n", key, line


@given(_broken_catalogue())
def test_generated_bad_catalogues_are_refused_naming_the_key(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str, int]
) -> None:
    text, key, line = case
    folder = tmp_path_factory.mktemp("cat")
    with pytest.raises(ConfigError) as info:
        _load_text(folder, text)
    message = info.value.message
    assert f"'{key}'" in message, message
    assert message.startswith(f"{folder / 'catalog.toml'}:{line}: "), (message, text)


# -- release files stay inside the catalogue folder and are read capped ----------------------


def _signed_catalogue(tmp_path: Path) -> Catalog:
    from station.demo import prepare_demo_catalog

    cat, _trust = prepare_demo_catalog(tmp_path / "demo", size=4096)
    return cat


@pytest.fixture(scope="module")
def demo_cat(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return _signed_catalogue(tmp_path_factory.mktemp("demo"))


def _copy(demo_cat: Catalog, folder: Path) -> tuple[Catalog, Release]:
    """A copy of the demo catalogue in ``folder``, and its newest release."""
    folder.mkdir(exist_ok=True)
    for f in demo_cat.root.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    cat = Catalog.load(folder)
    return cat, cat.releases["demo-an3155"][-1]


def test_load_release_parses_the_file(demo_cat: Catalog) -> None:
    rel = demo_cat.releases["demo-an3155"][-1]
    image = demo_cat.load_release(rel)
    assert image.path == str(demo_cat.root / rel.file)
    assert image.file_version == rel.version and image.sha256 == rel.sha256
    assert demo_cat.image_refusals(image, rel) == []


def test_a_link_inside_the_folder_is_followed(demo_cat: Catalog, tmp_path: Path) -> None:
    cat, rel = _copy(demo_cat, tmp_path / "cat")
    (cat.root / "store").mkdir()
    (cat.root / rel.file).rename(cat.root / "store" / rel.file)
    (cat.root / rel.file).symlink_to(Path("store") / rel.file)
    assert cat.load_release(rel).sha256 == rel.sha256


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/passwd", "../outside.zigbee"])
def test_a_link_out_of_the_folder_is_refused(
    demo_cat: Catalog, tmp_path: Path, target: str
) -> None:
    cat, rel = _copy(demo_cat, tmp_path / "cat")
    (tmp_path / "outside.zigbee").write_bytes((cat.root / rel.file).read_bytes())
    (cat.root / rel.file).unlink()
    (cat.root / rel.file).symlink_to(target)
    resolved = (cat.root / rel.file).resolve()
    for call in (cat.path_of, cat.load_release):
        with pytest.raises(ConfigError) as info:
            call(rel)
        assert info.value.message == (
            f"catalogue {cat.root}: demo-an3155 0x01050000: file {rel.file!r} resolves to "
            f"{resolved}, outside the catalogue folder"
        )


def test_a_release_built_in_code_is_confined_too(demo_cat: Catalog) -> None:
    rel = Release("demo-an3155", 0x0106_0000, "../../etc/passwd", "00" * 32)
    with pytest.raises(ConfigError, match=r"file '\.\./\.\./etc/passwd' steps out with '\.\.'"):
        demo_cat.path_of(rel)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_special_release_files_are_refused(demo_cat: Catalog, tmp_path: Path, kind: str) -> None:
    import os

    cat, rel = _copy(demo_cat, tmp_path / "cat")
    (cat.root / rel.file).unlink()
    if kind == "fifo":
        os.mkfifo(cat.root / rel.file)
    else:
        (cat.root / rel.file).mkdir()
    shown = "FIFO" if kind == "fifo" else kind
    with pytest.raises(ConfigError, match=rf"catalogue file .*{rel.file} is a {shown}"):
        cat.load_release(rel)


def test_release_files_are_capped_by_the_model(demo_cat: Catalog, tmp_path: Path) -> None:
    cat, rel = _copy(demo_cat, tmp_path / "cat")
    model = cat.models["demo-an3155"]
    limit = release_file_limit(model)
    assert limit == 3 * model.max_image_size + 64 * 1024
    with (cat.root / rel.file).open("r+b") as f:
        f.truncate(limit + 1)
    with pytest.raises(ImageError, match=rf"is {limit + 1} bytes, more than the {limit} accepted"):
        cat.load_release(rel)
    huge = HubModel("h", "h", 1, 1, 1, 1, 0xFFFF_FFFF)
    assert release_file_limit(huge) == 32 << 20


def test_a_missing_release_file_is_an_image_error(demo_cat: Catalog, tmp_path: Path) -> None:
    cat, rel = _copy(demo_cat, tmp_path / "cat")
    (cat.root / rel.file).unlink()
    with pytest.raises(ImageError, match=r"cannot read demo-an3155 catalogue file .*No such"):
        cat.load_release(rel)


def test_a_catalogue_folder_that_does_not_exist_is_called_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Catalog.load(tmp_path / "cataloge")
    text = str(info.value)
    assert text.startswith(f"no catalogue at {tmp_path / 'cataloge'}: the folder does not exist")
    assert "give --catalog" not in text


def test_a_folder_without_an_index_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Catalog.load(tmp_path)
    text = str(info.value)
    assert text.startswith(f"no catalogue at {tmp_path}: the folder has no catalog.toml"), text
    assert "give --catalog" not in text and "station catalog add" in text


def test_the_index_given_for_its_folder_points_at_the_folder(tmp_path: Path) -> None:
    Catalog.load(tmp_path, create=True).save()
    with pytest.raises(ConfigError) as info:
        Catalog.load(tmp_path / "catalog.toml")
    assert str(info.value).startswith(f"{tmp_path / 'catalog.toml'} is a file, not a folder")
    assert f"give its folder, {tmp_path}" in str(info.value)

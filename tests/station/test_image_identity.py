"""An image whose copies of its identity disagree is refused by every `station` command.

The reported attack, reproduced through the real CLI: a signed 1.1.0.0 GBCS image whose
OTA header (outside the signature) was edited to say 1.6.0.0, or another image type. The
signature still verifies; `image verify`, `catalog add`, `catalog check`, `flash FILE` and
flashing from a catalogue that lists it must all refuse it, naming both values, and no hub
may be touched. Then the same for generated images of every kind (Hypothesis).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_images.catalog import Catalog, HubModel, Release
from firmware_images.loader import parse_file
from sim.pty import SimHub
from station.cli import Exit, main
from station.flash import identify_hub
from station.profiles import load_profile

from ..images.identitykit import (
    FIELDS,
    HEADER_KINDS,
    build,
    changed,
    idents,
    model_of,
    name_for,
    write_trust,
)

SIZE = 4096
V11, V15, V16 = 0x0101_0000, 0x0105_0000, 0x0106_0000
MODEL = ["--hw-min", "1", "--hw-max", "3", "--max-image-size", "0x80000"]


def run(*argv: str) -> tuple[int, str, str]:
    """``station ARGV``: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), " ".join(err.getvalue().split())


@pytest.fixture
def silent_port() -> Iterator[tuple[str, int]]:
    """A pseudo-terminal with nothing behind it: (port path, master fd to inspect)."""
    master, slave = os.openpty()
    yield os.ttyname(slave), master
    os.close(master)
    os.close(slave)


def _bytes_sent(master: int) -> bytes:
    got = b""
    while select.select([master], [], [], 0.05)[0]:
        got += os.read(master, 4096)
    return got


@dataclass(frozen=True)
class Bench:
    trust: Path
    key: Path
    built: Path  # where `station image build` writes


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    key, trust = tmp_path / "signer-key.pem", tmp_path / "trust"
    assert run("image", "keygen", "--private", str(key), "--public", str(trust / "s.pem"))[0] == 0
    (tmp_path / "built").mkdir()
    return Bench(trust, key, tmp_path / "built")


def _build(bench: Bench, version: str) -> Path:
    code, out, err = run(
        "image", "build", "--demo-version", version, "--size", str(SIZE),
        "--sign-key", str(bench.key), "-o", str(bench.built),
    )  # fmt: skip
    assert code == 0, err
    return Path(out.split(":", 1)[0])


def _edit_header(src: Path, dst_dir: Path, offset: int, value: bytes) -> Path:
    """The attack: change bytes of the OTA header, keep the file name and the signature."""
    data = bytearray(src.read_bytes())
    data[offset : offset + len(value)] = value
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dst_dir / src.name
    out.write_bytes(bytes(data))
    return out


EDITS = {
    # field edited: (offset in the OTA header, new bytes, the refusal expected)
    "file-version": (
        14,
        struct.pack("<I", V16),
        "file version 0x01060000 in the OTA header (not signed) disagrees with 0x01010000 in "
        "the signed payload's descriptor",
    ),
    "image-type": (
        12,
        struct.pack("<H", 0x0402),
        "image type 0x0402 in the OTA header (not signed) disagrees with 0x0401 in the signed "
        "payload's descriptor",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_header_is_refused_by_every_command(
    bench: Bench, tmp_path: Path, silent_port: tuple[str, int], edit: str
) -> None:
    offset, value, says = EDITS[edit]
    good = _build(bench, "1.1.0.0")
    assert good.name.startswith("1234-0401-01010000-")
    edited = _edit_header(good, tmp_path / "edited", offset, value)
    trust = ["--trust", str(bench.trust)]

    # image verify: the signature is still valid, and the image is refused (exit 3).
    code, out, _ = run("image", "verify", str(edited), *trust, "--json")
    verdict = json.loads(out)
    assert (code, verdict["ok"], verdict["signature"]) == (Exit.REFUSED, False, "valid")
    assert says in verdict["reasons"]
    assert verdict["identity"]["version"] == "0x01010000"
    assert verdict["identity"]["source"] == "the signed payload's descriptor"
    assert run("image", "verify", str(good), *trust)[0] == Exit.PASSED

    # image inspect: the disagreement is a problem; the signed and unsigned parts are shown.
    code, out, _ = run("image", "inspect", str(edited), *trust, "--json")
    report = json.loads(out)
    assert code == 0 and says in report["problems"] and report["disagreements"] == [says]
    assert report["trusted_identity"]["version"] == "0x01010000"
    assert report["signature_covers"][0].startswith("the Manufacturer Image")
    assert any(o.startswith("the OTA header") for o in report["outside_signature"])
    code, text, _ = run("image", "inspect", str(edited), *trust)
    assert "problem" in text and says in " ".join(text.split())
    assert "outside signature" in text and "signature covers" in text

    # catalog add: refused (exit 2), nothing written; the good file is accepted.
    cat = tmp_path / "catalog"
    code, _, err = run(
        "catalog", "add", str(edited), "--model", "demo-an3155", "--catalog", str(cat), *trust,
        *MODEL,
    )  # fmt: skip
    assert code == Exit.BAD_INPUT and says in err
    assert not cat.exists()
    add = ["catalog", "add", str(good), "--model", "demo-an3155", "--catalog", str(cat), *trust]
    assert run(*add, *MODEL)[0] == 0

    # station flash FILE: refused before any port is opened (exit 2), not a byte sent.
    port, master = silent_port
    code, _, err = run(
        "flash", "--port", port, "--profile", "demo-an3155", *trust, str(edited)
    )  # fmt: skip
    assert code == Exit.BAD_INPUT and says in err
    assert _bytes_sent(master) == b""

    # catalog check: a catalogue that lists the edited file (as the old `catalog add` did,
    # taking the header's word for it) is BAD.
    listed = Catalog.load(cat)
    header = parse_file(edited)
    assert header.file_version is not None
    rel = Release("demo-an3155", header.file_version, edited.name, header.sha256)
    if rel.version == V11:  # the version was not edited: list it as the only release
        listed.releases["demo-an3155"] = []
    (cat / edited.name).write_bytes(edited.read_bytes())
    listed.releases["demo-an3155"].append(rel)
    listed.save()
    code, out, _ = run("catalog", "check", "--catalog", str(cat), *trust)
    assert code == 1 and "BAD" in out and says in " ".join(out.split())


def test_catalogue_listing_an_edited_header_never_flashes_a_hub(
    bench: Bench, tmp_path: Path, start_hub: Callable[..., SimHub]
) -> None:
    """The reported run: a hub on 1.5, a catalogue whose "1.6" is an edited 1.1."""
    trust = ["--trust", str(bench.trust)]
    cat = tmp_path / "catalog"
    add = ["catalog", "add", "--model", "demo-an3155", "--catalog", str(cat), *trust]
    assert run(*add[:2], str(_build(bench, "1.5.0.0")), *add[2:], *MODEL)[0] == 0
    edited = _edit_header(_build(bench, "1.1.0.0"), tmp_path / "edited", 14, struct.pack("<I", V16))
    listed = Catalog.load(cat)
    sha = parse_file(edited).sha256
    listed.releases["demo-an3155"].append(Release("demo-an3155", V16, edited.name, sha))
    (cat / edited.name).write_bytes(edited.read_bytes())
    listed.save()
    profile = load_profile("demo-an3155")
    hub = start_hub(firmware=V15, firmware_size=SIZE)
    code, out, _ = run(
        "flash", "--port", hub.port, "--profile", "demo-an3155", "--catalog", str(cat), *trust,
        "--json",
    )  # fmt: skip
    result = json.loads(out)
    assert (code, result["result"], result["phase"]) == (Exit.REFUSED, "refused", "plan")
    assert "file version 0x01060000 in the OTA header (not signed)" in result["message"]
    assert "release version 0x01060000 in the catalogue's demo-an3155 release" in result["message"]
    assert result["bytes_written"] == 0 and result["version_after"] is None
    # The hub still runs 1.5: nothing was erased or written.
    assert identify_hub(hub.port, profile).version_before == "0x01050000"


# -- every kind of image, every command (Hypothesis) ---------------------------------------


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(HEADER_KINDS), gbcs_named=st.booleans(), data=st.data())
def test_every_command_refuses_disagreement_and_accepts_agreement(
    kind: str, gbcs_named: bool, data: st.DataObject
) -> None:
    desc = data.draw(idents(), "descriptor")
    fields = data.draw(st.sets(st.sampled_from(FIELDS)), "fields edited in the header")
    header = data.draw(changed(desc, fields), "header")
    raw, _ = build(kind, desc, header)
    signed = kind != "zigbee"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trust = ["--trust", str(write_trust(root / "trust"))]
        lax = [] if signed else ["--allow-unsigned"]
        # Named as its (possibly edited) header says, as `station image build` names files.
        path = root / (name_for(raw, header) if gbcs_named and kind != "zigbee" else "image.ota")
        path.write_bytes(raw)
        refused = bool(fields)

        code, out, _ = run("image", "verify", str(path), *trust, *lax, "--json")
        verdict = json.loads(out)
        assert code == (Exit.REFUSED if refused else Exit.PASSED), verdict
        assert bool(verdict["disagreements"]) is refused
        assert set(verdict["disagreements"]) <= set(verdict["reasons"])

        code, out, _ = run("image", "inspect", str(path), *trust, "--json")
        report = json.loads(out)
        assert set(report["disagreements"]) <= set(report["problems"])
        assert report["disagreements"] == verdict["disagreements"]

        hw = ["--hw-min", str(desc.hw_range[0]), "--hw-max", str(desc.hw_range[1])]
        cat = root / "catalog"
        code, _, err = run(
            "catalog", "add", str(path), "--model", "m", "--catalog", str(cat), *trust, *lax,
            *hw, "--max-image-size", "0x80000",
        )  # fmt: skip
        assert code == (Exit.BAD_INPUT if refused else 0), err
        assert ("disagrees with" in err) is refused

        # A catalogue listing the file under its signed identity: only the header disagrees.
        stored = Catalog(root / "listed")
        stored.root.mkdir()
        (stored.root / path.name).write_bytes(raw)
        image = parse_file(path)
        model: HubModel = model_of(desc)
        stored.models["m"] = model
        stored.releases["m"] = [Release("m", desc.version, path.name, image.sha256)]
        stored.save()
        code, out, _ = run("catalog", "check", "--catalog", str(stored.root), *trust)
        bad = refused or not signed  # `catalog check` insists on a valid signature
        assert code == (1 if bad else 0), out
        if refused:
            assert all(d in " ".join(out.split()) for d in verdict["disagreements"])
            code, _, err = run("flash", "--port", "/dev/null", "--profile", "demo-an3155",
                               str(path), *trust, *lax)  # fmt: skip
            assert code == Exit.BAD_INPUT and "disagrees with" in err


def test_check_image_refuses_any_loaded_image_whose_copies_disagree() -> None:
    """However a LoadedImage was made, the one that reaches a hub has an agreeing identity."""
    from dataclasses import replace

    from drivers.errors import ImageError
    from firmware_images.loader import flashable, parse_bytes
    from station.flash import Policy, check_image

    from ..images.identitykit import DEMO, gbcs

    good = flashable(parse_bytes(gbcs(DEMO), "good.zigbee"), 0x0800_0000)
    edited = parse_bytes(gbcs(DEMO, replace(DEMO, version=V16)), "good.zigbee")
    assert edited.sha256 == good.sha256  # the same signed bytes, another header
    with pytest.raises(ImageError, match="file version 0x01060000 in the OTA header"):
        check_image(replace(good, parsed=edited), load_profile("demo-an3155"), Policy())


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(("gbcs", "gbl-in-gbcs")),
    version=st.integers(2, 0xFFFF_FFFF),
    data=st.data(),
)
def test_the_catalogue_chooser_refuses_disagreement_before_any_hub_is_written(
    kind: str, version: int, data: st.DataObject
) -> None:
    """A catalogue listing an image under its header's word (as `catalog add` once did)."""
    from dataclasses import replace

    from firmware_images.trust import TrustStore
    from station.flash import Policy, Refusal, catalog_chooser
    from station.outcome import FlashOutcome

    from ..images.identitykit import DEMO

    profile = load_profile("demo-gecko" if kind == "gbl-in-gbcs" else "demo-an3155")
    desc = replace(DEMO, version=version, image_type=profile.image_type)
    fields = data.draw(st.sets(st.sampled_from(FIELDS)), "fields edited in the header")
    header = data.draw(changed(desc, fields), "header")
    raw, _ = build(kind, desc, header)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trust = TrustStore.from_dir(write_trust(root / "trust"))
        cat = Catalog(root / "catalog")
        cat.root.mkdir()
        (cat.root / "r.zigbee").write_bytes(raw)
        cat.models[profile.name] = replace(model_of(desc, profile.name), max_image_size=1 << 20)
        sha = parse_file(cat.root / "r.zigbee").sha256
        old = 1 if header.version == 0 else 0  # the release the hub runs (file not needed)
        cat.releases[profile.name] = [
            Release(profile.name, old, "old.zigbee", "00" * 32),
            Release(profile.name, header.version, "r.zigbee", sha),
        ]
        choose = catalog_chooser(cat, profile, Policy(trust=trust))
        hub = FlashOutcome(port="-", profile=profile.name, hw_version=desc.hw_range[0])
        hub.version_before = f"0x{old:08X}"
        if fields:
            with pytest.raises(Refusal, match="disagrees with"):
                choose(hub)
        else:
            image = choose(hub)
            assert image.trusted_identity.version == version == header.version


def test_verify_refuses_an_image_nothing_signed_identifies(bench: Bench, tmp_path: Path) -> None:
    """Signed, but its Manufacturer Image carries no descriptor: only the header says what
    it is, and the header is not signed."""
    from firmware_images.zigbee import build_gbcs_image, ecdsa_p256_sign

    from ..images.identitykit import KEY

    path = tmp_path / "foreign.zigbee"
    path.write_bytes(
        build_gbcs_image(
            b"\x20" * 2048, manufacturer_code=0x1234, image_type=0x0401, file_version=V16,
            hw_min=1, hw_max=3, sign=ecdsa_p256_sign(KEY),
        )
    )  # fmt: skip
    code, out, _ = run("image", "verify", str(path), "--trust", str(write_trust(tmp_path / "t")))
    assert code == Exit.REFUSED
    assert "no application descriptor in the Manufacturer Image" in " ".join(out.split())

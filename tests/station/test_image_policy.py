"""Image policy as a user meets it: `station image verify`, `catalog check`, and flashing
from the catalogue. Every refusal names the field and both values."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_images.build import demo_payload
from firmware_images.catalog import Catalog
from firmware_images.trust import TrustStore
from firmware_images.zigbee import build_gbcs_image, ecdsa_p256_sign
from sim.pty import SimHub
from station.cli import Exit, main
from station.demo import DEMO_RELEASES, prepare_demo_catalog
from station.flash import Policy, Result, catalog_chooser, flash_hub
from station.profiles import load_profile

SIZE = 4096


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, TrustStore]:
    return prepare_demo_catalog(tmp_path_factory.mktemp("demo"), size=SIZE)


def _file(cat: Catalog, version: int) -> Path:
    rel = cat.release("demo-an3155", version)
    assert rel is not None
    return cat.path_of(rel)


def _verify(
    capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore], path: Path, *extra: str
) -> tuple[int, dict[str, object]]:
    cat, trust = demo
    code = main(
        [
            "image",
            "verify",
            str(path),
            "--trust",
            trust.source,
            "--catalog",
            str(cat.root),
            "--json",
            *extra,
        ]
    )
    return code, json.loads(capsys.readouterr().out)


HUB = ["--for-model", "demo-an3155", "--hardware", "2", "--running", "0x01010000"]


def test_good_image_for_a_hub(
    capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    code, v = _verify(capsys, demo, _file(demo[0], DEMO_RELEASES[-1]), *HUB)
    assert (code, v["ok"], v["signature"], v["decision"], v["behind"]) == (
        Exit.PASSED,
        True,
        "valid",
        "target",
        5,
    )


def _tampered(tmp_path: Path, src: Path, offset: int) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= 0x01
    out = tmp_path / src.name
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    ("offset", "says"),
    [
        (-1, "does not verify"),  # last byte of the signature
        (60 + 1000, "does not verify"),  # a byte of the Manufacturer Image
    ],
    ids=["tampered-signature", "flipped-payload-byte"],
)
def test_tampering_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    demo: tuple[Catalog, TrustStore],
    offset: int,
    says: str,
) -> None:
    path = _tampered(tmp_path, _file(demo[0], DEMO_RELEASES[-1]), offset)
    code, v = _verify(capsys, demo, path, *HUB)
    assert code == Exit.REFUSED and v["signature"] == "invalid"
    assert any(says in r for r in v["reasons"])
    if offset > 0:
        assert any(
            r.startswith("Manufacturer Image hash ") and "disagrees with" in r for r in v["reasons"]
        )


def test_wrong_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    # Signed by a trusted key, but for another maker's hub.
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "other.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = tmp_path / "other.zigbee"
    path.write_bytes(
        build_gbcs_image(
            demo_payload(DEMO_RELEASES[-1], size=SIZE, manufacturer_code=0x9999),
            manufacturer_code=0x9999,
            image_type=0x0401,
            file_version=DEMO_RELEASES[-1],
            hw_min=1,
            hw_max=3,
            sign=ecdsa_p256_sign(key),
        )
    )
    code = main(
        [
            "image",
            "verify",
            str(path),
            "--trust",
            str(trust),
            "--catalog",
            str(demo[0].root),
            "--json",
            *HUB,
        ]
    )
    v = json.loads(capsys.readouterr().out)
    assert code == Exit.REFUSED and v["signature"] == "valid"
    assert (
        "manufacturer code 0x1234 in the catalogue's model demo-an3155 disagrees with 0x9999 "
        "in the signed payload's descriptor"
    ) in v["reasons"]


def test_wrong_hardware(
    capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    hub = ["--for-model", "demo-an3155", "--hardware", "7", "--running", "0x01010000"]
    code, v = _verify(capsys, demo, _file(demo[0], DEMO_RELEASES[-1]), *hub)
    assert code == Exit.REFUSED
    assert any("hardware version 7 is outside" in r and "1..3" in r for r in v["reasons"])


def test_downgrade(capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]) -> None:
    hub = ["--for-model", "demo-an3155", "--hardware", "2", "--running", "0x01040000"]
    code, v = _verify(capsys, demo, _file(demo[0], DEMO_RELEASES[2]), *hub)
    assert code == Exit.REFUSED
    assert any(
        "downgrade: image 1.2.0.0 is older than the running 1.4.0.0" in r for r in v["reasons"]
    )


def test_off_pathway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = demo
    # Same files, but the newest release now only accepts 1.4, and 1.4 only 1.3.
    gated = Catalog.load(cat.root)
    gated.root = tmp_path
    for r in list(gated.releases["demo-an3155"]):
        (tmp_path / r.file).write_bytes(cat.path_of(r).read_bytes())
    rels = gated.releases["demo-an3155"]
    from dataclasses import replace

    rels[-1] = replace(rels[-1], predecessors=(DEMO_RELEASES[4],))
    rels[-2] = replace(rels[-2], predecessors=(DEMO_RELEASES[3],))
    rels[-3] = replace(rels[-3], predecessors=(DEMO_RELEASES[2],))
    rels[-4] = replace(rels[-4], predecessors=())
    gated.save()
    code = main(
        [
            "image",
            "verify",
            str(_file(cat, DEMO_RELEASES[-1])),
            "--trust",
            trust.source,
            "--catalog",
            str(tmp_path),
            "--json",
            *HUB,
        ]
    )
    v = json.loads(capsys.readouterr().out)
    assert code == Exit.REFUSED and v["decision"] == "refused"
    assert any("off-pathway" in r and "0x01010000" in r for r in v["reasons"])


def test_unsigned_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    path = tmp_path / "unsigned.zigbee"
    path.write_bytes(
        build_gbcs_image(
            demo_payload(DEMO_RELEASES[-1], size=SIZE),
            manufacturer_code=0x1234,
            image_type=0x0401,
            file_version=DEMO_RELEASES[-1],
            hw_min=1,
            hw_max=3,
        )
    )
    code, v = _verify(capsys, demo, path)
    assert code == Exit.REFUSED and v["signature"] == "unsigned"
    assert v["reasons"] == ["the image is not signed"]
    code, v = _verify(capsys, demo, path, "--allow-unsigned")
    assert code == Exit.PASSED


def test_catalog_check_finds_a_swapped_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = demo
    assert main(["catalog", "check", "--catalog", str(cat.root), "--trust", trust.source]) == 0
    copy = tmp_path / "cat"
    copy.mkdir()
    for f in cat.root.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    newest = cat.releases["demo-an3155"][-1]
    (copy / newest.file).write_bytes(_file(cat, DEMO_RELEASES[0]).read_bytes())
    assert main(["catalog", "check", "--catalog", str(copy), "--trust", trust.source]) == 1
    out = capsys.readouterr().out
    assert "BAD" in out
    assert (
        "release version 0x01050000 in the catalogue's demo-an3155 release disagrees with "
        "0x01010000 in the signed payload's descriptor"
    ) in out


def test_flash_from_the_catalogue(
    start_hub: Callable[..., SimHub], tmp_path: Path, demo: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = demo
    profile = load_profile("demo-an3155")
    policy = Policy(trust=trust)
    hub = start_hub(firmware=DEMO_RELEASES[1], firmware_size=SIZE)
    out = flash_hub(hub.port, profile, catalog_chooser(cat, profile, policy), policy=policy)
    assert out.result is Result.PASSED, out.message
    assert (out.behind, out.signature, out.signer) == (4, "valid", "demo-signer.pem")
    assert out.version_after == "0x01050000" and out.overrides == []
    again = flash_hub(hub.port, profile, catalog_chooser(cat, profile, policy), policy=policy)
    assert again.result is Result.SKIPPED


def test_tampered_catalogue_file_is_never_flashed(
    start_hub: Callable[..., SimHub], tmp_path: Path, demo: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = demo
    copy = Catalog.load(cat.root)
    copy.root = tmp_path
    for r in copy.releases["demo-an3155"]:
        (tmp_path / r.file).write_bytes(cat.path_of(r).read_bytes())
    newest = copy.releases["demo-an3155"][-1]
    _tampered(tmp_path, copy.path_of(newest), 60 + 100)
    profile = load_profile("demo-an3155")
    hub = start_hub(firmware=DEMO_RELEASES[1], firmware_size=SIZE)
    policy = Policy(trust=trust)
    out = flash_hub(hub.port, profile, catalog_chooser(copy, profile, policy), policy=policy)
    assert (out.result, out.phase) == (Result.REFUSED, "plan")
    assert "Manufacturer Image hash " in out.message and "disagrees with" in out.message
    assert out.bytes_written == 0
    # The hub still runs its old release: nothing was erased or written.
    check = flash_hub(hub.port, profile, catalog_chooser(cat, profile, policy), policy=policy)
    assert check.version_before == "0x01010200"


def test_catalog_add_and_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    cat, trust = demo
    new = tmp_path / "cat"
    args = ["--catalog", str(new), "--trust", trust.source]
    first = ["--hw-min", "1", "--hw-max", "3", "--max-image-size", "0x80000"]
    assert (
        main(
            [
                "catalog",
                "add",
                str(_file(cat, DEMO_RELEASES[3])),
                "--model",
                "demo-an3155",
                *args,
                *first,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "catalog",
                "add",
                str(_file(cat, DEMO_RELEASES[5])),
                "--model",
                "demo-an3155",
                "--from",
                "1.3.0.0",
                *args,
            ]
        )
        == 0
    )
    # Releases go in order: an older one after a newer is refused.
    assert (
        main(["catalog", "add", str(_file(cat, DEMO_RELEASES[4])), "--model", "demo-an3155", *args])
        == Exit.BAD_INPUT
    )
    capsys.readouterr()
    assert main(["catalog", "list", "--catalog", str(new), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in listed["releases"]] == ["0x01030000", "0x01050000"]
    assert listed["releases"][1]["from"] == ["0x01030000"]
    assert main(["catalog", "check", *args]) == 0


def test_unknown_signer_hint_names_the_trust_store_not_allow_unsigned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo: tuple[Catalog, TrustStore]
) -> None:
    """An image signed by a key the trust store lacks is refused with the cause (an unknown
    signer: add its public key), never with the unsigned override, which would not help."""
    cat, _ = demo
    other = tmp_path / "other-trust"
    assert main(["image", "keygen", "--private", str(tmp_path / "k.pem"),
                 "--public", str(other / "someone.pem")]) == 0  # fmt: skip
    capsys.readouterr()
    port = f"sim://an3155?firmware={DEMO_RELEASES[1]:#010x}&unpaced"
    common = ["flash", "--port", port, "--profile", "demo-an3155", "--trust", str(other)]
    for source in (["--catalog", str(cat.root)], [str(_file(cat, DEMO_RELEASES[-1]))]):
        assert main([*common, *source]) == Exit.REFUSED
        said = capsys.readouterr()
        err = " ".join((said.out + said.err).split())
        assert "signed by an unknown party" in err
        assert f"add the signer's public key (PEM) to the trust store {other}" in err
        assert "(it holds someone.pem)" in err
        assert "allow-unsigned" not in err
    new = ["--catalog", str(tmp_path / "cat"), "--trust", str(other), "--max-image-size", "0x80000"]
    added = main(["catalog", "add", str(_file(cat, DEMO_RELEASES[-1])), "--model", "m", *new])
    said = capsys.readouterr()
    err = " ".join((said.out + said.err).split())
    assert added == Exit.BAD_INPUT and "signature invalid" in err
    assert f"to the trust store {other} (it holds someone.pem)" in err


def test_verify_for_a_model_without_a_catalogue_says_what_to_give(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    demo: tuple[Catalog, TrustStore],
) -> None:
    """`--for-model` asks the catalogue; with none given and none in the data folder the
    error says to give --catalog DIR and how to make one, not just where none was."""
    cat, trust = demo
    monkeypatch.chdir(tmp_path)
    file = str(_file(cat, DEMO_RELEASES[-1]))
    code = main(["image", "verify", file, "--trust", trust.source, *HUB])
    err = " ".join(capsys.readouterr().err.split())
    assert code == Exit.BAD_INPUT
    assert "this needs a catalogue: give --catalog DIR (there is none at station-data" in err
    assert "station catalog add FILE --model M --catalog DIR" in err
    assert main(["image", "verify", file, "--trust", trust.source, *HUB,
                 "--catalog", str(cat.root)]) == Exit.PASSED  # fmt: skip

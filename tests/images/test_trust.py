"""The trust store: public keys only, every entry looked at, nothing hostile read whole."""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import ConfigError
from firmware_images.trust import TrustStore

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
NONE = serialization.NoEncryption()
LOCKED = serialization.BestAvailableEncryption(b"secret")


@cache
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem() -> bytes:
    return _key().public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@cache
def private_encodings() -> dict[str, bytes]:
    """A private key in every form a careless copy leaves on a bench."""
    key = _key()
    trad = serialization.PrivateFormat.TraditionalOpenSSL
    return {
        "pkcs8 pem": key.private_bytes(PEM, PKCS8, NONE),
        "encrypted pkcs8 pem": key.private_bytes(PEM, PKCS8, LOCKED),
        "ec pem": key.private_bytes(PEM, trad, NONE),
        "openssh": key.private_bytes(PEM, serialization.PrivateFormat.OpenSSH, NONE),
        "pkcs8 der": key.private_bytes(DER, PKCS8, NONE),
        "encrypted pkcs8 der": key.private_bytes(DER, PKCS8, LOCKED),
        "ec der": key.private_bytes(DER, trad, NONE),
        "ed25519 der": ed25519.Ed25519PrivateKey.generate().private_bytes(DER, PKCS8, NONE),
    }


def _store(tmp_path: Path) -> Path:
    folder = tmp_path / "trust"
    folder.mkdir()
    (folder / "signer.pem").write_bytes(public_pem())
    return folder


def _refused(folder: Path) -> str:
    with pytest.raises(ConfigError) as info:
        TrustStore.from_dir(folder)
    text = str(info.value)
    assert "\n" not in text
    return info.value.message


def test_public_keys_load_whatever_the_case_of_pem(tmp_path: Path) -> None:
    folder = _store(tmp_path)
    (folder / "OTHER.PEM").write_bytes(public_pem())
    (folder / "README").write_text("Public keys of the signing service.\n")
    (folder / "old").mkdir()  # not named like a key: not looked into
    store = TrustStore.from_dir(folder)
    assert [name for name, _key in store.keys] == ["OTHER.PEM", "signer.pem"]


@pytest.mark.parametrize("form", sorted(private_encodings()))
@pytest.mark.parametrize("name", ["signer.key", "x.PEM", "backup", ".hidden", "k.der"])
def test_a_private_key_under_any_name_is_refused(tmp_path: Path, form: str, name: str) -> None:
    folder = _store(tmp_path)
    (folder / name).write_bytes(private_encodings()[form])
    message = _refused(folder)
    assert message == f"{folder / name} is a private key; a trust store holds public keys only"


def test_a_readme_mentioning_a_private_key_block_is_refused(tmp_path: Path) -> None:
    folder = _store(tmp_path)
    (folder / "README").write_text("paste here:\n-----BEGIN PRIVATE KEY-----\n")
    assert "README is a private key" in _refused(folder)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "make", "want"),
    [
        ("x.pem", lambda p: p.mkdir(), "is a directory, not a file"),
        ("x.KEY", lambda p: p.mkdir(), "is a directory, not a file"),
        ("k.pem", lambda p: p.symlink_to("/dev/zero"), "(a link to /dev/zero) is a character"),
        ("notes", lambda p: p.symlink_to("/dev/zero"), "(a link to /dev/zero) is a character"),
        ("k.pem", os.mkfifo, "is a FIFO"),
        ("notes", os.mkfifo, "is a FIFO"),
        ("k.pem", lambda p: p.symlink_to(p.parent / "gone"), "No such file"),
        ("big.pem", lambda p: p.write_bytes(b"#" * (64 << 10 | 1)), "more than the 65536"),
        ("README", lambda p: p.write_bytes(b"#" * (64 << 10 | 1)), "more than the 65536"),
    ],
)
def test_special_and_oversized_entries_are_refused(
    tmp_path: Path, name: str, make: object, want: str
) -> None:
    folder = _store(tmp_path)
    make(folder / name)  # type: ignore[operator]
    message = _refused(folder)
    assert str(folder / name) in message and want in message


def test_other_keys_are_refused_as_before(tmp_path: Path) -> None:
    folder = _store(tmp_path)
    (folder / "bad.pem").write_text("not a key\n")
    assert "bad.pem is not a PEM public key" in _refused(folder)
    (folder / "bad.pem").write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert "bad.pem is not an ECDSA P-256 public key" in _refused(folder)


def test_missing_folder_or_a_file(tmp_path: Path) -> None:
    assert "does not exist" in _refused(tmp_path / "none")
    (tmp_path / "file").write_text("x")
    assert f"trust store {tmp_path / 'file'} is not a folder" in _refused(tmp_path / "file")


# -- generated trust stores: hostile entries under random names are always refused ----------

_NAME = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", "..", "signer.pem"))
_SUFFIX = st.sampled_from(["", ".pem", ".PEM", ".Pem", ".key", ".der", ".txt"])
_HOSTILE = st.sampled_from([*sorted(private_encodings()), "fifo", "zero", "key-named dir"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stem=_NAME, suffix=_SUFFIX, hostile=_HOSTILE, readme=st.booleans())
def test_generated_hostile_entries_are_refused(
    tmp_path: Path, stem: str, suffix: str, hostile: str, readme: bool
) -> None:
    root = tmp_path / "case"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    folder = _store(root)
    if readme:
        (folder / "README.md").write_text("Public keys only.\n")
    name = stem + suffix
    path = folder / name
    if hostile == "fifo":
        os.mkfifo(path)
    elif hostile == "zero":
        path.symlink_to("/dev/zero")
    elif hostile == "key-named dir":
        path = folder / (stem + ".pem")
        path.mkdir()
    else:
        path.write_bytes(private_encodings()[hostile])
    message = _refused(folder)
    assert message.startswith(f"{path} ") or message.startswith(f"trust store file {path} ")

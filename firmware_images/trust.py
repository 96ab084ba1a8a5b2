"""Signature checking against a trust store: a folder of PEM public keys.

Only public keys belong here; a private key found in the trust store is refused, so a
signing key can never end up on a bench by being dropped in the wrong folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.errors import ConfigError
from firmware_images.files import KEY_FILE_LIMIT, read_regular_file
from firmware_images.model import ParsedImage, SigStatus
from firmware_images.zigbee import ecdsa_p256_verify

_VERIFIABLE = {"ecdsa-p256-sha256"}
#: Names of key and certificate files (compared in lower case): such an entry must be a
#: readable regular file, even when it is not one the store loads.
KEY_SUFFIXES = (".pem", ".key", ".der", ".crt", ".cer", ".pub", ".p8", ".pk8", ".p12", ".pfx")
#: Text that only private keys carry: every PEM private key label ("PRIVATE KEY",
#: "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"...) and PuTTY's.
_PRIVATE_MARKERS = (b"PRIVATE KEY", b"PuTTY-User-Key-File")
_PRIVATE_HINT = "remove it from the station and keep it with the signing service"


def is_private_key(data: bytes) -> bool:
    """Whether ``data`` holds a private key, in PEM (any label) or DER (PKCS#8 or
    traditional, encrypted or not).

    A DER private key is one that cryptography loads without a password, or refuses only
    for want of one (TypeError), or recognises but cannot use (UnsupportedAlgorithm).
    """
    if any(marker in data for marker in _PRIVATE_MARKERS):
        return True
    try:
        serialization.load_der_private_key(data, None)
    except (TypeError, UnsupportedAlgorithm):
        return True
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TrustStore:
    """Named public keys that may sign images."""

    keys: tuple[tuple[str, ec.EllipticCurvePublicKey], ...]
    source: str = ""

    @classmethod
    def from_dir(cls, folder: str | Path) -> TrustStore:
        """Load every ``*.pem`` in ``folder`` (any case) as a public key.

        Every entry of the folder is looked at, hidden ones too, whatever its name: each
        file is read (capped at :data:`~firmware_images.files.KEY_FILE_LIMIT`, so a link
        to ``/dev/zero`` or a FIFO is refused, not read) and refused if it holds a private
        key (:func:`is_private_key`). Other files (a README, a ``.der`` public key) may
        stay and are not loaded. A directory named like a key (``x.pem``) is refused;
        other directories are not looked into, since no key is loaded from them.

        Raises:
            ConfigError: missing folder; a private key anywhere; an entry that is not a
                regular file (FIFO, device, socket, dangling link, a directory named like
                a key), or larger than the cap; a ``*.pem`` that is not a P-256 public key.
                One line, naming the file.
        """
        root = Path(folder)
        if not root.exists():
            raise ConfigError(
                f"trust store {root} does not exist",
                hint="create it and put the signers' public keys (PEM) in it",
            )
        if not root.is_dir():
            raise ConfigError(f"trust store {root} is not a folder")
        try:
            names = sorted(os.listdir(root))
        except OSError as exc:
            raise ConfigError(f"cannot list trust store {root}: {exc.strerror}") from exc
        keys = []
        for name in names:
            path = root / name
            if path.is_dir() and not name.lower().endswith(KEY_SUFFIXES):
                continue
            data = read_regular_file(
                path, limit=KEY_FILE_LIMIT, what="trust store file", error=ConfigError
            )
            if is_private_key(data):
                raise ConfigError(
                    f"{path} is a private key; a trust store holds public keys only",
                    hint=_PRIVATE_HINT,
                )
            if name.lower().endswith(".pem"):
                keys.append((name, _public_key(path, data)))
        return cls(tuple(keys), str(root))

    def check(self, image: ParsedImage) -> ParsedImage:
        """A copy of ``image`` whose signature status says whether a trusted key signed it."""
        sig = image.signature
        if sig is None or sig.status in (SigStatus.UNSUPPORTED,):
            return image
        if sig.scheme not in _VERIFIABLE:
            return image.with_signature_status(SigStatus.UNSUPPORTED)
        for name, key in self.keys:
            if ecdsa_p256_verify(key, sig.signed_data, sig.value):
                return image.with_signature_status(SigStatus.VALID, name)
        return image.with_signature_status(SigStatus.INVALID)


def signature_refusal(
    image: ParsedImage, *, allow_unsigned: bool = False, allow_invalid: bool = False
) -> str | None:
    """Why ``image`` may not be flashed on signature grounds, or None if it may.

    Two separate, explicit overrides, which the caller must record when used:
    ``allow_unsigned`` (no signature, or one we cannot check) and ``allow_invalid`` (a
    signature that fails: tampered, or an unknown signer).
    """
    status = image.signature_status
    if status is SigStatus.VALID:
        return None
    if status is SigStatus.INVALID and allow_invalid:
        return None
    if status is not SigStatus.INVALID and allow_unsigned:
        return None
    reasons = {
        SigStatus.UNSIGNED: "the image is not signed",
        SigStatus.UNCHECKED: "the signature has not been checked against a trust store",
        SigStatus.INVALID: "the signature does not verify with any trusted key (tampered, "
        "or signed by an unknown party)",
        SigStatus.UNSUPPORTED: f"its signature scheme "
        f"({image.signature.scheme if image.signature else '?'}) cannot be verified here",
    }
    return reasons[status]


def signature_hint(image: ParsedImage, trust: TrustStore | None) -> str:
    """What to do about a :func:`signature_refusal`: the fix for its actual cause.

    An unknown signer is fixed in the trust store, not by the unsigned override (which does
    not apply to a signature that fails), so its hint names the store and the keys it holds
    (a GBCS signature carries no signer id to name).
    """
    status = image.signature_status
    if status is SigStatus.INVALID:
        if trust is None:
            return "give --trust DIR, the folder that holds the signer's public key (PEM)"
        held = ", ".join(name for name, _ in trust.keys) or "no keys"
        return (
            f"add the signer's public key (PEM) to the trust store {trust.source} (it holds "
            f"{held}), or give --trust DIR naming the folder that has it; if the image was "
            "altered, get it again from its source"
        )
    if status is SigStatus.UNCHECKED:
        return "give --trust DIR, a folder of the signers' public keys (PEM)"
    return (
        "use a signed image from the catalogue; an unsigned one needs an explicit, "
        "recorded override (--allow-unsigned)"
    )


def _public_key(path: Path, data: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{path} is not an ECDSA P-256 public key")
    return key

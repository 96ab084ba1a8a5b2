"""Signature checking against a trust store: a folder of PEM public keys.

Only public keys belong here; a private key found in the trust store is refused, so a
signing key can never end up on a bench by being dropped in the wrong folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers.errors import ConfigError
from firmware_images.model import ParsedImage, SigStatus
from firmware_images.zigbee import ecdsa_p256_verify

_VERIFIABLE = {"ecdsa-p256-sha256"}


@dataclass(frozen=True)
class TrustStore:
    """Named public keys that may sign images."""

    keys: tuple[tuple[str, ec.EllipticCurvePublicKey], ...]
    source: str = ""

    @classmethod
    def from_dir(cls, folder: str | Path) -> TrustStore:
        """Load every ``*.pem`` in ``folder``.

        Raises:
            ConfigError: missing folder, unreadable or non-P-256 key, or a private key.
        """
        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(
                f"trust store {root} does not exist",
                hint="create it and put the signers' public keys (PEM) in it",
            )
        keys = []
        for pem in sorted(root.glob("*.pem")):
            text = pem.read_bytes()
            if b"PRIVATE KEY" in text:
                raise ConfigError(
                    f"{pem} is a private key; a trust store holds public keys only",
                    hint="remove it from the station and keep it with the signing service",
                )
            try:
                key = serialization.load_pem_public_key(text)
            except ValueError as exc:
                raise ConfigError(f"{pem} is not a PEM public key: {exc}") from exc
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise ConfigError(f"{pem} is not an ECDSA P-256 public key")
            keys.append((pem.name, key))
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

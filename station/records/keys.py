"""The station's signing key, which anchors the audit chain outside the database.

Anyone who can write to the database can rewrite the audit chain and recompute every hash
after an edit: a hash chain alone proves nothing against them. So when a batch closes the
station signs the chain's head (sequence number and hash) with an Ed25519 key that lives in
a file, never in the database, and prints the signed head into every report. An edit behind
a signed head breaks the signature's hash; a forged head needs the private key.

Files (folder ``station-data/keys`` by default, ``$STATION_KEYS`` or ``--keys``):

- ``<station>.key``: the private key (PKCS#8 PEM, mode 0600), made at the station's first
  start; it never leaves the station PC;
- ``<station>.pub``: its public key (PEM). ``station audit verify`` checks signed heads
  against every ``*.pub`` in the folder, so a warehouse gathers its stations' ``.pub``
  files in one folder to verify any database or report.

``<station>`` is the station id when it is a plain file name, else a hash of it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from drivers.errors import ConfigError
from firmware_images.files import read_regular_file

__all__ = ["KeyRing", "StationKey", "head_message", "key_stem"]

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAX_KEY_FILE: Final = 16 * 1024


def key_stem(station_id: str) -> str:
    """The file name (without suffix) of a station's key files."""
    if _SAFE.fullmatch(station_id):
        return station_id
    return "station-" + hashlib.sha256(station_id.encode("utf-8")).hexdigest()[:16]


def head_message(station_id: str, seq: int, head_hash: str) -> bytes:
    """The bytes a signed head signs: a fixed label, the station, the entry and its hash."""
    return f"chub-station audit head\n{station_id}\n{seq}\n{head_hash}\n".encode()


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_small(path: Path, what: str) -> bytes:
    """A key file's bytes: a regular file of a sane size (never a device or a FIFO)."""
    return read_regular_file(path, limit=_MAX_KEY_FILE, what=what, error=ConfigError)


@dataclass(frozen=True)
class StationKey:
    """A station's private signing key (Ed25519)."""

    station_id: str
    private: Ed25519PrivateKey = field(repr=False)

    @property
    def key_id(self) -> str:
        """The first 16 hex digits of SHA-256 of the raw public key: names the key."""
        return _key_id(self.private.public_key())

    def sign_head(self, seq: int, head_hash: str) -> str:
        """The hex signature of the chain head ``seq``/``head_hash``."""
        return self.private.sign(head_message(self.station_id, seq, head_hash)).hex()

    @classmethod
    def load_or_create(cls, folder: str | Path, station_id: str) -> StationKey:
        """The station's key from ``folder``, made (with its ``.pub``) if there is none.

        Raises:
            ConfigError: the key file is unreadable, not an Ed25519 private key, or readable
                by other users.
        """
        root = Path(folder)
        stem = key_stem(station_id)
        private_path, public_path = root / f"{stem}.key", root / f"{stem}.pub"
        if not private_path.exists():
            try:
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
                key = Ed25519PrivateKey.generate()
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                public_path.write_bytes(
                    key.public_key().public_bytes(
                        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                    )
                )
            except FileExistsError:
                pass  # another process of this station made it first: use theirs
            except OSError as exc:
                raise ConfigError(
                    f"cannot make the station key in {root}: {exc.strerror or exc}"
                ) from exc
        if private_path.stat().st_mode & 0o077:
            raise ConfigError(
                f"the station key {private_path} is readable by other users",
                hint=f"chmod 600 {private_path}",
            )
        try:
            key_obj = serialization.load_pem_private_key(
                _read_small(private_path, "station key"), password=None
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{private_path} is not a usable private key: {exc}") from exc
        if not isinstance(key_obj, Ed25519PrivateKey):
            raise ConfigError(f"{private_path} is not an Ed25519 private key")
        if not public_path.exists():
            public_path.write_bytes(
                key_obj.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return cls(station_id, key_obj)


@dataclass(frozen=True)
class KeyRing:
    """Station public keys by key id, to check signed heads (a folder of ``*.pub``)."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_dir(cls, folder: str | Path) -> KeyRing:
        """Every ``*.pub`` in ``folder`` (an absent folder is an empty ring).

        Raises:
            ConfigError: a ``.pub`` file that is not an Ed25519 public key.
        """
        root = Path(folder)
        keys: dict[str, Ed25519PublicKey] = {}
        if root.is_dir():
            for path in sorted(root.glob("*.pub")):
                try:
                    key = serialization.load_pem_public_key(_read_small(path, "public key"))
                except ValueError as exc:
                    raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
                if not isinstance(key, Ed25519PublicKey):
                    raise ConfigError(f"{path} is not an Ed25519 public key")
                keys[_key_id(key)] = key
        return cls(keys, str(root))

    def problem(
        self, key_id: str, station_id: str, seq: int, head_hash: str, signature: str
    ) -> str | None:
        """Why this signed head does not verify (None: it does)."""
        key = self.keys.get(key_id)
        if key is None:
            return (
                f"signed by key {key_id} (station {station_id}), which is not among the "
                f"public keys in {self.source or 'the key folder'}"
            )
        try:
            key.verify(bytes.fromhex(signature), head_message(station_id, seq, head_hash))
        except (InvalidSignature, ValueError):
            return f"its signature does not verify with station {station_id}'s key {key_id}"
        return None

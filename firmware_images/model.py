"""The parsed-image value every container parser returns, and the error parsers raise.

A parsed image is immutable: header fields, payload(s) with load addresses, hashes, the
bytes a signature covers and the signature itself. Whether a signature is *good* is decided
against a trust store (:mod:`firmware_images.trust`), not by the parser, so a parser never
needs keys.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from drivers.crc import crc32
from drivers.errors import ImageError
from firmware_images.descriptor import AppDescriptor, check_payload

if TYPE_CHECKING:
    from firmware_images.identity import Identity


class ImageFormatError(ImageError):
    """The bytes are not a valid container of the kind being parsed.

    Attributes:
        offset: where in the file the problem was found, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None, hint: str | None = None):
        where = f" at offset {offset} (0x{offset:X})" if offset is not None else ""
        super().__init__(message + where, hint=hint)
        self.offset = offset


class SigStatus(StrEnum):
    """What is known about an image's signature."""

    UNSIGNED = "unsigned"  # the container carries no signature
    UNCHECKED = "unchecked"  # signed, not yet checked against a trust store
    VALID = "valid"  # verified with a trusted key
    INVALID = "invalid"  # does not verify with any trusted key
    UNSUPPORTED = "unsupported"  # a signature scheme we do not verify (e.g. Zigbee ECQV)


@dataclass(frozen=True)
class Segment:
    """One payload and where it loads (None: the hub profile decides, e.g. GBCS images)."""

    address: int | None
    data: bytes
    name: str = "payload"


@dataclass(frozen=True)
class Signature:
    """A signature found in a container.

    Attributes:
        scheme: e.g. ``"ecdsa-p256-sha256"`` (GBCS), ``"zigbee-ecqv-suite1"``.
        value: the raw signature (GBCS: r||s, 64 bytes).
        signed_data: the exact bytes the signature covers.
        status: set by the trust store after checking.
        signer: which trusted key verified it (file name), when valid.
    """

    scheme: str
    value: bytes
    signed_data: bytes = field(repr=False)
    status: SigStatus = SigStatus.UNCHECKED
    signer: str | None = None


@dataclass(frozen=True)
class ParsedImage:
    """A firmware file, parsed and checked for internal consistency.

    Attributes:
        path: where it came from ("" for in-memory data).
        container: ``gbcs-ota``, ``zigbee-ota``, ``gbl``, ``dfu``, ``dfuse``, ``ihex``,
            ``srec`` or ``raw``.
        fields: every header field by name (ints, strings or bytes), for inspect/JSON.
        manufacturer_code, image_type, file_version, hw_min, hw_max: the identity of the
            image as its container's header states it (None when it has no such field).
            **Untrusted input**: an OTA header is outside the GBCS signature, so these can be
            edited without breaking it. Never act on them; act on :attr:`trusted_identity`,
            which they are cross-checked against (:mod:`firmware_images.identity`).
        segments: the payload(s); ``segments[0]`` is the application payload.
        sha256: hex SHA-256 of the application payload (GBCS: the Manufacturer Image Hash).
        crc32: CRC-32 of the application payload.
        signature: the signature, or None when the container has none.
        descriptor: the payload's application descriptor when it carries a valid one.
        problems: non-fatal findings (a vendor prefix, a wrong total-size field, trailing
            bytes), each a sentence.
        raw: the file's bytes (set by :func:`firmware_images.loader.parse_bytes`).
    """

    path: str
    container: str
    fields: Mapping[str, Any]
    segments: tuple[Segment, ...]
    manufacturer_code: int | None = None
    image_type: int | None = None
    file_version: int | None = None
    hw_min: int | None = None
    hw_max: int | None = None
    signature: Signature | None = None
    problems: tuple[str, ...] = ()
    sha256: str = ""
    crc32: int = 0
    descriptor: AppDescriptor | None = None
    #: The whole file as read, for protocols that upload the container itself (GBL).
    raw: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ImageFormatError(f"{self.container} image holds no payload")
        payload = self.segments[0].data
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        object.__setattr__(self, "sha256", hashlib.sha256(payload).hexdigest())
        object.__setattr__(self, "crc32", crc32(payload))
        if self.descriptor is None:
            # Foreign payloads (vendor OTA files) carry no descriptor of ours: that is fine.
            with contextlib.suppress(ImageError):
                object.__setattr__(self, "descriptor", check_payload(payload))

    @property
    def payload(self) -> bytes:
        """The application payload (GBCS: the Manufacturer Image)."""
        return self.segments[0].data

    @property
    def signature_status(self) -> SigStatus:
        """The signature's status, UNSIGNED when there is none."""
        return SigStatus.UNSIGNED if self.signature is None else self.signature.status

    @property
    def trusted_identity(self) -> Identity | None:
        """The identity the station acts on: the payload's application descriptor.

        For a GBCS image it is inside the signed Manufacturer Image (for a wrapped GBL, in
        the GBL's application), unlike the header fields above. None when the payload
        carries no descriptor. See :func:`firmware_images.identity.trusted_identity`.
        """
        from firmware_images.identity import trusted_identity

        return trusted_identity(self)

    def with_signature_status(self, status: SigStatus, signer: str | None = None) -> ParsedImage:
        """A copy whose signature carries a checked status."""
        if self.signature is None:
            return self
        return replace(self, signature=replace(self.signature, status=status, signer=signer))

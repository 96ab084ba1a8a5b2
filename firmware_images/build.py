"""Build application payloads for demos and tests (no private keys here: nothing is signed).

A payload looks like a Cortex-M application: an initial stack pointer and reset vector, the
application descriptor at ``DESCRIPTOR_OFFSET``, then deterministic filler standing in for
code. Same arguments, same bytes, so demo images and simulated hubs agree across processes.
"""

from __future__ import annotations

import hashlib
import random
import struct

from firmware_images.descriptor import (
    DESCRIPTOR_OFFSET,
    DESCRIPTOR_SIZE,
    parse_descriptor,
    seal_payload,
)

# The demo hub model that the simulated AN3155 hubs and the built-in profile share.
DEMO_MANUFACTURER = 0x1234
DEMO_IMAGE_TYPE = 0x0401
DEMO_HW_MIN = 1
DEMO_HW_MAX = 3
DEMO_LOAD_ADDRESS = 0x0800_0000
DEMO_STACK_TOP = 0x2002_0000


def _filler(seed: bytes, size: int) -> bytes:
    """Deterministic pseudo-code bytes (SHAKE-256 stream) of ``size`` bytes."""
    return hashlib.shake_256(seed).digest(size) if size else b""


def demo_payload(
    version: int,
    *,
    size: int = 64 * 1024,
    load_address: int = DEMO_LOAD_ADDRESS,
    manufacturer_code: int = DEMO_MANUFACTURER,
    image_type: int = DEMO_IMAGE_TYPE,
    hw_min: int = DEMO_HW_MIN,
    hw_max: int = DEMO_HW_MAX,
) -> bytes:
    """A sealed application payload of ``size`` bytes (a multiple of 4) for ``version``."""
    minimum = DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE
    if size < minimum or size % 4:
        raise ValueError(f"payload size must be a multiple of 4 and at least {minimum} bytes")
    vectors = struct.pack("<II", DEMO_STACK_TOP, (load_address + 0x400) | 1)
    seed = f"demo-app/{manufacturer_code:04x}/{image_type:04x}/{version:08x}".encode()
    body = vectors + _filler(seed, size - len(vectors))
    return seal_payload(
        body,
        manufacturer_code=manufacturer_code,
        image_type=image_type,
        firmware_version=version,
        hw_min=hw_min,
        hw_max=hw_max,
    )


def demo_release(
    base: bytes, version: int, *, changed: int, page_size: int, seed: int = 0
) -> bytes:
    """The next release of ``base`` as real releases differ from their last: ``changed``
    pages of ``page_size`` bytes differ, the descriptor's page (a new version and CRC) and a
    few clusters of 1-4 code pages (the functions that changed), the rest byte for byte the
    same. ``changed`` 0 gives ``base`` itself. Same arguments, same bytes.

    Raises:
        ValueError: ``changed`` is more than the pages ``base`` covers.
    """
    pages = -(-len(base) // page_size)
    if not 0 <= changed <= pages:
        raise ValueError(f"{changed} changed pages: {len(base)} bytes cover {pages}")
    if changed == 0:
        return base
    head = parse_descriptor(base[: DESCRIPTOR_OFFSET + DESCRIPTOR_SIZE])
    rng = random.Random(f"demo-release/{seed}/{changed}/{pages}")
    code = set(range(1, pages))
    chosen: set[int] = set()
    while len(chosen) < changed - 1:
        need = changed - 1 - len(chosen)
        if need * 2 > len(code - chosen):
            chosen.update(sorted(code - chosen)[:need])  # most of it changed: take in order
            break
        first = rng.randrange(1, pages)
        chosen.update(p for p in range(first, first + rng.randint(1, min(4, need))) if p in code)
    body = bytearray(base)
    for page in sorted(chosen):
        start = page * page_size
        end = min(start + page_size, len(body))
        at = rng.randrange(start, end - 3) & ~3
        span = min(64, end - at)
        # XOR with non-zero bytes: every byte of the span really changes.
        patch = bytes(b ^ rng.randrange(1, 256) for b in body[at : at + span])
        body[at : at + span] = patch
    return seal_payload(
        body,
        manufacturer_code=head.manufacturer_code,
        image_type=head.image_type,
        firmware_version=version,
        hw_min=head.hw_min,
        hw_max=head.hw_max,
    )

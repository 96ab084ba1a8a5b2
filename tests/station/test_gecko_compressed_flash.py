"""`station flash` of compressed GBL files (LZ4 / LZMA) on simulated Gecko hubs.

The station sends the file as it is (the bootloader decompresses it); the pass is checked
as for a plain GBL: the new application runs and reports the image's version. A hub
whose bootloader lacks the decompressor fails in the write phase with the bootloader's
own error, never a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_images.loader import load_image
from sim.gecko import demo_app, demo_gbl
from sim.pty import SimHub
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile

from ..conftest import NEW, OLD
from .test_gecko_flash import assert_honest

PROFILE = load_profile("demo-gecko")
UNSIGNED_OK = Policy(allow_unsigned=True)


def compressed_image(tmp_path: Path, method: str) -> Path:
    path = tmp_path / f"app-{method}.gbl"
    path.write_bytes(demo_gbl(NEW, size=16 * 1024, compression=method, compressible=True))
    return path


@pytest.mark.parametrize("method", ["lz4", "lzma"])
def test_a_compressed_gbl_flashes_end_to_end(
    start_hub: Callable[..., SimHub], tmp_path: Path, method: str
) -> None:
    path = compressed_image(tmp_path, method)
    image = load_image(path, default_address=PROFILE.app_address)
    assert path.stat().st_size < 16 * 1024 * 0.65  # what goes over the wire
    assert image.parsed.segments[0].data == demo_app(NEW, size=16 * 1024, compressible=True)
    hub = start_hub(protocol="gecko")
    out = flash_hub(hub.port, PROFILE, image, policy=UNSIGNED_OK)
    assert out.result is Result.PASSED, out.message
    assert (out.version_before, out.version_after) == (f"0x{OLD:08X}", f"0x{NEW:08X}")
    assert out.bytes_written == len(image.data) == 16 * 1024  # what lands in flash
    assert_honest(out, hub)


def test_a_bootloader_without_the_decompressor_fails_the_job_with_its_error(
    start_hub: Callable[..., SimHub], tmp_path: Path
) -> None:
    image = load_image(compressed_image(tmp_path, "lzma"), default_address=PROFILE.app_address)
    hub = start_hub(protocol="gecko", decompressors=("lz4",))
    out = flash_hub(hub.port, PROFILE, image, policy=UNSIGNED_OK)
    assert out.result is not Result.PASSED
    assert "0x44" in (out.message or ""), out.message
    assert_honest(out, hub)

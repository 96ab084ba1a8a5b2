"""Against a real hub on a bench. Deselected by default; run with, for example:

pytest -m hardware --hub-port /dev/ttyUSB0 --hub-profile my-hub --hub-image app.hex
"""

from __future__ import annotations

import pytest

from firmware_images.loader import load_image
from station.flash import Result, flash_hub
from station.profiles import load_profile

pytestmark = pytest.mark.hardware


def test_real_hub_reflash_is_confirmed(request: pytest.FixtureRequest) -> None:
    port = request.config.getoption("--hub-port")
    image_path = request.config.getoption("--hub-image")
    if not port or not image_path:
        pytest.skip("needs --hub-port and --hub-image")
    profile = load_profile(request.config.getoption("--hub-profile"))
    image = load_image(image_path)
    out = flash_hub(port, profile, image, force=True)
    assert out.result is Result.PASSED, f"{out.phase}: {out.message}"
    assert out.version_after == out.image_version

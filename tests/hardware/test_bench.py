"""Against a real hub on a bench. Deselected by default; run with, for example:

pytest -m hardware --hub-port /dev/ttyUSB0 --hub-profile my-hub \\
        --hub-image app.zigbee --hub-trust trust/
"""

from __future__ import annotations

import pytest

from firmware_images.loader import load_image
from firmware_images.trust import TrustStore
from station.flash import Policy, Result, flash_hub
from station.profiles import load_profile

pytestmark = pytest.mark.hardware


def test_real_hub_reflash_is_confirmed(request: pytest.FixtureRequest) -> None:
    port = request.config.getoption("--hub-port")
    image_path = request.config.getoption("--hub-image")
    if not port or not image_path:
        pytest.skip("needs --hub-port and --hub-image")
    profile = load_profile(request.config.getoption("--hub-profile"))
    trust = request.config.getoption("--hub-trust")
    image = load_image(image_path, default_address=profile.app_address)
    policy = Policy(trust=TrustStore.from_dir(trust) if trust else None, force=True)
    out = flash_hub(port, profile, image, policy=policy)
    assert out.result is Result.PASSED, f"{out.phase}: {out.message}"
    assert out.version_after == out.image_version

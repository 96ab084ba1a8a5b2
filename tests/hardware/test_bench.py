"""Against a real hub on a bench. Deselected by default; run with, for example:

pytest -m hardware --hub-port /dev/ttyUSB0 --hub-profile my-hub \\
        --hub-image app.zigbee --hub-trust trust/

With a profile that has a ``[lines]`` section the fixture's reset and boot wiring is
checked too (docs/hardware.md); ``--hub-port`` may be ``rfc2217://host:port``.
"""

from __future__ import annotations

import pytest

from firmware_images.loader import load_image
from firmware_images.trust import TrustStore
from sim import urlhandler
from station.flash import FlashOutcome, Policy, Result, flash_hub
from station.profiles import Profile, load_profile
from station.protocols import open_session

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


def _lines_profile(request: pytest.FixtureRequest) -> tuple[str, Profile]:
    port = request.config.getoption("--hub-port")
    if not port:
        pytest.skip("needs --hub-port")
    urlhandler.register()  # a sim:// port checks this test itself (docs/hardware.md)
    profile = load_profile(request.config.getoption("--hub-profile"))
    if profile.lines is None:
        pytest.skip(f"{profile.name} has no [lines] section (the fixture drives no pins)")
    return port, profile


@pytest.mark.parametrize("round_", range(5))
def test_lines_enter_the_bootloader_and_start_the_application(
    request: pytest.FixtureRequest, round_: int
) -> None:
    """The fixture's wiring and sequences, five times over: entry reaches the bootloader at
    the first attempt (a later one is reported, so a marginal reset shows), the exit
    starts the application, which then answers with its version."""
    port, profile = _lines_profile(request)
    session = open_session(port, profile)
    try:
        out = FlashOutcome(port=port, profile=profile.name)
        session.connect(out)
        assert out.found_in == "bootloader"
        assert not [n for n in session.notes if "entry sequence" in n], session.notes
        session.start_application()
        running, _ = session.confirm(profile.boot_timeout_s)
        assert running is not None, "the application did not answer after the exit sequence"
    finally:
        session.close()

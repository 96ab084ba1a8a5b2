"""The keys of a profile's ``[smp]`` section (read by :mod:`station.sessions.smp`)."""

from __future__ import annotations

from station.config import Spec

SECTION: dict[str, Spec] = {
    "receive_size": Spec(int, 64, 65535),
    "line_max": Spec(int, 8, 4096),
    "write_align": Spec(int, 1, 256),
    "upload_image": Spec(int, 0, 2),
    "erase_timeout_s": Spec(float, 0.01, 600),
    "upload_attempts": Spec(int, 1, 100),
    "identify_via_application": Spec(bool),
    "upgrade_only": Spec(bool),
}

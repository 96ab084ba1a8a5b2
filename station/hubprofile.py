"""The hub profile value: what the station knows about one hub model.

Loading and checking a profile from its TOML file is :mod:`station.profiles`; this module
holds only the value, so that the protocol plug-ins (:mod:`station.protocols`), which
check their own part of a profile, sit between the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.lines import LinePlan


@dataclass(frozen=True)
class Profile:
    """Everything the station needs to know about one hub model."""

    name: str
    description: str
    protocol: str
    baud: int
    parity: str
    flash_start: int
    flash_size: int
    page_size: int
    app_address: int
    identity_address: int | None  # where the bootloader can read EUI-64 and hardware version
    product_id: int | None  # what the bootloader reports as its chip/product ID
    manufacturer_code: int
    image_type: int
    entry: str
    pipeline_writes: bool
    retries: int
    verify: str
    boot_timeout_s: float
    resync_timeout_s: float
    ack_timeout_s: float
    #: Protocol-specific settings (the whole TOML table), read by that protocol's session.
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: How the application is started after a write: its bootloader's command, or a
    #: reset by modem lines (``lines``).
    exit: str = "command"
    #: The modem-line fixture (``[lines]``), when the profile has one.
    lines: LinePlan | None = None

    @property
    def flash_end(self) -> int:
        """First address after the main flash."""
        return self.flash_start + self.flash_size

    def pages_for(self, start: int, end: int) -> list[int]:
        """Page numbers covering [start, end)."""
        first = (start - self.flash_start) // self.page_size
        last = (end - 1 - self.flash_start) // self.page_size
        return list(range(first, last + 1))

    def page_start(self, address: int) -> int:
        """Start address of the page holding ``address``."""
        return address - (address - self.flash_start) % self.page_size

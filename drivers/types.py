"""Small value types shared by the protocol drivers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where in a re-flash something happened; names errors and progress."""

    CONNECT = "connect"
    IDENTIFY = "identify"
    PLAN = "plan"
    ERASE = "erase"
    WRITE = "write"
    VERIFY = "verify"
    BOOT = "boot"
    CONFIRM = "confirm"


#: Progress callback: (phase, bytes done, bytes total, note). Drivers never print.
ProgressFn = Callable[[Phase, int, int, str], None]


def no_progress(phase: Phase, done: int, total: int, note: str) -> None:
    """Default progress callback that ignores everything."""


@dataclass(frozen=True)
class BootloaderInfo:
    """What an AN3155 bootloader says about itself."""

    version: int
    commands: frozenset[int]
    product_id: int

    @property
    def version_text(self) -> str:
        """Version as ST writes it (0x31 -> "3.1")."""
        return f"{self.version >> 4}.{self.version & 0xF}"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of verifying written flash.

    Attributes:
        ok: the flash holds exactly the written bytes.
        method: ``"device-crc"`` (the device computed a CRC, nothing read back) or
            ``"readback"`` (every byte read back and compared).
        detail: e.g. both CRCs, or the first differing address.
    """

    ok: bool
    method: str
    detail: str

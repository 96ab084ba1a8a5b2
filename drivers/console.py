"""The hub application's line console: version, identity and the way into the bootloader.

Requests are ASCII lines (``VER?``, ``EUI?``, ``HW?``, ``BOOT``); each answer is one line
starting with the request's keyword (``VER 0x01020304``). Lines the application prints on its
own (its start banner) are skipped while waiting for an answer.
"""

from __future__ import annotations

import re
import time

from drivers.errors import BootError, ProtocolError
from drivers.transport.serial import SerialLink
from drivers.types import Phase

_BANNER = re.compile(rb"^CHUB APP (0x[0-9A-Fa-f]{8}) READY$")
_EUI = re.compile(r"^[0-9A-F]{2}(-[0-9A-F]{2}){7}$")


class AppConsole:
    """Client of the application console on an open link."""

    def __init__(self, link: SerialLink, *, answer_timeout_s: float = 0.5) -> None:
        self.link = link
        self.answer_timeout_s = answer_timeout_s

    def ask(self, request: str, keyword: str, timeout_s: float | None = None) -> str | None:
        """Send ``request`` and return the text after ``keyword``; None if no answer."""
        wait = self.answer_timeout_s if timeout_s is None else timeout_s
        self.link.write(request.encode("ascii") + b"\r\n")
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            line = self.link.read_line(left)
            if line is None:
                return None
            text = line.decode("ascii", "replace").strip()
            if text.startswith("ERR"):
                raise ProtocolError(f"application refused {request!r}: {text}", port=self.link.url)
            if text.startswith(keyword + " "):
                return text[len(keyword) + 1 :].strip()
        return None

    def wait_banner(self, timeout_s: float) -> int | None:
        """Wait for the start banner; the version it announces, or None if none came."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            line = self.link.read_line(left)
            if line is None:
                return None
            m = _BANNER.match(line.strip())
            if m:
                return int(m.group(1), 16)
        return None

    def version(self, timeout_s: float | None = None) -> int | None:
        """The running firmware version, or None if the application does not answer."""
        text = self.ask("VER?", "VER", timeout_s)
        if text is None:
            return None
        try:
            return int(text, 16)
        except ValueError as exc:
            raise ProtocolError(
                f"application gave an unreadable version {text!r}", port=self.link.url
            ) from exc

    def eui64(self) -> str:
        """The hub's EUI-64 as ``00-DB-12-34-56-78-90-A0``."""
        text = self.ask("EUI?", "EUI")
        if text is None or not _EUI.match(text.upper()):
            raise BootError(
                f"application gave no usable EUI-64 ({text!r})",
                port=self.link.url,
                phase=Phase.CONFIRM,
            )
        return text.upper()

    def hw_version(self) -> int:
        """The hub's hardware version."""
        text = self.ask("HW?", "HW")
        try:
            return int(text or "", 0)
        except ValueError as exc:
            raise BootError(
                f"application gave no usable hardware version ({text!r})",
                port=self.link.url,
                phase=Phase.IDENTIFY,
            ) from exc

    def enter_bootloader(self) -> None:
        """Ask the application to restart into its bootloader."""
        if self.ask("BOOT", "OK") is None:
            raise BootError(
                "application did not acknowledge BOOT",
                port=self.link.url,
                phase=Phase.CONNECT,
                hint="strap the hub's boot pin or check the profile's bootloader entry",
            )

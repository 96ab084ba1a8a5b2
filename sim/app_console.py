"""The demo application's line console, shared by every simulated hub model.

Requests are ASCII lines ended by CR or LF; bytes outside printable ASCII are ignored.
``VER?``, ``EUI?`` and ``HW?`` are answered from the running application and the hub's
identity; ``BOOT`` is acknowledged and the model then enters its bootloader its own way.
"""

from __future__ import annotations

from firmware_images.descriptor import format_version

LINE_MAX = 128  # longer input is cut, as a small firmware line buffer would


def banner(version: int) -> bytes:
    """What the application prints when it starts."""
    return f"CHUB APP {format_version(version)} READY\r\n".encode()


class LineConsole:
    """Collects console bytes into lines and answers them (pure: no I/O, no time)."""

    def __init__(self) -> None:
        self._line = bytearray()

    def clear(self) -> None:
        """Forget a half-typed line (the application stopped)."""
        self._line.clear()

    def feed(self, byte: int) -> str | None:
        """Take one byte; the completed line when it ends one, else None."""
        if byte in (0x0D, 0x0A):
            if not self._line:
                return None
            line = self._line.decode("ascii").strip()
            self._line.clear()
            return line
        if 0x20 <= byte < 0x7F and len(self._line) < LINE_MAX:
            self._line.append(byte)
        return None

    @staticmethod
    def answer(line: str, *, version: int, eui64: str, hw_version: int) -> tuple[bytes, bool]:
        """The reply to a line, and whether it asked to enter the bootloader."""
        if line == "VER?":
            return f"VER {format_version(version)}\r\n".encode(), False
        if line == "EUI?":
            return f"EUI {eui64}\r\n".encode(), False
        if line == "HW?":
            return f"HW {hw_version}\r\n".encode(), False
        if line == "BOOT":
            return b"OK BOOT\r\n", True
        return b"ERR unknown command\r\n", False

"""EXLINE client: one driver object on one open serial link (imports only ``drivers``)."""

from __future__ import annotations

import zlib

from chub_example.protocol import BLOCK, READY
from drivers.errors import NackError, NoSync, ProtocolError
from drivers.transport.serial import SerialLink
from drivers.types import Phase, ProgressFn, VerifyResult, no_progress


class ExlineDriver:
    """Speaks EXLINE on ``link``; every command names its phase in its errors."""

    PROTOCOL = "exline"

    def __init__(self, link: SerialLink, *, answer_timeout_s: float = 1.0) -> None:
        self.link = link
        self.answer_timeout_s = answer_timeout_s

    def command(self, line: str, phase: Phase) -> str:
        """Send one line; the answer line (``ERR ...`` raises)."""
        self.link.write(line.encode("ascii") + b"\n")
        answer = self.link.read_line(self.answer_timeout_s)
        while answer is not None and (answer == READY or answer.startswith(b"CHUB APP ")):
            # a greeting of a (re)started bootloader or application, not an answer
            answer = self.link.read_line(self.answer_timeout_s)
        if answer is None:
            raise ProtocolError(f"{line.split()[0]}: no answer", port=self.link.url, phase=phase)
        text = answer.decode("ascii", "replace").strip()
        if text.startswith("ERR"):
            raise NackError(f"{line[:24]}: {text}", port=self.link.url, phase=phase)
        return text

    def identify(self) -> tuple[str, int]:
        """(EUI-64, hardware version) from the bootloader."""
        self.link.reset_input()
        try:
            text = self.command("ID", Phase.CONNECT)
        except ProtocolError as exc:
            raise NoSync(
                f"no EXLINE bootloader answers: {exc.message}", port=self.link.url
            ) from exc
        words = text.split()
        if len(words) != 3 or words[0] != "ID":
            raise NoSync(f"not an EXLINE answer: {text!r}", port=self.link.url)
        return words[1], int(words[2])

    def erase(self, address: int, pages: int) -> None:
        self.command(f"ER {address:08X} {pages}", Phase.ERASE)

    def write(self, address: int, data: bytes, progress: ProgressFn = no_progress) -> None:
        for offset in range(0, len(data), BLOCK):
            block = data[offset : offset + BLOCK]
            self.command(f"WR {address + offset:08X} {block.hex()}", Phase.WRITE)
            progress(Phase.WRITE, offset + len(block), len(data), "")

    def verify(self, address: int, data: bytes) -> VerifyResult:
        """Device-side CRC-32 of the written range against the image's."""
        text = self.command(f"CRC {address:08X} {len(data)}", Phase.VERIFY)
        device, ours = int(text.split()[1], 16), zlib.crc32(data)
        return VerifyResult(
            device == ours, "device-crc", f"device CRC-32 0x{device:08X}, image 0x{ours:08X}"
        )

    def go(self) -> None:
        self.command("GO", Phase.BOOT)

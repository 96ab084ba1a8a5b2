"""Silicon Labs Gecko bootloader, UART XMODEM configuration, host side.

Byte-exact to ``shared/reference/protocols.md`` §3.4 and Silicon Labs' ``btl_comm_xmodem.c``
(Gecko SDK): the bootloader shows a menu (``"\\r\\nGecko Bootloader v2.04.02\\r\\n1. upload
gbl\\r\\n2. run\\r\\n3. ebl info\\r\\nBL > "``, each text it sends followed by the NUL that ends
its C string); ``'1'`` answers ``"\\r\\nbegin upload\\r\\n"`` and then ``'C'`` every second;
the GBL file goes over XMODEM-CRC in 128-byte blocks; the bootloader checks the GBL as it
arrives (tag sequence, END CRC-32) and prints ``"Serial upload complete"`` or ``"Serial upload
aborted"`` with ``"block error 0x.."`` / ``"file error 0x.."``, then the menu again. ``'2'``
runs the application; any other key shows the menu again (``'3'`` or a newline: the probe).

The bootloader cannot read flash back or report the chip's identity: those come from the
application console (:class:`drivers.console.AppConsole`).

Timeouts: the bootloader gives a block 3 s to start and 3 s more to finish, then NAKs it.
The sender waits longer than that for an answer (:attr:`GeckoTimeouts.block_s`), so that a
block shortened by a byte lost on the line is NAKed by the bootloader before we send it
again; sending sooner would have the bootloader read our repeat as the missing tail.

The driver never prints, sleeps for "safety" or starts threads. Errors name the phase and
the block: ``"upload block 37: NAK after 5 tries"``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.console import AppConsole
from drivers.errors import DeviceTimeout, HubReset, NoSync
from drivers.transport.serial import SerialLink
from drivers.types import Phase, ProgressFn, no_progress
from drivers.xmodem import (
    BlockRefused,
    BlockTimeout,
    ReceiverCancelled,
    SenderTimeouts,
    TransferError,
    UnexpectedOutput,
    XmodemSender,
    block_count,
    frames,
)

MENU = re.compile(
    rb"\r\nGecko Bootloader v(?P<version>[^\r\n\x00]{1,32})\r\n"
    rb"1\. upload gbl\r\n2\. run\r\n3\. ebl info\r\nBL > "
)
BEGIN_UPLOAD = b"\r\nbegin upload\r\n"
#: How long the menu's terminating NUL may trail the menu (an adapter's latency timer).
_MENU_NUL_S = 0.02
_RESULT = re.compile(rb"Serial upload (?P<status>complete|aborted)")
_ERROR = re.compile(rb"(?P<kind>block|file) error 0x(?P<code>[0-9A-Fa-f]{2})")

#: What the bootloader's abort codes mean (btl_comm_xmodem.c, btl_errorcode.h).
ABORT_REASONS = {
    0x18: "the transfer was cancelled",
    0x21: "no block came, or a block did not start with SOH",
    0x22: "a block number did not match its complement",
    0x23: "a block's CRC-16 (low byte) was wrong",
    0x24: "a block's CRC-16 (high byte) was wrong",
    0x25: "a block number was out of sequence",
    0x27: "a block was repeated",
    0x41: "the file does not start with a GBL version 3 header",
    0x43: "the GBL END tag's CRC-32 does not match the file",
    0x44: "the GBL holds a tag this bootloader does not support",
    0x45: "the GBL signature does not verify",
    0x4F: "the GBL is malformed, ended early or writes outside the application",
    0x50: "the GBL cannot be decrypted with the hub's key",
}


@dataclass(frozen=True)
class GeckoTimeouts:
    """Host-side timeouts in seconds.

    Attributes:
        menu_s: for the menu after a probe key (a menu is 76 bytes: 7 ms at 115200).
        start_s: for ``"begin upload"`` and the first ``'C'`` after ``'1'``.
        block_s: for the answer to a block; longer than the bootloader's own 3 s.
        result_s: for the result text and menu after the last block or an abort.
        recover_s: to bring a bootloader that was left mid-upload back to its menu.
    """

    menu_s: float = 0.5
    start_s: float = 3.0
    block_s: float = 4.0
    result_s: float = 2.0
    recover_s: float = 5.0


class NoMenu(NoSync):
    """No Gecko bootloader menu came back."""

    default_hint = (
        "is the hub in its Gecko bootloader (or running an application whose console knows "
        "BOOT), on the right port at 115200 8N1?"
    )


class UploadAborted(TransferError):
    """The bootloader aborted the upload and printed why.

    Attributes:
        kind: ``"block"`` (an XMODEM error) or ``"file"`` (the GBL was refused).
        code: the code it printed (see :data:`ABORT_REASONS`).
    """

    default_hint = "the hub refused the file or the line is bad; check the image and the cable"

    def __init__(
        self, message: str, *, kind: str, code: int | None, block: int | None, port: str | None
    ) -> None:
        super().__init__(message, block=block, port=port, phase=Phase.WRITE)
        self.kind = kind
        self.code = code


class HubStopped(BlockTimeout):
    """A block went unanswered and the bootloader did not show its menu again."""

    default_hint = "the hub stopped answering (stalled or lost power); check the fixture"


class UploadInterrupted(TransferError, HubReset):
    """The hub restarted during the upload (its menu appeared in place of an answer)."""

    default_hint = "the hub restarted (power loss?); its application is incomplete until re-flashed"


@dataclass(frozen=True)
class UploadReport:
    """How an upload that the bootloader accepted went.

    Attributes:
        file_bytes: size of the GBL file sent.
        blocks: XMODEM blocks it took.
        retransmissions: blocks sent more than once.
        seconds: from ``'1'`` to the result.
        result: the bootloader's words (``"Serial upload complete"``).
    """

    file_bytes: int
    blocks: int
    retransmissions: int
    seconds: float
    result: str


def abort_reason(kind: str, code: int | None) -> str:
    """``"file error 0x43 (the GBL END tag's CRC-32 does not match the file)"``."""
    if code is None:
        return "no reason given"
    meaning = ABORT_REASONS.get(code, "an unlisted error")
    return f"{kind} error 0x{code:02X} ({meaning})"


class GeckoDriver:
    """Client of a Gecko bootloader's UART XMODEM menu.

    Args:
        link: an open serial link, 8N1.
        tries: how many times a block is sent before the upload is given up.
        timeouts: host-side timeouts.

    Attributes:
        version: the bootloader version the last menu showed (``"2.04.02"``).
        notes: recoveries worth recording (repeated blocks, recoveries to the menu).
    """

    PROTOCOL = "gecko"

    def __init__(
        self, link: SerialLink, *, tries: int = 5, timeouts: GeckoTimeouts | None = None
    ) -> None:
        self.link = link
        self.tries = max(1, tries)
        self.timeouts = timeouts or GeckoTimeouts()
        self.version: str | None = None
        self.notes: list[str] = []

    @property
    def port(self) -> str:
        """The port this driver talks to."""
        return self.link.url

    # -- reading the stream ------------------------------------------------------------

    def scan(
        self, patterns: Sequence[re.Pattern[bytes]], timeout_s: float
    ) -> tuple[int, re.Match[bytes]] | None:
        """Read until one of ``patterns`` matches what came in; None at the timeout.

        Returns:
            (index of the pattern, its match). Bytes after the match are consumed too.
        """
        found = self._read_until(patterns, timeout_s, keep=16384)
        return None if found is None else (found[0], found[1])

    def _until_menu(self, timeout_s: float) -> bytes | None:
        """Everything up to and including the next menu; None if no menu came."""
        found = self._read_until([MENU], timeout_s)
        return None if found is None else found[2]

    def _read_until(
        self, patterns: Sequence[re.Pattern[bytes]], timeout_s: float, keep: int | None = None
    ) -> tuple[int, re.Match[bytes], bytes] | None:
        """Read runs of text until a pattern matches: (its index, the match, the text up to
        the match's end), or None at the timeout. ``keep`` bounds the text kept (a chatty
        line cannot grow it without end). A menu sets :attr:`version`."""
        buf = bytearray()
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            first = self.link.read(1, left)
            if not first:
                break
            buf += first + self.link.read_waiting(4096)
            for index, pattern in enumerate(patterns):
                match = pattern.search(buf)
                if match is None:
                    continue
                if pattern is MENU:
                    self.version = match.group("version").decode("ascii", "replace")
                    if match.end() == len(buf):
                        # The NUL that ends the menu's C string has not come with it: take
                        # it now, or the next reader (the application's banner) starts with it.
                        buf += self.link.read(1, _MENU_NUL_S)
                return index, match, bytes(buf[: match.end()])
            if keep is not None:
                del buf[: max(0, len(buf) - keep)]
        return None

    # -- the menu ----------------------------------------------------------------------

    def wait_menu(self, timeout_s: float | None = None) -> str:
        """Wait for the menu the bootloader prints on its own (after a reset).

        Raises:
            NoMenu: none within the timeout.
        """
        wait = self.timeouts.result_s if timeout_s is None else timeout_s
        if self._until_menu(wait) is None:
            raise NoMenu(
                f"no Gecko bootloader menu within {wait:g} s", port=self.port, phase=Phase.CONNECT
            )
        assert self.version is not None
        return self.version

    def probe(self, timeout_s: float | None = None) -> str | None:
        """Send a newline (any key other than 1 and 2 shows the menu) and look for the menu.

        Returns:
            The bootloader version, or None when no menu came (e.g. an application runs).
        """
        self.link.write(b"\n")
        wait = self.timeouts.menu_s if timeout_s is None else timeout_s
        if self._until_menu(wait) is None:
            return None
        self.link.drain(0.02)  # a menu the bootloader was printing anyway
        return self.version

    def recover(self) -> str:
        """Bring a bootloader left inside an upload back to its menu.

        A newline where a block should start makes it abort the upload; inside a block it
        is one more data byte, and the block times out (3 s) and is NAKed first. So probe
        until the menu shows, for up to :attr:`GeckoTimeouts.recover_s`.

        Raises:
            NoMenu: the hub did not show its menu again.
        """
        self.link.drain(0.05)
        deadline = time.monotonic() + self.timeouts.recover_s
        while (left := deadline - time.monotonic()) > 0:
            version = self.probe(timeout_s=min(1.0, left))
            if version is not None:
                return version
        raise NoMenu(
            f"the hub did not show its bootloader menu again within {self.timeouts.recover_s:g} s",
            port=self.port,
            phase=Phase.WRITE,
        )

    def reach_menu(self, console: AppConsole | None = None) -> str:
        """The menu, from wherever the hub is: showing it already, left inside an upload,
        or (given its console) running an application that knows ``BOOT``.

        Raises:
            NoMenu: none of these brought the menu.
        """
        version = self.probe()
        if version is not None:
            return version
        if console is not None and console.version() is not None:
            console.enter_bootloader()
            return self.wait_menu()
        return self.recover()

    def run_application(self) -> None:
        """Menu item 2: leave the bootloader and start the application (if it is valid)."""
        self.link.write(b"2")

    # -- upload ------------------------------------------------------------------------

    def upload(self, gbl: bytes, on_progress: ProgressFn = no_progress) -> UploadReport:
        """Menu item 1: send a GBL file over XMODEM and read the bootloader's verdict.

        Call with the menu showing. Returns once the menu shows again.

        Raises:
            UploadAborted: the bootloader refused a block or the file (it says why).
            UploadInterrupted: the hub restarted during the upload.
            BlockRefused, BlockTimeout: a block was NAKed or unanswered every try; the
                upload was cancelled.
            NoMenu: the bootloader did not start the upload.
            DeviceTimeout: no verdict after the last block.
        """
        # Built now, not once the bootloader asks for data: that would be time on the line.
        prepared = list(frames(gbl))
        on_progress(Phase.WRITE, 0, len(gbl), "")
        started = time.monotonic()
        self.link.write(b"1")
        if not self._await_start():
            raise NoMenu(
                f"upload: the bootloader did not answer '1' with 'begin upload' and 'C' within "
                f"{self.timeouts.start_s:g} s",
                port=self.port,
                phase=Phase.WRITE,
            )
        sender = XmodemSender(
            self.link,
            tries=self.tries,
            # The bootloader answers within its own 3 s (a NAK when nothing came), so two
            # silent waits in a row mean it is not listening at all.
            timeout_tries=2,
            timeouts=SenderTimeouts(response_s=self.timeouts.block_s),
            port=self.port,
            what="upload",
        )
        text = b""
        try:
            sender.send(gbl, on_progress, prepared)
        except ReceiverCancelled as exc:
            raise self._aborted(exc.block, b"") from exc
        except UnexpectedOutput as exc:
            # At the end, the answer to EOT may have been garbled on the line while the
            # result that follows it came through: that result decides.
            text = exc.data
            if exc.block is not None or b"Serial upload complete" not in text.replace(b"\x00", b""):
                raise self._unexpected(exc) from exc
        except (BlockRefused, BlockTimeout) as exc:
            sender.cancel()
            try:
                self.recover()
            except NoMenu as lost:
                raise HubStopped(
                    f"{exc.message}; then the hub stopped answering (no menu after cancelling)",
                    block=exc.block,
                    port=self.port,
                    phase=Phase.WRITE,
                ) from lost
            self.notes.append(f"{exc.message}; upload cancelled, bootloader menu back")
            raise
        finally:
            if (summary := sender.summary()) is not None:
                self.notes.append(summary)
        result = self._verdict(text)
        return UploadReport(
            file_bytes=len(gbl),
            blocks=block_count(len(gbl)),
            retransmissions=sender.retransmissions,
            seconds=time.monotonic() - started,
            result=result,
        )

    def _verdict(self, text: bytes) -> str:
        """The bootloader's words after it ACKed the end of the file.

        It ACKs EOT only for a GBL it has checked (END CRC right; a bad file gets CAN), so
        the ACK is the verdict; the text confirms it. Text garbled on the line is not a
        failure, but the menu must come back before anything else is sent.
        """
        if MENU.search(text) is None:
            text += self._until_menu(self.timeouts.result_s) or b""
        clean = text.replace(b"\x00", b"")
        found = _RESULT.search(clean)
        if found is not None and found.group("status") == b"aborted":
            raise self._abort_error(None, text)
        if found is not None and MENU.search(text) is not None:
            return "Serial upload complete"
        self.notes.append(
            "upload end: the bootloader ACKed the end of the file (it does so only for a "
            "checked GBL) but its result text was garbled on the line"
        )
        try:
            self.recover()
        except NoMenu as exc:
            raise DeviceTimeout(
                "upload: the bootloader ACKed the end of the file but did not show its menu again",
                port=self.port,
                phase=Phase.WRITE,
            ) from exc
        return "ACK to EOT (result text garbled on the line)"

    def _await_start(self) -> bool:
        """Wait for ``begin upload`` and the first ``'C'`` after it."""
        buf = bytearray()
        deadline = time.monotonic() + self.timeouts.start_s
        while (left := deadline - time.monotonic()) > 0:
            got = self.link.read(1, left)
            if not got:
                return False
            buf += got
            at = buf.find(BEGIN_UPLOAD)
            if at >= 0 and b"C" in buf[at + len(BEGIN_UPLOAD) :]:
                return True
        return False

    def _aborted(self, block: int | None, already: bytes) -> UploadAborted:
        """The bootloader cancelled: read its reason (and the menu after it)."""
        text = self._until_menu(self.timeouts.result_s)
        return self._abort_error(block, already + (text or b""))

    def _abort_error(self, block: int | None, text: bytes) -> UploadAborted:
        clean = text.replace(b"\x00", b"")
        found = _ERROR.search(clean)
        kind = found.group("kind").decode() if found else "block"
        code = int(found.group("code"), 16) if found else None
        where = f"upload block {block}" if block is not None else "upload end (EOT)"
        return UploadAborted(
            f"{where}: the bootloader aborted the upload: {abort_reason(kind, code)}",
            kind=kind,
            code=code,
            block=block,
            port=self.port,
        )

    def _unexpected(self, exc: UnexpectedOutput) -> TransferError:
        """Text came instead of an answer: an abort, a restart, or something else."""
        data = exc.data
        if MENU.search(data) is None:
            data += self._until_menu(self.timeouts.result_s) or self.link.drain(0.05)
        clean = data.replace(b"\x00", b"")
        if b"Serial upload aborted" in clean:
            return self._abort_error(exc.block, data)
        if MENU.search(data) is not None:
            return UploadInterrupted(
                f"upload block {exc.block}: the hub restarted (power loss?): its bootloader "
                "menu appeared instead of an answer",
                block=exc.block,
                port=self.port,
                phase=Phase.WRITE,
            )
        preview = clean[:60].decode("ascii", "replace")
        return TransferError(
            f"upload block {exc.block}: unexpected output from the hub: {preview!r}",
            block=exc.block,
            port=self.port,
            phase=Phase.WRITE,
        )

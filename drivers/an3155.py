"""STM32 system bootloader over USART (ST AN3155), host side.

Byte-exact to ``shared/reference/protocols.md`` §1. One driver object talks to one open
:class:`~drivers.transport.serial.SerialLink`; it never prints, sleeps for "safety" or starts
threads. Every error names the phase and address ("write block 37 at 0x08009400: NACK after
3 tries").

Speed: a Write Memory is sent as one burst (command, address, data) and its three ACKs are
collected afterwards, so each 256-byte block pays one line turnaround instead of three. The
bootloader reads its USART while it answers, so this is within the protocol; should a frame
be refused, the bytes after the refusal are read by the bootloader as junk commands, which
is why every failure is followed by a drain and a re-sync, and the retry of a block is sent
in lock-step. ``pipeline=False`` gives the strict lock-step exchange throughout.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from drivers.an3155_codes import ACK, MAX_BLOCK, NACK, SYNC, Cmd, address_frame
from drivers.crc import stm32_crc, xor8
from drivers.errors import (
    DeviceTimeout,
    HubReset,
    LinkTimeout,
    NackError,
    NoSync,
    ProtocolError,
    Unsupported,
)
from drivers.transport.serial import SerialLink
from drivers.types import BootloaderInfo, Phase, ProgressFn, VerifyResult, no_progress

#: The most bytes a bootloader left inside a command may still wait for once our sync
#: bytes (0x7F) fill in what the host that stopped never sent: an Extended Erase whose page
#: count reads 0x7F7F takes 2 x 0x7F80 page numbers and a checksum (6 s at 115200 8E1).
LONGEST_LEFTOVER = 2 * 0x7F80 + 1


@dataclass(frozen=True)
class Timeouts:
    """Host-side timeouts in seconds (stm32flash's figures, protocols.md §1.5)."""

    ack_s: float = 1.0
    page_erase_s: float = 5.0
    mass_erase_s: float = 35.0
    resync_s: float = 35.0


#: A Write Memory frame's head: the command and its complement, address, its XOR, count.
_WRITE_HEAD = struct.Struct(">BBIBB")
_WRITE, _WRITE_NOT = int(Cmd.WRITE_MEMORY), int(Cmd.WRITE_MEMORY) ^ 0xFF
_THREE_ACKS = bytes((ACK, ACK, ACK))


class NeedsErase(ProtocolError):
    """A block is partly programmed; its page must be erased before it can be written."""


def pad4(data: bytes) -> bytes:
    """Pad with erased bytes (0xFF) to a whole number of 32-bit words."""
    return data + b"\xff" * (-len(data) % 4)


class An3155Driver:
    """Client of the STM32 USART bootloader.

    Args:
        link: an open serial link (8E1 on real hardware).
        retries: tries per block or command before giving up (stm32flash uses a few).
        pipeline: send each Write/Read Memory as one burst (see module docstring).
        timeouts: host-side timeouts.
    """

    PROTOCOL = "an3155"

    def __init__(
        self,
        link: SerialLink,
        *,
        retries: int = 3,
        pipeline: bool = True,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.link = link
        self.retries = max(1, retries)
        self.pipeline = pipeline
        self.timeouts = timeouts or Timeouts()
        self._byte_s = link.byte_time_s()
        self.info: BootloaderInfo | None = None
        #: Human-readable notes on recoveries (retries, re-syncs), for the job record.
        self.notes: list[str] = []

    @property
    def port(self) -> str:
        """The port this driver talks to."""
        return self.link.url

    # -- low level ---------------------------------------------------------------------

    def _short_wait_s(self) -> float:
        """How long a single-byte answer may take: a few byte times plus adapter latency."""
        return 0.1 + 4 * self.link.byte_time_s()

    def _expect_ack(self, what: str, timeout_s: float, phase: Phase, address: int | None) -> None:
        got = self.link.read(1, timeout_s)
        if not got:
            raise DeviceTimeout(
                f"{what}: no answer within {timeout_s:g} s",
                port=self.port,
                phase=phase,
                address=address,
            )
        if got[0] == NACK:
            raise NackError(f"{what}: NACK", port=self.port, phase=phase, address=address)
        if got[0] != ACK:
            raise ProtocolError(
                f"{what}: expected ACK (0x79), got 0x{got[0]:02X}",
                port=self.port,
                phase=phase,
                address=address,
            )

    def _command(self, cmd: Cmd, phase: Phase, address: int | None = None) -> None:
        self.link.write(bytes([cmd, cmd ^ 0xFF]))
        self._expect_ack(f"{cmd.name} command", self.timeouts.ack_s, phase, address)

    def _require(self, cmd: Cmd, phase: Phase) -> None:
        if self.info is not None and cmd not in self.info.commands:
            raise Unsupported(
                f"the bootloader does not offer {cmd.name} (0x{cmd:02X})",
                port=self.port,
                phase=phase,
            )

    # -- synchronisation ---------------------------------------------------------------

    def sync(
        self, timeout_s: float = 2.0, phase: Phase = Phase.CONNECT, *, flush: bool = False
    ) -> bool:
        """Synchronise with the bootloader.

        A bootloader that stays silent is inside a command, reading our sync bytes as its
        data. By default a burst of them finishes a short one (a block's data, an address);
        with ``flush`` they are sent until it answers, however long the command it waits
        to finish (:meth:`flush_command`; up to seconds, on top of ``timeout_s``): for a hub
        known to be in its bootloader, never for a first look (an application ignores the
        bytes, and would be sent 64 KiB of them).

        Returns:
            True when the bootloader answered ACK (it was waiting for its first 0x7F, i.e.
            it has just been reset); False when it was already synchronised (NACK).

        Raises:
            NoSync: nothing recognisable came back within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        self.link.reset_input()
        while time.monotonic() < deadline:
            # First 0x7F: a reset bootloader ACKs it; a synced one takes it as a command
            # byte, and the second 0x7F (a wrong complement) draws a NACK.
            for _ in range(2):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.link.write(bytes([SYNC]))
                got = self.link.read(1, min(left, self._short_wait_s()))
                if got and got[0] == ACK:
                    return True
                if got and got[0] == NACK:
                    self.link.drain(self._short_wait_s())
                    return False
                if got:  # junk from an aborted exchange: let it settle, start over
                    self.link.drain(self._short_wait_s())
                    break
            else:
                # Silent twice: the bootloader is inside a command, reading our bytes as
                # its data. A burst completes a short command (NACKed for its checksum).
                if flush and self.flush_command():
                    deadline = max(deadline, time.monotonic() + 10 * self._short_wait_s())
                    continue
                self.link.write(bytes([SYNC]) * 300)
                self.link.drain(self._short_wait_s())
        raise NoSync(
            f"no answer to the bootloader sync byte 0x7F within {timeout_s:g} s",
            port=self.port,
            phase=phase,
        )

    def flush_command(self, max_bytes: int = 0) -> bool:
        """Bring a bootloader that another host left inside a command (the host stopped
        between its bytes) back to waiting for one: send 0x7F until it NACKs, which it does
        once that command has all its bytes (they are not a valid checksum, address or
        page list) and then for every pair of 0x7F after it; at most ``max_bytes``
        (default :data:`LONGEST_LEFTOVER`).

        The bytes go out no faster than the line carries them (at most a small window
        ahead), so the bootloader is never left with a backlog of them once it answers: the
        OS and a pseudo-terminal would take tens of KiB at once. An early ACK (the answer to
        the unfinished command's opcode, late) is not the end. Returns True on the NACK.
        """
        max_bytes = max_bytes or LONGEST_LEFTOVER
        byte_s = self.link.byte_time_s()
        window = 512
        run = bytes([SYNC]) * 128
        start = time.monotonic()
        sent = 0
        while sent < max_bytes + window:
            wait = start + (sent - window) * byte_s - time.monotonic()
            got = self.link.read(64, wait) if wait > 0 else self.link.read_waiting(64)
            if NACK in got:
                self.link.drain(window * byte_s + self._short_wait_s(), limit_s=5.0)
                return True
            self.link.write(run)
            sent += len(run)
        return False

    def _recover(self, phase: Phase, address: int | None) -> bool:
        """Drain junk and re-synchronise after a failed exchange; True if the hub reset."""
        self.link.drain(self._short_wait_s())
        try:
            return self.sync(self.timeouts.resync_s, phase, flush=True)
        except NoSync as exc:
            raise DeviceTimeout(
                f"hub stopped answering: no reply to re-sync for {self.timeouts.resync_s:g} s",
                port=self.port,
                phase=phase,
                address=address,
            ) from exc

    # -- information -------------------------------------------------------------------

    def get(self) -> tuple[int, frozenset[int]]:
        """Get: bootloader version and the commands it supports."""
        self._command(Cmd.GET, Phase.IDENTIFY)
        n = self.link.read_exact(1, self.timeouts.ack_s, "Get length")[0]
        body = self.link.read_exact(n + 1, self.timeouts.ack_s, "Get reply")
        self._expect_ack("Get reply", self.timeouts.ack_s, Phase.IDENTIFY, None)
        return body[0], frozenset(body[1:])

    def get_version(self) -> int:
        """Get Version & Read Protection: the bootloader version byte."""
        self._command(Cmd.GET_VERSION, Phase.IDENTIFY)
        body = self.link.read_exact(3, self.timeouts.ack_s, "Get Version reply")
        self._expect_ack("Get Version reply", self.timeouts.ack_s, Phase.IDENTIFY, None)
        return body[0]

    def get_id(self) -> int:
        """Get ID: the product ID (e.g. 0x462)."""
        self._command(Cmd.GET_ID, Phase.IDENTIFY)
        n = self.link.read_exact(1, self.timeouts.ack_s, "Get ID length")[0]
        body = self.link.read_exact(n + 1, self.timeouts.ack_s, "Get ID reply")
        self._expect_ack("Get ID reply", self.timeouts.ack_s, Phase.IDENTIFY, None)
        return int.from_bytes(body, "big")

    def identify(self) -> BootloaderInfo:
        """Get + Get ID, retried once after a re-sync; remembers the command list."""
        for attempt in range(self.retries):
            try:
                version, commands = self.get()
                pid = self.get_id()
                self.info = BootloaderInfo(version, commands, pid)
                return self.info
            except (ProtocolError, LinkTimeout):
                if attempt + 1 == self.retries:
                    raise
                self._recover(Phase.IDENTIFY, None)
        raise AssertionError("unreachable")

    # -- memory ------------------------------------------------------------------------

    def _read_block(self, address: int, size: int) -> bytes:
        what = f"read {size} bytes at 0x{address:08X}"
        tail = bytes([size - 1, (size - 1) ^ 0xFF])
        frame = bytes([Cmd.READ_MEMORY, Cmd.READ_MEMORY ^ 0xFF]) + address_frame(address)
        if self.pipeline:
            self.link.write(frame + tail)
            acks = self.link.read(3, self.timeouts.ack_s)
            if acks != bytes([ACK, ACK, ACK]):
                bad = "no answer" if not acks else f"got {acks.hex(' ')} instead of 3 ACKs"
                raise NackError(f"{what}: {bad}", port=self.port, address=address)
        else:
            self._command(Cmd.READ_MEMORY, Phase.VERIFY, address)
            self.link.write(frame[2:])
            self._expect_ack(f"{what} (address)", self.timeouts.ack_s, Phase.VERIFY, address)
            self.link.write(tail)
            self._expect_ack(f"{what} (length)", self.timeouts.ack_s, Phase.VERIFY, address)
        return self.link.read_exact(size, self.timeouts.ack_s + size * 0.001, what)

    def read_memory(
        self,
        address: int,
        length: int,
        *,
        phase: Phase = Phase.VERIFY,
        on_progress: ProgressFn = no_progress,
    ) -> bytes:
        """Read Memory in blocks of up to 256 bytes, each retried after a re-sync."""
        self._require(Cmd.READ_MEMORY, phase)
        out = bytearray()
        while len(out) < length:
            at = address + len(out)
            size = min(MAX_BLOCK, length - len(out))
            for attempt in range(1, self.retries + 1):
                try:
                    out += self._read_block(at, size)
                    break
                except (ProtocolError, LinkTimeout) as exc:
                    if attempt == self.retries:
                        raise NackError(
                            f"read at 0x{at:08X}: {exc.message} after {attempt} tries",
                            port=self.port,
                            phase=phase,
                            address=at,
                        ) from exc
                    self.notes.append(f"read at 0x{at:08X} retried: {exc.message}")
                    if self._recover(phase, at):
                        raise HubReset(
                            f"hub restarted while reading 0x{at:08X}",
                            port=self.port,
                            phase=phase,
                            address=at,
                        ) from exc
            on_progress(phase, len(out), length, "")
        return bytes(out)

    def _write_block_once(self, address: int, chunk: bytes, lockstep: bool) -> None:
        n = len(chunk) - 1
        check = xor8(chunk, n)
        if self.pipeline and not lockstep:
            # The hot loop (one pass per 256 bytes, in every slot): the whole frame (command,
            # address and its XOR, count, data, checksum) in one write, its three ACKs
            # through one read, which a refusal ends early (the bytes after it draw NACKs of
            # their own); messages are made only for a failure.
            a = address
            head = _WRITE_HEAD.pack(
                _WRITE, _WRITE_NOT, a, (a ^ a >> 8 ^ a >> 16 ^ a >> 24) & 0xFF, n
            )
            self.link.write(b"".join((head, chunk, bytes((check,)))))
            timeout_s = self.timeouts.ack_s + (len(chunk) + 9) * self._byte_s
            acks = self.link.read(3, timeout_s)
            if acks != _THREE_ACKS:
                self._refused(address, acks, timeout_s)
            return
        addr = address_frame(address)
        body = b"".join((bytes((n,)), chunk, bytes((check,))))
        what = f"write at 0x{address:08X}"
        self._command(Cmd.WRITE_MEMORY, Phase.WRITE, address)
        self.link.write(addr)
        self._expect_ack(f"{what} (address)", self.timeouts.ack_s, Phase.WRITE, address)
        self.link.write(body)
        self._expect_ack(f"{what} (data)", self.timeouts.ack_s, Phase.WRITE, address)

    def _refused(self, address: int, acks: bytes, timeout_s: float) -> None:
        """Raise for a pipelined block whose answer is not three ACKs, naming the first
        step (command, address, data) not acknowledged."""
        step = next(i for i in range(3) if i >= len(acks) or acks[i] != ACK)
        what = f"write at 0x{address:08X} ({('command', 'address', 'data')[step]})"
        if step >= len(acks):
            raise DeviceTimeout(
                f"{what}: no answer within {timeout_s:g} s",
                port=self.port,
                phase=Phase.WRITE,
                address=address,
            )
        if acks[step] == NACK:
            raise NackError(f"{what}: NACK", port=self.port, phase=Phase.WRITE, address=address)
        raise ProtocolError(
            f"{what}: expected ACK (0x79), got 0x{acks[step]:02X}",
            port=self.port,
            phase=Phase.WRITE,
            address=address,
        )

    def write_block(self, index: int, address: int, chunk: bytes) -> None:
        """Write one block (<= 256 bytes, 4-byte multiple, 4-aligned address), with retries.

        After a failed try the driver re-syncs and reads the block back: if it already
        holds the data only the ACK was lost; if it is still erased it is sent again; if it
        is partly programmed it cannot be rewritten without an erase (:class:`NeedsErase`).

        Raises:
            HubReset: the bootloader restarted (power loss); the block's page is suspect.
            NeedsErase: the block is partly programmed.
            NackError: every try was refused or went unanswered.
        """
        last = ""
        for attempt in range(1, self.retries + 1):
            try:
                self._write_block_once(address, chunk, lockstep=attempt > 1)
                return
            except (ProtocolError, LinkTimeout) as exc:
                last = "NACK" if isinstance(exc, NackError) else exc.message
            label = f"write block {index} at 0x{address:08X}"
            self.notes.append(f"{label}: {last} (try {attempt})")
            if self._recover(Phase.WRITE, address):
                raise HubReset(
                    f"{label}: the hub restarted (power loss?)",
                    port=self.port,
                    phase=Phase.WRITE,
                    address=address,
                )
            state = self.block_state(address, chunk)
            if state == "written":
                self.notes.append(f"{label}: data found intact, only the ACK was lost")
                return
            if state == "dirty":
                raise NeedsErase(
                    f"{label}: flash partly programmed after {last}",
                    port=self.port,
                    phase=Phase.WRITE,
                    address=address,
                )
        raise NackError(
            f"{label}: {last} after {self.retries} tries",
            port=self.port,
            phase=Phase.WRITE,
            address=address,
        )

    @property
    def has_checksum(self) -> bool:
        """Whether the bootloader offers Get Checksum (0xA1)."""
        return self.info is not None and Cmd.GET_CHECKSUM in self.info.commands

    def block_state(self, address: int, chunk: bytes) -> str:
        """State of the flash at ``address``: ``"written"`` (holds ``chunk``), ``"erased"``
        or ``"dirty"`` (anything else).

        Asked of the device's CRC when it offers one: its reply is checksummed, whereas a
        plain readback over a noisy line could make a clean block look dirty. Without the
        CRC command, two readbacks must agree before the answer is believed.
        """
        if self.has_checksum:
            for attempt in range(1, self.retries + 1):
                try:
                    crc = self.get_checksum(address, len(chunk))
                    break
                except (ProtocolError, LinkTimeout):
                    if attempt == self.retries:
                        raise
                    self._recover(Phase.WRITE, address)
            if crc == stm32_crc(chunk):
                return "written"
            return "erased" if crc == stm32_crc(b"\xff" * len(chunk)) else "dirty"
        first = self.read_memory(address, len(chunk), phase=Phase.WRITE)
        while (again := self.read_memory(address, len(chunk), phase=Phase.WRITE)) != first:
            first = again
        if first == chunk:
            return "written"
        return "erased" if first == b"\xff" * len(chunk) else "dirty"

    def write_memory(
        self,
        address: int,
        data: bytes,
        *,
        first_block: int = 0,
        on_progress: ProgressFn = no_progress,
        progress_base: int = 0,
        progress_total: int | None = None,
    ) -> None:
        """Write ``data`` at ``address`` in 256-byte blocks (padded to whole words).

        Args:
            first_block: block number of the first block, for messages when resuming.
            progress_base, progress_total: offsets so a resumed write reports overall
                progress.
        """
        self._require(Cmd.WRITE_MEMORY, Phase.WRITE)
        if address % 4:
            raise ProtocolError(
                f"write address 0x{address:08X} is not 4-byte aligned",
                port=self.port,
                phase=Phase.WRITE,
                address=address,
            )
        data = pad4(data)
        total = progress_total if progress_total is not None else len(data)
        for n, offset in enumerate(range(0, len(data), MAX_BLOCK)):
            chunk = data[offset : offset + MAX_BLOCK]
            self.write_block(first_block + n, address + offset, chunk)
            on_progress(Phase.WRITE, progress_base + offset + len(chunk), total, "")

    # -- erase -------------------------------------------------------------------------

    def erase_pages(self, pages: list[int], on_progress: ProgressFn = no_progress) -> None:
        """Erase the given flash pages (Extended Erase, or Erase on older bootloaders)."""
        if not pages:
            return
        extended = self.info is None or Cmd.EXTENDED_ERASE in self.info.commands
        limit = 512 if extended else 255
        done = 0
        for start in range(0, len(pages), limit):
            group = pages[start : start + limit]
            if extended:
                params = struct.pack(f">H{len(group)}H", len(group) - 1, *group)
            else:
                params = bytes([len(group) - 1, *group])
            self._erase(
                Cmd.EXTENDED_ERASE if extended else Cmd.ERASE,
                params + bytes([xor8(params)]),
                self.timeouts.page_erase_s * len(group),
                f"erase pages {group[0]}..{group[-1]}",
            )
            done += len(group)
            on_progress(Phase.ERASE, done, len(pages), "")

    def mass_erase(self) -> None:
        """Erase all of the main flash."""
        extended = self.info is None or Cmd.EXTENDED_ERASE in self.info.commands
        params = b"\xff\xff\x00" if extended else b"\xff\x00"
        cmd = Cmd.EXTENDED_ERASE if extended else Cmd.ERASE
        self._erase(cmd, params, self.timeouts.mass_erase_s, "mass erase")

    def _erase(self, cmd: Cmd, params: bytes, timeout_s: float, what: str) -> None:
        self._require(cmd, Phase.ERASE)
        last = ""
        for attempt in range(1, self.retries + 1):
            try:
                self._command(cmd, Phase.ERASE)
                self.link.write(params)
                self._expect_ack(what, timeout_s, Phase.ERASE, None)
                return
            except (ProtocolError, LinkTimeout) as exc:
                last = "NACK" if isinstance(exc, NackError) else exc.message
            self.notes.append(f"{what}: {last} (try {attempt})")
            self._recover(Phase.ERASE, None)  # erasing is idempotent: just ask again
        raise NackError(
            f"{what}: {last} after {self.retries} tries", port=self.port, phase=Phase.ERASE
        )

    # -- verify and start --------------------------------------------------------------

    def get_checksum(self, address: int, length: int) -> int:
        """Get Checksum (0xA1): the STM32 CRC-unit value of ``length`` bytes at ``address``."""
        self._require(Cmd.GET_CHECKSUM, Phase.VERIFY)
        if address % 4 or length % 4:
            raise ProtocolError(
                "checksum needs a 4-byte aligned address and length",
                port=self.port,
                phase=Phase.VERIFY,
                address=address,
            )
        what = f"checksum of {length} bytes at 0x{address:08X}"
        raw = struct.pack(">I", length)
        frame = address_frame(address), raw + bytes([xor8(raw)])
        # The device computes before its last ACK: allow for a slow CRC of a big region.
        compute_s = self.timeouts.ack_s + length * 1e-6
        if self.pipeline:
            # One burst out and one read back, as a Write Memory: a page-by-page diff asks
            # one per page, and each turnaround saved is a millisecond on a USB adapter.
            self.link.write(bytes([Cmd.GET_CHECKSUM, Cmd.GET_CHECKSUM ^ 0xFF]) + b"".join(frame))
            got = self.link.read(9, compute_s)
            if got[:4] != bytes([ACK] * 4) or len(got) < 9:
                bad = "no answer" if not got else f"got {got.hex(' ')}, not 4 ACKs and a CRC"
                raise NackError(
                    f"{what}: {bad}", port=self.port, phase=Phase.VERIFY, address=address
                )
            return self._checksum_value(what, got[4:])
        self._command(Cmd.GET_CHECKSUM, Phase.VERIFY, address)
        self.link.write(frame[0])
        self._expect_ack(f"{what} (address)", self.timeouts.ack_s, Phase.VERIFY, address)
        self.link.write(frame[1])
        self._expect_ack(f"{what} (length)", self.timeouts.ack_s, Phase.VERIFY, address)
        self._expect_ack(what, compute_s, Phase.VERIFY, address)
        return self._checksum_value(
            what, self.link.read_exact(5, self.timeouts.ack_s, f"{what} (value)")
        )

    def _checksum_value(self, what: str, reply: bytes) -> int:
        if xor8(reply[:4]) != reply[4]:
            raise ProtocolError(
                f"{what}: reply checksum mismatch", port=self.port, phase=Phase.VERIFY
            )
        return int.from_bytes(reply[:4], "big")

    def checksum(self, address: int, length: int, phase: Phase) -> int:
        """Get Checksum, asked again after a re-sync when an answer is lost or garbled.

        Raises:
            ProtocolError, LinkTimeout: every try failed.
        """
        for attempt in range(1, self.retries + 1):
            try:
                return self.get_checksum(address, length)
            except (ProtocolError, LinkTimeout):
                if attempt == self.retries:
                    raise
                self._recover(phase, address)
        raise AssertionError("unreachable")

    def verify(
        self,
        address: int,
        data: bytes,
        *,
        method: str = "auto",
        on_progress: ProgressFn = no_progress,
    ) -> VerifyResult:
        """Prove the flash at ``address`` holds ``data``.

        Args:
            method: ``"auto"`` (device CRC when offered, else readback), ``"crc"`` or
                ``"readback"``.
        """
        data = pad4(data)
        has_crc = self.info is not None and Cmd.GET_CHECKSUM in self.info.commands
        if method == "crc" and not has_crc:
            raise Unsupported(
                "the bootloader offers no Get Checksum (0xA1); use readback verify",
                port=self.port,
                phase=Phase.VERIFY,
            )
        if method in ("auto", "crc") and has_crc:
            for attempt in range(1, self.retries + 1):
                try:
                    device = self.get_checksum(address, len(data))
                    break
                except (ProtocolError, LinkTimeout):
                    if attempt == self.retries:
                        raise
                    self._recover(Phase.VERIFY, address)
            host = stm32_crc(data)
            on_progress(Phase.VERIFY, len(data), len(data), "device CRC")
            return VerifyResult(
                device == host,
                "device-crc",
                f"device CRC 0x{device:08X}, image CRC 0x{host:08X}",
            )
        back = self.read_memory(address, len(data), on_progress=on_progress)
        if back == data:
            return VerifyResult(True, "readback", f"{len(data)} bytes read back and equal")
        first = next(i for i in range(len(data)) if back[i] != data[i])
        return VerifyResult(
            False,
            "readback",
            f"first difference at 0x{address + first:08X}: "
            f"flash 0x{back[first]:02X}, image 0x{data[first]:02X}",
        )

    def go(self, address: int) -> None:
        """Go: start the code whose vector table is at ``address``."""
        self._require(Cmd.GO, Phase.BOOT)
        self._command(Cmd.GO, Phase.BOOT, address)
        self.link.write(address_frame(address))
        self._expect_ack(f"go to 0x{address:08X}", self.timeouts.ack_s, Phase.BOOT, address)

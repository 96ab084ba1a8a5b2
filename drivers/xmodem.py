"""XMODEM-CRC with 128-byte blocks: the pure framing both ends share, and a sender.

Byte-exact to ``shared/reference/protocols.md`` §3.1-3.3 (Forsberg, "X/YMODEM Protocol
Reference", 1987): a block is ``SOH``, its number, ``0xFF - number``, 128 data bytes and the
CRC-16/XMODEM of the data, high byte first. Numbers start at 1 and wrap ``0xFF -> 0x00``;
the last block is padded (``SUB`` by default). The receiver asks for CRC mode with ``'C'``,
answers every block with ``ACK`` or ``NAK``, and cancels with two or more ``CAN``; the sender
ends with ``EOT`` and cancels with ``CAN CAN``.

The framing helpers are pure (the simulated Gecko hub uses them too). :class:`XmodemSender`
works over any object with ``read(n, timeout_s)`` and ``write(data)`` (a
:class:`~drivers.transport.serial.SerialLink`); it never prints, sleeps or starts threads.
Every failure names the block (counted from 1, as the wire numbers them before they wrap)
and how many times it was sent: ``"upload block 37: NAK after 3 tries"``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from drivers.crc import crc16_xmodem
from drivers.errors import DeviceTimeout, NackError, ProtocolError
from drivers.types import Phase, ProgressFn, no_progress

SOH = 0x01
STX = 0x02
EOT = 0x04
ACK = 0x06
NAK = 0x15
CAN = 0x18
CRC_REQUEST = 0x43  # 'C': the receiver asks for CRC mode
SUB = 0x1A  # classic padding of the last block

BLOCK_SIZE = 128
_EOT = bytes([EOT])
FRAME_SIZE = 3 + BLOCK_SIZE + 2  # SOH, number, complement, data, CRC high, CRC low


# --- pure framing --------------------------------------------------------------------------


def sequence_number(index: int) -> int:
    """The on-wire number of the block at ``index`` (0-based): 1, 2, ... 0xFF, 0x00, 0x01..."""
    return (index + 1) & 0xFF


def block_count(size: int) -> int:
    """How many 128-byte blocks carry ``size`` bytes (an empty file still takes none)."""
    return -(-size // BLOCK_SIZE)


def pad_block(data: bytes, fill: int = SUB) -> bytes:
    """``data`` (at most one block) padded with ``fill`` to exactly 128 bytes.

    Raises:
        ValueError: more than 128 bytes, or a fill that is not a byte.
    """
    if len(data) > BLOCK_SIZE:
        raise ValueError(f"a block holds {BLOCK_SIZE} bytes, not {len(data)}")
    if not 0 <= fill <= 0xFF:
        raise ValueError(f"fill 0x{fill:X} is not a byte")
    return data + bytes([fill]) * (BLOCK_SIZE - len(data))


def split_blocks(data: bytes, fill: int = SUB) -> list[bytes]:
    """``data`` cut into 128-byte blocks, the last one padded with ``fill``."""
    return [pad_block(data[i : i + BLOCK_SIZE], fill) for i in range(0, len(data), BLOCK_SIZE)]


def encode_block(number: int, data: bytes) -> bytes:
    """One SOH frame: ``SOH number ~number data CRC16(data) (high byte first)``.

    Raises:
        ValueError: ``number`` is not a byte or ``data`` is not exactly 128 bytes.
    """
    if not 0 <= number <= 0xFF:
        raise ValueError(f"block number {number} is not a byte")
    if len(data) != BLOCK_SIZE:
        raise ValueError(f"a block holds exactly {BLOCK_SIZE} bytes, not {len(data)}")
    crc = crc16_xmodem(data)
    return bytes([SOH, number, 0xFF - number]) + data + crc.to_bytes(2, "big")


class FrameCheck(enum.Enum):
    """What a receiver finds in a complete 133-byte frame."""

    OK = "ok"
    NOT_SOH = "the frame does not start with SOH"
    BAD_LENGTH = "the frame is not 133 bytes"
    BAD_COMPLEMENT = "the block number does not match its complement"
    BAD_CRC = "the CRC-16 of the data is wrong"


def check_frame(frame: bytes) -> FrameCheck:
    """Check a received frame's start byte, number complement and CRC (receiver side)."""
    if len(frame) != FRAME_SIZE:
        return FrameCheck.BAD_LENGTH
    if frame[0] != SOH:
        return FrameCheck.NOT_SOH
    if frame[1] + frame[2] != 0xFF:
        return FrameCheck.BAD_COMPLEMENT
    if crc16_xmodem(frame[3 : 3 + BLOCK_SIZE]) != int.from_bytes(frame[-2:], "big"):
        return FrameCheck.BAD_CRC
    return FrameCheck.OK


def frames(data: bytes, fill: int = SUB) -> Iterator[bytes]:
    """The SOH frames that carry ``data``, numbered from 1 (built lazily)."""
    for index, offset in enumerate(range(0, len(data), BLOCK_SIZE)):
        yield encode_block(
            sequence_number(index), pad_block(data[offset : offset + BLOCK_SIZE], fill)
        )


# --- errors --------------------------------------------------------------------------------


class TransferError(ProtocolError):
    """An XMODEM transfer failed.

    Attributes:
        block: the block concerned, counted from 1 (None: before the first block or at the
            end of the transfer).
    """

    def __init__(
        self,
        message: str,
        *,
        block: int | None = None,
        port: str | None = None,
        phase: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, port=port, phase=phase, hint=hint)
        self.block = block


class BlockRefused(TransferError, NackError):
    """The receiver NAKed (or garbled its answer to) a block every time it was sent."""


class BlockTimeout(TransferError, DeviceTimeout):
    """The receiver did not answer a block (or the start of the transfer) in time."""


class ReceiverCancelled(TransferError):
    """The receiver cancelled the transfer (two or more CAN)."""

    default_hint = "the receiver gave up on the transfer; see its message for why"


class UnexpectedOutput(TransferError):
    """The receiver sent text instead of an XMODEM answer (it may have restarted).

    Attributes:
        data: what it sent.
    """

    def __init__(
        self,
        message: str,
        data: bytes,
        *,
        block: int | None = None,
        port: str | None = None,
        phase: str | None = None,
    ) -> None:
        super().__init__(message, block=block, port=port, phase=phase)
        self.data = data


# --- the sender ----------------------------------------------------------------------------


class ByteLink(Protocol):
    """What the sender needs of a link (a :class:`~drivers.transport.serial.SerialLink`)."""

    def read(self, n: int, timeout_s: float) -> bytes:
        """Up to ``n`` bytes, returning early only when ``timeout_s`` expires."""
        ...

    def write(self, data: bytes) -> None:
        """Send bytes."""
        ...


@dataclass(frozen=True)
class SenderTimeouts:
    """Seconds the sender waits (Forsberg's figures unless a caller knows its receiver).

    Attributes:
        start_s: for the receiver's first ``'C'`` (Forsberg: a minute).
        response_s: for the answer to a block or to EOT (Forsberg's receiver times out a
            block after 10 s).
        second_can_s: for the CAN that must follow a first one to make a cancel.
        quiet_s: to collect the rest of unexpected output before reporting it.
    """

    start_s: float = 60.0
    response_s: float = 10.0
    second_can_s: float = 1.0
    quiet_s: float = 0.05


class _Answer(enum.Enum):
    ACK = "ACK"
    NAK = "NAK"
    GARBLED = "a garbled answer"
    TIMEOUT = "no answer"


class XmodemSender:
    """Sends one file over XMODEM-CRC with 128-byte blocks.

    Args:
        link: the open link.
        tries: how many times a block (or EOT) is sent before giving up (NAK, garbled
            answer or timeout each use one try).
        timeout_tries: how many of those tries may go unanswered in a row before giving up
            (default: all of them). A receiver that answers every block within a known time
            (NAK on its own timeout) is dead, not slow, once it has missed that time twice.
        timeouts: how long to wait for what.
        fill: padding byte of the last block.
        port: named in errors.
        what: names the transfer in errors (``"upload"`` gives ``"upload block 37: ..."``).

    Attributes:
        retried: blocks that needed more than one try, and how many they took.
        retransmissions: blocks sent again, in total.
    """

    def __init__(
        self,
        link: ByteLink,
        *,
        tries: int = 10,
        timeout_tries: int | None = None,
        timeouts: SenderTimeouts | None = None,
        fill: int = SUB,
        port: str | None = None,
        what: str = "upload",
    ) -> None:
        if tries < 1:
            raise ValueError("tries must be at least 1")
        self.link = link
        self.tries = tries
        self.timeout_tries = tries if timeout_tries is None else max(1, timeout_tries)
        self.timeouts = timeouts or SenderTimeouts()
        self.fill = fill
        self.port = port
        self.what = what
        self.retried: dict[int, int] = {}
        self.retransmissions = 0

    def _label(self, block: int | None) -> str:
        return f"{self.what} block {block}" if block is not None else f"{self.what} end (EOT)"

    def wait_for_start(self, timeout_s: float | None = None) -> None:
        """Wait for the receiver's ``'C'``; anything else before it is skipped.

        Raises:
            ReceiverCancelled: it sent CAN CAN instead.
            BlockTimeout: no ``'C'`` within the timeout.
        """
        wait = self.timeouts.start_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        previous_can = False
        while (left := deadline - time.monotonic()) > 0:
            got = self.link.read(1, left)
            if not got:
                break
            if got[0] == CRC_REQUEST:
                return
            if got[0] == CAN and previous_can:
                raise ReceiverCancelled(
                    f"{self.what}: the receiver cancelled before the first block",
                    port=self.port,
                    phase=Phase.WRITE,
                )
            previous_can = got[0] == CAN
        raise BlockTimeout(
            f"{self.what}: the receiver did not ask for data ('C') within {wait:g} s",
            port=self.port,
            phase=Phase.WRITE,
        )

    def send(
        self,
        data: bytes,
        on_progress: ProgressFn = no_progress,
        prepared: Sequence[bytes] | None = None,
    ) -> int:
        """Send ``data`` block by block, then EOT. Call after :meth:`wait_for_start`.

        Extra ``'C'`` the receiver sent before it saw the first block are skipped. Each
        frame goes out in one write and each answer is read as one byte;
        ``on_progress(Phase.WRITE, done, total, "")`` reports the bytes acknowledged so far
        after each ACK. ``prepared`` is ``list(frames(data, fill))`` built beforehand: a
        caller that builds it before the receiver starts (6 ms for 256 KiB) keeps that
        off the transfer's time.

        Returns:
            The number of blocks sent.

        Raises:
            BlockRefused: a block was NAKed (or its answer garbled) ``tries`` times.
            BlockTimeout: a block went unanswered ``tries`` times.
            ReceiverCancelled: the receiver sent CAN CAN (the transfer is over).
            UnexpectedOutput: the receiver sent text instead of an answer.
        """
        total = len(data)
        # Every frame is built before the first goes out (about 3 µs a block), so that
        # between an ACK and the next frame there is only the progress report, and after
        # a frame is written the sender goes straight back to waiting: work done then
        # would hold up the kernel's delivery of that frame on this CPU.
        if prepared is None:
            prepared = list(frames(data, self.fill))
        elif len(prepared) != block_count(total):
            raise ValueError(f"{len(prepared)} prepared frames for {block_count(total)} blocks")
        for index, frame in enumerate(prepared):
            self.link.write(frame)
            self._exchange(frame, index + 1)
            on_progress(Phase.WRITE, min((index + 1) * BLOCK_SIZE, total), total, "")
        self.link.write(_EOT)
        self._exchange(_EOT, None)
        return len(prepared)

    def summary(self) -> str | None:
        """One line on the blocks that needed more than one try (None if none did)."""
        if not self.retried:
            return None
        shown = sorted(self.retried)[:10]
        more = ", ..." if len(self.retried) > len(shown) else ""
        listed = ", ".join(f"{b} ({self.retried[b]} tries)" for b in shown)
        return f"{self.what}: {len(self.retried)} block(s) needed more than one try: {listed}{more}"

    def cancel(self) -> None:
        """Tell the receiver to give up: CAN CAN (Forsberg's minimum is two)."""
        self.link.write(bytes([CAN, CAN]))

    def _exchange(self, frame: bytes, block: int | None) -> None:
        """Have ``frame``, already sent once, acknowledged; send it again as needed."""
        label = self._label(block)
        last = _Answer.TIMEOUT
        silent = 0
        attempt = 0
        while attempt < self.tries and silent < self.timeout_tries:
            attempt += 1
            if attempt > 1:
                self.retransmissions += 1
                self.link.write(frame)
            last = self._answer(block)
            if last is _Answer.ACK:
                if attempt > 1 and block is not None:
                    self.retried[block] = attempt
                return
            silent = silent + 1 if last is _Answer.TIMEOUT else 0
        message = f"{label}: {last.value} after {attempt} tries"
        if last is _Answer.TIMEOUT:
            raise BlockTimeout(message, block=block, port=self.port, phase=Phase.WRITE)
        raise BlockRefused(message, block=block, port=self.port, phase=Phase.WRITE)

    def _answer(self, block: int | None) -> _Answer:
        """Wait for the receiver's answer to what was just sent."""
        deadline = time.monotonic() + self.timeouts.response_s
        # One blocking read of one byte. The first read asks for the whole response time:
        # a constant timeout spares a termios re-configuration on every block (pyserial
        # re-applies it on each change). The clock is read again only when the byte was
        # not the answer, so an ACK costs nothing more between its arrival and the next
        # frame.
        left = self.timeouts.response_s
        while left > 0:
            got = self.link.read(1, left)
            if not got:
                break
            byte = got[0]
            if byte == ACK:
                return _Answer.ACK
            if byte == NAK:
                return _Answer.NAK
            if byte == CRC_REQUEST:
                # a start request sent before the receiver saw our first block
                left = deadline - time.monotonic()
                continue
            if byte == CAN:
                second = self.link.read(1, self.timeouts.second_can_s)
                if second == bytes([CAN]):
                    raise ReceiverCancelled(
                        f"{self._label(block)}: the receiver cancelled the transfer (CAN CAN)",
                        block=block,
                        port=self.port,
                        phase=Phase.WRITE,
                    )
                if not second:
                    return _Answer.GARBLED  # a lone CAN: line noise
                byte = second[0]
                if byte in (ACK, NAK):
                    return _Answer.ACK if byte == ACK else _Answer.NAK
            # Not an answer. One stray byte is a garbled ACK or NAK: sending the block
            # again is safe either way (a receiver that has it ACKs and discards a repeat).
            # More than that is the receiver talking: it is no longer receiving.
            rest = self.link.read(4096, self.timeouts.quiet_s)
            if rest:
                raise UnexpectedOutput(
                    f"{self._label(block)}: the receiver sent {len(rest) + 1} bytes of "
                    "output instead of an answer",
                    bytes([byte]) + rest,
                    block=block,
                    port=self.port,
                    phase=Phase.WRITE,
                )
            return _Answer.GARBLED
        return _Answer.TIMEOUT

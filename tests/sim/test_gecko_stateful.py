"""Stateful Hypothesis tests of the Gecko hub's XMODEM receiver against a reference.

Any sequence of blocks, repeats, damaged and cut blocks, out-of-sequence blocks, timeouts,
CANs, EOTs and fresh uploads must leave the hub in a legal state with the answers the
reference predicts; a completed upload means the application in flash is the image, and an
application that would boot is always exactly the image (never a false pass).
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from drivers.xmodem import ACK, CAN, EOT, NAK, encode_block, frames, sequence_number
from sim.gecko import (
    MAX_ERRORS,
    START_REQUESTS,
    UPLOAD_COMPLETE,
    GeckoHub,
    Mode,
    demo_app,
    demo_gbl,
    menu_text,
)
from tests.xmodemkit import sent

NEW = 0x0105_0000
APP = demo_app(NEW, size=1024)
FILE = demo_gbl(NEW, size=1024)
FRAMES = list(frames(FILE))
CANS = bytes([CAN]) * 3


class ReceiverMachine(RuleBasedStateMachine):
    """The reference: how many blocks the hub has accepted, and its error count."""

    def __init__(self) -> None:
        super().__init__()
        self.hub = GeckoHub()
        self.hub.power_on()
        self.hub.settle()
        self.receiving = False
        self.next = 0  # index of the block the hub expects next
        self.errors = 0
        self.heard = False  # any byte since the upload started (ends the 'C' requests)
        self.requests = 0
        self.completed = False

    # -- helpers -------------------------------------------------------------------------

    def answer(self, data: bytes) -> bytes:
        self.heard = True
        return sent(self.hub.feed(data))

    def aborted(self, answer: bytes) -> None:
        assert answer.endswith(CANS), answer
        assert b"Serial upload aborted" in sent(self.hub.settle())
        self.receiving = False

    def error(self, answer: bytes) -> None:
        self.errors += 1
        if self.errors >= MAX_ERRORS:
            self.aborted(answer)
        else:
            assert answer == bytes([NAK])

    # -- rules ---------------------------------------------------------------------------

    @precondition(lambda self: not self.receiving)
    @rule()
    def start_upload(self) -> None:
        self.hub.feed(b"1")
        assert sent(self.hub.settle()) == b"C"
        self.receiving, self.next, self.errors = True, 0, 0
        self.heard, self.requests, self.completed = False, 1, False

    @precondition(lambda self: self.receiving and self.next < len(FRAMES))
    @rule()
    def next_block(self) -> None:
        assert self.answer(FRAMES[self.next]) == bytes([ACK])
        self.next += 1
        self.errors = 0

    @precondition(lambda self: self.receiving and self.next < len(FRAMES))
    @rule(count=st.integers(2, len(FRAMES)))
    def next_blocks(self, count: int) -> None:
        for _ in range(min(count, len(FRAMES) - self.next)):
            self.next_block()

    @precondition(lambda self: self.receiving and self.next > 0)
    @rule()
    def repeat_block(self) -> None:
        assert self.answer(FRAMES[self.next - 1]) == bytes([ACK])
        self.errors = 0

    @precondition(lambda self: self.receiving and self.next < len(FRAMES))
    @rule(where=st.integers(1, 132), bit=st.integers(0, 7))
    def damaged_block(self, where: int, bit: int) -> None:
        frame = bytearray(FRAMES[self.next])
        frame[where] ^= 1 << bit
        self.error(self.answer(bytes(frame)))

    @precondition(lambda self: self.receiving and self.next < len(FRAMES))
    @rule(bit=st.integers(0, 7))
    def damaged_start(self, bit: int) -> None:
        frame = bytearray(FRAMES[self.next])
        frame[0] ^= 1 << bit  # no SOH where a block should start: the upload ends
        self.aborted(self.answer(bytes(frame)))

    @precondition(lambda self: self.receiving and self.next < len(FRAMES))
    @rule(length=st.integers(1, 132))
    def cut_block(self, length: int) -> None:
        assert self.answer(FRAMES[self.next][:length]) == b""
        self.error(sent(self.hub.expire()))

    @precondition(lambda self: self.receiving)
    @rule()
    def silence(self) -> None:
        answer = sent(self.hub.expire())
        if self.heard:
            self.error(answer)
        elif self.requests >= START_REQUESTS:
            assert answer == CANS + menu_text()  # a minute of 'C' unanswered: back to the menu
            self.receiving = False
        else:
            assert answer == b"C"
            self.requests += 1

    @precondition(lambda self: self.receiving)
    @rule(offset=st.integers(2, 250))
    def out_of_sequence(self, offset: int) -> None:
        number = sequence_number(self.next - 1 + offset)  # neither expected nor a repeat
        self.aborted(self.answer(encode_block(number, FRAMES[0][3:131])))

    @precondition(lambda self: self.receiving)
    @rule()
    def cancel(self) -> None:
        self.aborted(self.answer(bytes([CAN, CAN])))

    @precondition(lambda self: self.receiving)
    @rule()
    def end(self) -> None:
        answer = self.answer(bytes([EOT]))
        if self.next == len(FRAMES):
            assert answer == bytes([ACK])
            assert sent(self.hub.settle()).startswith(UPLOAD_COMPLETE)
            self.receiving = False
            self.completed = True
            event("an upload completed")
        else:
            self.aborted(answer)

    @precondition(lambda self: not self.receiving)
    @rule()
    def run(self) -> None:
        self.hub.feed(b"2")
        out = sent(self.hub.settle())
        if self.hub.mode is Mode.APP:
            event("the uploaded application ran")
            assert out == b"CHUB APP 0x01050000 READY\r\n"
            self.hub.feed(b"BOOT\r\n")
            self.hub.settle()
        assert self.hub.mode is Mode.MENU

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def legal_state(self) -> None:
        expected = Mode.RECEIVING if self.receiving else Mode.MENU
        assert self.hub.mode is expected
        assert self.hub.pending_timer is None  # no deaf wait left unfinished

    @invariant()
    def bootable_means_exactly_the_image(self) -> None:
        if self.hub.application() is not None:
            assert self.hub.app_bytes(len(APP)) == APP
        if self.completed and not self.receiving:
            assert self.hub.app_bytes(len(APP)) == APP


ReceiverMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestReceiver = ReceiverMachine.TestCase

"""Hypothesis state machine: the simulated MCUboot server against a reference of
boot_serial.c's upload rules (expected offset, alignment cut, bounds), with framing faults
(over-long lines, oversized frames, garbage) that MCUboot drops without answering."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from drivers import smp as d
from sim.smp import SLOT0, WRITE_ALIGN, McubootHub, demo_image
from tests.smpkit import ModelLink

IMAGE = demo_image(0x0102_0300, size=8 * 1024)


def too_big(message: bytes) -> bool:
    """Whether MCUboot's buffer (receive size + 1 for the NUL) cannot take the frame."""
    return len(message) + 4 > d.RECEIVE_SIZE + 1


class SmpServer(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hub = McubootHub()
        self.link = ModelLink(self.hub)
        self.client = d.SmpClient(self.link, answer_timeout_s=1.0, tries=1)
        self.expected = 0  # reference curr_off
        self.size = 0  # reference img_size (0: no upload started)

    def ask(self, message: bytes) -> dict[Any, Any] | None:
        self.client.send_message(message)
        decoder = d.FrameDecoder(limit=1 << 16)
        while (line := self.link.read_line(0)) is not None:
            got = decoder.feed(line)
            if got is not None:
                hdr, body = d.split_message(got)
                assert hdr.op == d.SmpHeader.unpack(message).op + 1
                assert hdr.sequence == d.SmpHeader.unpack(message).sequence
                return body
        return None

    @rule(n=st.integers(1, 1100))
    def start(self, n: int) -> None:
        message = d.upload_request(0, IMAGE[:n], total=len(IMAGE), sequence=1)
        body = self.ask(message)
        if too_big(message):
            assert body is None  # MCUboot drops it unanswered
            return
        assert body is not None
        if n > len(IMAGE):
            return
        self.size = len(IMAGE)
        cut = n - n % WRITE_ALIGN if n < len(IMAGE) else n
        self.expected = cut
        assert body == {"rc": 0, "off": cut}

    @precondition(lambda self: self.size)
    @rule(delta=st.integers(-64, 64), n=st.integers(0, 1000))
    def chunk(self, delta: int, n: int) -> None:
        off = max(1, self.expected + delta)
        message = d.upload_request(off, IMAGE[off : off + n], sequence=2)
        body = self.ask(message)
        if too_big(message):
            assert body is None
            return
        assert body is not None
        if off != self.expected:
            assert body == {"rc": 0, "off": self.expected}
            return
        n = len(IMAGE[off : off + n])
        cut = n - n % WRITE_ALIGN if off + n < self.size else n
        self.expected += cut
        assert body == {"rc": 0, "off": self.expected}

    @rule(extra=st.integers(1, 200))
    def overlong_line(self, extra: int) -> None:
        self.link.write(b"\x06\x09" + b"A" * (126 + extra) + b"\n")
        assert self.link.read_line(0) is None

    @rule()
    def oversized_frame(self) -> None:
        big = d.upload_request(self.expected or 1, b"\0" * 1100, sequence=3)
        assert self.ask(big) is None  # dropped: no answer, no state change

    @rule(junk=st.binary(max_size=200).filter(lambda b: b"\n" not in b))
    def console_noise(self, junk: bytes) -> None:
        self.link.write(junk + b"\n")

    @rule(text=st.text(max_size=40))
    def echo(self, text: str) -> None:
        assert self.client.echo(text) == text

    @rule(group=st.integers(2, 100), cmd=st.integers(0, 255))
    def unsupported(self, group: int, cmd: int) -> None:
        hdr = d.SmpHeader(0, 1, 0, 1, group, 7, cmd).pack()
        assert self.ask(hdr + b"\xa0") == {"rc": 8}

    @invariant()
    def flash_holds_what_was_acknowledged(self) -> None:
        assert self.hub.upload_offset == self.expected
        assert self.hub.flash.read(SLOT0, self.expected) == IMAGE[: self.expected]

    @invariant()
    def listed_only_when_complete(self) -> None:
        complete = self.expected == len(IMAGE)
        assert (self.hub.slot_image(0) is not None) == complete


SmpServer.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestSmpServer = SmpServer.TestCase

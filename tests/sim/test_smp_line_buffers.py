"""MCUboot's line buffers (``boot/zephyr/serial_adapter.c``, ``CONFIG_BOOT_LINE_BUFS``, 8):
a line holds a buffer from its first byte until the server has handled it, and lines that
arrive while every buffer is taken are lost. Timed through the pacer on a virtual clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from smp import os_management as os_mgmt

from drivers import smp as d
from sim.core.pacing import Clocked, Pacer
from sim.smp import LINE_BUFS, McubootHub, demo_image

BAUD = 115200


class PacedLink:
    """A line link to a hub through a :class:`Pacer` on a virtual clock."""

    url = "paced://smp"

    def __init__(self, hub: McubootHub) -> None:
        self.pacer = Pacer(hub, baud=BAUD, bits_per_byte=10)
        self.now = 0.0
        self.rx = bytearray()
        self.pacer.start(0.0)
        self.run(1.0)  # MCUboot is in recovery

    def run(self, until: float) -> None:
        for data in self.pacer.pop_due(until):
            self.rx += data or b""
        self.now = max(self.now, until)

    def write(self, data: bytes) -> None:
        self.pacer.receive(data, self.now)

    def read_line(self, timeout_s: float) -> bytes | None:
        deadline = self.now + timeout_s
        while (at := self.rx.find(b"\n")) < 0:
            due = self.pacer.next_due()
            if due is None or due > deadline:
                self.now = deadline
                return None
            self.run(due)
        line = bytes(self.rx[:at])
        del self.rx[: at + 1]
        return line

    def clock(self) -> float:
        return self.now


def echo_line(n: int) -> bytes:
    (line,) = d.encode_frame(bytes(os_mgmt.EchoWriteRequest(d=f"e{n}", sequence=n)))
    return line


def answers(link: PacedLink) -> int:
    """How many SMP answers have come back once everything due has run."""
    link.run(link.now + 60.0)
    decoder, count = d.FrameDecoder(limit=1 << 16), 0
    for line in bytes(link.rx).split(b"\n"):
        if line and decoder.feed(line) is not None:
            count += 1
    return count


def test_the_hub_is_clocked_by_its_pacer() -> None:
    assert isinstance(McubootHub(), Clocked)


def test_a_flood_while_the_slot_is_erased_loses_the_lines_past_the_buffers() -> None:
    hub = McubootHub()
    link = PacedLink(hub)
    first = d.upload_request(0, b"\xaa" * 64, total=4096, image=0, sequence=100)
    flood = 12
    # The upload's line keeps its buffer for the whole slot erase (160 pages, 3.5 s); the
    # echoes that arrive meanwhile take the other 7 buffers and the rest are lost.
    link.write(b"".join(d.encode_frame(first)) + b"".join(echo_line(i) for i in range(flood)))
    assert answers(link) == 1 + (LINE_BUFS - 1)
    assert hub.lost_lines == flood - (LINE_BUFS - 1)
    assert hub.dropped_frames == 0


def test_a_flood_while_idle_loses_nothing() -> None:
    hub = McubootHub()
    link = PacedLink(hub)
    link.write(b"".join(echo_line(i) for i in range(3 * LINE_BUFS)))
    assert answers(link) == 3 * LINE_BUFS
    assert hub.lost_lines == 0


def test_unpaced_no_line_is_lost() -> None:
    hub = McubootHub()
    pacer = Pacer(hub, baud=BAUD, bits_per_byte=10, paced=False)
    pacer.start(0.0)
    pacer.pop_due(0.0)
    first = d.upload_request(0, b"\xaa" * 64, total=4096, image=0, sequence=100)
    pacer.receive(b"".join(d.encode_frame(first)) + echo_line(1) * 20, 0.0)
    assert hub.lost_lines == 0


@settings(max_examples=10, deadline=None)
@given(size=st.sampled_from([2048, 8192, 20000]), receive_size=st.sampled_from([256, 1024]))
def test_the_driver_waits_for_each_answer_and_never_loses_a_line(
    size: int, receive_size: int
) -> None:
    hub = McubootHub(receive_size=receive_size)
    link = PacedLink(hub)
    client = d.SmpClient(
        link, receive_size=receive_size, answer_timeout_s=20.0, tries=1, clock=link.clock
    )
    image = demo_image(0x0105_0000, size=size)
    client.upload(image, chunk=d.chunk_size(receive_size, len(image)))
    assert hub.upload_offset == len(image)
    assert (hub.lost_lines, hub.dropped_frames, hub.dropped_lines) == (0, 0, 0)

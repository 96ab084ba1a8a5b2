"""The DFU state machine of the simulated hub against the protocol's own table.

A plain DFU 1.1 hub (paced, manifestation tolerant) is driven by random sequences of
requests at explicit times. A small reference model (the state table of protocols.md §2.4
with the choices of docs/sim-dfu.md) predicts every reply; invariants: the hub is always in
a legal DFU state, agrees with the reference, and after a manifestation its flash holds
exactly the image downloaded.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from drivers.dfu_codes import DfuRequest, DfuState, DfuStatus, StatusReply
from drivers.errors import ImageError
from firmware_images.build import demo_payload
from firmware_images.descriptor import check_payload
from sim.pty import derive_eui64
from sim.usb_dfu import FLASH_BASE, STATES_DFU, DfuHubSpec, Mode, SimUsbBus

S = DfuState
OUT, IN = 0x21, 0xA1
APP = demo_payload(0x0102_0000, size=2048)
ABORTABLE = {
    S.DFU_IDLE,
    S.DFU_DNLOAD_SYNC,
    S.DFU_DNLOAD_IDLE,
    S.DFU_MANIFEST_SYNC,
    S.DFU_UPLOAD_IDLE,
}


class DfuMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        spec = DfuHubSpec(
            slot=1, eui64=derive_eui64(9, 1), dfuse=False, manifestation_tolerant=True
        )
        self.bus = SimUsbBus.of([spec])
        self.hub = self.bus.hubs[0]
        self.now = 0.0
        self.bus.advance(self.now)
        # Reference model.
        self.state = S.DFU_IDLE
        self.executed = False  # the pending DNLOAD ran (at the GETSTATUS that went busy)
        self.fault: str | None = None  # injected for the next block
        self.block_fault: str | None = None  # the pending block's fault
        self.image = bytearray()  # accepted blocks of this download session
        self.pending = b""
        self.busy_until = 0.0
        self.manifested: bytes | None = None

    # -- plumbing --------------------------------------------------------------------------

    def call(self, request: DfuRequest, value: int = 0, data: bytes = b"", length: int = 0):
        self.bus.advance(self.now)
        bm = (
            IN if request in (DfuRequest.UPLOAD, DfuRequest.GETSTATUS, DfuRequest.GETSTATE) else OUT
        )
        reply = self.hub.control(self.now, self.now, bm, request, value, 0, data, length, 1000)
        self.now = reply.done_at + 0.0005
        return reply

    def stalled(self) -> None:
        self.state = S.DFU_ERROR
        self.pending = b""

    # -- rules -------------------------------------------------------------------------------

    @rule(data=st.binary(min_size=4, max_size=256).map(lambda b: b[: len(b) // 4 * 4]))
    def dnload(self, data: bytes) -> None:
        self._dnload(data)

    @rule()
    def dnload_app_piece(self) -> None:
        # Pieces of a valid application, so some downloads manifest into a bootable image.
        self._dnload(APP[len(self.image) : len(self.image) + 256] or APP[:256])

    @precondition(lambda self: self.state in (S.DFU_IDLE, S.DFU_DNLOAD_IDLE))
    @rule(app=st.booleans(), data=st.binary(min_size=4, max_size=64))
    def block(self, app: bool, data: bytes) -> None:
        # What a host does per block: DNLOAD, then GETSTATUS until it is done.
        piece = APP[len(self.image) : len(self.image) + 256] if app else data[: len(data) // 4 * 4]
        self._dnload(piece or APP[:256])
        self.getstatus(early=False)
        self.getstatus(early=False)

    @precondition(lambda self: self.state in (S.DFU_IDLE, S.DFU_DNLOAD_IDLE))
    @rule()
    def manifest(self) -> None:
        self.dnload_end()
        self.getstatus(early=False)
        self.getstatus(early=False)

    def _dnload(self, data: bytes) -> None:
        if self.state == S.DFU_DNBUSY and self.now < self.busy_until:
            self.now = self.busy_until
        if self.state == S.DFU_DNBUSY:
            self.state = S.DFU_DNLOAD_SYNC
        reply = self.call(DfuRequest.DNLOAD, 0, data)
        if self.state in (S.DFU_IDLE, S.DFU_DNLOAD_IDLE) and self.fault != "stall":
            assert reply.error is None
            if self.state == S.DFU_IDLE:
                self.image = bytearray()
            self.state, self.executed, self.pending = S.DFU_DNLOAD_SYNC, False, data
            self.block_fault, self.fault = self.fault, None
        else:
            assert reply.error == -9
            if self.state in (S.DFU_IDLE, S.DFU_DNLOAD_IDLE):
                self.fault = None  # the stall fault fired on this block
            self.stalled()

    @rule()
    def dnload_end(self) -> None:
        if self.state == S.DFU_DNBUSY:
            self.now = max(self.now, self.busy_until)
            self.state = S.DFU_DNLOAD_SYNC
        reply = self.call(DfuRequest.DNLOAD, 0, b"")
        if self.state in (S.DFU_IDLE, S.DFU_DNLOAD_IDLE):
            assert reply.error is None
            if self.state == S.DFU_IDLE:
                self.image = bytearray()
            self.state = S.DFU_MANIFEST_SYNC
        else:
            assert reply.error == -9
            self.stalled()

    @rule(early=st.booleans())
    def getstatus(self, early: bool) -> None:
        busy = self.state in (S.DFU_DNBUSY, S.DFU_MANIFEST) and self.now < self.busy_until
        if busy and early:
            reply = self.call(DfuRequest.GETSTATUS, length=6)
            assert reply.error == -9 and self.hub.violations
            self.hub.violations.clear()
            self.stalled()
            return
        if busy:
            self.now = self.busy_until
        reply = self.call(DfuRequest.GETSTATUS, length=6)
        assert reply.error is None
        got = StatusReply.parse(reply.data)
        if self.state == S.DFU_DNLOAD_SYNC and not self.executed:
            self.state, self.executed = S.DFU_DNBUSY, True
            self.busy_until = self.now - 0.0005 + got.poll_timeout_ms / 1000
        elif self.state in (S.DFU_DNBUSY, S.DFU_DNLOAD_SYNC):
            if self.block_fault is None:
                self.state = S.DFU_DNLOAD_IDLE
                self.image += self.pending + b"\xff" * (-len(self.pending) % 4)
            else:
                self.state = S.DFU_ERROR
                assert got.status in (DfuStatus.ERR_WRITE, DfuStatus.ERR_VERIFY)
            self.pending = b""
        elif self.state == S.DFU_MANIFEST_SYNC:
            self.state = S.DFU_MANIFEST
            self.busy_until = self.now - 0.0005 + got.poll_timeout_ms / 1000
        elif self.state == S.DFU_MANIFEST:
            self.manifested = bytes(self.image)
            try:
                check_payload(self.hub.flash.read(FLASH_BASE, 2048))
                self.state = S.DFU_IDLE
            except ImageError:
                self.state = S.DFU_ERROR
                assert got.status == DfuStatus.ERR_FIRMWARE
        assert got.state == self.state, (got, self.state)

    @rule()
    def abort(self) -> None:
        if self.state in (S.DFU_DNBUSY, S.DFU_MANIFEST):
            self.now = max(self.now, self.busy_until)
            if self.state == S.DFU_MANIFEST:
                return  # manifestation ends on its own at the next request: not modelled here
            self.state = S.DFU_DNLOAD_SYNC
        reply = self.call(DfuRequest.ABORT)
        if self.state in ABORTABLE:
            assert reply.error is None
            self.state, self.pending = S.DFU_IDLE, b""
        else:
            assert reply.error == -9
            self.stalled()

    @rule()
    def clrstatus(self) -> None:
        if self.state in (S.DFU_DNBUSY, S.DFU_MANIFEST):
            return
        reply = self.call(DfuRequest.CLRSTATUS)
        if self.state == S.DFU_ERROR:
            assert reply.error is None
            self.state = S.DFU_IDLE
        else:
            assert reply.error == -9
            self.stalled()

    @precondition(lambda self: self.state in (S.DFU_IDLE, S.DFU_UPLOAD_IDLE))
    @rule(length=st.integers(1, 512))
    def upload(self, length: int) -> None:
        offset = 0 if self.state == S.DFU_IDLE else self.hub.upload_offset
        reply = self.call(DfuRequest.UPLOAD, 0, length=length)
        assert reply.error is None
        assert reply.data == self.hub.flash.read(FLASH_BASE + offset, length)
        self.state = S.DFU_UPLOAD_IDLE

    @rule(kind=st.sampled_from(["errwrite", "errverify", "stall"]))
    def inject_fault(self, kind: str) -> None:
        self.hub.faults = {self.hub.data_blocks: kind}
        self.fault = kind

    @precondition(lambda self: self.state not in (S.DFU_DNBUSY, S.DFU_MANIFEST))
    @rule()
    def reconnect(self) -> None:
        # USB reset of a hub whose boot pin is strapped: back in DFU mode, new address.
        address = self.hub.address
        assert self.hub.usb_reset(self.now)
        self.now += 1.0
        self.bus.advance(self.now)
        assert self.hub.mode is Mode.DFU and self.hub.address != address
        self.state, self.pending, self.image = S.DFU_IDLE, b"", bytearray()
        self.fault = None
        self.hub.faults = {}

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def state_is_legal_and_agrees(self) -> None:
        assert self.hub.mode is Mode.DFU
        assert self.hub.state in STATES_DFU
        if self.state in (S.DFU_DNBUSY, S.DFU_MANIFEST) and self.now >= self.busy_until:
            return  # the hub moves on lazily at the next request
        assert self.hub.state == self.state

    @invariant()
    def after_manifest_memory_is_the_image(self) -> None:
        if self.manifested is not None:
            assert self.hub.flash.read(FLASH_BASE, len(self.manifested)) == self.manifested
            assert self.hub.manifested[-1] == self.manifested[: len(self.hub.manifested[-1])]
            self.manifested = None


DfuMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
TestDfuMachine = DfuMachine.TestCase

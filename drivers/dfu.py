"""USB DFU 1.1 and ST DfuSe, host side.

Byte-exact to ``shared/reference/protocols.md`` §2. One driver object talks to one hub
through a :class:`~drivers.transport.usb.UsbLink`; it never prints or starts threads, and
the only waits are the ones the protocol orders: bwPollTimeout after a GETSTATUS (the device
is busy programming or erasing and must not be spoken to) and the re-enumeration of a hub
that detached. Every error names what was being done and where ("download block 12 at
0x08018000: errWRITE").

Flows:

* run-time to DFU mode (:meth:`DfuDriver.enter_dfu`): DFU_DETACH, a USB reset unless the
  device detaches itself (bitWillDetach), then wait, with a deadline, for the same hub (its
  pinned port path and serial number) to come back under a new address with a DFU-mode
  interface;
* DfuSe download (:meth:`DfuDriver.write`): Set Address Pointer, then data blocks of
  wTransferSize from wBlockNum 2, each followed by GETSTATUS polling until
  dfuDNLOAD-IDLE. While the chunk size is the device's wTransferSize, the pointer is set
  once and the block number addresses the chunk (``pointer + (wBlockNum - 2) * size``);
  with a smaller chunk (a profile cap, like dfu-util's ``-t``) the pointer is set before
  every chunk, as dfu-util does, because the device addresses by its own transfer size;
* DfuSe page erase / mass erase, UPLOAD readback, and leave (pointer to the application,
  zero-length DNLOAD, GETSTATUS: the device manifests and jumps);
* plain DFU 1.1 download and upload (:meth:`DfuDriver.download`, :meth:`DfuDriver.upload`).

Recovery: :meth:`DfuDriver.to_idle` brings the device back to dfuIDLE from any state
(CLRSTATUS from dfuERROR, ABORT from the others) and is called before every operation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from drivers.dfu_codes import (
    DFUSE_ERASE,
    DFUSE_FIRST_DATA_BLOCK,
    DFUSE_SET_ADDRESS,
    PROTOCOL_DFU,
    PROTOCOL_RUNTIME,
    DfuRequest,
    DfuState,
    DfuStatus,
    FunctionalDescriptor,
    MemoryMap,
    StatusReply,
    state_label,
    status_label,
)
from drivers.errors import (
    DeviceTimeout,
    DfuStatusError,
    PortNotFound,
    PortVanished,
    ProtocolError,
    StationError,
    Unsupported,
)
from drivers.transport.usb import PORT_SCHEME, Clock, UsbLink
from drivers.types import Phase, ProgressFn, VerifyResult, no_progress

_BUSY_STATES = (DfuState.DFU_DNLOAD_SYNC, DfuState.DFU_DNBUSY, DfuState.DFU_MANIFEST)


@dataclass(frozen=True)
class DfuTimeouts:
    """Host-side limits.

    Attributes:
        request_ms: per control transfer (pydfu uses 4 s; fwupd found a device needing 5 s).
        reenumerate_s: how long a detaching or leaving hub may take to come back.
        busy_s: how long one operation may keep the device busy, all polls together
            (a mass erase of a large part takes tens of seconds).
    """

    request_ms: int = 5000
    reenumerate_s: float = 5.0
    busy_s: float = 60.0


def pad4(data: bytes) -> bytes:
    """Pad with erased bytes (0xFF) to a whole number of 32-bit words."""
    return data + b"\xff" * (-len(data) % 4)


class DfuDriver:
    """Client of a USB DFU 1.1 / DfuSe device.

    Args:
        link: the hub (found and claimed by :meth:`connect`).
        timeouts: host-side limits.
        transfer_size: cap on bytes per DNLOAD/UPLOAD (default: the device's wTransferSize).
        clock: time source for bwPollTimeout waits and deadlines (tests: simulated).
    """

    PROTOCOL = "dfu"
    SUPPORTS_ERASE = True
    SUPPORTS_READBACK = True

    def __init__(
        self,
        link: UsbLink,
        *,
        timeouts: DfuTimeouts | None = None,
        transfer_size: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.link = link
        self.timeouts = timeouts or DfuTimeouts()
        self.link.timeout_ms = self.timeouts.request_ms
        if clock is not None:
            self.link.clock = clock
        self.transfer_cap = transfer_size
        self.functional: FunctionalDescriptor | None = None
        self.mode: str | None = None  # "runtime" or "dfu"
        self._quiet_until = 0.0
        #: Human-readable notes on recoveries, for the job record.
        self.notes: list[str] = []

    @property
    def port(self) -> str:
        """The port this driver talks to (``usb:...``)."""
        return self.link.port

    @property
    def clock(self) -> Clock:
        """The clock the driver waits on (the link's)."""
        return self.link.clock

    # -- connection --------------------------------------------------------------------

    def connect(self) -> str:
        """Find the hub, claim its DFU interface; returns ``"runtime"`` or ``"dfu"``.

        Raises:
            PortNotFound: no such hub, or it has no DFU interface.
            AmbiguousDevice: the selection matches more than one device.
        """
        self.link.find()
        intf = self.link.claim()
        self._after_claim()
        if intf.protocol not in (PROTOCOL_RUNTIME, PROTOCOL_DFU):
            raise PortNotFound(
                f"{self.link.current}: DFU interface protocol {intf.protocol} is neither "
                "run-time (1) nor DFU mode (2)",
                port=self.port,
                phase=Phase.CONNECT,
            )
        return self.mode or ""

    def _after_claim(self) -> None:
        intf = self.link.interface
        assert intf is not None
        self.mode = "runtime" if intf.protocol == PROTOCOL_RUNTIME else "dfu"
        self.functional = None
        for candidate in self.link.interfaces:
            found = FunctionalDescriptor.find(candidate.extra)
            if found is not None:
                self.functional = found
                break
        if self.functional is None:
            raise ProtocolError(
                f"{self.link.current}: the DFU interface has no DFU functional descriptor",
                port=self.port,
                phase=Phase.CONNECT,
            )
        self._quiet_until = 0.0

    @property
    def transfer_size(self) -> int:
        """Bytes per DNLOAD/UPLOAD: wTransferSize, or the cap when it is smaller."""
        assert self.functional is not None
        size = self.functional.transfer_size
        return min(size, self.transfer_cap) if self.transfer_cap else size

    def enter_dfu(self) -> None:
        """From run-time mode to DFU mode: DETACH, USB reset unless the device detaches
        itself, then wait for the same hub to come back in DFU mode.

        Raises:
            PortVanished: it did not come back within ``timeouts.reenumerate_s``.
        """
        assert self.functional is not None
        if self.mode == "dfu":
            return
        timeout = min(self.functional.detach_timeout_ms, 0xFFFF)
        self._out(DfuRequest.DETACH, timeout, b"", "DFU_DETACH", Phase.CONNECT)
        if not self.functional.will_detach:
            # The device waits up to wDetachTimeOut for a USB reset to enter DFU mode.
            self.link.reset()
        self.reacquire(PROTOCOL_DFU, "DFU_DETACH", Phase.CONNECT)

    def reacquire(self, protocol: int, after: str, phase: Phase) -> None:
        """Wait for the same hub to re-enumerate showing ``protocol``, and claim it."""
        try:
            self.link.wait_for(protocol, self.timeouts.reenumerate_s, after)
        except StationError as exc:
            raise exc.located(port=self.port, phase=phase) from None
        self._after_claim()

    def memory_map(self, alt: int = 0) -> MemoryMap | None:
        """The DfuSe memory map of DFU-mode alternate setting ``alt`` (None if it has none)."""
        intf = next((i for i in self.link.interfaces if i.alt == alt), None)
        if intf is None or not intf.name:
            return None
        try:
            return MemoryMap.parse(intf.name)
        except ValueError:
            return None

    def select_alt(self, alt: int) -> None:
        """Select a DFU-mode alternate setting (DfuSe: 0 flash, 1 OTP... per device)."""
        self.link.select_alt(alt)

    # -- requests ----------------------------------------------------------------------

    def _quiet(self) -> None:
        """Stay silent until the last bwPollTimeout has elapsed."""
        wait = self._quiet_until - self.clock.monotonic()
        if wait > 0:
            self.clock.sleep(wait)

    def _out(
        self,
        request: DfuRequest,
        wValue: int,
        data: bytes,
        what: str,
        phase: Phase,
        address: int | None = None,
    ) -> None:
        self._quiet()
        try:
            self.link.control_out(request, wValue, data, what)
        except StationError as exc:
            exc.address = exc.address if exc.address is not None else address
            raise exc.located(port=self.port, phase=phase) from None

    def _in(
        self,
        request: DfuRequest,
        wValue: int,
        length: int,
        what: str,
        phase: Phase,
        address: int | None = None,
    ) -> bytes:
        self._quiet()
        try:
            return self.link.control_in(request, wValue, length, what)
        except StationError as exc:
            exc.address = exc.address if exc.address is not None else address
            raise exc.located(port=self.port, phase=phase) from None

    def get_status(self, what: str = "GETSTATUS", phase: Phase = Phase.CONNECT) -> StatusReply:
        """DFU_GETSTATUS; remembers bwPollTimeout so the next request waits for it."""
        raw = self._in(DfuRequest.GETSTATUS, 0, 6, what, phase)
        try:
            reply = StatusReply.parse(raw)
        except ValueError as exc:
            raise ProtocolError(f"{what}: {exc}", port=self.port, phase=phase) from exc
        self._quiet_until = self.clock.monotonic() + reply.poll_timeout_ms / 1000.0
        return reply

    def get_state(self, phase: Phase = Phase.CONNECT) -> int:
        """DFU_GETSTATE: bState."""
        raw = self._in(DfuRequest.GETSTATE, 0, 1, "GETSTATE", phase)
        if len(raw) != 1:
            raise ProtocolError(f"GETSTATE: {len(raw)} bytes, not 1", port=self.port, phase=phase)
        return raw[0]

    def clear_status(self, phase: Phase = Phase.CONNECT) -> None:
        """DFU_CLRSTATUS (dfuERROR -> dfuIDLE)."""
        self._out(DfuRequest.CLRSTATUS, 0, b"", "CLRSTATUS", phase)

    def abort(self, phase: Phase = Phase.CONNECT) -> None:
        """DFU_ABORT (back to dfuIDLE)."""
        self._out(DfuRequest.ABORT, 0, b"", "ABORT", phase)

    def to_idle(self, phase: Phase = Phase.CONNECT) -> None:
        """Bring the device to dfuIDLE from whatever state a failure left it in.

        Raises:
            ProtocolError: it will not get there (with the state it stays in).
        """
        for _ in range(4):
            st = self.get_status("GETSTATUS (recover)", phase)
            if st.state == DfuState.DFU_IDLE:
                return
            if st.state == DfuState.DFU_ERROR:
                self.clear_status(phase)
            elif st.state in _BUSY_STATES:
                continue  # let the operation finish (the poll wait is honoured)
            else:
                self.abort(phase)
        st = self.get_status("GETSTATUS (recover)", phase)
        if st.state != DfuState.DFU_IDLE:
            raise ProtocolError(
                f"the device stays in {state_label(st.state)} ({status_label(st.status)}) "
                "after CLRSTATUS/ABORT",
                port=self.port,
                phase=phase,
            )

    def _poll(self, what: str, phase: Phase, address: int | None) -> StatusReply:
        """GETSTATUS until the device is no longer busy; failure statuses raise."""
        deadline = self.clock.monotonic() + self.timeouts.busy_s
        while True:
            st = self.get_status(f"{what} (GETSTATUS)", phase)
            if st.status != DfuStatus.OK or st.state == DfuState.DFU_ERROR:
                raise DfuStatusError(
                    f"{what}: {status_label(st.status)} ({state_label(st.state)})",
                    status=st.status,
                    state=st.state,
                    port=self.port,
                    phase=phase,
                    address=address,
                )
            if st.state not in (DfuState.DFU_DNLOAD_SYNC, DfuState.DFU_DNBUSY):
                return st
            if self.clock.monotonic() > deadline:
                raise DeviceTimeout(
                    f"{what}: still busy after {self.timeouts.busy_s:g} s",
                    port=self.port,
                    phase=phase,
                    address=address,
                )

    def _dnload(
        self, block: int, data: bytes, what: str, phase: Phase, address: int | None
    ) -> StatusReply:
        self._out(DfuRequest.DNLOAD, block, data, what, phase, address)
        return self._poll(what, phase, address)

    # -- DfuSe ---------------------------------------------------------------------------

    def _require_dfuse(self, phase: Phase) -> None:
        if self.functional is None or not self.functional.is_dfuse:
            raise Unsupported(
                "the device is not DfuSe (bcdDFUVersion 0x011A): no addressed erase, write "
                "or readback",
                port=self.port,
                phase=phase,
            )

    def get_commands(self) -> bytes:
        """DfuSe Get Commands (UPLOAD block 0): the command bytes the device supports."""
        self._require_dfuse(Phase.IDENTIFY)
        self.to_idle(Phase.IDENTIFY)
        raw = self._in(DfuRequest.UPLOAD, 0, 32, "DfuSe Get Commands", Phase.IDENTIFY)
        self.to_idle(Phase.IDENTIFY)
        return raw

    def set_address(self, address: int, phase: Phase = Phase.WRITE) -> None:
        """DfuSe Set Address Pointer; leaves the device in dfuDNLOAD-IDLE."""
        self._require_dfuse(phase)
        cmd = bytes([DFUSE_SET_ADDRESS]) + address.to_bytes(4, "little")
        self._dnload(0, cmd, f"set address 0x{address:08X}", phase, address)

    def erase_page(self, address: int) -> None:
        """DfuSe erase of the page holding ``address`` (polls until the erase is done)."""
        self._require_dfuse(Phase.ERASE)
        cmd = bytes([DFUSE_ERASE]) + address.to_bytes(4, "little")
        self._dnload(0, cmd, f"erase page at 0x{address:08X}", Phase.ERASE, address)

    def erase_pages(self, pages: list[int], on_progress: ProgressFn = no_progress) -> None:
        """Erase the pages starting at each address of ``pages``."""
        self.to_idle(Phase.ERASE)
        for n, page in enumerate(pages, 1):
            self.erase_page(page)
            on_progress(Phase.ERASE, n, len(pages), "")
        self.abort(Phase.ERASE)

    def mass_erase(self) -> None:
        """DfuSe mass erase of the whole flash."""
        self._require_dfuse(Phase.ERASE)
        self.to_idle(Phase.ERASE)
        self._dnload(0, bytes([DFUSE_ERASE]), "mass erase", Phase.ERASE, None)
        self.abort(Phase.ERASE)

    def write(
        self,
        address: int,
        data: bytes,
        *,
        first_block: int = 0,
        on_progress: ProgressFn = no_progress,
        progress_base: int = 0,
        progress_total: int | None = None,
    ) -> None:
        """DfuSe download of ``data`` at ``address`` (pages already erased).

        Args:
            first_block: index of the first chunk within the image, for messages when
                resuming ("download block 12 at 0x08018000").
            progress_base, progress_total: so a resumed write reports overall progress.

        Raises:
            DfuStatusError: the device reported a failure; ``address`` is the block's.
            UsbStall, PortVanished, LinkTimeout: the transfer failed; ``address`` likewise.
        """
        self._require_dfuse(Phase.WRITE)
        data = pad4(data)
        size = self.transfer_size
        assert self.functional is not None
        by_block_number = size == self.functional.transfer_size
        total = progress_total if progress_total is not None else len(data)
        self.to_idle(Phase.WRITE)
        block = 0x10000  # forces a Set Address Pointer before the first chunk
        for n, offset in enumerate(range(0, len(data), size)):
            at = address + offset
            chunk = data[offset : offset + size]
            if not by_block_number or block > 0xFFFF:
                self.set_address(at)
                block = DFUSE_FIRST_DATA_BLOCK
            what = f"download block {first_block + n} at 0x{at:08X}"
            self._dnload(block, chunk, what, Phase.WRITE, at)
            block += 1
            on_progress(Phase.WRITE, progress_base + offset + len(chunk), total, "")
        self.abort(Phase.WRITE)

    def read(
        self,
        address: int,
        length: int,
        *,
        phase: Phase = Phase.VERIFY,
        on_progress: ProgressFn = no_progress,
    ) -> bytes:
        """DfuSe UPLOAD of ``length`` bytes at ``address`` (from the selected alt setting)."""
        self._require_dfuse(phase)
        assert self.functional is not None
        if not self.functional.can_upload:
            raise Unsupported("the device cannot upload (no bitCanUpload)", port=self.port)
        size = self.transfer_size
        by_block_number = size == self.functional.transfer_size
        out = bytearray()
        self.to_idle(phase)
        block = 0x10000
        while len(out) < length:
            at = address + len(out)
            if not by_block_number or block > 0xFFFF:
                if out:
                    self.abort(phase)  # leave dfuUPLOAD-IDLE: commands start from dfuIDLE
                self.set_address(at, phase)
                self.abort(phase)  # UPLOAD starts from dfuIDLE
                block = DFUSE_FIRST_DATA_BLOCK
            want = min(size, length - len(out))
            what = f"upload {want} bytes at 0x{at:08X}"
            got = self._in(DfuRequest.UPLOAD, block, want, what, phase, at)
            if len(got) < want:
                raise ProtocolError(
                    f"{what}: the device sent {len(got)} bytes (end of its memory?)",
                    port=self.port,
                    phase=phase,
                    address=at,
                )
            out += got[:want]
            block += 1
            on_progress(phase, len(out), length, "")
        self.to_idle(phase)
        return bytes(out)

    def block_state(self, address: int, chunk: bytes) -> str:
        """``"written"`` (holds ``chunk``), ``"erased"`` or ``"dirty"``, by readback."""
        back = self.read(address, len(pad4(chunk)), phase=Phase.WRITE)
        if back == pad4(chunk):
            return "written"
        return "erased" if back == b"\xff" * len(back) else "dirty"

    def verify(
        self, address: int, data: bytes, *, on_progress: ProgressFn = no_progress
    ) -> VerifyResult:
        """Read the flash back (UPLOAD) and compare; DFU offers no device-side CRC."""
        data = pad4(data)
        back = self.read(address, len(data), on_progress=on_progress)
        if back == data:
            return VerifyResult(True, "readback", f"{len(data)} bytes read back and equal")
        first = next(i for i in range(len(data)) if back[i] != data[i])
        return VerifyResult(
            False,
            "readback",
            f"first difference at 0x{address + first:08X}: "
            f"flash 0x{back[first]:02X}, image 0x{data[first]:02X}",
        )

    def leave(self, address: int) -> None:
        """DfuSe leave: jump to ``address``. The device manifests and drops off the bus
        (it re-enumerates running the application, or in DFU mode if it cannot)."""
        self._require_dfuse(Phase.BOOT)
        self.to_idle(Phase.BOOT)
        self.set_address(address, Phase.BOOT)
        self._out(DfuRequest.DNLOAD, DFUSE_FIRST_DATA_BLOCK, b"", "leave", Phase.BOOT, address)
        # The ST bootloader may jump before this reply is seen: then it is gone.
        with contextlib.suppress(PortVanished):
            self.get_status("leave (GETSTATUS)", Phase.BOOT)
        self.link.forget()
        self.mode = None

    # -- plain DFU 1.1 -----------------------------------------------------------------

    def download(self, data: bytes, *, on_progress: ProgressFn = no_progress) -> None:
        """DFU 1.1 download: blocks from wBlockNum 0, a zero-length DNLOAD, manifestation.

        A device that is not manifestation tolerant ends in dfuMANIFEST-WAIT-RESET (or
        detaches itself): the caller then resets it or waits for it to re-enumerate.
        """
        size = self.transfer_size
        self.to_idle(Phase.WRITE)
        for n, offset in enumerate(range(0, len(data), size)):
            chunk = data[offset : offset + size]
            what = f"download block {n} (offset {offset})"
            self._dnload(n & 0xFFFF, chunk, what, Phase.WRITE, None)
            on_progress(Phase.WRITE, offset + len(chunk), len(data), "")
        blocks = -(-len(data) // size)
        self._out(DfuRequest.DNLOAD, blocks & 0xFFFF, b"", "end of download", Phase.WRITE)
        deadline = self.clock.monotonic() + self.timeouts.busy_s
        while True:
            try:
                st = self.get_status("manifestation (GETSTATUS)", Phase.WRITE)
            except PortVanished:
                self.link.forget()  # it detached itself to run the new firmware
                return
            if st.status != DfuStatus.OK or st.state == DfuState.DFU_ERROR:
                raise DfuStatusError(
                    f"manifestation: {status_label(st.status)} ({state_label(st.state)})",
                    status=st.status,
                    state=st.state,
                    port=self.port,
                    phase=Phase.WRITE,
                )
            if st.state in (DfuState.DFU_IDLE, DfuState.DFU_MANIFEST_WAIT_RESET):
                return
            if self.clock.monotonic() > deadline:
                raise DeviceTimeout(
                    f"manifestation still running after {self.timeouts.busy_s:g} s",
                    port=self.port,
                    phase=Phase.WRITE,
                )

    def upload(self, *, phase: Phase = Phase.VERIFY) -> bytes:
        """DFU 1.1 upload: UPLOAD blocks until a short one ends it."""
        size = self.transfer_size
        self.to_idle(phase)
        out = bytearray()
        block = 0
        while True:
            got = self._in(DfuRequest.UPLOAD, block & 0xFFFF, size, f"upload block {block}", phase)
            out += got
            block += 1
            if len(got) < size:
                return bytes(out)

    # -- run-time ------------------------------------------------------------------------

    def wait_runtime(self, timeout_s: float) -> None:
        """Wait for the same hub to come back in run-time mode (after leave/manifest).

        Raises:
            PortVanished: it did not (it may be back in DFU mode: the image did not boot).
        """
        try:
            self.link.wait_for(PROTOCOL_RUNTIME, timeout_s, "starting the application")
        except StationError as exc:
            raise exc.located(port=self.port, phase=Phase.CONFIRM) from None
        self._after_claim()

    def string(self, index: int, phase: Phase = Phase.IDENTIFY) -> str | None:
        """String descriptor ``index`` of the hub as it is now."""
        try:
            return self.link.string(index)
        except StationError as exc:
            raise exc.located(port=self.port, phase=phase) from None

    @property
    def bcd_device(self) -> int:
        """bcdDevice of the hub as it is now."""
        return self.link.bcd_device

    def close(self) -> None:
        """Release the hub."""
        self.link.close()


__all__ = ["PORT_SCHEME", "DfuDriver", "DfuTimeouts", "pad4"]

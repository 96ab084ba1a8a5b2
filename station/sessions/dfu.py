"""The USB DFU / ST DfuSe part of a re-flash.

``--port`` names the hub by what stays true of it: ``usb:<serial number>`` or
``usb:<bus>-<port path>`` (``usb:1-1.3``: bus 1, port 3 of the hub on root port 1). A
selection matching two hubs (two hubs with one serial number) is refused, naming both.

* connect: find the hub; if it runs its application (run-time mode), read the running
  version and EUI-64 from its string descriptors, then DFU_DETACH it into its bootloader
  and find the same hub again (pinned to its port path) under its new address;
* identify: UPLOAD the identity area (``identity_address`` on the identity alternate
  setting: ``HBID``, EUI-64, hardware version), because only the bootloader can be asked
  on a hub found blank or strapped into DFU mode; a hub found running must agree with it.
  The version of a hub found in DFU mode is the application descriptor read by UPLOAD.
  The device's DfuSe memory map must agree with the profile's flash and page size;
* erase: the image's range is read back (UPLOAD) and compared page by page, each run of
  matching pages read again; DfuSe page erase of the pages that differ (from the memory
  map), none of those read back erased; every page when the hub cannot upload;
* write: DfuSe download of each run of pages that differ. After a failure (STALL, errWRITE,
  errVERIFY, the hub dropping off the bus and re-enumerating) the hub is brought back to
  dfuIDLE (CLRSTATUS/ABORT; found again if it re-enumerated), the failed block is read
  back, and the write resumes: after it if it holds the data, at it if it is still erased,
  else from the start of its re-erased page. Blocks before it were acknowledged; the
  verify reads everything back anyway. Each resume is noted;
* verify: UPLOAD readback (DFU has no device CRC);
* boot: DfuSe leave (jump to the application address);
* confirm: wait for the same hub in run-time mode and read its running version and EUI-64.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from drivers.dfu import DfuDriver, DfuTimeouts, pad4
from drivers.dfu_codes import PROTOCOL_DFU, WRITABLE, MemoryMap
from drivers.errors import (
    ConfigError,
    DfuStatusError,
    ImageError,
    LinkTimeout,
    PortVanished,
    ProtocolError,
    StationError,
    Unsupported,
    UsbStall,
)
from drivers.page_diff import PagePlan, readback_plan
from drivers.transport.usb import OtherDevice
from drivers.types import Phase, ProgressFn
from firmware_images.descriptor import DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, unpack_descriptor
from firmware_images.loader import LoadedImage
from sim import dfu_rig as sim_dfu
from station.config import Spec
from station.outcome import FlashOutcome
from station.profiles import Profile
from station.protocols import Link, ProtocolPlugin
from station.sessions import BootloaderFacts, wrong_profile_hint
from station.sessions.trace import TracedUsbLink

IDENTITY_MAGIC = b"HBID"
_VERSION = re.compile(r"0x([0-9A-Fa-f]{8})\b")
_EUI64 = re.compile(r"\b([0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){7})\b")
_RESUMABLE = (UsbStall, DfuStatusError, PortVanished)


def _option(table: Mapping[str, Any], key: str, kind: type, default: Any, name: str) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"profile {name} [dfu]: {key!r} must be {kind.__name__}, not {value!r}")
    return value


def _usb_id(table: Mapping[str, Any], key: str, name: str) -> tuple[int, int]:
    value = table.get(key)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and 0 <= v <= 0xFFFF for v in value)
    ):
        raise ConfigError(f"profile {name} [dfu]: {key!r} must be [idVendor, idProduct]")
    return value[0], value[1]


def parse_identity(raw: bytes) -> tuple[str, int]:
    """(EUI-64, hardware version) from the identity area's first 16 bytes.

    Raises:
        StationError: no identity record there.
    """
    if raw[:4] != IDENTITY_MAGIC:
        raise StationError(
            f"no identity record in the hub's identity area (found {raw[:4]!r})",
            phase=Phase.IDENTIFY,
            hint="is the profile right for this hub? station info --profile auto identifies it",
        )
    eui = "-".join(f"{b:02X}" for b in raw[4:12])
    return eui, int.from_bytes(raw[12:14], "little")


class DfuSession:
    """One DfuSe hub on USB (see the module docstring)."""

    def __init__(self, port: str, profile: Profile) -> None:
        self.profile = profile
        opts = profile.options.get("dfu", {})
        name = profile.name
        if not isinstance(opts, Mapping):
            raise ConfigError(f"profile {name}: [dfu] must be a table")
        self.runtime_id = _usb_id(opts, "runtime_id", name)
        self.dfu_id = _usb_id(opts, "dfu_id", name)
        self.flash_alt = _option(opts, "flash_alt", int, 0, name)
        self.identity_alt = _option(opts, "identity_alt", int, 0, name)
        self.version_from = _option(opts, "version_from", str, "string", name)
        if self.version_from not in ("string", "bcdDevice"):
            raise ConfigError(f"profile {name} [dfu]: version_from is 'string' or 'bcdDevice'")
        self.version_string = _option(opts, "version_string", int, 0, name)
        self.eui64_string = _option(opts, "eui64_string", int, 0, name)
        if self.version_from == "string" and not self.version_string:
            raise ConfigError(f"profile {name} [dfu]: version_from 'string' needs version_string")
        if not self.eui64_string:
            raise ConfigError(f"profile {name} [dfu]: eui64_string is required")
        transfer = _option(opts, "transfer_size", int, 0, name)
        timeouts = DfuTimeouts(
            request_ms=_option(opts, "request_timeout_ms", int, 5000, name),
            reenumerate_s=_option(opts, "reenumerate_timeout_s", float, 5.0, name),
        )
        if profile.identity_address is None:
            raise ConfigError(f"profile {name}: DFU profiles need identity_address")
        self.link = TracedUsbLink(
            port,
            ids=(self.runtime_id, self.dfu_id),
            same_serial=_option(opts, "same_serial", bool, True, name),
        )
        self.drv = DfuDriver(self.link, timeouts=timeouts, transfer_size=transfer or None)
        self.notes = self.drv.notes
        self.memory: MemoryMap | None = None
        #: Which pages the write covers, learnt before erasing (:meth:`erase`).
        self.page_plan: PagePlan | None = None

    def close(self) -> None:
        self.drv.close()

    def exchanges(self) -> list[str]:
        """The last DFU class requests and answers (see :class:`TracedUsbLink`)."""
        return self.link.exchanges()

    def _wrong_profile(self) -> str:
        return wrong_profile_hint(self.profile, self.drv.port)

    # -- run-time mode -------------------------------------------------------------------

    def _running_version(self, phase: Phase) -> int | None:
        if self.version_from == "bcdDevice":
            return self.drv.bcd_device << 16
        text = self.drv.string(self.version_string, phase) or ""
        m = _VERSION.search(text)
        return None if m is None else int(m[1], 16)

    def _running_eui64(self, phase: Phase) -> str | None:
        m = _EUI64.search(self.drv.string(self.eui64_string, phase) or "")
        return None if m is None else m[1].upper()

    # -- phases --------------------------------------------------------------------------

    def connect(self, out: FlashOutcome) -> None:
        try:
            mode = self.drv.connect()
        except OtherDevice as exc:  # a device of other ids: another model, or a wrong profile
            exc.hint = self._wrong_profile()
            raise
        if mode == "dfu":
            out.found_in = "bootloader"
            return
        out.found_in = "application"
        running = self._running_version(Phase.CONNECT)
        out.version_before = None if running is None else f"0x{running:08X}"
        out.eui64 = self._running_eui64(Phase.CONNECT)
        self.drv.enter_dfu()

    def identify(self, out: FlashOutcome) -> None:
        assert self.profile.identity_address is not None
        self.drv.select_alt(self.identity_alt)
        raw = self.drv.read(self.profile.identity_address, 16, phase=Phase.IDENTIFY)
        self.drv.select_alt(self.flash_alt)
        eui, hw = parse_identity(raw)
        if out.eui64 is not None and out.eui64 != eui:
            raise StationError(
                f"the application said EUI-64 {out.eui64} but the bootloader's identity "
                f"area says {eui}",
                phase=Phase.IDENTIFY,
                hint="two hubs may share this port; check the fixture",
            )
        out.eui64, out.hw_version = eui, hw
        self.memory = self._check_memory_map()
        if out.version_before is None:
            raw = self.drv.read(
                self.profile.app_address + DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, phase=Phase.IDENTIFY
            )
            # Blank or foreign flash has no descriptor: then there is nothing to compare.
            with contextlib.suppress(ImageError):
                out.version_before = f"0x{unpack_descriptor(raw).firmware_version:08X}"

    def _check_memory_map(self) -> MemoryMap | None:
        """The flash alternate setting's memory map, checked against the profile."""
        memory = self.drv.memory_map(self.flash_alt)
        if memory is None:
            return None
        p = self.profile
        if not memory.allows(p.flash_start, p.flash_end, WRITABLE):
            raise StationError(
                f"the hub's memory map {memory.format()!r} does not cover the profile's "
                f"writable flash 0x{p.flash_start:08X}..0x{p.flash_end:08X}",
                phase=Phase.IDENTIFY,
                hint=self._wrong_profile(),
            )
        sizes = {s.page_size for s in memory.segments if s.start < p.flash_end}
        if sizes != {p.page_size}:
            raise StationError(
                f"the hub's memory map has pages of {sorted(sizes)} bytes, the profile "
                f"{p.page_size}",
                phase=Phase.IDENTIFY,
                hint=self._wrong_profile(),
            )
        return memory

    def _pages(self, start: int, end: int) -> list[int]:
        if self.memory is not None:
            return self.memory.pages(start, end)
        p = self.profile
        return [p.flash_start + n * p.page_size for n in p.pages_for(start, end)]

    def erase(self, image: LoadedImage, progress: ProgressFn) -> None:
        """Learn which pages already hold the image (:meth:`_plan_pages`), erase the others."""
        self.page_plan = self._plan_pages(image, progress)
        plan = self.page_plan
        pages = [plan.base + n * plan.page_size for n in plan.erase]
        progress(Phase.ERASE, 0, 0, f"{len(pages)} pages")
        self.drv.erase_pages(pages, progress)

    def _plan_pages(self, image: LoadedImage, progress: ProgressFn) -> PagePlan:
        """Which of the image's pages differ: the image's range read back (UPLOAD; USB
        reads are cheap and checked by the bus's CRC) and compared on the host, each run of
        matching pages read a second time (:func:`drivers.page_diff.readback_plan`). A hub
        that cannot upload, or fails to, is written whole."""
        size, base = self.profile.page_size, image.address
        data = pad4(image.data)
        pages = -(-len(data) // size)
        try:
            plan = readback_plan(
                lambda at, n: self.drv.read(at, n, phase=Phase.ERASE), base, data, size
            )
        except (ProtocolError, LinkTimeout) as exc:
            plan = PagePlan.full(base, size, pages)
            plan.notes.append(f"pages not compared ({exc.message}): every page written")
            with contextlib.suppress(StationError):
                self.drv.to_idle(Phase.ERASE)
            return plan
        progress(
            Phase.ERASE,
            0,
            0,
            f"{plan.skipped} of {pages} pages already hold the image (read back); "
            f"{len(plan.written)} to write",
        )
        return plan

    def write(self, image: LoadedImage, progress: ProgressFn, out: FlashOutcome) -> None:
        """Write the pages the plan says differ, each run of them resumed after a failure;
        fill the job's page counts."""
        size = self.profile.page_size
        data, base = pad4(image.data), image.address
        plan = self.page_plan
        if plan is None or plan.base != base:
            plan = self.page_plan = PagePlan.full(base, size, -(-len(data) // size))
        out.notes.extend(plan.notes)
        spans = [(f * size, min((f + n) * size, len(data))) for f, n in plan.runs()]
        total = sum(end - start for start, end in spans)
        out.pages_written, out.pages_skipped = len(plan.written), plan.skipped
        done, resumes = 0, 0
        for start, end in spans:
            offset = start
            while offset < end:
                try:
                    self.drv.write(
                        base + offset,
                        data[offset:end],
                        first_block=offset // self.drv.transfer_size,
                        on_progress=progress,
                        progress_base=done + offset - start,
                        progress_total=total,
                    )
                    break
                except _RESUMABLE as exc:
                    resumes += 1
                    if resumes > self.profile.retries or exc.address is None:
                        raise
                    offset = self._resume(exc, data[:end], base, out, progress)
            done += end - start
        out.bytes_written = total

    def _resume(
        self,
        exc: StationError,
        data: bytes,
        base: int,
        out: FlashOutcome,
        progress: ProgressFn,
    ) -> int:
        """Bring the hub back to dfuIDLE after ``exc`` and return where to write from."""
        assert exc.address is not None
        if isinstance(exc, PortVanished):
            try:
                self.drv.reacquire(PROTOCOL_DFU, "the hub dropped off the bus", Phase.WRITE)
            except StationError:
                raise exc from None  # it did not come back: the original failure stands
            self.drv.select_alt(self.flash_alt)
        self.drv.to_idle(Phase.WRITE)
        at = exc.address
        size = self.drv.transfer_size
        block = data[at - base : at - base + size]
        state = self.drv.block_state(at, block)
        if state == "written":
            resume, how = at + len(block), "it holds the data; resumed after it"
        elif state == "erased":
            resume, how = at, "it is still erased; resumed there"
        else:
            pages = self._pages(at, at + len(block))
            self.drv.erase_pages(pages)
            resume = max(pages[0], base)
            how = f"it was partly programmed; re-erased 0x{pages[0]:08X} and resumed there"
        note = f"{exc.message}; {how}"
        out.notes.append(note)
        progress(Phase.WRITE, resume - base, len(data), note)
        return resume - base

    def verify(
        self, image: LoadedImage, method: str, progress: ProgressFn, out: FlashOutcome
    ) -> bool:
        if method == "crc":
            raise Unsupported(
                "DFU has no device-side CRC; verify by readback (--verify readback)",
                port=self.drv.port,
                phase=Phase.VERIFY,
            )
        res = self.drv.verify(image.address, image.data, on_progress=progress)
        out.verify_method, out.verify_detail = res.method, res.detail
        return res.ok

    def boot(self, image: LoadedImage) -> None:
        self.drv.leave(self.profile.app_address)

    def start_application(self) -> None:
        self.drv.leave(self.profile.app_address)

    def describe(self) -> BootloaderFacts | None:
        p, f, found = self.profile, self.drv.functional, self.drv.link.current
        if f is None or found is None:
            return None  # no DFU interface was claimed
        v = f.dfu_version
        version = f"{v >> 8:x}.{v >> 4 & 0xF:x}{'' if v & 0xF == 0 else f'{v & 0xF:x}'}"
        kind = "ST DfuSe" if f.is_dfuse else "USB DFU"
        details = [("USB", f"usb:{found.location}, serial {found.serial or '?'}")]
        start, size, source = p.flash_start, p.flash_size, "profile"
        if self.memory is not None:
            details += [("memory map", self.memory.format())]
            flash = [s for s in self.memory.segments if s.flags & WRITABLE]
            if flash:
                start, size = flash[0].start, sum(s.count * s.page_size for s in flash)
                source = "device"
        details += [("transfer size", f"{self.drv.transfer_size} bytes")]
        return BootloaderFacts(
            bootloader=f"{kind} bootloader over USB",
            version=version,
            product_id=f"{found.vid:04x}:{found.pid:04x}",
            flash_start=start,
            flash_size=size,
            page_size=p.page_size,
            flash_from=source,
            details=tuple(details),
        )

    def confirm(self, timeout_s: float) -> tuple[int | None, str | None]:
        try:
            self.drv.wait_runtime(timeout_s)
        except (PortVanished, LinkTimeout):
            return None, None  # no run-time interface came up: the application did not start
        return self._running_version(Phase.CONFIRM), self._running_eui64(Phase.CONFIRM)


_USB_ID = Spec(list, items=int, min_len=2, max_len=2, lo=0, hi=0xFFFF)
_STRING_INDEX = Spec(int, 0, 255)


def _usb_ids(profile: Profile) -> list[tuple[int, int, str]]:
    """The run-time and DFU-mode (vendor, product) a profile's hubs show."""
    found = []
    for key in ("runtime_id", "dfu_id"):
        ids = profile.options.get("dfu", {}).get(key)
        if isinstance(ids, list) and len(ids) == 2:
            found.append((int(ids[0]), int(ids[1]), key.split("_")[0]))
    return found


#: USB DFU 1.1 with ST's DfuSe extensions; registered in pyproject.toml.
PLUGIN = ProtocolPlugin(
    name="dfu",
    description="USB DFU 1.1 with ST DfuSe extensions",
    link=Link.USB,
    session=DfuSession,
    driver=DfuDriver,
    section=MappingProxyType(
        {
            "runtime_id": _USB_ID,
            "dfu_id": _USB_ID,
            "flash_alt": Spec(int, 0, 255),
            "identity_alt": Spec(int, 0, 255),
            "version_from": Spec(str, choices=("string", "bcdDevice")),
            "version_string": _STRING_INDEX,
            "eui64_string": _STRING_INDEX,
            "transfer_size": Spec(int, 0, 0xFFFF),
            "request_timeout_ms": Spec(int, 1, 600_000),
            "reenumerate_timeout_s": Spec(float, 0.1, 600),
            "same_serial": Spec(bool),
        }
    ),
    verify_methods=("readback",),  # DFU has no device-side CRC
    sim_model=sim_dfu.MODEL,
    probe_order=2,
    usb_ids=_usb_ids,
)

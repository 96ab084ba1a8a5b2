"""The AN3155 (STM32 USART bootloader) part of a re-flash.

Reaches the bootloader (a strapped boot pin, the application console's BOOT command, or a
reset by the adapter's modem lines: :mod:`station.sessions.lines`),
identifies the hub from its product ID and identity area, learns by device CRC which of the
image's pages the flash already holds and erases and writes only the others (every page
when the bootloader has no Get Checksum), writes with resume after a power loss, verifies
the whole image by device CRC (readback otherwise) and repairs pages a noisy line spoiled,
then starts the application and asks its version.
"""

from __future__ import annotations

import struct

from drivers.an3155 import An3155Driver, NeedsErase, Timeouts, pad4
from drivers.an3155_codes import MAX_BLOCK, Cmd
from drivers.console import AppConsole
from drivers.errors import (
    HubReset,
    ImageError,
    LinkTimeout,
    NoSync,
    ProtocolError,
    StationError,
)
from drivers.page_diff import PagePlan, crc_plan
from drivers.types import Phase, ProgressFn
from firmware_images.descriptor import DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, unpack_descriptor
from firmware_images.loader import LoadedImage
from sim import an3155 as sim_an3155
from station.outcome import FlashOutcome, Refusal
from station.profiles import Profile
from station.protocols import Link, ProfileProblem, ProtocolPlugin
from station.sessions import BootloaderFacts, wrong_profile_hint
from station.sessions.lines import LineControl
from station.sessions.trace import TracedLink

IDENTITY_MAGIC = b"HBID"


def _parse_identity(raw: bytes) -> tuple[str, int]:
    if raw[:4] != IDENTITY_MAGIC:
        raise StationError(
            f"no identity record in the hub's OTP area (found {raw[:4]!r})",
            phase=Phase.IDENTIFY,
            hint="is the profile right for this hub? station info --profile auto identifies it",
        )
    eui = "-".join(f"{b:02X}" for b in raw[4:12])
    (hw,) = struct.unpack_from("<H", raw, 12)
    return eui, hw


class An3155Session:
    """One STM32-bootloader hub on a serial port."""

    def __init__(self, port: str, profile: Profile) -> None:
        self.profile = profile
        self.link = TracedLink(port, baudrate=profile.baud, parity=profile.parity)
        self.drv = An3155Driver(
            self.link,
            retries=profile.retries,
            pipeline=profile.pipeline_writes,
            timeouts=Timeouts(ack_s=profile.ack_timeout_s, resync_s=profile.resync_timeout_s),
        )
        self.console = AppConsole(self.link)
        self.notes = self.drv.notes
        self.lines = LineControl.of(self.link, profile)
        #: Which pages the write covers, learnt before erasing (:meth:`erase`).
        self.page_plan: PagePlan | None = None

    def close(self) -> None:
        self.link.close()

    def exchanges(self) -> list[str]:
        """The last bytes exchanged with the hub (for a failure's detail)."""
        return self.link.exchanges()

    def connect(self, out: FlashOutcome) -> None:
        self.link.open()
        if self.lines is not None and self.profile.entry == "lines":
            self._enter_by_lines(Phase.CONNECT)
            out.found_in = "bootloader"
            return
        try:
            self.drv.sync(timeout_s=0.6)
            out.found_in = "bootloader"
            return
        except NoSync:
            pass
        running = self.console.version()
        if running is None:
            self._flush_leftover_command(out)
            return
        out.found_in = "application"
        out.version_before = f"0x{running:08X}"
        out.eui64 = self.console.eui64()
        out.hw_version = self.console.hw_version()
        self.console.enter_bootloader()
        try:
            self.drv.sync(timeout_s=2.0)
        except NoSync as exc:  # its application obeyed BOOT: its bootloader is not ST's
            exc.hint = self._wrong_profile(exc)
            raise

    def _enter_by_lines(self, phase: Phase) -> None:
        """Reset into the bootloader by DTR/RTS, then synchronise (each try bounded)."""
        assert self.lines is not None

        def synced() -> bool:
            try:
                self.drv.sync(timeout_s=0.6, phase=phase)
            except NoSync:
                return False
            return True

        self.lines.enter(synced, self.notes, phase)

    def _to_bootloader(self) -> None:
        """From the running application back to the bootloader: by lines when the
        profile enters that way, else by the console's BOOT."""
        if self.lines is not None and self.profile.entry == "lines":
            self._enter_by_lines(Phase.IDENTIFY)
            return
        self.console.enter_bootloader()
        self.drv.sync(timeout_s=2.0, phase=Phase.IDENTIFY)

    def _start_app(self) -> None:
        """Leave the bootloader for the application: a reset by lines, or Go."""
        if self.lines is not None and self.profile.exit == "lines":
            self.lines.exit()
        else:
            self.drv.go(self.profile.app_address)

    def _wrong_profile(self, exc: NoSync) -> str:
        return wrong_profile_hint(self.profile, self.link.url, exc.default_hint)

    def _flush_leftover_command(self, out: FlashOutcome) -> None:
        """Get through to a bootloader that a host which stopped mid-command (a station
        killed, a cable pulled) left waiting for the rest of it: send it sync bytes until
        that command ends (at most the longest one it could be), then synchronise.

        Raises:
            NoSync: it still does not answer (no hub, or not this protocol).
        """
        try:
            self.drv.sync(timeout_s=self.profile.resync_timeout_s, flush=True)
        except (NoSync, LinkTimeout):  # silent, or not even taking our bytes
            error = NoSync(
                "the hub answers neither the bootloader sync (0x7F) nor the application "
                "console (VER?)",
                port=self.link.url,
                phase=Phase.CONNECT,
            )
            error.hint = self._wrong_profile(error)
            raise error from None
        out.found_in = "bootloader"
        self.notes.append(
            "the bootloader was inside a command another host never finished; it was "
            "flushed to its end and synchronised"
        )

    def identify(self, out: FlashOutcome) -> None:
        info = self.drv.identify()
        if self.profile.product_id is not None and info.product_id != self.profile.product_id:
            if out.eui64 is None:
                # Another MCU may keep no identity record where ours do, but where it does,
                # knowing the hub lets the consignment match it to its refusal.
                try:
                    assert self.profile.identity_address is not None
                    raw = self.drv.read_memory(
                        self.profile.identity_address, 16, phase=Phase.IDENTIFY
                    )
                    out.eui64, out.hw_version = _parse_identity(raw)
                except StationError:
                    pass
            raise Refusal(
                f"product ID 0x{info.product_id:03X} is not {self.profile.name}'s "
                f"0x{self.profile.product_id:03X}",
                "wrong profile for this hub, or a different model in this slot",
            )
        assert self.profile.identity_address is not None
        eui, hw = _parse_identity(
            self.drv.read_memory(self.profile.identity_address, 16, phase=Phase.IDENTIFY)
        )
        if out.eui64 is not None and out.eui64 != eui:
            raise StationError(
                f"the application said EUI-64 {out.eui64} but the bootloader's identity "
                f"area says {eui}",
                phase=Phase.IDENTIFY,
                hint="two hubs may share this port; check the fixture",
            )
        out.eui64, out.hw_version = eui, hw
        if out.version_before is None:
            out.version_before = self._running_version(out)

    def _running_version(self, out: FlashOutcome) -> str | None:
        """The version the flash really runs, for a hub found in its bootloader.

        A descriptor in flash only claims a version: a write cut short after the block that
        holds it leaves a new descriptor over a partial image, which must never pass for
        "already current". So when a descriptor is there, the application is started and
        asked; only a version it reports counts. Then back to the bootloader.
        """
        raw = self.drv.read_memory(
            self.profile.app_address + DESCRIPTOR_OFFSET, DESCRIPTOR_SIZE, phase=Phase.IDENTIFY
        )
        try:
            claimed = unpack_descriptor(raw).firmware_version
        except ImageError:
            return None  # blank or foreign flash: nothing to compare against
        self._start_app()
        self.console.wait_banner(self.profile.boot_timeout_s)
        running = self.console.version()
        if running is None:
            out.notes.append(
                f"flash claims 0x{claimed:08X} but the application does not start: "
                "treated as holding no valid firmware"
            )
            if self.lines is not None and self.profile.entry == "lines":
                self._enter_by_lines(Phase.IDENTIFY)
            else:
                # The core faulted; its watchdog brings the strapped hub back to the
                # bootloader.
                self.drv.sync(timeout_s=2.0, phase=Phase.IDENTIFY)
            return None
        self._to_bootloader()
        return f"0x{running:08X}"

    def erase(self, image: LoadedImage, progress: ProgressFn) -> None:
        """Learn which pages already hold the image (:meth:`_plan_pages`), erase the others."""
        self.page_plan = self._plan_pages(image, progress)
        first = self.profile.pages_for(image.address, image.address + 1)[0]
        pages = [first + n for n in self.page_plan.erase]
        progress(Phase.ERASE, 0, 0, f"{len(pages)} pages")
        self.drv.erase_pages(pages, progress)

    def _plan_pages(self, image: LoadedImage, progress: ProgressFn) -> PagePlan:
        """Which of the image's pages differ, from device CRCs (Get Checksum per page or run
        of pages, each run of matches asked twice: :func:`drivers.page_diff.crc_plan`), or,
        when the whole range's CRC shows the hub holds the release it reports running
        (``image.previous``), from that release compared on the host.

        A bootloader without Get Checksum cannot say so trustworthily (a readback over a
        noisy line is no proof), nor one that fails to answer it: then every page is
        written, as before.
        """
        size, base = self.profile.page_size, image.address
        data = pad4(image.data)
        pages = -(-len(data) // size)
        if not self.drv.has_checksum:
            plan = PagePlan.full(base, size, pages)
            plan.notes.append("no Get Checksum (0xA1): every page written, none compared")
            return plan
        try:
            plan = crc_plan(
                lambda at, n: self.drv.checksum(at, n, Phase.ERASE),
                base,
                data,
                size,
                previous=image.previous,
            )
        except (ProtocolError, LinkTimeout) as exc:
            self.drv.notes.append(f"pages not compared ({exc.message}): every page written")
            return PagePlan.full(base, size, pages)
        progress(
            Phase.ERASE,
            0,
            0,
            f"{plan.skipped} of {pages} pages already hold the image ({plan.asked} device "
            f"CRC{'' if plan.asked == 1 else 's'}); {len(plan.written)} to write",
        )
        return plan

    def write(self, image: LoadedImage, progress: ProgressFn, out: FlashOutcome) -> None:
        """Write the pages the plan says differ, each run of them with resume after a power
        loss; fill the job's page counts."""
        plan = self.page_plan
        if plan is None or plan.base != image.address:
            plan = self.page_plan = PagePlan.full(
                image.address, self.profile.page_size, -(-len(image.data) // self.profile.page_size)
            )
        out.notes.extend(plan.notes)
        data, size = image.data, plan.page_size
        spans = [
            (first * size, min((first + count) * size, len(data))) for first, count in plan.runs()
        ]
        total = sum(end - start for start, end in spans)
        out.pages_written, out.pages_skipped = len(plan.written), plan.skipped
        done = 0
        resumes = [0]
        for start, end in spans:
            self._write_span(image, start, end, done, total, resumes, progress, out)
            done += end - start
        out.bytes_written = total

    def _write_span(
        self,
        image: LoadedImage,
        start: int,
        end: int,
        done: int,
        total: int,
        resumes: list[int],
        progress: ProgressFn,
        out: FlashOutcome,
    ) -> None:
        """Write ``image.data[start:end]``, resuming from the start of a page whose block
        failed after a power loss or partial programming (``resumes`` counts across spans)."""
        data, base = image.data, image.address
        offset = start
        while True:
            try:
                self.drv.write_memory(
                    base + offset,
                    data[offset:end],
                    first_block=offset // MAX_BLOCK,
                    on_progress=progress,
                    progress_base=done + offset - start,
                    progress_total=total,
                )
                return
            except (HubReset, NeedsErase) as exc:
                resumes[0] += 1
                if resumes[0] > self.profile.retries or exc.address is None:
                    raise
                # The block's page may hold half-programmed words: erase that page and
                # rewrite it from its first block; earlier pages were acknowledged and the
                # final verify covers them all.
                page_addr = max(self.profile.page_start(exc.address), base + start)
                self.drv.erase_pages(self.profile.pages_for(page_addr, page_addr + 1))
                offset = page_addr - base
                note = (
                    f"{exc.message}; re-erased the page at 0x{page_addr:08X} and resumed from there"
                )
                out.notes.append(note)
                progress(Phase.WRITE, done + offset - start, total, note)

    def verify(
        self, image: LoadedImage, method: str, progress: ProgressFn, out: FlashOutcome
    ) -> bool:
        """Verify the whole image; on a mismatch, repair the bad pages and verify again."""
        for attempt in range(1, self.profile.retries + 1):
            res = self.drv.verify(image.address, image.data, method=method, on_progress=progress)
            out.verify_method, out.verify_detail = res.method, res.detail
            if res.ok or attempt == self.profile.retries:
                return res.ok
            if not self._repair(image, res.detail, progress, out):
                return False
        return False

    def _repair(
        self, image: LoadedImage, why: str, progress: ProgressFn, out: FlashOutcome
    ) -> bool:
        """Find the pages whose device CRC is wrong, re-erase and rewrite just those.

        A frame mangled on a noisy line can, rarely, be accepted short; the final verify
        catches it and this puts it right. Needs the device CRC (else: False, job fails).
        """
        if not self.drv.has_checksum:
            return False
        data, base, size = image.data, image.address, self.profile.page_size
        bad = [
            offset
            for offset in range(0, len(data), size)
            if self.drv.block_state(base + offset, data[offset : offset + size]) != "written"
        ]
        for offset in bad:
            self.drv.erase_pages(self.profile.pages_for(base + offset, base + offset + 1))
            self.drv.write_memory(
                base + offset, data[offset : offset + size], first_block=offset // MAX_BLOCK
            )
        note = f"verify found {len(bad)} bad page(s) ({why}); re-erased and rewrote " + ", ".join(
            f"0x{base + o:08X}" for o in bad
        )
        out.notes.append(note)
        progress(Phase.VERIFY, 0, 0, note)
        return bool(bad)

    def boot(self, image: LoadedImage) -> None:
        self._start_app()

    def start_application(self) -> None:
        self._start_app()

    def describe(self) -> BootloaderFacts | None:
        info, p = self.drv.info, self.profile
        if info is None:
            return None
        codes = sorted(info.commands)
        names = ", ".join(_command_name(c) for c in codes)
        verify = "device CRC (Get Checksum)" if Cmd.GET_CHECKSUM in codes else "readback"
        return BootloaderFacts(
            bootloader="STM32 system bootloader over USART (AN3155)",
            version=info.version_text,
            product_id=f"0x{info.product_id:03X}",
            flash_start=p.flash_start,
            flash_size=p.flash_size,
            page_size=p.page_size,
            flash_from="profile",
            details=(("commands", names), ("verify", verify)),
        )

    def confirm(self, timeout_s: float) -> tuple[int | None, str | None]:
        self.console.wait_banner(timeout_s)
        running = self.console.version()
        if running is None:
            return None, None
        return running, self.console.eui64()


def _command_name(code: int) -> str:
    """``Get Checksum`` for 0xA1; a command this station does not know, by its code."""
    try:
        return Cmd(code).name.replace("_", " ").title().replace("Id", "ID")
    except ValueError:
        return f"0x{code:02X}"


def _check(profile: Profile) -> list[ProfileProblem]:
    """The bootloader reads identity from memory and must report the profile's chip."""
    problems = []
    if profile.identity_address is None:
        problems.append(ProfileProblem("memory", None, "an3155 profiles need identity_address"))
    if profile.product_id is None:
        problems.append(ProfileProblem("model", None, "an3155 profiles need product_id"))
    return problems


#: The STM32 system bootloader over a USART (AN3155), 8E1; registered in pyproject.toml.
PLUGIN = ProtocolPlugin(
    name="an3155",
    description="STM32 system bootloader over a USART (ST AN3155)",
    link=Link.SERIAL,
    session=An3155Session,
    driver=An3155Driver,
    check=_check,
    verify_methods=("crc", "readback"),
    sim_model=sim_an3155.MODEL,
    probe_order=0,
    modem_lines=True,  # an STM32 bootloader takes the first byte it hears for its baud rate
    diff_hint=True,
)

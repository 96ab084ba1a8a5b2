"""The Gecko (Silicon Labs UART XMODEM bootloader) part of a re-flash.

Reaches the bootloader menu (a hub already in it, the application console's BOOT, or a
reset with the activation pin held, by modem lines: :mod:`station.sessions.lines`),
learns the hub's identity from its application (the bootloader can report neither the
EUI-64 nor the hardware version, nor read flash back), uploads the GBL file over XMODEM,
takes the bootloader's own check of the GBL (tag sequence and END CRC-32) as the verify, then
runs the application with ``'2'`` and asks its version.

Identity of a hub found in its bootloader: the session starts the application (``'2'``) to
ask it, then sends it back with ``BOOT`` (profile option ``[gecko]
identify_via_application``). A hub whose flash holds no valid application comes straight
back to the menu: its EUI-64 and hardware version are then first learnt from the new
application at confirm (noted in the job), so the plan cannot check the image's hardware
range for it beforehand. Reading a device-information page would need a bootloader command
the Gecko UART bootloader does not have.

Recovery: XMODEM cannot resume, so a failed upload (a block refused every try, a line
error that made the bootloader abort, the hub restarting) is sent again from its first
block, up to ``[gecko] upload_attempts`` times. A file the bootloader refuses as a file
(bad header, unsupported tag) is not sent again.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from drivers.console import AppConsole
from drivers.errors import ImageError, NoSync, Unsupported
from drivers.gecko import (
    MENU,
    GeckoDriver,
    GeckoTimeouts,
    HubStopped,
    NoMenu,
    UploadAborted,
    UploadReport,
)
from drivers.types import Phase, ProgressFn
from drivers.xmodem import TransferError
from firmware_images.loader import LoadedImage
from sim import gecko as sim_gecko
from station.config import Spec
from station.outcome import FlashOutcome
from station.profiles import Profile
from station.protocols import Link, ProtocolPlugin
from station.sessions import BootloaderFacts, wrong_profile_hint
from station.sessions.lines import LineControl
from station.sessions.trace import TracedLink

_BANNER = re.compile(rb"CHUB APP 0x[0-9A-Fa-f]{8} READY\r?\n")
_GBL_CRC = 0x43  # the bootloader's "file error" code for an END CRC mismatch


class GeckoSession:
    """One Gecko-bootloader hub on a serial port."""

    def __init__(self, port: str, profile: Profile) -> None:
        self.profile = profile
        options: dict[str, Any] = dict(profile.options.get("gecko", {}))
        self.upload_attempts = max(1, int(options.get("upload_attempts", 3)))
        self.identify_via_application = bool(options.get("identify_via_application", True))
        self.link = TracedLink(port, baudrate=profile.baud, parity=profile.parity)
        self.drv = GeckoDriver(
            self.link,
            tries=profile.retries,
            timeouts=GeckoTimeouts(
                menu_s=float(options.get("menu_timeout_s", 0.5)),
                start_s=float(options.get("start_timeout_s", 3.0)),
                block_s=profile.ack_timeout_s,
                recover_s=profile.resync_timeout_s,
            ),
        )
        self.console = AppConsole(self.link)
        self.notes = self.drv.notes
        self.lines = LineControl.of(self.link, profile)
        self._out: FlashOutcome | None = None
        self._report: UploadReport | None = None

    def close(self) -> None:
        self.link.close()

    def exchanges(self) -> list[str]:
        """The last bytes exchanged with the hub (for a failure's detail)."""
        return self.link.exchanges()

    # -- connect and identify ----------------------------------------------------------

    def connect(self, out: FlashOutcome) -> None:
        self._out = out
        self.link.open()
        if self.lines is not None and self.profile.entry == "lines":
            self._enter_by_lines(Phase.CONNECT)
            out.found_in = "bootloader"
            return
        if self.drv.probe() is not None:
            out.found_in = "bootloader"
            return
        running = self.console.version()
        if running is None:
            # Neither menu nor console: perhaps a bootloader left inside an upload.
            try:
                self.drv.recover()
            except NoMenu as exc:
                raise NoSync(
                    "the hub answers neither the Gecko bootloader (no menu after a newline) "
                    "nor the application console (VER?)",
                    port=self.link.url,
                    phase=Phase.CONNECT,
                    hint=wrong_profile_hint(self.profile, self.link.url, NoSync.default_hint),
                ) from exc
            out.found_in = "bootloader"
            self.notes.append(
                "the bootloader menu showed only after a recovery (it was inside an upload, "
                "or the line garbled the first menu)"
            )
            return
        out.found_in = "application"
        self._read_identity(out, running)
        try:
            self._to_bootloader()
        except NoMenu as exc:  # its application obeyed BOOT: its bootloader is not a Gecko
            exc.hint = wrong_profile_hint(self.profile, self.link.url, exc.default_hint)
            raise

    def _read_identity(self, out: FlashOutcome, running: int) -> None:
        out.version_before = f"0x{running:08X}"
        out.eui64 = self.console.eui64()
        out.hw_version = self.console.hw_version()

    def _to_bootloader(self) -> None:
        if self.lines is not None and self.profile.entry == "lines":
            self._enter_by_lines(Phase.IDENTIFY)
            return
        self.console.enter_bootloader()
        self.drv.wait_menu(self.profile.boot_timeout_s)

    def _enter_by_lines(self, phase: Phase) -> None:
        """Reset into the bootloader by DTR/RTS with the activation pin held, then look
        for its menu (each try bounded by the menu timeout)."""
        assert self.lines is not None
        self.lines.enter(lambda: self.drv.probe() is not None, self.notes, phase)

    def _start_app(self) -> None:
        """Leave the bootloader for the application: a reset by lines, or '2' (run)."""
        if self.lines is not None and self.profile.exit == "lines":
            self.lines.exit()
        else:
            self.drv.run_application()

    def identify(self, out: FlashOutcome) -> None:
        if out.found_in == "application" or not self.identify_via_application:
            return
        # The bootloader cannot say who the hub is: ask its application, if it has one.
        self.drv.run_application()
        seen = self.drv.scan([_BANNER, MENU], self.profile.boot_timeout_s)
        if seen is None:
            raise NoMenu(
                "after '2' (run) the hub showed neither its application nor its bootloader "
                f"within {self.profile.boot_timeout_s:g} s",
                port=self.link.url,
                phase=Phase.IDENTIFY,
            )
        if seen[0] == 1:
            self.notes.append(
                "no valid application in flash (the bootloader showed its menu again after "
                "'2'): EUI-64 and hardware version are read from the new application"
            )
            self.link.drain(0.02)
            return
        running = self.console.version()
        if running is None:
            raise NoSync(
                "the application started but does not answer VER?",
                port=self.link.url,
                phase=Phase.IDENTIFY,
            )
        self._read_identity(out, running)
        self.notes.append(
            "identity read from the application (started with '2' for that), then back to "
            "the bootloader"
        )
        self._to_bootloader()

    # -- erase, write, verify ----------------------------------------------------------

    def _require_gbl(self, image: LoadedImage) -> None:
        if image.kind != "gbl":
            raise ImageError(
                f"{image.path}: the Gecko bootloader takes GBL files, and this is a "
                f"{image.kind} image",
                hint="build the application into a .gbl file (Simplicity Commander "
                "'gbl create', or firmware_images.gbl.build_gbl)",
            )

    def erase(self, image: LoadedImage, progress: ProgressFn) -> None:
        self._require_gbl(image)
        progress(Phase.ERASE, 0, 0, "the bootloader erases each page as it writes it")

    def write(self, image: LoadedImage, progress: ProgressFn, out: FlashOutcome) -> None:
        self._require_gbl(image)
        data = image.bootloader_file.raw  # the GBL itself, also when a GBCS image wraps it
        for attempt in range(1, self.upload_attempts + 1):
            try:
                self._report = self.drv.upload(data, progress)
                return
            except (TransferError, NoMenu) as exc:
                if attempt == self.upload_attempts or not _worth_again(exc):
                    raise
                note = (
                    f"{exc.message}; sent the file again from its first block "
                    f"(upload {attempt + 1} of {self.upload_attempts})"
                )
                out.notes.append(note)
                progress(Phase.WRITE, 0, len(data), note)
                self.drv.recover()

    def verify(
        self, image: LoadedImage, method: str, progress: ProgressFn, out: FlashOutcome
    ) -> bool:
        if method == "readback":
            raise Unsupported(
                "the Gecko bootloader cannot read flash back; it verifies the GBL itself "
                "(use verify auto)",
                port=self.link.url,
                phase=Phase.VERIFY,
            )
        report = self._report
        if report is None:
            return False
        end_crc = image.bootloader_file.fields.get("end_crc")
        crc = f"0x{end_crc:08X}" if isinstance(end_crc, int) else "(unknown)"
        out.verify_method = "bootloader-gbl"
        out.verify_detail = (
            f"the bootloader checked the GBL's tag sequence and its END CRC-32 {crc} over "
            f"{report.file_bytes} bytes and answered '{report.result}'; the application's "
            "descriptor CRC is checked when it starts"
        )
        progress(Phase.VERIFY, report.file_bytes, report.file_bytes, "bootloader GBL check")
        return True

    # -- boot and confirm --------------------------------------------------------------

    def boot(self, image: LoadedImage) -> None:
        self._start_app()

    def start_application(self) -> None:
        self._start_app()

    def describe(self) -> BootloaderFacts | None:
        p = self.profile
        if self.drv.version is None:
            return None  # its menu never came
        return BootloaderFacts(
            bootloader="Silicon Labs Gecko bootloader over UART XMODEM",
            version=self.drv.version,  # from its menu's banner
            product_id=None,  # its UART menu has no command that says
            flash_start=p.flash_start,
            flash_size=p.flash_size,
            page_size=p.page_size,
            flash_from="profile",
            details=(("verify", "the bootloader's own GBL check (no readback)"),),
        )

    def confirm(self, timeout_s: float) -> tuple[int | None, str | None]:
        self.console.wait_banner(timeout_s)
        running = self.console.version()
        if running is None:
            return None, None
        eui = self.console.eui64()
        out = self._out
        if out is not None and out.eui64 is None:
            # Found blank: the new application is the first that can say who the hub is.
            out.eui64, out.hw_version = eui, self.console.hw_version()
            self.notes.append(f"EUI-64 {eui} and hardware version read after the write")
        return running, eui


def _worth_again(exc: Exception) -> bool:
    """Whether sending the file again can help: not when the bootloader refused the file
    itself, except for a CRC mismatch (the file was checked here, so the line corrupted it)."""
    if isinstance(exc, HubStopped):
        return False
    if isinstance(exc, UploadAborted) and exc.kind == "file":
        return exc.code == _GBL_CRC
    return True


#: The Silicon Labs Gecko bootloader's UART XMODEM menu, 8N1; registered in pyproject.toml.
PLUGIN = ProtocolPlugin(
    name="gecko",
    description="Silicon Labs Gecko bootloader, GBL upload over UART XMODEM",
    link=Link.SERIAL,
    session=GeckoSession,
    driver=GeckoDriver,
    section=MappingProxyType(
        {
            "upload_attempts": Spec(int, 1, 100),
            "menu_timeout_s": Spec(float, 0.01, 60),
            "start_timeout_s": Spec(float, 0.01, 600),
            "identify_via_application": Spec(bool),
        }
    ),
    image_formats=frozenset({"gbl"}),
    verify_methods=("crc",),  # the bootloader checks the GBL's END CRC-32; no readback
    sim_model=sim_gecko.MODEL,
    probe_order=1,
    modem_lines=True,
)

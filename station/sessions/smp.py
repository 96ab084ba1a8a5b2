"""The MCUboot serial recovery (SMP over a UART) part of a re-flash.

Reaches serial recovery (a hub already in it answers echo; a hub running its application
is sent ``BOOT`` on its console and reboots into recovery), reads the slots (image state
read), uploads the MCUboot image in chunks sized to the hub's receive buffer (``[smp]
receive_size``; MCUboot does not advertise it), following the offset MCUboot answers, and
takes MCUboot's own listing of the uploaded slot (its SHA-256 TLV, which MCUboot checks
before listing an image, and its version) as the verify. Then reset, and the application's
running version read back on its console.

Identity: MCUboot cannot say which hub it is (no EUI-64, no hardware version). A hub found
in recovery whose primary slot holds a valid image is reset into that application, asked
on its console, and sent back with ``BOOT`` (``[smp] identify_via_application``); a hub
with no valid image is identified by the new application at confirm (noted in the job).

Recovery: an upload refused or interrupted (no answer, a flash error, the hub restarting)
is tried again up to ``[smp] upload_attempts`` times, starting at the offset the hub last
answered: MCUboot answers the offset it expects, so an upload it still holds resumes
there, and one it lost (a restart) starts again from 0.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from drivers.console import AppConsole
from drivers.errors import DeviceTimeout, ImageError, NoSync, Unsupported
from drivers.smp import SlotState, SmpClient, SmpError, UploadReport, chunk_size
from drivers.types import Phase, ProgressFn
from firmware_images.loader import LoadedImage
from firmware_images.mcuboot import MCUBOOT_FORMAT, ImageVersion
from sim import smp as sim_smp
from station.config import Spec
from station.outcome import FlashOutcome
from station.profiles import Profile
from station.protocols import Link, ProtocolPlugin
from station.sessions import BootloaderFacts, wrong_profile_hint
from station.sessions.trace import TracedLink

_PROBE_S = 0.3


class SmpSession:
    """One MCUboot hub in serial recovery on a serial port."""

    def __init__(self, port: str, profile: Profile) -> None:
        self.profile = profile
        opts: dict[str, Any] = dict(profile.options.get("smp", {}))
        self.receive_size = int(opts.get("receive_size", 1024))
        self.line_max = int(opts.get("line_max", 128))
        self.write_align = int(opts.get("write_align", 8))
        self.upload_image = int(opts.get("upload_image", 0))
        self.erase_timeout_s = float(opts.get("erase_timeout_s", 15.0))
        self.upload_attempts = max(1, int(opts.get("upload_attempts", 3)))
        self.identify_via_application = bool(opts.get("identify_via_application", True))
        self.upgrade_only = bool(opts.get("upgrade_only", False))
        self.link = TracedLink(port, baudrate=profile.baud, parity=profile.parity)
        self.client = SmpClient(
            self.link,
            receive_size=self.receive_size,
            line_max=self.line_max,
            answer_timeout_s=profile.ack_timeout_s,
            tries=max(1, profile.retries),
        )
        self.console = AppConsole(self.link)
        self.notes = self.client.notes
        self.slots: list[SlotState] | None = None
        self.report: UploadReport | None = None
        self._out: FlashOutcome | None = None

    def close(self) -> None:
        self.link.close()

    def exchanges(self) -> list[str]:
        return self.link.exchanges()

    # -- connect and identify -------------------------------------------------------------

    def _probe(self, timeout_s: float = _PROBE_S) -> bool:
        # A newline first ends whatever half line another probe left (MCUboot ignores it).
        self.link.write(b"\n")
        try:
            self.client.echo("chub", timeout_s=timeout_s, tries=1)
        except (DeviceTimeout, SmpError):
            return False
        return True

    def connect(self, out: FlashOutcome) -> None:
        self._out = out
        self.link.open()
        # Twice: a hub powered on with the port (a simulated one, or a fixture that powers
        # the slot) is deaf for the first milliseconds while MCUboot starts.
        if self._probe() or self._probe():
            out.found_in = "bootloader"
            return
        running = self.console.version()
        if running is None:
            raise NoSync(
                "the hub answers neither MCUboot serial recovery (SMP echo) nor the "
                "application console (VER?)",
                port=self.link.url,
                phase=Phase.CONNECT,
                hint=wrong_profile_hint(self.profile, self.link.url, NoSync.default_hint),
            )
        out.found_in = "application"
        out.version_before = f"0x{running:08X}"
        out.eui64 = self.console.eui64()
        out.hw_version = self.console.hw_version()
        self.console.enter_bootloader()
        self._wait_recovery(self.profile.boot_timeout_s)

    def _wait_recovery(self, timeout_s: float) -> None:
        tries = max(1, int(timeout_s / _PROBE_S))
        for _ in range(tries):
            if self._probe():
                self.link.drain(0.01)
                return
        raise NoSync(
            f"no SMP answer within {timeout_s:g} s after BOOT: the hub did not enter "
            "serial recovery",
            port=self.link.url,
            phase=Phase.CONNECT,
            hint=wrong_profile_hint(self.profile, self.link.url),
        )

    def identify(self, out: FlashOutcome) -> None:
        self.slots = self.client.image_state()
        primary = next((s for s in self.slots if s.slot == 0), None)
        if primary is not None and out.version_before is None:
            version = _as_int(primary.version)
            if version is not None:
                out.version_before = f"0x{version:08X}"
        if out.eui64 is not None:
            return
        if primary is not None and self.identify_via_application:
            self.client.reset()  # boots the valid primary image
            running = self.console.wait_banner(self.profile.boot_timeout_s)
            if running is None:
                raise NoSync(
                    f"after reset the application did not start within "
                    f"{self.profile.boot_timeout_s:g} s, though MCUboot lists it",
                    port=self.link.url,
                    phase=Phase.IDENTIFY,
                )
            out.eui64 = self.console.eui64()
            out.hw_version = self.console.hw_version()
            self.notes.append(
                "identity read from the application (reset into it for that), then back to "
                "serial recovery"
            )
            self.console.enter_bootloader()
            self._wait_recovery(self.profile.boot_timeout_s)
            return
        self.notes.append(
            "MCUboot cannot report EUI-64 or hardware version and no valid application is "
            "in the primary slot: they are read from the new application"
        )

    # -- erase, write, verify -------------------------------------------------------------

    def _require_mcuboot(self, image: LoadedImage) -> None:
        if image.parsed.container != "mcuboot":
            raise ImageError(
                f"{image.path}: MCUboot serial recovery takes MCUboot images, and this is a "
                f"{image.kind} image",
                hint="sign the application with imgtool (or firmware_images.mcuboot."
                "build_mcuboot) into an MCUboot image",
            )

    def erase(self, image: LoadedImage, progress: ProgressFn) -> None:
        self._require_mcuboot(image)
        progress(Phase.ERASE, 0, 0, "MCUboot erases the slot when the first chunk arrives")

    def write(self, image: LoadedImage, progress: ProgressFn, out: FlashOutcome) -> None:
        self._require_mcuboot(image)
        data = image.parsed.raw
        chunk = chunk_size(
            self.receive_size,
            len(data),
            align=self.write_align,
            image=self.upload_image or None,
            upgrade=self.upgrade_only or None,
        )
        start = 0
        for attempt in range(1, self.upload_attempts + 1):
            try:
                self.report = self.client.upload(
                    data,
                    chunk=chunk,
                    image=self.upload_image or None,
                    upgrade=self.upgrade_only or None,
                    start_at=start,
                    first_timeout_s=self.erase_timeout_s,
                    progress=progress,
                )
            except (SmpError, DeviceTimeout) as exc:
                if attempt == self.upload_attempts:
                    raise
                start = self._server_offset(len(data))
                note = (
                    f"{exc.message}; upload {attempt + 1} of {self.upload_attempts} resumes at "
                    f"offset {start}"
                )
                out.notes.append(note)
                progress(Phase.WRITE, start, len(data), note)
                continue
            if self.report.jumps:
                out.notes.append(
                    "followed the hub's offset "
                    + ", ".join(f"{want}->{got}" for want, got in self.report.jumps[:4])
                )
            return

    def _server_offset(self, total: int) -> int:
        """Where an interrupted upload should go on: the offset the last answer gave (the
        hub answers its own, so a wrong guess costs one chunk)."""
        last = self.client.last_offset
        return last if last is not None and 0 < last < total else 0

    def verify(
        self, image: LoadedImage, method: str, progress: ProgressFn, out: FlashOutcome
    ) -> bool:
        if method == "readback":
            raise Unsupported(
                "MCUboot serial recovery cannot read flash back; it checks the image's "
                "SHA-256 TLV itself (use verify auto)",
                port=self.link.url,
                phase=Phase.VERIFY,
            )
        want_hash = bytes.fromhex(str(image.parsed.fields.get("image_sha256", "")))
        version = str(image.parsed.fields.get("version", ""))
        slot = 1 if self.upload_image == 2 else 0
        self.slots = self.client.image_state()
        listed = next((s for s in self.slots if s.slot == slot), None)
        if listed is None or listed.hash != want_hash:
            return False
        header = ImageVersion.parse_smp(listed.version)
        if str(header) != version:
            return False
        out.verify_method = "bootloader-hash"
        out.verify_detail = (
            f"MCUboot lists slot {slot} with SHA-256 {want_hash.hex()[:16]}... and version "
            f"{listed.version}, as the image's TLV and header say (it lists only images "
            "whose hash checks)"
        )
        size = len(image.parsed.raw)
        progress(Phase.VERIFY, size, size, "MCUboot image state read")
        return True

    # -- boot and confirm -----------------------------------------------------------------

    def boot(self, image: LoadedImage) -> None:
        self.client.reset()

    def start_application(self) -> None:
        self.client.reset()

    def describe(self) -> BootloaderFacts | None:
        if self.slots is None:
            return None
        p = self.profile
        shown = ", ".join(f"slot {s.slot}: {s.version}" for s in self.slots) or "no valid image"
        return BootloaderFacts(
            bootloader="MCUboot serial recovery (SMP over UART)",
            version=None,  # serial recovery does not report its own version
            product_id=None,
            flash_start=p.flash_start,
            flash_size=p.flash_size,
            page_size=p.page_size,
            flash_from="profile",
            details=(("slots", shown), ("receive size", f"{self.receive_size} (profile)")),
        )

    def confirm(self, timeout_s: float) -> tuple[int | None, str | None]:
        self.console.wait_banner(timeout_s)
        running = self.console.version()
        if running is None:
            return None, None
        eui = self.console.eui64()
        out = self._out
        if out is not None and out.eui64 is None:
            out.eui64, out.hw_version = eui, self.console.hw_version()
            self.notes.append(f"EUI-64 {eui} and hardware version read after the write")
        return running, eui


def _as_int(text: str) -> int | None:
    try:
        return ImageVersion.parse_smp(text).as_int
    except ValueError:
        return None


#: The keys of a profile's ``[smp]`` section (see docs/sim-smp.md).
_SECTION: dict[str, Spec] = {
    "receive_size": Spec(int, 64, 65535),
    "line_max": Spec(int, 8, 4096),
    "write_align": Spec(int, 1, 256),
    "upload_image": Spec(int, 0, 2),
    "erase_timeout_s": Spec(float, 0.01, 600),
    "upload_attempts": Spec(int, 1, 100),
    "identify_via_application": Spec(bool),
    "upgrade_only": Spec(bool),
}


#: MCUboot serial recovery, SMP over a UART at 8N1; registered in pyproject.toml.
PLUGIN = ProtocolPlugin(
    name="smp",
    description="MCUboot serial recovery, SMP over UART (MCUboot images)",
    link=Link.SERIAL,
    session=SmpSession,
    driver=SmpClient,
    section=MappingProxyType(_SECTION),
    image_formats=frozenset({"mcuboot"}),
    containers=(MCUBOOT_FORMAT,),
    verify_methods=("crc",),  # MCUboot checks the image's SHA-256 TLV; no readback
    sim_model=sim_smp.MODEL,
    probe_order=3,
)

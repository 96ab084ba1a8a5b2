"""The station's side of EXLINE: what the protocol does in each phase of a re-flash."""

from __future__ import annotations

from chub_example.driver import ExlineDriver
from drivers.console import AppConsole
from drivers.errors import NoSync
from drivers.types import Phase, ProgressFn
from firmware_images.loader import LoadedImage
from station.hubprofile import Profile
from station.outcome import FlashOutcome
from station.sessions import BootloaderFacts, wrong_profile_hint
from station.sessions.trace import TracedLink


class ExlineSession:
    """One EXLINE hub on a serial port (follows :class:`station.sessions.HubSession`)."""

    def __init__(self, port: str, profile: Profile) -> None:
        self.profile = profile
        self.link = TracedLink(port, baudrate=profile.baud, parity=profile.parity)
        self.drv = ExlineDriver(self.link, answer_timeout_s=profile.ack_timeout_s)
        self.console = AppConsole(self.link)
        self.notes: list[str] = []
        self._identity: tuple[str, int] | None = None

    def connect(self, out: FlashOutcome) -> None:
        self.link.open()
        try:
            self._identity = self.drv.identify()
            out.found_in = "bootloader"
            return
        except NoSync:
            pass
        running = self.console.version()
        if running is None:
            error = NoSync("neither EXLINE nor the application answers", port=self.link.url)
            error.hint = wrong_profile_hint(self.profile, self.link.url, error.default_hint)
            raise error
        out.found_in = "application"  # ask it to restart into EXLINE
        out.version_before = f"0x{running:08X}"
        self.console.enter_bootloader()
        self._identity = self.drv.identify()

    def identify(self, out: FlashOutcome) -> None:
        assert self._identity is not None
        out.eui64, out.hw_version = self._identity

    def erase(self, image: LoadedImage, progress: ProgressFn) -> None:
        pages = self.profile.pages_for(image.address, image.end)
        progress(Phase.ERASE, 0, 0, f"{len(pages)} pages")
        self.drv.erase(self.profile.page_start(image.address), len(pages))

    def write(self, image: LoadedImage, progress: ProgressFn, out: FlashOutcome) -> None:
        self.drv.write(image.address, image.data, progress)

    def verify(
        self, image: LoadedImage, method: str, progress: ProgressFn, out: FlashOutcome
    ) -> bool:
        res = self.drv.verify(image.address, image.data)
        out.verify_method, out.verify_detail = res.method, res.detail
        return res.ok

    def boot(self, image: LoadedImage) -> None:
        self.drv.go()

    def confirm(self, timeout_s: float) -> tuple[int | None, str | None]:
        self.console.wait_banner(timeout_s)
        running = self.console.version()
        if running is None:
            return None, None
        return running, self.console.eui64()

    def start_application(self) -> None:
        self.drv.go()

    def describe(self) -> BootloaderFacts | None:
        if self._identity is None:
            return None
        p = self.profile
        return BootloaderFacts(
            bootloader="EXLINE example bootloader",
            version=None,
            product_id=None,
            flash_start=p.flash_start,
            flash_size=p.flash_size,
            page_size=p.page_size,
            flash_from="profile",
        )

    def close(self) -> None:
        self.link.close()

    def exchanges(self) -> list[str]:
        return self.link.exchanges()

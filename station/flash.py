"""Re-flash one hub: identify, plan, erase, write, verify, boot and confirm.

This is esptool's ``write_flash`` made safe for a bench: the image is checked before the
port is opened, the hub's identity and running version are read first, only the pages the
image covers are erased, the flash is verified (device CRC when offered, readback
otherwise), the application is started and its running version and EUI-64 are read back.
A hub is reported ``passed`` only when all of that succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from drivers.errors import ConfigError, ImageError, RemotePortLost, StationError
from drivers.types import Phase, ProgressFn, no_progress
from firmware_images.catalog import Catalog, Decision, Plan
from firmware_images.descriptor import dotted_text, dotted_version, format_version
from firmware_images.identity import check_identity
from firmware_images.loader import LoadedImage, flashable
from firmware_images.trust import TrustStore, signature_hint, signature_refusal
from station.events import JobState
from station.latency import take_adapter_latency
from station.outcome import AlreadyCurrent, Cancelled, FlashOutcome, Refusal, Result
from station.power import SlotPower
from station.profiles import Profile, load_profile
from station.protocols import open_session, plugin
from station.sessions import BootloaderFacts, HubSession

__all__ = [
    "AlreadyCurrent",
    "Cancelled",
    "Checkpoint",
    "FlashOutcome",
    "HubIdentity",
    "ImageChooser",
    "Policy",
    "Refusal",
    "Result",
    "catalog_chooser",
    "check_image",
    "detect_profile",
    "flash_hub",
    "identify_hub",
    "precheck",
]


@dataclass(frozen=True)
class Policy:
    """What the station insists on, and the explicit overrides an operator gave.

    Attributes:
        trust: public keys that may sign images (None: no signature can be valid).
        allow_unsigned: flash images with no signature, or one we cannot check.
        allow_invalid: flash images whose signature fails (tampered or unknown signer).
        force: write even if the hub already runs this or a newer version.
        allow_downgrade: with a catalogue, write its newest release over a hub that runs a
            newer, uncatalogued version (recorded with the job and audited).
        allow_off_pathway: with a catalogue, write its newest release to a hub whose
            running version has no approved path to it (recorded and audited).
    """

    trust: TrustStore | None = None
    allow_unsigned: bool = False
    allow_invalid: bool = False
    force: bool = False
    allow_downgrade: bool = False
    allow_off_pathway: bool = False

    def overrides_used(self, image: LoadedImage) -> list[str]:
        """The overrides this image needed, to be recorded with the job."""
        status = image.signature_status
        used = []
        if status.value in ("unsigned", "unchecked", "unsupported") and self.allow_unsigned:
            used.append(f"allow-unsigned (image signature: {status})")
        if status.value == "invalid" and self.allow_invalid:
            used.append("allow-invalid-signature (the signature does not verify)")
        return used


#: Records a job's state *before* the step it names is taken, with what the outcome knows
#: so far (the identity read, the image chosen); it may raise (the record was refused) to
#: stop the job before it acts on the hub. ``station flash`` keeps no records: no-op.
Checkpoint = Callable[[JobState, "FlashOutcome"], None]


def _no_checkpoint(state: JobState, out: FlashOutcome) -> None:
    return None


#: Chooses the image for a hub once it is identified (eui64, hw_version, version_before
#: are filled in); returns it checked, or raises Refusal / AlreadyCurrent.
ImageChooser = Callable[["FlashOutcome"], LoadedImage]


def check_image(image: LoadedImage, profile: Profile, policy: Policy) -> LoadedImage:
    """Prove an image fit to flash on this profile's hubs, before any port is opened.

    Returns the image with its signature checked against the trust store.

    Raises:
        ImageError: it cannot be right for this hub model (see :func:`precheck`), or the
            copies of its identity disagree (an edited OTA header: see
            :mod:`firmware_images.identity`).
        Refusal: its signature is missing or bad and no override allows it.
    """
    check_identity(image.parsed)  # flashable() did; this holds for any LoadedImage too
    precheck(image, profile)
    parsed = image.parsed if policy.trust is None else policy.trust.check(image.parsed)
    image = replace(image, parsed=parsed)
    reason = signature_refusal(
        parsed, allow_unsigned=policy.allow_unsigned, allow_invalid=policy.allow_invalid
    )
    if reason is not None:
        raise Refusal(f"{image.path}: {reason}", signature_hint(parsed, policy.trust))
    return image


def catalog_chooser(catalog: Catalog, profile: Profile, policy: Policy) -> ImageChooser:
    """Choose each hub's image from the catalogue: target, next hop, or refusal."""

    def choose(out: FlashOutcome) -> LoadedImage:
        running = None if out.version_before is None else int(out.version_before, 16)
        plan = catalog.plan(profile.name, out.hw_version, running)
        out.behind, out.plan = plan.behind, plan.reason
        if plan.decision is Decision.CURRENT:
            if plan.newest is not None:  # what the hub runs: the catalogued release
                out.target_version = plan.newest.version_text
                out.image_sha256 = plan.newest.sha256
            raise AlreadyCurrent()
        release = plan.release
        override = None
        if plan.decision is Decision.REFUSED or release is None:
            override = _pathway_override(catalog, plan, out.hw_version, running, policy)
            if override is None or plan.newest is None:
                raise Refusal(plan.reason, "see 'station catalog list' for approved releases")
            release = plan.newest
        path = catalog.path_of(release)
        parsed = catalog.load_release(release)
        problems = catalog.image_refusals(parsed, release)
        if problems:
            raise Refusal(f"{path}: " + "; ".join(problems), "the catalogue file was altered")
        image = check_image(flashable(parsed, profile.app_address), profile, policy)
        if image.descriptor.firmware_version != release.version:
            raise Refusal(
                f"{path}: its signed payload is version "
                f"{dotted_version(image.descriptor.firmware_version)}, the catalogue's release "
                f"is {dotted_version(release.version)}",
                "the catalogue file was altered",
            )
        out.target_version = release.version_text
        if override is not None:
            out.plan = f"{override}; write {release.version_text}"
            out.overrides.append(override)
        return replace(image, previous=previous_payload(catalog, profile, running, image))

    return choose


def previous_payload(
    catalog: Catalog, profile: Profile, running: int | None, image: LoadedImage
) -> bytes | None:
    """The payload of the catalogued release ``running`` (what the hub says it runs), placed
    where ``image`` goes, or None: not catalogued, its file no longer loads (the write is
    then planned from the hub's answers alone, as for any hub), or the protocol plans no
    write from it (``ProtocolPlugin.diff_hint``). Only a hint for the plan
    (:attr:`LoadedImage.previous`), so its signature is not checked."""
    held = catalog.release(profile.name, running) if running is not None else None
    if held is None or not plugin(profile.protocol).diff_hint:
        return None
    try:
        placed = flashable(catalog.load_release(held), profile.app_address)
    except (ImageError, ConfigError):
        return None
    return placed.data if placed.address == image.address else None


def _pathway_override(
    catalog: Catalog, plan: Plan, hw_version: int | None, running: int | None, policy: Policy
) -> str | None:
    """The override that lets a refused plan go ahead, when the operator gave it.

    Only pathway refusals can be overridden (a running version with no approved path to the
    newest release, or a newer uncatalogued one: a downgrade); a wrong model or hardware
    version never can.
    """
    if plan.newest is None or plan.model not in catalog.models:
        return None
    model = catalog.models[plan.model]
    if hw_version is not None and not model.hw_min <= hw_version <= model.hw_max:
        return None
    if running is not None and running > plan.newest.version:
        if policy.allow_downgrade:
            return f"allow-downgrade ({plan.reason})"
        return None
    if policy.allow_off_pathway:
        return f"allow-off-pathway ({plan.reason})"
    return None


def precheck(image: LoadedImage, profile: Profile) -> None:
    """Refuse an image that cannot be right for this hub model, before any port is opened.

    Compares the trusted identity (the signed descriptor), never the OTA header's fields.

    Raises:
        ImageError: a container the protocol's bootloader does not take, wrong
            manufacturer or image type, outside flash, misaligned, too big.
    """
    own = plugin(profile.protocol)
    if not own.accepts(image.kind):
        assert own.image_formats is not None
        raise ImageError(
            f"{image.path}: {profile.name} hubs ({profile.protocol}) take "
            f"{' or '.join(sorted(own.image_formats))} images, and this is a {image.kind} image",
            hint="give the image in a format its bootloader takes ('station protocols' lists them)",
        )
    d = image.descriptor
    if d.manufacturer_code != profile.manufacturer_code:
        raise ImageError(
            f"{image.path}: manufacturer code 0x{d.manufacturer_code:04X} does not match "
            f"profile {profile.name} (0x{profile.manufacturer_code:04X})",
            hint="this image is for another make of hub",
        )
    if d.image_type != profile.image_type:
        raise ImageError(
            f"{image.path}: image type 0x{d.image_type:04X} does not match "
            f"profile {profile.name} (0x{profile.image_type:04X})",
            hint="this image is for another hub model",
        )
    if image.address != profile.app_address:
        raise ImageError(
            f"{image.path}: loads at 0x{image.address:08X}, but {profile.name} applications "
            f"start at 0x{profile.app_address:08X}",
            hint="check --address or the image's load address",
        )
    if not profile.flash_start <= image.address or image.end > profile.flash_end:
        raise ImageError(
            f"{image.path}: 0x{image.address:08X}..0x{image.end:08X} ({len(image.data)} bytes) "
            f"does not fit in flash 0x{profile.flash_start:08X}..0x{profile.flash_end:08X}",
            hint="the image is too large for this hub model",
        )
    if (image.address - profile.flash_start) % profile.page_size:
        raise ImageError(
            f"{image.path}: 0x{image.address:08X} is not on a {profile.page_size}-byte page "
            "boundary; erasing its first page would destroy bytes outside the image"
        )


class _Job:
    """State of one re-flash while it runs; :func:`flash_hub` is the public entry."""

    def __init__(
        self,
        port: str,
        profile: Profile,
        source: LoadedImage | ImageChooser,
        policy: Policy,
        progress: ProgressFn,
        checkpoint: Checkpoint,
    ) -> None:
        self.profile = profile
        self.policy = policy
        self.progress = progress
        self.checkpoint = checkpoint
        self.phase = Phase.CONNECT
        self.out = FlashOutcome(port=port, profile=profile.name)
        self._timed: tuple[Phase, float] | None = None  # the phase being timed, since when
        self.chooser: ImageChooser | None = None
        if isinstance(source, LoadedImage):
            self.use(source)
        else:
            self.chooser = source
        self.session = open_session(port, profile)

    def use(self, image: LoadedImage) -> None:
        self.image = image
        self.out.image = image.path
        self.out.image_version = format_version(image.descriptor.firmware_version)
        # Without a catalogue the target is the image's own signed version.
        self.out.target_version = self.out.target_version or self.out.image_version
        self.out.image_sha256 = image.sha256
        self.out.signature = str(image.signature_status)
        self.out.signer = image.parsed.signature.signer if image.parsed.signature else None
        self.out.overrides.extend(self.policy.overrides_used(image))

    def enter(self, phase: Phase, note: str = "", state: JobState | None = None) -> None:
        """Enter ``phase``; with ``state``, that state is recorded first (durable before the
        phase's first command reaches the hub)."""
        self.stop_timing()
        self._timed = (phase, time.monotonic())
        self.phase = phase
        if state is not None:
            self.checkpoint(state, self.out)
        self.progress(phase, 0, 0, note)

    def stop_timing(self) -> None:
        """Add the time since the running phase was entered to its ``phase_seconds``."""
        if self._timed is not None:
            phase, since = self._timed
            spent = self.out.phase_seconds.get(str(phase), 0.0)
            self.out.phase_seconds[str(phase)] = spent + time.monotonic() - since
            self._timed = None

    def end(self, result: Result, message: str, hint: str = "") -> FlashOutcome:
        self.out.result = result
        self.out.message = message
        self.out.hint = hint
        if result in (Result.FAILED, Result.REFUSED, Result.INTERRUPTED):
            self.out.phase = str(self.phase)
        return self.out

    # -- phases ------------------------------------------------------------------------

    def plan(self) -> Result | None:
        self.enter(Phase.PLAN)
        if self.chooser is not None:
            # The catalogue decides from its release order (never numerically); the
            # chooser has checked hash, model, signature and pathway.
            try:
                self.use(self.chooser(self.out))
            except AlreadyCurrent:
                return Result.SKIPPED
            self.progress(Phase.PLAN, 0, 0, self.out.plan or "")
        d = self.image.descriptor
        hw = self.out.hw_version
        if hw is not None and not d.supports_hardware(hw):
            raise Refusal(
                f"hardware version {hw} is outside the image's range {d.hw_min}..{d.hw_max}",
                "this image is not approved for this hub's hardware",
            )
        if self.out.version_before is None or self.policy.force or self.chooser is not None:
            return None
        before = int(self.out.version_before, 16)
        if before == d.firmware_version:
            return Result.SKIPPED
        if before > d.firmware_version:
            raise Refusal(
                f"downgrade refused: hub runs {dotted_version(before)}, image is "
                f"{dotted_version(d.firmware_version)}",
                "use --force only if a downgrade is approved",
            )
        return None

    def target(self) -> int:
        """The version the hub must run after boot: the catalogue's release (the image's
        own signed version when there is no catalogue)."""
        assert self.out.target_version is not None
        return int(self.out.target_version, 16)

    def boot_and_confirm(self) -> str | None:
        """Start the application and confirm it; None when confirmed, else the reason."""
        self.enter(Phase.BOOT, state=JobState.BOOTING)
        self.session.boot(self.image)
        self.enter(Phase.CONFIRM)
        running, eui = self.session.confirm(self.profile.boot_timeout_s)
        if running is None:
            self.phase = Phase.BOOT
            return (
                f"the application did not answer within {self.profile.boot_timeout_s:g} s "
                "of starting it: it did not start"
            )
        self.out.version_after = format_version(running)
        self.out.eui64_confirmed = eui
        if running != self.target():
            return (
                f"the hub runs {dotted_version(running)}, not the target "
                f"{dotted_version(self.target())}"
            )
        if eui != self.out.eui64:
            return f"a different hub answered after boot (EUI-64 {eui}, expected {self.out.eui64})"
        return None


def flash_hub(
    port: str,
    profile: Profile,
    source: LoadedImage | ImageChooser,
    *,
    policy: Policy | None = None,
    verify: str | None = None,
    on_progress: ProgressFn = no_progress,
    checkpoint: Checkpoint = _no_checkpoint,
    power: SlotPower | None = None,
) -> FlashOutcome:
    """Re-flash the hub on ``port`` and say how it ended.

    Args:
        source: the image to write, or a chooser that picks it once the hub is identified
            (:func:`catalog_chooser`).
        policy: trust store, overrides and ``force`` (default: strict, no trust store).
        verify: ``auto``, ``crc`` or ``readback`` (default: the profile's).
        power: the slot's power; with ``entry`` set, the hub is power-cycled with its boot
            pin held before it is spoken to (a switch that fails ends the job in connect).

    Hub and link failures are reported in the outcome (result ``failed`` with the phase),
    never raised. ``on_progress`` may raise :class:`Cancelled` to stop the job at the next
    block or phase: it ends ``interrupted`` with that reason (never passed). A network
    port whose exporter drops the connection (:class:`RemotePortLost`) ends it
    ``interrupted`` too, with "remote port lost" and the exporter's host.

    ``checkpoint`` is called with each state before the step it names (``identified`` once
    the hub's identity and running version are read, ``planned`` once the image is chosen,
    then ``erasing``, ``writing``, ``verifying``, ``booting``): the controller records it
    durably there, and a refused record (the checkpoint raises a StationError) ends the job
    failed before the hub is touched further.

    A fixed image is checked before the port is opened: a policy refusal
    (signature) comes back as ``refused`` with nothing sent to the hub.

    Raises:
        ImageError: a fixed image is not fit for this profile (see :func:`precheck`).
        ConfigError: the station cannot do the job whatever the hub: no USB backend
            (libusb), a port setting pyserial refuses, a profile the session cannot use.
    """
    policy = policy or Policy()
    started = time.monotonic()
    if isinstance(source, LoadedImage):
        try:
            source = check_image(source, profile, policy)
        except Refusal as exc:
            out = FlashOutcome(port=port, profile=profile.name, image=source.path)
            out.result, out.phase, out.message, out.hint = (
                Result.REFUSED,
                str(Phase.PLAN),
                exc.reason,
                exc.hint,
            )
            out.signature = str(source.signature_status)
            return out
    job = _Job(port, profile, source, policy, on_progress, checkpoint)
    session = job.session
    try:
        job.enter(Phase.CONNECT)
        if power is not None and power.spec.entry:
            power.enter_bootloader(port)
            job.out.notes.append(f"power-cycled by {power.spec.switch_text}, boot pin held")
        session.connect(job.out)
        take_adapter_latency(session, job.out, job.progress)
        job.enter(Phase.IDENTIFY)
        session.identify(job.out)
        job.checkpoint(JobState.IDENTIFIED, job.out)  # what was read, durable before a plan
        if job.plan() is Result.SKIPPED:
            # Nothing to write: the bootloader was entered only to identify the hub, so it
            # goes back to its box running its firmware (a note says if it did not start).
            _start_again(session, profile, job.out.notes)
            return job.end(
                Result.SKIPPED,
                f"already running {dotted_text(job.out.version_before)}; nothing written",
                "" if job.chooser else "use --force to write it again",
            )
        job.checkpoint(JobState.PLANNED, job.out)  # the image chosen, durable before erasing
        job.enter(Phase.ERASE, state=JobState.ERASING)
        session.erase(job.image, on_progress)
        job.enter(Phase.WRITE, state=JobState.WRITING)
        session.write(job.image, on_progress, job.out)
        if job.out.pages_written is None:  # a session that writes by pages counts its own
            job.out.bytes_written = len(job.image.data)
        job.enter(Phase.VERIFY, state=JobState.VERIFYING)
        if not session.verify(job.image, verify or profile.verify, on_progress, job.out):
            return job.end(
                Result.FAILED,
                f"verify failed: {job.out.verify_detail}",
                "the flash does not hold the image; run the job again",
            )
        problem = job.boot_and_confirm()
        if problem is not None:
            return job.end(Result.FAILED, problem, "the hub is not confirmed; do not ship it")
        return job.end(
            Result.PASSED,
            f"{dotted_text(job.out.version_before or 'blank')} -> "
            f"{dotted_text(job.out.version_after)}, verified by "
            f"{job.out.verify_method}, running version read back",
        )
    except Refusal as exc:
        return job.end(Result.REFUSED, exc.reason, exc.hint)
    except Cancelled as exc:  # raised by the progress callback: the operator stopped it
        return job.end(Result.INTERRUPTED, exc.reason, exc.hint)
    except ImageError as exc:  # a catalogue file that will not parse: refuse, never guess
        return job.end(Result.REFUSED, exc.message, exc.hint)
    except ConfigError:  # the station's set-up (no USB backend, a bad port setting): no
        raise  # hub was at fault, so no hub's outcome may say it failed
    except RemotePortLost as exc:  # the network or its exporter failed, not the hub: the
        job.out.raised(exc)  # job was cut short, so it can never have passed
        return job.end(Result.INTERRUPTED, exc.message, exc.hint)
    except StationError as exc:
        job.out.raised(exc)
        if exc.phase:
            job.phase = Phase(exc.phase)
        where = (
            f" at 0x{exc.address:08X}"
            if exc.address is not None and "0x" not in exc.message
            else ""
        )
        return job.end(Result.FAILED, exc.message + where, exc.hint)
    finally:
        job.stop_timing()
        job.out.notes.extend(session.notes)
        job.out.seconds = time.monotonic() - started
        if job.out.result is not Result.PASSED:
            job.out.exchanges = session.exchanges()
        session.close()


@dataclass(frozen=True)
class HubIdentity:
    """What a read-only look at a hub found (see :func:`identify_hub`).

    Attributes:
        found_in: ``application`` or ``bootloader``: where the hub was when first looked at.
        problem: why the hub could not be identified (None: it was).
        bootloader: what its bootloader told about itself, as far as it got.
        left_in: where the look left the hub (``application``, ``bootloader``; None:
            not known, it did not answer).
        notes: what happened on the way worth saying (retries, a restart).
        hint: what to do about ``problem``.
        error: the error behind ``problem``; a :class:`~drivers.errors.ConfigError` is the
            station's own set-up (no USB backend), not the hub.
    """

    port: str
    profile: str
    eui64: str | None = None
    hw_version: int | None = None
    version_before: str | None = None
    found_in: str | None = None
    problem: str | None = None
    bootloader: BootloaderFacts | None = None
    left_in: str | None = None
    notes: tuple[str, ...] = ()
    hint: str | None = None
    error: StationError | None = field(default=None, compare=False)


def identify_hub(
    port: str, profile: Profile, *, restore: bool = False, was_running: bool = False
) -> HubIdentity:
    """Connect to the hub on ``port`` and identify it, writing nothing (a pre-flight look,
    or ``station info``).

    The hub may be left in its bootloader (that is where the job starts anyway); with
    ``restore``, a hub found running its application (or, ``was_running``, that an earlier
    look found running it) is started again, so the look leaves it as it was. Failures come
    back in ``problem``, never raised.
    """
    out = FlashOutcome(port=port, profile=profile.name)
    problem, hint, error, facts, left_in = None, None, None, None, None
    notes: list[str] = []
    try:
        session = open_session(port, profile)
    except StationError as exc:
        return HubIdentity(port, profile.name, problem=exc.message, hint=exc.hint, error=exc)
    try:
        session.connect(out)
        session.identify(out)
        left_in = "bootloader"
        if restore and (was_running or out.found_in == "application"):
            left_in = _start_again(session, profile, notes)
    except Refusal as exc:
        problem, hint = exc.reason, exc.hint
    except StationError as exc:
        problem, hint, error = exc.message, exc.hint, exc
    finally:
        facts = session.describe()
        notes[:0] = [*session.notes, *out.notes]
        session.close()
    found_in = "application" if was_running else out.found_in
    if restore and problem is not None and out.found_in == "application":
        notes.append(
            "it was found running its application and told to enter its bootloader, where "
            "it may still be: power-cycle it to start its application again"
        )
    return HubIdentity(
        port,
        profile.name,
        out.eui64,
        out.hw_version,
        out.version_before,
        found_in,
        problem,
        facts,
        left_in,
        tuple(notes),
        hint or None,
        error,
    )


def _start_again(session: HubSession, profile: Profile, notes: list[str]) -> str:
    """Start the application of a hub that was found running it; where it is left."""
    try:
        session.start_application()
        running, _eui = session.confirm(profile.boot_timeout_s)
    except StationError as exc:
        notes.append(f"its application was not started again: {exc.message}")
        return "bootloader"
    if running is None:
        notes.append(
            f"its application did not answer within {profile.boot_timeout_s:g} s of being "
            "started again"
        )
        return "bootloader"
    return "application"


def detect_profile(
    port: str,
    candidates: Sequence[str],
    *,
    restore: bool = False,
    on_look: Callable[[HubIdentity], None] | None = None,
) -> tuple[HubIdentity | None, list[str]]:
    """Identify the hub on ``port`` (read-only, as :func:`identify_hub`) with the first of
    ``candidates`` that recognises it; also what each one tried before answered.

    USB ports (``usb:...``) are tried with profiles of USB protocols only, serial ports
    with the others.
    With ``restore`` the hub is left as the first look found it (an earlier candidate may
    have sent a running hub to its bootloader before it was refused). ``on_look`` is
    given each look as it ends, the refused ones too (with the error behind each).
    """
    tried: list[str] = []
    usb = port.startswith("usb:")
    was_running = False
    for name in candidates:
        profile = load_profile(name)
        if not plugin(profile.protocol).link.takes(port):
            tried.append(f"{name}: not for a {'USB' if usb else 'serial'} port")
            continue
        found = identify_hub(port, profile, restore=restore, was_running=was_running)
        if on_look is not None:
            on_look(found)
        if found.problem is None:
            return found, tried
        tried.append(f"{name}: {found.problem}")
        was_running = restore and (was_running or found.found_in == "application")
    return None, tried

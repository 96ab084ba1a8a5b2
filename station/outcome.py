"""What a hub's job ends as, and the exceptions policy raises on the way."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Result(StrEnum):
    """How a hub's job ended."""

    PASSED = "passed"  # written, verified, booted, running version read back and equal
    FAILED = "failed"
    SKIPPED = "skipped"  # already runs the image's version
    REFUSED = "refused"  # policy: wrong model or hardware, downgrade
    INTERRUPTED = "interrupted"  # the hub was removed (or the station stopped) mid-job


@dataclass
class FlashOutcome:
    """Everything known about one hub's job, for printing, JSON and records."""

    port: str
    profile: str
    result: Result = Result.FAILED
    image: str = ""
    image_version: str = ""  # the version the image's signed payload states
    target_version: str | None = None  # the release the catalogue chose (or the image's)
    image_sha256: str = ""
    eui64: str | None = None
    hw_version: int | None = None
    found_in: str | None = None  # "bootloader" or "application"
    version_before: str | None = None
    version_after: str | None = None
    eui64_confirmed: str | None = None  # the EUI-64 the hub gave after boot
    verify_method: str | None = None
    verify_detail: str | None = None
    phase: str | None = None  # where it failed or was refused
    message: str = ""
    hint: str = ""
    error: str | None = None  # the error's type when it failed (e.g. "PortVanished")
    #: The error's class itself (see :meth:`raised`); ``error`` is its name, as recorded.
    error_type: type[BaseException] | None = field(default=None, repr=False, compare=False)
    signature: str | None = None  # the image's signature status (valid, unsigned...)
    signer: str | None = None  # the trusted key that verified it
    behind: int | None = None  # releases behind the newest, when a catalogue decided
    plan: str | None = None  # the catalogue's decision, e.g. "upgrade to 0x01050000"
    overrides: list[str] = field(default_factory=list)  # policy overrides used: recorded
    notes: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)  # last bytes on the wire, when failed
    bytes_written: int = 0
    #: The latency timer the port's USB-serial adapter ran at (ms), when it says.
    adapter_latency_ms: float | None = None
    #: Pages of the image erased and written, and pages left as they were because the flash
    #: already held them (device CRC or readback, asked twice); None: the protocol does not
    #: write by pages (Gecko) or the job never got to writing.
    pages_written: int | None = None
    pages_skipped: int | None = None
    seconds: float = 0.0
    #: Wall time spent in each phase the job entered (``connect``, ``identify``, ``plan``,
    #: ``erase``, ``write``, ``verify``, ``boot``, ``confirm``), in the order entered; the
    #: phase it ended in runs to its end. For the per-phase figures (docs/metrics.md).
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one object per hub in ``--json`` output)."""
        out = asdict(self)
        del out["error_type"]
        out["result"] = str(self.result)
        out["seconds"] = round(self.seconds, 3)
        out["phase_seconds"] = {k: round(v, 4) for k, v in self.phase_seconds.items()}
        return out

    def raised(self, exc: BaseException) -> None:
        """Keep the error that ended the job: its class (callers test it with
        ``issubclass``, so a subclass counts) and its name for the records."""
        self.error_type, self.error = type(exc), type(exc).__name__

    def ended_by(self, kind: type[BaseException]) -> bool:
        """Whether the job ended by an error of class ``kind`` (or a subclass of it)."""
        return self.error_type is not None and issubclass(self.error_type, kind)


class Refusal(Exception):
    """Policy says no; carries the reason and a hint."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class AlreadyCurrent(Exception):
    """The hub already runs what it should: nothing to write."""


class Cancelled(Exception):
    """Raised by a progress callback to stop a job (an operator's abort).

    Deliberately not a :class:`drivers.errors.StationError`: no driver retry loop may
    swallow it. :func:`station.flash.flash_hub` ends the job ``interrupted`` with the reason.
    """

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint

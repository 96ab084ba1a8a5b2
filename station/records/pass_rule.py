"""The one rule for what counts as a pass: the evidence a job needs to be recorded passed."""

from __future__ import annotations

from station.events import JobState
from station.outcome import FlashOutcome
from station.records.manifest import normalise_eui64

__all__ = ["pass_evidence_problem"]


def _norm_version(text: str | None) -> str:
    return (text or "").strip().lower()


def pass_evidence_problem(state: JobState, outcome: FlashOutcome) -> str | None:
    """Why a job in ``state`` cannot be recorded as passed with this outcome (None: it can).

    A pass needs the job to have walked to ``BOOTING`` (erased, written, verified, booted),
    a verify method, the running version read back and equal to the image's, the hub's
    EUI-64 and the image's SHA-256.
    """
    if state is not JobState.BOOTING:
        return f"the job never reached booting (its last recorded state is {state})"
    if not outcome.verify_method:
        return "no verify method is recorded: the flash was not verified"
    if not outcome.image_version:
        return "the image's version is not recorded"
    if not outcome.version_after:
        return "the running version was not read back after boot"
    if _norm_version(outcome.version_after) != _norm_version(outcome.image_version):
        return (
            f"the hub runs {outcome.version_after}, not the image's version {outcome.image_version}"
        )
    if not outcome.image_sha256 or len(outcome.image_sha256) != 64:
        return "the image's SHA-256 is not recorded"
    if outcome.eui64 is None:
        return "the hub's EUI-64 was not read: it cannot be reported"
    try:
        normalise_eui64(outcome.eui64)
    except ValueError as exc:
        return f"the hub's EUI-64 is not valid: {exc}"
    return None

"""The one rule for what counts as a pass: the evidence a job needs to be recorded passed.

A false pass is the worst thing the station can record: a hub shipped back to the field as
upgraded, and a DSP told so, when it is not. So the store checks a "passed" outcome against
what it recorded *before* the hub was written (the identity read, the target the catalogue
chose, the image chosen), not only against what the flash says at the end:

1. the job walked every state to ``booting`` (erased, written, verified, booted);
2. a verify method is recorded;
3. the target version was recorded before writing and the outcome names the same one;
4. the image's own (signed) version is that target;
5. the version read back from the running hub after boot is that target;
6. the image's SHA-256 is recorded, and is the one recorded before writing;
7. the hub's EUI-64 is valid, is the one read before writing, and the hub that answered
   after boot gave the same; its hardware version is the one read before writing;
8. the running version is newer than the one read before writing, unless the job recorded
   an ``allow-downgrade`` override (release order and numeric order agree in a catalogue).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from firmware_images.descriptor import dotted_text
from station.events import JobState
from station.outcome import FlashOutcome
from station.records.manifest import normalise_eui64

__all__ = ["pass_evidence_problem"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _norm(text: str | None) -> str:
    return (text or "").strip().lower()


def _number(text: str | None) -> int | None:
    try:
        return None if not text else int(text, 16)
    except ValueError:
        return None


def pass_evidence_problem(recorded: Mapping[str, Any] | Any, outcome: FlashOutcome) -> str | None:
    """Why ``outcome`` may not be recorded as a pass of the job ``recorded`` (its row as the
    store holds it before the outcome is written); None when it may."""
    state = JobState(str(recorded["state"]))
    if state is not JobState.BOOTING:
        return f"the job never reached booting (its last recorded state is {state})"
    if not outcome.verify_method:
        return "no verify method is recorded: the flash was not verified"
    target = recorded.get("target_version")
    if not target:
        return "no target version was recorded before the hub was written"
    if _norm(outcome.target_version) != _norm(target):
        return (
            f"the outcome's target {dotted_text(outcome.target_version)} is not the recorded "
            f"{dotted_text(target)}"
        )
    if _norm(outcome.image_version) != _norm(target):
        return (
            f"the image's own version {dotted_text(outcome.image_version)} is not the target "
            f"{dotted_text(target)}"
        )
    if not outcome.version_after:
        return "the running version was not read back after boot"
    if _norm(outcome.version_after) != _norm(target):
        return (
            f"the hub runs {dotted_text(outcome.version_after)}, not the target "
            f"{dotted_text(target)}"
        )
    sha = _norm(outcome.image_sha256)
    if not _SHA256.fullmatch(sha):
        return "the image's SHA-256 is not recorded"
    if sha != _norm(recorded.get("image_sha256")):
        return "the image's SHA-256 is not the one recorded before the hub was written"
    if outcome.eui64 is None:
        return "the hub's EUI-64 was not read: it cannot be reported"
    try:
        eui = normalise_eui64(outcome.eui64)
    except ValueError as exc:
        return f"the hub's EUI-64 is not valid: {exc}"
    if eui != recorded.get("eui64"):
        return (
            f"the hub's EUI-64 {eui} is not the {recorded.get('eui64')} read before it was written"
        )
    confirmed = outcome.eui64_confirmed
    if confirmed is None or _norm(confirmed) != _norm(eui):
        return f"the hub that answered after boot said EUI-64 {confirmed}, not {eui}"
    if recorded.get("hw_version") is not None and outcome.hw_version != recorded["hw_version"]:
        return (
            f"hardware version {outcome.hw_version} is not the {recorded['hw_version']} read "
            "before the hub was written"
        )
    before, after = _number(recorded.get("version_before")), _number(outcome.version_after)
    downgrade = any(o.startswith("allow-downgrade") for o in outcome.overrides)
    if before is not None and (after is None or after <= before) and not downgrade:
        return (
            f"{dotted_text(outcome.version_after)} is not newer than the "
            f"{dotted_text(recorded.get('version_before'))} "
            "the hub ran before, and no downgrade override was recorded"
        )
    return None

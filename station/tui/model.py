"""What the operator sees, as plain data: slots, their jobs and the batch counters.

Pure: no Textual, no threads, no clock of its own (times come from the events and from the
``now`` the caller passes), so it is tested directly and snapshots are deterministic.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from rich.text import Text

from station.events import (
    CHAIN,
    BatchFinished,
    BatchStarted,
    Event,
    HubDetected,
    HubIdentified,
    JobFinished,
    JobPlanned,
    JobProgress,
    JobState,
    JobStateChanged,
    Note,
    Retry,
    SlotEmpty,
    SlotError,
    SlotFault,
    SlotPowered,
    StateEvent,
)
from station.latency import is_latency_note, latency_of
from station.records.consignments import ConsignmentStatus
from station.records.manifest import normalise_eui64
from station.render import literal, shown_version

#: How each state is shown: (symbol, word, style). Never colour alone: symbol and word too.
LOOK: Final[dict[str, tuple[str, str, str]]] = {
    "idle": ("·", "idle", "dim"),
    "empty": ("○", "no hub", "dim"),
    "detected": ("▶", "connect", "bold cyan"),
    "identified": ("▶", "identify", "bold cyan"),
    "planned": ("▶", "plan", "bold cyan"),
    "erasing": ("▶", "erase", "bold cyan"),
    "writing": ("▶", "write", "bold cyan"),
    "verifying": ("▶", "verify", "bold cyan"),
    "booting": ("▶", "boot", "bold cyan"),
    "passed": ("✓", "PASSED", "bold green"),
    "skipped": ("=", "CURRENT", "green"),
    "refused": ("⊘", "REFUSED", "bold yellow"),
    "failed": ("✗", "FAILED", "bold red"),
    "interrupted": ("!", "STOPPED", "bold magenta"),
}
_TRACE: Final = 12
_LIVE: Final = frozenset(str(s) for s in CHAIN)
#: Results after which a hub's next job is another try at the same change.
_UNCONFIRMED: Final = frozenset({"failed", "interrupted", "refused"})
_RECORDED_VERSION: Final = re.compile(r"\b0x[0-9A-Fa-f]{8}\b")
_HEX_RUN: Final = re.compile(
    r"(?P<arrow>->|<-) (?P<hex>[0-9A-F]{2}(?: [0-9A-F]{2})*)(?P<rest> .*)?"
)


def plan_text(text: str) -> str:
    """The catalogue's and policy's decision (``upgrade to 0x01050000``) as people read it:
    every version in it dotted (``upgrade to 1.5.0.0``), the rest as it is. Only for plan
    text, where an eight-digit hex number is always a version (a failure message may hold
    addresses: those are left alone)."""
    return literal(_RECORDED_VERSION.sub(lambda m: shown_version(m.group()), text))


def exchange_lines(exchanges: list[str]) -> list[str]:
    """The last exchanges with a hub (``-> 31 CE``, ``<- 1F``) as a hex block: each run of
    bytes under its direction, 16 bytes a line in two groups of 8. What is not a run of
    bytes (a DFU request, an error) is shown as it is."""
    out: list[str] = []
    for exchange in exchanges:
        m = _HEX_RUN.fullmatch(exchange)
        if m is None:
            out.append(literal(exchange))
            continue
        octets = m["hex"].split()
        for i in range(0, len(octets), 16):
            row = octets[i : i + 16]
            text = " ".join(row[:8]) + ("  " + " ".join(row[8:]) if len(row) > 8 else "")
            out.append(f"{m['arrow'] if i == 0 else '  '} {text}")
        if m["rest"] and m["rest"].strip():
            out[-1] += "  " + literal(m["rest"].strip())
    return out


def known(*versions: int | None) -> int | None:
    """The first version known (not None): a version may be 0, which is still known."""
    return next((v for v in versions if v is not None), None)


def human_rate(bytes_per_s: float) -> str:
    """``11.2kB/s``."""
    if bytes_per_s >= 1_000_000:
        return f"{bytes_per_s / 1e6:.1f}MB/s"
    if bytes_per_s >= 1000:
        return f"{bytes_per_s / 1e3:.1f}kB/s"
    return f"{bytes_per_s:.0f}B/s"


def clock_text(seconds: float | None) -> str:
    """``1:05`` or ``1:02:03``; ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class _Previous:
    """The slot's last job, kept at a new job's start until the hub is identified: if it is
    the same hub after a job that did not end well, the new job is another try."""

    eui64: str | None
    version_before: int | None
    state: str
    job_ids: list[int]
    tries: int


@dataclass
class SlotView:
    """One slot as shown: its current (or last) job, and the earlier tries of its hub.

    ``version_before`` is what the hub ran before this station wrote to it: read at the
    first try's ``identified`` (a later try may find the flash half written and read no
    version), kept across the tries of the same hub.
    """

    number: int
    profile: str
    binding: str
    state: str = "idle"
    job_id: int | None = None
    job_ids: list[int] = field(default_factory=list)  # this hub's tries here, oldest first
    port: str | None = None
    eui64: str | None = None
    version_before: int | None = None  # versions are integers until shown
    version_after: int | None = None
    target: int | None = None
    phase: str | None = None
    done: int = 0
    total: int = 0
    rate: float | None = None
    eta_s: float | None = None
    reason: str = ""
    hint: str = ""
    fail_phase: str | None = None
    tries: int = 0  # tries before the current one
    fault: bool = False
    slow_adapter: str = ""  # the adapter's latency when the job warned it is high
    #: "off" while the station keeps the slot's power off (swap the hub safely).
    power: str | None = None
    label: str | None = None
    exchanges: list[str] = field(default_factory=list)
    trace: deque[str] = field(default_factory=lambda: deque(maxlen=_TRACE))
    _phase_start: tuple[float, int] | None = None
    _retrying: bool = False
    _previous: _Previous | None = None

    @property
    def live(self) -> bool:
        """A job runs here now."""
        return self.state in _LIVE

    @property
    def final(self) -> bool:
        """The slot's last job has ended."""
        return self.state in {str(s) for s in JobState if s.final}

    @property
    def label_check(self) -> bool | None:
        """Whether the scanned label matches the EUI-64 read (None: nothing to compare)."""
        if self.label is None or self.eui64 is None:
            return None
        return self.label == self.eui64

    def scan(self, text: str) -> str:
        """Record a scanned label; returns it normalised.

        Raises:
            ValueError: it is not an EUI-64.
        """
        self.label = normalise_eui64(text)
        return self.label

    def apply(self, ev: Event) -> None:
        """Take one controller event for this slot."""
        match ev:
            case HubDetected() | HubIdentified() | JobPlanned() | JobStateChanged():
                self._new_state(ev)
                stamp = f"state {ev.state}"
            case JobProgress():
                self._progress(ev)
                return  # progress is not worth a trace line each time
            case Note():
                stamp = f"note: {ev.note}"
                if is_latency_note(ev.note):
                    self.slow_adapter = latency_of(ev.note)
            case Retry():
                self._retrying = True
                stamp = f"retry (try {ev.tries}): {ev.why}"
            case JobFinished():
                self._finished(ev)
                stamp = f"{self.state}" + (f" in {self.fail_phase}" if self.fail_phase else "")
                stamp += f": {self.reason}" if self.reason else ""
            case SlotEmpty():
                self.state = "empty"
                stamp = f"no hub at {ev.binding}"
            case SlotPowered(error=error) if error:
                stamp = f"power {ev.action} FAILED: {error}"
            case SlotPowered():
                self.power = "off" if ev.action == "off" else None
                stamp = f"power {ev.action}: {ev.why}"
            case SlotFault(power=power) if power:
                self.fault = True
                stamp = f"SLOT FAULT: power switch: {power}"
            case SlotFault():
                self.fault = True
                stamp = f"SLOT FAULT: {ev.failed_hubs} different hubs failed here"
            case SlotError():
                self.state = "failed"
                self.reason = f"slot worker crashed: {ev.error}"
                stamp = self.reason
            case _:
                stamp = ev.kind
        self.trace.append(stamp)

    def _new_state(self, ev: StateEvent) -> None:
        match ev:
            case HubDetected():
                self._new_job(ev)
            case HubIdentified():
                self._identified(ev)
            case JobPlanned():
                self.target = known(ev.target_version, ev.image_version, self.target)
        self.state = str(ev.state)
        self._phase_start = None
        self.done = self.total = 0
        self.rate = self.eta_s = None

    def _progress(self, ev: JobProgress) -> None:
        phase, done, total = str(ev.phase), ev.done, ev.total
        if phase != self.phase or self._phase_start is None or done < self.done:
            self.phase = phase
            self._phase_start = (ev.at, done)
        t0, d0 = self._phase_start
        self.done, self.total = done, total
        if ev.at > t0 and done > d0:
            self.rate = (done - d0) / (ev.at - t0)
            self.eta_s = (total - done) / self.rate

    def _finished(self, ev: JobFinished) -> None:
        self.state = str(ev.state)
        self.eui64 = ev.eui64 or self.eui64
        # What the hub ran before any write was read at the first try; the outcome of a
        # later try may say "unknown" (the flash was half written by then).
        self.version_before = known(self.version_before, ev.version_before)
        self.version_after = ev.version_after
        self.target = known(ev.target_version, ev.image_version, self.target)
        self.reason = ev.message
        self.hint = ev.hint
        self.fail_phase = ev.phase
        self.exchanges = list(ev.exchanges)
        self.profile = ev.profile or self.profile  # the model found ("auto" slots)
        self.rate = self.eta_s = None

    def _new_job(self, ev: HubDetected) -> None:
        self.job_id = ev.job_id
        self.port = ev.port
        job_ids = [ev.job_id]
        if self._retrying:  # the station's own retry: the same hub, another try
            self.job_ids += job_ids
            self.tries += 1
            self._previous = None
        else:  # a new hub, or the same one again: known once it is identified
            self._previous = _Previous(
                self.eui64, self.version_before, self.state, self.job_ids, self.tries
            )
            self.job_ids = job_ids
            self.tries = 0
            self.eui64 = self.version_before = self.target = None
            self.trace.clear()
        self._retrying = False
        self.version_after = None
        self.reason = self.hint = ""
        self.slow_adapter = ""
        self.fail_phase = None
        self.exchanges = []

    def _identified(self, ev: HubIdentified) -> None:
        eui64, prev = ev.eui64, self._previous
        self._previous = None
        if prev is not None and eui64 and prev.eui64 == eui64 and prev.state in _UNCONFIRMED:
            # Run again after a job that did not end well (the operator's "r"): another try.
            self.job_ids = prev.job_ids + self.job_ids
            self.tries = prev.tries + 1
            self.version_before = prev.version_before
        self.eui64 = eui64 or self.eui64
        self.version_before = known(self.version_before, ev.version_before)


@dataclass
class BatchView:
    """The batch as shown: counters, consignment and time.

    A hub counts by how its latest job ended; while the station (or the operator) tries it
    again it is not failed. A listed hub is *missing* only once the batch is closed and its
    consignment reconciliation says so; until then it is *not seen yet*.
    """

    slots: dict[int, SlotView]
    listed: frozenset[str] = frozenset()
    batch_id: int | None = None
    started_at: float | None = None
    hubs: dict[str, str] = field(default_factory=dict)  # hub (EUI-64 or job) -> result
    seen: set[str] = field(default_factory=set)  # EUI-64s identified by this batch's jobs
    closed_missing: list[str] | None = None  # the closed batch's missing hubs
    #: Loaded consignments' progress across every station (shared store), one line each.
    fleet: list[str] = field(default_factory=list)

    def apply(self, ev: Event) -> set[int]:
        """Take one event; returns the slots whose tiles changed."""
        match ev:
            case BatchStarted():
                self.batch_id = ev.batch or self.batch_id
                self.started_at = self.started_at if self.started_at is not None else ev.at
                return set()
            case BatchFinished():
                missing = ev.reconciliation.get("missing")
                self.closed_missing = sorted(
                    [str(e.get("eui64")) for e in missing]
                    if isinstance(missing, list)
                    else self.listed - self.seen
                )
                return set()
        if ev.slot is None or ev.slot not in self.slots:
            return set()
        view = self.slots[ev.slot]
        tried = view.eui64 or f"job {view.job_id}"  # the hub of the job that just ended
        view.apply(ev)
        match ev:
            case Retry():
                self.hubs.pop(tried, None)  # tried again: its next try speaks for it
            case HubIdentified() if view.eui64:
                self.seen.add(view.eui64)
                if self.hubs.get(view.eui64) in _UNCONFIRMED:
                    del self.hubs[view.eui64]  # a hub that did not end well, run again
            case JobFinished():
                # A hub's latest job speaks for it (as in the reports); a skip after a pass
                # confirms the pass. A job that never read the hub's EUI-64 counts on its own.
                key = view.eui64 or f"job {ev.job_id}"
                before = self.hubs.get(key)
                self.hubs[key] = (
                    "passed" if before == "passed" and view.state == "skipped" else view.state
                )
                if view.eui64:
                    self.seen.add(view.eui64)
        return {ev.slot}

    def hub_results(self) -> dict[str, int]:
        """Hubs by result: each hub counted once, by its latest job (a retry replaces it)."""
        out = {"passed": 0, "failed": 0, "refused": 0, "skipped": 0, "interrupted": 0}
        for state in self.hubs.values():
            if state in out:
                out[state] += 1
        return out

    def remaining(self) -> int:
        """Slots whose hub is not done yet (running, waiting or never started)."""
        return sum(1 for v in self.slots.values() if not v.final and v.state != "empty")

    def unseen(self) -> list[str]:
        """Listed hubs no job of this batch has identified yet (while it runs: not missing)."""
        return sorted(self.listed - self.seen)

    def missing(self) -> list[str]:
        """Listed hubs that never arrived, once the batch is closed (empty before)."""
        return [] if self.closed_missing is None else list(self.closed_missing)

    def header(self, now: float | None, width: int = 200) -> Text:
        """The batch counters as one line (terser words when ``width`` is small)."""
        r = self.hub_results()
        elapsed = None if self.started_at is None or now is None else now - self.started_at
        rate = "--"
        if elapsed and elapsed > 0 and r["passed"]:
            rate = f"{r['passed'] * 3600 / elapsed:.0f}"
        wide = width >= 110
        gap = "  " if wide else " "
        t = Text()
        t.append(f"batch {self.batch_id or '-'}{gap}" if wide else f"#{self.batch_id or '-'} ")
        for symbol, long, short, n, style in (
            ("✓", "passed", "pass", r["passed"], "green"),
            ("✗", "failed", "fail", r["failed"] + r["interrupted"], "red"),
            ("⊘", "refused", "refused", r["refused"], "yellow"),
            ("=", "current", "current", r["skipped"], ""),
        ):
            t.append(f"{symbol} {long} {n}{gap}" if wide else f"{symbol}{n} {short}{gap}", style)
        left = self.remaining()
        t.append(f"… remaining {left}{gap}" if wide else f"{left} left{gap}")
        if self.listed:
            if self.closed_missing is not None:
                n, long, short, style = len(self.closed_missing), "missing", "missing", "magenta"
            else:
                n, long, short, style = len(self.unseen()), "not seen", "unseen", ""
            t.append(f"{long} {n}/{len(self.listed)}{gap}" if wide else f"{n} {short} ", style)
        t.append(
            f"⏱ {clock_text(elapsed)}{gap}{rate} hubs/h"
            if wide
            else f"⏱{clock_text(elapsed)} {rate}/h"
        )
        return t

    def consignment(self, width: int) -> Text:
        """The listed hubs not seen (or, once closed, missing), named, on one line; first,
        when the store is shared, each loaded consignment's progress across stations."""
        fleet = Text("\n".join(self.fleet), style="cyan")
        fleet.truncate(width * max(len(self.fleet), 1), overflow="ellipsis")
        local = self._listed_line(width)
        if not self.fleet:
            return local
        return Text("\n").join([fleet, local]) if local.plain else fleet

    def _listed_line(self, width: int) -> Text:
        if not self.listed:
            return Text()
        if self.closed_missing is not None:
            hubs, style = self.closed_missing, "bold magenta"
            words = f"Missing: {len(hubs)} listed hub(s) never arrived: "
        else:
            hubs, style = self.unseen(), ""
            words = f"Consignment: {len(self.listed) - len(hubs)}/{len(self.listed)} seen; "
            words += "not seen yet: "
        if not hubs:
            return Text(f"Consignment: all {len(self.listed)} listed hubs seen", style="dim")
        names = [literal(eui) for eui in hubs]
        shown: list[str] = []
        for name in names:  # as many as fit, then how many more
            more = len(names) - len(shown) - 1
            text = ", ".join([*shown, name]) + (f" +{more} more" if more else "")
            if shown and len(words) + len(text) > width:
                break
            shown.append(name)
        more = len(names) - len(shown)
        line = Text(words, style=style)
        line.append(", ".join(shown) + (f" +{more} more" if more else ""))
        line.truncate(width, overflow="ellipsis")
        return line


def _bar(fraction: float, width: int) -> str:
    width = max(width, 1)
    filled = fraction * width
    full = int(filled)
    part = " ▏▎▍▌▋▊▉"[int((filled - full) * 8)] if full < width else ""
    return ("█" * full + part).ljust(width, "░")[:width]


def _tail(eui64: str, room: int) -> str:
    """The EUI-64, or when it must be cut its last whole octets: they tell hubs apart."""
    if len(eui64) <= room:
        return eui64
    octets = eui64.split("-")
    keep = max((room - 1 + 1) // 3, 1)  # "…" then "XX-XX" is 3k-1 cells
    return "…" + "-".join(octets[-keep:])


def versions_text(v: SlotView) -> str:
    """What is known of the hub's versions, each said once: ``1.1.0.0→1.5.0.0`` (before and
    after, or the target while it is written), ``runs 1.5.0.0`` (current, or no target),
    ``→1.5.0.0`` (before not read); empty when nothing is known."""
    before = v.version_before
    after = v.version_after if v.state == "passed" else v.target
    if v.state == "skipped":
        after = None
    if before is not None and after is not None:
        return f"{shown_version(before)}→{shown_version(after)}"
    if before is not None:
        return f"runs {shown_version(before)}"
    if after is not None:
        return f"→{shown_version(after)}"
    return ""


def tile_text(v: SlotView, width: int, height: int) -> Text:
    """A slot tile of ``width`` x ``height`` cells; denser when smaller, never colour-only.

    Line by line, as room allows: slot, symbol and state word (and the EUI-64 when it
    fits); the EUI-64; model and versions (:func:`versions_text`, once); progress (bar, %,
    bytes/s, ETA) or why the job ended badly. The last line always shows: progress, the
    reason, or for a passed or current hub its versions. What the hub and the rig say is
    shown as it is (:func:`station.render.literal`).
    """
    symbol, word, style = LOOK.get(v.state, ("?", v.state, ""))
    if v.fault:
        symbol, word = "‼", "FAULT " + word
    head = Text(f"{v.number:>2} ", style="bold")
    head.append(f"{symbol} {word}", style=style)
    if v.power == "off":  # said in words: the operator may take the hub out now
        head.append(" ⏻ off: swap" if width >= 30 else " ⏻off", style="bold")
    if v.label_check is False:
        head.append(" ≠LABEL", style="bold reverse red")
    elif v.label_check is True and width >= 30:
        head.append(" label✓", style="green")
    if v.slow_adapter:
        head.append(f" ⚠LATENCY {v.slow_adapter}" if width >= 30 else " ⚠", style="bold yellow")
    running = v.state in ("erasing", "writing", "verifying") and v.total > 0

    def progress(avail: int) -> Text:
        pct = v.done / v.total if v.total else 0.0
        info = f"{pct:4.0%}"
        if avail >= 34:
            rate = human_rate(v.rate) if v.rate else "--"
            info += f" {rate} ETA {clock_text(v.eta_s)}"
        if avail - len(info) < 4:
            return Text(info.strip())
        return Text(_bar(pct, avail - len(info) - 1), style=style) + Text(" " + info)

    versions = versions_text(v)
    if v.tries:
        versions = f"{versions} try {v.tries + 1}".strip()
    eui64 = None if v.eui64 is None else literal(v.eui64)
    outcome = ""
    if v.state in ("failed", "refused", "interrupted"):
        reason = plan_text(v.reason) if v.fail_phase == "plan" else literal(v.reason)
        outcome = f"{literal(v.fail_phase)}: {reason}" if v.fail_phase else reason
    elif v.state in ("idle", "empty"):
        outcome = literal(v.binding)
    done = v.state in ("passed", "skipped")
    indent = "   "

    if height <= 1:
        line = head.copy()
        rest = width - line.cell_len - 1
        said = versions if done else outcome
        if done and len(said) > rest:  # the version it runs now, at least
            now = v.version_after if v.state == "passed" else v.version_before
            said = shown_version(now) if now is not None else said
        if running and rest >= 4:
            line.append(" ")
            line.append_text(progress(rest))
        elif said and v.state not in ("idle", "empty") and rest > 3:
            line.append(" " + said)
        elif eui64 and rest >= 8:
            line.append(" …" + eui64[-(rest - 2) :])
        line.truncate(width, overflow="ellipsis")
        return line

    room = width - len(indent)
    profile = literal(v.profile)
    ident = f"{profile} {versions}".strip()
    if versions and len(ident) > room:
        ident = versions  # the versions matter more than the model's name
    last: Text | None = None
    if running:
        last = Text(indent) + progress(room)
    elif outcome:
        last = Text(indent + outcome, style=style if v.final else "dim")
    elif done:
        last = Text(indent + ident)
    lines = [head.copy()]
    extra = [] if done else [ident]
    beside = width - head.cell_len - 2  # room for the EUI-64 beside the state
    if eui64 and beside >= len(eui64):
        lines[0].append(f"  {eui64}")
    elif eui64 and height - 1 >= len(extra) + 1 + (last is not None):
        extra.insert(0, _tail(eui64, room))  # a line of its own
    elif eui64 and beside >= 10:  # its end, and a blank before the next tile
        lines[0].append("  " + _tail(eui64, beside - 1))
    body = [Text(indent + e, style="dim" if v.state in ("idle", "empty") else "") for e in extra]
    if last is not None:
        # The result or progress always shows; identity fills the lines above it.
        body = [*body[: max(height - 2, 0)], last]
    lines += [line for line in body if line.plain.strip()]
    shown = lines[:height]
    for line in shown:
        line.truncate(width, overflow="ellipsis")
    return Text("\n").join(shown)


def grid_shape(slots: int, width: int, height: int) -> tuple[int, int]:
    """Columns and tile height that fit ``slots`` tiles in ``width`` x ``height`` cells.

    Prefers tiles at least 38 cells wide and 3 lines tall, then shrinks; never narrower
    than 19 cells (then the grid scrolls rather than become unreadable). Of shapes that
    read as well, the one with more columns: ten hubs at 160x48 are two columns of five,
    not one long column.
    """
    best: tuple[float, int, int] | None = None
    for cols in range(1, max(width // 19, 1) + 1):
        tile_w = width // cols
        rows = -(-slots // cols)
        tile_h = min(height // rows if rows else height, 4)
        if tile_h < 1:
            continue
        score = min(tile_h, 3) * 10 + min(tile_w, 60) / 6
        if best is None or score >= best[0]:  # a tie: more columns, a grid to the eye
            best = (score, cols, tile_h)
    if best is None:  # even one line each does not fit: widest narrow tiles, scrolling
        return max(width // 19, 1), 1
    return best[1], best[2]


def fleet_line(status: ConsignmentStatus, station_id: str) -> str:
    """A loaded consignment's progress across every station, for the header: what this
    bench's operator cannot see from its own slots (hubs other stations passed or hold)."""
    c = status.counts()
    elsewhere = sum(
        1 for h in status.hubs if h.result == "in_flight" and h.station_id != station_id
    )
    parts = [
        f"{c['passed']} passed",
        f"{c['current']} current",
        f"{c['failed'] + c['refused']} failed/refused",
        f"{c['in_flight']} in flight ({elsewhere} elsewhere)",
        f"{c['missing']} not seen",
    ]
    stations = len(status.by_station)
    return (
        f"Consignment {literal(status.consignment.consignment_id)}, all stations "
        f"({stations} so far): {len(status.hubs)} listed: " + ", ".join(parts)
    )

"""What the operator sees, as plain data: slots, their jobs and the batch counters.

Pure: no Textual, no threads, no clock of its own (times come from the events and from the
``now`` the caller passes), so it is tested directly and snapshots are deterministic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from rich.text import Text

from station.events import CHAIN, Event, JobState
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


def short_version(text: str | None) -> str:
    """``0x01050000`` as ``1.5.0.0`` (see :func:`station.render.shown_version`)."""
    return shown_version(text)


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
class SlotView:
    """One slot as shown: its current (or last) job."""

    number: int
    profile: str
    binding: str
    state: str = "idle"
    job_id: int | None = None
    port: str | None = None
    eui64: str | None = None
    version_before: str | None = None
    version_after: str | None = None
    target: str | None = None
    phase: str | None = None
    done: int = 0
    total: int = 0
    rate: float | None = None
    eta_s: float | None = None
    reason: str = ""
    hint: str = ""
    fail_phase: str | None = None
    tries: int = 0
    fault: bool = False
    label: str | None = None
    exchanges: list[str] = field(default_factory=list)
    trace: deque[str] = field(default_factory=lambda: deque(maxlen=_TRACE))
    _phase_start: tuple[float, int] | None = None

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
        d = ev.data
        stamp = f"{ev.kind}"
        if ev.kind == "state" and ev.state:
            if ev.state == str(JobState.DETECTED):
                self._new_job(ev)
            self.state = ev.state
            self.phase = d.get("phase", self.phase)
            self._phase_start = None
            self.done = self.total = 0
            self.rate = self.eta_s = None
            stamp = f"state {ev.state}" + (f" ({d['phase']})" if "phase" in d else "")
        elif ev.kind == "progress":
            phase, done, total = str(d.get("phase")), int(d["done"]), int(d["total"])
            if phase != self.phase or self._phase_start is None or done < self.done:
                self.phase = phase
                self._phase_start = (ev.at, done)
            t0, d0 = self._phase_start
            self.done, self.total = done, total
            if ev.at > t0 and done > d0:
                self.rate = (done - d0) / (ev.at - t0)
                self.eta_s = (total - done) / self.rate
            return  # progress is not worth a trace line each time
        elif ev.kind == "note":
            stamp = f"note: {d.get('note', '')}"
        elif ev.kind == "retry":
            self.tries = int(d.get("try", self.tries + 1)) - 1
            stamp = f"retry (try {d.get('try')}): {d.get('why', '')}"
        elif ev.kind == "job-finished":
            self.state = ev.state or str(d.get("result"))
            self.eui64 = d.get("eui64") or self.eui64
            self.version_before = d.get("version_before") or self.version_before
            self.version_after = d.get("version_after")
            self.target = d.get("image_version") or self.target
            self.reason = d.get("message") or ""
            self.hint = d.get("hint") or ""
            self.fail_phase = d.get("phase")
            self.exchanges = list(d.get("exchanges") or [])
            self.profile = d.get("profile") or self.profile  # the model found ("auto" slots)
            self.rate = self.eta_s = None
            stamp = f"{self.state}" + (f" in {self.fail_phase}" if self.fail_phase else "")
            stamp += f": {self.reason}" if self.reason else ""
        elif ev.kind == "slot-empty":
            self.state = "empty"
            stamp = f"no hub at {d.get('at', self.binding)}"
        elif ev.kind == "slot-fault":
            self.fault = True
            stamp = f"SLOT FAULT: {d.get('failed_hubs')} different hubs failed here"
        elif ev.kind == "slot-error":
            self.state = "failed"
            self.reason = f"slot worker crashed: {d.get('error')}"
            stamp = self.reason
        self.trace.append(stamp)

    def _new_job(self, ev: Event) -> None:
        self.job_id = ev.job_id
        self.port = ev.data.get("port", self.port)
        self.eui64 = self.version_before = self.version_after = None
        self.reason = self.hint = ""
        self.fail_phase = None
        self.exchanges = []
        self.trace.clear()


@dataclass
class BatchView:
    """The batch as shown: counters, consignment and time."""

    slots: dict[int, SlotView]
    listed: frozenset[str] = frozenset()
    batch_id: int | None = None
    started_at: float | None = None
    hubs: dict[str, str] = field(default_factory=dict)  # hub (EUI-64 or job) -> result
    seen: set[str] = field(default_factory=set)

    def apply(self, ev: Event) -> set[int]:
        """Take one event; returns the slots whose tiles changed."""
        if ev.kind == "batch-started":
            self.batch_id = int(ev.data.get("batch", 0)) or self.batch_id
            self.started_at = self.started_at if self.started_at is not None else ev.at
            return set()
        if ev.slot is None or ev.slot not in self.slots:
            return set()
        view = self.slots[ev.slot]
        view.apply(ev)
        if ev.kind == "job-finished":
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

    def missing(self) -> int:
        """Hubs the consignment lists that no job has identified yet."""
        return len(self.listed - self.seen)

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
            missing = f"missing {self.missing()}/{len(self.listed)}"
            t.append(missing + gap if wide else f"{self.missing()} missing ", style="magenta")
        t.append(
            f"⏱ {clock_text(elapsed)}{gap}{rate} hubs/h"
            if wide
            else f"⏱{clock_text(elapsed)} {rate}/h"
        )
        return t


def _bar(fraction: float, width: int) -> str:
    width = max(width, 1)
    filled = fraction * width
    full = int(filled)
    part = " ▏▎▍▌▋▊▉"[int((filled - full) * 8)] if full < width else ""
    return ("█" * full + part).ljust(width, "░")[:width]


def tile_text(v: SlotView, width: int, height: int) -> Text:
    """A slot tile of ``width`` x ``height`` cells; denser when smaller, never colour-only.

    Line by line, as room allows: slot, symbol and state word (and the EUI-64 when it
    fits); the EUI-64 or model and versions; progress (bar, %, bytes/s, ETA) or the result
    with its reason; then whatever did not fit before. What the hub and the rig say is shown
    as it is (:func:`station.render.literal`).
    """
    symbol, word, style = LOOK.get(v.state, ("?", v.state, ""))
    if v.fault:
        symbol, word = "‼", "FAULT " + word
    head = Text(f"{v.number:>2} ", style="bold")
    head.append(f"{symbol} {word}", style=style)
    if v.label_check is False:
        head.append(" ≠LABEL", style="bold reverse red")
    elif v.label_check is True and width >= 30:
        head.append(" label✓", style="green")
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

    before, after = v.version_before, v.version_after or v.target
    eui64 = None if v.eui64 is None else literal(v.eui64)
    versions = "" if not (before or after) else f"{short_version(before)}→{short_version(after)}"
    outcome = ""
    if v.state in ("failed", "refused", "interrupted"):
        outcome = f"{v.fail_phase}: {v.reason}" if v.fail_phase else v.reason
    elif v.state == "passed":
        outcome = versions
    elif v.state == "skipped":
        outcome = f"runs {short_version(before)}"
    elif v.state in ("idle", "empty"):
        outcome = v.binding
    outcome, versions = literal(outcome), literal(versions)
    indent = "   "

    if height <= 1:
        line = head.copy()
        rest = width - line.cell_len - 1
        if running and rest >= 4:
            line.append(" ")
            line.append_text(progress(rest))
        elif outcome and v.state not in ("idle", "empty") and rest > 3:
            line.append(" " + outcome)
        elif eui64 and rest >= 8:
            line.append(" …" + eui64[-(rest - 2) :])
        line.truncate(width, overflow="ellipsis")
        return line

    lines = [head.copy()]
    eui_in_head = bool(eui64) and width - head.cell_len >= 25
    if eui64 and eui_in_head:
        lines[0].append(f"  {eui64}")
    extra: list[str] = []
    if eui64 and not eui_in_head:
        room = width - len(indent)
        # When it must be cut, keep the end: the last octets tell hubs apart.
        extra.append(eui64 if len(eui64) <= room else "…" + eui64[-(room - 1) :])
    ident = " ".join(x for x in (literal(v.profile), versions) if x)
    if v.tries:
        ident += f" try {v.tries + 1}"
    extra.append(ident)
    last = Text(indent) + progress(width - len(indent)) if running else None
    if last is None and outcome:
        last = Text(indent + outcome, style=style if v.final else "dim")
    body = [Text(indent + e, style="dim" if v.state in ("idle", "empty") else "") for e in extra]
    if last is not None:
        # The result or progress always shows; identity fills the lines above it.
        body = [*body[: max(height - 2, 0)], last]
    lines += body
    shown = lines[:height]
    for line in shown:
        line.truncate(width, overflow="ellipsis")
    return Text("\n").join(shown)


def grid_shape(slots: int, width: int, height: int) -> tuple[int, int]:
    """Columns and tile height that fit ``slots`` tiles in ``width`` x ``height`` cells.

    Prefers tiles at least 38 cells wide and 3 lines tall, then shrinks; never narrower
    than 19 cells (then the grid scrolls rather than become unreadable).
    """
    best: tuple[float, int, int] | None = None
    for cols in range(1, max(width // 19, 1) + 1):
        tile_w = width // cols
        rows = -(-slots // cols)
        tile_h = min(height // rows if rows else height, 4)
        if tile_h < 1:
            continue
        score = min(tile_h, 3) * 10 + min(tile_w, 60) / 6
        if best is None or score > best[0]:
            best = (score, cols, tile_h)
    if best is None:  # even one line each does not fit: widest narrow tiles, scrolling
        return max(width // 19, 1), 1
    return best[1], best[2]

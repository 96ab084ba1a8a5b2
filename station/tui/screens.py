"""Screens: start (operator and pre-flight plan), slot detail, and the small dialogs.

Text from outside (operator, station id, profile names, hub answers, error messages) is
shown as it is: as ``Text`` through :func:`station.render.literal`, or in a widget made
with ``markup=False`` (see :mod:`station.render`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Protocol, runtime_checkable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, Static

from station.batch import OVERRIDES, BatchRun, PlanRow
from station.records.store import EventRow, JobRow
from station.render import hex_version, literal, shown_version, styled
from station.tui.model import LOOK, SlotView, clock_text, exchange_lines, known, plan_text
from station.tui.widgets import StateBox


@runtime_checkable
class StartHost(Protocol):
    """What the start screen needs of the app that shows it (the station app): said here,
    so that screens need not import the app that imports them."""

    batch: BatchRun
    plan_rows: list[PlanRow]
    probing: bool

    def probe(self) -> None: ...

    def begin_batch(self, operator: str) -> None: ...

    def overrides_text(self) -> str: ...

    def action_manifest(self) -> None: ...

    def action_overrides(self) -> None: ...


#: The keys, each said in one line of an 80-column help (at most 58 characters).
KEYS = [
    ("s", "start all: serve every idle slot, and hubs swapped in"),
    ("t", "stop all: no new jobs; running jobs finish"),
    ("enter", "slot detail: every try, why it ended, bytes on the wire"),
    ("r", "retry the selected slot (runs its hub again)"),
    ("a", "abort the selected slot (asks; may leave it half written)"),
    ("l", "scan a label into the slot (checked against its EUI-64)"),
    ("m", "load a consignment manifest (before the batch starts)"),
    ("o", "overrides: downgrade, off-pathway, unsigned (audited)"),
    ("x", "export reports: DSP CSV/JSON, consignment, JUnit, summary"),
    ("arrows", "move between slots: up, down, left, right in the grid"),
    ("?", "this help"),
    ("q", "quit (asks when jobs are running)"),
]
#: How the help is left, said on its first line (the footer under it is the grid's).
HELP_CLOSE: Final = "Esc, q or ? closes this help"


#: The plan's columns: name, and the widest a cell may be (0: whatever is left).
_PLAN_COLUMNS: Final = (
    ("slot", 4),
    ("hub", 48),
    ("running", 8),
    ("target", 8),
    ("est.", 6),
    ("model", 16),
    ("plan", 0),
)
#: The hub column when room is short: an EUI-64 and its mark, whole.
_HUB_NARROW: Final = 25


def _plan_cells(r: PlanRow, probing: bool) -> list[tuple[str, str]]:
    """One plan row's cells as (text, style): text from outside shown literally, versions
    dotted (:func:`station.render.shown_version`)."""
    if r.port is None:
        hub = (literal(f"○ no hub at {r.binding}"), "dim")
    elif probing:
        hub = ("… probing", "")
    elif r.problem:
        hub = (literal(f"✗ {r.problem}"), "red")
    elif r.eui64:
        hub = (literal(f"✓ {r.eui64}"), "")
    else:
        hub = ("● present (probed at start)", "")
    running = (
        shown_version(r.version_before)
        if r.probed and r.eui64
        else ("-" if r.port is None else "at start")
    )
    target = shown_version(r.target) if r.target and r.target.startswith("0x") else r.target
    est = "-" if r.estimate_s is None else f"~{clock_text(r.estimate_s)}"
    plain = [running, literal(target or "-"), est, literal(r.profile), plan_text(r.plan)]
    return [(str(r.slot), "bold"), hub, *((text, "") for text in plain)]


def _plan_widths(cells: list[list[tuple[str, str]]], room: int) -> list[int]:
    """Each column's width for ``room`` cells of text: the content's, up to its cap. When
    that is too wide the plan takes what is left; if that is under 24 cells the hub column
    is held to an EUI-64's width first, and a plan under 12 cells is left out (the line
    under the table says it)."""
    widths = []
    for i, (name, cap) in enumerate(_PLAN_COLUMNS):
        wanted = max([len(name), *(len(row[i][0]) for row in cells)])
        widths.append(min(wanted, cap) if cap else wanted)
    plan = len(widths) - 1
    if sum(widths) > room:
        if room - sum(widths[:plan]) < 24:
            widths[1] = min(widths[1], _HUB_NARROW)
        widths[plan] = max(room - sum(widths[:plan]), 0)
        if widths[plan] < 12:
            widths[plan] = 0
    return widths


class StartScreen(Screen[None]):
    """Operator name, what is loaded, and the pre-flight plan per slot.

    The plan's columns are fitted to the terminal: at 80 columns every column shows, cut
    with an ellipsis where it must be, and the line under the table gives the highlighted
    slot's hub and plan in full.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start"),
        Binding("p", "probe", "Probe"),
        Binding("m", "manifest", "Manifest"),
        Binding("o", "overrides", "Overrides"),
        Binding("e", "edit_operator", "Operator"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, operator: str) -> None:
        super().__init__(id="start")
        self.operator = operator
        self._rows: list[PlanRow] = []
        self._probing = False

    @property
    def station(self) -> StartHost:
        assert isinstance(self.app, StartHost)
        return self.app

    def compose(self) -> ComposeResult:
        with Vertical(id="start-top"):
            yield Static(Text("Re-flash station: new batch", style="bold"), id="title")
            with Horizontal(id="operator-row"):
                yield Label("Operator (audited): ")
                yield Input(self.operator, placeholder="your name", id="operator")
            yield Static(id="summary")
        yield DataTable(id="plan", cursor_type="row", zebra_stripes=True)
        yield Static(id="plan-why")
        yield Static(id="start-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#plan", DataTable)
        self.refresh_summary()
        self.show_plan(self.station.plan_rows, probing=self.station.probing)
        if self.operator:
            table.focus()
        else:
            self.query_one("#operator", Input).focus()

    def on_resize(self) -> None:
        self.show_plan(self._rows, self._probing)

    def refresh_summary(self) -> None:
        d = self.station.batch.describe()
        models = (
            ", ".join(f"{m} newest {shown_version(v)}" for m, v in d["models"].items())
            or "no models"
        )
        manifest = (
            f"{d['manifest']} ({d['listed']} hubs listed)" if d["manifest"] else "none (m to load)"
        )
        trust = d["trust"] or "none: only overridden unsigned images could be written"
        text = styled(
            ("Rig       ", "bold"),
            f"{d['rig']}: station {d['station']}, {d['slots']} slots",
            ("\nCatalogue ", "bold"),
            f"{d['catalog']}: {models}",
            ("\nTrust     ", "bold"),
            trust,
            ("\nManifest  ", "bold"),
            manifest,
        )
        overrides = self.station.overrides_text()
        if overrides:
            text.append_text(styled(("\nOverrides ", "bold"), (overrides, "bold yellow")))
        self.query_one("#summary", Static).update(text)

    def show_plan(self, rows: list[PlanRow], probing: bool = False) -> None:
        """Show the plan, one row a slot, in columns that fit the screen's width."""
        self._rows, self._probing = rows, probing
        found = self.query("#plan")
        if not found:  # not composed yet: on_mount shows the app's plan
            return
        table = found.first(DataTable)
        cells = [_plan_cells(r, probing) for r in rows]
        # The table's width less its scrollbar, and each column's padding on both sides.
        room = max(self.size.width or self.app.size.width, 40) - 2
        widths = _plan_widths(cells, room - 2 * table.cell_padding * len(_PLAN_COLUMNS))
        row = table.cursor_row
        table.clear(columns=True)
        for (name, _), width in zip(_PLAN_COLUMNS, widths, strict=True):
            if width:
                table.add_column(name, width=width, key=name)
        for r, cell in zip(rows, cells, strict=True):
            shown = [
                Text(text, style=style, no_wrap=True, overflow="ellipsis")
                for (text, style), width in zip(cell, widths, strict=True)
                if width
            ]
            table.add_row(*shown, key=str(r.slot))
        if rows:
            table.move_cursor(row=min(row, len(rows) - 1))
        self._show_why(table.cursor_row)

    @on(DataTable.RowHighlighted, "#plan")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_why(event.cursor_row)

    def _show_why(self, index: int) -> None:
        """The highlighted slot's hub and plan in full, under the table."""
        why = Text()
        if 0 <= index < len(self._rows):
            r = self._rows[index]
            said = [literal(r.problem)] if r.problem else []
            said += [literal(f"no hub at {r.binding}")] if r.port is None else []
            said += [plan_text(r.plan)] if r.plan else []
            why = styled((f"slot {r.slot}: ", "bold"), Text("; ".join(said) or "-"))
        for line in self.query("#plan-why").results(Static):
            line.update(why)

    def set_status(self, text: str) -> None:
        for status in self.query("#start-status").results(Static):
            status.update(Text(literal(text)))

    def action_edit_operator(self) -> None:
        self.query_one("#operator", Input).focus()

    @on(Input.Submitted, "#operator")
    def _operator_entered(self, event: Input.Submitted) -> None:
        """Enter in the name field: on to the plan, where ``s`` starts the batch. Without a
        name the field keeps the keyboard: letters typed next are the name, not hotkeys."""
        if not event.value.strip():
            self.set_status("Enter the operator's name first (it goes in the audit log).")
            event.input.focus()
            return
        self.query_one("#plan", DataTable).focus()
        self.set_status(f"Operator {event.value.strip()}. s starts the batch, e edits the name.")

    def action_start(self) -> None:
        name = self.query_one("#operator", Input).value.strip()
        if not name:
            self.set_status("Enter the operator's name first (it goes in the audit log).")
            self.query_one("#operator", Input).focus()
            return
        self.station.begin_batch(name)

    def action_probe(self) -> None:
        self.station.probe()

    def action_manifest(self) -> None:
        self.station.action_manifest()

    def action_overrides(self) -> None:
        self.station.action_overrides()


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y``/``n`` answer it too."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="warning")
                yield Button(f"{self.no} (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class QuitScreen(ModalScreen[str]):
    """Quitting with jobs running: wait for them, abort them, or keep running."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("w", "choose('wait')", "Wait, then quit"),
        Binding("a", "choose('abort')", "Abort and quit"),
        Binding("n", "choose('stay')", "Don't quit"),
        Binding("escape", "choose('stay')", "Don't quit"),
    ]

    def __init__(self, running: dict[int, str]) -> None:
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        slots = ", ".join(f"{n} ({s})" for n, s in sorted(self.running.items()))
        text = (
            f"{len(self.running)} job(s) are running: slot {slots}.\n\n"
            "w  wait: start no new job, quit when these finish (safe)\n"
            "a  abort them now: each stops at its next block; a hub stopped while erasing or "
            "writing is left PARTLY WRITTEN and must be re-flashed before it leaves the bench\n"
            "n  don't quit: keep running"
        )
        with Vertical(classes="dialog"):
            yield Static(text, classes="question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Wait (w)", id="wait", variant="primary")
                yield Button("Abort (a)", id="abort", variant="error")
                yield Button("Don't quit (n)", id="stay")

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "stay")

    def action_choose(self, what: str) -> None:
        self.dismiss(what)


class PromptScreen(ModalScreen[str | None]):
    """One line of text: a scanned label, a file path. Enter accepts, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question, self.value, self.placeholder = question, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question", markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="answer")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class OverrideScreen(ModalScreen[dict[str, bool] | None]):
    """Choose policy overrides; applying them is confirmed again and audited."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: dict[str, bool], operator: str) -> None:
        super().__init__()
        self.current, self.operator = current, operator

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                "Overrides let the station write images its policy refuses. Each one is "
                f"recorded in the audit log as {literal(self.operator or 'the operator')} and "
                "with every job that uses it.",
                classes="question",
                markup=False,
            )
            for name, what in OVERRIDES.items():
                # The box on one line, what it allows under it: wrapped, never cut at 80x24.
                label = name.replace("_", "-")
                yield StateBox(label, self.current.get(name, False), id=name, compact=True)
                yield Static(what, classes="override-what", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Apply…", id="apply", variant="warning")
                yield Button("Cancel", id="cancel", variant="primary")

    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        self.dismiss({name: self.query_one(f"#{name}", Checkbox).value for name in OVERRIDES})

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The keys."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        text = Text("Keys", style="bold")
        text.append(f"   {HELP_CLOSE}\n\n", style="dim")
        for key, what in KEYS:
            text.append(f"{key:>7}  ", style="bold")
            text.append(what + "\n")
        text.append("\n")
        for state in ("passed", "skipped", "failed", "refused", "interrupted", "writing"):
            symbol, word, style = LOOK[state]
            text.append(f"{symbol} {word}", style=style)
            text.append("  ")
        text.append("\n≠LABEL: the scanned label is not the EUI-64 read from the hub")
        with VerticalScroll(classes="dialog"):
            yield Static(text)

    def action_close(self) -> None:
        self.dismiss(None)


def _labelled_version(text: object) -> str:
    """A version in a detail view: dotted, and the recorded hex labelled beside it."""
    if not isinstance(text, str) or not text:
        return "unknown"
    dotted = shown_version(text)
    return dotted if dotted == literal(text) else f"{dotted} (hex {literal(text)})"


def _said(state: str, detail: dict[str, Any]) -> list[str]:
    """What a recorded event says, in words (versions dotted, hex labelled); what this view
    does not know by name is shown as ``key=value``, literally."""
    d = {k: v for k, v in detail.items() if k not in ("slot", "port", "profile", "exchanges")}
    out: list[str] = []
    known: tuple[str, ...] = ()
    if state == "identified":
        if d.get("eui64"):
            out.append(f"EUI-64 {literal(d['eui64'])}")
        out.append(f"running {_labelled_version(d.get('version_before'))}")
        if d.get("found_in"):
            out.append(f"in its {literal(d['found_in'])}")
        if d.get("hw_version") is not None:
            out.append(f"hardware {literal(d['hw_version'])}")
        known = ("eui64", "version_before", "found_in", "hw_version")
    elif state == "planned":
        target = d.get("target_version") or d.get("image_version")
        out.append(f"target {_labelled_version(target)}")
        if d.get("plan"):
            out.append(plan_text(str(d["plan"])))
        if d.get("signature"):
            signer = f" by {literal(d['signer'])}" if d.get("signer") else ""
            out.append(f"signature {literal(d['signature'])}{signer}")
        if d.get("overrides"):
            out.append("overrides " + ", ".join(literal(o) for o in d["overrides"]))
        known = ("target_version", "image_version", "plan", "signature", "signer", "overrides")
        known += ("image", "image_sha256", "behind")  # the image is in the rows above
    elif "result" in d:  # how the job ended
        why = literal(d.get("message") or "")
        if d.get("phase"):
            why = f"{literal(d['phase'])}: {why}"
        out.append(why + (f" ({literal(d['error'])})" if d.get("error") else ""))
        known = ("result", "phase", "message", "error")
    out += [f"{k}={literal(v)}" for k, v in d.items() if k not in known and v not in (None, "")]
    return [x for x in out if x]


def _event_line(e: EventRow) -> Text:
    line = Text(f"  {e.at.strftime('%H:%M:%S')}  ")
    symbol, _, style = LOOK.get(str(e.state), ("·", str(e.state), ""))
    line.append(literal(f"{symbol} {e.state}"), style=style)
    said = _said(str(e.state), e.detail)
    if said:
        line.append("  " + ", ".join(said))
    return line


def _wire_block(exchanges: list[str], indent: str) -> Text:
    """The last bytes on the wire, as a hex block under its heading."""
    text = Text(f"{indent}Last bytes on the wire (-> to the hub, <- from it)\n", style="bold")
    for line in exchange_lines(exchanges):
        text.append(f"{indent}  {line}\n")
    return text


#: One try of a hub's job: its record and its recorded events.
Try = tuple[JobRow, list[EventRow]]


class DetailScreen(ModalScreen[None]):
    """One slot: its hub, every try of its job (timeline, how it ended, the last bytes on
    the wire before a failure), what to do, and the last events as they came."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "close", "Close"),
        Binding("r", "retry", "Retry slot"),
        Binding("a", "abort", "Abort slot"),
    ]

    def __init__(self, view: SlotView, tries: list[Try]) -> None:
        super().__init__()
        self.view, self.tries = view, tries

    def compose(self) -> ComposeResult:
        v = self.view
        job = self.tries[-1][0] if self.tries else None
        symbol, word, style = LOOK.get(v.state, ("?", v.state, ""))
        text = Text()
        text.append(f"Slot {v.number}  ", style="bold")
        text.append(literal(f"{symbol} {word}"), style=style)
        # The keys on the first line: at 80x24 the end of a long detail is out of sight.
        text.append("   Esc closes, r retries, a aborts\n", style="dim")
        after = known(v.version_after, v.target)
        version = (
            None
            if v.version_before is None and after is None
            else f"{shown_version(v.version_before)} → {shown_version(after)}  "
            f"(hex {hex_version(v.version_before)} → {hex_version(after)})"
        )
        rows: list[tuple[str, Any]] = [
            ("binding", v.binding),
            ("port", v.port),
            ("model", v.profile),
            ("EUI-64", v.eui64),
            ("label", _label_text(v)),
            ("version", version),
            ("job", v.job_id if len(self.tries) < 2 else None),
            ("tries", _tries_text(self.tries)),
        ]
        text.append_text(_rows_text(rows))
        if v.final and v.state not in ("passed", "skipped"):
            text.append("\nFailed in phase ", style="bold")
            text.append(f"{literal(v.fail_phase or '?')}: ", style=style)
            text.append(f"{literal(v.reason)}\n")
            if v.hint:
                text.append("What to do: ", style="bold")
                text.append(f"{literal(v.hint)}\n")
        for n, (row, events) in enumerate(self.tries, 1):
            text.append_text(_try_text(n, len(self.tries), row, events))
        if job is not None:
            text.append("\nImage (last try)\n", style="bold")
            image: list[tuple[str, Any]] = [
                ("file", job.image_path),
                ("sha256", job.image_sha256),
                ("signature", job.signature),
                ("verify", f"{job.verify_method or '-'} {job.verify_detail or ''}"),
                ("plan", plan_text(job.plan) if job.plan else None),
                ("overrides", ", ".join(job.overrides) or None),
            ]
            text.append_text(_rows_text(image))
        if v.trace:
            title = "Last events before the failure" if v.state == "failed" else "Last events"
            text.append(f"\n{title} (protocol notes, retries)\n", style="bold")
            for line in v.trace:
                text.append(f"  {literal(line)}\n")
        if v.exchanges and not self.tries:  # nothing recorded to show them with
            text.append("\n")
            text.append_text(_wire_block(v.exchanges, ""))
        with VerticalScroll(classes="dialog wide"):
            yield Static(text, id="detail")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_retry(self) -> None:
        self.dismiss(None)
        self.app.call_later(self.app.run_action, "retry_slot")

    def action_abort(self) -> None:
        self.dismiss(None)
        self.app.call_later(self.app.run_action, "abort_slot")


def _rows_text(rows: list[tuple[str, Any]]) -> Text:
    """``name  value`` lines, names right-aligned; empty values left out."""
    text = Text()
    for name, value in rows:
        if value not in (None, ""):
            text.append(f"{name:>10}  ", style="bold")
            text.append_text(value if isinstance(value, Text) else Text(literal(value)))
            text.append("\n")
    return text


def _tries_text(tries: list[Try]) -> str | None:
    if len(tries) < 2:
        return None
    return f"{len(tries)} (jobs {', '.join(str(row.id) for row, _ in tries)})"


def _try_text(n: int, of: int, row: JobRow, events: list[EventRow]) -> Text:
    """One try: its heading and how it ended, its recorded timeline, its last bytes."""
    symbol, _, style = LOOK.get(str(row.state), ("·", str(row.state), ""))
    text = Text("\n")
    text.append(f"Try {n} of {of} (job {row.id})" if of > 1 else f"Timeline (job {row.id})")
    text.stylize("bold")
    text.append("  ")
    ended = f"{symbol} {row.state}"
    if row.phase and str(row.state) not in ("passed", "skipped"):
        ended += f" in {row.phase}"
    text.append(literal(ended), style=style)
    text.append(" (recorded)\n" if of < 2 else "\n", style="dim")
    for e in events:
        text.append_text(_event_line(e))
        text.append("\n")
        exchanges = e.detail.get("exchanges")
        if isinstance(exchanges, list) and exchanges:
            text.append_text(_wire_block([str(x) for x in exchanges], "  "))
    return text


def _label_text(v: SlotView) -> Text | None:
    if v.label is None:
        return None
    if v.label_check is None:
        return Text(literal(f"{v.label} (not yet compared: no EUI-64 read)"))
    if v.label_check:
        return Text(literal(f"✓ {v.label} matches"), style="green")
    return Text(
        literal(f"✗ MISMATCH: label {v.label}, hub says {v.eui64}"), style="bold reverse red"
    )

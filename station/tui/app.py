"""``station tui``: the bench operator's screen over one batch.

The controller runs in a Textual thread worker (:meth:`station.batch.BatchRun.serve`); its
events, published from the slot threads, go into a queue (a ``deque``: appends are
thread-safe) that the UI drains every :data:`TICK_S` seconds, applies to the model and
redraws only the tiles that changed. So 64 busy slots cost a few redraws a second, and
nothing on the UI's thread ever waits for a port.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from drivers.errors import StationError
from station.batch import OVERRIDES, BatchRun, PlanRow, describe_recovery, preflight
from station.events import Event, version_of
from station.records.consignments import status as consignment_status
from station.render import literal
from station.tui.model import BatchView, SlotView, fleet_line, known
from station.tui.screens import (
    ConfirmScreen,
    DetailScreen,
    HelpScreen,
    OverrideScreen,
    PromptScreen,
    QuitScreen,
    StartScreen,
)
from station.tui.widgets import BatchHeader, ConsignmentLine, SlotGrid, SlotTile

if TYPE_CHECKING:
    from station.metrics import MetricsServer

__all__ = ["StationApp", "run_tui"]

#: How often queued events are applied and changed tiles redrawn.
TICK_S: Final = 0.15
#: How often the loaded consignments' progress across stations is read from the store.
FLEET_S: Final = 2.0
#: At most this many consignments are shown (the ones that list this batch's hubs first).
FLEET_MAX: Final = 2
#: Where reports are exported unless told otherwise (a folder per batch inside it).
REPORTS_DIR: Final = Path("station-data/reports")
_WRITING: Final = frozenset({"erasing", "writing", "verifying", "booting"})
#: The grid's actions: not offered (nor run) while the start screen is up.
_GRID_ACTIONS: Final = frozenset(
    {"start_all", "stop_all", "detail", "retry_slot", "abort_slot", "scan_label", "export"}
)


class StationApp(App[int]):
    """One batch on one rig: start screen, slot grid, details and dialogs.

    Args:
        batch: the rig, catalogue, store and policy (opened, not begun).
        operator: the name to start with (asked on the start screen when empty).
        reports_dir: exports go to ``reports_dir/batch-N``.
        clock: wall-clock source for elapsed time and hubs/hour (tests freeze it).
        probe_on_start: identify the hubs (read-only) for the pre-flight plan at once.
        continuous: keep serving slots as hubs are swapped (a bench); else one hub each.
    """

    CSS_PATH = "app.tcss"
    TITLE = "chub-station"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start_all", "Start"),
        Binding("t", "stop_all", "Stop"),
        Binding("enter", "detail", "Detail"),
        Binding("r", "retry_slot", "Retry"),
        Binding("a", "abort_slot", "Abort"),
        Binding("l", "scan_label", "Label"),
        Binding("x", "export", "Export"),
        Binding("o", "overrides", "Overrides", show=False),
        Binding("m", "manifest", "Manifest", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        batch: BatchRun,
        *,
        operator: str = "",
        reports_dir: Path = REPORTS_DIR,
        clock: Callable[[], float] = time.time,
        probe_on_start: bool = True,
        continuous: bool = True,
    ) -> None:
        super().__init__()
        self.batch = batch
        self.operator = operator
        self.reports_dir = reports_dir
        self.clock = clock
        self.probe_on_start = probe_on_start
        self.continuous = continuous
        self.inbox: deque[Event] = deque()
        self.stop_event = threading.Event()
        self.final_message = ""
        self.probing = False
        self._start_after_probe: str | None = None
        self.quitting = False
        self.plan_rows: list[PlanRow] = preflight(batch.rig, batch.catalog)
        views = {s.number: SlotView(s.number, s.profile, s.binding) for s in batch.rig.slots}
        for row in self.plan_rows:
            if row.port is None:
                views[row.slot].state = "empty"
        self.view = BatchView(views, listed=self._listed())
        self._alerted: set[tuple[int, str]] = set()
        self.header = BatchHeader(self.view, self.clock)
        self.consignment = ConsignmentLine(self.view)
        self.status = Static(id="status")
        self.grid = SlotGrid([self.view.slots[n] for n in sorted(self.view.slots)])
        batch.publish = self.inbox.append

    def _listed(self) -> frozenset[str]:
        m = self.batch.manifest
        return frozenset() if m is None else m.eui64s()

    # -- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self.header
        yield self.consignment
        yield self.status
        yield self.grid
        yield Footer()

    def on_mount(self) -> None:
        self.consignment.update()
        self.set_interval(TICK_S, self.drain)
        self.set_interval(FLEET_S, self._poll_fleet)
        self._poll_fleet()
        self.push_screen(StartScreen(self.operator))
        if self.probe_on_start:
            self.probe()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Before the batch the start screen offers its own keys only: the grid's are
        neither shown in its footer nor run."""
        return not (action in _GRID_ACTIONS and self._start_screen() is not None)

    def say(self, text: str, severity: SeverityLevel = "information") -> None:
        """Show a message in the status line (kept) and as a notification."""
        style = "bold red" if severity == "error" else ""
        self.status.update(Text(literal(text), style=style))
        self.notify(literal(text), severity=severity, markup=False)

    # -- consignments across stations ---------------------------------------------------

    def _poll_fleet(self) -> None:
        """Read the loaded consignments' progress off the UI thread (a shared store may be
        a network away); one read at a time."""
        self.run_worker(self._read_fleet, thread=True, exclusive=True, group="fleet")

    def _read_fleet(self) -> None:
        store = self.batch.store
        try:
            loaded = store.consignment_records(open_only=True)
            listed = self.view.listed
            ours = [
                c.consignment_id
                for c in loaded
                if listed & {i.eui64 for i in store.consignment_hubs(c.consignment_id)}
            ]
            chosen = (ours or ([] if listed else [c.consignment_id for c in loaded]))[:FLEET_MAX]
            station = self.batch.rig.station_id
            lines = [fleet_line(consignment_status(store, cid), station) for cid in chosen]
        except StationError:
            return  # the store is unreachable now: the batch's own records say so
        self.call_from_thread(self._show_fleet, lines)

    def _show_fleet(self, lines: list[str]) -> None:
        if lines != self.view.fleet:
            self.view.fleet = lines
            self.consignment.update()

    # -- events from the controller -----------------------------------------------------

    def drain(self) -> None:
        """Apply queued events; redraw the tiles that changed and the header."""
        changed: set[int] = set()
        while self.inbox:
            changed |= self.view.apply(self.inbox.popleft())
        if changed:
            self.grid.refresh_slots(changed)
            for n in changed:
                self._check_label(self.view.slots[n])
            self.consignment.update()
        self.header.refresh()

    def _check_label(self, v: SlotView) -> None:
        if v.label_check is False and (v.number, str(v.eui64)) not in self._alerted:
            self._alerted.add((v.number, str(v.eui64)))
            self._audit("label-mismatch", {"slot": v.number, "label": v.label, "eui64": v.eui64})
            self.say(
                f"slot {v.number}: LABEL MISMATCH: label {v.label}, hub says {v.eui64}", "error"
            )

    def _audit(self, action: str, detail: dict[str, Any]) -> None:
        who = self.operator or "unknown"
        self.batch.store.audit(who, action, {"batch": self.batch.batch_id, **detail})

    # -- start screen ---------------------------------------------------------------------

    def _start_screen(self) -> StartScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, StartScreen)), None)

    def probe(self) -> None:
        """Identify the hubs read-only, in a worker, and show the plan."""
        if self.probing or self.batch.batch_id is not None:
            return
        self.probing = True
        start = self._start_screen()
        if start is not None:
            start.show_plan(self.plan_rows, probing=True)
            start.set_status("Probing the hubs (read-only: nothing is written)…")
        self.run_worker(self._probe_work, thread=True, group="probe", exit_on_error=False)

    def _probe_work(self) -> None:
        rows = self.plan_rows
        try:
            rows = self.batch.probe()
        except Exception as exc:  # the plan without a probe is still a plan
            self.call_from_thread(self.say, f"probe failed: {exc!r}", "error")
        finally:
            self.call_from_thread(self._probed, rows)

    def _probed(self, rows: list[PlanRow]) -> None:
        self.plan_rows = rows
        self.probing = False
        for row in rows:
            v = self.view.slots[row.slot]
            if not v.job_id:
                v.state = "empty" if row.port is None else "idle"
                v.eui64 = row.eui64 or v.eui64
                v.version_before = known(version_of(row.version_before), v.version_before)
                v.profile = row.profile if row.eui64 else v.profile
                if row.target and row.target.startswith("0x"):
                    v.target = version_of(row.target)
        self.grid.refresh_slots(set(self.view.slots))
        start = self._start_screen()
        if start is not None:
            start.show_plan(rows)
            found = sum(1 for r in rows if r.eui64)
            start.set_status(f"Probed: {found} hub(s) identified. s starts the batch.")
        if self._start_after_probe is not None:
            operator, self._start_after_probe = self._start_after_probe, None
            self.begin_batch(operator)

    def begin_batch(self, operator: str) -> None:
        """Start the batch as ``operator`` (audited) and serve every slot."""
        if self.probing:  # the probe holds the ports: start as soon as it lets go
            self._start_after_probe = operator
            start = self._start_screen()
            if start is not None:
                start.set_status("Starting once the probe has finished with the ports…")
            return
        self.operator = operator
        self.batch.operator = operator
        try:
            batch_id = self.batch.begin()
        except StationError as exc:
            self.say(f"cannot start the batch: {exc}", "error")
            return
        self._audit("operator", {"station": self.batch.rig.station_id, "via": "station tui"})
        self.view.batch_id = batch_id
        self.view.started_at = self.clock()
        self.view.listed = self._listed()
        self.consignment.update()
        if self._start_screen() is not None:
            self.pop_screen()
            self.refresh_bindings()
        self.sub_title = literal(f"batch {batch_id}, operator {operator}")
        for line in describe_recovery(self.batch.recovery):
            self.say(line)
        self.grid.tiles[0].focus()
        self.action_start_all()

    # -- actions --------------------------------------------------------------------------

    def _selected(self) -> SlotView | None:
        tile = self.focused if isinstance(self.focused, SlotTile) else self.grid.selected()
        return None if tile is None else tile.view

    def _serve(self, slots: list[int] | None = None) -> None:
        if self.stop_event.is_set():
            self.stop_event = threading.Event()
        work = functools.partial(
            self.batch.serve, continuous=self.continuous, stop=self.stop_event, slots=slots
        )
        self.run_worker(work, thread=True, group="serve", exit_on_error=False)

    def action_start_all(self) -> None:
        if self.batch.controller is None or self.quitting:
            return
        idle = [n for n in self.view.slots if n not in self.batch.controller.busy()]
        if not idle:
            self.say("every slot is being served already")
            return
        self._serve(idle)
        self.say(f"serving slot(s) {_ranges(idle)}")

    def action_stop_all(self) -> None:
        if self.batch.controller is None:
            return
        self.stop_event.set()
        running = self.batch.controller.running()
        self.say(
            f"stopping: no new jobs; {len(running)} running job(s) will finish"
            if running
            else "stopped: no new jobs"
        )

    def action_detail(self) -> None:
        v = self._selected()
        if v is None:
            return
        # Every try of the slot's hub, as recorded: a retry's detail shows the try it
        # follows too.
        ids = v.job_ids or ([] if v.job_id is None else [v.job_id])
        store = self.batch.store
        self.push_screen(DetailScreen(v, [(store.job(i), store.job_events(i)) for i in ids]))

    def action_retry_slot(self) -> None:
        v, ctl = self._selected(), self.batch.controller
        if v is None or ctl is None or self.quitting:
            return
        if v.number in ctl.running():
            self.say(f"slot {v.number}: a job is running there; abort it first (a)")
        elif ctl.retry(v.number):
            self.say(f"slot {v.number}: running its hub again")
        else:
            self._serve([v.number])
            self.say(f"slot {v.number}: serving it again")

    def action_abort_slot(self) -> None:
        v, ctl = self._selected(), self.batch.controller
        if v is None or ctl is None:
            return
        if v.number not in ctl.running():
            self.say(f"slot {v.number}: no job is running there")
            return
        writing = v.state in _WRITING
        question = f"Abort slot {v.number}'s job ({v.state})?\n\n" + (
            "The hub is being written: it will be left PARTLY WRITTEN and must be re-flashed "
            "(r) before it leaves the bench."
            if writing
            else "Nothing has been written to this hub yet."
        )

        def answer(yes: bool | None) -> None:
            if yes and ctl.abort(v.number):
                self._audit("abort", {"slot": v.number, "job": v.job_id, "state": v.state})
                self.say(f"slot {v.number}: aborting at the next block")

        self.push_screen(ConfirmScreen(question, "Abort", "Keep running"), answer)

    def action_scan_label(self) -> None:
        v = self._selected()
        if v is None:
            return

        def scanned(text: str | None) -> None:
            if not text:
                return
            try:
                label = v.scan(text)
            except ValueError as exc:
                self.say(f"slot {v.number}: {exc}", "error")
                return
            self._audit(
                "label-scan",
                {"slot": v.number, "label": label, "eui64": v.eui64, "match": v.label_check},
            )
            self.grid.refresh_slots({v.number})
            if v.label_check is False:
                self._check_label(v)
            elif v.label_check:
                self.say(f"slot {v.number}: label {label} matches the hub")
            else:
                self.say(f"slot {v.number}: label {label} recorded; checked once the hub is read")

        self.push_screen(
            PromptScreen(f"Scan the label of the hub in slot {v.number}", placeholder="EUI-64"),
            scanned,
        )

    def action_manifest(self) -> None:
        if self.batch.batch_id is not None:
            self.say(
                f"batch {self.batch.batch_id} has begun: its consignment is fixed; quit and "
                "start a new batch for another manifest",
                "warning",
            )
            return

        def chosen(path: str | None) -> None:
            if not path:
                return
            try:
                m = self.batch.load_manifest(path)
            except StationError as exc:
                self.say(str(exc), "error")
                return
            self.view.listed = self._listed()
            self.consignment.update()
            start = self._start_screen()
            if start is not None:
                start.refresh_summary()
            self.say(f"manifest {m.name}: {len(m.items)} hubs listed")

        self.push_screen(PromptScreen("Consignment manifest (CSV file)"), chosen)

    def overrides_text(self) -> str:
        """The overrides in force, for the start screen."""
        on = [k.replace("_", "-") for k in OVERRIDES if getattr(self.batch.policy, k)]
        return ", ".join(on)

    def action_overrides(self) -> None:
        start = self._start_screen()
        operator = self.operator
        if start is not None:
            operator = start.query_one("#operator", Input).value.strip() or operator
        current = {k: bool(getattr(self.batch.policy, k)) for k in OVERRIDES}

        def confirmed(chosen: dict[str, bool], yes: bool | None) -> None:
            if not yes:
                self.say("overrides unchanged")
                return
            self.batch.set_overrides(operator or "unknown", **chosen)
            if start is not None:
                start.refresh_summary()
            self.say(f"overrides now: {self.overrides_text() or 'none'} (audited)", "warning")

        def picked(chosen: dict[str, bool] | None) -> None:
            if chosen is None or chosen == current:
                return
            lines = [
                f"  {'ON ' if v else 'off'}  {k.replace('_', '-')}: {OVERRIDES[k]}"
                for k, v in chosen.items()
            ]
            question = (
                "Apply these overrides to every job from now on?\n\n"
                + "\n".join(lines)
                + f"\n\nRecorded in the audit log as {literal(operator or 'unknown')}."
            )
            self.push_screen(
                ConfirmScreen(question, "Apply overrides", "Cancel"),
                functools.partial(confirmed, chosen),
            )

        self.push_screen(OverrideScreen(current, operator), picked)

    def action_export(self) -> None:
        batch_id = self.batch.batch_id
        if batch_id is None:
            self.say("start the batch first: nothing to report yet")
            return
        folder = self.reports_dir / f"batch-{batch_id}"
        self.run_worker(
            functools.partial(self._export_work, folder),
            thread=True,
            group="export",
            exit_on_error=False,
        )

    def _export_work(self, folder: Path) -> None:
        try:
            files = self.batch.export(folder)
        except StationError as exc:
            self.call_from_thread(self.say, f"export failed: {exc}", "error")
            return
        names = ", ".join(p.name for p in files)
        preview = (
            "; the batch is still open, so dsp.csv and dsp.json are a preview: the DSP "
            "update is made when the batch ends"
            if self.batch.closed is None
            else ""
        )
        self.call_from_thread(self.say, f"reports written to {folder}/: {names}{preview}")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- quitting -------------------------------------------------------------------------

    async def action_quit(self) -> None:
        ctl = self.batch.controller
        if ctl is None:
            self.exit(0)  # no batch begun: nothing recorded, nothing to finish
            return
        if self.quitting:
            self.say("quitting: waiting for the running jobs to end")
            return
        running = {n: self.view.slots[n].state for n in ctl.running()}
        if not running:
            self.shutdown(abort=False)
            return

        def chosen(what: str | None) -> None:
            if what in ("wait", "abort"):
                self.shutdown(abort=what == "abort")
            else:
                self.say("not quitting: the batch keeps running")

        self.push_screen(QuitScreen(running), chosen)

    def on_unmount(self) -> None:
        """However the app ends (a crash, a test, a signal): start no new job and abort the
        running ones, so no worker goes on writing hubs with nobody watching. The normal
        quit has ended them already; an aborted job is recorded interrupted, with its hint."""
        self.stop_event.set()
        ctl = self.batch.controller
        if ctl is not None and ctl.running():
            ctl.abort_all()

    def shutdown(self, *, abort: bool) -> None:
        """Start no new job, end (or abort) the running ones, finish the batch, exit."""
        ctl = self.batch.controller
        assert ctl is not None
        self.quitting = True
        self.stop_event.set()
        if abort:
            aborted = ctl.abort_all()
            partly = [n for n in aborted if self.view.slots[n].state in _WRITING]
            self._audit("abort-all", {"slots": aborted, "partly_written": partly})
            if partly:
                self.final_message += (
                    f"Slot(s) {_ranges(partly)} were aborted while being written: those hubs "
                    "may hold PARTLY WRITTEN images; re-flash them before they leave the bench.\n"
                )
        self.say("finishing: waiting for running jobs to end…")
        self.run_worker(self._finish_work, thread=True, group="finish", exit_on_error=False)

    def _finish_work(self) -> None:
        ctl = self.batch.controller
        assert ctl is not None
        while ctl.busy():
            time.sleep(0.05)
        summ, recon = self.batch.finish()
        counts = recon.counts()
        problems = self.batch.problems(recon)
        missing = ", ".join(literal(e.eui64) for e in recon.lists["missing"])
        self.final_message += (
            f"batch {summ.batch}: "
            + (", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no hubs")
            + (f". Missing (listed, never arrived): {missing}" if missing else "")
            + f". Reports: station report dsp|consignment|junit|summary --batch {summ.batch}"
        )
        code = 1 if problems else 0
        self.call_from_thread(functools.partial(self.exit, code, return_code=code))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.say(f"{event.worker.group} failed: {event.worker.error!r}", "error")


def _ranges(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in sorted(numbers))


def run_tui(
    rig_path: str,
    catalog_dir: str | None = None,
    *,
    trust_dir: str | None = None,
    manifest_path: str | None = None,
    operator: str | None = None,
    db_url: str | None = None,
    reports_dir: str | None = None,
    metrics: str | None = None,
) -> int:
    """Run the operator's UI over a batch on the rig; returns the exit status.

    0 when every hub seen passed, was current or was refused and none is missing; 1
    otherwise (as ``station run``). Raises what :meth:`BatchRun.open` raises for bad input,
    and a ConfigError when ``metrics`` (``HOST:PORT``, see docs/metrics.md) cannot be served.
    """
    from station.metrics import serve  # prometheus-client only when asked for

    server = None if metrics is None else serve(metrics)
    try:
        return _run_tui(
            rig_path, catalog_dir, trust_dir, manifest_path, operator, db_url, reports_dir, server
        )
    finally:
        if server is not None:
            server.close()


def _run_tui(
    rig_path: str,
    catalog_dir: str | None,
    trust_dir: str | None,
    manifest_path: str | None,
    operator: str | None,
    db_url: str | None,
    reports_dir: str | None,
    server: MetricsServer | None,
) -> int:
    batch = BatchRun.open(
        rig_path,
        catalog_dir=catalog_dir,
        trust_dir=trust_dir,
        manifest_path=manifest_path,
        db_url=db_url,
        operator=operator or "unknown",
    )
    try:
        if server is not None:
            from station.metrics import watch

            watch(batch, server)
        app = StationApp(
            batch,
            operator=operator or "",
            reports_dir=Path(reports_dir) if reports_dir else REPORTS_DIR,
        )
        code = app.run()
        if app.final_message:
            print(app.final_message)
        return 0 if code is None else code
    finally:
        batch.close()

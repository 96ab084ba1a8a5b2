"""Run one job per slot in parallel. The only module in the project that starts threads.

Slots share no mutable state: each job gets its own port, driver and outcome object, and an
exception in one slot is caught in that slot. Records and events from every slot go
through one :class:`station.records.recorder.Recorder`, on its own thread while slots are served:
it persists them (many slots' records in one transaction), then publishes them in order,
so slot workers never queue behind one another's database writes and subscribers are
called from one thread.

Front ends steer a running controller from any thread: :meth:`Controller.abort` stops one
slot's job at its next block or phase (it ends ``interrupted``, "aborted by operator"),
:meth:`Controller.run` with ``slots=[n]`` serves one slot again (a retry), and setting the
``stop`` event given to :meth:`Controller.run` starts no new job (running jobs finish).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from drivers.errors import PortVanished, StationError
from drivers.types import Phase
from station.event_json import data_of
from station.events import (
    CHAIN,
    Event,
    JobProgress,
    JobState,
    LeaseTakenOver,
    Note,
    Retry,
    SlotEmpty,
    SlotError,
    SlotFault,
    SlotPowered,
    state_event,
)
from station.flash import (
    Cancelled,
    FlashOutcome,
    HubIdentity,
    ImageChooser,
    Policy,
    Refusal,
    Result,
    detect_profile,
    flash_hub,
    identify_hub,
)
from station.power import NO_ANSWER, PowerError, slot_power
from station.profiles import Profile, load_profile
from station.records.errors import HubInFlight, LeaseLost
from station.records.recorder import JobStore, Recorder
from station.rig import AUTO, Rig, Slot, resolve, switch_slot

__all__ = ["Controller", "Heartbeat", "JobStore", "SlotRun", "probe_slots", "run_slots"]

T = TypeVar("T")


@dataclass
class SlotRun(Generic[T]):
    """The outcome of one slot's job: its value, or the unexpected exception it raised."""

    slot: int
    value: T | None = None
    error: BaseException | None = None


def run_slots(jobs: Sequence[tuple[int, Callable[[], T]]]) -> list[SlotRun[T]]:
    """Run ``(slot, job)`` pairs, one thread each, and return their outcomes in order.

    An exception escaping a job is recorded for that slot only; the others run on.
    """
    runs = [SlotRun[T](slot) for slot, _ in jobs]

    def work(run: SlotRun[T], job: Callable[[], T]) -> None:
        try:
            run.value = job()
        except BaseException as exc:  # one slot's crash must never take the rig down
            run.error = exc

    threads = [
        threading.Thread(target=work, args=(run, job), name=f"slot-{run.slot}", daemon=True)
        for run, (_, job) in zip(runs, jobs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs


def probe_slots(slots: Sequence[Slot]) -> dict[int, HubIdentity | None]:
    """Identify each slot's hub without writing, one thread per slot (None: no hub there).

    For a pre-flight plan; never run it on a slot whose port a job is using.
    """

    def look(slot: Slot) -> HubIdentity | None:
        port = resolve(slot)
        if port is None:
            return None
        if slot.profile != AUTO:
            return identify_hub(port, load_profile(slot.profile))
        found, tried = detect_profile(port, slot.candidates)
        return found or HubIdentity(port, AUTO, problem=_unrecognised(tried))

    runs = run_slots([(s.number, functools.partial(look, s)) for s in slots])
    found: dict[int, HubIdentity | None] = {}
    for run in runs:
        if run.error is not None:
            found[run.slot] = HubIdentity("?", "?", problem=f"internal error: {run.error!r}")
        else:
            found[run.slot] = run.value
    return found


def _unrecognised(tried: Sequence[str]) -> str:
    return "no candidate profile recognises this hub: " + "; ".join(tried)


# -- the rig controller ------------------------------------------------------------------


class Controller:
    """Serves every slot of a rig with its own worker thread.

    For each hub that appears in a slot it records a job in the store, runs
    :func:`station.flash.flash_hub`, walks the job through the state machine (each
    transition persisted before it is published), and records the outcome. Slots share
    nothing but the store (which is thread-safe) and the event sink (which must be).

    Args:
        rig: the slots and policy.
        store: where jobs, events and audit entries go.
        batch_id: the batch these jobs belong to.
        chooser_for: the image chooser for a profile (normally the catalogue's).
        policy: trust store and overrides.
        publish: receives every event, from the recorder's thread only.
        poll_s: how often an idle slot looks for a hub.
    """

    def __init__(
        self,
        rig: Rig,
        *,
        store: JobStore,
        batch_id: int,
        chooser_for: Callable[[Profile], ImageChooser],
        policy: Policy,
        publish: Callable[[Event], None],
        poll_s: float = 0.2,
        progress_interval_s: float = 0.25,
    ) -> None:
        self.rig = rig
        self.store = store
        self.batch_id = batch_id
        self.chooser_for = chooser_for
        self.policy = policy
        self.publish = publish
        self.poll_s = poll_s
        self.progress_interval_s = progress_interval_s
        self.outcomes: dict[int, list[FlashOutcome]] = {s.number: [] for s in rig.slots}
        self.flagged: set[int] = set()
        #: Records the store refused twice over (a job never started, or whose end could
        #: not be recorded): the run's exit status says so, and the batch's close
        #: interrupts a job left live.
        self.record_errors: list[str] = []
        #: Set when another process holds the station: nothing more is started or recorded.
        self.lease_lost = threading.Event()
        self._cancel = {s.number: threading.Event() for s in rig.slots}
        self._again = {s.number: threading.Event() for s in rig.slots}
        self._busy: set[int] = set()
        self._running: dict[int, int] = {}  # slot -> job id, while a job runs there
        self._lock = threading.Lock()
        self._runs = 0  # run() calls in progress; the recorder thread lives while any is
        self._recorder = Recorder(store, publish)
        self._recorder_thread: threading.Thread | None = None

    def run(
        self,
        *,
        continuous: bool = False,
        stop: threading.Event | None = None,
        slots: Sequence[int] | None = None,
    ) -> None:
        """Serve the slots until done (once: one hub per slot) or until ``stop`` is set.

        Args:
            continuous: keep serving each slot as hubs are swapped, until ``stop``.
            stop: set it to start no new job; running jobs finish (see :meth:`abort`).
            slots: only these slot numbers (a retry); default every slot. A slot already
                being served (by another call) is left alone.
        """
        stop = stop or threading.Event()
        wanted = None if slots is None else set(slots)
        chosen = []
        with self._lock:
            for s in self.rig.slots:
                if (wanted is None or s.number in wanted) and s.number not in self._busy:
                    self._busy.add(s.number)
                    self._cancel[s.number].clear()
                    self._again[s.number].clear()
                    chosen.append(s)
        self._recorder_enter()
        try:
            runs = run_slots(
                [(s.number, functools.partial(self._serve, s, continuous, stop)) for s in chosen]
            )
        finally:
            with self._lock:
                self._busy.difference_update(s.number for s in chosen)
            self._recorder_exit()  # everything of this run is durable and published
        for run in runs:
            if run.error is not None:  # a bug in a slot worker: say so, never hide it
                with self._lock:
                    self.record_errors.append(f"slot {run.slot}: internal error {run.error!r}")
                self.publish(SlotError(slot=run.slot, error=repr(run.error)))

    def _recorder_enter(self) -> None:
        with self._lock:
            self._runs += 1
            if self._recorder_thread is None:
                self._recorder = Recorder(self.store, self.publish)
                self._recorder_thread = threading.Thread(
                    target=self._recorder.run, name="recorder", daemon=True
                )
                self._recorder_thread.start()

    def _recorder_exit(self) -> None:
        with self._lock:
            self._runs -= 1
            recorder, thread = self._recorder, self._recorder_thread
            last = self._runs == 0
            if last:
                self._recorder_thread = None
        if last and thread is not None:
            recorder.close()  # drains what is queued, then its thread returns
            thread.join()
        else:
            recorder.flush()  # another run still uses it: wait for ours only

    def busy(self) -> list[int]:
        """The slots being served right now (a job may be running in each)."""
        with self._lock:
            return sorted(self._busy)

    def running(self) -> dict[int, int]:
        """The slots with a job in progress (a hub being identified or written): job ids."""
        with self._lock:
            return dict(self._running)

    def retry(self, slot: int) -> bool:
        """Run ``slot``'s hub again when its worker waits for the hub to be taken out.

        Returns False when no worker serves the slot (serve it with ``run(slots=[slot])``)
        or a job is running there now.
        """
        with self._lock:
            if slot not in self._busy or slot in self._running:
                return False
            self._again[slot].set()
            return True

    def abort(self, slot: int) -> bool:
        """Stop ``slot``'s job at its next block or phase; False if the slot is idle.

        The job ends ``interrupted`` with "aborted by operator" (never passed), is not
        retried, and the store records the phase it stopped in.
        """
        with self._lock:
            if slot not in self._busy:
                return False
            self._cancel[slot].set()
            return True

    def abort_all(self) -> list[int]:
        """Abort every busy slot; returns their numbers."""
        return [n for n in self.busy() if self.abort(n)]

    def probe(self, slots: Sequence[int] | None = None) -> dict[int, HubIdentity | None]:
        """Identify each idle slot's hub without writing (see :func:`probe_slots`).

        A slot being served is skipped (not in the result): its port is in use.
        """
        wanted = None if slots is None else set(slots)
        busy = set(self.busy())
        return probe_slots(
            [
                s
                for s in self.rig.slots
                if (wanted is None or s.number in wanted) and s.number not in busy
            ]
        )

    # -- one slot --------------------------------------------------------------------------

    def _serve(self, slot: Slot, continuous: bool, stop: threading.Event) -> None:
        # Image choosers per profile, made when first needed; afresh for every call of run()
        # (a retry), so overrides confirmed in between apply.
        choosers: dict[str, ImageChooser] = {}
        failing: list[str | None] = []  # EUI-64s of the hubs that failed here in a row
        if slot.power is not None and slot.power.off_when_done:
            self._switch(slot, "on", "the slot is served")  # a previous run may have left it off
        while not stop.is_set() and not self.lease_lost.is_set():
            port = resolve(slot)
            if port is None:
                if not continuous:
                    self._recorder.event(SlotEmpty(slot=slot.number, binding=slot.binding))
                    return
                stop.wait(self.poll_s)
                continue
            tries = 0
            while True:
                out = self._job(slot, port, choosers)
                retry = (
                    out.result is Result.FAILED
                    and tries < self.rig.job_retries
                    and not stop.is_set()
                    and not self.lease_lost.is_set()
                    and not self._cancel[slot.number].is_set()
                )
                silent = any(out.ended_by(kind) for kind in NO_ANSWER)
                if retry and slot.power and slot.power.recover and silent:
                    # The hub stopped answering: a power cycle is what an operator would try.
                    retry = self._switch(slot, "cycle", f"the hub stopped answering: {out.message}")
                retry = retry and resolve(slot) == port
                if not retry:
                    break
                tries += 1
                self._recorder.event(Retry(slot=slot.number, tries=tries + 1, why=out.message))
            self._watch_slot(slot, out, failing)
            if out.ended_by(PowerError):  # the power-cycle entry could not be trusted
                self._power_fault(slot, "bootloader entry by power cycle", out.message)
            off = bool(slot.power and slot.power.off_when_done)
            if off:  # switched off so the operator swaps it safely
                off = self._switch(slot, "off", f"the job ended {out.result}: swap the hub")
            if not continuous:
                return
            # The same hub stays until the operator takes it out (or asks for it again); a
            # slot switched off waits for the operator to say the next hub is in.
            again = self._again[slot.number]
            while not stop.is_set() and not again.is_set() and (off or resolve(slot) == port):
                again.wait(self.poll_s)
            if off and not stop.is_set():
                self._switch(slot, "on", "the operator swapped the hub")
            again.clear()
            self._cancel[slot.number].clear()  # an abort ends one hub's job, not the slot

    def _switch(self, slot: Slot, action: str, why: str) -> bool:
        """Switch the slot's power and say so; a switch that fails (or does not switch the
        hub) flags the slot. Returns whether it switched."""
        try:
            switch = switch_slot(slot, self.rig.station_id, action)
        except StationError as exc:
            event = SlotPowered(slot=slot.number, action=action, why=why, error=exc.message)
            self._recorder.event(event)
            self._power_fault(slot, why, exc.message)
            return False
        self._recorder.event(SlotPowered(slot=slot.number, action=action, why=why, switch=switch))
        return True

    def _power_fault(self, slot: Slot, why: str, problem: str) -> None:
        """Flag the slot: its power switch failed or does not switch its hub."""
        if slot.number not in self.flagged:
            self.flagged.add(slot.number)
            fault = SlotFault(slot=slot.number, failed_hubs=0, last=why, power=problem)
            self._recorder.audit(
                "station", "slot-fault", {"slot": slot.number, **data_of(fault)}, then=fault
            )

    def _watch_slot(self, slot: Slot, out: FlashOutcome, failing: list[str | None]) -> None:
        """Flag the slot, not the hubs, when different hubs keep failing in it."""
        if out.result is not Result.FAILED:
            failing.clear()
            return
        failing.append(out.eui64)
        distinct = {e for e in failing if e is not None} | {
            f"unknown-{i}" for i, e in enumerate(failing) if e is None
        }
        limit = self.rig.slot_fault_after
        if limit and len(distinct) >= limit and slot.number not in self.flagged:
            self.flagged.add(slot.number)
            fault = SlotFault(slot=slot.number, failed_hubs=len(distinct), last=out.message)
            self._recorder.audit(
                "station", "slot-fault", {"slot": slot.number, **data_of(fault)}, then=fault
            )

    def _job(self, slot: Slot, port: str, choosers: dict[str, ImageChooser]) -> FlashOutcome:
        name = slot.profile
        tried: list[str] = []
        if name == AUTO:  # identify the hub with each candidate profile until one knows it
            found, tried = detect_profile(port, slot.candidates)
            name = AUTO if found is None else found.profile
        try:
            job_id = self._recorder.start_job(self.batch_id, slot.number, port, name)
        except StationError as exc:  # nothing recorded: the hub is left untouched
            if isinstance(exc, LeaseLost):
                self._lose_lease()
            with self._lock:
                self.record_errors.append(f"slot {slot.number}: {exc.message}")
            out = FlashOutcome(port=port, profile=name, phase=str(Phase.CONNECT))
            out.message = f"the station database refused to start a job: {exc.message}"
            out.raised(exc)
            return out
        with self._lock:
            self._running[slot.number] = job_id
        try:
            if name == AUTO:
                out = FlashOutcome(port=port, profile=AUTO, phase=str(Phase.IDENTIFY))
                out.message = _unrecognised(tried)
                out.hint = "check the hub is one of the slot's candidate models, and its cable"
                self._finish(slot, job_id, out)
                self.outcomes[slot.number].append(out)
                return out
            profile = load_profile(name)
            chooser = choosers.get(name)
            if chooser is None:
                chooser = choosers[name] = self.chooser_for(profile)
            return self._run_job(slot, port, profile, chooser, job_id)
        finally:
            with self._lock:
                self._running.pop(slot.number, None)

    def _run_job(
        self, slot: Slot, port: str, profile: Profile, chooser: ImageChooser, job_id: int
    ) -> FlashOutcome:
        state = JobState.DETECTED  # recorded and published by start_job
        last_progress = 0.0
        cancel = self._cancel[slot.number]

        def checkpoint(reached: JobState, out: FlashOutcome) -> None:
            nonlocal state
            # Durable before the step it names; a refused record raises into flash_hub,
            # which ends the job failed before it touches the hub again.
            try:
                self._recorder.state(state_event(slot.number, job_id, reached, out))
            except HubInFlight as exc:
                # Another job (here or at another station) has this hub: refuse it, touch
                # nothing; the error's name tells the store the hub's row is not ours.
                out.raised(exc)
                raise Refusal(exc.message, exc.hint) from exc
            state = reached

        def progress(phase: Phase, done: int, total: int, note: str) -> None:
            nonlocal last_progress
            if cancel.is_set() or self.lease_lost.is_set():
                written = CHAIN.index(state) >= CHAIN.index(JobState.ERASING)
                raise Cancelled(
                    "aborted by operator"
                    if cancel.is_set()
                    else "the station lost its lease: another process took it over",
                    "the hub may hold a partly written image: run the job again before it "
                    "leaves the bench"
                    if written
                    else "nothing was written to the hub",
                )
            now = time.monotonic()
            if total and (done >= total or now - last_progress >= self.progress_interval_s):
                last_progress = now
                self._recorder.progress(
                    JobProgress(
                        slot=slot.number, job_id=job_id, phase=phase, done=done, total=total
                    )
                )
            if note:
                self._recorder.event(Note(slot=slot.number, job_id=job_id, note=note))

        power = None
        if slot.power is not None and slot.power.entry:  # into the bootloader by a cycle
            power = slot_power(slot.number, slot.power, self.rig.station_id, profile=profile)
        try:
            out = flash_hub(
                port,
                profile,
                chooser,
                policy=self.policy,
                on_progress=progress,
                checkpoint=checkpoint,
                power=power,
            )
        except Exception as exc:  # a bug must end the job as failed, never as passed
            out = FlashOutcome(port=port, profile=profile.name, phase=str(state))
            out.message = f"internal error: {exc!r}"
            out.raised(exc)
        finally:
            if power is not None:
                power.close()
        if out.ended_by(PortVanished) and resolve(slot) != port:
            out.result = Result.INTERRUPTED
            out.hint = "the hub was taken out mid-job; put it back to re-flash it"
        self._finish(slot, job_id, out)
        self.outcomes[slot.number].append(out)
        return out

    def _finish(self, slot: Slot, job_id: int, out: FlashOutcome) -> None:
        """Record how the job ended; when the store refuses that record, record the refusal
        itself (a failed job, loudly), and when that fails too, count the job unrecorded
        (the run's exit status says so; the batch's close interrupts it)."""
        try:
            self._recorder.finish_job(slot.number, job_id, out)  # waits: durable, then shown
            return
        except StationError as first:
            exc = first
        if isinstance(exc, LeaseLost):
            self._lose_lease()
        else:
            refused = FlashOutcome(port=out.port, profile=out.profile, phase=out.phase)
            refused.eui64 = out.eui64 if out.eui64 and len(out.eui64) <= 64 else None
            refused.message = f"the station database refused this job's record: {exc.message}"
            refused.hint = "the hub's state is unknown: run the job again"
            refused.raised(exc)
            try:
                self._recorder.finish_job(slot.number, job_id, refused)
                out.result, out.message = Result.FAILED, refused.message
                return
            except LeaseLost:
                self._lose_lease()
            except StationError as again:
                exc = again
        with self._lock:
            self.record_errors.append(f"job {job_id}: {exc.message}")

    def _lose_lease(self) -> None:
        """Another process holds the station now: start nothing more, stop every job."""
        if not self.lease_lost.is_set():
            self.lease_lost.set()
            self.publish(LeaseTakenOver(station=self.rig.station_id))


class Heartbeat:
    """Keeps the station's lease alive from its own thread while a batch is open.

    When the store says the lease is lost (another process took the station over), it calls
    ``on_lost`` once and stops: the run must stop writing records.
    """

    def __init__(
        self, beat: Callable[[], None], interval_s: float, on_lost: Callable[[], None]
    ) -> None:
        self._beat = beat
        self._interval_s = interval_s
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._beat()
            except LeaseLost:
                self._on_lost()
                return
            except StationError:
                continue  # the database is unreachable for now: the next beat tries again

"""One batch on a rig, set up, served and finished: what ``station run`` and the TUI share.

:meth:`BatchRun.open` loads the rig, catalogue, trust store and manifest and opens the
store; :meth:`BatchRun.begin` marks jobs a crash left in flight as interrupted and starts the
batch (operator and overrides audited); :meth:`BatchRun.serve` runs the controller (from any
one thread, e.g. a UI worker); :meth:`BatchRun.finish` ends the batch and reconciles it.
Nothing here prints: events go to the ``publish`` callback (the front end showing them) and
to every ``observers`` callback (the metrics, see :mod:`station.metrics`), results come back
as values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drivers.errors import ConfigError
from firmware_images.catalog import Catalog, Decision
from firmware_images.descriptor import format_version
from firmware_images.trust import TrustStore
from station.controller import Controller, Heartbeat, probe_slots
from station.events import BatchFinished, BatchStarted, Event, LeaseTakenOver
from station.flash import HubIdentity, ImageChooser, Policy, catalog_chooser
from station.paths import keys_dir, trust_store
from station.profiles import Profile, load_profile
from station.protocols import plugin
from station.records.keys import StationKey
from station.records.leases import DEFAULT_TTL_S
from station.records.manifest import Manifest
from station.records.reports import (
    BatchSummary,
    Reconciliation,
    reconcile,
    summarise,
    write_reports,
)
from station.records.store import BatchClosed, Recovery, Store
from station.rig import AUTO, Rig, load_rig, resolve

__all__ = [
    "OVERRIDES",
    "BatchRun",
    "PlanRow",
    "describe_recovery",
    "export_reports",
    "preflight",
    "with_overrides",
]

#: Overrides an operator may give, by name -> what it lets through (shown when confirming).
OVERRIDES = {
    "allow_unsigned": "images with no signature, or one that cannot be checked",
    "allow_downgrade": "the newest release over a hub running a newer, uncatalogued version",
    "allow_off_pathway": "the newest release to a hub with no approved upgrade path to it",
}


@dataclass(frozen=True)
class PlanRow:
    """The pre-flight plan for one slot.

    Attributes:
        slot: the slot number.
        binding: where the slot looks for its hub.
        profile: the hub profile.
        port: where the hub is now (None: no hub found).
        baud: the link rate.
        eui64, version_before, hw_version: from a probe (None: not probed yet).
        target: the version the catalogue will write ("current", "refused" or a version).
        plan: the catalogue's reason.
        image_bytes: the size of the image it will write.
        estimate_s: the time to write and verify it at the link rate (None: unknown).
        problem: why the hub could not be identified.
    """

    slot: int
    binding: str
    profile: str
    port: str | None
    baud: int
    eui64: str | None = None
    version_before: str | None = None
    hw_version: int | None = None
    probed: bool = False
    target: str | None = None
    plan: str = ""
    image_bytes: int | None = None
    estimate_s: float | None = None
    problem: str | None = None


def with_overrides(policy: Policy, overrides: dict[str, bool]) -> Policy:
    """``policy`` with the named overrides (keys of :data:`OVERRIDES`) set or cleared."""
    return replace(
        policy,
        allow_unsigned=overrides.get("allow_unsigned", policy.allow_unsigned),
        allow_downgrade=overrides.get("allow_downgrade", policy.allow_downgrade),
        allow_off_pathway=overrides.get("allow_off_pathway", policy.allow_off_pathway),
    )


def _bits_per_byte(profile: Profile) -> int:
    return 11 if profile.parity in ("even", "odd") else 10


def preflight(
    rig: Rig, catalog: Catalog, probes: dict[int, HubIdentity | None] | None = None
) -> list[PlanRow]:
    """Per slot: hub seen, running version, target and the time it should take.

    Without ``probes`` (see :meth:`station.controller.Controller.probe`) only what the
    rig and catalogue say is known: the target is the model's newest release and the
    running version is read when the job starts. The estimate is the image's bytes at the
    link's bit time (11 bits a byte for 8E1), for the write plus a device-side verify.
    """
    rows = []
    for slot in rig.slots:
        probe = None if probes is None else probes.get(slot.number)
        if slot.profile == AUTO and (probe is None or probe.profile == AUTO):
            # Which model is in the slot is known only once a hub there is identified.
            port = resolve(slot) if probe is None else probe.port
            row = PlanRow(slot.number, slot.binding, AUTO, port, 0, probed=probe is not None)
            why = probe.problem if probe is not None else None
            rows.append(replace(row, target="at start", plan=why or "model detected at start"))
            continue
        profile = load_profile(slot.profile if probe is None else probe.profile)
        port = resolve(slot) if probe is None else probe.port
        row = PlanRow(slot.number, slot.binding, profile.name, port, profile.baud)
        rels = catalog.releases.get(profile.name) or []
        running = None
        if probes is not None and slot.number in probes:
            row = replace(row, probed=True)
        if probe is not None:
            row = replace(
                row,
                eui64=probe.eui64,
                version_before=probe.version_before,
                hw_version=probe.hw_version,
                problem=probe.problem,
            )
            running = None if probe.version_before is None else int(probe.version_before, 16)
        if not rels:
            rows.append(replace(row, target="refused", plan=f"{profile.name} is not catalogued"))
            continue
        release = rels[-1]
        if probe is not None and probe.problem is None:
            plan = catalog.plan(profile.name, probe.hw_version, running)
            if plan.decision is Decision.CURRENT:
                rows.append(replace(row, target="current", plan="already current", image_bytes=0))
                continue
            if plan.release is None:
                rows.append(replace(row, target="refused", plan=plan.reason))
                continue
            release = plan.release
            row = replace(row, plan=plan.reason)
        else:
            row = replace(row, plan=f"newest {release.version_text}")
        try:
            size = catalog.path_of(release).stat().st_size
        except OSError:
            size = None
        estimate = None
        if size is not None:
            bits = 8 if plugin(profile.protocol).usb else _bits_per_byte(profile)
            estimate = size * bits / profile.baud
        rows.append(
            replace(
                row,
                target=format_version(release.version),
                image_bytes=size,
                estimate_s=estimate,
            )
        )
    return rows


def describe_recovery(recovery: Recovery) -> list[str]:
    """What :meth:`BatchRun.begin` ended that a gone station had left behind, one line each
    (for the operator: the records changed, and why)."""
    lines = [
        f"station {lease.station_id} ({lease.describe()}) is gone: its lease was released"
        for lease in recovery.noticed
    ]
    if recovery.interrupted:
        ids = ", ".join(str(j) for j in recovery.interrupted)
        lines.append(
            f"{len(recovery.interrupted)} job(s) left in flight by a run that stopped were "
            f"marked interrupted (jobs {ids}); what they had read of their hubs is kept"
        )
    for closed in recovery.closed:
        lines.append(
            f"batch {closed.batch} was left open by a run that stopped: closed now, its DSP "
            f"update carries {len(closed.exported)} hub(s) "
            f"(station report dsp --batch {closed.batch})"
        )
    return lines


def export_reports(store: Store, batch_id: int, folder: Path) -> list[Path]:
    """Write the batch's reports into ``folder`` (see
    :func:`station.records.reports.write_reports`);
    returns the files written.

    Raises:
        ConfigError: the folder cannot be written.
    """
    try:
        return list(write_reports(store, batch_id, folder).values())
    except OSError as exc:
        raise ConfigError(f"cannot write reports to {folder}: {exc.strerror or exc}") from exc


@dataclass
class BatchRun:
    """A rig's batch: its inputs, its store and (once begun) its controller.

    Build it with :meth:`open`; close it with :meth:`close`.
    """

    rig: Rig
    catalog: Catalog
    trust: TrustStore | None
    store: Store
    policy: Policy
    manifest: Manifest | None = None
    manifest_path: str | None = None
    operator: str = "unknown"
    publish: Callable[[Event], None] = field(default=lambda event: None)
    #: Further subscribers to every event, after ``publish`` (which a front end may swap).
    observers: list[Callable[[Event], None]] = field(default_factory=list)
    key: StationKey | None = None
    batch_id: int | None = None
    controller: Controller | None = None
    recovery: Recovery = field(default_factory=Recovery)
    closed: BatchClosed | None = None
    heartbeat: Heartbeat | None = None

    @classmethod
    def open(
        cls,
        rig_path: str,
        *,
        catalog_dir: str | None = None,
        trust_dir: str | None = None,
        manifest_path: str | None = None,
        db_url: str | None = None,
        operator: str = "unknown",
        allow_unsigned: bool = False,
        publish: Callable[[Event], None] | None = None,
    ) -> BatchRun:
        """Load everything a batch needs, open the store and take the station's lease (no
        batch is started yet). The lease is kept alive by a heartbeat thread until
        :meth:`close`.

        Raises:
            ConfigError: a bad rig, catalogue, trust store or manifest, or no catalogue.
            StationBusy: another live process serves this station.
            StoreError: the database cannot be opened.
        """
        rig = load_rig(rig_path)
        catalog_dir = catalog_dir or rig.catalog
        if catalog_dir is None:
            raise ConfigError("no catalogue: give --catalog or set 'catalog' in the rig file")
        catalog = Catalog.load(catalog_dir)
        trust = trust_store(trust_dir)
        manifest = Manifest.load(manifest_path) if manifest_path else None
        key = StationKey.load_or_create(keys_dir(), rig.station_id)
        store = Store.open(db_url or rig.storage)
        try:
            store.acquire_lease(
                rig.station_id,
                rig=rig.source,
                ttl_s=DEFAULT_TTL_S,
                slots=[
                    {"slot": s.number, "binding": s.binding, "profile": s.profile}
                    for s in rig.slots
                ],
            )
        except BaseException:
            store.close()
            raise
        run = cls(
            rig=rig,
            catalog=catalog,
            trust=trust,
            store=store,
            policy=Policy(trust=trust, allow_unsigned=allow_unsigned),
            manifest=manifest,
            manifest_path=manifest_path,
            operator=operator,
            publish=publish or (lambda event: None),
            key=key,
        )
        # Each beat also notices stations that are gone, so their hubs in flight are freed
        # (interrupted) by whichever running station looks first.
        run.heartbeat = Heartbeat(store.beat, DEFAULT_TTL_S / 6, run._lease_lost).start()
        return run

    def emit(self, event: Event) -> None:
        """Publish ``event`` to the front end, then to every observer."""
        self.publish(event)
        for observe in self.observers:
            observe(event)

    def _lease_lost(self) -> None:
        if self.controller is not None:
            self.controller._lose_lease()
        else:
            self.emit(LeaseTakenOver(station=self.rig.station_id))

    def load_manifest(self, path: str) -> Manifest:
        """Use the manifest at ``path`` for the batch (only before it begins).

        Raises:
            ConfigError: a bad file, or the batch has begun (its consignment is recorded).
        """
        if self.batch_id is not None:
            raise ConfigError(
                f"batch {self.batch_id} has begun with "
                f"{self.manifest.name if self.manifest else 'no manifest'}: its consignment "
                "is recorded; finish it and start a new batch for another manifest"
            )
        self.manifest = Manifest.load(path)
        self.manifest_path = path
        return self.manifest

    def chooser_for(self, profile: Profile) -> ImageChooser:
        """The catalogue's chooser under the current policy (overrides included)."""
        return catalog_chooser(self.catalog, profile, self.policy)

    def begin(self) -> int:
        """Start the batch; returns its id. First, what stations that are gone left behind is
        ended (:meth:`Store.recover`): their live jobs interrupted, their open batches closed
        with their DSP export (see :attr:`recovery`)."""
        self.recovery = self.store.recover(self.key)
        self.batch_id = self.store.start_batch(
            station_id=self.rig.station_id,
            operator=self.operator,
            rig=self.rig.source,
            catalog=str(self.catalog.root),
            manifest=self.manifest,
        )
        used = {k: True for k in OVERRIDES if getattr(self.policy, k)}
        if used:
            self.store.audit(self.operator, "override", {"batch": self.batch_id, **used})
        self.controller = Controller(
            self.rig,
            store=self.store,
            batch_id=self.batch_id,
            chooser_for=self.chooser_for,
            policy=self.policy,
            publish=self.emit,
        )
        self.emit(
            BatchStarted(
                batch=self.batch_id, station=self.rig.station_id, slots=len(self.rig.slots)
            )
        )
        return self.batch_id

    def set_overrides(self, confirmed_by: str, **overrides: bool) -> None:
        """Change the overrides for jobs that start from now on; audited with who confirmed.

        Raises:
            ValueError: an unknown override name.
        """
        unknown = set(overrides) - set(OVERRIDES)
        if unknown:
            raise ValueError(f"unknown override(s): {', '.join(sorted(unknown))}")
        self.policy = with_overrides(self.policy, overrides)
        if self.controller is not None:
            self.controller.policy = self.policy
        self.store.audit(
            confirmed_by,
            "override",
            {"batch": self.batch_id, "confirmed": True, **overrides},
        )

    def serve(
        self,
        *,
        continuous: bool = False,
        stop: threading.Event | None = None,
        slots: Sequence[int] | None = None,
    ) -> None:
        """Run the controller (see :meth:`station.controller.Controller.run`); blocks."""
        if self.controller is None:
            raise ConfigError("the batch has not begun")
        self.controller.run(continuous=continuous, stop=stop, slots=slots)

    def probe(self) -> list[PlanRow]:
        """Identify the hubs in idle slots (nothing written) and plan each slot."""
        if self.controller is not None:
            probes = self.controller.probe()
        else:
            probes = probe_slots(self.rig.slots)
        return preflight(self.rig, self.catalog, probes)

    def finish(self) -> tuple[BatchSummary, Reconciliation]:
        """End the batch; publish and return its summary and reconciliation."""
        if self.batch_id is None:
            raise ConfigError("the batch has not begun")
        self.closed = self.store.close_batch(self.batch_id, self.key)
        summ = summarise(self.store, self.batch_id)
        recon = reconcile(self.store, self.batch_id)
        self.emit(BatchFinished(summary=summ.to_json(), reconciliation=recon.to_json()))
        return summ, recon

    def problems(self, recon: Reconciliation) -> list[str]:
        """Why the batch did not end well, one line each (empty: every hub seen passed, was
        current or was refused by policy, and none is missing). The run's exit status."""
        counts = recon.counts()
        out = []
        if counts["failed"]:
            out.append(f"{counts['failed']} hub(s) failed or were interrupted")
        if recon.unidentified_jobs:
            out.append(f"{len(recon.unidentified_jobs)} job(s) ended before a hub was identified")
        if counts["missing"]:
            out.append(f"{counts['missing']} listed hub(s) never arrived")
        if counts["in_progress"]:
            out.append(f"{counts['in_progress']} hub(s) were still in progress")
        if self.closed is not None and self.closed.interrupted:
            out.append(f"{len(self.closed.interrupted)} job(s) ended unrecorded")
        ctl = self.controller
        if ctl is not None:
            out += [f"not recorded: {e}" for e in ctl.record_errors]
            if ctl.lease_lost.is_set():
                out.append("the station's lease was taken over by another process")
        return out

    def export(self, folder: Path) -> list[Path]:
        """Write the batch's reports into ``folder`` (see :func:`export_reports`)."""
        if self.batch_id is None:
            raise ConfigError("the batch has not begun: nothing to report")
        return export_reports(self.store, self.batch_id, folder)

    def close(self) -> None:
        """Stop the heartbeat, give the station's lease up and close the store."""
        try:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self.store.release_lease()
        finally:
            self.store.close()

    def describe(self) -> dict[str, Any]:
        """Rig, catalogue and manifest in a few words (for the start screen)."""
        models = {
            name: (rels[-1].version_text if rels else "no releases")
            for name, rels in self.catalog.releases.items()
        }
        return {
            "station": self.rig.station_id,
            "rig": self.rig.source,
            "slots": len(self.rig.slots),
            "catalog": str(self.catalog.root),
            "models": models,
            "trust": None if self.trust is None else self.trust.source,
            "manifest": None if self.manifest is None else self.manifest.name,
            "listed": 0 if self.manifest is None else len(self.manifest.items),
        }

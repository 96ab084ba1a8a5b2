"""The errors the records raise: each says what was refused and what to do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from drivers.errors import StationError
from station.events import JobState

__all__ = [
    "HUB_IN_FLIGHT",
    "BatchFinished",
    "HubInFlight",
    "IllegalTransition",
    "LeaseLost",
    "StationBusy",
    "StoreError",
    "UnknownRecord",
    "ValueTooLong",
]


class StoreError(StationError):
    """The station database refused or failed a read or write."""

    default_hint = (
        "check that the station database is reachable and writable (--db URL, or the "
        "station-data folder); nothing was recorded by the failed call"
    )


class UnknownRecord(StoreError):
    """A batch or job id that the store does not hold."""

    default_hint = "'station batches' lists the batches this database holds"


class IllegalTransition(StoreError):
    """A job state change the state machine does not allow (station.events.legal).

    Attributes:
        job_id: the job.
        src: its recorded state.
        dst: the state that was refused.
    """

    default_hint = "this is a bug in the caller: a job walks its states forward, one at a time"

    def __init__(self, job_id: int, src: JobState, dst: JobState, why: str = "") -> None:
        super().__init__(
            f"job {job_id}: {src} -> {dst} is not a legal transition" + (f": {why}" if why else "")
        )
        self.job_id = job_id
        self.src = src
        self.dst = dst


class BatchFinished(StoreError):
    """A job was started in a batch that is already finished."""

    default_hint = "start a new batch"


class ValueTooLong(StoreError):
    """A value does not fit its column (or holds a NUL, which PostgreSQL cannot store)."""

    default_hint = (
        "the value came from a file, an argument or a hub: shorten or correct it; nothing "
        "was recorded by the refused write"
    )


class StationBusy(StoreError):
    """Another live process holds this station's lease: two processes must never serve
    (and record) the same station at once."""

    default_hint = (
        "stop the other run first (or wait for it to end); a second rig needs its own station_id"
    )


class LeaseLost(StoreError):
    """This process no longer holds its station's lease (another process took it over
    after the lease expired): it must not write another record for its jobs."""

    default_hint = (
        "this run stopped writing: its jobs were marked interrupted by the process that took "
        "the station over; check that only one process serves each station"
    )


class HubInFlight(StoreError):
    """A hub identified in one job while another job, at this station or another on the
    same database, has it in flight (a cloned EUI-64, or a hub moved between benches
    mid-job). The database refuses the second (a unique index over jobs in flight), so two
    stations never write to one hub's records at once.

    Attributes:
        eui64: the hub.
        station_id, slot, job_id: where it is in flight.
        since: when that job started.
    """

    default_hint = (
        "take the hub off this bench: it is being re-flashed elsewhere (or another hub "
        "carries the same EUI-64); run it again once that job has ended"
    )

    def __init__(
        self, eui64: str, station_id: str, slot: int, job_id: int, since: datetime
    ) -> None:
        super().__init__(
            f"in flight at station {station_id} slot {slot} since "
            f"{since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC (job {job_id})"
        )
        self.eui64 = eui64
        self.station_id = station_id
        self.slot = slot
        self.job_id = job_id
        self.since = since


#: The ``error`` of a job refused because its hub is in flight in another job: its end says
#: nothing of the hub, so the store leaves the hub's row alone.
HUB_IN_FLIGHT: Final = HubInFlight.__name__

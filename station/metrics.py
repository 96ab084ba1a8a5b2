"""Prometheus figures of one station, for the warehouse's dashboards (docs/metrics.md).

:class:`StationMetrics` is one more subscriber to the events a batch publishes (as the
console, the JSON lines and the TUI are): it turns ``job-finished``, ``retry``,
``slot-fault`` and the job states into counters and histograms, and starts no thread of its
own. :func:`serve` exposes a registry of its own (never the process-wide default, so two
stations in one process, or a test, never mix their figures) with prometheus-client's HTTP
server, bound before the station takes its lease so a bad address costs nothing.

Labels hold only bounded values: the station id, the hub model (profile name), the result
(a job state), the phase (a :class:`drivers.types.Phase`) and the slot number. Messages and
EUI-64s never become labels: each new value would be a new time series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from typing import TYPE_CHECKING, Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from drivers.errors import ConfigError, StationError
from drivers.types import Phase
from station.events import (
    BatchStarted,
    Event,
    HubDetected,
    JobFinished,
    JobState,
    Retry,
    SlotFault,
)

if TYPE_CHECKING:
    from station.batch import BatchRun
    from station.records.store import Store

__all__ = [
    "PHASE_BUCKETS",
    "MetricsServer",
    "StationMetrics",
    "lease_heartbeat_of",
    "parse_address",
    "serve",
    "watch",
]

#: Upper bounds (seconds) of the phase histogram's buckets: a connect takes tens of
#: milliseconds, a 1 MiB write at 115200 baud about two minutes.
PHASE_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

_PHASES: Final = frozenset(str(p) for p in Phase)
_RESULTS: Final = frozenset(str(s) for s in JobState if s.final)


def software_version() -> str:
    """The installed release of the station software (``unknown`` from a bare source tree)."""
    try:
        return installed_version("chub-station")
    except PackageNotFoundError:
        return "unknown"


class StationMetrics:
    """One station's figures, fed by its batch's events (call it with each :class:`Event`).

    Thread-safe: events arrive from the recorder's thread (and a few from the batch's
    thread), scrapes from the HTTP server's.

    Args:
        station_id: the rig's station id (the ``station`` label of every figure).
        registry: where the figures are registered (a fresh one by default).
        lease_heartbeat: when the station's lease was last renewed, as recorded (None: no
            lease held, or it cannot be read now); read at each scrape.
        version: the software release for ``station_info`` (default: the installed one).
    """

    def __init__(
        self,
        station_id: str,
        *,
        registry: CollectorRegistry | None = None,
        lease_heartbeat: Callable[[], datetime | None] | None = None,
        version: str | None = None,
    ) -> None:
        self.station_id = station_id
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lease_heartbeat = lease_heartbeat
        self._lock = threading.Lock()
        # The current batch, for hubs/hour: as the batch summary computes it (passed hubs
        # per hour from the first job's start to the last job's end).
        self._first_start: float | None = None
        self._last_end: float | None = None
        self._passed: set[str] = set()
        self._live: set[int] = set()  # job ids started and not ended
        self._hub_result: dict[str, str] = {}  # EUI-64 -> its latest result in the batch
        self._slot_hub: dict[int, str] = {}  # slot -> the hub its last job ended on

        r = self.registry
        self.info = Info("station", "The station serving these figures.", registry=r)
        self.info.info({"station": station_id, "version": version or software_version()})
        self.jobs = Counter(
            "station_jobs",
            "Jobs (tries) ended, by result: a hub tried again counts once per try.",
            ["station", "model", "result"],
            registry=r,
        )
        self.phase_seconds = Histogram(
            "station_phase_seconds",
            "Wall time of a job's phase, for every phase a job entered.",
            ["station", "model", "phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.bytes_written = Counter(
            "station_bytes_written",
            "Image bytes written to hubs' flash (jobs that got past the write phase).",
            ["station", "model"],
            registry=r,
        )
        self.slot_faults = Counter(
            "station_slot_faults",
            "Slots flagged: different hubs kept failing there (check cable and fixture).",
            ["station", "slot"],
            registry=r,
        )
        self.retries = Counter(
            "station_retries",
            "Jobs started again on the same hub after a failed try.",
            ["station", "slot"],
            registry=r,
        )
        r.register(_Gauges(self))

    # -- events in -----------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Take one published event."""
        with self._lock:
            self._take(event)

    def _take(self, event: Event) -> None:
        station = self.station_id
        match event:
            case BatchStarted():
                self._first_start = self._last_end = None
                self._passed = set()
                self._live = set()
                self._hub_result = {}
                self._slot_hub = {}
            case HubDetected():
                if self._first_start is None:
                    self._first_start = event.at
                self._live.add(event.job_id)
            case JobFinished():
                result = str(event.state) if event.state in _RESULTS else "unknown"
                model = event.profile or "unknown"
                self.jobs.labels(station, model, result).inc()
                if event.eui64:
                    self._hub_result[event.eui64] = result
                    self._slot_hub[event.slot] = event.eui64
                if event.bytes_written > 0:
                    self.bytes_written.labels(station, model).inc(event.bytes_written)
                for phase, seconds in event.phase_seconds.items():
                    if phase in _PHASES:
                        self.phase_seconds.labels(station, model, phase).observe(seconds)
                self._last_end = event.at
                if event.state is JobState.PASSED and event.eui64:
                    self._passed.add(event.eui64)
                self._live.discard(event.job_id)
            case Retry():
                self.retries.labels(station, str(event.slot)).inc()
                hub = self._slot_hub.get(event.slot)
                if hub is not None:  # tried again: not failed (yet)
                    self._hub_result[hub] = "retrying"
            case SlotFault():
                self.slot_faults.labels(station, str(event.slot)).inc()

    # -- figures out -----------------------------------------------------------------------

    def hubs_per_hour(self) -> float | None:
        """Passed hubs per hour of the current batch's wall time (None: no job ended yet)."""
        with self._lock:
            if self._first_start is None or self._last_end is None:
                return None
            wall = self._last_end - self._first_start
            return len(self._passed) * 3600 / wall if wall > 0 else None

    def batch_hubs(self) -> dict[str, int]:
        """The current batch's hubs by their latest result (``retrying`` while tried again):
        what a dashboard counts, where ``station_jobs_total`` counts every try."""
        with self._lock:
            counts: dict[str, int] = {}
            for result in self._hub_result.values():
                counts[result] = counts.get(result, 0) + 1
            return counts

    def jobs_in_flight(self) -> int:
        """Jobs started and not yet ended."""
        with self._lock:
            return len(self._live)

    def lease_age(self, now: datetime | None = None) -> float | None:
        """Seconds since the station's lease was last renewed (None: unknown now)."""
        if self._lease_heartbeat is None:
            return None
        beat = self._lease_heartbeat()
        if beat is None:
            return None
        if beat.tzinfo is None:  # SQLite hands back naive datetimes: they are UTC
            beat = beat.replace(tzinfo=UTC)
        return max(0.0, ((now or datetime.now(UTC)) - beat).total_seconds())


class _Gauges:
    """The figures computed at scrape time (a collector of the station's registry)."""

    def __init__(self, metrics: StationMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return [
            *self._families(),
            GaugeMetricFamily("station_batch_hubs", "hubs by latest result", labels=["station"]),
        ]

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        families = self._families()
        for family, value in zip(
            families, (m.hubs_per_hour(), m.jobs_in_flight(), m.lease_age()), strict=True
        ):
            if value is not None:  # unknown: no sample rather than a made-up value
                family.add_metric([m.station_id], value)
        hubs = GaugeMetricFamily(
            "station_batch_hubs",
            "The current batch's hubs (by EUI-64) by their latest result; retrying: tried again.",
            labels=["station", "result"],
        )
        for result, n in sorted(m.batch_hubs().items()):
            hubs.add_metric([m.station_id, result], n)
        return [*families, hubs]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "station_hubs_per_hour",
                "Passed hubs per hour of the current batch, first job start to last job end.",
                labels=["station"],
            ),
            GaugeMetricFamily(
                "station_jobs_in_flight",
                "Jobs started and not yet ended.",
                labels=["station"],
            ),
            GaugeMetricFamily(
                "station_lease_age_seconds",
                "Seconds since the station's lease heartbeat was recorded (absent: no lease).",
                labels=["station"],
            ),
        ]


def lease_heartbeat_of(store: Store) -> Callable[[], datetime | None]:
    """When ``store``'s own lease was last renewed, as the database records it (None when
    it holds none, it was released or taken over, or the database cannot be read now)."""

    def read() -> datetime | None:
        lease = store.lease
        if lease is None:
            return None
        try:
            rows = store.leases()
        except StationError:  # the database is unreachable: the figure is absent
            return None
        for row in rows:
            if (
                row.station_id == lease.station_id
                and row.lease_id == lease.lease_id
                and row.released_at is None
            ):
                return row.heartbeat_at
        return None

    return read


# -- the HTTP endpoint ---------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a host and a port number.

    Raises:
        ConfigError: it is not of that form, or the port is not 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"--metrics {text!r} is not HOST:PORT (for example 127.0.0.1:9464 or 0.0.0.0:9464)"
        )
    return host, int(port)


@dataclass
class MetricsServer:
    """prometheus-client's HTTP server for one registry; :meth:`close` stops it."""

    registry: CollectorRegistry
    server: WSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        """Where the figures are (the port the system chose, when asked for port 0)."""
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port!s}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(address: str) -> MetricsServer:
    """Serve a fresh registry's figures at ``address`` (``HOST:PORT``) over HTTP.

    Raises:
        ConfigError: a bad address, an unknown host, or the port cannot be bound (in use,
            not this machine's address, or privileged).
    """
    host, port = parse_address(address)
    registry = CollectorRegistry()
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from exc
    return MetricsServer(registry, server, thread)


def watch(run: BatchRun, server: MetricsServer) -> StationMetrics:
    """Publish ``run``'s figures on ``server``: its events from now on, and its lease."""
    metrics = StationMetrics(
        run.rig.station_id,
        registry=server.registry,
        lease_heartbeat=lease_heartbeat_of(run.store),
    )
    run.observers.append(metrics)
    return metrics

"""The watcher's Prometheus series: one registry of its own, each event recorded where it happens.

The watcher has no HTTP port of its own, so the daemon renders this registry with
``render()`` and writes it atomically to ``.modelgen/metrics.prom`` with every
heartbeat (the node_exporter textfile format); the reference server serves it after
its own series at ``GET /metrics``. The exposition format is ``prometheus_client``'s.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..volume.schemas import ErrorKind
from .outcomes import Outcome

PREFIX = "modelgen"

SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Upper bounds for model runs and requests: 10 ms (the embedded model) to 10 minutes (a slow one)."""

FINAL_OUTCOMES = frozenset({"ok", "error", "transient"})
"""Outcomes that end with a final status written (or attempted): the requests ``request_seconds`` times.
Skipped, deferred, gone and cancelled requests take no time worth a bucket."""

# No ``*_created`` gauge beside every counter and histogram (the library leaves this call unannotated).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class WatcherMetrics:
    """Every series of the watcher, registered in its own ``CollectorRegistry`` (never the global one)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{PREFIX}_requests_total", "Requests finished, by outcome (ok, error, skipped, ...).",
            ["outcome"], registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors_total", "Requests that ended in an error status, by error kind.", ["kind"], registry=r
        )
        self.model_runs = Counter(
            f"{PREFIX}_model_runs_total", "Model runs: a process started, or a call in a warm worker.", registry=r
        )
        self.model_seconds = Histogram(
            f"{PREFIX}_model_seconds", "Seconds spent in model runs.", buckets=SECONDS_BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_request_seconds",
            "Seconds from reading a request's input to its final status (ok or error), model run included.",
            buckets=SECONDS_BUCKETS, registry=r,
        )
        self.events = Counter(f"{PREFIX}_events_total", "File events for input names.", registry=r)
        self.rescans = Counter(f"{PREFIX}_rescans_total", "Periodic full rescans of the watch dir.", registry=r)
        self.missed_events = Counter(
            f"{PREFIX}_missed_events_total", "Changed inputs found by a rescan that no event reported.", registry=r
        )
        self.retention_removed = Counter(
            f"{PREFIX}_retention_removed_total", "Keyed requests removed by retention.", registry=r
        )
        self.refused_names = Counter(
            f"{PREFIX}_refused_names_total",
            "Distinct names shaped like inputs whose key is invalid or reserved.", registry=r,
        )
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Requests queued or running.", registry=r)
        self.ready = Gauge(
            f"{PREFIX}_ready",
            "1 while the watcher can make progress, 0 while it cannot (e.g. the volume refuses writes).",
            registry=r,
        )
        self.native_observer = Gauge(
            f"{PREFIX}_native_observer", "1 when native file events are used, 0 when polling.", registry=r
        )
        self.heartbeat = Gauge(f"{PREFIX}_heartbeat_timestamp_seconds", "Unix time of the last heartbeat.", registry=r)
        # Known label values are shown at 0 from the start, so a scrape sees them before the first event.
        for outcome in Outcome:
            self.requests.labels(outcome=outcome.value)
        for kind in ErrorKind:
            self.errors.labels(kind=kind.value)

    def request_done(self, outcome: Outcome, seconds: float) -> None:
        """One request's processing ended (the pipeline calls this once per ``process``)."""
        self.requests.labels(outcome=outcome.value).inc()
        if outcome.value in FINAL_OUTCOMES:
            self.request_seconds.observe(seconds)

    def model_run(self, seconds: float) -> None:
        """One model run ended (to its end, a timeout, a launch error or a cancellation)."""
        self.model_runs.inc()
        self.model_seconds.observe(seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry)

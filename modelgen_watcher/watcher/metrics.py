"""The watcher's Prometheus series: one registry of its own, each event recorded where it happens.

The watcher has no HTTP port of its own, so the daemon renders this registry with
``render()`` and writes it atomically to ``.modelgen/metrics.prom`` with every
heartbeat (the node_exporter textfile format); the reference server serves it after
its own series at ``GET /metrics``. The exposition format is ``prometheus_client``'s.

Rendering every series costs about 0.3 ms, a third of an idle heartbeat, to write what
the last one wrote. So every series is changed through a thin wrapper that notes the
change, ``render()`` renders again only after one, and the heartbeat's timestamp, which
changes every time, is a registry of its own rendered after the rest (where it always
was). The file is the same, byte for byte.
"""

from __future__ import annotations

import threading

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..volume.schemas import ErrorKind
from .outcomes import Outcome

PREFIX = "modelgen"

SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Upper bounds for model runs and requests: 10 ms (the embedded model) to 10 minutes (a slow one)."""

CLAIM_RESULTS = ("won", "takeover", "taken", "lost")
"""``modelgen_claims_total``'s results: a free request claimed, a dead watcher's taken over, found taken by a live
watcher, lost to another's takeover while served."""

FINAL_OUTCOMES = frozenset({"ok", "error", "transient"})
"""Outcomes that end with a final status written (or attempted): the requests ``request_seconds`` times.
Skipped, deferred, gone and cancelled requests take no time worth a bucket."""

# No ``*_created`` gauge beside every counter and histogram (the library leaves this call unannotated).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class _Changes:
    """A number that moves whenever a series changes (under a lock: series change from several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def note(self) -> None:
        with self._lock:
            self.count += 1


class TrackedCounter:
    """A counter (or one labelled child of it) whose increments are noted."""

    def __init__(self, counter: Counter, changes: _Changes) -> None:
        self._counter, self._changes = counter, changes

    def inc(self, amount: float = 1) -> None:
        if amount:
            self._counter.inc(amount)
            self._changes.note()

    def labels(self, **labels: str) -> TrackedCounter:
        return TrackedCounter(self._counter.labels(**labels), self._changes)


class TrackedGauge:
    """A gauge whose changes of value are noted (setting the value it has is no change)."""

    def __init__(self, gauge: Gauge, changes: _Changes) -> None:
        self._gauge, self._changes = gauge, changes
        self._value: float | None = None

    def set(self, value: float) -> None:
        if value != self._value:
            self._gauge.set(value)
            self._value = value
            self._changes.note()


class TrackedHistogram:
    """A histogram whose observations are noted."""

    def __init__(self, histogram: Histogram, changes: _Changes) -> None:
        self._histogram, self._changes = histogram, changes

    def observe(self, value: float) -> None:
        self._histogram.observe(value)
        self._changes.note()


class WatcherMetrics:
    """Every series of the watcher, registered in its own ``CollectorRegistry`` (never the global one)."""

    def __init__(self, shared: bool = False) -> None:
        """``shared``: shared mode's series too (claims); the lone watcher's file does not carry them."""
        r = self.registry = CollectorRegistry()
        self._changes = changes = _Changes()
        self._rendered: tuple[int, bytes] | None = None
        """The change count at the last rendering of ``registry``, and what it rendered."""

        def counter(
            name: str, doc: str, labels: tuple[str, ...] = (), registry: CollectorRegistry = r
        ) -> TrackedCounter:
            return TrackedCounter(Counter(name, doc, labels, registry=registry), changes)

        def gauge(name: str, doc: str) -> TrackedGauge:
            return TrackedGauge(Gauge(name, doc, registry=r), changes)

        def histogram(name: str, doc: str) -> TrackedHistogram:
            return TrackedHistogram(Histogram(name, doc, buckets=SECONDS_BUCKETS, registry=r), changes)

        self.requests = counter(
            f"{PREFIX}_requests_total", "Requests finished, by outcome (ok, error, skipped, ...).", ("outcome",)
        )
        self.errors = counter(
            f"{PREFIX}_errors_total", "Requests that ended in an error status, by error kind.", ("kind",)
        )
        self.model_runs = counter(
            f"{PREFIX}_model_runs_total", "Model runs: a process started, or a call in a warm worker."
        )
        self.model_seconds = histogram(f"{PREFIX}_model_seconds", "Seconds spent in model runs.")
        self.request_seconds = histogram(
            f"{PREFIX}_request_seconds",
            "Seconds from reading a request's input to its final status (ok or error), model run included.",
        )
        self.events = counter(f"{PREFIX}_events_total", "File events for input names.")
        self.rescans = counter(f"{PREFIX}_rescans_total", "Periodic full rescans of the watch dir.")
        self.missed_events = counter(
            f"{PREFIX}_missed_events_total", "Changed inputs found by a rescan that no event reported."
        )
        self.retention_removed = counter(f"{PREFIX}_retention_removed_total", "Keyed requests removed by retention.")
        self.refused_names = counter(
            f"{PREFIX}_refused_names_total", "Distinct names shaped like inputs whose key is invalid or reserved."
        )
        self.queue_depth = gauge(f"{PREFIX}_queue_depth", "Requests queued or running.")
        self.ready = gauge(
            f"{PREFIX}_ready",
            "1 while the watcher can make progress, 0 while it cannot (e.g. the volume refuses writes).",
        )
        self.native_observer = gauge(f"{PREFIX}_native_observer", "1 when native file events are used, 0 when polling.")
        self.claims = counter(
            f"{PREFIX}_claims_total",
            "Shared mode: claims on requests, by result (won, takeover of a dead watcher's, taken by a live one, "
            "lost to a takeover).",
            ("result",),
            registry=r if shared else CollectorRegistry(),  # counted either way, rendered in shared mode only
        )
        self._beat_registry = CollectorRegistry()
        self.heartbeat = Gauge(
            f"{PREFIX}_heartbeat_timestamp_seconds", "Unix time of the last heartbeat.", registry=self._beat_registry
        )
        """Set at every heartbeat: rendered apart from the rest, so it never makes them render again."""
        # Known label values are shown at 0 from the start, so a scrape sees them before the first event.
        for outcome in Outcome:
            self.requests.labels(outcome=outcome.value)
        for kind in ErrorKind:
            self.errors.labels(kind=kind.value)
        for result in CLAIM_RESULTS:
            self.claims.labels(result=result)

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
        """Every series in the Prometheus text format, the heartbeat's last (rendered again only what changed)."""
        seen = self._changes.count  # read before rendering: a change during it renders again next time
        if self._rendered is None or self._rendered[0] != seen:
            self._rendered = (seen, prometheus_client.generate_latest(self.registry))
        return self._rendered[1] + prometheus_client.generate_latest(self._beat_registry)

"""The reference server's Prometheus series, in a registry of its own, and the watchers' beside them.

``GET /metrics`` serves ``render()`` followed by the watcher's textfile read from the
volume: the server and the watcher meet on the volume only, never in an import. In
shared mode every live watcher has a textfile of its own: ``label_watchers`` merges
them into one exposition, each series with a ``watcher`` label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

PREFIX = "modelgen_server"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What ``generate_latest`` writes (and the watcher's textfile holds): the classic text format."""

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""1 ms (a probe) to 60 s (a retrieve that long-polls up to the default ``--max-wait``)."""

# No ``*_created`` gauge beside every counter and histogram (the library leaves this call unannotated).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class ServerMetrics:
    """Every series of the server; ``answered`` records one response."""

    def __init__(self, endpoints: Iterable[str] = ()) -> None:
        """``endpoints``: every value of the ``endpoint`` label, shown at 0 before the first request."""
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter(
            f"{PREFIX}_http_requests_total", "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "code"], registry=r,
        )
        self.http_request_seconds = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Seconds from a request's first bytes to its answer written, by endpoint.",
            ["endpoint"], buckets=SECONDS_BUCKETS, registry=r,
        )
        for endpoint in endpoints:
            self.http_request_seconds.labels(endpoint=endpoint)
        self.pending = Gauge(
            "modelgen_pending_requests",
            "Requests on the volume waiting for an outcome: no status yet, published again since their status, or "
            "a status that is not final (what to scale watchers by).",
            registry=r,
        )

    def answered(self, endpoint: str, code: int, seconds: float) -> None:
        self.http_requests.labels(endpoint=endpoint, code=str(code)).inc()
        self.http_request_seconds.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)


class _Merged:
    """A collector of every watcher's families, each sample labelled with its watcher (one family per name)."""

    def __init__(self, texts: list[tuple[str, str]]) -> None:
        self._texts = texts

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for watcher, text in self._texts:
            try:
                families = list(text_string_to_metric_families(text))
            except ValueError:
                continue  # caught mid-write or damaged: that watcher is left out of this scrape
            for family in families:
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                into.samples.extend(
                    Sample(s.name, {**s.labels, "watcher": watcher}, s.value, s.timestamp, s.exemplar)
                    for s in family.samples
                )
        yield from merged.values()


def label_watchers(texts: list[tuple[str, str]]) -> bytes:
    """The textfiles of several watchers, ``(watcher id, text)``, as one exposition with a ``watcher`` label."""
    registry = CollectorRegistry()
    registry.register(_Merged(texts))
    return prometheus_client.generate_latest(registry)

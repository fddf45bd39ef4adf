"""Prometheus counters and gauges in the text exposition format, with no client library.

The watcher has no HTTP port of its own, so it writes its metrics atomically to
``.modelgen/metrics.prom`` with every heartbeat (the node_exporter textfile format);
the reference server serves them with its own at ``GET /metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

LabelSet = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """A small thread-safe registry: ``inc`` for counters, ``set`` for gauges."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._values: dict[str, dict[LabelSet, float]] = {}
        self._meta: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, help_text: str) -> None:
        with self._lock:
            self._meta[name] = (kind, help_text)
            self._values.setdefault(name, {})

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values.setdefault(name, {})[key] = value

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._values):
                full = f"{self._prefix}_{name}"
                kind, help_text = self._meta.get(name, ("untyped", ""))
                if help_text:
                    lines.append(f"# HELP {full} {help_text}")
                lines.append(f"# TYPE {full} {kind}")
                for labels, value in sorted(self._values[name].items()):
                    lines.append(f"{full}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def watcher_metrics() -> Metrics:
    """The watcher's registry, with every series described up front."""
    m = Metrics("modelgen")
    m.describe("requests_total", "counter", "Requests finished, by outcome (ok, error, skipped, ...).")
    m.describe("errors_total", "counter", "Requests that ended in an error status, by error kind.")
    m.describe("model_runs_total", "counter", "Model processes started.")
    m.describe("model_seconds_total", "counter", "Seconds spent in model runs.")
    m.describe("events_total", "counter", "File events for input names.")
    m.describe("rescans_total", "counter", "Periodic full rescans of the watch dir.")
    m.describe("missed_events_total", "counter", "Changed inputs found by a rescan that no event reported.")
    m.describe("retention_removed_total", "counter", "Keyed requests removed by retention.")
    m.describe("refused_names_total", "counter", "Distinct names shaped like inputs whose key is invalid or reserved.")
    m.describe("queue_depth", "gauge", "Requests queued or running.")
    m.describe("ready", "gauge", "1 while the watcher can make progress, 0 while it cannot (e.g. the volume refuses writes).")
    m.describe("native_observer", "gauge", "1 when native file events are used, 0 when polling.")
    m.describe("heartbeat_timestamp_seconds", "gauge", "Unix time of the last heartbeat.")
    return m

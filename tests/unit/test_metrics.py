"""The Prometheus text format the watcher writes and the server serves."""

from __future__ import annotations

import threading

from modelgen_watcher.watcher.metrics import Metrics, watcher_metrics


def test_render_counters_gauges_and_labels():
    m = Metrics("x")
    m.describe("hits_total", "counter", "Hits.")
    m.inc("hits_total", kind="a")
    m.inc("hits_total", 2, kind="a")
    m.inc("hits_total", kind='we"ird')
    m.set("depth", 0.5)
    text = m.render()
    assert "# HELP x_hits_total Hits.\n# TYPE x_hits_total counter\n" in text
    assert 'x_hits_total{kind="a"} 3\n' in text
    assert 'x_hits_total{kind="we\\"ird"} 1\n' in text
    assert "# TYPE x_depth untyped\nx_depth 0.5\n" in text


def test_counters_are_thread_safe():
    m = Metrics("x")
    threads = [threading.Thread(target=lambda: [m.inc("n") for _ in range(1000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.value("n") == 8000


def test_watcher_series_are_described_before_any_event():
    text = watcher_metrics().render()
    for series in ("requests_total", "model_runs_total", "missed_events_total", "queue_depth"):
        assert f"# TYPE modelgen_{series} " in text

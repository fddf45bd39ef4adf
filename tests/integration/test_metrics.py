"""Counters a Prometheus textfile collector (or the server's /metrics) can scrape."""

from __future__ import annotations

from tests.helpers import drop, route, sha, wait_final, wait_for


def test_metrics_file_counts_requests_runs_and_errors(daemon_factory, watch_dir):
    d = daemon_factory("--observer", "native")
    ok = drop(watch_dir, route([""]), key="good")
    bad = drop(watch_dir, b'{"routes": 1}', key="bad")
    wait_final(watch_dir, "good", sha(ok))
    wait_final(watch_dir, "bad", sha(bad))
    metrics = watch_dir / ".modelgen" / "metrics.prom"

    def scraped() -> str | None:
        text = metrics.read_text() if metrics.exists() else ""
        return text if 'modelgen_requests_total{outcome="ok"} 1' in text else None

    text = wait_for(scraped, 15, what="metrics with one ok request")
    assert 'modelgen_requests_total{outcome="error"} 1' in text
    assert 'modelgen_errors_total{kind="invalid_input"} 1' in text
    assert "modelgen_model_runs_total 1" in text
    assert "modelgen_native_observer 1" in text
    assert d.proc.poll() is None

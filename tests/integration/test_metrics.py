"""Counters a Prometheus textfile collector (or the server's /metrics) can scrape."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import drop, route, sample, sha, wait_final, wait_for


def test_metrics_file_counts_requests_runs_and_errors(daemon_factory, watch_dir):
    d = daemon_factory("--observer", "native")
    ok = drop(watch_dir, route([""]), key="good")
    bad = drop(watch_dir, b'{"routes": 1}', key="bad")
    wait_final(watch_dir, "good", sha(ok))
    wait_final(watch_dir, "bad", sha(bad))
    metrics = watch_dir / ".modelgen" / "metrics.prom"

    def scraped() -> str | None:
        text = metrics.read_text() if metrics.exists() else ""
        done = sample(text, "modelgen_requests_total", outcome="ok") == 1
        return text if done and sample(text, "modelgen_requests_total", outcome="error") == 1 else None

    text = wait_for(scraped, 15, what="metrics with one ok and one failed request")
    assert {f.name for f in text_string_to_metric_families(text)} >= {
        "modelgen_requests", "modelgen_errors", "modelgen_model_runs", "modelgen_model_seconds",
        "modelgen_request_seconds", "modelgen_queue_depth", "modelgen_ready", "modelgen_heartbeat_timestamp_seconds",
    }
    assert sample(text, "modelgen_errors_total", kind="invalid_input") == 1
    assert sample(text, "modelgen_errors_total", kind="model_failed") == 0  # every kind is shown, at 0 until it happens
    assert sample(text, "modelgen_model_runs_total") == 1
    assert sample(text, "modelgen_model_seconds_count") == 1  # the histogram that replaced model_seconds_total
    assert 0 < (sample(text, "modelgen_model_seconds_sum") or 0) < 30
    assert sample(text, "modelgen_request_seconds_count") == 2  # both ended with a final status
    assert sample(text, "modelgen_native_observer") == 1
    assert sample(text, "modelgen_ready") == 1
    assert (sample(text, "modelgen_heartbeat_timestamp_seconds") or 0) > 0
    assert d.proc.poll() is None

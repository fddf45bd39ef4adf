"""The Prometheus series the watcher writes and the server serves, read back with prometheus_client's parser."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from modelgen_watcher.server.metrics import ServerMetrics
from modelgen_watcher.volume.schemas import ErrorKind
from modelgen_watcher.watcher.metrics import SECONDS_BUCKETS, WatcherMetrics
from modelgen_watcher.watcher.outcomes import Outcome
from tests.helpers import sample, samples

WATCHER_FAMILIES = {
    # family name (as the parser names it: a counter without its _total) -> (type, labels)
    "modelgen_requests": ("counter", {"outcome"}),
    "modelgen_errors": ("counter", {"kind"}),
    "modelgen_model_runs": ("counter", set()),
    "modelgen_model_seconds": ("histogram", set()),
    "modelgen_request_seconds": ("histogram", set()),
    "modelgen_events": ("counter", set()),
    "modelgen_rescans": ("counter", set()),
    "modelgen_missed_events": ("counter", set()),
    "modelgen_retention_removed": ("counter", set()),
    "modelgen_refused_names": ("counter", set()),
    "modelgen_queue_depth": ("gauge", set()),
    "modelgen_ready": ("gauge", set()),
    "modelgen_native_observer": ("gauge", set()),
    "modelgen_heartbeat_timestamp_seconds": ("gauge", set()),
}


def test_the_watcher_registry_renders_every_series_before_any_event():
    text = WatcherMetrics().render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == set(WATCHER_FAMILIES)
    for name, (kind, labels) in WATCHER_FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.documentation, name
        assert family.samples, f"{name} has a TYPE line and no sample"
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
            assert s.value == 0, (name, s)
    # Every known label value is there at 0, so a scrape sees the series before the first event.
    for outcome in Outcome:
        assert sample(text, "modelgen_requests_total", outcome=outcome.value) == 0
    for kind in ErrorKind:
        assert sample(text, "modelgen_errors_total", kind=kind.value) == 0
    assert sample(text, "modelgen_model_runs_total") == 0
    # No *_created series beside them.
    assert "_created" not in text


def test_histogram_buckets_span_10_ms_to_10_minutes():
    assert SECONDS_BUCKETS[0] == 0.01 and SECONDS_BUCKETS[-1] == 600
    assert list(SECONDS_BUCKETS) == sorted(SECONDS_BUCKETS)
    text = WatcherMetrics().render().decode()
    bounds = {le for (name, labels), _ in samples(text).items() if name == "modelgen_model_seconds_bucket"
              for k, le in labels if k == "le"}
    assert bounds == {*(repr(float(b)) for b in SECONDS_BUCKETS), "+Inf"}


def test_request_done_counts_outcomes_and_times_only_final_ones():
    m = WatcherMetrics()
    m.request_done(Outcome.ok, 0.2)
    m.request_done(Outcome.error, 0.03)
    m.request_done(Outcome.transient, 0.04)
    m.request_done(Outcome.skipped, 0.001)
    m.request_done(Outcome.deferred, 0.001)
    m.model_run(0.15)
    m.model_run(700.0)
    text = m.render().decode()
    for outcome, count in [("ok", 1), ("error", 1), ("transient", 1), ("skipped", 1), ("deferred", 1), ("gone", 0)]:
        assert sample(text, "modelgen_requests_total", outcome=outcome) == count, outcome
    assert sample(text, "modelgen_request_seconds_count") == 3
    assert abs((sample(text, "modelgen_request_seconds_sum") or 0) - 0.27) < 1e-9
    assert sample(text, "modelgen_request_seconds_bucket", le="0.05") == 2
    assert sample(text, "modelgen_model_runs_total") == 2
    assert sample(text, "modelgen_model_seconds_count") == 2
    assert abs((sample(text, "modelgen_model_seconds_sum") or 0) - 700.15) < 1e-9
    assert sample(text, "modelgen_model_seconds_bucket", le="0.25") == 1
    assert sample(text, "modelgen_model_seconds_bucket", le="600.0") == 1
    assert sample(text, "modelgen_model_seconds_bucket", le="+Inf") == 2


def test_registries_are_separate():
    a, b = WatcherMetrics(), WatcherMetrics()  # one per pipeline: no clash in one process, nothing shared
    a.events.inc()
    assert sample(a.render().decode(), "modelgen_events_total") == 1
    assert sample(b.render().decode(), "modelgen_events_total") == 0


def test_counters_are_thread_safe():
    m = WatcherMetrics()

    def count_a_thousand() -> None:
        for _ in range(1000):
            m.events.inc()

    threads = [threading.Thread(target=count_a_thousand) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sample(m.render().decode(), "modelgen_events_total") == 8000


def test_server_series_count_answers_by_endpoint_and_code():
    m = ServerMetrics(endpoints=("upload", "retrieve"))
    text = m.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["modelgen_server_http_requests"].type == "counter"
    assert families["modelgen_server_http_request_duration_seconds"].type == "histogram"
    assert sample(text, "modelgen_server_http_request_duration_seconds_count", endpoint="retrieve") == 0
    m.answered("upload", 200, 0.002)
    m.answered("upload", 200, 0.004)
    m.answered("retrieve", 404, 0.001)
    m.answered('we"ird\\path\n', 400, 0.001)  # label values are escaped and read back whole
    text = m.render().decode()
    assert sample(text, "modelgen_server_http_requests_total", endpoint="upload", code="200") == 2
    assert sample(text, "modelgen_server_http_requests_total", endpoint="retrieve", code="404") == 1
    assert sample(text, "modelgen_server_http_requests_total", endpoint='we"ird\\path\n', code="400") == 1
    assert sample(text, "modelgen_server_http_request_duration_seconds_count", endpoint="upload") == 2
    assert sample(text, "modelgen_server_http_request_duration_seconds_bucket", endpoint="upload", le="0.0025") == 1


def test_every_change_appears_in_the_next_render_and_the_heartbeat_in_each():
    m = WatcherMetrics()
    m.heartbeat.set(1.0)
    assert sample(m.render().decode(), "modelgen_heartbeat_timestamp_seconds") == 1.0
    changes: list[tuple[Callable[[], None], str, dict[str, str], float]] = [
        (lambda: m.events.inc(), "modelgen_events_total", {}, 1),
        (lambda: m.errors.labels(kind="model_failed").inc(), "modelgen_errors_total", {"kind": "model_failed"}, 1),
        (lambda: m.queue_depth.set(4), "modelgen_queue_depth", {}, 4),
        (lambda: m.queue_depth.set(0), "modelgen_queue_depth", {}, 0),
        (lambda: m.model_run(0.02), "modelgen_model_seconds_count", {}, 1),
    ]
    for i, (change, name, labels, value) in enumerate(changes):
        m.render()
        change()
        m.heartbeat.set(2.0 + i)
        text = m.render().decode()
        assert sample(text, name, **labels) == value, name
        assert sample(text, "modelgen_heartbeat_timestamp_seconds") == 2.0 + i
    assert m.render() == m.render()  # nothing changed: the same bytes


def test_the_watchers_files_merge_into_one_exposition_with_a_watcher_label():
    from modelgen_watcher.server.metrics import label_watchers

    texts = []
    for wid, ok in (("w1", 2), ("w2", 5)):
        m = WatcherMetrics(shared=True)
        for _ in range(ok):
            m.request_done(Outcome.ok, 0.1)
        texts.append((wid, m.render().decode()))
    texts.append(("torn", "# TYPE modelgen_requests_total counter\nmodelgen_requests_total{outcome=\"ok\" 1\n"))
    text = label_watchers(texts).decode()
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))  # one family per name, every watcher's samples in it
    assert sample(text, "modelgen_requests_total", outcome="ok", watcher="w1") == 2
    assert sample(text, "modelgen_requests_total", outcome="ok", watcher="w2") == 5
    assert sample(text, "modelgen_claims_total", result="won", watcher="w2") == 0
    assert not any(dict(labels).get("watcher") == "torn" for _, labels in samples(text))  # left out, not fatal


def test_the_lone_watcher_has_no_claims_series():
    assert "modelgen_claims_total" not in WatcherMetrics().render().decode()
    assert "modelgen_claims_total" in WatcherMetrics(shared=True).render().decode()

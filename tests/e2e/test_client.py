"""The client library against a real watcher: its own result only, errors as one exception type."""

from __future__ import annotations

import json
import os

import pytest

from modelgen_watcher.server.client import Client, InvalidRoute, ModelError, WaitTimeout
from tests.helpers import encode, fake_model_cmd, route, sha


def test_submit_and_wait(daemon_factory, watch_dir):
    daemon_factory()
    client = Client(watch_dir)
    try:
        sub = client.submit(route(["", "turn-left"]))
        assert sub.key and sub.input_sha256 == sha((watch_dir / f"gps_input_route.{sub.key}.json").read_bytes())
        result = client.wait(sub, timeout=20)
        assert result["meta"]["input_sha256"] == sub.input_sha256
        legacy = client.submit(route(["turn-left"]), key=None)
        assert client.wait(legacy, timeout=20)["totalScores"] == [0.911523]
    finally:
        client.close()


def test_wait_without_file_events_polls(daemon_factory, watch_dir):
    daemon_factory()
    client = Client(watch_dir, use_events=False)
    sub = client.submit(route([""]), key="polled")
    assert client.wait(sub, timeout=20)["meta"]["input_sha256"] == sub.input_sha256


def test_error_status_raises_model_error(daemon_factory, watch_dir):
    daemon_factory("--model-cmd", fake_model_cmd("fail"))
    client = Client(watch_dir)
    try:
        with pytest.raises(ModelError) as info:
            client.wait(client.submit(route([""])), timeout=20)
        assert info.value.kind == "model_failed"
        assert "blew up on purpose" in info.value.message
        assert info.value.detail is not None and "Traceback" in info.value.detail
    finally:
        client.close()


def test_a_result_for_other_bytes_is_never_returned(watch_dir):
    """No watcher runs: a result and status for an older input must not satisfy the wait."""
    client = Client(watch_dir, use_events=False)
    old = encode(route([""]))
    (watch_dir / "gps_scored_route.k.json").write_text(json.dumps({
        "routes": [[{"score": 0.9, "lat": 1.0, "lng": 2.0}]], "totalScores": [0.9],
        "meta": {"input_sha256": sha(old), "model": "m", "duration_ms": 1, "scored_at": "2026-01-01T00:00:00Z"}}))
    (watch_dir / "gps_scored_route.k.status.json").write_text(json.dumps({
        "state": "ok", "key": "k", "input_sha256": sha(old), "started_at": "2026-01-01T00:00:00Z"}))
    sub = client.submit(route(["turn-left"]), key="k")
    with pytest.raises(WaitTimeout):
        client.wait(sub, timeout=0.6)
    # the status even names the new hash, but the result still claims the old one
    (watch_dir / "gps_scored_route.k.status.json").write_text(json.dumps({
        "state": "ok", "key": "k", "input_sha256": sub.input_sha256, "started_at": "2026-01-01T00:00:00Z"}))
    assert client.poll(sub) is None


def test_invalid_routes_are_refused_before_writing(watch_dir):
    client = Client(watch_dir, max_input_bytes=500, use_events=False)
    with pytest.raises(InvalidRoute, match="not a route"):
        client.submit({"routes": [{"legs": []}]})
    with pytest.raises(InvalidRoute, match="not valid JSON"):
        client.submit(b"{nope")
    with pytest.raises(InvalidRoute) as info:
        client.submit(route([""] * 50))
    assert info.value.too_large
    with pytest.raises(ValueError, match="invalid key"):
        client.submit(route([""]), key="../escape")
    assert not [p for p in watch_dir.iterdir() if not p.name.startswith(".")]


def test_a_retry_of_the_same_bytes_ignores_an_earlier_transient_error(daemon_factory, watch_dir):
    """A timeout left by an earlier attempt must not be reported for the retry: the watcher redoes it."""
    doc = route(["turn-left"])
    raw = encode(doc)
    (watch_dir / "gps_scored_route.100001.status.json").write_text(json.dumps({
        "state": "error", "key": "100001", "input_sha256": sha(raw), "started_at": "2026-01-01T00:00:00Z",
        "error": {"kind": "model_timeout", "message": "an old timeout"}}))
    old = (watch_dir / "gps_scored_route.100001.status.json").stat().st_mtime - 60
    os.utime(watch_dir / "gps_scored_route.100001.status.json", (old, old))
    client = Client(watch_dir, use_events=False)
    sub = client.submit(doc, key="100001")
    assert client.poll(sub) is None  # not the old error
    daemon_factory()
    assert client.wait(sub, timeout=20)["meta"]["input_sha256"] == sub.input_sha256

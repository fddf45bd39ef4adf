"""A real daemon's log: every line one JSON object with ``logger``, the standard library's records included."""

from __future__ import annotations

import json

from tests.helpers import drop, route, sha, wait_final, wait_for


def test_every_line_of_a_daemons_log_is_json_with_a_logger(daemon_factory, watch_dir):
    # At debug level watchdog logs each inotify event through ``logging``: records we do not make.
    d = daemon_factory("--observer", "native", "--log-level", "debug")
    ok = drop(watch_dir, route([""]), key="good")
    bad = drop(watch_dir, b'{"routes": 1}', key="bad")
    (watch_dir / "gps_input_route.bad key.json").write_bytes(b"{}")  # an input's name with an invalid key: refused
    wait_final(watch_dir, "good", sha(ok))
    wait_final(watch_dir, "bad", sha(bad))
    wait_for(lambda: d.events("input.refused"), 10, what="the refusal's log line")
    wait_for(lambda: [e for e in d.events() if str(e.get("logger", "")).startswith("watchdog.")], 10,
             what="a record of watchdog's, through the same formatter")
    rc, _ = d.stop()
    assert rc == 0
    text = d.log_text()
    records = []
    for line in text.splitlines():
        rec = json.loads(line)  # fails on any line that is not JSON (plain text, a bare traceback)
        assert isinstance(rec, dict) and {"event", "level", "logger", "timestamp"} <= set(rec), line
        assert str(rec["timestamp"]).endswith("Z")
        records.append(rec)
    by_logger = {r["logger"] for r in records}
    assert {"modelgen_watcher.watcher.daemon", "modelgen_watcher.watcher.pipeline"} <= by_logger
    watchdog = [r for r in records if r["logger"].startswith("watchdog.")]
    assert watchdog and all(r["level"] == "debug" for r in watchdog)
    done = {r["key"]: r for r in records if r["event"] == "request.done"}
    assert done["good"]["level"] == "info" and done["good"]["input_sha256"] == sha(ok)  # the full hash
    assert done["bad"]["level"] == "warning"  # a failed request is a warning
    assert all(r["level"] == "warning" for r in records if r["event"] == "input.refused")

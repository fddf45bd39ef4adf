"""SIGTERM/SIGINT: exit 0 quickly, no model left behind, interrupted work redone at next start."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import (
    drop,
    fake_model_args,
    must_status,
    pid_alive,
    read_json,
    route,
    sha,
    status_of,
    wait_final,
    wait_for,
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_a_model_runs(daemon_factory, watch_dir, tmp_path, sig, runner):
    pidfile = tmp_path / "pids"
    d = daemon_factory(*fake_model_args("hang", "--pidfile", str(pidfile), runner=runner), "--kill-grace", "2")
    raw = drop(watch_dir, route([""]), key="long")
    wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, 20, what="model and child started")
    wait_for(lambda: (status_of(watch_dir, "long") or {}).get("state") == "running", 10, what="the running status")

    rc, seconds = d.stop(sig)
    assert rc == 0
    assert seconds < 10
    pids = [int(p) for p in pidfile.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5, what="no model process left")
    st = must_status(watch_dir, "long")
    assert st["state"] == "running" and st["input_sha256"] == sha(raw)  # left to be redone
    assert read_json(watch_dir / ".modelgen" / "health.json")["ready"] is False

    daemon_factory()  # the reference model this time
    assert wait_final(watch_dir, "long", sha(raw))["state"] == "ok"


def test_model_ignoring_sigterm_still_allows_a_prompt_exit(daemon_factory, watch_dir, tmp_path, runner):
    pidfile = tmp_path / "pids"
    d = daemon_factory(*fake_model_args("trapterm", "--pidfile", str(pidfile), runner=runner))
    drop(watch_dir, route([""]), key="stubborn")
    wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, 20, what="model started")
    rc, seconds = d.stop()
    assert rc == 0 and seconds < 10
    pids = [int(p) for p in pidfile.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5, what="no model process left")


def test_idle_daemon_stops_at_once(daemon):
    rc, seconds = daemon.stop()
    assert rc == 0 and seconds < 5


def test_after_a_clean_stop_health_says_the_watcher_stopped(daemon_factory, watch_dir):
    from tests.helpers import health_of

    d = daemon_factory()
    assert d.stop()[0] == 0
    healthy, message = health_of(watch_dir)
    assert not healthy and "the watcher stopped (SIGTERM)" in message

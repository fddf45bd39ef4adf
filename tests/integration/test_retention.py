"""Retention: idle keyed requests are removed so a long-running volume does not fill up."""

from __future__ import annotations

import json
import os
import time

from modelgen_watcher.volume.names import Layout, Names, Request
from modelgen_watcher.watcher.retention import expire
from tests.helpers import drop, input_name, result_name, route, sha, status_name, wait_final, wait_for


def test_daemon_removes_idle_keyed_requests(daemon_factory, watch_dir):
    daemon_factory("--retention", "1", "--rescan-interval", "0.5")
    raw = drop(watch_dir, route([""]), key="old")
    legacy = drop(watch_dir, route([""]))
    wait_final(watch_dir, "old", sha(raw))
    wait_final(watch_dir, None, sha(legacy))
    names = [input_name("old"), result_name("old"), status_name("old")]
    wait_for(lambda: not any((watch_dir / n).exists() for n in names), 20, what="expired request removed")
    assert (watch_dir / input_name(None)).exists()  # the legacy slot is never expired
    assert (watch_dir / result_name(None)).exists()


def test_expire_judges_a_request_by_its_newest_file(tmp_path):
    layout = Layout(tmp_path, Names())
    for key in ("stale", "fresh", "busy"):
        for name in (input_name(key), result_name(key), status_name(key)):
            (tmp_path / name).write_text("{}")
    (tmp_path / status_name("orphan")).write_text("{}")  # its input was deleted by a client
    old = time.time() - 3600
    for key in ("stale", "busy", "orphan"):
        for name in (input_name(key), result_name(key), status_name(key)):
            if (tmp_path / name).exists():
                os.utime(tmp_path / name, (old, old))
    os.utime(tmp_path / input_name("fresh"), (old, old))  # only the input is old

    removed = expire(layout, 60, busy=lambda req: req == Request("busy"))
    assert sorted(removed) == ["orphan", "stale"]
    assert not (tmp_path / input_name("stale")).exists()
    assert not (tmp_path / status_name("orphan")).exists()
    assert (tmp_path / input_name("fresh")).exists() and (tmp_path / input_name("busy")).exists()


def test_a_directory_named_like_a_request_never_stops_the_heartbeat(daemon_factory, watch_dir):
    odd = watch_dir / input_name("olddir")
    odd.mkdir()
    old = time.time() - 3600
    os.utime(odd, (old, old))
    d = daemon_factory("--retention", "1", "--rescan-interval", "0.5")
    raw = drop(watch_dir, route([""]), key="swept")
    wait_final(watch_dir, "swept", sha(raw))
    wait_for(lambda: not (watch_dir / input_name("swept")).exists(), 20, what="a retention sweep")
    first = json.loads((watch_dir / ".modelgen" / "health.json").read_text())["heartbeat_at"]
    wait_for(lambda: json.loads((watch_dir / ".modelgen" / "health.json").read_text())["heartbeat_at"] != first,
             10, what="a heartbeat after the sweep")
    assert odd.is_dir()
    assert not d.events("daemon.io_error")


def test_a_shared_watcher_gone_for_a_day_is_forgotten_and_no_live_one(tmp_path):
    from modelgen_watcher.watcher.retention import DEAD_WATCHER_AGE, forget_watchers

    layout = Layout(tmp_path, Names(), "me")
    for wid in ("me", "gone", "live", "starting"):
        (layout.watchers_dir / wid / "workspace").mkdir(parents=True)
        if wid != "starting":
            layout.watcher_health(wid).write_text("{}")
            layout.watcher_metrics(wid).write_text("")
    old = time.time() - DEAD_WATCHER_AGE - 60
    for path in (layout.watcher_health("gone"), layout.watcher_health("me"), layout.watchers_dir / "gone",
                 layout.watchers_dir / "me"):
        os.utime(path, (old, old))
    assert forget_watchers(layout, time.time()) == ["gone"]
    assert sorted(p.name for p in layout.watchers_dir.iterdir()) == [
        "live", "live.json", "live.prom", "me", "me.json", "me.prom", "starting"]

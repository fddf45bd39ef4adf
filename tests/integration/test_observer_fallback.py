"""--observer auto: when native events stop arriving (a network mount), rescans notice and polling takes over."""

from __future__ import annotations

import os
import threading
import time

from watchdog.observers.api import BaseObserver

from modelgen_watcher.settings import WatcherSettings
from modelgen_watcher.watcher.daemon import Daemon
from tests.helpers import drop, input_name, read_json, route, sha, wait_final, wait_for


def test_auto_switches_to_polling_when_events_stop_arriving(watch_dir):
    settings = WatcherSettings(watch_dir=watch_dir, observer="auto", rescan_interval=0.5, poll_interval=0.1,
                               heartbeat_interval=0.2, log_format="json")
    daemon = Daemon(settings)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: (read_json(watch_dir / ".modelgen" / "health.json") or {}).get("ready"), 20,
                 what="daemon ready")
        events = daemon.events
        assert events is not None and events.kind == "native"
        # The mount stops delivering events, as NFS does for writes made on another machine.
        native = events._observer
        assert isinstance(native, BaseObserver)
        native.unschedule_all()
        raw = drop(watch_dir, route([""]), key="remote")
        old = time.time() - 10  # written "a while ago" on the other machine
        os.utime(watch_dir / input_name("remote"), (old, old))
        assert wait_final(watch_dir, "remote", sha(raw))["state"] == "ok"  # the rescan caught it
        wait_for(lambda: events.kind == "polling", 10, what="fallback to polling")
        wait_for(lambda: (read_json(watch_dir / ".modelgen" / "health.json") or {}).get("observer") == "polling",
                 10, what="health says polling")
        fresh = drop(watch_dir, route(["turn-left"]), key="after")  # now seen by polling, not by rescans
        assert wait_final(watch_dir, "after", sha(fresh), timeout=10)["state"] == "ok"
    finally:
        daemon.request_stop()
        thread.join(15)
    assert not thread.is_alive()

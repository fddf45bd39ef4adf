"""The warm runners' overlap: the request that waits for a busy worker is not the model's.

With ``--workers 1`` the daemon serves more requests than that at once (``WarmRunner.overlap``
more): besides the one at the model, some wait for the worker. If the watcher is killed
meanwhile (by the other's model, or out of memory), a waiting request never reached the
model: that stop must not count against it, or
three stops caused by other requests give it up as ``model_failed`` without it ever
having been scored. Nor may it forget the stops it did cause: two poisonous requests
taking turns at the one worker would then be counted once and forgotten once, for ever.
"""

from __future__ import annotations

import os
import signal
import subprocess
from functools import partial
from pathlib import Path

from tests.helpers import (
    Daemon,
    drop,
    fake_model_args,
    inflight_records,
    input_name,
    route,
    sha,
    status_of,
    wait_final,
    wait_for,
)

KILLER = ("ok", "--kill-marked", "--signal", "SIGKILL", "--sleep", "1.5")


def _kill_pids(pidfile: Path) -> None:
    for pid in [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []:
        try:
            os.kill(pid, signal.SIGKILL)  # workers orphaned by a killed watcher
        except ProcessLookupError:
            pass


def _running(watch_dir: Path, key: str) -> bool:
    """``key`` is past its checks and in the runner's hands (its ``running`` status is written 0.1 s into it)."""
    return (status_of(watch_dir, key) or {}).get("state") == "running"


def _parked_in_a_slot(watch_dir: Path, name: str) -> bool:
    """``name`` is recorded in flight, waiting for a worker (``watcher/inflight.py``'s slots)."""
    return any(r.get("name") == name and r.get("waiting") for r in inflight_records(watch_dir))


def _died(proc: subprocess.Popen[bytes] | None) -> bool:
    assert proc is not None
    return proc.poll() is not None


def test_a_request_waiting_for_the_worker_when_the_watcher_is_killed_is_not_counted(watch_dir, tmp_path):
    pidfile = tmp_path / "pids"
    args = fake_model_args(*KILLER, "--pidfile", str(pidfile), runner="entry")
    try:
        d = Daemon(watch_dir, *args, log_path=tmp_path / "first.log").start()
        drop(watch_dir, {**route([""]), "kill_me": True}, key="poison")
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="the poison at the model")
        good = drop(watch_dir, route(["turn-left"]), key="good")
        wait_for(partial(_running, watch_dir, "good"), 10, what="the good request in flight, waiting for the worker")
        wait_for(partial(_parked_in_a_slot, watch_dir, input_name("good")), 10,
                 what="the good request's record parked while it waits")
        wait_for(lambda: _died(d.proc), 30, what="the watcher killed by the poison's model")
        _kill_pids(pidfile)
        os.unlink(watch_dir / input_name("poison"))  # the operator removes the poison

        second = Daemon(watch_dir, *args, log_path=tmp_path / "second.log").start()
        assert wait_final(watch_dir, "good", sha(good))["state"] == "ok"
        counted = [e.get("file") for e in second.events("request.interrupted_before")]
        assert input_name("good") not in counted, "a request that never reached the model was counted as interrupted"
        second.stop()
    finally:
        _kill_pids(pidfile)


def test_three_stops_caused_by_others_do_not_give_up_a_request_that_only_waited(watch_dir, tmp_path):
    """Each start: a fresh poison runs at once, the interrupted good request (served after the others) waits for
    the one worker, and the poison's model kills the watcher. The good request never reaches the model."""
    pidfile = tmp_path / "pids"
    args = fake_model_args(*KILLER, "--pidfile", str(pidfile), runner="entry")
    good = b""
    try:
        d = Daemon(watch_dir, *args, log_path=tmp_path / "d0.log").start()
        drop(watch_dir, {**route([""]), "kill_me": True}, key="poison0")
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="the poison at the model")
        good = drop(watch_dir, route(["turn-left"]), key="good")
        wait_for(lambda: _died(d.proc), 30, what="the watcher killed")
        for i in range(1, 3):
            _kill_pids(pidfile)
            os.unlink(watch_dir / input_name(f"poison{i - 1}"))
            drop(watch_dir, {**route([""], lat0=31 + i / 100), "kill_me": True}, key=f"poison{i}")
            d = Daemon(watch_dir, *args, log_path=tmp_path / f"d{i}.log").start(wait_ready=False)
            wait_for(partial(_died, d.proc), 30, what="the watcher killed")
        _kill_pids(pidfile)
        os.unlink(watch_dir / input_name("poison2"))
        last = Daemon(watch_dir, *args, log_path=tmp_path / "last.log").start()
        st = wait_final(watch_dir, "good", sha(good))
        assert st["state"] == "ok", st
        last.stop()
    finally:
        _kill_pids(pidfile)


def test_two_requests_that_stop_the_watcher_in_turn_are_both_given_up(watch_dir, tmp_path):
    """Two poisonous requests, one worker: at each start one is at the model and stops the watcher (SIGTERM, from
    the model), the other waits for the worker. The waiting one must keep its count: were it forgotten, each would
    be counted once in turn for ever, a crash loop in which the watcher is never given a rest."""
    pidfile = tmp_path / "pids"
    args = fake_model_args("ok", "--kill-marked", "--signal", "SIGTERM", "--sleep", "1.5", "--pidfile", str(pidfile),
                           runner="entry")
    raws = {k: drop(watch_dir, {**route([""], lat0=30 + i / 100), "kill_me": True}, key=k)
            for i, k in enumerate(("p1", "p2"))}

    def both_given_up() -> bool:
        return all((status_of(watch_dir, k) or {}).get("state") == "error" for k in raws)

    starts = 0
    try:
        while not both_given_up():
            assert starts < 10, "the two requests stopped the watcher in turn, never given up"
            starts += 1
            d = Daemon(watch_dir, *args, log_path=tmp_path / f"d{starts}.log").start(wait_ready=False)
            proc = d.proc
            assert proc is not None

            def stopped_or_given_up(p: subprocess.Popen[bytes] = proc) -> bool:
                return p.poll() is not None or both_given_up()

            wait_for(stopped_or_given_up, 60, what="a stop, or both given up")
            if proc.poll() is None:
                d.stop()
        for k, raw in raws.items():
            st = wait_final(watch_dir, k, sha(raw))
            assert "stopped 3 times" in st["error"]["message"], st
    finally:
        _kill_pids(pidfile)


def test_a_stop_with_one_request_at_a_stubborn_model_and_one_waiting_exits_in_time(daemon_factory, watch_dir, tmp_path):
    """SIGTERM: the model ignores TERM (KILL after the grace), the waiting request is woken by the stop; exit 0
    well within 10 s, both left ``running`` for their bytes (redone at the next start), neither published."""
    pidfile = tmp_path / "pids"
    d = daemon_factory(*fake_model_args("trapterm", "--pidfile", str(pidfile), runner="entry"), "--kill-grace", "2")
    first = drop(watch_dir, route([""]), key="first")
    wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, 20, what="the model at work")
    second = drop(watch_dir, route(["turn-left"]), key="second")
    wait_for(partial(_running, watch_dir, "second"), 10, what="the second request waiting for the worker")
    rc, seconds = d.stop(signal.SIGTERM)
    assert rc == 0 and seconds < 8, (rc, seconds)
    for key, raw in (("first", first), ("second", second)):
        st = status_of(watch_dir, key)
        assert st is not None and st["state"] == "running" and st["input_sha256"] == sha(raw), st
    _kill_pids(pidfile)
    again = daemon_factory(*fake_model_args("ok", runner="entry"))
    for key, raw in (("first", first), ("second", second)):
        assert wait_final(watch_dir, key, sha(raw))["state"] == "ok"
    counted = {e.get("file"): e.get("interruptions") for e in again.events("request.interrupted_before")}
    assert counted == {input_name("first"): 1}, counted

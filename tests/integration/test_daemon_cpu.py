"""``--daemon-cpu``: with warm workers the daemon's threads share one CPU, and the model keeps every CPU.

Checked where a user would look: the CPUs each thread of the daemon may run on
(``/proc``), and those the model's own run reports.
"""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modelgen_watcher.settings import WatcherSettings
from modelgen_watcher.watcher.affinity import better_cpu, read_cpu_times
from modelgen_watcher.watcher.daemon import Daemon
from tests.helpers import Daemon as RunningDaemon
from tests.helpers import drop, each_thread, fake_model_args, route, sha, wait_final, wait_for

ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []

pytestmark = pytest.mark.skipif(len(ALLOWED) < 2, reason="one CPU allowed here: there is nothing to pin")


def _thread_cpus(pid: int) -> set[tuple[int, ...]]:
    """The distinct CPU sets of the process's threads."""
    return set(each_thread(pid, lambda tid: tuple(sorted(os.sched_getaffinity(tid)))))


ORDINARY = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
"""The policy the daemons started here inherit (``SCHED_OTHER``, unless these tests run under ``chrt``)."""
TAKING_TURNS = getattr(os, "SCHED_BATCH", None) if getattr(os, "SCHED_OTHER", None) == ORDINARY else ORDINARY
"""A pinned daemon's threads' policy: ``SCHED_BATCH`` from the ordinary one, any other left as it is."""


def _thread_policies(pid: int) -> set[int]:
    """The distinct scheduling policies of the process's threads."""
    return set(each_thread(pid, os.sched_getscheduler))


def _runs(cpufile: Path) -> list[tuple[list[int], int]]:
    """Each model run's CPUs and scheduling policy, as the fake model wrote them."""
    runs = []
    for line in cpufile.read_text().splitlines():
        cpus, policy = line.split()
        runs.append(([int(c) for c in cpus.split(",")], int(policy)))
    return runs


def _on_the_cpu_it_logged(d: RunningDaemon) -> tuple[int] | None:
    """The one CPU every thread of the daemon runs on (as a 1-tuple: CPU 0 is falsy), when it is the one the daemon
    last logged (``daemon.cpu``, ``daemon.cpu_moved``); None while it moves, or has not logged the move yet."""
    assert d.proc is not None
    said = (d.events("daemon.cpu_moved") or d.events("daemon.cpu"))[-1]["cpu"]
    return (said,) if _thread_cpus(d.proc.pid) == {(said,)} else None


def _score_one(watch_dir: Path, key: str) -> None:
    raw = drop(watch_dir, route(["turn-left"]), key=key)
    st = wait_final(watch_dir, key, sha(raw))
    assert st["state"] == "ok", st["error"]


@pytest.mark.parametrize("runner", ["entry", "fork"])
def test_warm_workers_the_daemon_on_one_cpu_the_model_on_all(daemon_factory, watch_dir, tmp_path, runner):
    cpufile = tmp_path / "cpus"
    d = daemon_factory(*fake_model_args("ok", "--cpufile", str(cpufile), runner=runner), "--workers", "2")
    _score_one(watch_dir, "a")
    assert d.proc is not None
    (pinned,) = _thread_cpus(d.proc.pid)
    assert len(pinned) == 1 and pinned[0] in ALLOWED, f"the daemon's threads may run on {pinned}"
    (event,) = d.events("daemon.cpu")
    assert event["model_cpus"] == ALLOWED
    assert (d.events("daemon.cpu_moved") or [event])[-1]["cpu"] == pinned[0]  # moved only if another crowded it
    assert _thread_policies(d.proc.pid) == {TAKING_TURNS}  # taking turns on it
    assert _runs(cpufile) == [(ALLOWED, ORDINARY)]  # the model's run, in a warm worker or a forked child
    assert [e["cpus"] for e in d.events("worker.ready")] == [ALLOWED, ALLOWED]


def test_a_daemon_whose_cpu_another_process_takes_moves_to_a_free_one(daemon_factory, watch_dir):
    """The kernel cannot move a pinned daemon off a CPU that something else keeps busy: the daemon moves itself,
    within a few heartbeats, and still scores."""
    d = daemon_factory(*fake_model_args("ok", runner="entry"), env={"MODELGEN_HEARTBEAT_INTERVAL": "0.5"})
    assert d.proc is not None
    pid = d.proc.pid
    (crowded,) = wait_for(lambda: next(iter(_thread_cpus(pid))) if len(_thread_cpus(pid)) == 1 else None, 10,
                          what="the daemon's threads on one CPU")
    moves_before = len(d.events("daemon.cpu_moved"))
    readings = [read_cpu_times(pid)]

    def moved() -> list[dict[str, object]] | None:
        readings.append(read_cpu_times(pid))
        return d.events("daemon.cpu_moved")[moves_before:] or None

    spinner: subprocess.Popen[bytes] | None = None
    try:  # the spinner ends by itself, should this test be killed before its ``finally``
        spinner = subprocess.Popen([sys.executable, "-c", "import os, time\n"
                                    f"os.sched_setaffinity(0, {{{crowded}}})\nend = time.monotonic() + 60\n"
                                    "while time.monotonic() < end: pass"])
        try:
            (move, *_) = wait_for(moved, 30, interval=0.5, what="the daemon to move")
        except AssertionError:
            windows = [better_cpu(a, b, crowded, frozenset(ALLOWED)) for a, b in itertools.pairwise(readings)
                       if a is not None and b is not None]
            if not any(x is not None and y is not None for x, y in itertools.pairwise(windows)):
                pytest.skip("no two windows in a row had a CPU less busy enough to move to: staying was right")
            raise
        assert move["was"] == crowded and move["cpu"] != crowded and move["cpu"] in ALLOWED
        assert _thread_cpus(pid) == {(move["cpu"],)}  # every thread of the daemon
        assert _thread_policies(pid) == {TAKING_TURNS}
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    _score_one(watch_dir, "after")


@pytest.mark.parametrize("args", [["--daemon-cpu", "off"], []], ids=["off", "process-per-request"])
def test_otherwise_the_daemon_keeps_every_cpu(daemon_factory, watch_dir, tmp_path, args):
    """``off``; and a process per request, which would inherit the daemon's one CPU."""
    cpufile = tmp_path / "cpus"
    runner = "entry" if args else "subprocess"
    d = daemon_factory(*fake_model_args("ok", "--cpufile", str(cpufile), runner=runner), *args)
    _score_one(watch_dir, "a")
    assert d.proc is not None
    assert _thread_cpus(d.proc.pid) == {tuple(ALLOWED)}
    assert not d.events("daemon.cpu")
    assert _thread_policies(d.proc.pid) == {ORDINARY}
    assert _runs(cpufile) == [(ALLOWED, ORDINARY)]


def test_shared_watchers_on_one_machine_each_run_on_one_cpu(daemon_factory, watch_dir, tmp_path):
    """Two shared watchers on one directory: each runs its threads on one CPU, taking turns there, and the model
    keeps every CPU (each request scored once, by either watcher)."""
    cpufile = tmp_path / "cpus"
    watchers = [daemon_factory(*fake_model_args("ok", "--cpufile", str(cpufile), runner="entry"),
                               "--shared", "--watcher-id", f"w{n}", "--poll-interval", "0.2") for n in (1, 2)]
    for key in ("a", "b", "c"):
        _score_one(watch_dir, key)
    for d in watchers:
        assert d.proc is not None
        (cpu,) = wait_for(functools.partial(_on_the_cpu_it_logged, d), 10, what="the watcher's threads on its CPU")
        assert cpu in ALLOWED
        assert d.events("daemon.cpu")[0]["model_cpus"] == ALLOWED
        assert _thread_policies(d.proc.pid) == {TAKING_TURNS}
    assert _runs(cpufile) == [(ALLOWED, ORDINARY)] * 3


def test_a_daemon_run_in_a_thread_leaves_its_programs_cpus(watch_dir):
    """``Daemon.run`` in a thread of another program (an embedder, a test): that program's threads are not pinned."""
    settings = WatcherSettings(watch_dir=watch_dir, log_format="json", runner="entry")
    daemon = Daemon(settings)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        _score_one(watch_dir, "a")
        assert _thread_cpus(os.getpid()) == {tuple(ALLOWED)}
        assert _thread_policies(os.getpid()) == {ORDINARY}
    finally:
        daemon.request_stop()
        thread.join(15)
    assert not thread.is_alive()

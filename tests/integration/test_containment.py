"""The real daemon keeps model processes contained: nothing a model starts outlives its request, even a kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    drop,
    fake_model_args,
    fake_model_cmd,
    pid_alive,
    route,
    sha,
    status_of,
    wait_final,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("setsid") is None, reason="setsid is not installed"),
    pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts fds and threads in Linux's /proc"),
]

ESCAPED_SLEEP = b"time.sleep(60)"
"""In the command line of the escape mode's descendant; teardown kills only fake models and such sleepers."""


def pids_in(path: Path) -> list[int]:
    """The pids written so far (complete lines only)."""
    return [int(line) for line in path.read_text().split("\n")[:-1]] if path.exists() else []


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    """Where the fake model writes its pid and its descendants'; those still sleeping are killed at teardown."""
    path = tmp_path / "pids"
    yield path
    for pid in pids_in(path):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
            if ESCAPED_SLEEP not in cmdline and b"fake_model.py" not in cmdline:
                continue
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def usage(pid: int) -> tuple[int, int]:
    """Open fds and threads of a process."""
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def healthy(watch_dir: Path) -> bool:
    out = subprocess.run([sys.executable, "-m", "modelgen_watcher", "health", "--watch-dir", str(watch_dir)],
                         capture_output=True, text=True, timeout=30)
    return out.returncode == 0


PER_REQUEST = pytest.mark.parametrize("runner", ["subprocess", "fork"])
"""The runners whose model is a process per request (a fork server's child is one); a warm ``entry`` worker's
descendants live as long as the worker (tests/integration/test_warm_runner.py)."""


@PER_REQUEST
def test_escaped_descendants_cost_no_fd_or_thread_under_a_64_fd_limit(daemon_factory, watch_dir, pidfile, runner):
    """40 models each leave a setsid child holding their pipes; with 64 fds the old daemon failed from the 27th."""
    d: Daemon = daemon_factory(*fake_model_args("escape", "--pidfile", str(pidfile), runner=runner), fd_limit=64)
    assert d.proc is not None
    counts = []
    for i in range(40):
        raw = drop(watch_dir, route([""] * (1 + i % 5), lat0=30.0 + i / 1000), key=f"e{i}")
        st = wait_final(watch_dir, f"e{i}", sha(raw))
        assert st["state"] == "ok", st
        d.wait_runs(f"e{i}")  # logged after the status: the request is wholly done
        counts.append(usage(d.proc.pid))
    (fds1, threads1), (fds40, threads40) = counts[0], counts[-1]
    print(f"daemon after request 1: {fds1} fds, {threads1} threads; after request 40: {fds40} fds, {threads40} threads")
    assert fds40 <= fds1 + 3 and threads40 <= threads1 + 2, counts
    escaped = pids_in(pidfile)[1::2]  # the model's pid, then its descendant's, per request
    assert len(escaped) == 40
    wait_for(lambda: not any(pid_alive(p) for p in escaped), 15, what="every escaped descendant killed")
    if runner == "subprocess":  # a fork server, their subreaper, ends them itself after each request
        assert d.events("model.escaped")
    assert healthy(watch_dir)
    assert d.proc.poll() is None


@PER_REQUEST
def test_models_left_by_a_killed_daemon_are_stopped_at_the_next_start(daemon_factory, watch_dir, pidfile, runner):
    slow = fake_model_args("escape", "--linger", "60", "--pidfile", str(pidfile), runner=runner)
    first: Daemon = daemon_factory(*slow, "--model-timeout", "120")
    raw = drop(watch_dir, route([""]), key="k9")

    def both_started() -> list[int] | None:
        pids = pids_in(pidfile)
        return pids if len(pids) >= 2 else None

    model, escaped = wait_for(both_started, 20, what="the model and its escaped descendant")
    wait_for(lambda: (status_of(watch_dir, "k9") or {}).get("state") == "running", 10, what="the running status")
    first.stop(signal.SIGKILL)
    assert pid_alive(model) and pid_alive(escaped)  # in their own sessions, they outlive the daemon

    second: Daemon = daemon_factory("--model-cmd", fake_model_cmd("ok"))
    wait_for(lambda: not pid_alive(model) and not pid_alive(escaped), 10, what="the old model and its descendant gone")
    assert wait_final(watch_dir, "k9", sha(raw))["state"] == "ok"  # the interrupted request is redone
    (stopped,) = second.events("runner.leftovers_stopped")
    # the fork server's group is the one recorded; its child, in a group of its own, is found by its run id
    assert stopped["groups"] == 1 and stopped["escaped"] == (2 if runner == "fork" else 1)
    wait_for(lambda: not any((watch_dir / ".modelgen" / "run").iterdir()), 5, what="no run records left")

"""Warm workers (``--runner entry``): what only a long-lived model process can do wrong, and what it must do right.

The shared behaviours (failures, hangs, chatty output, SIGTERM during a run, the
reference model's requests) run through every runner in the other integration
tests, by the ``runner`` fixture.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from modelgen_watcher.modelside import REFERENCE
from tests.helpers import (
    MODELS,
    PYTHON37,
    drop,
    each_thread,
    fake_model_args,
    fake_model_cmd,
    pid_alive,
    python37_only,
    route,
    score_route,
    sha,
    status_of,
    wait_final,
    wait_for,
)

FAKE_ENTRY = f"{MODELS / 'fake_model.py'}:create"


def _pids(pidfile: Path) -> list[int]:
    return [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []


def test_a_factory_that_raises_is_a_clear_startup_error(daemon_factory, tmp_path):
    bad = tmp_path / "broken_model.py"
    bad.write_text("def create(workspace, argv):\n    raise RuntimeError('no weights in ' + workspace)\n")
    d = daemon_factory("--runner", "entry", "--model-entry", f"{bad}:create", wait_ready=False)
    assert d.proc is not None and d.proc.wait(60) == 1
    log = d.log_text()
    assert "the model cannot load: RuntimeError: no weights in" in log
    assert "Traceback" in log and "broken_model.py" in log


def _children(pid: int) -> list[int]:
    """The processes ``pid``'s threads started: the daemon's warm worker or fork server."""
    per_thread = each_thread(pid, lambda tid: Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    return [int(child) for children in per_thread for child in children]


@pytest.mark.parametrize("runner", ["entry", "fork"])
def test_a_worker_killed_between_requests_is_replaced(daemon_factory, watch_dir, runner):
    """A warm worker or a fork server killed while idle (the OOM killer, say): the next request is served by a
    fresh one."""
    d = daemon_factory(*fake_model_args("ok", runner=runner))
    first = drop(watch_dir, route([""]), key="a")
    assert wait_final(watch_dir, "a", sha(first))["state"] == "ok"
    assert d.proc is not None
    (worker,) = _children(d.proc.pid)
    os.kill(worker, signal.SIGKILL)
    # Between requests means dead before the next arrives: a kill that lands while the daemon already sends the
    # next request is a death during that request (the test below), which a request a few ms later can meet.
    wait_for(lambda: not pid_alive(worker), 10, what="the killed worker gone")
    second = drop(watch_dir, route(["turn-left"]), key="b")
    st = wait_final(watch_dir, "b", sha(second))
    assert st["state"] == "ok", st["error"]
    (fresh,) = _children(d.proc.pid)
    assert fresh != worker


def test_a_hung_request_kills_its_worker_and_a_fresh_one_serves_the_next(daemon_factory, watch_dir, tmp_path):
    pidfile = tmp_path / "pids"
    daemon_factory(*fake_model_args("ok", "--hang-marked", "--pidfile", str(pidfile), runner="entry"),
                   "--model-timeout", "1", "--kill-grace", "1")
    hung = drop(watch_dir, {**route([""]), "hang_me": True}, key="hung")
    assert wait_final(watch_dir, "hung", sha(hung))["error"]["kind"] == "model_timeout"
    after = drop(watch_dir, route([""]), key="after")
    assert wait_final(watch_dir, "after", sha(after))["state"] == "ok"
    pids = _pids(pidfile)
    assert len(set(pids)) == 2, pids  # the hung worker, then a fresh one


def test_workers_are_recycled_after_max_requests(daemon_factory, watch_dir, tmp_path):
    pidfile = tmp_path / "pids"
    d = daemon_factory(*fake_model_args("ok", "--pidfile", str(pidfile), runner="entry"), "--worker-max-requests", "2")
    for i in range(5):
        raw = drop(watch_dir, route([""], lat0=30 + i / 100), key=f"r{i}")
        assert wait_final(watch_dir, f"r{i}", sha(raw))["state"] == "ok"
    pids = _pids(pidfile)
    assert len(pids) == 5 and len(set(pids)) == 3, pids  # 2 + 2 + 1 requests per worker
    assert [e["reason"] for e in d.events("worker.replaced")][:2] == ["served 2 requests"] * 2


def test_a_leaking_worker_is_recycled_when_its_memory_passes_the_limit(daemon_factory, watch_dir, tmp_path):
    pidfile = tmp_path / "pids"
    d = daemon_factory(*fake_model_args("leak", "--pidfile", str(pidfile), runner="entry"),
                       "--worker-max-rss", str(100 * 1024 * 1024))
    for i in range(4):
        raw = drop(watch_dir, route([""], lat0=30 + i / 100), key=f"l{i}")
        assert wait_final(watch_dir, f"l{i}", sha(raw))["state"] == "ok"
    assert len(set(_pids(pidfile))) >= 2
    assert any("resident memory" in e["reason"] for e in d.events("worker.replaced"))


def _score(route_file: Path, *args: str) -> dict[str, Any]:
    doc = score_route(route_file, *args)
    doc.pop("meta")
    return doc


def test_the_reference_model_scores_identically_in_every_runner(tmp_path):
    doc = {**route(["", "turn-left", "straight", "", "roundabout-right"], routes=3), "rider": {"daylight": False}}
    route_file = tmp_path / "route.json"
    route_file.write_text(json.dumps(doc))
    by_process = _score(route_file, "--runner", "subprocess")
    assert _score(route_file, "--runner", "entry") == by_process
    assert _score(route_file, "--runner", "fork") == by_process


@python37_only
def test_the_model_side_runs_on_python_3_7(daemon_factory, watch_dir):
    """Upstream's model is a Python 3.7 program: the worker loop and the reference entry run there too."""
    assert PYTHON37 is not None
    d = daemon_factory("--runner", "entry", "--model-entry", f"{REFERENCE}:create", "--model-cmd", PYTHON37)
    raw = drop(watch_dir, route(["", "turn-left"]), key="old")
    st = wait_final(watch_dir, "old", sha(raw))
    assert st["state"] == "ok", st["error"]
    ready = wait_for(lambda: d.events("worker.ready"), 10)[0]
    assert ready["python"].startswith("3.7.")
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 1:  # the daemon runs on one of them
        assert ready["cpus"] == sorted(os.sched_getaffinity(0))


def _entry_file(tmp_path: Path, body: str) -> str:
    """An entry module wrapping the fake model's (``body`` runs in the factory, ``_score`` per request)."""
    path = tmp_path / "wrapped_model.py"
    path.write_text(f"import os, sys, time\nsys.path.insert(0, {str(MODELS)!r})\nimport fake_model\n\n{body}\n")
    return f"{path}:create"


def test_a_worker_still_loading_is_not_taken_for_a_leftover(daemon_factory, watch_dir, tmp_path):
    """The heartbeat's sweep spares a replacement that is loading the model (before: killed within a heartbeat)."""
    entry = _entry_file(tmp_path, "def create(ws, argv):\n    time.sleep(1.5)\n    return fake_model.create(ws, argv)")
    d = daemon_factory("--runner", "entry", "--model-entry", entry, "--model-cmd", fake_model_cmd("ok"),
                       "--worker-max-requests", "1", env={"MODELGEN_HEARTBEAT_INTERVAL": "0.2"})
    for i in range(3):
        raw = drop(watch_dir, route([""], lat0=30 + i / 100), key=f"s{i}")
        assert wait_final(watch_dir, f"s{i}", sha(raw), timeout=60)["state"] == "ok"
    assert not d.events("model.escaped")


def test_a_retired_worker_may_take_its_time_to_exit(daemon_factory, watch_dir, tmp_path):
    """A worker retired after its share runs its exit handlers to the end, and is not reported as a stray
    (before: the heartbeat's sweep killed it mid-exit, logging ``model.escaped``)."""
    saved = tmp_path / "saved"
    entry = _entry_file(tmp_path, "import atexit\n"
                        "def create(ws, argv):\n"
                        f"    atexit.register(lambda: (time.sleep(1.0), open({str(saved)!r}, 'a').write('x')))\n"
                        "    return fake_model.create(ws, argv)")
    d = daemon_factory("--runner", "entry", "--model-entry", entry, "--model-cmd", fake_model_cmd("ok"),
                       "--worker-max-requests", "1", env={"MODELGEN_HEARTBEAT_INTERVAL": "0.1"})
    for i in range(2):
        raw = drop(watch_dir, route([""], lat0=31 + i / 100), key=f"r{i}")
        assert wait_final(watch_dir, f"r{i}", sha(raw), timeout=60)["state"] == "ok"
    assert wait_for(lambda: saved.exists() and saved.read_text() == "xx", 30)
    assert not d.events("model.escaped")


def test_a_stop_waits_for_a_retirement_under_way(daemon_factory, watch_dir, tmp_path):
    """SIGTERM just after a worker was retired, while it runs a 1-s exit handler: the daemon exits after it has
    ended (before: the daemon exited at once and left the retired worker running)."""
    entry = _entry_file(tmp_path, "import atexit\n"
                        "def create(ws, argv):\n"
                        "    atexit.register(time.sleep, 1.0)\n"
                        "    return fake_model.create(ws, argv)")
    d = daemon_factory("--runner", "entry", "--model-entry", entry, "--model-cmd", fake_model_cmd("ok"),
                       "--worker-max-requests", "1")
    raw = drop(watch_dir, route([""]), key="one")
    assert wait_final(watch_dir, "one", sha(raw))["state"] == "ok"
    retired = wait_for(lambda: d.events("worker.replaced"), 10, what="the worker retired")[0]["pid"]
    rc, _ = d.stop()
    assert rc == 0
    assert not pid_alive(retired)


def test_a_worker_that_exits_during_a_request_fails_it_plainly(daemon_factory, watch_dir, tmp_path):
    """``os._exit(0)`` in a ported script: the request fails saying so, and a fresh worker serves the next one."""
    entry = _entry_file(tmp_path, "def create(ws, argv):\n"
                        "    def score(job):\n"
                        "        if 'exit_me' in open(job.input).read():\n"
                        "            print('leaving now', file=sys.stderr, flush=True)\n"
                        "            os._exit(0)\n"
                        "        fake_model.create(ws, argv)(job)\n"
                        "    return score")
    daemon_factory("--runner", "entry", "--model-entry", entry, "--model-cmd", fake_model_cmd("ok"))
    gone = drop(watch_dir, {**route([""]), "exit_me": True}, key="gone")
    st = wait_final(watch_dir, "gone", sha(gone))
    assert st["error"]["kind"] == "model_failed"
    assert "ended during the request (exit code 0)" in st["error"]["message"]
    nxt = drop(watch_dir, route([""]), key="next")
    assert wait_final(watch_dir, "next", sha(nxt))["state"] == "ok"


def test_a_request_waiting_for_the_busy_worker_is_not_timed_out_by_the_wait(daemon_factory, watch_dir, tmp_path):
    """Requests beyond ``--workers`` are read and checked while the model scores another (the overlap): the
    model's timeout starts when the worker takes the request, so a queue behind a slow run (the last of three
    waits two runs, longer than the timeout) is no timeout."""
    pidfile = tmp_path / "pids"
    d = daemon_factory(*fake_model_args("ok", "--sleep", "1.2", "--pidfile", str(pidfile), runner="entry"),
                       "--model-timeout", "2")
    raws = {f"q{i}": drop(watch_dir, route([""], lat0=30 + i / 100), key=f"q{i}") for i in range(3)}
    for key, raw in raws.items():
        st = wait_final(watch_dir, key, sha(raw), timeout=30)
        assert st["state"] == "ok", st["error"]
    assert len(set(_pids(pidfile))) == 1  # one worker served them in turn
    assert not d.events("worker.replaced")


_STOPS_AFTER_REPLY = (  # a worker that stops reading its requests after one that asks for it
    "def create(ws, argv):\n"
    "    import signal, threading\n"
    "    score = fake_model.create(ws, argv)\n"
    "    def run(job):\n"
    "        score(job)\n"
    "        if 'stop_reading' in open(job.input).read():  # stopped (as if hung) once its reply is out\n"
    "            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGSTOP)).start()\n"
    "    return run"
)


def _stopped(pid: int) -> bool:
    """The process is stopped (state ``T``)."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


def _big_route(size: int = 300_000) -> dict[str, Any]:
    """A route with more bytes than a pipe holds (64 KiB), which the worker must read for the send to end."""
    return {**route([""]), "padding": "x" * size}


def _a_worker_that_stopped_reading(daemon_factory, watch_dir: Path, tmp_path: Path, *, model_timeout: float):
    """A daemon whose one warm worker served a request and then stopped (SIGSTOP, as if hung); it and the pid."""
    pidfile = tmp_path / "pids"
    d = daemon_factory("--runner", "entry", "--model-entry", _entry_file(tmp_path, _STOPS_AFTER_REPLY),
                       "--model-cmd", fake_model_cmd("ok", "--pidfile", str(pidfile)),
                       "--model-timeout", str(model_timeout))
    first = drop(watch_dir, {**route([""]), "stop_reading": True}, key="first")
    assert wait_final(watch_dir, "first", sha(first))["state"] == "ok"
    (worker,) = _pids(pidfile)
    wait_for(lambda: _stopped(worker), 10, what="the worker stopped")
    return d, worker


def test_a_big_input_for_a_worker_that_stopped_reading_times_out(daemon_factory, watch_dir, tmp_path):
    """The send of an input larger than the pipe's buffer waits for the worker to read it: bounded by the model's
    timeout, after which the worker's group is killed and a fresh worker serves the next request."""
    d, worker = _a_worker_that_stopped_reading(daemon_factory, watch_dir, tmp_path, model_timeout=2)
    big = drop(watch_dir, _big_route(), key="big")
    st = wait_final(watch_dir, "big", sha(big), timeout=30)
    assert st["error"]["kind"] == "model_timeout"
    wait_for(lambda: not pid_alive(worker), 15, what="the stopped worker killed")
    nxt = drop(watch_dir, _big_route(), key="next")
    assert wait_final(watch_dir, "next", sha(nxt), timeout=30)["state"] == "ok"
    assert d.events("worker.replaced")


def test_sigterm_while_a_big_input_waits_for_a_worker_that_stopped_reading(daemon_factory, watch_dir, tmp_path):
    d, worker = _a_worker_that_stopped_reading(daemon_factory, watch_dir, tmp_path, model_timeout=300)
    drop(watch_dir, _big_route(), key="big")
    wait_for(lambda: (status_of(watch_dir, "big") or {}).get("state") == "running", 10,
             what="the big request being sent to the stopped worker")
    code, took = d.stop()
    assert code == 0 and took < 10
    assert not pid_alive(worker)


_DIES_READING = (  # a worker that dies as it reads a request for key "die", while a process it forked holds its pipes
    "def create(ws, argv):\n"
    "    import json, signal\n"
    "    if os.fork() == 0:  # a helper forked at load time (a fork-based pool, say): it inherits every fd\n"
    "        time.sleep(600)\n"
    "        os._exit(0)\n"
    "    loads = json.loads\n"
    "    def dying_loads(text, *a, **k):\n"
    "        msg = loads(text, *a, **k)\n"
    "        if isinstance(msg, dict) and msg.get('key') == 'die':\n"
    "            os.kill(os.getpid(), signal.SIGKILL)\n"
    "        return msg\n"
    "    json.loads = dying_loads\n"
    "    return fake_model.create(ws, argv)"
)


def test_a_worker_that_dies_while_its_big_input_is_sent_fails_the_request_at_once(daemon_factory, watch_dir, tmp_path):
    """The send notices the death (the pipe stays open, held by the worker's helper): ``model_failed`` saying how
    the worker ended, not a wait for ``--model-timeout``; the helper goes with the worker's group."""
    d = daemon_factory("--runner", "entry", "--model-entry", _entry_file(tmp_path, _DIES_READING),
                       "--model-cmd", fake_model_cmd("ok"), "--model-timeout", "300")
    big = drop(watch_dir, _big_route(), key="die")
    st = wait_final(watch_dir, "die", sha(big), timeout=60)
    assert st["error"]["kind"] == "model_failed"
    assert "ended during the request (killed by SIGKILL)" in st["error"]["message"], st["error"]["message"]
    nxt = drop(watch_dir, route([""]), key="next")
    assert wait_final(watch_dir, "next", sha(nxt), timeout=60)["state"] == "ok"
    assert d.events("worker.replaced")


def test_loading_a_worker_again_is_not_the_models_time(daemon_factory, watch_dir, tmp_path):
    """A worker that died while idle is loaded again for the next request, in that request's thread: its model's
    timeout starts once the fresh worker takes the request, as for any request."""
    pidfile = tmp_path / "pids"
    entry = _entry_file(tmp_path, "def create(ws, argv):\n    time.sleep(2)\n    return fake_model.create(ws, argv)")
    daemon_factory("--runner", "entry", "--model-entry", entry,
                   "--model-cmd", fake_model_cmd("ok", "--pidfile", str(pidfile)), "--model-timeout", "1")
    first = drop(watch_dir, route([""]), key="a")
    assert wait_final(watch_dir, "a", sha(first), timeout=30)["state"] == "ok"
    (worker,) = _pids(pidfile)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not pid_alive(worker), 10, what="the killed worker gone")
    second = drop(watch_dir, route(["turn-left"]), key="b")
    st = wait_final(watch_dir, "b", sha(second), timeout=30)
    assert st["state"] == "ok", st["error"]


def test_a_model_that_loads_past_the_start_timeout_is_a_clear_startup_error(daemon_factory, tmp_path):
    """``--worker-start-timeout`` bounds the start: the daemon exits 1 saying why, the loading worker killed."""
    pidfile = tmp_path / "loading"
    entry = _entry_file(tmp_path, "def create(ws, argv):\n"
                        f"    open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
                        "    time.sleep(600)")
    d = daemon_factory("--runner", "entry", "--model-entry", entry, "--model-cmd", fake_model_cmd("ok"),
                       "--worker-start-timeout", "5", wait_ready=False)
    assert d.proc is not None and d.proc.wait(60) == 1
    assert "the model's worker did not load within 5 s" in d.log_text()
    worker = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(worker), 10, what="the loading worker killed")


def test_each_worker_starts_from_the_shared_workspace_and_rewrites_only_its_own(daemon_factory, watch_dir, tmp_path):
    """A cache in ``.modelgen/workspace`` before the start is every worker's; what a model appends to it in place
    (upstream rewrites its pickle on every run) goes to its own worker's copy, never the shared one."""
    shared = watch_dir / ".modelgen" / "workspace"
    shared.mkdir(parents=True)
    (shared / "cache.txt").write_text("trained\n")
    entry = _entry_file(tmp_path, "def create(ws, argv):\n"
                        "    cache = os.path.join(ws, 'cache.txt')\n"
                        "    if not open(cache).read().startswith('trained'):\n"
                        "        raise RuntimeError('the workspace was not seeded')\n"
                        "    scored = fake_model.create(ws, argv)\n"
                        "    def score(job):\n"
                        "        with open(cache, 'a') as fh:\n"
                        "            fh.write(job.key + '\\n')\n"
                        "        scored(job)\n"
                        "    return score")
    daemon_factory("--runner", "entry", "--model-entry", entry, "--model-cmd", fake_model_cmd("ok"), "--workers", "2")
    keys = [f"c{i}" for i in range(6)]
    raws = {key: drop(watch_dir, route([""], lat0=30 + i / 100), key=key) for i, key in enumerate(keys)}
    for key, raw in raws.items():
        assert wait_final(watch_dir, key, sha(raw))["state"] == "ok"
    copies = sorted(shared.glob("w*/cache.txt"))
    assert [c.parent.name for c in copies] == ["w0", "w1"]
    lines = [c.read_text().splitlines() for c in copies]
    assert [first for first, *_ in lines] == ["trained", "trained"]
    assert sorted(key for _, *served in lines for key in served) == keys
    assert (shared / "cache.txt").read_text() == "trained\n"

"""The fork server (``--runner fork``): what only forking a preloaded process can do wrong, and what it must do right.

The shared behaviours (failures, hangs with a grandchild, chatty output, SIGTERM during a
run, catch-up, containment) run through every runner in the other integration tests, by
the ``runner`` fixture; the reference model's scores in every runner are compared in
test_warm_runner.py.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.helpers import (
    MODELS,
    PY,
    PYTHON37,
    drop,
    fake_model_args,
    must_result,
    must_status,
    pid_alive,
    python37_only,
    route,
    sha,
    wait_final,
    wait_for,
)

STUB_NUMPY = '''"""A stand-in for numpy's global random state: fixed at import, as a real import's is for every forked child."""
'''
STUB_NUMPY_RANDOM = '''import os
_state = [12345]

def seed(value=None):
    _state[0] = int.from_bytes(os.urandom(4), "little") if value is None else value

def rand():
    _state[0] = (_state[0] * 1103515245 + 12345) % 2**31
    return _state[0] / 2**31
'''


def _model_dir(tmp_path: Path, **modules: str) -> Path:
    """A copy of the fake model with modules of our own beside it (found by the preload from the script's folder)."""
    where = tmp_path / "model"
    where.mkdir()
    shutil.copy(MODELS / "fake_model.py", where / "fake_model.py")
    for name, source in modules.items():
        target = where / (name.replace(".", "/") + ".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    return where


def _cmd(where: Path, *extra: str) -> str:
    return " ".join(fake_model_args("ok", *extra)[1:]).replace(str(MODELS / "fake_model.py"), str(where / "fake_model.py"))


def _runs(keep: Path, n: int) -> list[tuple[bytes, dict[str, object]]]:
    wait_for(lambda: len(list(keep.iterdir())) >= 2 * n, 30, what=f"{n} kept runs")
    return [((keep / f"{i}.output").read_bytes(), json.loads((keep / f"{i}.how").read_text())) for i in range(n)]


def test_a_forked_child_runs_the_script_as_a_fresh_process_does(daemon_factory, watch_dir, tmp_path):
    """Same output bytes, and the script sees the same argv, __name__, sys.path[0], cwd, stdin and process group."""
    kept = {}
    for runner in ("subprocess", "fork"):
        keep = tmp_path / runner
        keep.mkdir()
        d = daemon_factory(*fake_model_args("double", "--keep", str(keep), runner=runner), "--model-cwd", str(tmp_path))
        raw = drop(watch_dir, route(["", "turn-left", "straight"], routes=2), key=runner)
        assert wait_final(watch_dir, runner, sha(raw))["state"] == "ok"
        kept[runner] = _runs(keep, 1)[0]
        d.stop()
    (sub_out, sub_how), (fork_out, fork_how) = kept["subprocess"], kept["fork"]
    assert fork_out == sub_out
    assert fork_how == sub_how
    assert fork_how["name"] == "__main__" and fork_how["main_is_this"] and fork_how["pgid_is_pid"]
    assert fork_how["path0"] == str(MODELS) and fork_how["cwd"] == str(tmp_path) and fork_how["stdin"] == ""


def test_every_child_gets_a_fresh_random_state(daemon_factory, watch_dir, tmp_path):
    """Without a reseed, every child would draw what the first did: every cold run would train the same tree."""
    where = _model_dir(tmp_path, **{"numpy/__init__": "from . import random\n", "numpy.random": STUB_NUMPY_RANDOM})
    draws = tmp_path / "draws"
    daemon_factory("--runner", "fork", "--preload", "numpy,random", "--model-cmd",
                   _cmd(where, "--drawfile", str(draws)))
    for i in range(3):
        raw = drop(watch_dir, route([""], lat0=30 + i / 100), key=f"r{i}")
        assert wait_final(watch_dir, f"r{i}", sha(raw))["state"] == "ok"
    lines = draws.read_text().splitlines()
    python_draws, numpy_draws = zip(*(line.split() for line in lines), strict=True)
    assert "None" not in numpy_draws  # the preloaded module is the one the script sees
    assert len(set(python_draws)) == 3 and len(set(numpy_draws)) == 3, lines


def test_a_preload_that_starts_a_thread_is_a_clear_startup_error(daemon_factory, tmp_path):
    where = _model_dir(tmp_path, busy="import threading, time\nthreading.Thread(target=time.sleep, args=(60,), "
                                      "daemon=True).start()\n")
    d = daemon_factory("--runner", "fork", "--preload", "busy", "--model-cmd", _cmd(where), wait_ready=False)
    assert d.proc is not None and d.proc.wait(60) == 1
    log = d.log_text()
    assert "after preloading busy the fork server runs 2 threads" in log and "--runner subprocess" in log


def test_a_thread_started_after_the_preload_ends_that_worker_not_the_daemon(daemon_factory, watch_dir, tmp_path):
    """A module that starts a thread later (here from a timer) makes forking unsafe: the request fails saying why,
    and a fresh fork server serves the next one."""
    marker = tmp_path / "threaded"
    late = ("import signal, threading, time\n"
            "def _start(*_):\n"
            "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            f"    open({str(marker)!r}, 'a').close()\n"
            "signal.signal(signal.SIGALRM, _start)\n"
            "if not __import__('os').path.exists(" + repr(str(marker)) + "):\n"
            "    signal.setitimer(signal.ITIMER_REAL, 0.2)\n")
    where = _model_dir(tmp_path, late=late)
    daemon_factory("--runner", "fork", "--preload", "late", "--model-cmd", _cmd(where))
    wait_for(marker.exists, 20, what="the preloaded module's thread started")
    bad = drop(watch_dir, route([""]), key="bad")
    st = wait_final(watch_dir, "bad", sha(bad))
    assert st["error"]["kind"] == "model_failed"
    assert "2 threads before a fork" in st["error"]["detail"], st
    ok = drop(watch_dir, route(["turn-left"]), key="ok")
    assert wait_final(watch_dir, "ok", sha(ok))["state"] == "ok"


@python37_only
def test_the_fork_server_runs_on_python_3_7(daemon_factory, watch_dir, tmp_path):
    assert PYTHON37 is not None
    keep = tmp_path / "keep"
    keep.mkdir()
    cmd = _cmd(MODELS, "--keep", str(keep)).split(" ", 1)[1]
    d = daemon_factory("--runner", "fork", "--preload", "json,csv", "--model-cmd", f"{PYTHON37} {cmd}")
    raw = drop(watch_dir, route(["", "turn-left"]), key="old")
    assert wait_final(watch_dir, "old", sha(raw))["state"] == "ok"
    assert wait_for(lambda: d.events("worker.ready"), 10)[0]["python"].startswith("3.7.")
    assert _runs(keep, 1)[0][1]["executable"] == PYTHON37


# -- scripts that behave differently in a forked child unless the fork server undoes the difference ----------

_PRELUDE = f"""import json, os, sys
sys.path.insert(0, {str(MODELS)!r})
from fake_model import score
def scored(path):
    with open(path) as fh:
        return json.dumps(score(json.load(fh)))
"""

SCRIPTS = {
    "a thread writes the output after the script's end": """
import threading, time
def later():
    time.sleep(0.3)
    with open(sys.argv[2], "w") as fh:
        fh.write(scored(sys.argv[1]))
threading.Thread(target=later).start()
""",
    "a file left open holds the output's bytes": """
def keep_open():
    pass
f = open(sys.argv[2] + ".part", "w")
f.write(scored(sys.argv[1]))
os.rename(sys.argv[2] + ".part", sys.argv[2])
""",
    "logging writes the output at exit": """
import logging, logging.handlers
out = logging.FileHandler(sys.argv[2], mode="w")
out.setFormatter(logging.Formatter("%(message)s"))
buffered = logging.handlers.MemoryHandler(capacity=100, target=out)
log = logging.getLogger("model")
log.addHandler(buffered)
log.warning(scored(sys.argv[1]))
""",
    "KeyboardInterrupt": """
print("stopping", file=sys.stderr)
raise KeyboardInterrupt
""",
    "an uncaught exception": """
def deep():
    raise ValueError("no such road")
deep()
""",
    "sys.exit with a message": """
sys.exit("cannot score: the crash table is missing")
""",
}


def _outcome(watch_dir: Path, key: str, raw: bytes) -> dict[str, object]:
    st = wait_final(watch_dir, key, sha(raw), timeout=60)
    error = st["error"] or {}
    seen: dict[str, object] = {"state": st["state"], "kind": error.get("kind"), "message": error.get("message"),
                               "detail": error.get("detail")}
    if st["state"] == "ok":
        seen["result"] = {k: v for k, v in must_result(watch_dir, key).items() if k != "meta"}
    return seen


@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_a_script_ends_in_a_forked_child_as_in_a_fresh_process(daemon_factory, watch_dir, tmp_path, case):
    script = tmp_path / "real" / "model.py"
    script.parent.mkdir()
    script.write_text(_PRELUDE + SCRIPTS[case])
    seen = {}
    for runner in ("subprocess", "fork"):
        preload = ["--preload", "logging.handlers,threading"] if runner == "fork" else []  # their exit handlers too
        d = daemon_factory("--runner", runner, *preload, "--model-cmd", f"{PY} {script} {{input}} {{output}}")
        raw = drop(watch_dir, route(["", "turn-left"]), key=runner)
        seen[runner] = _outcome(watch_dir, runner, raw)
        d.stop()
    assert seen["fork"] == seen["subprocess"]


def test_a_script_reached_through_a_symlink_imports_from_its_real_folder(daemon_factory, watch_dir, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "helper_next_to_it.py").write_text("ANSWER = 'found'\n")
    (real / "model.py").write_text(_PRELUDE + "import helper_next_to_it\n"
                                   "with open(sys.argv[2], 'w') as fh:\n    fh.write(scored(sys.argv[1]))\n")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "model.py").symlink_to(real / "model.py")
    daemon_factory("--runner", "fork", "--model-cmd", f"{PY} {tmp_path / 'linked' / 'model.py'} {{input}} {{output}}")
    raw = drop(watch_dir, route([""]), key="linked")
    assert wait_final(watch_dir, "linked", sha(raw))["state"] == "ok"


LEAVES_FORKED_CHILDREN = """
import time
pids = []
for detach in (False, True):
    pid = os.fork()
    if pid == 0:  # a plain fork, no exec: it carries the fork server's environment, not the request's
        if detach:
            os.setsid()
        time.sleep(120)
        os._exit(0)
    pids.append(pid)
with open(os.environ["PIDFILE"], "a") as fh:
    fh.write("".join("%d\\n" % p for p in pids))
if "hang" in open(sys.argv[1]).read():
    time.sleep(120)
with open(sys.argv[2], "w") as fh:
    fh.write(scored(sys.argv[1]))
"""


@pytest.mark.parametrize("runner", ["subprocess", "fork"])
def test_processes_a_script_forks_end_with_its_request(daemon_factory, watch_dir, tmp_path, runner):
    script = tmp_path / "forks.py"
    script.write_text(_PRELUDE + LEAVES_FORKED_CHILDREN)
    pidfile = tmp_path / "pids"
    d = daemon_factory("--runner", runner, "--model-cmd", f"{PY} {script} {{input}} {{output}}",
                       env={"PIDFILE": str(pidfile)})
    raw = drop(watch_dir, route([""]), key="done")
    assert wait_final(watch_dir, "done", sha(raw))["state"] == "ok"
    left = [int(p) for p in pidfile.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in left), 15, what="what the finished request forked, gone")

    hanging = drop(watch_dir, {**route([""]), "hang": True}, key="hang")
    wait_for(lambda: len(pidfile.read_text().split()) == 4, 20, what="the hanging request's forked processes")
    more = [int(p) for p in pidfile.read_text().split()][2:]
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0  # a stop mid-request fits the container's 10 s
    wait_for(lambda: not any(pid_alive(p) for p in more), 10, what="the stopped request's forked processes, gone")
    assert must_status(watch_dir, "hang")["input_sha256"] == sha(hanging)


IMPORT_MARKS_PID = "import os\nwith open(os.environ['MARKS'], 'a') as fh:\n    fh.write('%s %d\\n' % (__name__, os.getpid()))\n"


@pytest.mark.parametrize("preload", [None, ""])
def test_auto_preloads_the_scripts_libraries_but_not_its_own_modules(daemon_factory, watch_dir, tmp_path, preload):
    """By default (``auto``) a library the script imports is imported once, by the server; the script's own
    module, beside it, is imported by each child, as a fresh process would."""
    libs, model = tmp_path / "libs", tmp_path / "model"
    libs.mkdir()
    model.mkdir()
    (libs / "mgw_test_library.py").write_text(IMPORT_MARKS_PID)
    (model / "mgw_own_module.py").write_text(IMPORT_MARKS_PID)
    (model / "model.py").write_text(_PRELUDE + "import mgw_test_library\nfrom mgw_own_module import __name__ as x\n"
                                    "with open(sys.argv[2], 'w') as fh:\n    fh.write(scored(sys.argv[1]))\n")
    marks = tmp_path / "marks"
    choice = [] if preload is None else ["--preload", preload]
    d = daemon_factory("--runner", "fork", *choice, "--model-cmd", f"{PY} {model / 'model.py'} {{input}} {{output}}",
                       env={"MARKS": str(marks), "PYTHONPATH": str(libs)})
    for i in range(2):
        raw = drop(watch_dir, route([""], lat0=30 + i / 100), key=f"a{i}")
        assert wait_final(watch_dir, f"a{i}", sha(raw))["state"] == "ok"
    lines = marks.read_text().splitlines()
    library = [line for line in lines if line.startswith("mgw_test_library")]
    own = [line for line in lines if line.startswith("mgw_own_module")]
    assert len(own) == 2 and len(set(own)) == 2  # each child imports the script's own module
    assert len(library) == (1 if preload is None else 2)
    if preload is None:
        (server,) = [e["pid"] for e in d.events("worker.ready")]
        assert library == [f"mgw_test_library {server}"]

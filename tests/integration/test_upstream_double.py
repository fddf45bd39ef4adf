"""Upstream's model.py shape, run with CONTRACT section 6's command line unchanged: as a process per request, and
warm through the adapter (``--runner entry --model-entry cyclesafe``), which imports it and calls its functions."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from tests.helpers import (
    MODELS,
    PYTHON37,
    drop,
    must_result,
    must_status,
    python37_only,
    result_of,
    route,
    score_route,
    sha,
    wait_final,
)

UPSTREAM_CMD = (
    "python3 ./modelmanager/model.py --workspace={workspace} --routefile={input} "
    "--dumpresponse={output_name} --datafile=./data/txdot_cris_20170427.csv"
)
TABLE = [  # intersection, daylight, manner, share not severe (UPSTREAM.md)
    (0, 0, 0, 0.955556), (0, 0, 1, 0.789474), (0, 1, 0, 0.939394), (0, 1, 1, 0.889197),
    (1, 0, 0, 0.907514), (1, 0, 1, 0.880682), (1, 1, 0, 0.911523), (1, 1, 1, 0.896686),
]


@pytest.fixture
def checkout(tmp_path):
    """A modelgen checkout laid out like upstream's: modelmanager/model.py and data/*.csv."""
    root = tmp_path / "modelgen"
    (root / "modelmanager").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(MODELS / "upstream_model.py", root / "modelmanager" / "model.py")
    lines = ["intersection,daylight,manner,not_severe"] + [",".join(map(str, row)) for row in TABLE]
    (root / "data" / "txdot_cris_20170427.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def python3_on_path(tmp_path, monkeypatch):
    """Make ``python3`` in the command resolve to this interpreter, as it would in the model's image."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_upstream_command_line_unchanged(daemon_factory, watch_dir, checkout, python3_on_path):
    d = daemon_factory("--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), "--workers", "2",
                       env=python3_on_path)
    raws: dict[str | None, bytes] = {k: drop(watch_dir, route(["", "turn-left", ""]), key=k) for k in ("u1", "u2")}
    raws[None] = drop(watch_dir, route(["turn-left"]))  # the legacy name, no key
    for key, raw in raws.items():
        st = wait_final(watch_dir, key, sha(raw))
        assert st["state"] == "ok", st
        res = result_of(watch_dir, key)
        assert isinstance(res, dict)  # the double-encoded output was decoded
        assert res["meta"]["model"] == "model.py"
    assert [p["score"] for p in must_result(watch_dir, "u1")["routes"][0]] == [0.939394, 0.911523, 0.939394]
    assert must_result(watch_dir, None)["totalScores"] == [0.911523]
    workspace = watch_dir / ".modelgen" / "workspace"
    assert list(workspace.glob("w*/human_read_dectree.pkl"))  # its cache persists, in each run's own workspace
    assert not list(workspace.glob("**/modelgen-out-*"))  # outputs cleaned up
    assert d.proc.poll() is None


def test_two_processes_at_once_never_share_a_cache_rewritten_in_place(daemon_factory, watch_dir, checkout,
                                                                      python3_on_path):
    """Upstream's model rewrites its cache in place on every run: with two at once in one workspace, one could
    read it half-written (before: a request failed now and then). Each run at once has a workspace of its own."""
    daemon_factory("--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), "--workers", "2", env=python3_on_path)
    raws = {f"c{i}": drop(watch_dir, route(["", "turn-left"], lat0=30 + i / 100), key=f"c{i}") for i in range(40)}
    for key, raw in raws.items():
        st = wait_final(watch_dir, key, sha(raw))
        assert st["state"] == "ok", st
    caches = sorted(p.parent.name for p in (watch_dir / ".modelgen" / "workspace").glob("*/human_read_dectree.pkl"))
    assert caches in (["w0"], ["w0", "w1"])


def test_upstream_traceback_becomes_model_failed(daemon_factory, watch_dir, checkout, python3_on_path):
    """A valid route, but the model's data file is missing: its traceback reaches the status."""
    daemon_factory("--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), env=python3_on_path)
    (checkout / "data" / "txdot_cris_20170427.csv").unlink()
    raw = drop(watch_dir, route(["", "turn-left"]), key="bad")
    st = wait_final(watch_dir, "bad", sha(raw))
    assert st["error"]["kind"] == "model_failed"
    assert "FileNotFoundError" in st["error"]["message"]
    assert "Traceback" in st["error"]["detail"]
    assert result_of(watch_dir, "bad") is None


ADAPTER = ("--runner", "entry", "--model-entry", "cyclesafe")


def test_the_adapter_prepares_once_and_scores_as_upstream_writes_it(daemon_factory, watch_dir, checkout,
                                                                   python3_on_path, tmp_path):
    prepared = tmp_path / "prepared"
    d = daemon_factory(*ADAPTER, "--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), "--workers", "2",
                       env={**python3_on_path, "UPSTREAM_DOUBLE_PREPARE_LOG": str(prepared)})
    raws: dict[str | None, bytes] = {k: drop(watch_dir, route(["", "turn-left", ""], lat0=30 + i / 100), key=k)
                                     for i, k in enumerate(("u1", "u2", "u3", "u4"))}
    raws[None] = drop(watch_dir, route(["turn-left"]))
    for key, raw in raws.items():
        st = wait_final(watch_dir, key, sha(raw))
        assert st["state"] == "ok", st
        assert must_result(watch_dir, key)["meta"]["model"] == "model.py"  # as a process per request says
    assert [p["score"] for p in must_result(watch_dir, "u1")["routes"][0]] == [0.939394, 0.911523, 0.939394]
    assert must_result(watch_dir, None)["totalScores"] == [0.911523]
    assert len(prepared.read_text().split()) == 2  # once per worker, not once per request
    workspaces = watch_dir / ".modelgen" / "workspace"
    caches = [w for w in ("w0", "w1") if (workspaces / w / "human_read_dectree.pkl").exists()]
    assert caches, "the model's cache is rewritten in its worker's own workspace"
    assert not list(workspaces.glob("w*/gps_scored_route*"))  # outputs moved to the volume
    bad = drop(watch_dir, route([""], fail_me=True), key="bad")  # the scoring function raises
    st = wait_final(watch_dir, "bad", sha(bad))
    assert st["error"]["kind"] == "model_failed"
    assert "cannot score this route" in st["error"]["detail"] and "Traceback" in st["error"]["detail"]
    again = drop(watch_dir, route(["turn-left"]), key="u1")  # and the worker serves the next one
    assert wait_final(watch_dir, "u1", sha(again))["state"] == "ok"
    assert d.proc is not None and d.proc.poll() is None


def test_the_adapter_writes_what_a_process_per_request_and_a_forked_child_write(checkout, python3_on_path, tmp_path):
    route_file = tmp_path / "route.json"
    route_file.write_text(json.dumps(route(["", "turn-left", "straight", "", "roundabout-right"], routes=3)))
    common = ("--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout))
    once = score_route(route_file, *common, "--runner", "subprocess", env=python3_on_path)
    warm = score_route(route_file, *common, *ADAPTER, env=python3_on_path)
    forked = score_route(route_file, *common, "--runner", "fork", env=python3_on_path)
    for doc in (once, warm, forked):
        del doc["meta"]["duration_ms"], doc["meta"]["scored_at"]
    assert warm == once
    assert forked == once
    assert warm["meta"]["model"] == "model.py"


def test_a_failing_prepare_is_a_clear_startup_error(daemon_factory, checkout, python3_on_path):
    """model_prepare() cannot read the crash table: the daemon does not start, and says why and where."""
    (checkout / "data" / "txdot_cris_20170427.csv").unlink()
    d = daemon_factory(*ADAPTER, "--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), env=python3_on_path,
                       wait_ready=False)
    assert d.proc is not None and d.proc.wait(60) == 1
    log = d.log_text()
    assert "the model cannot load: FileNotFoundError" in log
    assert "txdot_cris_20170427.csv" in log and "in model_prepare" in log


def test_a_script_that_is_not_upstreams_is_a_clear_startup_error(daemon_factory, checkout, python3_on_path):
    (checkout / "modelmanager" / "model.py").write_text("def model_prepare(**options):\n    return ()\n")
    d = daemon_factory(*ADAPTER, "--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), env=python3_on_path,
                       wait_ready=False)
    assert d.proc is not None and d.proc.wait(60) == 1
    assert ("has no get_global_configs, __score_manual_generic_route_and_save_to_file: is it upstream cyclesafe's"
            in d.log_text())


@python37_only
def test_the_adapter_runs_on_upstreams_python_3_7(daemon_factory, watch_dir, checkout):
    assert PYTHON37 is not None
    cmd = UPSTREAM_CMD.replace("python3 ", f"{PYTHON37} ", 1)
    daemon_factory(*ADAPTER, "--model-cmd", cmd, "--model-cwd", str(checkout))
    raw = drop(watch_dir, route(["", "turn-left"]), key="old")
    assert wait_final(watch_dir, "old", sha(raw))["state"] == "ok", must_status(watch_dir, "old")
    assert [p["score"] for p in must_result(watch_dir, "old")["routes"][0]] == [0.939394, 0.911523]

"""A misbehaving model ends in a clear error status, no stale result, and the next request is served."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import (
    MODELS,
    drop,
    fake_model_args,
    pid_alive,
    result_of,
    route,
    sha,
    wait_final,
    wait_for,
)


def serve_next(daemon_factory, watch_dir, mode, *extra, key="bad", runner="subprocess"):
    """Start a daemon with the fake model in ``mode`` under ``runner``; score one request; return its final status."""
    d = daemon_factory(*fake_model_args(mode, *extra, runner=runner), "--model-timeout", "2", "--kill-grace", "1")
    raw = drop(watch_dir, route(["", "turn-left"]), key=key)
    return d, wait_final(watch_dir, key, sha(raw))


@pytest.mark.parametrize(
    ("mode", "kind", "in_message"),
    [
        ("fail", "model_failed", "exited with code 1"),
        ("garbage", "invalid_output", "not JSON"),
        ("badshape", "invalid_output", "not a scored route"),
        ("nothing", "invalid_output", "wrote no output file"),
    ],
)
def test_model_failure_gives_error_status(daemon_factory, watch_dir, mode, kind, in_message, runner):
    d, st = serve_next(daemon_factory, watch_dir, mode, runner=runner)
    assert st["state"] == "error"
    assert st["error"]["kind"] == kind
    assert in_message in st["error"]["message"]
    assert "\n" not in st["error"]["message"]
    assert result_of(watch_dir, "bad") is None
    assert d.proc.poll() is None


@pytest.mark.parametrize(("mode", "in_message"), [("diroutput", "is a directory, not a regular file"),
                                                   ("linkoutput", "is a symlink, not a regular file")])
def test_an_output_that_is_not_a_regular_file_is_refused_and_removed(daemon_factory, watch_dir, mode, in_message,
                                                                     runner):
    """Read by the daemon (a process per request) or by the warm worker itself (``fork``, ``entry``): the same
    refusal, and nothing of the run is left in any workspace."""
    _, st = serve_next(daemon_factory, watch_dir, mode, runner=runner)
    assert st["error"]["kind"] == "invalid_output"
    assert in_message in st["error"]["message"]
    assert result_of(watch_dir, "bad") is None
    assert [p.name for p in (watch_dir / ".modelgen" / "workspace").rglob("modelgen-*")] == []


def test_traceback_reaches_the_status_detail(daemon_factory, watch_dir, runner):
    _, st = serve_next(daemon_factory, watch_dir, "fail", runner=runner)
    assert "RuntimeError: the model blew up on purpose" in st["error"]["message"]
    assert "Traceback" in st["error"]["detail"]


def test_failure_removes_a_stale_result_of_an_older_input(daemon_factory, watch_dir, tmp_path, runner):
    d = daemon_factory()
    good = drop(watch_dir, route([""]), key="k")
    assert wait_final(watch_dir, "k", sha(good))["state"] == "ok"
    d.stop()
    _, st = serve_next(daemon_factory, watch_dir, "fail", key="k", runner=runner)
    assert st["state"] == "error"
    # The error status is written first (so an ok status never stands without its result), then the stale result goes.
    wait_for(lambda: not (watch_dir / "gps_scored_route.k.json").exists(), 10, what="the stale result removed")


def test_hanging_model_and_its_child_are_killed_at_the_timeout(daemon_factory, watch_dir, tmp_path, runner):
    pidfile = tmp_path / "pids"
    d, st = serve_next(daemon_factory, watch_dir, "hang", "--pidfile", str(pidfile), runner=runner)
    assert st["error"]["kind"] == "model_timeout"
    assert "within 2 s" in st["error"]["message"]
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2  # the model and its child
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, what="model processes gone")
    assert d.proc.poll() is None


def test_model_ignoring_sigterm_is_killed(daemon_factory, watch_dir, tmp_path, runner):
    pidfile = tmp_path / "pids"
    _, st = serve_next(daemon_factory, watch_dir, "trapterm", "--pidfile", str(pidfile), runner=runner)
    assert st["error"]["kind"] == "model_timeout"
    pids = [int(p) for p in pidfile.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, what="model processes gone")


def test_chatty_model_does_not_deadlock(daemon_factory, watch_dir, runner):
    _, st = serve_next(daemon_factory, watch_dir, "chatty", runner=runner)
    assert st["state"] == "ok"


def test_chatty_failing_model_keeps_the_tail_of_stderr(daemon_factory, watch_dir, runner):
    d = daemon_factory(*fake_model_args("chattyfail", runner=runner), "--model-timeout", "20")
    raw = drop(watch_dir, route([""]), key="c")
    st = wait_final(watch_dir, "c", sha(raw))
    assert st["error"]["kind"] == "model_failed"
    assert st["error"]["message"] == "the model exited with code 3: chatty model: last line of stderr"
    assert st["error"]["detail"].endswith("chatty model: last line of stderr")
    assert len(st["error"]["detail"]) < 20_000  # 3 MiB were printed; the tail is kept
    assert d.proc.poll() is None


def test_double_encoded_output_is_decoded(daemon_factory, watch_dir, runner):
    _, st = serve_next(daemon_factory, watch_dir, "double", key="dbl", runner=runner)
    assert st["state"] == "ok"
    res = result_of(watch_dir, "dbl")
    assert isinstance(res, dict)
    assert [p["score"] for p in res["routes"][0]] == [0.9, 0.5]


def test_model_that_cannot_start_is_refused_at_start(daemon_factory, watch_dir):
    d = daemon_factory("--model-cmd", "/nonexistent/model --in {input}", wait_ready=False)
    assert d.proc.wait(30) == 2
    assert "program '/nonexistent/model' is not an executable file" in d.log_text()


def test_model_that_vanishes_after_start(daemon_factory, watch_dir, tmp_path):
    model = tmp_path / "model.sh"
    model.write_text("#!/bin/sh\nexit 0\n")
    model.chmod(0o755)
    daemon_factory("--model-cmd", f"{model} {{input}} {{output}}")
    model.unlink()
    raw = drop(watch_dir, route([""]), key="nostart")
    st = wait_final(watch_dir, "nostart", sha(raw))
    assert st["error"]["kind"] == "model_failed"
    assert "cannot start" in st["error"]["message"]


@pytest.mark.parametrize("mode", ["fail", "garbage", "nothing", "hang"])
def test_next_request_is_served_after_a_failure(daemon_factory, watch_dir, tmp_path, mode):
    """The daemon survives the failure; a good model answer follows for the next input."""
    flag = tmp_path / "mode"
    flag.write_text(mode)
    # One model command whose behaviour is switched by a file between requests.
    script = tmp_path / "switch.py"
    script.write_text(
        "import sys, subprocess\n"
        f"mode = open({str(flag)!r}).read().strip()\n"
        f"sys.exit(subprocess.call([sys.executable, {str(MODELS / 'fake_model.py')!r}, mode] + sys.argv[1:]))\n"
    )
    d = daemon_factory("--model-cmd", f"{sys.executable} {script} --input {{input}} --output {{output}}",
                       "--model-timeout", "2", "--kill-grace", "1")
    raw = drop(watch_dir, route([""]), key="first")
    assert wait_final(watch_dir, "first", sha(raw))["state"] == "error"
    flag.write_text("ok")
    raw2 = drop(watch_dir, route(["turn-left"]), key="second")
    assert wait_final(watch_dir, "second", sha(raw2))["state"] == "ok"
    assert d.proc.poll() is None

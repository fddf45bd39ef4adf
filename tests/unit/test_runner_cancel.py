"""``ModelRunner.cancel(job)``: one run cancelled (shared mode's lost claim), the others and the runner go on.

Real model processes: the subprocess runner's own process, and a warm worker running
tests/models/fake_model.py through its entry.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from modelgen_watcher import runners
from modelgen_watcher.runners.base import ModelJob, ModelRunner, RunReport
from modelgen_watcher.settings import WatcherSettings
from modelgen_watcher.volume.names import Layout, Names, Request
from modelgen_watcher.watcher import inflight
from modelgen_watcher.watcher.outcomes import Outcome
from modelgen_watcher.watcher.pipeline import Pipeline
from tests.helpers import MODELS, encode, fake_model_cmd, inflight_records, pid_alive, route, wait_for


def make_job(tmp_path: Path, workspace: Path, name: str, hang: bool = False) -> ModelJob:
    """A job for the fake model; ``hang``: it hangs on this one (``--hang-marked``)."""
    source = tmp_path / f"{name}.json"
    source.write_bytes(encode(route([""], **({"hang_me": True} if hang else {}))))
    return ModelJob(source, workspace / f"modelgen-out-{name}.json", workspace, name, 60.0)


def runner_for(tmp_path: Path, kind: str, *extra: str) -> tuple[ModelRunner, Path]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    cmd = fake_model_cmd("ok", *extra)
    args = {"model_cmd": cmd, "kill_grace": 1.0}
    if kind == "entry":
        args.update(runner="entry", model_entry=f"{MODELS / 'fake_model.py'}:create")
    settings = WatcherSettings(**args)  # type: ignore[arg-type]
    runner = runners.create(settings, workspace, 1)
    runner.start(tmp_path / "run")
    return runner, workspace


def run_in_thread(runner: ModelRunner, job: ModelJob) -> tuple[threading.Thread, list[RunReport]]:
    reports: list[RunReport] = []
    thread = threading.Thread(target=lambda: reports.append(runner.run(job)), daemon=True)
    thread.start()
    return thread, reports


def test_a_cancelled_process_ends_at_once_and_the_runner_serves_on(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    runner, workspace = runner_for(tmp_path, "subprocess", "--hang-marked", "--pidfile", str(pids))
    try:
        slow = make_job(tmp_path, workspace, "slow", hang=True)
        thread, reports = run_in_thread(runner, slow)
        wait_for(lambda: pids.exists() and pids.read_text().strip(), 10, what="the model started")
        pid = int(pids.read_text().split()[0])
        t0 = time.monotonic()
        runner.cancel(make_job(tmp_path, workspace, "other"))  # not this run: nothing happens
        time.sleep(0.2)
        assert pid_alive(pid)
        runner.cancel(slow)
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - t0 < 5
        (report,) = reports
        assert report.cancelled and not report.succeeded and not pid_alive(pid)
        assert runner.run(make_job(tmp_path, workspace, "next")).succeeded
    finally:
        runner.stop()


def test_a_cancelled_warm_request_ends_at_once_and_a_fresh_worker_serves_the_next(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    runner, workspace = runner_for(tmp_path, "entry", "--hang-marked", "--pidfile", str(pids))
    try:
        slow = make_job(tmp_path, workspace, "slow", hang=True)
        thread, reports = run_in_thread(runner, slow)
        wait_for(lambda: pids.exists() and pids.read_text().strip(), 20, what="the worker took the request")
        worker = int(pids.read_text().split()[0])  # the warm worker's own pid: it runs the entry
        t0 = time.monotonic()
        runner.cancel(slow)
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - t0 < 5
        (report,) = reports
        assert report.cancelled and not report.succeeded
        wait_for(lambda: not pid_alive(worker), 10, what="the busy worker replaced")
        after = runner.run(make_job(tmp_path, workspace, "next"))
        assert after.succeeded and after.output is not None and b'"routes"' in after.output  # sent back by the worker
        assert int(pids.read_text().split()[-1]) != worker
    finally:
        runner.stop()


@pytest.mark.parametrize("kind", ["subprocess", "entry"])
def test_a_request_that_comes_after_its_runner_stopped_is_not_counted_as_interrupted(tmp_path: Path, kind: str) -> None:
    """A stop between a request's taking and its model (SIGTERM just then): the model never saw it, so the next
    start must not count it against the request, as it does not count one that waited for a worker. Were it
    counted, three such stops would give up a request that was never scored."""
    runner, workspace = runner_for(tmp_path, kind)
    runner.stop()
    report = runner.run(make_job(tmp_path, workspace, "late"))
    assert report.cancelled and not report.reached_model

    watch_dir = tmp_path / "watch"
    watch_dir.mkdir()
    layout = Layout(watch_dir, Names())
    layout.input("late").write_bytes(encode(route([""])))
    pipe = Pipeline(layout, runner, model_label="fake", model_timeout=5, max_input_bytes=1 << 20, settle=0)
    assert pipe.process(Request("late")).outcome is Outcome.cancelled
    records = inflight_records(watch_dir)
    assert [(r.get("name"), r.get("waiting")) for r in records] == [(layout.input("late").name, True)]
    assert inflight.count_interruptions(layout) == []  # the next start: nothing counted

"""The watch dir stays the daemon's to serve: its lock follows the directory, its private area is never followed.

Before: delete and recreate the watch dir and a second daemon started on it while the
first kept rescanning it (both scored the same requests); a ``.modelgen`` symlink was
followed by the start-up clean-up, deleting files outside the volume; and every
distinct refused name was remembered and logged forever.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Daemon, drop, fake_model_cmd, metric, pid_alive, route, sha, wait_final, wait_for

FAST = {"MODELGEN_HEARTBEAT_INTERVAL": "0.2"}


def _remove(path: Path) -> None:
    """Take a directory away at once (rename), then delete it: a running daemon keeps writing into it."""
    gone = path.with_name(f".removed-{path.name}")
    path.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)


def test_a_replaced_watch_dir_stops_the_old_daemon_and_the_new_one_serves_alone(daemon_factory, watch_dir, tmp_path):
    old = daemon_factory(env=FAST)
    _remove(watch_dir)
    watch_dir.mkdir()
    new = Daemon(watch_dir, env=FAST, log_path=tmp_path / "new.log").start()
    try:
        assert old.proc is not None
        assert old.proc.wait(timeout=20) == 1
        assert old.events("daemon.lost_watch_dir")
        raws = {f"k{i}": drop(watch_dir, route([""], lat0=30 + i / 100), key=f"k{i}") for i in range(10)}
        for key, raw in raws.items():
            assert wait_final(watch_dir, key, sha(raw))["state"] == "ok"
        assert [len(new.wait_runs(key, 1)) for key in raws] == [1] * 10
        assert not old.runs()
    finally:
        new.stop()


def test_a_removed_state_dir_leaves_exactly_one_daemon_serving(daemon_factory, watch_dir, tmp_path):
    """``.modelgen`` deleted under a running daemon while a second one starts: one of them must give way."""
    first = daemon_factory(env=FAST)
    _remove(watch_dir / ".modelgen")
    second = Daemon(watch_dir, env=FAST, log_path=tmp_path / "second.log").start(wait_ready=False)
    try:
        assert first.proc is not None and second.proc is not None

        def one_left() -> bool:
            alive = [d for d in (first, second) if d.proc is not None and d.proc.poll() is None]
            return len(alive) == 1

        wait_for(one_left, 20, what="one daemon left")
        survivor = first if first.proc.poll() is None else second
        raw = drop(watch_dir, route([""]), key="after")
        assert wait_final(watch_dir, "after", sha(raw))["state"] == "ok"
        assert len(survivor.wait_runs("after", 1)) == 1
    finally:
        second.stop()


@pytest.mark.parametrize("link", [".modelgen", ".modelgen/tmp", ".modelgen/workspace"])
def test_a_symlinked_private_dir_is_refused_and_its_target_left_alone(watch_dir, tmp_path, link):
    outside = tmp_path / "outside"
    (outside / "tmp").mkdir(parents=True)
    (outside / "workspace").mkdir()
    precious = [outside / ".modelgen-precious", outside / "tmp" / "snapshot-like", outside / "workspace" /
                "modelgen-out-x.json", outside / "input-x.json"]
    for path in precious:
        path.write_text("not the watcher's")
    if link != ".modelgen":
        (watch_dir / ".modelgen").mkdir()
    (watch_dir / link).symlink_to(outside / link.rpartition("/")[2] if link != ".modelgen" else outside)
    done = subprocess.run([sys.executable, "-m", "modelgen_watcher", "run", "--once", "--watch-dir", str(watch_dir)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "symlink" in done.stderr and "refusing" in done.stderr
    assert all(path.read_text() == "not the watcher's" for path in precious)


def test_a_flood_of_refused_names_is_logged_in_a_bounded_number_of_lines(daemon_factory, watch_dir):
    d = daemon_factory(env=FAST)
    for i in range(3000):
        (watch_dir / f"gps_input_route.bad key {i}.json").write_bytes(b"{}")
    wait_for(lambda: metric(watch_dir, "modelgen_refused_names_total") == 3000, 30, what="3000 refusals counted")
    wait_for(lambda: d.events("input.refused_more"), 10, what="a summary line")
    assert len(d.events("input.refused")) <= 200
    assert d.proc is not None and pid_alive(d.proc.pid)


def test_run_records_are_kept_again_after_the_state_dir_is_removed(daemon_factory, watch_dir, tmp_path):
    """So a kill -9 after the removal still gets its model stopped at the next start."""
    pidfile = tmp_path / "pids"
    daemon_factory("--model-cmd", fake_model_cmd("slow", "--sleep", "30", "--pidfile", str(pidfile)), env=FAST)
    _remove(watch_dir / ".modelgen")
    wait_for(lambda: (watch_dir / ".modelgen" / "lock").exists(), 10, what="the state dir made again")
    drop(watch_dir, route([""]), key="slow")
    run_dir = watch_dir / ".modelgen" / "run"
    wait_for(lambda: run_dir.is_dir() and list(run_dir.iterdir()), 15, what="a record of the running model")

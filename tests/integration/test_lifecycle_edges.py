"""Edge cases of a long-lived sidecar: retries after a fix, skewed clocks, escaped and orphaned processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import drop, fake_model_cmd, must_status, route, sha, wait_final, wait_for


def run_once(watch_dir, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "modelgen_watcher", "run", "--once", "--watch-dir", str(watch_dir),
                           *args], capture_output=True, text=True, timeout=timeout)


def test_a_model_failure_is_redone_after_the_model_is_fixed(watch_dir):
    raw = drop(watch_dir, route([""]), key="k")
    assert run_once(watch_dir, "--model-cmd", fake_model_cmd("fail")).returncode == 1
    assert must_status(watch_dir, "k")["error"]["kind"] == "model_failed"
    fixed = run_once(watch_dir)  # the embedded model works
    assert fixed.returncode == 0
    assert wait_final(watch_dir, "k", sha(raw))["state"] == "ok"


def test_invalid_input_is_not_redone_but_still_fails_once(watch_dir):
    drop(watch_dir, b"{broken", key="bad")
    assert run_once(watch_dir, "--settle", "0").returncode == 1
    again = run_once(watch_dir, "--settle", "0")
    assert again.returncode == 1  # still an error on the volume
    assert '"request.done"' not in again.stdout  # but nothing was redone


def test_future_mtime_does_not_stall_an_unparsable_input(watch_dir):
    drop(watch_dir, b'{"routes": [', key="future")
    path = watch_dir / "gps_input_route.future.json"
    future = path.stat().st_mtime + 3600
    os.utime(path, (future, future))  # a skewed NFS server clock
    out = run_once(watch_dir, "--settle", "1", timeout=30)
    assert out.returncode == 1
    assert must_status(watch_dir, "future")["error"]["kind"] == "invalid_input"


@pytest.mark.skipif(shutil.which("setsid") is None, reason="setsid is not installed")
def test_a_descendant_that_escapes_the_group_does_not_stall_requests(daemon_factory, watch_dir, tmp_path):
    pidfile = tmp_path / "pids"
    d = daemon_factory("--model-cmd", fake_model_cmd("escape", "--pidfile", str(pidfile)))
    raw = drop(watch_dir, route([""]), key="esc")
    try:
        assert wait_final(watch_dir, "esc", sha(raw), timeout=20)["state"] == "ok"
        wait_for(lambda: d.events("model.escaped"), 10, what="a warning about the escaped descendant")
    finally:
        for pid in [int(p) for p in pidfile.read_text().split()[1:]] if pidfile.exists() else []:
            try:
                os.kill(pid, 9)  # only the descendant this test made
            except ProcessLookupError:
                pass


def _zombie_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="no PID namespaces here (unshare --pid)")
def test_as_pid_1_orphaned_grandchildren_are_reaped(watch_dir, tmp_path):
    log = open(tmp_path / "pid1.log", "wb")  # noqa: SIM115 - the daemon writes to it for the whole test
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "modelgen_watcher", "run",
         "--watch-dir", str(watch_dir), "--model-cmd", fake_model_cmd("orphan"), "--log-format", "json"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (watch_dir / ".modelgen" / "health.json").exists(), 30, what="daemon ready")
        for i in range(3):
            raw = drop(watch_dir, route([""] * (i + 1)), key=f"o{i}")
            assert wait_final(watch_dir, f"o{i}", sha(raw))["state"] == "ok"
        # The daemon's host pid is the child of unshare.
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the daemon under unshare was not found"
        daemon_pid = int(children[0])
        wait_for(lambda: not _zombie_children(daemon_pid), 15, what="orphans reaped by the PID 1 daemon")
        os.kill(daemon_pid, 15)  # unshare does not forward signals: stop PID 1 itself
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["pkill", "-9", "-f", str(watch_dir)], check=False)
            proc.wait(15)
        log.close()


def test_kill_grace_is_capped_so_a_stop_fits_in_ten_seconds(watch_dir):
    out = subprocess.run([sys.executable, "-m", "modelgen_watcher", "--kill-grace", "12", "--watch-dir",
                          str(watch_dir)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--kill-grace" in out.stderr

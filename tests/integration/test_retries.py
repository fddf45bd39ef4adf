"""What is retried and when: model failures are not rerun by rescans; transient faults are retried until they pass.

Before: a failed model ran a second time at the next rescan; a chmod counted as a
missed event (switching ``auto`` to polling for good); and with the volume full,
read-only or not writable, a request was tried at most twice and never again until
a restart, while ``health`` stayed green.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    drop,
    fake_model_cmd,
    health_of,
    metric,
    must_status,
    read_json,
    route,
    sha,
    status_name,
    status_of,
    wait_final,
    wait_for,
)

FAST = {"MODELGEN_HEARTBEAT_INTERVAL": "0.2"}
"""Heartbeats (and so rescans and readiness updates) five times a second."""


def _rescans(watch_dir: Path) -> float:
    return metric(watch_dir, "modelgen_rescans_total") or 0.0


def _after_rescans(watch_dir: Path, count: int) -> None:
    start = _rescans(watch_dir)
    wait_for(lambda: _rescans(watch_dir) >= start + count, 30, what=f"{count} rescans")


def test_a_failed_model_is_not_rerun_by_rescans(daemon_factory, watch_dir):
    d = daemon_factory("--model-cmd", fake_model_cmd("fail"), "--rescan-interval", "0.2", env=FAST)
    raw = drop(watch_dir, route([""]), key="f")
    assert wait_final(watch_dir, "f", sha(raw))["error"]["kind"] == "model_failed"
    _after_rescans(watch_dir, 5)
    assert len(d.runs("f")) == 1, d.runs("f")


def test_touch_reruns_a_failed_request_but_chmod_neither_reruns_nor_counts_as_missed(daemon_factory, watch_dir):
    d = daemon_factory("--model-cmd", fake_model_cmd("fail"), "--rescan-interval", "0.2", env=FAST)
    raw = drop(watch_dir, route([""]), key="m")
    wait_final(watch_dir, "m", sha(raw))
    path = watch_dir / "gps_input_route.m.json"
    os.chmod(path, 0o640)
    _after_rescans(watch_dir, 5)
    assert len(d.runs("m")) == 1
    assert metric(watch_dir, "modelgen_missed_events_total") == 0
    assert read_json(watch_dir / ".modelgen" / "health.json")["observer"] == "native"  # no fallback to polling
    os.utime(path)  # touch: the writer asks for another try
    d.wait_runs("m", 2)


def test_an_unwritable_status_is_retried_until_it_can_be_written(daemon_factory, watch_dir):
    """A directory where the status file goes: this request cannot be published, the others can.

    The daemon probes the volume on such a failure: one blocked path is the request's
    trouble, so readiness stays green (a full or read-only volume turns it red, below).
    """
    d = daemon_factory(env=FAST)
    blocker = watch_dir / status_name("t")
    blocker.mkdir()
    raw = drop(watch_dir, route([""]), key="t")
    wait_for(lambda: len([r for r in d.runs("t") if r.get("retried")]) >= 3, 30, what="three tries")
    other = drop(watch_dir, route([""]), key="other")
    assert wait_final(watch_dir, "other", sha(other))["state"] == "ok"
    assert health_of(watch_dir)[0]
    blocker.rmdir()
    _wait_ok(watch_dir, "t", raw)


def test_once_gives_a_transient_fault_three_tries_then_exits_1(watch_dir):
    (watch_dir / status_name("t")).mkdir()
    drop(watch_dir, route([""]), key="t")
    done = subprocess.run([sys.executable, "-m", "modelgen_watcher", "run", "--once", "--watch-dir", str(watch_dir)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.count('"request.done"') == 3


# -- a real volume that fills up or turns read-only: a small tmpfs ----------------------------------


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (root only: mount needs CAP_SYS_ADMIN)."""
    mnt = tmp_path / "vol"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@contextlib.contextmanager
def _filled(volume: Path) -> Iterator[None]:
    """Fill every free block of ``volume``, then free them again."""
    filler = volume / ".filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(bytes(65536))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    try:
        yield
    finally:
        filler.unlink()


def _wait_ok(watch_dir: Path, key: str, raw: bytes) -> None:
    """An io_error status is not final (it is being retried): wait for ``ok`` itself."""
    wait_for(lambda: (status_of(watch_dir, key) or {}).get("state") == "ok", 30, what=f"ok status of {key}")
    assert must_status(watch_dir, key)["input_sha256"] == sha(raw)


def _slow_daemon(volume: Path) -> tuple[Daemon, Path]:
    watch_dir = volume / "data"
    watch_dir.mkdir()
    d = Daemon(watch_dir, "--model-cmd", fake_model_cmd("slow", "--sleep", "1"), env=FAST,
               log_path=volume.parent / "daemon.log")
    return d.start(), watch_dir


def test_a_full_volume_is_retried_and_red_until_space_is_freed(small_volume):
    d, watch_dir = _slow_daemon(small_volume)
    try:
        raw = drop(watch_dir, route([""]), key="full")
        wait_for(lambda: (status_of(watch_dir, "full") or {}).get("state") == "running", 10, what="the model running")
        with _filled(small_volume):
            wait_for(lambda: len([r for r in d.runs("full") if r.get("retried")]) >= 2, 30, what="failed tries")
            healthy, message = health_of(watch_dir)
            assert not healthy and ("full" in message or "No space left" in message), message
        _wait_ok(watch_dir, "full", raw)
        wait_for(lambda: health_of(watch_dir)[0], 10, what="healthy again")
    finally:
        d.stop()


def _remount(volume: Path, mode: str) -> None:
    """``mount -o remount,<mode>``, again while the kernel says the volume is busy: a file of the daemon's (a
    heartbeat, a status) open for writing at that instant makes a remount read-only fail, as it would an
    operator's."""
    def remounted() -> bool:
        done = subprocess.run(["mount", "-o", f"remount,{mode}", str(volume)], capture_output=True, text=True)
        assert done.returncode == 0 or "busy" in done.stderr, done.stderr
        return done.returncode == 0

    wait_for(remounted, 10, what=f"the volume remounted {mode}")


def test_a_read_only_volume_is_retried_and_red_until_it_is_writable(small_volume):
    d, watch_dir = _slow_daemon(small_volume)
    try:
        raw = drop(watch_dir, route([""]), key="ro")
        wait_for(lambda: (status_of(watch_dir, "ro") or {}).get("state") == "running", 10, what="the model running")
        _remount(small_volume, "ro")
        try:
            wait_for(lambda: len([r for r in d.runs("ro") if r.get("retried")]) >= 2, 30, what="failed tries")
            healthy, message = health_of(watch_dir)
            assert not healthy and "read-only" in message
        finally:
            _remount(small_volume, "rw")
        _wait_ok(watch_dir, "ro", raw)
        wait_for(lambda: health_of(watch_dir)[0], 10, what="healthy again")
    finally:
        d.stop()


def test_a_model_that_leaves_a_directory_as_its_output_fails_once(daemon_factory, watch_dir):
    """Before: the clean-up's error replaced the real one, and the request was retried as io_error for good."""
    d = daemon_factory("--model-cmd", fake_model_cmd("diroutput"), env=FAST)
    raw = drop(watch_dir, route([""]), key="dir")
    st = wait_final(watch_dir, "dir", sha(raw))
    assert st["error"]["kind"] == "invalid_output"
    assert len(d.wait_runs("dir", 1)) == 1
    assert not [p for p in (watch_dir / ".modelgen" / "workspace").iterdir() if p.name.startswith("modelgen-out-")]


def test_a_model_that_fills_the_volume_itself_is_the_models_failure(small_volume):
    """Its output is removed before the volume is judged: space is back, so it is model_failed, not io_error."""
    watch_dir = small_volume / "data"
    watch_dir.mkdir()
    d = Daemon(watch_dir, "--model-cmd", fake_model_cmd("fillup"), env=FAST,
               log_path=small_volume.parent / "daemon.log").start()
    try:
        raw = drop(watch_dir, route([""]), key="hog")
        st = wait_final(watch_dir, "hog", sha(raw))
        assert st["error"]["kind"] == "model_failed"
        assert "No space left" in st["error"]["message"]
        assert health_of(watch_dir)[0]
    finally:
        d.stop()

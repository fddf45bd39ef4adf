"""Is the watcher alive? Read its heartbeat file; shared by the ``health`` command and the server."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .documents import read_health
from .protocol import DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME, Layout, Names


@dataclass(frozen=True)
class HealthCheck:
    healthy: bool
    message: str


def volume_trouble(watch_dir: Path) -> str | None:
    """Why nothing can be written to the watch dir (read-only, full), read from the file system itself.

    The daemon cannot say so in its heartbeat when the heartbeat itself cannot be
    written, so every reader of the heartbeat asks the file system too. File systems
    that report no sizes at all (some FUSE and network mounts) are not judged full.
    """
    try:
        st = os.statvfs(watch_dir)
    except OSError as exc:
        return f"cannot inspect the watch dir: {exc}"
    if st.f_flag & os.ST_RDONLY:
        return "the watch dir is on a read-only file system"
    if st.f_blocks and not st.f_bavail:
        return "the watch dir's file system is full"
    return None


def check(watch_dir: Path, max_age: float) -> HealthCheck:
    """Healthy when ``.modelgen/health.json`` says ready, its heartbeat is younger than ``max_age``,
    and the watch dir can be written at all."""
    trouble = volume_trouble(watch_dir)
    if trouble is not None:
        return HealthCheck(False, trouble)
    path = Layout(watch_dir, Names(DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME)).health_file
    doc = read_health(path)
    if doc is None:
        return HealthCheck(False, f"no valid heartbeat at {path}")
    try:
        beat = datetime.fromisoformat(doc.heartbeat_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return HealthCheck(False, f"heartbeat file {path} has a malformed heartbeat_at")
    if not doc.ready:
        why = f": {doc.reason}" if doc.reason else ""
        return HealthCheck(False, f"watcher (pid {doc.pid}) is not ready{why}")
    age = time.time() - beat
    if abs(age) > max_age:  # a heartbeat from the future is as untrustworthy as an old one
        return HealthCheck(False, f"last heartbeat {age:.1f} s ago (max {max_age:g} s)")
    return HealthCheck(True, f"pid {doc.pid}, observer {doc.observer}, heartbeat {age:.1f} s ago")

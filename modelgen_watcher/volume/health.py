"""Is the watcher alive? Read its heartbeat file; shared by the ``health`` command and the server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import fsio
from .documents import read_health
from .names import DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME, Layout, Names


@dataclass(frozen=True)
class HealthCheck:
    healthy: bool
    message: str


def check(watch_dir: Path, max_age: float) -> HealthCheck:
    """Healthy when ``.modelgen/health.json`` says ready, its heartbeat is younger than ``max_age``,
    and the watch dir can be written at all."""
    trouble = fsio.volume_trouble(watch_dir)
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

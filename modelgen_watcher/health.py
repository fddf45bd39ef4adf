"""Is the watcher alive? Read its heartbeat file; shared by the ``health`` command and the server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import fsio
from .protocol import HEALTH_FILE, STATE_DIR


@dataclass(frozen=True)
class HealthCheck:
    healthy: bool
    message: str


def check(watch_dir: Path, max_age: float) -> HealthCheck:
    """Healthy when ``.modelgen/health.json`` says ready and its heartbeat is younger than ``max_age``."""
    path = watch_dir / STATE_DIR / HEALTH_FILE
    doc = fsio.read_json_file(path, 64 * 1024)
    if not isinstance(doc, dict):
        return HealthCheck(False, f"no heartbeat at {path}")
    try:
        beat = datetime.fromisoformat(str(doc["heartbeat_at"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return HealthCheck(False, f"heartbeat file {path} is malformed")
    if not doc.get("ready"):
        return HealthCheck(False, f"watcher (pid {doc.get('pid')}) is not ready")
    age = time.time() - beat
    if abs(age) > max_age:  # a heartbeat from the future is as untrustworthy as an old one
        return HealthCheck(False, f"last heartbeat {age:.1f} s ago (max {max_age:g} s)")
    return HealthCheck(True, f"pid {doc.get('pid')}, observer {doc.get('observer')}, heartbeat {age:.1f} s ago")

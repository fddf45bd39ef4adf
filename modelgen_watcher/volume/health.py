"""Is a watcher alive? Read heartbeat files; shared by the ``health`` command and the server.

The lone watcher writes ``.modelgen/health.json``; each shared-mode watcher its own
``.modelgen/watchers/<id>.json``. The server's ``/readyz`` (and its 504) and ``health``
without ``--shared`` ask ``check``: is at least one watcher, of either kind, alive and
ready. ``health --shared`` asks ``check_watcher`` about its own watcher only, which is
what a container's probe means.

A heartbeat's age is its ``heartbeat_at`` (the writer's clock) against the reader's
clock: ``health`` runs beside its watcher, on the same clock; a server on another
machine needs the clocks within a few seconds of each other (NTP) to judge it. Claims
do not depend on this (``claims`` measures leases on the volume's clock).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import fsio
from .documents import read_health, read_watcher_health
from .names import DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME, Layout, Names
from .schemas import Health


@dataclass(frozen=True)
class HealthCheck:
    healthy: bool
    message: str


def _layout(watch_dir: Path) -> Layout:
    return Layout(watch_dir, Names(DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME))


def check(watch_dir: Path, max_age: float) -> HealthCheck:
    """Healthy when at least one watcher's heartbeat is younger than ``max_age`` and says ready (the lone
    watcher's ``.modelgen/health.json``, or any shared watcher's), and the watch dir can be written at all."""
    trouble = fsio.volume_trouble(watch_dir)
    if trouble is not None:
        return HealthCheck(False, trouble)
    path = _layout(watch_dir).health_file
    lone = judge(read_health(path), path, max_age)
    if lone.healthy:
        return lone
    shared = [(wid, judge(read_watcher_health(p), p, max_age)) for wid, p in watcher_files(watch_dir)]
    ready = [(wid, c) for wid, c in shared if c.healthy]
    if ready:
        wid, first = ready[0]
        return HealthCheck(True, f"{len(ready)} of {len(shared)} shared watchers ready ({wid}: {first.message})")
    if shared and not path.exists():
        why = "; ".join(f"{wid}: {c.message}" for wid, c in shared)
        return HealthCheck(False, f"no shared watcher is ready: {why}")
    return lone


def check_watcher(watch_dir: Path, watcher_id: str, max_age: float) -> HealthCheck:
    """``health --shared``: this one shared watcher's heartbeat (``.modelgen/watchers/<id>.json``)."""
    trouble = fsio.volume_trouble(watch_dir)
    if trouble is not None:
        return HealthCheck(False, trouble)
    path = _layout(watch_dir).watcher_health(watcher_id)
    return judge(read_watcher_health(path), path, max_age)


def watcher_files(watch_dir: Path) -> list[tuple[str, Path]]:
    """Every shared watcher's heartbeat file: (its id, its path), sorted by id."""
    directory = _layout(watch_dir).watchers_dir
    found = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".json") and not entry.name.startswith(".") \
                        and entry.is_file(follow_symlinks=False):
                    found.append((entry.name.removesuffix(".json"), Path(entry.path)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(found)


def live_watchers(watch_dir: Path, max_age: float) -> list[str]:
    """The ids of the shared watchers whose heartbeat is younger than ``max_age`` (ready or not)."""
    live = []
    for wid, path in watcher_files(watch_dir):
        doc = read_watcher_health(path)
        age = _age(doc) if doc is not None else None
        if age is not None and abs(age) <= max_age:
            live.append(wid)
    return live


def _age(doc: Health) -> float | None:
    try:
        beat = datetime.fromisoformat(doc.heartbeat_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return time.time() - beat


def judge(doc: Health | None, path: Path, max_age: float) -> HealthCheck:
    """What one heartbeat document says: ready, and younger than ``max_age``."""
    if doc is None:
        return HealthCheck(False, f"no valid heartbeat at {path}")
    age = _age(doc)
    if age is None:
        return HealthCheck(False, f"heartbeat file {path} has a malformed heartbeat_at")
    if not doc.ready:
        why = f": {doc.reason}" if doc.reason else ""
        return HealthCheck(False, f"watcher (pid {doc.pid}) is not ready{why}")
    if abs(age) > max_age:  # a heartbeat from the future is as untrustworthy as an old one
        return HealthCheck(False, f"last heartbeat {age:.1f} s ago (max {max_age:g} s)")
    return HealthCheck(True, f"pid {doc.pid}, observer {doc.observer}, heartbeat {age:.1f} s ago")

"""Who else serves this watch dir, asked once at start: watchers that must not run beside this one are refused.

- A shared-mode watcher refuses to start under the id of another live one (two
  watchers with one id would take each other's claims for leftovers of their own): its
  id's heartbeat is fresh, says ready, and names another host, or another pid of this
  host that is still running. The same id on this host with the same pid (a container
  restarted under its name, its watcher PID 1 again), or with a pid that is gone, is
  this watcher's own earlier life: its claims are taken over at once.
- A lone watcher and a shared one never serve one volume together. On one kernel the
  lock says so (``lock``); across machines an ``flock`` proves nothing, so each refuses
  to start while the other kind's heartbeat is fresh and ready.

Ages are measured on the volume's clock (the heartbeat file's mtime against the time
this watcher read from the volume), never against this machine's clock.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..volume.documents import read_health, read_watcher_health
from ..volume.health import watcher_files
from ..volume.names import HEALTH_FILE, Layout
from .lock import AlreadyRunning

FRESH_S = 15.0
"""A heartbeat this young (3 of the longest heartbeat interval, 5 s) belongs to a watcher still running."""


def _age(path: Path, now_ns: int) -> float | None:
    """Seconds since ``path`` was written, on the volume's clock; None when it is missing."""
    try:
        return (now_ns - os.stat(path).st_mtime_ns) / 1e9
    except FileNotFoundError:
        return None


def _running(pid: int) -> bool:
    """Whether ``pid`` names a process of this machine (a zombie counts: it is about to go, not to serve)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_shared(layout: Layout, *, watcher: str, hostname: str, pid: int, now_ns: int, lease: float) -> None:
    """Raise AlreadyRunning when a live watcher has this id, or a lone watcher serves the volume."""
    mine = layout.watcher_health(watcher)
    age = _age(mine, now_ns)
    doc = read_watcher_health(mine) if age is not None and age < lease else None
    if doc is not None and doc.ready and (doc.hostname != hostname or (doc.pid != pid and _running(doc.pid))):
        raise AlreadyRunning(
            f"watcher id {watcher!r} is in use: pid {doc.pid} on {doc.hostname} wrote its heartbeat {age:.1f} s "
            f"ago; give each watcher its own --watcher-id (MODELGEN_WATCHER_ID)"
        )
    lone = layout.state_dir / HEALTH_FILE
    age = _age(lone, now_ns)
    health = read_health(lone) if age is not None and age < FRESH_S else None
    if health is not None and health.ready:
        raise AlreadyRunning(
            f"a modelgen-watcher not in shared mode (pid {health.pid}) is serving {layout.root} (its heartbeat is "
            f"{age:.1f} s old); stop it, or run every watcher of this volume with --shared"
        )


def check_lone(layout: Layout, *, now_ns: int) -> None:
    """Raise AlreadyRunning when shared-mode watchers serve the volume (a lone watcher must not join them)."""
    live = []
    for wid, path in watcher_files(layout.root):
        age = _age(path, now_ns)
        doc = read_watcher_health(path) if age is not None and age < FRESH_S else None
        if doc is not None and doc.ready:
            live.append(wid)
    if live:
        raise AlreadyRunning(
            f"shared-mode watchers ({', '.join(live)}) are serving {layout.root}; run this one with --shared too"
        )

"""Retention: keyed request files (input, result, status) idle longer than a limit are removed.

Only keyed requests expire; the legacy single-user files are overwritten in place and
never pile up. A request is judged by its newest file, so an input re-submitted
yesterday keeps its week-old status alive. In shared mode the sweeper (one watcher at a
time, by a claim: see ``daemon``) also forgets the areas of watchers gone for a day.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

from ..volume import fsio
from ..volume.names import CLOCK_FILE, Layout, Request

MAX_SWEEP_INTERVAL = 3600.0
"""Seconds between sweeps at most: a request is removed at most an hour after it expired."""
DEAD_WATCHER_AGE = 24 * 3600.0
"""Shared mode: a watcher whose heartbeat and clock are this old (seconds) is gone for good (a container replaced
under another name): its heartbeat, metrics and private area (workspace copies included) are removed."""


def sweep_interval(max_age: float, rescan_interval: float) -> float:
    """Seconds between sweeps: a tenth of ``max_age``, at most an hour, and not more often than the rescans.

    A sweep looks at every file of every request (input, result, status), which is
    what a rescan no longer does; at 10,000 finished requests it costs about 100 ms of
    CPU, so sweeping with every 10-s rescan was the largest part of the idle daemon's
    cost. Expiry is measured in days; it is enough to be late by a tenth of it.
    """
    return max(rescan_interval, min(max_age / 10, MAX_SWEEP_INTERVAL))


def expire(layout: Layout, max_age: float, busy: Callable[[Request], bool], now: float | None = None) -> list[str]:
    """Remove the files of every keyed request idle for more than ``max_age`` seconds; returns the keys."""
    now = time.time() if now is None else now
    newest: dict[str, float] = {}
    for entry in os.scandir(layout.root):
        parsed = layout.names.parse(entry.name)
        key = parsed.key if isinstance(parsed, Request) else layout.names.output_key(entry.name)
        if key is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue  # directories, symlinks and FIFOs are not ours to delete
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        newest[key] = max(newest.get(key, 0.0), mtime)
    expired = []
    for key, mtime in newest.items():
        if now - mtime <= max_age or busy(Request(key)):
            continue
        # Input first: once it is gone nothing will recreate the outputs. Then the status
        # before the result, so an ``ok`` status never stands without its result.
        req = layout.names.input(key)
        for path in (layout.input(key), layout.status(key), layout.result(key), layout.parked_dir / req):
            try:
                if path.is_file() and not path.is_symlink():
                    fsio.remove_quietly(path)
            except OSError:
                pass  # retried at the next sweep; never worth stopping the heartbeat for
        expired.append(key)
    return expired


def forget_watchers(layout: Layout, now: float, max_age: float = DEAD_WATCHER_AGE) -> list[str]:
    """Remove the files of every other shared watcher not heard from for ``max_age`` seconds (``now`` and the
    files' times both the volume's); returns their ids. One that comes back makes its area again."""
    directory = layout.watchers_dir
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    ids = {n.removesuffix(".json") for n in names if n.endswith(".json")} | {
        n for n in names if (directory / n).is_dir() and not (directory / n).is_symlink()
    }
    ids.discard(layout.watcher or "")
    gone = []
    for wid in sorted(i for i in ids if not i.startswith(".")):
        heard = [directory / f"{wid}.json", directory / wid / CLOCK_FILE, directory / wid]  # the area: one starting
        times = []
        for path in heard:
            try:
                times.append(os.lstat(path).st_mtime)
            except OSError:
                continue
        if times and now - max(times) <= max_age:
            continue
        for path in (directory / f"{wid}.json", directory / f"{wid}.prom"):
            try:
                fsio.remove_quietly(path)
            except OSError:
                pass
        area = directory / wid
        if area.is_dir() and not area.is_symlink():
            shutil.rmtree(area, ignore_errors=True)
        gone.append(wid)
    return gone

"""Retention: keyed request files (input, result, status) idle longer than a limit are removed.

Only keyed requests expire; the legacy single-user files are overwritten in place and
never pile up. A request is judged by its newest file, so an input re-submitted
yesterday keeps its week-old status alive.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ..volume import fsio
from ..volume.names import Layout, Request

MAX_SWEEP_INTERVAL = 3600.0
"""Seconds between sweeps at most: a request is removed at most an hour after it expired."""


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
        for path in (layout.input(key), layout.status(key), layout.result(key), layout.inflight_dir / req):
            try:
                if path.is_file() and not path.is_symlink():
                    fsio.remove_quietly(path)
            except OSError:
                pass  # retried at the next sweep; never worth stopping the heartbeat for
        expired.append(key)
    return expired

"""The newest requests on the volume, read cheaply enough to be asked every second.

A watch dir can hold tens of thousands of request files. Reading each status file to
find the newest would cost a read and a parse per request per look; here one
``scandir`` lists the names (classified by ``Names.request_file``, string tests only),
the statuses are ``stat``-ed (inputs only where they say something: a request with no
status yet, or one shown), and only the newest ``limit`` statuses are read, each
again only when its file changed (another inode, mtime or size: the watcher replaces
a status by rename). When the directory itself did not change since the last scan
(``dirtimes.DirTimes``: its times, which every rename and removal updates), the scan is
skipped; a scan within ``RACY_S`` of a change is not trusted, because a coarse mtime
could hide a second change in the same tick. One scan runs at a time, and callers within
``MIN_INTERVAL_S`` of the last share its answer, so many viewers cost what one costs.
``bench/page.py`` measures each case on 10,000 requests.

An input rewritten in place (not by rename) does not change the directory: it shows
when its status does. A request published again is sorted by its status's time, so an
old one republished may stay below the newest ``limit`` until the watcher picks it up.
"""

from __future__ import annotations

import heapq
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .dirtimes import DirTimes
from .documents import read_status
from .names import Layout
from .schemas import Status

DEFAULT_LIMIT = 100
MIN_INTERVAL_S = 0.5
"""Callers this close to the last scan get its answer: a page refreshing each second sees fresh enough data."""
RACY_S = 2.0
"""A scan this close to a change of the directory is not trusted (coarse timestamps)."""


@dataclass(frozen=True)
class Entry:
    """One request as its files show it. ``state`` is the status's, or ``queued`` when it has none yet."""

    key: str | None
    state: str
    updated_ns: int
    """The newest mtime of its input and status files: what "newest" sorts by."""
    input_newer: bool = False
    """The input was published again after this status was written: a newer outcome is due."""
    status: Status | None = None

    def as_json(self) -> dict[str, Any]:
        st = self.status
        err = st.error if st else None
        return {
            "key": self.key,
            "state": self.state,
            "updated_at_ms": self.updated_ns // 1_000_000,
            "input_newer": self.input_newer,
            "input_sha256": st.input_sha256 if st else None,
            "started_at": st.started_at if st else None,
            "finished_at": st.finished_at if st else None,
            "duration_ms": st.duration_ms if st and st.finished_at else None,
            "error_kind": err.kind.value if err else None,
            "error_message": err.message if err else None,
        }


@dataclass(frozen=True)
class Snapshot:
    """The newest ``entries`` (newest first) out of ``total`` requests on the volume."""

    entries: list[Entry]
    total: int
    scanned_at: float
    """``time.monotonic()`` of the scan it comes from."""


@dataclass
class _Files:
    input: os.stat_result | None = None
    status: os.stat_result | None = None


@dataclass
class _Cached:
    ident: tuple[int, int, int]
    status: Status | None


@dataclass
class RecentRequests:
    """The newest ``limit`` requests of one watch dir; ``read()`` is safe to call from many threads."""

    layout: Layout
    limit: int = DEFAULT_LIMIT
    min_interval: float = MIN_INTERVAL_S
    racy_s: float = RACY_S
    files_read: int = 0
    """Status files read since this object was made (the test of its cheapness counts them)."""
    scans: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last: Snapshot | None = field(default=None, repr=False)
    _times: DirTimes = field(init=False, repr=False)
    _statuses: dict[str | None, _Cached] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._times = DirTimes(self.layout.root, self.racy_s)

    def read(self) -> Snapshot:
        """The newest requests; OSError when the watch dir cannot be listed."""
        with self._lock:
            now = time.monotonic()
            last = self._last
            if last is not None and now - last.scanned_at < self.min_interval:
                return last
            if last is not None and self._times.unchanged():
                last = self._last = Snapshot(last.entries, last.total, now)
                return last
            with self._times.listing():
                snap = self._scan(now)
            self._last = snap
            return snap

    def _scan(self, now: float) -> Snapshot:
        self.scans += 1
        statuses, inputs = self._list()
        # Requests still waiting have an input and no status yet: only their inputs are stat-ed.
        files: dict[str | None, _Files] = {key: _Files(status=st) for key, st in statuses.items()}
        for key, dirent in inputs.items():
            if key not in files:
                st = _stat(dirent)
                if st is not None:
                    files[key] = _Files(input=st)
        newest = heapq.nlargest(self.limit, files.items(), key=lambda kv: _updated(kv[1]))
        keep: dict[str | None, _Cached] = {}
        entries = []
        for key, found in newest:
            if found.input is None and key in inputs:  # shown: whether its input was published again matters
                found.input = _stat(inputs[key])
            entries.append(self._entry(key, found, keep))
        self._statuses = keep  # only the shown statuses stay cached: memory stays at `limit` documents
        entries.sort(key=lambda e: e.updated_ns, reverse=True)
        return Snapshot(entries, len(files), now)

    def _list(self) -> tuple[dict[str | None, os.stat_result], dict[str | None, os.DirEntry[str]]]:
        """Every status, stat-ed, and every input, not yet: most inputs have a status that says more."""
        request_file = self.layout.names.request_file
        statuses: dict[str | None, os.stat_result] = {}
        inputs: dict[str | None, os.DirEntry[str]] = {}
        with os.scandir(self.layout.root) as it:
            for dirent in it:
                found = request_file(dirent.name)
                if found is None:
                    continue
                key, is_input = found
                if is_input:
                    inputs[key] = dirent
                else:
                    st = _stat(dirent)
                    if st is not None:
                        statuses[key] = st
        return statuses, inputs

    def _entry(self, key: str | None, found: _Files, keep: dict[str | None, _Cached]) -> Entry:
        updated = _updated(found)
        if found.status is None:
            return Entry(key, "queued", updated)
        st = found.status
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._statuses.get(key)
        if cached is None or cached.ident != ident:
            self.files_read += 1
            read = read_status(self.layout.status(key))
            cached = _Cached(ident, read[0] if read else None)
        keep[key] = cached
        newer = found.input is not None and found.input.st_mtime_ns > st.st_mtime_ns
        if cached.status is None:
            return Entry(key, "unreadable", updated, newer)
        return Entry(key, cached.status.state.value, updated, newer, cached.status)


def _stat(dirent: os.DirEntry[str]) -> os.stat_result | None:
    """A regular file's stat, or None (gone since listed, or not a regular file)."""
    try:
        st = dirent.stat(follow_symlinks=False)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _updated(found: _Files) -> int:
    return max(s.st_mtime_ns for s in (found.input, found.status) if s is not None)

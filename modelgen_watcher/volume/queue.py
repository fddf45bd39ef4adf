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

``pending()`` counts the requests still waiting for an outcome (for the server's
``modelgen_pending_requests``, what an autoscaler scales watchers by): from its first
call on, each scan also ``lstat``s every input and reads every status whose file
changed since it was last read (a status's state is kept per request, a few bytes).
"""

from __future__ import annotations

import dataclasses
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
from .retry import is_transient
from .schemas import State, Status

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
    pending: int | None = None
    """Requests waiting for an outcome (see ``RecentRequests.pending``); None until that is asked for."""


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
    _counting: bool = field(default=False, repr=False)
    _final: dict[str | None, tuple[tuple[int, int, int], bool]] = field(default_factory=dict, repr=False)
    """Once ``pending`` is asked: each status's identity when read, and whether it was final."""

    def __post_init__(self) -> None:
        self._times = DirTimes(self.layout.root, self.racy_s)

    def pending(self) -> int:
        """Requests waiting for an outcome: an input with no status yet, one published again since its status, or
        one whose status is not final (``running``, a retried ``io_error``, unreadable). Counted at every scan
        from the first call on; OSError when the watch dir cannot be listed."""
        with self._lock:
            if not self._counting:
                self._counting = True
                self._last = None  # the next read scans, counting
        snap = self.read()
        return snap.pending or 0

    def read(self) -> Snapshot:
        """The newest requests; OSError when the watch dir cannot be listed."""
        with self._lock:
            now = time.monotonic()
            last = self._last
            if last is not None and now - last.scanned_at < self.min_interval:
                return last
            if last is not None and self._times.unchanged():
                last = self._last = dataclasses.replace(last, scanned_at=now)
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
        return Snapshot(entries, len(files), now, self._count_pending(statuses, inputs) if self._counting else None)

    def _count_pending(
        self, statuses: dict[str | None, os.stat_result], inputs: dict[str | None, os.DirEntry[str]]
    ) -> int:
        pending = 0
        final: dict[str | None, tuple[tuple[int, int, int], bool]] = {}
        for key, dirent in inputs.items():
            st = statuses.get(key)
            if st is None:
                pending += 1
                continue
            ident = (st.st_ino, st.st_mtime_ns, st.st_size)
            known = self._final.get(key)
            if known is None or known[0] != ident:
                read = read_status(self.layout.status(key))
                known = (ident, read is not None and _final(read[0]))
            final[key] = known
            if not known[1]:
                pending += 1
                continue
            found = _stat(dirent)
            if found is not None and found.st_mtime_ns > st.st_mtime_ns:  # published again since
                pending += 1
        self._final = final
        return pending

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


def _final(status: Status) -> bool:
    """An outcome the watcher will not change by itself: ``ok``, or an error that is not retried."""
    if status.state is State.ok:
        return True
    return status.state is State.error and status.error is not None and not is_transient(status.error.kind)


def _stat(dirent: os.DirEntry[str]) -> os.stat_result | None:
    """A regular file's stat, or None (gone since listed, or not a regular file)."""
    try:
        st = dirent.stat(follow_symlinks=False)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _updated(found: _Files) -> int:
    return max(s.st_mtime_ns for s in (found.input, found.status) if s is not None)

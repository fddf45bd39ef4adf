"""Whether a directory's names may have changed since it was last listed: one ``stat`` instead of a listing.

Creating, removing or renaming a name in a directory sets its mtime and ctime to the
current time (an input rewritten in place does not: that shows only in the file's own
times). So a directory whose inode, mtime and ctime are those it had when last listed
still has the same names, unless that listing came within one timestamp tick of a
change: a later change in the same tick would leave the times as they were. Such a
listing (a "racy" one, as git calls an index entry written in the same second as its
file) is not trusted, and the next look lists again. ``RACY_SECONDS`` covers coarse
timestamps: a few ms on Linux, 2 s on FAT.

The watcher's scans (``scan.py``) and the page's queue (``queue.py``) look through this.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RACY_SECONDS = 2.0
"""A directory whose mtime is this recent when listed is listed again at the next look."""


class DirTimes:
    """The times of one directory at its last trusted listing."""

    def __init__(self, path: Path | str, racy_seconds: float = RACY_SECONDS) -> None:
        self._path = os.fsdecode(path)
        self._racy_ns = racy_seconds * 1e9
        self._seen: tuple[int, int, int] | None = None

    def _stat(self) -> tuple[tuple[int, int, int], int]:
        st = os.stat(self._path)
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns), st.st_mtime_ns

    def unchanged(self) -> bool:
        """True when the names are those of the last listing (never before one, nor after a racy one).

        Raises OSError when the directory cannot be stat-ed.
        """
        return self._seen is not None and self._stat()[0] == self._seen

    @contextmanager
    def listing(self) -> Iterator[None]:
        """Wrap a listing: the times taken just before it are what ``unchanged`` compares with, unless racy.

        A listing that raises records nothing, so the next look lists again.
        """
        identity, mtime_ns = self._stat()
        racy = time.time_ns() - mtime_ns < self._racy_ns
        self._seen = None
        yield
        self._seen = None if racy else identity

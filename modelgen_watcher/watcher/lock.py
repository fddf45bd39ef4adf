"""One watcher per watch dir: the lock, and the check that it still guards the directory being served.

The lock is an ``flock`` on ``.modelgen/lock`` (which works across containers sharing a
volume on one kernel). A lock file only guards the directory it lives in, so the
holder also remembers the watch dir's identity (device and inode) and re-checks both
at every heartbeat: if the watch dir was deleted and created again, or ``.modelgen``
was removed and another watcher took a new lock, this daemon is no longer the only
one serving the path, and it exits non-zero so that its supervisor starts it afresh
on the new directory. A lock file that merely vanished (nobody else holds one) is
taken again.

The lock file's mtime, written at start, is also the daemon's start time on the
volume's own clock (see ``retry.judge``).

Shared-mode watchers (``--shared``) take the same lock shared (``LOCK_SH``): any number
of them at once, and none beside a lone watcher on the same kernel (containers of one
machine sharing a volume included). They write nothing into it. Across machines an
``flock`` proves nothing, so there only shared mode is safe; a watcher of each mode is
caught at start by the other's fresh heartbeat instead (``daemon``).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from ..logs import get_logger
from ..volume.names import Layout

log = get_logger(__name__)

_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})
"""What ``flock`` answers on a file system that has no locks (an NFS mount without a lock manager)."""


class AlreadyRunning(Exception):
    """Another watcher holds this watch dir's lock."""


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class WatchDirLock:
    """The lock of one watch dir, held for the daemon's life."""

    def __init__(self, layout: Layout, shared: bool = False) -> None:
        self._layout = layout
        self._shared = shared
        self._fh: IO[str] | None = None
        self._root_id: tuple[int, int] | None = None
        self.started_ns = 0
        """The lock file's mtime after it was written: this start, on the volume's clock."""

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the holder's pid."""
        self._root_id = _identity(os.stat(self._layout.root))
        self._fh = self._take(self._layout.lock_file)
        self.started_ns = os.fstat(self._fh.fileno()).st_mtime_ns

    def _take(self, path: Path) -> IO[str]:
        """Lock ``path`` through a read-only descriptor, then write our pid into it through another.

        The descriptor held for the daemon's life is read-only: a file open for writing
        would keep an operator from remounting the volume read-only ("mount point is busy").
        """
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        fh = os.fdopen(fd, "r", errors="replace")
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB if self._shared else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AlreadyRunning(self._held_by(fh)) from exc
        except OSError as exc:
            if not (self._shared and exc.errno in _NO_LOCKS):
                fh.close()
                raise
            # An NFS mount without a lock manager: shared mode does not need the lock (claims decide), it only
            # keeps a lone watcher of this kernel away, and the heartbeats do that across machines anyway.
            log.warning("lock.unavailable", lock=str(path), error=str(exc),
                        consequence="a lone watcher on this machine is kept away by the heartbeats only")
        if self._shared:
            return fh
        try:
            with open(path, "w") as pid_file:
                pid_file.write(str(os.getpid()))
        except BaseException:
            fh.close()
            raise
        return fh

    def _held_by(self, fh: IO[str]) -> str:
        """Who holds the lock we could not take, in words; closes ``fh``."""
        root = self._layout.root
        try:
            if self._shared:
                holder = fh.read().strip() or "unknown"
                return (f"a modelgen-watcher not in shared mode (pid {holder}) is serving {root}; "
                        "stop it, or run every watcher of this volume with --shared")
            try:  # shared holders let us share: they are shared-mode watchers
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = fh.read().strip() or "unknown"
                return f"another modelgen-watcher (pid {holder}) is serving {root}"
            return f"shared-mode watchers (--shared) are serving {root}; run this one with --shared too"
        finally:
            fh.close()

    def check_dir(self) -> str | None:
        """None while the watch dir's path still names the directory this daemon locked."""
        root = self._layout.root
        try:
            root_id = _identity(os.stat(root))
        except FileNotFoundError:
            return f"the watch dir {root} was removed"
        except OSError as exc:  # ESTALE on NFS, EIO: the directory cannot be trusted to be ours
            return f"the watch dir {root} cannot be checked: {exc}"
        if root_id != self._root_id:
            return f"the watch dir {root} was replaced by another directory"
        return None

    def check_file(self) -> str | None:
        """None while this daemon holds the lock file at the lock's path (taken again if it vanished)."""
        assert self._fh is not None
        try:
            on_disk = _identity(os.lstat(self._layout.lock_file))
        except FileNotFoundError:
            on_disk = None
        except OSError as exc:
            return f"the lock file cannot be checked: {exc}"
        if on_disk == _identity(os.fstat(self._fh.fileno())):
            return None
        # Our lock file is gone or replaced: take the one at the path now, unless another watcher has.
        try:
            fresh = self._take(self._layout.lock_file)
        except AlreadyRunning as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot take the lock again: {exc}"
        self._fh.close()
        self._fh = fresh
        return None

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

"""What Linux tells us about processes, for keeping model processes contained.

Everything here is best effort: where ``/proc`` or ``prctl`` does not exist (macOS, a
locked-down sandbox) the functions answer "unknown" (None, an empty list, False)
instead of raising, so containment degrades to the process group alone rather than
crashing the daemon.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

PROC = "/proc"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
PR_SET_CHILD_SUBREAPER = 36
"""From <linux/prctl.h>: orphaned descendants are re-parented to us instead of to init."""
MAX_ENVIRON_BYTES = 1024 * 1024
"""A process's initial environment is read at most this far (ours is a few KiB)."""


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` we use."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start_time: int
    """Field 22: clock ticks after boot. With the boot id it names a process for good, unlike a pid."""

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    @property
    def session_leader(self) -> bool:
        """True for a process started in a session of its own, as every model is."""
        return self.pid == self.pgrp == self.session


def _read(path: str, limit: int) -> bytes | None:
    """The start of a /proc file, or None if it cannot be read (gone, not ours, no /proc)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def stat_fields(path: str) -> list[bytes] | None:
    """The fields of a ``/proc/.../stat`` line (a process's or a thread's), numbered as in proc(5), from 1:
    ``[3]`` is the state, ``[14]`` utime; None if it cannot be read. Split after the command's last ``)``: the
    command (field 2) may hold spaces and brackets, and is left out."""
    raw = _read(path, 4096)
    if raw is None:
        return None
    return [b"", b"", b"", *raw.rpartition(b")")[2].split()]


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or None if it is gone (or there is no /proc)."""
    fields = stat_fields(f"{PROC}/{pid}/stat")
    if fields is None:
        return None
    try:
        return ProcStat(pid, fields[3].decode("ascii"), int(fields[4]), int(fields[5]), int(fields[6]), int(fields[22]))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def all_pids() -> list[int]:
    """Every process visible to us; empty where there is no /proc."""
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def children(pid: int) -> list[ProcStat]:
    """The live and zombie children of ``pid``.

    Read from the kernel's list of each of its threads' children (a few small reads);
    where that list is not available, from one pass over every process of the machine,
    which costs milliseconds on a busy host, at every heartbeat. The list may miss a
    child forked or re-parented while it is read: the next sweep finds it.
    """
    listed = _listed_children(pid)
    found = []
    for candidate in all_pids() if listed is None else listed:
        st = read_stat(candidate)
        if st is not None and st.ppid == pid:
            found.append(st)
    return found


def _listed_children(pid: int) -> list[int] | None:
    """Children from ``/proc/PID/task/TID/children`` (Linux 3.5+, CONFIG_PROC_CHILDREN); None where absent."""
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return None
    if not os.path.exists(f"{PROC}/{pid}/task/{pid}/children"):
        return None
    kids: list[int] = []
    for tid in tids:
        raw = _read(f"{PROC}/{pid}/task/{tid}/children", 1024 * 1024)
        if raw:  # None: the thread ended since the listing; its children went to another thread
            kids.extend(int(field) for field in raw.split() if field.isdigit())
    return kids


def environ_value(pid: int, name: str) -> str | None:
    """``name`` in the environment ``pid`` was started with; None if absent or unreadable (not our user)."""
    raw = _read(f"{PROC}/{pid}/environ", MAX_ENVIRON_BYTES)
    if not raw:
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode("utf-8", errors="replace")
    return None


def boot_id() -> str | None:
    """This boot's random id: a start time recorded before a reboot must never match a process after it."""
    raw = _read(BOOT_ID_FILE, 128)
    text = raw.decode("ascii", errors="replace").strip() if raw else ""
    return text or None


def become_subreaper() -> bool:
    """Make orphaned descendants of our children ours (PR_SET_CHILD_SUBREAPER); False where unsupported.

    Without it, a process that leaves a model's group and outlives the model is
    re-parented to init, out of our sight; with it, it becomes our child, which we can
    find, kill and reap. The flag is not inherited by our children.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return bool(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)

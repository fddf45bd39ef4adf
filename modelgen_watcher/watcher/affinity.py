"""The daemon's threads on one CPU, the model's processes on all of them (``--daemon-cpu``).

The daemon is one Python process: its threads take turns holding the interpreter lock,
and each releases it around every system call (a file opened, renamed, fsynced; a pipe
written). Where the threads run on different CPUs, each release wakes a waiting thread on
another CPU, and the releasing one, back from its call a microsecond later, must wait
and be woken in turn: two cross-CPU wake-ups for nearly every system call of a request.
On one CPU the waiter cannot run before the releasing thread is back, and takes the lock
again at once. Draining 2,000 requests on tmpfs with two warm workers, the daemon's
CPU a request went from 1.25 to 0.8 ms and its rate from about 770 to 1,150 a second
(1.5x; with one worker, 800 to 1,060). The lock lets the daemon use about one CPU
whatever it does, so one is all it gives up.

Only with warm runners (``entry``, ``fork``): their model processes are our host
(``modelside/host.py``), which takes back every CPU the daemon had (``--cpus``) before
it loads the model, so the model's own threads (BLAS, its pools) and what it forks are not
confined. A process per request (``subprocess``) would inherit the pin, so the daemon
is not pinned then.

Only a daemon that is its process (the ``run`` command): one run in a thread of another
program (``Daemon.run``) leaves that program's threads alone. Not in shared mode: several
watchers on one machine, each pinned where it started, could share one CPU for good.
The CPU is the one the daemon was running on when it pinned itself, the kernel's choice.
"""

from __future__ import annotations

import os

from ..logs import get_logger
from ..settings import WatcherSettings

log = get_logger(__name__)


def model_cpus(settings: WatcherSettings) -> frozenset[int] | None:
    """The CPUs the model's processes keep when the daemon runs its own threads on one of them; None when it does not
    (``--daemon-cpu off``, a process per request, shared mode, one CPU allowed, or no affinity calls here)."""
    if (settings.daemon_cpu == "off" or settings.runner_kind == "subprocess" or settings.shared
            or not hasattr(os, "sched_setaffinity")):
        return None
    allowed = frozenset(os.sched_getaffinity(0))
    return allowed if len(allowed) > 1 else None


def pin_threads(allowed: frozenset[int]) -> int | None:
    """Run every thread of this process, and the threads they start, on one CPU of ``allowed``; that CPU, or None
    (logged) when the system refused."""
    cpu = _current_cpu()
    if cpu not in allowed:
        cpu = min(allowed)
    try:
        _set_all({cpu})
    except OSError as exc:  # a cpuset changed under us, or no /proc: run unpinned, as before
        log.warning("daemon.cpu_unpinned", cpu=cpu, error=str(exc))
        try:
            _set_all(set(allowed))
        except OSError:
            pass
        return None
    return cpu


def _set_all(cpus: set[int]) -> None:
    """The CPUs of every thread of this process."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            continue  # that thread has ended


def _current_cpu() -> int | None:
    """The CPU this thread last ran on (field 39 of ``/proc/thread-self/stat``)."""
    try:
        with open("/proc/thread-self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return None

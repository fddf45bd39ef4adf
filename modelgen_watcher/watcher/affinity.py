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
whatever it does, so one is all it gives up. There, its threads take turns rather than
preempt each other (``SCHED_BATCH``: ``_take_turns``).

Only with warm runners (``entry``, ``fork``): their model processes are our host
(``modelside/host.py``), which takes back every CPU the daemon had (``--cpus``) before
it loads the model, so the model's own threads (BLAS, its pools) and what it forks are not
confined. A process per request (``subprocess``) would inherit the pin, so the daemon
is not pinned then.

Only a daemon that is its process (the ``run`` command): one run in a thread of another
program (``Daemon.run``) leaves that program's threads alone. The CPU is the one the
daemon was running on when it pinned itself, the kernel's choice. Shared watchers too:
several on one machine start where the kernel put each, and one that finds another
keeping its CPU busy moves (below). A shared watcher's requests make more system calls
than a lone one's (its claims), and gain more: draining 1,000 on tmpfs with the
reference model, 1.39-1.50 to 0.83-0.86 ms of CPU a request and 603-636 to 753-765 a
second for one watcher; two and three on this 2-CPU machine drained faster in three of
their four pairs of drains (``bench/RESULTS.md``, shared mode).

A pinned daemon cannot be moved by the kernel, so it moves itself (``Pin.check``, at
every heartbeat): when other processes took at least 30 % of its CPU over two
heartbeats in a row (a process pinned there, or a neighbour in a container that shares
the machine's CPUs) while another CPU it may use was busy at least 15 points less, its
threads go to the least busy one (``daemon.cpu_moved``), at that heartbeat or, by a coin
toss at each, a later one: two watchers crowding each other on one CPU read the same
figures, and would otherwise move together, to the same CPU. A busy daemon shares its CPU
fairly with a spinner there, which then takes only about half of it: that case, a drain
beside a crowder, is what the thresholds are set for (560-610 requests a second without
the move, 690-770 with it, draining 8,000 on tmpfs with one worker). Two workers
scoring on two CPUs load both alike: that moves nothing (their drains showed others at
0.17 of the daemon's CPU at most). Figures from ``/proc/stat`` (each CPU's time in
processes) and ``/proc/self/stat`` (the daemon's own, which is not "other"). After a
move it rests 15 heartbeats; and if the CPU it left went quiet once it had gone, the
load was one that follows it (its workers, woken where it writes to them), which no
move escapes: it rests 15 to 150, drawn (``daemon.cpu_stays``; two watchers that moved
together, each taken for the other's load, do not wake together).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

from ..logs import get_logger
from ..runners.procfs import stat_fields
from ..settings import WatcherSettings

log = get_logger(__name__)

BUSY_BY_OTHERS = 0.3
"""Share of its CPU's time that other processes took, over one heartbeat, for the daemon to look for another CPU."""
LESS_BUSY_BY = 0.15
"""How much less busy (share of its time) another CPU must have been for the daemon to move there."""
CHECKS_IN_A_ROW = 2
"""Heartbeats in a row that must find the CPU crowded: one busy second of a neighbour moves nothing."""


def model_cpus(settings: WatcherSettings) -> frozenset[int] | None:
    """The CPUs the model's processes keep when the daemon runs its own threads on one of them; None when it does not
    (``--daemon-cpu off``, a process per request, one CPU allowed, or no affinity calls here)."""
    if settings.daemon_cpu == "off" or settings.runner_kind == "subprocess" or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = frozenset(os.sched_getaffinity(0))
    return allowed if len(allowed) > 1 else None


def pin_threads(allowed: frozenset[int]) -> int | None:
    """Run every thread of this process, and the threads they start, on one CPU of ``allowed``; that CPU, or None
    (logged) when the system refused."""
    cpu = _current_cpu()
    if cpu not in allowed:
        cpu = min(allowed)
    return cpu if _pin_all(cpu, allowed) else None


def _pin_all(cpu: int, allowed: frozenset[int]) -> bool:
    """Every thread of this process onto ``cpu``, again while one is found elsewhere (a thread not yet moved may
    start another, which inherits the old CPU, between the listing and its own move), and taking turns there
    (``_take_turns``); True when done. When the system refuses (a cpuset changed under us, or no /proc), every
    thread gets ``allowed`` and the ordinary policy back (logged): the daemon runs unpinned, as before it pinned
    itself."""
    try:
        for _ in range(5):
            _set_all({cpu})
            if all(_affinity(tid) in (None, {cpu}) for tid in os.listdir("/proc/self/task")):
                break
    except OSError as exc:
        log.warning("daemon.cpu_unpinned", cpu=cpu, error=str(exc))
        with contextlib.suppress(OSError):
            _set_all(set(allowed))
        _take_turns(False)
        return False
    _take_turns(True)
    return True


_turned = False
"""Whether ``_take_turns`` switched this process's threads to ``SCHED_BATCH``: only then are they switched back."""


def _take_turns(on: bool) -> None:
    """The daemon's threads switched to ``SCHED_BATCH`` (``on``) or back to the ordinary policy (only if this
    module switched them); threads started later inherit it.

    Why: a thread woken by the interpreter lock's release (every system call of another
    thread releases it) preempts the releasing thread on their one CPU, at once, and that
    thread, back from its call, must wait to be woken in turn. ``SCHED_BATCH`` keeps the
    scheduler's fairness between the daemon's threads and every other process, but a woken
    batch thread does not preempt: it runs when the running thread blocks (a fsync, a
    worker's reply) or its slice ends, which is when the lock is free anyway. Draining 3,000
    requests with two warm workers, eight drains each, interleaved: on tmpfs, context
    switches 9.7 to 4.6 a request, the daemon's CPU a request 0.76 to 0.70 ms, 1,206 to
    1,292 requests a second (medians); on a journalled ext4, switches 15 to 9.4 and the
    same rate (651 a second either way). Only from or to the
    ordinary policy (``SCHED_OTHER``): a policy an operator set (``chrt``) is left alone. The
    model's processes take back the policy the daemon had (``WarmRunner``, ``modelside/host.py``).
    Refused (a seccomp profile, say): logged, and the daemon stays pinned without it."""
    batch, other = getattr(os, "SCHED_BATCH", None), getattr(os, "SCHED_OTHER", None)
    if batch is None or other is None or on == _turned:
        return
    before, after = (other, batch) if on else (batch, other)

    def switch(tid: int) -> None:
        global _turned
        if os.sched_getscheduler(tid) == before:
            os.sched_setscheduler(tid, after, os.sched_param(0))
            _turned = on

    try:
        _each_thread(switch)
    except OSError as exc:
        log.info("daemon.policy_unchanged", policy="batch" if on else "other", error=str(exc))


def _set_all(cpus: set[int]) -> None:
    """The CPUs of every thread of this process."""
    _each_thread(lambda tid: os.sched_setaffinity(tid, cpus))


def _each_thread(action: Callable[[int], None]) -> None:
    """``action(tid)`` for every thread of this process; a thread that has ended meanwhile is skipped."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            action(int(tid))


def _affinity(tid: str) -> set[int] | None:
    """A thread's CPUs; None once it has ended."""
    try:
        return os.sched_getaffinity(int(tid))
    except OSError:
        return None


def _current_cpu() -> int | None:
    """The CPU this thread last ran on (field 39 of ``/proc/thread-self/stat``)."""
    fields = stat_fields("/proc/thread-self/stat")
    try:
        return None if fields is None else int(fields[39])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class CpuTimes:
    """Clock ticks since boot: each CPU's (busy, total) from ``/proc/stat``, and one process's own CPU time.

    Busy is the time in processes (user, nice, system). Interrupts and steal are left
    out: they grow where the daemon's own I/O completes, and a VM's idle vCPU has no
    steal, so counting them would make the daemon chase load it brings with it."""

    cpus: dict[int, tuple[int, int]]
    own: int


def read_cpu_times(pid: int | str = "self") -> CpuTimes | None:
    """Now's ``CpuTimes`` (``own``: process ``pid``'s); None where ``/proc`` does not say (then nothing moves)."""
    cpus: dict[int, tuple[int, int]] = {}
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if not line.startswith(b"cpu") or line.startswith(b"cpu "):
                    continue
                name, *fields = line.split()
                ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
                cpus[int(name[3:])] = (ticks[0] + ticks[1] + ticks[2], sum(ticks))
        stat = stat_fields(f"/proc/{pid}/stat")
        if stat is None:
            return None
        own = int(stat[14]) + int(stat[15])  # utime, stime: the same ticks as /proc/stat's
    except (OSError, ValueError, IndexError):
        return None
    return CpuTimes(cpus, own)


def busy_share(before: CpuTimes, after: CpuTimes, cpu: int, own: bool = False) -> float | None:
    """The share of ``cpu``'s time spent in processes between two readings, less the process read's own
    (``own``: the daemon is pinned there, and its own time is not crowding); None if a reading lacks it."""
    if cpu not in before.cpus or cpu not in after.cpus:
        return None
    total = after.cpus[cpu][1] - before.cpus[cpu][1]
    if total <= 0:
        return None
    busy = after.cpus[cpu][0] - before.cpus[cpu][0]
    return (busy - (max(0, after.own - before.own) if own else 0)) / total


def better_cpu(before: CpuTimes, after: CpuTimes, cpu: int, allowed: frozenset[int]) -> int | None:
    """The CPU of ``allowed`` to move to from ``cpu``, the daemon's, judged on the time between two readings; None to
    stay. Moves when other processes took at least ``BUSY_BY_OTHERS`` of ``cpu``'s time and the least busy other CPU
    was busy at least ``LESS_BUSY_BY`` less than that."""
    by_others = busy_share(before, after, cpu, own=True)
    if by_others is None or by_others < BUSY_BY_OTHERS:
        return None
    candidates = [(b, n) for n in sorted(allowed - {cpu}) if (b := busy_share(before, after, n)) is not None]
    if not candidates:
        return None
    least, target = min(candidates)
    return target if least + LESS_BUSY_BY <= by_others else None


REST_AFTER_MOVE = 15
"""Heartbeats after a move before the next may come (30 s at the default 2 s)."""
REST_WHEN_FOLLOWED = 150
"""Heartbeats without a move, at most, once the load of the CPU left went quiet with the daemon gone (5 minutes):
it was load that follows the daemon (its workers, woken where it writes to them; its I/O), which no move escapes.
The rest is drawn between ``REST_AFTER_MOVE`` and this: two shared watchers that moved together off one CPU, each
taking the other for its own load, wake at different times, and the first to find the other there moves."""
MOVE_CHANCE = 0.5
"""A due move is made at a heartbeat with this chance, else considered again at the next one: two daemons crowding
each other on one CPU (shared watchers on one machine) read the same figures, and would otherwise move together, to
the same CPU."""


class Pin:
    """The CPU the daemon's threads run on, moved at a heartbeat when others crowd it (see the module docstring)."""

    def __init__(self, cpu: int, allowed: frozenset[int], *,
                 read: Callable[[], CpuTimes | None] = read_cpu_times,
                 move: Callable[[int], bool] | None = None,
                 current: Callable[[], set[int]] | None = None,
                 draw: Callable[[], float] = random.random) -> None:
        """``read``, ``move`` and ``current`` (this process's CPU times, moving its threads, its CPUs now) are
        ``/proc`` and the affinity calls (``_pin_all``: False when refused, and then unpinned), and ``draw`` a
        number in [0, 1) for the coin and the rest (``MOVE_CHANCE``, ``REST_WHEN_FOLLOWED``), but for tests."""
        self.cpu = cpu
        self.allowed = allowed
        self._read = read
        self._move = move or functools.partial(_pin_all, allowed=allowed)
        self._current = current or (lambda: os.sched_getaffinity(0))
        self._draw = draw
        self._last = read()
        self._crowded = 0
        self._rest = 0
        self._left: int | None = None
        """The CPU the last move left, watched at the next heartbeat: quiet then, the load had followed us."""
        self._managed = True

    def check(self) -> int | None:
        """Called at every heartbeat; the new CPU when the daemon moved (logged), else None."""
        if not self._managed:
            return None
        now = self._read()
        before, self._last = self._last, now
        if before is None or now is None:
            return None
        try:
            current = self._current()
        except OSError:
            current = set()
        if current != {self.cpu}:  # its CPU went offline (the kernel unpinned it), or a person
            self._managed = False
            _take_turns(False)  # on several CPUs again: nothing to take turns on
            log.warning("daemon.cpu_unmanaged", cpu=self.cpu, reason="the daemon's CPUs were changed from outside")
            return None
        if self._left is not None:
            left_busy = busy_share(before, now, self._left)
            if left_busy is not None and left_busy < BUSY_BY_OTHERS:
                self._rest = REST_AFTER_MOVE + int(self._draw() * (REST_WHEN_FOLLOWED - REST_AFTER_MOVE + 1))
                log.info("daemon.cpu_stays", cpu=self.cpu, heartbeats=self._rest,
                         reason="the load of the CPU it left followed it")
            self._left = None
        if self._rest:
            self._rest -= 1
            return None
        target = better_cpu(before, now, self.cpu, self.allowed)
        self._crowded = self._crowded + 1 if target is not None else 0
        if target is None or self._crowded < CHECKS_IN_A_ROW or self._draw() >= MOVE_CHANCE:
            return None
        self._crowded = 0
        if not self._move(target):  # refused, and unpinned: no more moves
            self._managed = False
            return None
        log.info("daemon.cpu_moved", cpu=target, was=self.cpu,
                 reason="other processes kept its CPU busy while this one was less so")
        self._left, self.cpu, self._rest = self.cpu, target, REST_AFTER_MOVE
        return target

"""When a pinned daemon moves to another CPU (``affinity.better_cpu``): only when others crowd its own and another
is clearly less busy. Readings are made up here: ticks of ``/proc/stat`` between two heartbeats."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modelgen_watcher.watcher.affinity import (
    MOVE_CHANCE,
    REST_AFTER_MOVE,
    REST_WHEN_FOLLOWED,
    CpuTimes,
    Pin,
    better_cpu,
)

ALL = frozenset({0, 1, 2})


def times(own: int, **busy: int) -> CpuTimes:
    """100 ticks elapsed on every CPU; ``busy`` ticks of them on ``cpu<n>`` (0 for the rest)."""
    return CpuTimes({n: (busy.get(f"cpu{n}", 0), 100) for n in ALL}, own)


ZERO = CpuTimes(dict.fromkeys(ALL, (0, 0)), 0)


def test_a_cpu_crowded_by_others_is_left_for_the_least_busy_one():
    assert better_cpu(ZERO, times(own=10, cpu0=100, cpu1=40, cpu2=5), 0, ALL) == 2


def test_a_cpu_busy_with_the_daemon_itself_is_kept():
    """A drain: the daemon keeps its CPU busy, and that is not crowding."""
    assert better_cpu(ZERO, times(own=90, cpu0=100, cpu1=0, cpu2=0), 0, ALL) is None


def test_nowhere_less_busy_nothing_moves():
    """Two workers scoring on every CPU alike: moving would gain nothing."""
    assert better_cpu(ZERO, times(own=20, cpu0=90, cpu1=80, cpu2=75), 0, ALL) is None


def test_others_under_a_third_of_its_time_nothing_moves():
    assert better_cpu(ZERO, times(own=0, cpu0=25, cpu1=0, cpu2=0), 0, ALL) is None


def test_a_busy_daemon_sharing_its_cpu_with_a_spinner_moves():
    """The fair share: the daemon and a spinner take half each; another CPU runs its worker, a quarter busy."""
    assert better_cpu(ZERO, times(own=50, cpu0=100, cpu1=25, cpu2=30), 0, ALL) == 1


def test_only_the_cpus_it_may_use_are_candidates():
    assert better_cpu(ZERO, times(own=0, cpu0=100, cpu1=90, cpu2=0), 0, frozenset({0, 1})) is None


def test_a_cpu_missing_from_a_reading_is_not_a_candidate():
    after = CpuTimes({0: (100, 100), 1: (100, 100)}, 0)
    assert better_cpu(ZERO, after, 0, ALL) is None  # cpu2 went offline: no reading, no move


HEADS = 0.0
"""A draw that makes a due move now, and the shortest rest."""
TAILS = 0.999
"""A draw that leaves a due move to the next heartbeat, and the longest rest."""


class Machine:
    """Made-up readings for ``Pin``: each check, 100 ticks pass on every CPU, busy as ``load`` says then."""

    def __init__(self) -> None:
        self.ticks = dict.fromkeys(ALL, (0, 0))
        self.own = 0
        self.pinned = {0}
        self.moves: list[int] = []

    def tick(self, own: int, load: dict[int, int]) -> None:
        self.ticks = {n: (b + load.get(n, 0), t + 100) for n, (b, t) in self.ticks.items()}
        self.own += own

    def read(self) -> CpuTimes:
        return CpuTimes(dict(self.ticks), self.own)

    def move(self, cpu: int) -> bool:
        self.moves.append(cpu)
        self.pinned = {cpu}
        return True

    def pin(self, *draws: float) -> Pin:
        """A daemon pinned to CPU 0 of this machine; its draws (coin tosses, rests) in turn, heads once they run
        out."""
        it = iter(draws)
        return Pin(0, ALL, read=self.read, move=self.move, current=lambda: self.pinned, draw=lambda: next(it, HEADS))

    def checks(self, pin: Pin, own: int, load: dict[int, int], times: int) -> list[int | None]:
        """``times`` heartbeats under the same load, ``pin`` checked at each: what each check answered."""
        answers = []
        for _ in range(times):
            self.tick(own, load)
            answers.append(pin.check())
        return answers


def test_a_crowded_cpu_is_left_after_two_heartbeats_and_a_pinned_crowder_stays_behind():
    m = Machine()
    pin = m.pin()
    m.tick(5, {0: 100, 1: 10})
    assert pin.check() is None  # once is not enough
    m.tick(5, {0: 100, 1: 10})
    assert pin.check() == 2 and m.moves == [2]  # the least busy
    stays = REST_AFTER_MOVE + 2  # the spinner stays on 0: the daemon stays on 2
    assert m.checks(pin, 5, {0: 100, 2: 5}, stays) == [None] * stays
    assert m.moves == [2]


def test_load_that_follows_the_daemon_stops_the_moves():
    m = Machine()
    pin = m.pin(HEADS, TAILS)
    m.checks(pin, 10, {0: 90, 1: 0, 2: 40}, 2)
    assert m.moves == [1]
    # its workers went with it: 1 now as 0 was, 0 quiet
    assert m.checks(pin, 10, {1: 90, 2: 40}, REST_WHEN_FOLLOWED) == [None] * REST_WHEN_FOLLOWED
    assert m.moves == [1]


def test_a_due_move_waits_for_the_coin():
    """Two watchers crowding each other on one CPU read the same figures: each moves at a heartbeat only on a coin
    toss, so that they rarely move together, to the same CPU."""
    assert 0 < MOVE_CHANCE < 1
    m = Machine()
    pin = m.pin(TAILS, TAILS, HEADS)
    assert m.checks(pin, 50, {0: 100, 1: 10, 2: 40}, 4) == [None, None, None, 1]  # due at the second, tails twice
    assert m.moves == [1]


def test_the_rest_after_following_load_is_drawn():
    """Two watchers that moved together, each taking the other for load that follows it, rest for different
    times: the first to wake finds the other on its CPU, and moves."""
    m = Machine()
    pin = m.pin(HEADS, HEADS)
    m.checks(pin, 50, {0: 100, 1: 10, 2: 40}, 2)
    assert m.moves == [1]
    # 1 crowded as 0 was, 0 quiet: "followed"; the shortest rest (from the check that saw 0 quiet), two crowded checks
    assert m.checks(pin, 50, {1: 100, 2: 40}, REST_AFTER_MOVE + 2) == [None] * (REST_AFTER_MOVE + 1) + [0]
    assert m.moves == [1, 0]


def test_a_daemon_whose_cpus_changed_from_outside_is_left_alone():
    m = Machine()
    pin = Pin(0, ALL, read=m.read, move=m.move, current=lambda: {0, 1})
    for _ in range(3):
        m.tick(0, {0: 100})
        assert pin.check() is None
    assert m.moves == []


_TURNS = """
import os, sys, threading
from modelgen_watcher.watcher import affinity
if sys.argv[1] != "other":
    os.sched_setscheduler(0, getattr(os, "SCHED_" + sys.argv[1].upper()), os.sched_param(0))
affinity._take_turns(True)
seen = []
t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
t.start(); t.join()
print(os.sched_getscheduler(0), seen[0], end=" ")
affinity._take_turns(False)
print(os.sched_getscheduler(0))
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no scheduling policies here")
@pytest.mark.parametrize(("start", "expected"), [
    ("other", ["SCHED_BATCH", "SCHED_BATCH", "SCHED_OTHER"]),  # taking turns, inherited by a new thread, undone
    ("idle", ["SCHED_IDLE", "SCHED_IDLE", "SCHED_IDLE"]),  # what an operator set (chrt) is left as it is
    ("batch", ["SCHED_BATCH", "SCHED_BATCH", "SCHED_BATCH"]),  # and not undone: this module did not set it
])
def test_the_daemon_takes_turns_only_from_the_ordinary_policy(start, expected):
    """In a process of its own: a policy is the process's business, not this test runner's."""
    out = subprocess.run([sys.executable, "-c", _TURNS, start], capture_output=True, text=True, check=True).stdout
    assert [int(p) for p in out.split()] == [getattr(os, name) for name in expected]

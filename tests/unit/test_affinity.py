"""When a pinned daemon moves to another CPU (``affinity.better_cpu``): only when others crowd its own and another
is clearly less busy. Readings are made up here: ticks of ``/proc/stat`` between two heartbeats."""

from __future__ import annotations

from modelgen_watcher.watcher.affinity import CpuTimes, better_cpu

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


def test_others_under_half_of_its_time_nothing_moves():
    assert better_cpu(ZERO, times(own=0, cpu0=45, cpu1=0, cpu2=0), 0, ALL) is None


def test_only_the_cpus_it_may_use_are_candidates():
    assert better_cpu(ZERO, times(own=0, cpu0=100, cpu1=90, cpu2=0), 0, frozenset({0, 1})) is None


def test_a_cpu_missing_from_a_reading_is_not_a_candidate():
    after = CpuTimes({0: (100, 100), 1: (100, 100)}, 0)
    assert better_cpu(ZERO, after, 0, ALL) is None  # cpu2 went offline: no reading, no move

"""Claims (shared mode): generations, one winner among racers, leases on the volume's clock, fence, release.

Every test runs on real files in a temp directory; several ``Claims`` objects with
different ids stand for watchers on different machines (they share nothing but the
directory). A claim "dies" the way it does when its watcher stops renewing it: its
mtime falls behind the volume's clock, here by setting it back with ``os.utime``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from modelgen_watcher.volume import fsio
from modelgen_watcher.volume.claims import ClaimDoc, ClaimLost, Claims, Held, Taken, VolumeClock

NAME = "gps_input_route.k1.json"
LEASE = 30.0


class Volume:
    """A claims directory and the temp and clock files of each watcher using it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.claims_dir = root / "claims"
        self.claims_dir.mkdir(parents=True, exist_ok=True)

    def watcher(self, wid: str, lease: float = LEASE) -> Claims:
        area = self.root / "watchers" / wid
        (area / "tmp").mkdir(parents=True, exist_ok=True)
        return Claims(self.claims_dir, area / "tmp", wid, lease, VolumeClock(area / "clock"))

    def files(self) -> list[str]:
        return sorted(p.name for p in self.claims_dir.iterdir())

    def age(self, name: str, seconds: float) -> None:
        """Make a claim look ``seconds`` old: as if its watcher stopped renewing it that long ago."""
        path = self.claims_dir / name
        then = os.stat(path).st_mtime_ns - int(seconds * 1e9)
        os.utime(path, ns=(then, then))


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    return Volume(tmp_path)


def held(result: Held | Taken) -> Held:
    assert isinstance(result, Held), f"expected the claim, got {result}"
    return result


def test_the_volume_clock_is_the_file_systems_not_this_process_clock(tmp_path: Path, monkeypatch) -> None:
    clock = VolumeClock(tmp_path / "clock")
    probe = tmp_path / "probe"
    probe.touch()
    volume_now = os.stat(probe).st_mtime_ns
    monkeypatch.setattr(time, "time", lambda: 0.0)  # a wall clock that is badly wrong changes nothing
    monkeypatch.setattr(time, "time_ns", lambda: 0)
    assert abs(clock.sync() - volume_now) < 1e9
    first = clock.now_ns()
    time.sleep(0.05)
    assert 0.04e9 < clock.now_ns() - first < 1e9  # carried forward on the monotonic clock
    assert abs(clock.now() - volume_now / 1e9) < 1.0


def test_a_fresh_request_is_claimed_at_generation_one(volume: Volume) -> None:
    a = volume.watcher("a")
    claim = held(a.acquire(NAME, sha="s1", mtime_ns=10))
    assert (claim.generation, claim.takeover, claim.doc.interruptions) == (1, False, 0)
    assert volume.files() == [f"{NAME}.1"]
    doc = ClaimDoc.model_validate_json((volume.claims_dir / f"{NAME}.1").read_bytes())
    assert (doc.watcher, doc.input_sha256, doc.input_mtime_ns, doc.token) == ("a", "s1", 10, claim.doc.token)
    assert list((volume.root / "watchers" / "a" / "tmp").iterdir()) == []  # the linked temp file is gone


def test_a_live_claim_is_taken_and_says_when_to_look_again(volume: Volume) -> None:
    held(volume.watcher("a").acquire(NAME, sha="s1"))
    volume.age(f"{NAME}.1", 10)
    taken = volume.watcher("b").acquire(NAME, sha="s1")
    assert isinstance(taken, Taken) and taken.owner == "a"
    assert LEASE - 10 - 1 < taken.retry_after <= LEASE - 10 + 1.5  # the lease's rest, plus a little
    assert volume.files() == [f"{NAME}.1"]


def test_a_dead_claim_is_taken_over_by_the_next_generation(volume: Volume) -> None:
    a, b = volume.watcher("a"), volume.watcher("b")
    old = held(a.acquire(NAME, sha="s1", mtime_ns=10))
    volume.age(f"{NAME}.1", LEASE + 1)
    new = held(b.acquire(NAME, sha="s1", mtime_ns=10))
    assert (new.generation, new.takeover, new.doc.interruptions) == (2, True, 1)
    assert new.previous is not None and new.previous.watcher == "a"
    assert volume.files() == [f"{NAME}.2"]  # the dead one removed
    with pytest.raises(ClaimLost):
        a.fence(old)
    assert old.lost
    b.fence(new)  # still b's


def test_a_takeover_for_other_bytes_or_another_publication_counts_from_zero(volume: Volume) -> None:
    a, b, c = volume.watcher("a"), volume.watcher("b"), volume.watcher("c")
    held(a.acquire(NAME, sha="s1", mtime_ns=10))
    volume.age(f"{NAME}.1", LEASE + 1)
    assert held(b.acquire(NAME, sha="s2", mtime_ns=10)).doc.interruptions == 0
    volume.age(f"{NAME}.2", LEASE + 1)
    assert held(c.acquire(NAME, sha="s2", mtime_ns=20)).doc.interruptions == 0  # the same bytes published again


def test_interruptions_add_up_and_give_up_at_the_limit_for_good(volume: Volume) -> None:
    held(volume.watcher("w0").acquire(NAME, sha="s1", mtime_ns=10, give_up_at=3))
    counts = []
    for n in range(1, 5):
        volume.age(f"{NAME}.{n}", LEASE + 1)
        claim = held(volume.watcher(f"w{n}").acquire(NAME, sha="s1", mtime_ns=10, give_up_at=3))
        counts.append((claim.doc.interruptions, claim.doc.given_up))
    assert counts == [(1, False), (2, False), (3, True), (3, True)]  # given up stays given up, uncounted


def test_release_removes_the_claim_and_the_next_request_starts_afresh(volume: Volume) -> None:
    a, b = volume.watcher("a"), volume.watcher("b")
    claim = held(a.acquire(NAME))
    a.release(claim)
    assert volume.files() == [] and a.held == 0
    assert held(b.acquire(NAME)).generation == 1


def test_the_fence_sees_a_takeover_before_the_dead_claim_is_removed(volume: Volume) -> None:
    a = volume.watcher("a")
    claim = held(a.acquire(NAME))
    fsio.write_new(volume.claims_dir / f"{NAME}.2", b"{}")  # a taker has won generation 2, not yet cleaned up
    with pytest.raises(ClaimLost):
        a.fence(claim)


def test_a_reused_generation_is_not_taken_for_ours(volume: Volume) -> None:
    """A paused owner's claim is taken over, the taker publishes and lets go, a new request takes generation 1
    again: the paused owner's fence still fails (the token differs), so it cannot publish over the newer work."""
    a, b, c = volume.watcher("a"), volume.watcher("b"), volume.watcher("c")
    paused = held(a.acquire(NAME))
    volume.age(f"{NAME}.1", LEASE + 1)
    b.release(held(b.acquire(NAME)))
    assert volume.files() == []
    held(c.acquire(NAME))
    assert volume.files() == [f"{NAME}.1"]
    with pytest.raises(ClaimLost):
        a.fence(paused)
    a.release(paused)  # a lost claim is never removed by its old owner
    assert volume.files() == [f"{NAME}.1"]


def test_renewal_keeps_a_claim_alive_and_finds_one_lost(volume: Volume) -> None:
    a, b = volume.watcher("a"), volume.watcher("b")
    claim = held(a.acquire(NAME))
    volume.age(f"{NAME}.1", LEASE - 1)
    assert a.renew() == []
    assert isinstance(b.acquire(NAME), Taken)  # renewed: young again
    cancelled = threading.Event()
    claim.on_lost(cancelled.set)
    volume.age(f"{NAME}.1", LEASE + 1)
    held(b.acquire(NAME))
    assert a.renew() == [claim] and cancelled.is_set()  # the run is cancelled at once
    assert a.renew() == [] and a.held == 0  # reported once


def test_a_leftover_of_this_watchers_earlier_life_is_taken_over_at_once(volume: Volume) -> None:
    held(volume.watcher("a").acquire(NAME, sha="s1", mtime_ns=10))
    again = volume.watcher("a")  # the same id, a new process: a pod restarted under its name
    claim = held(again.acquire(NAME, sha="s1", mtime_ns=10))
    assert (claim.generation, claim.takeover, claim.doc.interruptions) == (2, True, 1)
    assert isinstance(volume.watcher("b").acquire(NAME), Taken)


def test_a_claim_held_is_not_taken_over_by_its_own_watcher(volume: Volume) -> None:
    a = volume.watcher("a")
    held(a.acquire(NAME))
    assert isinstance(a.acquire(NAME), Taken)


def test_keep_leaves_the_claim_to_expire(volume: Volume) -> None:
    a, b = volume.watcher("a"), volume.watcher("b")
    claim = held(a.acquire(NAME))
    a.keep(claim)
    assert a.held == 0 and volume.files() == [f"{NAME}.1"]
    assert a.renew() == []
    assert isinstance(b.acquire(NAME), Taken)
    volume.age(f"{NAME}.1", LEASE + 1)
    assert held(b.acquire(NAME)).generation == 2


def test_an_unreadable_claim_is_live_by_its_time_and_counts_nothing_when_taken_over(volume: Volume) -> None:
    (volume.claims_dir / f"{NAME}.1").write_bytes(b"")  # created, not yet written (no hard links there)
    assert isinstance(volume.watcher("a").acquire(NAME), Taken)
    volume.age(f"{NAME}.1", LEASE + 1)
    claim = held(volume.watcher("b").acquire(NAME, sha="s1"))
    assert (claim.generation, claim.doc.interruptions, claim.previous) == (2, 0, None)


def test_the_retention_claim_lives_for_its_own_lease(volume: Volume) -> None:
    a, b = volume.watcher("a"), volume.watcher("b")
    sweep = held(a.acquire(".retention", lease=3600))
    a.keep(sweep)  # its time says when the last sweep was
    volume.age(".retention.1", 600)
    assert isinstance(b.acquire(".retention", lease=3600), Taken)  # 10 minutes ago: not due
    volume.age(".retention.1", 3600)
    assert held(b.acquire(".retention", lease=3600)).generation == 2
    assert volume.files() == [".retention.2"]


def test_live_names_and_pruning_of_dead_claims_whose_input_is_gone(volume: Volume) -> None:
    a = volume.watcher("a")
    for name in ("gps_input_route.live.json", "gps_input_route.dead.json", "gps_input_route.kept.json"):
        held(a.acquire(name))
    volume.age("gps_input_route.dead.json.1", LEASE + 1)
    volume.age("gps_input_route.kept.json.1", LEASE + 1)
    assert a.live_names() == {"gps_input_route.live.json"}
    gone = {"gps_input_route.dead.json", "gps_input_route.live.json"}
    assert a.prune(lambda name: name in gone) == 1  # live ones stay, whatever their input
    assert volume.files() == ["gps_input_route.kept.json.1", "gps_input_route.live.json.1"]


def test_names_that_share_a_prefix_have_their_own_generations(volume: Volume) -> None:
    a = volume.watcher("a")
    held(a.acquire("gps_input_route.json"))
    held(a.acquire("gps_input_route.json.json"))  # the key "json"
    assert volume.files() == ["gps_input_route.json.1", "gps_input_route.json.json.1"]


@pytest.mark.parametrize("dead", [False, True], ids=["fresh", "takeover"])
def test_of_many_threads_racing_for_one_request_exactly_one_wins(volume: Volume, dead: bool) -> None:
    for round_ in range(30):
        name = f"gps_input_route.r{round_}.json"
        if dead:
            held(volume.watcher("gone").acquire(name))
            volume.age(f"{name}.1", LEASE + 1)
        racers = [volume.watcher(f"t{i}") for i in range(8)]
        start = threading.Barrier(len(racers))
        results: list[Held | Taken] = [Taken(0, None)] * len(racers)
        threads = [threading.Thread(target=_race, args=(racers, results, i, name, start)) for i in range(len(racers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if isinstance(r, Held)]
        assert len(winners) == 1, f"round {round_}: {results}"
        assert volume.files().count(f"{name}.{2 if dead else 1}") == 1
        assert [f for f in volume.files() if f.startswith(name + ".")] == [f"{name}.{winners[0].generation}"]


def _race(racers: list[Claims], results: list[Held | Taken], i: int, name: str, start: threading.Barrier) -> None:
    start.wait()
    results[i] = racers[i].acquire(name)


def _race_in_process(root: str, wid: str, name: str, start: multiprocessing.synchronize.Barrier,
                     won: multiprocessing.queues.Queue[str]) -> None:
    claims = Volume(Path(root)).watcher(wid)
    start.wait()
    if isinstance(claims.acquire(name), Held):
        won.put(wid)


def test_of_many_processes_racing_for_one_request_exactly_one_wins(volume: Volume) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        name = f"gps_input_route.p{round_}.json"
        start = ctx.Barrier(6)
        won: multiprocessing.queues.Queue[str] = ctx.Queue()
        procs = [ctx.Process(target=_race_in_process, args=(str(volume.root), f"p{i}", name, start, won))
                 for i in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        winners = []
        while not won.empty():
            winners.append(won.get())
        assert len(winners) == 1, f"round {round_}: {winners}"


def test_exclusive_create_with_temps_on_another_file_system_still_has_one_winner(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system other than the temp dir's")
    temps = Path(tempfile.mkdtemp(dir=shm))
    try:  # link fails with EXDEV: O_EXCL decides
        assert fsio.create_exclusive(tmp_path / "c.1", b"first", temps)
        assert not fsio.create_exclusive(tmp_path / "c.1", b"second", temps)
        assert (tmp_path / "c.1").read_bytes() == b"first"
        assert list(temps.iterdir()) == []
    finally:
        shutil.rmtree(temps)


def test_a_takeover_while_the_request_only_waited_for_a_worker_counts_nothing(volume: Volume) -> None:
    a, b, c = volume.watcher("a"), volume.watcher("b"), volume.watcher("c")
    waiting = held(a.acquire(NAME, sha="s1", mtime_ns=10))
    a.mark_waiting(waiting, True)  # its watcher is killed while another request has the one worker
    a.fence(waiting)  # the rewrite kept the claim a's
    volume.age(f"{NAME}.1", LEASE + 1)
    running = held(b.acquire(NAME, sha="s1", mtime_ns=10))
    assert running.doc.interruptions == 0 and not running.doc.waiting
    with pytest.raises(ClaimLost):
        a.mark_waiting(waiting, False)  # not a's any more: nothing written
    b.mark_waiting(running, True)
    b.mark_waiting(running, False)  # a worker took it: a stop now counts
    volume.age(f"{NAME}.2", LEASE + 1)
    assert held(c.acquire(NAME, sha="s1", mtime_ns=10)).doc.interruptions == 1
    assert volume.files() == [f"{NAME}.3"]


def test_a_check_from_another_thread_during_a_waiting_rewrite_never_finds_the_claim_lost(volume: Volume) -> None:
    """The running status's fence and the heartbeat's renewal run on their own threads while the request's thread
    rewrites the claim (``mark_waiting``): a check that read the file just before a rename and compares after it
    must still know the bytes for its own (a spurious loss cancels a live run and lets a second watcher score)."""
    import sys

    a = volume.watcher("a")
    claim = held(a.acquire(NAME, sha="s1", mtime_ns=10))
    stop = threading.Event()
    failures: list[BaseException] = []

    def check() -> None:
        try:
            while not stop.is_set():
                a.fence(claim)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as it goes: between a read and its comparison too
    checker = threading.Thread(target=check)
    try:
        checker.start()
        for i in range(10000):
            if failures:
                break
            a.mark_waiting(claim, i % 2 == 0)
    finally:
        stop.set()
        if checker.is_alive():
            checker.join()
        sys.setswitchinterval(interval)
    assert failures == []
    assert a.renew() == [] and not claim.lost

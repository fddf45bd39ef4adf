"""In-flight records (the crash counter) and the watch dir lock, on real temp directories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelgen_watcher.volume import fsio
from modelgen_watcher.volume.names import Layout, Names, Request
from modelgen_watcher.watcher import inflight
from modelgen_watcher.watcher.lock import AlreadyRunning, WatchDirLock


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path / "data", Names())
    lay.root.mkdir()
    for d in (lay.state_dir, lay.inflight_dir, lay.parked_dir):
        fsio.ensure_private_dir(d)
    return lay


def _publish(layout: Layout, key: str) -> None:
    layout.input(key).write_bytes(b"{}")


def _begin(layout: Layout, req: Request, sha: str, mtime_ns: int) -> inflight.InFlight:
    """What the pipeline does for a request it begins, in a watcher life of its own (fresh slots)."""
    return inflight.begin(layout, inflight.Slots(layout), req, sha, mtime_ns)


def _count(layout: Layout, req: Request, sha: str, mtime_ns: int) -> int:
    return _begin(layout, req, sha, mtime_ns).interruptions


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_each_start_counts_one_interruption_of_the_same_publication(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    assert _count(layout, req, "s1", 100) == 0
    for expected in (1, 2, 3):
        found = inflight.count_interruptions(layout)  # a start with the record still there
        assert [(i.name, i.interruptions) for i in found] == [("gps_input_route.k.json", expected)]
        assert _files(layout.inflight_dir) == []  # moved to a parked marker
        assert _count(layout, req, "s1", 100) == expected


def test_a_request_in_hand_is_a_slot_rewritten_in_place(layout: Layout) -> None:
    """One file per request in hand, reused by the next: begin, park, unpark and end create or remove nothing."""
    _publish(layout, "k")
    slots = inflight.Slots(layout)
    first = inflight.begin(layout, slots, Request("k"), "s1", 100)
    (slot,) = layout.inflight_dir.iterdir()
    inode = slot.stat().st_ino
    first.park()
    first.unpark()
    first.end()
    second = inflight.begin(layout, slots, Request("k"), "s1", 200)
    assert _files(layout.inflight_dir) == [slot.name] and slot.stat().st_ino == inode
    assert b"s1" in slot.read_bytes()
    second.end()
    assert slot.read_bytes().strip() == b"" and inflight.count_interruptions(layout) == []
    assert _files(layout.inflight_dir) == []


def test_requests_in_hand_at_once_have_a_slot_each(layout: Layout) -> None:
    slots = inflight.Slots(layout)
    for key in ("a", "b", "c"):
        _publish(layout, key)
        inflight.begin(layout, slots, Request(key), f"s-{key}", 100)
    assert len(_files(layout.inflight_dir)) == 3
    found = inflight.count_interruptions(layout)
    assert sorted(i.input_sha256 for i in found) == ["s-a", "s-b", "s-c"]


def test_new_bytes_or_a_new_publication_start_afresh(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    _begin(layout, req, "s1", 100)
    inflight.count_interruptions(layout)
    assert _count(layout, req, "s1", 200) == 0  # the same bytes published again
    inflight.count_interruptions(layout)
    assert _count(layout, req, "s2", 200) == 0  # other bytes


def test_a_request_begun_is_counted_before_its_model_has_it(layout: Layout) -> None:
    """Its input's decoding may be what stops the watcher: that counts too."""
    _publish(layout, "k")
    assert _count(layout, Request("k"), "s1", 100) == 0
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [1]


def test_a_stop_while_waiting_for_a_worker_is_not_counted_and_the_count_is_kept(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    _begin(layout, req, "s1", 100)
    inflight.count_interruptions(layout)  # one stop
    record = _begin(layout, req, "s1", 100)
    assert record.interruptions == 1
    record.park()
    assert inflight.count_interruptions(layout) == []  # stopped while it waited: not counted...
    record = _begin(layout, req, "s1", 100)
    assert record.interruptions == 1  # ...nor forgotten
    record.park()
    record.unpark()  # a worker took it: a stop counts again
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [2]


def test_a_request_that_waited_and_ended_leaves_nothing_to_count(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    record = _begin(layout, req, "s1", 100)
    record.park()
    record.end()  # ended without reaching the model (its worker could not be started)
    assert inflight.count_interruptions(layout) == []
    assert _files(layout.parked_dir) == [] and _files(layout.inflight_dir) == []
    assert _count(layout, req, "s1", 100) == 0


def test_a_kept_record_is_counted_at_the_next_start(layout: Layout) -> None:
    """A stop with the request at its model: the record stays (``end`` after ``keep`` clears nothing)."""
    _publish(layout, "k")
    record = _begin(layout, Request("k"), "s1", 100)
    record.keep()
    record.end()
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [1]


def test_a_record_in_the_watchers_hands_supersedes_a_parked_marker(layout: Layout) -> None:
    """A stop between ``begin``'s write and its removal of the parked marker: the newer record counts, once."""
    _publish(layout, "k")
    req = Request("k")
    _begin(layout, req, "s1", 100)
    inflight.count_interruptions(layout)  # parked with 1
    name = layout.names.input("k")
    parked = (layout.parked_dir / name).read_bytes()
    _begin(layout, req, "s1", 100)  # in a slot with 1...
    (layout.parked_dir / name).write_bytes(parked)  # ...its parked marker left
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [2]
    assert _files(layout.parked_dir) == [name]
    assert _count(layout, req, "s1", 100) == 2


def test_a_stop_while_a_start_counts_does_not_count_twice(layout: Layout) -> None:
    """The parked marker is written before the record goes: a start stopped between the two counts it again."""
    _publish(layout, "k")
    _begin(layout, Request("k"), "s1", 100)
    (slot,) = layout.inflight_dir.iterdir()
    record = slot.read_bytes()
    inflight.count_interruptions(layout)
    slot.write_bytes(record)  # as if that start had stopped before removing it
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [1]


def test_markers_of_an_earlier_version_are_read(layout: Layout) -> None:
    """Named by their input in ``inflight/``: one in hand is counted; one parked in place or given up is kept."""
    for key in ("held", "waited", "poison"):
        _publish(layout, key)
    (layout.inflight_dir / layout.names.input("held")).write_text(
        '{"input_sha256": "s1", "input_mtime_ns": 100, "interruptions": 1}')
    (layout.inflight_dir / layout.names.input("waited")).write_text(
        '{"input_sha256": "s1", "input_mtime_ns": 100, "interruptions": 2, "waiting": true}')
    (layout.inflight_dir / layout.names.input("poison")).write_text(
        '{"input_sha256": "s1", "input_mtime_ns": 100, "interruptions": 3, "given_up": true}')
    assert [(i.name, i.interruptions) for i in inflight.count_interruptions(layout)] == [
        (layout.names.input("held"), 2)]
    assert _files(layout.inflight_dir) == []
    assert _count(layout, Request("held"), "s1", 100) == 2
    assert _count(layout, Request("waited"), "s1", 100) == 2
    assert _begin(layout, Request("poison"), "s1", 100).given_up


def test_a_record_counted_at_a_start_is_not_counted_again_until_begun_again(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    _begin(layout, req, "s1", 100)
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [1]
    assert inflight.count_interruptions(layout) == []  # stopped again before it was begun: another's doing
    assert _count(layout, req, "s1", 100) == 1


def test_an_ended_request_leaves_nothing_to_count(layout: Layout) -> None:
    _publish(layout, "k")
    _begin(layout, Request("k"), "s1", 100).end()
    assert inflight.count_interruptions(layout) == []


def test_a_given_up_publication_is_neither_counted_nor_run_again(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    _begin(layout, req, "s1", 100)
    for _ in range(3):
        inflight.count_interruptions(layout)
        record = _begin(layout, req, "s1", 100)
    record.give_up()
    record.end()
    assert inflight.count_interruptions(layout) == []
    again = _begin(layout, req, "s1", 100)
    assert again.given_up and again.interruptions == 3  # still given up
    assert _files(layout.inflight_dir) == []  # takes no slot
    assert _count(layout, req, "s1", 300) == 0  # published again: a fresh try


def test_a_give_up_that_cannot_write_its_marker_is_kept_in_its_slot(layout: Layout) -> None:
    """No parked marker can be made (here: ``parked/`` gone): the slot says given up, stays, and is the memory."""
    _publish(layout, "k")
    req = Request("k")
    slots = inflight.Slots(layout)
    record = inflight.begin(layout, slots, req, "s1", 100)
    layout.parked_dir.rmdir()
    with pytest.raises(OSError):
        record.give_up()
    record.end()  # the pipeline's ``finally``: leaves it
    again = inflight.begin(layout, slots, req, "s1", 100)  # a retry in the same life
    assert again.given_up
    fsio.ensure_private_dir(layout.parked_dir)
    assert inflight.count_interruptions(layout) == []  # the next start: parked as given up, not counted
    assert _begin(layout, req, "s1", 100).given_up


def test_a_later_life_does_not_clear_an_earlier_lifes_slot(layout: Layout) -> None:
    """Each life's slots have names of their own: a disowned watcher ending its request leaves the new one's."""
    for key in ("old", "new"):
        _publish(layout, key)
    old = inflight.begin(layout, inflight.Slots(layout), Request("old"), "s1", 100)
    inflight.begin(layout, inflight.Slots(layout), Request("new"), "s2", 100)
    old.end()
    assert [i.input_sha256 for i in inflight.count_interruptions(layout)] == ["s2"]


def test_an_unreadable_parked_marker_or_record_is_dropped(layout: Layout) -> None:
    _publish(layout, "k")
    (layout.parked_dir / layout.names.input("k")).write_text("{not json")
    (layout.inflight_dir / "slot-7").write_text("{not json")
    (layout.inflight_dir / "slot-8").write_text('{"input_sha256": "s1", "name": "../../etc/passwd"}')
    assert inflight.count_interruptions(layout) == []
    assert _files(layout.parked_dir) == [] and _files(layout.inflight_dir) == []
    assert _count(layout, Request("k"), "s1", 100) == 0


def test_a_record_whose_input_is_gone_is_dropped(layout: Layout) -> None:
    slots = inflight.Slots(layout)
    for key in ("k", "parked"):
        _publish(layout, key)
    inflight.begin(layout, slots, Request("k"), "s1", 100)
    inflight.begin(layout, slots, Request("parked"), "s1", 100).park()
    for key in ("k", "parked"):
        layout.input(key).unlink()
    assert inflight.count_interruptions(layout) == []
    assert _files(layout.parked_dir) == [] and _files(layout.inflight_dir) == []


def test_a_second_lock_on_the_same_dir_is_refused(layout: Layout) -> None:
    first, second = WatchDirLock(layout), WatchDirLock(layout)
    first.acquire()
    with pytest.raises(AlreadyRunning, match=str(os.getpid())):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_the_lock_notices_its_dir_replaced(layout: Layout) -> None:
    lock = WatchDirLock(layout)
    lock.acquire()
    assert lock.check_dir() is None and lock.check_file() is None
    layout.root.rename(layout.root.with_name("old"))
    assert "was removed" in (lock.check_dir() or "")
    layout.root.mkdir()
    assert "replaced" in (lock.check_dir() or "")
    lock.release()


def test_a_vanished_lock_file_is_taken_again_unless_another_watcher_has_it(layout: Layout) -> None:
    lock = WatchDirLock(layout)
    lock.acquire()
    layout.lock_file.unlink()
    assert lock.check_file() is None  # nobody else: taken again
    assert layout.lock_file.exists()
    shutil.rmtree(layout.state_dir)
    fsio.ensure_private_dir(layout.state_dir)
    other = WatchDirLock(layout)
    other.acquire()  # another watcher took the new lock file first
    assert "another modelgen-watcher" in (lock.check_file() or "")
    other.release()
    lock.release()

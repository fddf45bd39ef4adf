"""In-flight markers (the crash counter) and the watch dir lock, on real temp directories."""

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


def _at_model(layout: Layout, req: Request, sha: str, mtime_ns: int) -> int:
    """What the pipeline does for a request it begins: the marker, and the count so far."""
    return inflight.begin(layout, req, sha, mtime_ns)


def test_each_start_counts_one_interruption_of_the_same_publication(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    assert _at_model(layout, req, "s1", 100) == 0
    for expected in (1, 2, 3):
        found = inflight.count_interruptions(layout)  # a start with the marker still there
        assert [(i.name, i.interruptions) for i in found] == [("gps_input_route.k.json", expected)]
        assert _at_model(layout, req, "s1", 100) == expected


def test_new_bytes_or_a_new_publication_start_afresh(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    _at_model(layout, req, "s1", 100)
    inflight.count_interruptions(layout)
    assert _at_model(layout, req, "s1", 200) == 0  # the same bytes published again
    inflight.count_interruptions(layout)
    assert inflight.begin(layout, req, "s2", 200) == 0  # other bytes


def test_a_request_begun_is_counted_before_its_model_has_it(layout: Layout) -> None:
    """Its input's decoding may be what stops the watcher: that counts too."""
    _publish(layout, "k")
    assert inflight.begin(layout, Request("k"), "s1", 100) == 0
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [1]


def test_a_stop_while_waiting_for_a_worker_is_not_counted_and_the_count_is_kept(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    inflight.begin(layout, req, "s1", 100)
    inflight.count_interruptions(layout)  # one stop
    count = inflight.begin(layout, req, "s1", 100)
    assert count == 1
    inflight.park(layout, req)
    assert inflight.count_interruptions(layout) == []  # stopped while it waited: not counted...
    assert inflight.begin(layout, req, "s1", 100) == 1  # ...nor forgotten
    inflight.park(layout, req)
    inflight.unpark(layout, req)  # a worker took it: a stop counts again
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [2]


def test_a_request_that_waited_and_ended_leaves_no_marker(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    inflight.begin(layout, req, "s1", 100)
    inflight.park(layout, req)
    inflight.end(layout, req)  # ended without reaching the model (its worker could not be started)
    assert not any(layout.parked_dir.iterdir()) and not any(layout.inflight_dir.iterdir())
    assert inflight.begin(layout, req, "s1", 100) == 0


def test_a_marker_in_the_watchers_hands_supersedes_a_parked_one(layout: Layout) -> None:
    """A stop between ``begin``'s write and its removal of the parked copy: the newer marker counts, once."""
    _publish(layout, "k")
    req = Request("k")
    inflight.begin(layout, req, "s1", 100)
    inflight.count_interruptions(layout)  # parked with 1
    name = layout.names.input("k")
    (layout.inflight_dir / name).write_bytes((layout.parked_dir / name).read_bytes())  # begun, parked copy left
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [2]
    assert sorted(p.name for p in layout.parked_dir.iterdir()) == [name]
    assert inflight.begin(layout, req, "s1", 100) == 2


def test_a_marker_parked_in_place_by_an_earlier_version_is_not_counted(layout: Layout) -> None:
    _publish(layout, "k")
    name = layout.names.input("k")
    (layout.inflight_dir / name).write_text(
        '{"input_sha256": "s1", "input_mtime_ns": 100, "interruptions": 2, "waiting": true}')
    assert inflight.count_interruptions(layout) == []
    assert inflight.begin(layout, Request("k"), "s1", 100) == 2


def test_a_marker_counted_at_a_start_is_not_counted_again_until_begun_again(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    inflight.begin(layout, req, "s1", 100)
    assert [i.interruptions for i in inflight.count_interruptions(layout)] == [1]
    assert inflight.count_interruptions(layout) == []  # stopped again before it was begun: another's doing
    assert inflight.begin(layout, req, "s1", 100) == 1


def test_an_ended_request_leaves_no_marker(layout: Layout) -> None:
    _publish(layout, "k")
    _at_model(layout, Request("k"), "s1", 100)
    inflight.end(layout, Request("k"))
    assert inflight.count_interruptions(layout) == []


def test_a_given_up_publication_is_neither_counted_nor_run_again(layout: Layout) -> None:
    _publish(layout, "k")
    req = Request("k")
    _at_model(layout, req, "s1", 100)
    for _ in range(3):
        inflight.count_interruptions(layout)
        _at_model(layout, req, "s1", 100)
    inflight.give_up(layout, req)
    assert inflight.count_interruptions(layout) == []
    assert inflight.begin(layout, req, "s1", 100) == 3  # still given up
    assert inflight.begin(layout, req, "s1", 300) == 0  # published again: a fresh try


def test_an_unreadable_parked_marker_is_dropped(layout: Layout) -> None:
    _publish(layout, "k")
    (layout.parked_dir / layout.names.input("k")).write_text("{not json")
    assert inflight.count_interruptions(layout) == []
    assert not any(layout.parked_dir.iterdir())
    assert inflight.begin(layout, Request("k"), "s1", 100) == 0


def test_a_marker_whose_input_is_gone_is_dropped(layout: Layout) -> None:
    for key in ("k", "parked"):
        _publish(layout, key)
        _at_model(layout, Request(key), "s1", 100)
    inflight.park(layout, Request("parked"))
    for key in ("k", "parked"):
        layout.input(key).unlink()
    assert inflight.count_interruptions(layout) == []
    assert not any(layout.parked_dir.iterdir()) and not any(layout.inflight_dir.iterdir())
    assert not list(layout.inflight_dir.iterdir())


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

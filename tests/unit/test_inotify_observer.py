"""The rename pairing by cookie (``inotify_observer``): the same events, in the same order, as watchdog's own.

The grouper is fed inotify events as watchdog's reading thread feeds it, and read as
its emitting thread reads it; the reference is watchdog's ``InotifyMoveEventGrouper``
fed the same sequence. The last test watches a real directory with the observer.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, Mask, WatchDescriptor
from watchdog.observers.inotify_move_event_grouper import (
    GroupedInotifyEvent,
    InotifyMoveEventGrouper,
    PathedInotifyEvent,
)

from modelgen_watcher.volume import inotify_observer
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(not inotify_observer._INTERNALS, reason="watchdog's internals are not 7.1's")

DELAY = 0.02


def _event(mask: int, name: str, cookie: int = 0) -> PathedInotifyEvent:
    return PathedInotifyEvent(
        InotifyEvent(WatchDescriptor(1), Mask(mask), cookie, name.encode()), b"/d/" + name.encode()
    )


def created(name: str) -> PathedInotifyEvent:
    return _event(InotifyConstants.IN_CREATE, name)


def moved_from(name: str, cookie: int) -> PathedInotifyEvent:
    return _event(InotifyConstants.IN_MOVED_FROM, name, cookie)


def moved_to(name: str, cookie: int) -> PathedInotifyEvent:
    return _event(InotifyConstants.IN_MOVED_TO, name, cookie)


def grouper(stock: bool = False) -> InotifyMoveEventGrouper:
    g = InotifyMoveEventGrouper() if stock else inotify_observer.CookieIndexedGrouper()
    g.delay = DELAY
    if stock:
        g._queue.delay = DELAY
    return g


def shape(event: GroupedInotifyEvent) -> tuple[str, ...]:
    """An event as comparable text: ``("create", "a")``, or a pair ``("move", "a", "b")``."""
    if not isinstance(event, PathedInotifyEvent):  # a pair (a PathedInotifyEvent is a tuple too)
        return ("move", event[0].ev.name.decode(), event[1].ev.name.decode())
    ev = event.ev
    kind = "from" if ev.is_moved_from else "to" if ev.is_moved_to else "create"
    return (kind, ev.name.decode())


def read_all(g: InotifyMoveEventGrouper, n: int) -> list[tuple[str, ...]]:
    out = []
    for _ in range(n):
        event = g.read_event()
        assert event is not None
        out.append(shape(event))
    return out


def test_a_rename_in_the_directory_is_one_pair_at_the_place_of_its_second_half() -> None:
    g = grouper()
    for e in (created("a"), moved_from("b", 7), created("c"), moved_to("d", 7)):
        g.put_event(e)
    assert read_all(g, 3) == [("create", "a"), ("create", "c"), ("move", "b", "d")]


def test_a_source_is_found_by_its_cookie_until_paired() -> None:
    g = grouper()
    source = moved_from("b", 7)
    g.put_event(source)
    assert g.get_queued_moved_from_event(7) is source
    assert g.get_queued_moved_from_event(8) is None
    g.put_event(moved_to("d", 7))
    assert g.get_queued_moved_from_event(7) is None


def test_a_file_renamed_in_from_elsewhere_comes_at_once_alone() -> None:
    g = grouper()
    g.put_event(moved_to("d", 9))
    assert read_all(g, 1) == [("to", "d")]


def test_a_file_renamed_away_comes_alone_after_the_delay_and_its_cookie_is_forgotten() -> None:
    g = grouper()
    t0 = time.monotonic()
    g.put_event(moved_from("b", 7))
    g.put_event(created("c"))
    assert read_all(g, 2) == [("from", "b"), ("create", "c")]
    assert time.monotonic() - t0 >= DELAY
    assert g.get_queued_moved_from_event(7) is None
    g.put_event(moved_to("d", 7))  # too late to pair
    assert read_all(g, 1) == [("to", "d")]


def test_close_wakes_a_reader_and_discard_forgets_everything() -> None:
    g = grouper()
    g.put_event(moved_from("b", 7))
    g.discard_pending_events()
    assert g.get_queued_moved_from_event(7) is None
    got: list[GroupedInotifyEvent | None] = []
    reader = threading.Thread(target=lambda: got.append(g.read_event()))
    reader.start()
    g.close()
    reader.join(5)
    assert got == [None]


@pytest.mark.parametrize("seed", range(5))
def test_the_same_events_in_the_same_order_as_watchdogs_own(seed: int) -> None:
    rng = random.Random(seed)
    events: list[PathedInotifyEvent] = []
    pending: list[int] = []
    for i in range(300):
        roll = rng.random()
        if roll < 0.3:
            events.append(created(f"c{i}"))
        elif roll < 0.6:
            events.append(moved_from(f"f{i}", 1000 + i))
            pending.append(1000 + i)
        elif roll < 0.85 and pending:
            events.append(moved_to(f"t{i}", pending.pop(rng.randrange(len(pending)))))
        else:
            events.append(moved_to(f"t{i}", 5000 + i))  # from outside the directory
    ours, stock = grouper(), grouper(stock=True)
    for e in events:
        ours.put_event(e)
        stock.put_event(e)
    n = len(events) - sum(1 for e in events if e.ev.is_moved_to and 1000 <= e.ev.cookie < 5000)
    assert read_all(ours, n) == read_all(stock, n)


def test_the_observer_reports_a_rename_as_a_move_and_a_file_from_elsewhere_as_created(tmp_path: Path) -> None:
    watched, elsewhere = tmp_path / "w", tmp_path / "e"
    watched.mkdir()
    elsewhere.mkdir()
    seen: list[FileSystemEvent] = []
    both = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if isinstance(event, FileCreatedEvent) and os.path.basename(event.src_path) == ".tmp":
                return  # the temp file's creation
            if isinstance(event, (FileMovedEvent, FileCreatedEvent)):
                seen.append(event)
                if len(seen) == 2:
                    both.set()

    obs = inotify_observer.observer()
    assert isinstance(obs, inotify_observer._Observer)
    obs.schedule(Handler(), str(watched), recursive=False, event_filter=[FileMovedEvent, FileCreatedEvent])
    obs.start()
    try:
        (elsewhere / "x").write_bytes(b"1")
        (watched / ".tmp").write_bytes(b"2")
        os.rename(watched / ".tmp", watched / "a")
        os.rename(elsewhere / "x", watched / "b")
        assert both.wait(10)
    finally:
        obs.stop()
        obs.join(5)
    assert [type(e).__name__ for e in seen] == ["FileMovedEvent", "FileCreatedEvent"]
    assert (os.path.basename(seen[0].src_path), os.path.basename(seen[0].dest_path)) == (".tmp", "a")
    assert os.path.basename(seen[1].src_path) == "b"


def test_with_a_notice_each_event_of_a_name_is_handed_over_as_read(tmp_path: Path) -> None:
    """Names and "complete" (closed after writing, renamed in from here or elsewhere); a name renamed away is no
    notice; the scheduled handler gets none of them."""
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    notices: list[tuple[str, bool]] = []
    handled: list[FileSystemEvent] = []
    done = threading.Event()

    def notice(name: str, complete: bool) -> None:
        notices.append((name, complete))
        if (name, complete) == ("last", True):
            done.set()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            handled.append(event)

    obs = inotify_observer.observer(notice)
    obs.schedule(
        Handler(), str(tmp_path), recursive=False, event_filter=[FileMovedEvent, FileCreatedEvent, FileClosedEvent]
    )
    obs.start()
    try:
        (tmp_path / ".tmp").write_bytes(b"1")  # created, closed
        os.rename(tmp_path / ".tmp", tmp_path / "a")  # moved here: only its destination is news
        (elsewhere / "x").write_bytes(b"2")
        os.rename(elsewhere / "x", tmp_path / "b")  # moved in from elsewhere
        (tmp_path / "last").write_bytes(b"")
        assert done.wait(10)
    finally:
        obs.stop()
        obs.join(5)
    assert notices == [(".tmp", False), (".tmp", True), ("a", True), ("b", True), ("last", False), ("last", True)]
    assert handled == []


def test_a_direct_handler_that_raises_makes_the_event_source_dead(tmp_path: Path) -> None:
    """Straight from watchdog's reading thread, a failing ``on_name`` must not leave a live-looking source that hears
    nothing: the daemon checks ``is_alive`` and exits to be restarted."""
    from modelgen_watcher.volume.events import EventSource

    def on_name(name: str, complete: bool) -> None:
        raise RuntimeError("a bug")

    source = EventSource(tmp_path, on_name, mode="native", direct=True)
    source.start()
    try:
        assert source.is_alive()
        (tmp_path / "x").write_bytes(b"1")
        wait_for(lambda: not source.is_alive(), 10, what="the source dead")
    finally:
        source.stop()

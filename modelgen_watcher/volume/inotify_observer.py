"""watchdog's inotify observer as the watcher uses it: renames paired by cookie, and events handed over as read.

inotify reports a rename as two events, ``IN_MOVED_FROM`` and ``IN_MOVED_TO``, tied by a
cookie. watchdog (7.1) pairs them in a queue between the thread that reads the inotify
descriptor and the thread that emits events: each ``IN_MOVED_TO`` searches that queue
from its head for its ``IN_MOVED_FROM``, twice (once for the source path, once to take it
out), and an unpaired one (a file renamed in from another directory: every result and
status the watcher publishes) searches all of it. In a burst the emitting thread lags
and the queue holds hundreds of events, so every rename costs a walk over all of them:
15 % of the daemon's CPU while it drained 1,000 requests (``bench/drain.py``). Here the
pending ``IN_MOVED_FROM`` events are also kept in a dict by cookie: a lookup, not a walk.
The same events in the same order otherwise (a test feeds both the same sequences).

``observer(notice)`` goes further for a handler that only wants "this name may have
changed, and is it complete": each event of a name in the directory is handed to
``notice(name, complete)`` in watchdog's reading thread as it is read, instead of
through the pairing queue, the emitting thread, event objects and the dispatching
thread (two thread hand-offs an event; the watcher's own results and statuses are two
of the three renames of a request, each handed over only to be ignored). ``complete``:
closed after writing, or renamed into place (from anywhere: a rename is whole).

Where watchdog's internals are not the ones this was written for (a version other
than 7.1), ``observer()`` falls back to watchdog's own observer, with the same
handler: only slower.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog.observers import Observer as _StockObserver
from watchdog.observers.api import BaseObserver

from ..logs import get_logger

log = get_logger(__name__)

try:
    from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyEvent
    from watchdog.observers.inotify_move_event_grouper import (
        GroupedInotifyEvent,
        InotifyMoveEventGrouper,
        PathedInotifyEvent,
    )

    _INTERNALS = "_move_event_grouper" in getattr(InotifyWatchGroup, "__dataclass_fields__", {})
except ImportError:  # another watchdog: its own observer serves
    _INTERNALS = False


if _INTERNALS:

    class _Entry:
        """One queued event; ``live`` is False once its ``IN_MOVED_FROM`` was paired (taken out without a walk)."""

        __slots__ = ("at", "delayed", "event", "live")

        def __init__(self, event: GroupedInotifyEvent, delayed: bool) -> None:
            self.event = event
            self.at = time.monotonic()
            self.delayed = delayed
            self.live = True

    _watchdog_log = logging.getLogger(InotifyMoveEventGrouper.__module__)
    """watchdog's grouper logs every event it is given at debug level: so does this one, as that logger."""

    class CookieIndexedGrouper(InotifyMoveEventGrouper):
        """``InotifyMoveEventGrouper`` with pending ``IN_MOVED_FROM`` events also found by cookie in a dict.

        Same contract as watchdog's (``put_event`` from the reading thread, ``read_event``
        from the emitting one): a paired source is marked dead where it stands instead of
        being searched for and deleted from the middle of the queue; dead entries are
        skipped when they reach the head.
        """

        def __init__(self) -> None:  # watchdog's queue is not made: this one replaces it
            self._lock = threading.Lock()
            self._ready = threading.Condition(self._lock)
            self._entries: deque[_Entry] = deque()
            self._sources: dict[int, _Entry] = {}
            self._closed = False

        def put_event(self, event: PathedInotifyEvent) -> None:
            _watchdog_log.debug("in-event %s", event)
            grouped: GroupedInotifyEvent = event
            with self._lock:
                if event.ev.is_moved_to:
                    source = self._sources.pop(event.ev.cookie, None)
                    if source is not None:
                        source.live = False
                        assert isinstance(source.event, PathedInotifyEvent)
                        grouped = (source.event, event)
                entry = _Entry(grouped, delayed=event.ev.is_moved_from)
                if event.ev.is_moved_from:
                    self._sources[event.ev.cookie] = entry
                self._entries.append(entry)
                self._ready.notify()

        def get_queued_moved_from_event(self, cookie: int) -> PathedInotifyEvent | None:
            with self._lock:
                source = self._sources.get(cookie)
            if source is None:
                return None
            assert isinstance(source.event, PathedInotifyEvent)
            return source.event

        def read_event(self) -> GroupedInotifyEvent | None:
            """The next event; a move's source only after ``delay`` (unless paired meanwhile); None once closed."""
            while True:
                with self._lock:
                    while True:
                        while self._entries and not self._entries[0].live:
                            self._entries.popleft()
                        if self._closed:
                            return None
                        if self._entries:
                            break
                        self._ready.wait()
                    head = self._entries[0]
                if head.delayed:
                    left = head.at + self.delay - time.monotonic()
                    while left > 0:
                        time.sleep(left)
                        left = head.at + self.delay - time.monotonic()
                with self._lock:
                    if self._entries and self._entries[0] is head and head.live:
                        self._entries.popleft()
                        if head.delayed:  # an unpaired source, emitted alone: its pair can no longer come
                            assert isinstance(head.event, PathedInotifyEvent)
                            if self._sources.get(head.event.ev.cookie) is head:
                                del self._sources[head.event.ev.cookie]
                        return head.event

        def discard_pending_events(self) -> None:
            with self._lock:
                self._entries.clear()
                self._sources.clear()

        def close(self) -> None:
            with self._lock:
                self._closed = True
                self._ready.notify_all()

    Notice = Callable[[str, bool], None]

    @dataclass
    class _WatchGroup(InotifyWatchGroup):
        notice: Notice | None = None
        """Takes the events of names in the directory as they are read (see ``observer``); None: watchdog's way."""
        _move_event_grouper: InotifyMoveEventGrouper = field(default_factory=CookieIndexedGrouper, init=False)

        def on_event(self, event: InotifyEvent) -> None:
            if self.notice is None or not event.name:  # the directory's own events (deleted, moved) stay watchdog's
                super().on_event(event)
            else:
                _watchdog_log.debug("in-event %s", event)  # as watchdog's own queue logs what it is given
                if event.is_moved_from:  # a name renamed away is no news about it
                    return
                self.notice(os.fsdecode(event.name), event.is_close_write or event.is_moved_to)

    class _Emitter(InotifyEmitter):
        notice: Notice | None = None

        def on_thread_start(self) -> None:
            self._inotify = _WatchGroup(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
                notice=self.notice,
            )

    class _Observer(InotifyObserver):
        def __init__(self, notice: Notice | None) -> None:
            super().__init__()
            self._emitter_class = type("_Emitter", (_Emitter,), {"notice": staticmethod(notice)} if notice else {})


def observer(notice: Callable[[str, bool], None] | None = None) -> BaseObserver:
    """A native observer: watchdog's inotify one with pairing by cookie, or watchdog's own where that cannot be.

    ``notice``: given, the events of names in a watched directory go to ``notice(name, complete)``, called in
    watchdog's reading thread (it must be quick and thread-safe), and not to the scheduled handlers, which
    still get the directory's own events. Where watchdog's own observer serves, the handlers get everything.
    """
    if _INTERNALS:
        try:
            return _Observer(notice)
        except (AttributeError, TypeError) as exc:  # pragma: no cover - another watchdog than 7.1
            log.info("observer.stock_pairing", reason=str(exc))
    return _StockObserver()

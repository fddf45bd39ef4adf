"""File events, native (watchdog) or polling, reduced to "this name in the watch dir may have changed".

The one event source: the watcher schedules requests from it, and the client wakes
its waiters with it (native only).

Each notice also says whether the event means the file is complete (closed after a
write, or renamed into place), so such inputs skip the debounce.

``auto`` starts the native observer and proves it with a probe file; where no event
arrives (network and some bind mounts deliver none) it falls back to polling.

Polling is not watchdog's ``PollingObserver``: that one ``lstat``s every file of the
directory at every poll (26 % of a core with 10,000 finished requests, 30,000 files, at
1 s), where only input names can ask for work. It polls through ``scan.InputScanner``
(the daemon's rescans use one too), which lists the directory only when it changed and
checks quiet inputs in turns: 0.2 % of a core for the same directory.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from ..logs import get_logger
from .inotify_observer import observer as native_observer
from .names import WATCHER_TEMP_PREFIX, Names
from .scan import POLL, InputScanner

log = get_logger(__name__)

ObserverKind = Literal["native", "polling"]
PROBE_PREFIX = WATCHER_TEMP_PREFIX + "probe-"
PROBE_TIMEOUT = 2.0

# Opened and closed-without-write are left out: our own reads of an input cause them.
# Attribute changes (touch, chmod) are in: they call for a re-check (a touch is how a
# writer asks for a failed request to run again), and an event means a rescan does not
# count them as missed.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


_COMPLETE = (FileClosedEvent, FileMovedEvent)
"""Events after which the file is whole: closed after writing, or renamed into place."""


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, on_name: Callable[[str, bool], None]) -> None:
        self._root = os.fsdecode(root)
        self._on_name = on_name
        self.probe_name: str | None = None
        self.probe_seen = threading.Event()
        self.failed = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        if os.path.dirname(path) != self._root:
            return
        self.notice(os.path.basename(path), isinstance(event, _COMPLETE))

    def notice(self, name: str, complete: bool) -> None:
        """An event of ``name`` in the directory, from watchdog's handler above or straight from its reading thread.

        What ``on_name`` raises marks the source dead (``EventSource.is_alive``), as it ended watchdog's handler
        thread before: the daemon exits to be restarted instead of going on without events.
        """
        if self.probe_name is not None and name == self.probe_name:
            self.probe_seen.set()
            return
        try:
            self._on_name(name, complete)
        except Exception:
            self.failed = True
            log.exception("observer.handler_failed", file=name)


class Poller:
    """Polls one directory's inputs every ``interval`` seconds; a changed input is a notice (never "complete":
    a poll cannot tell a finished write from one under way, so the debounce and the pipeline's checks apply).

    Only input names are seen (and names shaped like inputs with an invalid key, so they
    are refused): nothing else in the directory can ask the watcher for work.
    """

    def __init__(self, root: Path, names: Names, on_name: Callable[[str, bool], None], interval: float) -> None:
        self._scanner = InputScanner(root, names, POLL)
        self._on_name = on_name
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def start(self) -> None:
        self._scanner.scan(everything=True)  # what is there now is the baseline, as an observer's first snapshot
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval):
            try:
                scan = self._scanner.scan()
            except OSError as exc:  # the daemon's heartbeat decides whether the watch dir is still ours
                if not failing:
                    log.warning("poll.failed", watch_dir=str(self._scanner.root), error=str(exc))
                failing = True
                continue
            failing = False
            for rejected in scan.rejected:
                self._on_name(rejected.name, False)
            for change in scan.changed:
                self._on_name(change.name, False)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)


class EventSource:
    """Owns the watchdog observer, or the poller, for one directory (top level only)."""

    def __init__(
        self,
        root: Path,
        on_name: Callable[[str, bool], None],
        *,
        mode: Literal["auto", "native", "polling"] = "auto",
        poll_interval: float = 1.0,
        names: Names | None = None,
        direct: bool = False,
    ) -> None:
        """``names``: the inputs a poller looks for (the default names when None). ``direct``: native events
        reach ``on_name`` from watchdog's reading thread as they are read (``inotify_observer.observer``), for
        an ``on_name`` that is quick and thread-safe; otherwise through watchdog's dispatching thread."""
        self.root = root
        self.mode = mode
        self.poll_interval = poll_interval
        self.names = names or Names()
        self._on_name = on_name
        self._handler = _Handler(root, on_name)
        self._direct = direct
        self._observer: BaseObserver | Poller | None = None
        self.kind: ObserverKind = "polling"

    def _start(self, kind: ObserverKind) -> BaseObserver | Poller:
        if kind == "polling":
            poller = Poller(self.root, self.names, self._on_name, self.poll_interval)
            poller.start()
            return poller
        observer = native_observer(self._handler.notice if self._direct else None)
        observer.schedule(self._handler, os.fsdecode(self.root), recursive=False, event_filter=_EVENTS)
        observer.start()
        return observer

    def start(self) -> ObserverKind:
        if self.mode == "polling":
            return self._use("polling")
        try:
            observer = self._start("native")
        except OSError as exc:
            if self.mode == "native":
                raise
            log.warning("observer.fallback", reason=f"native observer failed: {exc}", observer="polling")
            return self._use("polling")
        if self.mode == "auto" and not self._probe():
            observer.stop()
            observer.join(2)
            log.warning(
                "observer.fallback",
                reason="no file events arrive in the watch dir (network or bind mount?)",
                observer="polling",
                poll_interval=self.poll_interval,
            )
            return self._use("polling")
        self._observer, self.kind = observer, "native"
        return self.kind

    def _use(self, kind: ObserverKind) -> ObserverKind:
        self._observer, self.kind = self._start(kind), kind
        return kind

    def _probe(self) -> bool:
        """Write a file of our own and wait for its event: do native events really arrive here?"""
        name = f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self._handler.probe_name = name
        path = self.root / name
        try:
            path.write_bytes(b"probe")
            return self._handler.probe_seen.wait(PROBE_TIMEOUT)
        finally:
            path.unlink(missing_ok=True)
            self._handler.probe_name = None

    def switch_to_polling(self) -> None:
        """Replace a native observer that misses events with the polling one."""
        if self.kind == "polling" or self._observer is None:
            return
        old = self._observer
        self._use("polling")
        old.stop()
        old.join(2)

    def is_alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive() and not self._handler.failed

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(3)

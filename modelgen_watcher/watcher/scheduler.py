"""Per-request single flight with one queued rerun, debounce, and a bounded worker pool.

However many events a request gets, it has at most one run in flight and one rerun
queued behind it; the rerun reads the file afresh, so the content scored last is the
content present last. Different requests run in parallel up to ``workers``.

The ``workers`` threads take due requests from the queue themselves: one that finishes
a run takes the next at once, and a notice wakes one idle thread. No dispatching thread
sits between them (it cost two thread hand-offs a request, and a wake-up of its own for
every notice in a burst, however busy the workers were).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..logs import get_logger
from ..volume.names import Request
from ..volume.retry import backoff
from .outcomes import Outcome, Processed

log = get_logger(__name__)


@dataclass
class _Entry:
    due: float | None = None
    first_event: float | None = None
    running: bool = False
    dirty: bool = False
    """An event arrived while running: one rerun is owed."""
    failures: int = 0
    """Transient faults in a row; the backoff before the next retry grows with it."""


class Scheduler:
    """Turns a stream of "this request may have changed" notices into few, ordered runs."""

    def __init__(
        self,
        handler: Callable[[Request], Processed],
        *,
        workers: int = 1,
        debounce: float = 0.05,
        max_delay: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """``max_attempts`` caps the tries of a transient fault (``--once``); None retries until it succeeds."""
        self._handler = handler
        self._workers = workers
        self._debounce = debounce
        # A writer that never pauses must not starve its request forever.
        self._max_delay = max_delay if max_delay is not None else max(1.0, 10 * debounce)
        self._max_attempts = max_attempts
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        """Guards everything below; ``wait_idle`` and ``stop`` wait on it for the queue to empty."""
        self._due = threading.Condition(lock)
        """Idle worker threads wait on it for a request to come due (the same lock)."""
        self._entries: dict[Request, _Entry] = {}
        self._heap: list[tuple[float, int, Request]] = []
        self._seq = 0
        self._active = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"model-worker_{n}", daemon=True) for n in range(workers)
        ]
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        """Runs by outcome, for ``--once``'s summary and exit code (the metrics are counted by the pipeline)."""
        self.gave_up = 0
        """Requests whose transient fault outlasted ``max_attempts``."""

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def is_alive(self) -> bool:
        """Every worker thread is alive (a bug that ended one makes the daemon exit to be restarted)."""
        return all(t.is_alive() for t in self._threads)

    def notify(self, req: Request, delay: float | None = None) -> None:
        """Something happened to ``req``'s input; process it once things are quiet."""
        now = time.monotonic()
        with self._cond:
            if self._stopping:
                return
            entry = self._entries.setdefault(req, _Entry())
            if entry.running:
                entry.dirty = True
                return
            if entry.first_event is None:
                entry.first_event = now
            due = now + (self._debounce if delay is None else delay)
            entry.due = min(due, entry.first_event + self._max_delay)
            self._push(req, entry.due)

    def _push(self, req: Request, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, req))
        self._due.notify()  # one idle thread looks (a busy one looks when it finishes)

    def _serve(self) -> None:
        """A worker thread: take the next due request, run it, settle it, and again, until stopped."""
        with self._cond:
            req = self._take()
        while req is not None:
            result = Processed(Outcome.error)
            try:
                result = self._handler(req)
            except Exception:  # a bug must cost one request, never the daemon
                log.exception("request.crashed", key=req.key)
            with self._cond:
                self._settle(req, result)
                req = self._take()

    def _take(self) -> Request | None:
        """The next due request, marked running, waiting for one as long as it takes; None once stopping.

        Called with the lock held.
        """
        while not self._stopping:
            # Drop heap items that no longer match their entry (superseded by a later notice).
            while self._heap:
                due, _, req = self._heap[0]
                entry = self._entries.get(req)
                if entry is None or entry.running or entry.due != due:
                    heapq.heappop(self._heap)
                    continue
                break
            if not self._heap:
                self._due.wait()
                continue
            due, _, req = self._heap[0]
            now = time.monotonic()
            if due > now:
                self._due.wait(due - now)
                continue
            heapq.heappop(self._heap)
            entry = self._entries[req]
            entry.running, entry.due, entry.first_event, entry.dirty = True, None, None, False
            self._active += 1
            if self._heap:
                self._due.notify()  # more may be due: another idle thread looks
            return req
        return None

    def _settle(self, req: Request, result: Processed) -> None:
        """Count a finished run and queue what it owes: a rerun, a retry, or nothing. Called with the lock held."""
        self.outcomes[result.outcome] += 1
        self._active -= 1
        entry = self._entries[req]
        entry.running = False
        delay: float | None = None
        if entry.dirty:
            delay = self._debounce
        if result.retry_after is not None:  # deferred, or claimed or lost in shared mode: look again then
            delay = result.retry_after if delay is None else min(delay, result.retry_after)
        if result.outcome is Outcome.transient:
            entry.failures += 1
            if self._max_attempts is None or entry.failures < self._max_attempts:
                wait = backoff(entry.failures)
                delay = wait if delay is None else min(delay, wait)
            else:
                self.gave_up += 1
        elif result.outcome is not Outcome.deferred:
            entry.failures = 0
        if delay is not None and not self._stopping:
            now = time.monotonic()
            entry.first_event = now
            entry.due = now + delay
            self._push(req, entry.due)
        elif entry.due is None:
            del self._entries[req]
        self._cond.notify_all()  # wait_idle and stop look again

    def busy(self, req: Request) -> bool:
        """True while ``req`` is queued or running."""
        with self._cond:
            return req in self._entries

    def depth(self) -> int:
        """Requests queued or running."""
        with self._cond:
            return len(self._entries)

    def idle(self) -> bool:
        with self._cond:
            return not self._entries

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running (for ``--once``); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._entries:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def halt(self) -> None:
        """Take no more work: nothing queued is started from now on."""
        with self._cond:
            self._stopping = True
            self._due.notify_all()
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Halt, then wait up to ``timeout`` for runs in flight (the caller cancels them first)."""
        self.halt()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))

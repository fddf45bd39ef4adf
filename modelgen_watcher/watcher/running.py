"""The ``running`` status, published only for runs that last: a warm model answers before anyone could read it.

A ``running`` status is news for a reader ("your request is with the model"), not a
record: after a stop or a crash, a request is redone because its status is missing,
``running`` or names other bytes (``retry.judge``), and its in-flight record counts
the interruption (``inflight``). Writing it before every run cost a warm worker's
request a fifth of the daemon's time (a temp file, a rename into the watch dir, its
event) for a status replaced a few milliseconds later. So a run's ``running`` status
is due ``GRACE`` seconds after the run starts, and written then by one thread only if
the run has not finished; a reader sees it for any run that takes longer, and the
pipeline writes it at once for a run cancelled by a stop (left ``running``, redone).

Order: ``finished`` withdraws a request's due status and, if the thread is writing it
at that moment, waits until it is written, so the final status is always written last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..logs import get_logger
from ..volume.names import Request
from ..volume.schemas import Status

GRACE = 0.1
"""Seconds a run goes without a ``running`` status: under what a person notices, over a warm run."""

log = get_logger(__name__)


class RunningStatuses:
    """Writes each due ``running`` status from one thread of its own, started with the first run."""

    def __init__(self, write: Callable[[Request, Status], None], grace: float = GRACE) -> None:
        self._write = write
        self._grace = grace
        self._cond = threading.Condition()
        self._due: dict[Request, tuple[float, Status]] = {}
        self._writing: Request | None = None
        self._thread: threading.Thread | None = None

    def started(self, req: Request, status: Status) -> None:
        """``req``'s model run starts now; ``status`` is published if it is still running after the grace."""
        if self._grace <= 0:
            self._write(req, status)
            return
        with self._cond:
            idle = not self._due
            self._due[req] = (time.monotonic() + self._grace, status)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="running-statuses", daemon=True)
                self._thread.start()
            elif idle:
                self._cond.notify_all()  # the thread waits without a deadline when nothing is due

    def finished(self, req: Request) -> None:
        """``req``'s run ended: its ``running`` status is withdrawn, or written by the time this returns."""
        with self._cond:
            self._due.pop(req, None)
            while self._writing == req:
                self._cond.wait()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    ready = [(req, status) for req, (due, status) in self._due.items() if due <= now]
                    if ready:
                        break
                    first = min((due for due, _ in self._due.values()), default=None)
                    self._cond.wait(None if first is None else first - now)
            for req, status in ready:
                with self._cond:
                    due = self._due.get(req)
                    if due is None or due[1] is not status:  # finished meanwhile (and perhaps run again)
                        continue
                    del self._due[req]
                    self._writing = req
                try:
                    self._write(req, status)
                except Exception as exc:  # noqa: BLE001 - the final status, written next, says what matters
                    log.warning("request.running_status_unwritten", key=req.key, error=str(exc))
                finally:
                    with self._cond:
                        self._writing = None
                        self._cond.notify_all()

"""What a request ended as: one typed value that the pipeline returns and the scheduler acts on.

The scheduler decides from it alone whether and when to try again (``retry_after`` for
an input that is not complete yet, the backoff of ``volume.retry`` for a transient
fault); ``score`` reports ``error`` from it without reading the status back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..volume.schemas import ErrorInfo


class Outcome(str, Enum):
    ok = "ok"
    error = "error"
    transient = "transient"
    """An I/O fault (the input unreadable, the volume unwritable): the scheduler retries with backoff."""
    skipped = "skipped"
    """Already scored with the same bytes (idempotence)."""
    skipped_error = "skipped_error"
    """These bytes already ended in an error that running again now would not change."""
    deferred = "deferred"
    """Looks half-written; try again later."""
    cancelled = "cancelled"
    """Shutdown interrupted the model; the ``running`` status makes the next start redo it."""
    gone = "gone"
    claimed = "claimed"
    """Shared mode: another live watcher holds the request's claim; looked at again once its lease could end."""
    lost = "lost"
    """Shared mode: another watcher took the request over while this one served it; nothing was published."""


@dataclass(frozen=True)
class Processed:
    """A request's end: its outcome, the error it ended with, and when to look again if not yet done."""

    outcome: Outcome
    retry_after: float | None = None
    """For ``deferred``, ``claimed`` and ``lost``: seconds until the input is read again."""
    error: ErrorInfo | None = None
    """For ``error`` and ``transient``: what the status says."""

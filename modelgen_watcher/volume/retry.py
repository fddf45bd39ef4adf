"""What is retried and when: the one place that decides whether a request runs again.

Three kinds of trouble, three answers:

- **Final for these bytes**: ``ok`` with its result in place (already scored) and
  ``invalid_input`` (the same bytes would be refused again). Never rerun.
- **Model failures** (``model_failed``, ``model_timeout``, ``invalid_output``): rerun
  only when the writer publishes the input again (the input's mtime is not older than
  the status's, both read from the same file system clock) or after a restart (the
  model may have been fixed); never by a rescan or a chmod.
- **Transient faults** (``io_error``, a status that could not be written): retried by
  the scheduler with exponential backoff while the daemon runs, until they succeed.

A request that was in flight each time the watcher stopped ``MAX_INTERRUPTIONS``
times in a row is ended with an error instead of being retried at every start
(see ``inflight``).
"""

from __future__ import annotations

import random
from enum import Enum

from .schemas import ErrorKind, State, Status

BACKOFF_FIRST = 0.5
"""Seconds before the first retry of a transient fault."""
BACKOFF_MAX = 30.0
"""The longest wait between retries: a fixed volume is noticed within half a minute."""
ONCE_ATTEMPTS = 3
"""With ``--once`` a transient fault is tried this many times, then counts as an error."""
MAX_INTERRUPTIONS = 3
"""Stops of the watcher with the same bytes in flight before the request is given up."""

_MODEL_FAILURES = frozenset({ErrorKind.model_failed, ErrorKind.model_timeout, ErrorKind.invalid_output})


def is_transient(kind: ErrorKind) -> bool:
    """An error the watcher retries by itself while it runs: a reader should keep waiting."""
    return kind is ErrorKind.io_error


def republished(input_mtime_ns: int, status_mtime_ns: int) -> bool:
    """The input was published (again) no earlier than its status was written: a model failure gets another run.

    Not older, rather than newer: on a file system with coarse timestamps a publication
    in the same tick as the status must still count (costing at most a spare run).
    The watcher and its readers both ask this, so they never disagree about a failure.
    """
    return input_mtime_ns >= status_mtime_ns


class Verdict(str, Enum):
    run = "run"
    done = "done"
    """Scored already, result in place."""
    refused = "refused"
    """Refused already as invalid input: final for these bytes."""
    failed = "failed"
    """The model failed on these bytes in this life of the watcher, and they were not published again."""


def judge(
    found: tuple[Status, int] | None,
    sha: str,
    *,
    input_mtime_ns: int,
    life_started_ns: int,
    result_present: bool,
) -> Verdict:
    """Whether the input with hash ``sha`` runs, given its current status and that file's mtime.

    ``life_started_ns`` is the file system's clock when this daemon started (the mtime
    of a file it wrote then), so "before this start" compares like with like even on
    a network mount whose clock differs from ours.
    """
    if found is None or found[0].input_sha256 != sha:
        return Verdict.run
    status, status_mtime_ns = found
    if status.state is State.ok:
        return Verdict.done if result_present else Verdict.run
    if status.state is State.running or status.error is None:
        return Verdict.run
    kind = status.error.kind
    if kind is ErrorKind.invalid_input:
        return Verdict.refused
    if kind in _MODEL_FAILURES:
        before_this_start = status_mtime_ns < life_started_ns
        return Verdict.run if republished(input_mtime_ns, status_mtime_ns) or before_this_start else Verdict.failed
    return Verdict.run  # io_error: transient


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based) of a transient fault.

    Doubling from BACKOFF_FIRST up to BACKOFF_MAX, with 20 % jitter so that many
    requests failing together (a full volume) do not retry in lockstep.
    """
    base = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, attempt - 1))
    return base * random.uniform(0.8, 1.0)

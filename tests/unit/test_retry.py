"""The retry policy: what runs again, when, and how long the backoff waits."""

from __future__ import annotations

import pytest

from modelgen_watcher.volume.retry import BACKOFF_FIRST, BACKOFF_MAX, Verdict, backoff, is_transient, judge, republished
from modelgen_watcher.volume.schemas import ErrorInfo, ErrorKind, State, Status

SHA = "a" * 64
T = 1_000_000_000  # the status file's mtime


def _status(state: State, kind: ErrorKind | None = None, sha: str = SHA) -> Status:
    error = ErrorInfo(kind=kind, message="m") if kind else None
    return Status(state=state, input_sha256=sha, started_at="t", error=error)


def _judge(status: Status | None, *, input_mtime: int = T - 5, life_started: int = T - 10, result: bool = True) -> Verdict:
    found = (status, T) if status is not None else None
    return judge(found, SHA, input_mtime_ns=input_mtime, life_started_ns=life_started, result_present=result)


def test_new_or_other_bytes_run() -> None:
    assert _judge(None) is Verdict.run
    assert _judge(_status(State.ok, sha="b" * 64)) is Verdict.run


def test_scored_bytes_are_done_while_their_result_is_there() -> None:
    assert _judge(_status(State.ok)) is Verdict.done
    assert _judge(_status(State.ok), result=False) is Verdict.run


def test_invalid_input_is_final_even_when_published_again() -> None:
    assert _judge(_status(State.error, ErrorKind.invalid_input), input_mtime=T + 5) is Verdict.refused


@pytest.mark.parametrize("kind", [ErrorKind.model_failed, ErrorKind.model_timeout, ErrorKind.invalid_output])
def test_a_model_failure_runs_again_only_when_published_again_or_after_a_restart(kind: ErrorKind) -> None:
    assert _judge(_status(State.error, kind)) is Verdict.failed  # a rescan, a chmod: nothing new
    assert _judge(_status(State.error, kind), input_mtime=T) is Verdict.run  # same tick counts as published again
    assert _judge(_status(State.error, kind), input_mtime=T + 5) is Verdict.run  # touch, rename
    assert _judge(_status(State.error, kind), life_started=T + 1) is Verdict.run  # written before this start


def test_interrupted_and_transient_requests_run() -> None:
    assert _judge(_status(State.running)) is Verdict.run
    assert _judge(_status(State.error, ErrorKind.io_error)) is Verdict.run


def test_only_io_errors_are_transient() -> None:
    assert [k for k in ErrorKind if is_transient(k)] == [ErrorKind.io_error]


def test_republished_is_not_older() -> None:
    assert republished(T, T) and republished(T + 1, T) and not republished(T - 1, T)


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    for attempt in range(1, 12):
        base = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1))
        assert 0.8 * base <= backoff(attempt) <= base
    assert backoff(50) <= BACKOFF_MAX

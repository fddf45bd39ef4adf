"""The scheduler: single flight with one rerun, parallelism up to ``workers``, resilience, retries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelgen_watcher.volume.names import Request
from modelgen_watcher.watcher.outcomes import Outcome, Processed
from modelgen_watcher.watcher.scheduler import Scheduler

WAIT = 10.0
Handler = Callable[[Request], Processed]


@pytest.fixture
def make() -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def factory(handler: Handler, **kwargs: Any) -> Scheduler:  # Scheduler's keyword options, passed on
        kwargs.setdefault("debounce", 0.01)
        s = Scheduler(handler, **kwargs)
        s.start()
        made.append(s)
        return s

    yield factory
    for s in made:
        s.stop(timeout=2)


class Recorder:
    """Counts calls per request; the first call of each request can be held until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.lock = threading.Lock()
        self.calls: list[Request] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, req: Request) -> Processed:
        with self.lock:
            self.calls.append(req)
            first = len(self.calls) == 1
        if first:
            self.started.set()
            assert self.release.wait(WAIT)
        return Processed(Outcome.ok)


def test_single_request_runs_once(make: Callable[..., Scheduler]) -> None:
    rec = Recorder()
    s = make(rec)
    s.notify(Request("a"))
    assert s.wait_idle(WAIT)
    assert rec.calls == [Request("a")]
    assert s.outcomes[Outcome.ok] == 1


def test_many_notices_while_running_give_exactly_one_rerun(make: Callable[..., Scheduler]) -> None:
    rec = Recorder(hold_first=True)
    s = make(rec)
    req = Request("a")
    s.notify(req)
    assert rec.started.wait(WAIT)
    for _ in range(50):
        s.notify(req)
    assert not s.wait_idle(0.05)  # still running: not idle
    rec.release.set()
    assert s.wait_idle(WAIT)
    assert rec.calls == [req, req]
    assert s.idle()


def test_different_requests_run_in_parallel(make: Callable[..., Scheduler]) -> None:
    barrier = threading.Barrier(2, timeout=WAIT)
    passed: list[str | None] = []

    def handler(req: Request) -> Processed:
        barrier.wait()  # only returns if the other request is running at the same time
        passed.append(req.key)
        return Processed(Outcome.ok)

    s = make(handler, workers=2)
    s.notify(Request("a"))
    s.notify(Request("b"))
    assert s.wait_idle(WAIT)
    assert sorted(passed, key=str) == ["a", "b"]  # key: the list is typed to hold None too
    assert s.outcomes[Outcome.ok] == 2


def test_no_more_than_workers_at_once(make: Callable[..., Scheduler]) -> None:
    lock = threading.Lock()
    active, peak, calls = [0], [0], [0]
    two_running, release = threading.Event(), threading.Event()

    def handler(req: Request) -> Processed:
        with lock:
            active[0] += 1
            calls[0] += 1
            peak[0] = max(peak[0], active[0])
            if active[0] == 2:
                two_running.set()
        try:
            assert release.wait(WAIT)
        finally:
            with lock:
                active[0] -= 1
        return Processed(Outcome.ok)

    s = make(handler, workers=2)
    for key in ("a", "b", "c"):
        s.notify(Request(key))
    assert two_running.wait(WAIT)
    release.set()
    assert s.wait_idle(WAIT)
    assert calls[0] == 3
    assert peak[0] == 2


def test_handler_exception_does_not_kill_the_scheduler(make: Callable[..., Scheduler]) -> None:
    handled: list[str | None] = []

    def handler(req: Request) -> Processed:
        if req.key == "boom":
            raise RuntimeError("bug in the pipeline")
        handled.append(req.key)
        return Processed(Outcome.ok)

    s = make(handler)
    s.notify(Request("boom"))
    assert s.wait_idle(WAIT)
    s.notify(Request("next"))
    assert s.wait_idle(WAIT)
    assert s.is_alive()
    assert handled == ["next"]
    assert s.outcomes[Outcome.error] == 1 and s.outcomes[Outcome.ok] == 1


def test_deferred_request_is_retried(make: Callable[..., Scheduler]) -> None:
    results = iter([Processed(Outcome.deferred, retry_after=0.05), Processed(Outcome.ok)])
    calls: list[Request] = []

    def handler(req: Request) -> Processed:
        calls.append(req)
        return next(results)

    s = make(handler)
    s.notify(Request(None))
    assert s.wait_idle(WAIT)
    assert calls == [Request(None), Request(None)]
    assert s.outcomes[Outcome.deferred] == 1 and s.outcomes[Outcome.ok] == 1


def test_wait_idle_times_out_while_busy_then_succeeds(make: Callable[..., Scheduler]) -> None:
    rec = Recorder(hold_first=True)
    s = make(rec)
    assert s.wait_idle(0)  # nothing queued yet
    s.notify(Request("a"))
    assert rec.started.wait(WAIT)
    assert s.wait_idle(0.05) is False
    rec.release.set()
    assert s.wait_idle(WAIT) is True
    assert s.idle()


def test_notices_after_halt_are_ignored(make: Callable[..., Scheduler]) -> None:
    rec = Recorder()
    s = make(rec)
    s.halt()
    s.notify(Request("a"))
    assert s.idle()
    assert rec.calls == []


def test_notices_before_the_first_run_coalesce_into_one_run() -> None:
    calls: list[Request] = []
    done = threading.Event()

    def handler(req: Request) -> Processed:
        calls.append(req)
        done.set()
        return Processed(Outcome.ok)

    sched = Scheduler(handler, workers=1, debounce=0.2)
    sched.start()
    try:
        for _ in range(20):  # a burst well inside the debounce window
            sched.notify(Request("burst"))
        assert done.wait(5)
        assert sched.wait_idle(5)
        assert calls == [Request("burst")]
    finally:
        sched.stop(1)

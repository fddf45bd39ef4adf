"""The ``running`` status of a run: written once the run outlasts the grace, never after the run's end."""

from __future__ import annotations

import threading
import time

from modelgen_watcher.volume.names import Request
from modelgen_watcher.volume.schemas import State, Status
from modelgen_watcher.watcher.running import RunningStatuses

REQ = Request("k")
RUNNING = Status(state=State.running, key="k", input_sha256="0" * 64, started_at="2026-11-29T00:00:00.000Z")


class Recorder:
    def __init__(self, hold: threading.Event | None = None) -> None:
        self.written: list[tuple[Request, State]] = []
        self.entered = threading.Event()
        self.hold = hold

    def __call__(self, req: Request, status: Status) -> None:
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        self.written.append((req, status.state))


def test_a_run_that_ends_within_the_grace_publishes_no_running_status() -> None:
    rec = Recorder()
    statuses = RunningStatuses(rec, grace=5.0)
    statuses.started(REQ, RUNNING)
    statuses.finished(REQ)
    assert rec.written == []


def test_a_run_that_outlasts_the_grace_publishes_it() -> None:
    rec = Recorder()
    statuses = RunningStatuses(rec, grace=0.05)
    statuses.started(REQ, RUNNING)
    assert rec.entered.wait(10)
    statuses.finished(REQ)
    assert rec.written == [(REQ, State.running)]


def test_finished_waits_for_a_running_status_being_written_so_the_final_one_comes_last() -> None:
    hold = threading.Event()
    rec = Recorder(hold)
    statuses = RunningStatuses(rec, grace=0.01)
    statuses.started(REQ, RUNNING)
    assert rec.entered.wait(10)  # the thread is writing it now
    done = threading.Event()

    def finish() -> None:
        statuses.finished(REQ)
        done.set()

    threading.Thread(target=finish, daemon=True).start()
    assert not done.wait(0.2)  # held while the write is under way
    hold.set()
    assert done.wait(10)
    assert rec.written == [(REQ, State.running)]


def test_a_failing_write_is_logged_and_later_runs_still_get_theirs() -> None:
    calls: list[Request] = []

    def write(req: Request, status: Status) -> None:
        calls.append(req)
        if req == REQ:
            raise OSError("read-only file system")

    statuses = RunningStatuses(write, grace=0.01)
    statuses.started(REQ, RUNNING)
    other = Request("other")
    statuses.started(other, RUNNING.model_copy(update={"key": "other"}))
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    statuses.finished(REQ)
    statuses.finished(other)
    assert sorted(r.label for r in calls) == ["k", "other"]



def test_a_status_of_an_earlier_run_is_never_written_for_the_next_run_of_the_same_request() -> None:
    """The thread picks every due status at once, then writes them one by one. If a request's run ends and the
    next run of the same request starts while an earlier pick is being written, the old run's status must not be
    written for the new run: its hash and start time are the old run's."""
    hold = threading.Event()
    entered = threading.Event()
    written: list[Status] = []
    other = Request("other")

    def write(req: Request, status: Status) -> None:
        if req == other:
            entered.set()
            assert hold.wait(10)
        written.append(status)

    statuses = RunningStatuses(write, grace=0.01)
    new = RUNNING.model_copy(update={"input_sha256": "1" * 64})
    with statuses._cond:  # both due before the thread first looks: it picks them together
        statuses.started(other, RUNNING.model_copy(update={"key": "other"}))
        statuses.started(REQ, RUNNING)
        time.sleep(0.05)
    assert entered.wait(10)  # the thread writes other's status; REQ's old one is picked too
    statuses.finished(REQ)  # REQ's run ends before its status was written...
    statuses.started(REQ, new)  # ...and its next run, of new bytes, starts
    hold.set()
    statuses.finished(other)
    deadline = time.monotonic() + 10
    while not any(s.key == "k" for s in written) and time.monotonic() < deadline:
        time.sleep(0.01)
    statuses.finished(REQ)
    assert [s.input_sha256 for s in written if s.key == "k"] == [new.input_sha256]

"""The runner interface: what the pipeline hands a model, and what it gets back."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..logs import get_logger
from ..volume import fsio
from ..volume.names import MAX_RESULT_BYTES

log = get_logger(__name__)


NO_OUTPUT = "no output file"
"""``RunReport.output_error`` when the model wrote nothing."""


def read_output(path: Path) -> bytes | str:
    """A model's output file, read with the daemon's guards (a regular file, never through a symlink, at most
    the result's size limit), or why it cannot be: ``NO_OUTPUT`` when there is none."""
    try:
        return fsio.safe_read(path, MAX_RESULT_BYTES).data
    except FileNotFoundError:
        return NO_OUTPUT
    except (fsio.UnsafeFile, OSError) as exc:
        return str(exc)


@dataclass(frozen=True)
class ModelJob:
    """One scoring run: the input to read and the file to write (inside ``workspace``).

    ``input_data``, when given, is the input's bytes, not yet on disk: the runner puts them
    where its model reads them (a process per request, at ``input_path``; a warm worker,
    in its own workspace, from its own process) and removes them after the run. None:
    ``input_path`` holds them already.
    """

    input_path: Path
    output_path: Path
    workspace: Path
    key: str | None
    timeout: float
    input_data: bytes | None = field(default=None, compare=False, repr=False)
    on_wait: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    """Called when the run must wait for a busy warm worker, before it waits (never when it need not): while it
    waits, a stop of the watcher is no interruption of this request (see ``inflight``). It must not raise."""
    on_start: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    """Called once, just before the model gets the request (a warm worker takes it, or its process is about
    to start; see ``announce_start``): after a wait, a stop counts against the request again."""

    @property
    def output_name(self) -> str:
        return self.output_path.name


@dataclass(frozen=True)
class RunReport:
    """How a run ended. ``launch_error`` is set when the model could not be started at all."""

    exit_code: int | None
    duration_s: float
    timed_out: bool = False
    cancelled: bool = False
    launch_error: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    output: bytes | None = None
    """The model's output as its runner read it (a warm worker reads its own, from its own process, and sends it
    back); None: it is at ``job.output_path``, for the pipeline to read."""
    output_error: str | None = None
    """Why the runner could not read the output (``NO_OUTPUT`` when there was none), for a run that exited 0."""
    reached_model: bool = True
    """False for a run cancelled before the model saw the request: while it waited for a warm worker, or asked of
    a runner already stopped. The pipeline then marks it waiting (``on_wait``), so the stop is not counted
    against it."""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.cancelled or self.launch_error)


def announce_wait(job: ModelJob) -> None:
    """Call ``job.on_wait``, if any, before the run waits for a busy warm worker (see ``_announce``)."""
    _announce(job, job.on_wait, "runner.on_wait_failed")


def announce_start(job: ModelJob) -> None:
    """Call ``job.on_start``, if any, as the model gets the request (see ``_announce``)."""
    _announce(job, job.on_start, "runner.on_start_failed")


def _announce(job: ModelJob, callback: Callable[[], None] | None, event: str) -> None:
    """Call one of ``job``'s callbacks; what it raises is logged, never let through (a run, or the worker slot it
    holds, must not be lost to its bookkeeping: the request then counts as it did before)."""
    if callback is None:
        return
    try:
        callback()
    except Exception as exc:  # noqa: BLE001 - whatever it is, the run goes on
        log.warning(event, key=job.key, error=str(exc))


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9, as an operator reads it; ``signal 99`` for a number no signal has here."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def discard(path: Path) -> None:
    """Remove a file of a model run (its input or output), whatever the model left in its place; never raises.

    A model may leave a directory where its output should be: removed too (rmtree does
    not follow symlinks). A failure to remove is logged, never allowed to replace the
    request's real outcome; start-up clean-up removes what is left.
    """
    try:
        fsio.remove_quietly(path)
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
    except OSError as exc:
        log.warning("model.cleanup_failed", file=str(path), error=str(exc))


class ModelLoadError(Exception):
    """A runner's model cannot be loaded (a warm worker's factory raised, or it never became ready).

    ``detail`` holds what the model printed or its traceback, for the operator.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class ModelRunner(Protocol):
    """A strategy that runs a model on one job at a time per calling thread.

    Containment policy, for every strategy: no model process, nor anything it starts,
    outlives its request, even when the daemon itself was killed. The daemon calls
    ``start`` once at start-up, ``run`` per request from its workers, ``reap_orphans``
    with every heartbeat, ``cancel`` for a run whose claim was lost (shared mode), and
    ``stop`` at shutdown; it calls nothing else.
    """

    overlap: int
    """Requests the daemon may serve beyond ``--workers`` at once: a runner with its own bounded pool
    (the warm workers) queues a ``run`` until a worker is free, so more requests can be read, checked
    and published while the model scores another (``WarmRunner.overlap`` says how many and why). A
    runner that starts a process per call has 0: ``--workers`` is how many models run at once."""

    def start(self, record_dir: Path) -> int:
        """Take charge of model processes for one watch dir before the first run; returns how many leftovers it stopped.

        The daemon calls it once, holding the watch dir's lock. Leftovers are model
        processes an earlier daemon on this directory left running when it was killed;
        ``record_dir`` (``Layout.run_dir``) is where a runner keeps what it needs to
        find them. A runner without processes of its own returns 0.
        """
        ...

    def run(self, job: ModelJob) -> RunReport:
        """Run to completion, timeout or cancellation; never raises for model misbehaviour.

        When it returns, nothing the model started is left running, and the run holds
        no thread or file descriptor of the caller's process.
        """
        ...

    def reap_orphans(self) -> int:
        """Reap and stop what finished runs left behind; returns how many processes that was.

        The daemon calls it with every heartbeat (not only as PID 1): descendants of a
        model can become the daemon's children after their parents exit, and must be
        stopped and reaped whenever that happens.
        """
        ...

    def cancel(self, job: ModelJob) -> None:
        """Cancel ``job``'s run if it is in flight (its report says ``cancelled``); other runs go on.

        Called from another thread than the run's: shared mode cancels a run whose claim
        another watcher took over, since its result would be thrown away.
        """
        ...

    def stop(self) -> None:
        """Cancel every run in flight (their reports say ``cancelled``) and refuse new ones."""
        ...

"""One subprocess per request, contained: no model process, nor anything it starts, outlives its request.

How, in order of a run:

- The model starts in a session (and process group) of its own, with a random run id
  in its environment (``MODELGEN_RUN_ID``) that everything it starts inherits.
- The ``run()`` thread itself drains stdout and stderr (keeping the last ``tail.TAIL_BYTES`` of
  each, so a chatty model never blocks) and waits for the exit in the same selector
  loop, on a pidfd where Linux has one: no thread is started per run.
- A timeout (or ``stop()``) sends TERM to the group, then KILL after ``kill_grace``;
  when the model is gone, whatever is left in its group is killed.
- Descendants that left the group (``setsid``, double forks) are re-parented to the
  daemon, which ``start()`` made their subreaper, and are killed as soon as they turn
  up as its children without the run id of a model still running: when the run ends
  and with every heartbeat (``reap_orphans``).
- The pipes get PIPE_GRACE to reach end of file once the group is dead; our ends are
  then closed regardless, so nothing a model leaves behind costs the daemon an fd.
- While a model runs, its group is recorded under ``.modelgen/run/`` (see ``records``),
  so a daemon started after this one was SIGKILLed stops it.

With ``workers`` above 1, the runs at once each get a workspace of their own,
``<workspace>/w<n>``, seeded with the shared one's files when first made, as warm workers
do: a model that rewrites a cache there in place (upstream's pickle) would otherwise read
it half-written while another run rewrites it. The run's output is written there, and
read back (with the daemon's guards) and removed by the runner.

Without ``start()`` (the one-shot ``score`` command) the runner still kills the group
and never holds a pipe or a thread past the run, but does not chase escaped
descendants or keep records. Where Linux's pidfd, /proc or prctl are missing, exits are
polled and containment falls back to the process group.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import secrets
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..logs import get_logger
from ..volume import fsio
from ..volume.names import WORKER_WORKSPACE_PREFIX
from .argv import render
from .base import ModelJob, RunReport, announce_start, discard, read_output
from .containment import Containment
from .records import RUN_ID_ENV
from .tail import Tail

log = get_logger(__name__)

PIPE_GRACE = 0.5
"""Seconds the output pipes get to reach end of file once the model's group is dead."""
POLL_INTERVAL = 0.02
"""Seconds between checks where no pidfd tells us of the exit, and between sweeps for escaped descendants."""
_CHUNK = 65536


def _open_pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+); None means poll instead."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # an old kernel (ENOSYS), a sandbox refusing it, or no fd to spare
        return None
    return fd


class _Streams:
    """The model's stdout, stderr and exit, watched by one selector in the thread that called ``run()``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self._proc = proc
        self._sel: selectors.BaseSelector = (
            selectors.PollSelector() if hasattr(selectors, "PollSelector") else selectors.DefaultSelector()
        )
        self.out, self.err = Tail(), Tail()
        self._pipes: dict[int, tuple[IO[bytes], Tail]] = {}
        for stream, tail in ((proc.stdout, self.out), (proc.stderr, self.err)):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._sel.register(fd, selectors.EVENT_READ)
            self._pipes[fd] = (stream, tail)
        self._pidfd = _open_pidfd(proc.pid)
        self._exit_seen = False
        if self._pidfd is not None:
            self._sel.register(self._pidfd, selectors.EVENT_READ)

    def exited(self) -> bool:
        """True once the model has exited. With a pidfd it is left unreaped, so its group id stays ours to signal."""
        if self._pidfd is not None or self._exit_seen:
            return self._exit_seen
        self._exit_seen = self._proc.poll() is not None
        return self._exit_seen

    @property
    def pipes_open(self) -> bool:
        return bool(self._pipes)

    def pump(self, timeout: float | None) -> None:
        """Read what the pipes hold and note the exit, waiting up to ``timeout`` s (None: until something happens)."""
        if self._pidfd is None and not self._exit_seen:
            timeout = POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)
        for key, _ in self._sel.select(timeout):
            if key.fd == self._pidfd:
                self._exit_seen = True
                self._close_pidfd()
            else:
                self._read(key.fd)

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""  # a broken pipe ends the stream like end of file does
        if chunk:
            self._pipes[fd][1].feed(chunk)
        else:
            self._close_pipe(fd)

    def _close_pipe(self, fd: int) -> None:
        stream, _ = self._pipes.pop(fd)
        self._sel.unregister(fd)
        stream.close()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._sel.unregister(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def close(self) -> None:
        """Close our ends of everything, whoever still holds the other ends."""
        for fd in list(self._pipes):
            self._close_pipe(fd)
        self._close_pidfd()
        self._sel.close()


@dataclass(eq=False)
class _Run:
    """One model in flight. Its pid is also its process group and session id."""

    proc: subprocess.Popen[bytes]
    run_id: str
    job: ModelJob
    cancelled: bool = False
    reaped: threading.Event = field(default_factory=threading.Event)

    @property
    def pgid(self) -> int:
        return self.proc.pid


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """True while any process (zombies included) is still in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SubprocessRunner:
    """Runs ``template`` without a shell, one contained process group per request (see the module docstring)."""

    overlap = 0
    """``--workers`` models at once: no pool of its own to queue further requests on."""

    def __init__(self, template: list[str], cwd: Path | None = None, kill_grace: float = 3.0,
                 workers: int = 1) -> None:
        self.template = template
        self.cwd = cwd
        self.kill_grace = kill_grace
        self._spaces: queue.SimpleQueue[int] | None = None
        """With ``workers`` above 1: the free indexes of the runs' own workspaces (see the module docstring)."""
        if workers > 1:
            self._spaces = queue.SimpleQueue()
            for n in range(workers):
                self._spaces.put(n)
        self._lock = threading.Lock()
        self._running: dict[str, _Run] = {}
        self._stopped = False
        self._containment = Containment()

    # -- the ModelRunner interface -----------------------------------------

    def start(self, record_dir: Path) -> int:
        """Take charge of model processes for one watch dir (see ``containment``); returns leftover groups stopped."""
        with self._lock:
            ours = {run.pgid for run in self._running.values()}
        return self._containment.take_charge(record_dir, spare=ours)

    def run(self, job: ModelJob) -> RunReport:
        """Run the model to completion, timeout or cancellation; nothing it started survives the return."""
        try:
            n = self._spaces.get_nowait() if self._spaces is not None else None
        except queue.Empty:  # more runs at once than ``workers``: the shared workspace, as with one
            n = None
        if n is None:
            return self._run_in(job)
        assert self._spaces is not None
        try:
            return self._run_in_own_workspace(job, n)
        finally:
            self._spaces.put(n)

    def _run_in_own_workspace(self, job: ModelJob, n: int) -> RunReport:
        """``job`` in workspace ``n``; its output read back here, and removed, whatever the run did."""
        try:
            workspace = fsio.seed_dir(job.workspace / f"{WORKER_WORKSPACE_PREFIX}{n}", job.workspace)
        except (OSError, fsio.UnsafeFile) as exc:
            return RunReport(exit_code=None, duration_s=0.0, launch_error=f"the run's workspace cannot be used: {exc}")
        local = dataclasses.replace(job, workspace=workspace, output_path=workspace / job.output_name)
        try:
            report = self._run_in(local)
            if not report.succeeded:
                return report
            output = read_output(local.output_path)
            if isinstance(output, str):
                return dataclasses.replace(report, output_error=output)
            return dataclasses.replace(report, output=output)
        finally:
            discard(local.output_path)

    def _run_in(self, job: ModelJob) -> RunReport:
        start = time.monotonic()
        announce_start(job)
        if job.input_data is not None:  # the model's own copy of the bytes (OSError: the volume's trouble)
            fsio.write_new(job.input_path, job.input_data)
        try:
            return self._run(job, start)
        finally:
            if job.input_data is not None:
                discard(job.input_path)

    def _run(self, job: ModelJob, start: float) -> RunReport:
        launched = self._launch(render(self.template, job), job, start)
        if isinstance(launched, RunReport):
            return launched
        run = launched
        self._containment.record(run.pgid, run.run_id)
        streams = _Streams(run.proc)
        try:
            try:
                timed_out = self._supervise(run, streams, start + job.timeout)
            finally:
                self._end(run)
            if not self._settle(run, streams):
                log.warning("model.escaped", pid=run.pgid, action="closed its output pipes",
                            reason="a descendant that left the model's process group still held them")
        finally:
            streams.close()
            self._containment.unrecord(run.pgid, run.run_id)
        return RunReport(
            exit_code=run.proc.returncode,
            duration_s=time.monotonic() - start,
            timed_out=timed_out and not run.cancelled,
            cancelled=run.cancelled,
            stdout_tail=streams.out.text(),
            stderr_tail=streams.err.text(),
        )

    def reap_orphans(self) -> int:
        """Reap zombie children, and kill leftovers of finished model runs (see ``containment``)."""
        with self._lock:
            running = {run.pgid for run in self._running.values()}
            live_ids = {run.run_id for run in self._running.values()}
            return self._containment.sweep(running, live_ids)

    def cancel(self, job: ModelJob) -> None:
        """Cancel ``job``'s run if it is in flight: TERM to its group now, KILL after ``kill_grace``."""
        with self._lock:
            runs = [run for run in self._running.values() if run.job is job]
            for run in runs:
                run.cancelled = True
                _signal_group(run.pgid, signal.SIGTERM)
        if runs:
            timer = threading.Timer(self.kill_grace, self._kill_unreaped, args=(runs,))
            timer.daemon = True
            timer.start()

    def _kill_unreaped(self, runs: list[_Run]) -> None:
        with self._lock:  # under the lock an unreaped leader keeps its group id from being reused
            for run in runs:
                if not run.reaped.is_set():
                    _signal_group(run.pgid, signal.SIGKILL)

    def stop(self) -> None:
        """Cancel every run in flight: TERM to each group, KILL after ``kill_grace``; refuse new runs."""
        with self._lock:
            self._stopped = True
            runs = list(self._running.values())
            for run in runs:
                run.cancelled = True
                _signal_group(run.pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        for run in runs:
            run.reaped.wait(max(0.0, deadline - time.monotonic()))
        self._kill_unreaped(runs)
        deadline = time.monotonic() + 1.0
        for run in runs:
            run.reaped.wait(max(0.0, deadline - time.monotonic()))

    # -- one run ------------------------------------------------------------

    def _launch(self, argv: list[str], job: ModelJob, start: float) -> _Run | RunReport:
        """Start the model, registered as running under the lock; a report instead if it cannot start."""
        run_id = secrets.token_hex(16)
        with self._lock:
            if self._stopped:  # the model never gets it: a stop that does not count against the request
                return RunReport(exit_code=None, duration_s=0.0, cancelled=True, reached_model=False)
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", RUN_ID_ENV: run_id},
                )
            except OSError as exc:
                return RunReport(
                    exit_code=None, duration_s=time.monotonic() - start, launch_error=f"cannot start {argv[0]!r}: {exc}"
                )
            run = _Run(proc, run_id, job)
            self._running[run_id] = run
        return run

    def _supervise(self, run: _Run, streams: _Streams, timeout_at: float) -> bool:
        """Drain the output until the model exits; TERM then KILL its group at the timeout. True if it timed out."""
        timed_out = False
        kill_at: float | None = None
        while not streams.exited():
            now = time.monotonic()
            if kill_at is None and now >= timeout_at:
                timed_out = True
                _signal_group(run.pgid, signal.SIGTERM)
                kill_at = now + self.kill_grace
            elif kill_at is not None and now >= kill_at:
                _signal_group(run.pgid, signal.SIGKILL)
                kill_at = math.inf
            wake = timeout_at if kill_at is None else kill_at
            streams.pump(None if wake == math.inf else max(0.0, wake - now))
        return timed_out

    def _end(self, run: _Run) -> None:
        """Kill what the model left in its group, reap the model and forget it, all before its pid can be reused."""
        _signal_group(run.pgid, signal.SIGKILL)
        with self._lock:
            run.proc.wait()  # the model has exited (or was just killed): this returns at once
            self._running.pop(run.run_id, None)
            run.reaped.set()

    def _settle(self, run: _Run, streams: _Streams) -> bool:
        """Stop what the run left behind and give its pipes PIPE_GRACE to reach end of file; False if they did not."""
        deadline = time.monotonic() + PIPE_GRACE
        settled = not self._containment.active
        while True:
            if not settled:  # nothing killed or reaped this time, and the group is empty
                settled = self.reap_orphans() == 0 and not _group_alive(run.pgid)
            if settled and not streams.pipes_open:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not streams.pipes_open
            streams.pump(remaining if settled else min(remaining, POLL_INTERVAL))

    # -- helpers ------------------------------------------------------------

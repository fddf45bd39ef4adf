"""One subprocess per request: argument template, own process group, timeout, drained output."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from ..logs import get_logger
from ..settings import PLACEHOLDERS
from .base import ModelJob, RunReport

log = get_logger("modelgen_watcher.runner")

_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
PIPE_GRACE = 0.5
"""Seconds to wait for the output pipes to close once the model's group is gone."""
TAIL_BYTES = 16 * 1024
"""How much of each stream is kept for the error status; the rest is read and dropped."""


def render_argv(template: list[str], job: ModelJob) -> list[str]:
    """Fill the placeholders in each argument in one pass (a value is never re-scanned); no shell is involved."""
    values = {
        "input": str(job.input_path),
        "output": str(job.output_path),
        "workspace": str(job.workspace),
        "output_name": job.output_name,
        "key": job.key or "",
    }
    return [_PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), arg) for arg in template]


class _Tail:
    """Drains a pipe on its own thread, keeping only the last TAIL_BYTES, so a chatty model never blocks."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._buf: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True, name="model-pipe")
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        with stream:
            while chunk := stream.read1(65536):  # type: ignore[attr-defined]
                self._buf.append(chunk)
                self._size += len(chunk)
                while self._size - len(self._buf[0]) >= TAIL_BYTES:
                    self._size -= len(self._buf.popleft())

    def finished(self, deadline: float) -> bool:
        """Wait for end of stream until ``deadline`` (monotonic); False if something still holds the pipe."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def text(self) -> str:
        data = b"".join(self._buf)[-TAIL_BYTES:]
        return data.decode("utf-8", errors="replace")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class SubprocessRunner:
    """Runs ``template`` without a shell in a new session, killing the whole group on timeout or stop."""

    def __init__(self, template: list[str], cwd: Path | None = None, kill_grace: float = 3.0) -> None:
        self.template = template
        self.cwd = cwd
        self.kill_grace = kill_grace
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._cancelled: set[int] = set()
        self._stopped = False

    def run(self, job: ModelJob) -> RunReport:
        argv = render_argv(self.template, job)
        start = time.monotonic()
        with self._lock:
            if self._stopped:
                return RunReport(exit_code=None, duration_s=0.0, cancelled=True)
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            except OSError as exc:
                return RunReport(
                    exit_code=None, duration_s=time.monotonic() - start, launch_error=f"cannot start {argv[0]!r}: {exc}"
                )
            self._running[proc.pid] = proc
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Tail(proc.stdout), _Tail(proc.stderr)
        timed_out = False
        try:
            proc.wait(timeout=job.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            self._terminate(proc)
        finally:
            # Whatever the model left behind in its group (daemonised children holding
            # our pipes open) goes with it: no model process outlives its request.
            _signal_group(proc.pid, signal.SIGKILL)
            with self._lock:
                self._running.pop(proc.pid, None)
                cancelled = proc.pid in self._cancelled
                self._cancelled.discard(proc.pid)
        # The group is dead; only a descendant that left it (setsid) can still hold our
        # pipes. Do not let it stall the request: give up on its output after a moment.
        pipe_deadline = time.monotonic() + PIPE_GRACE
        if not (out.finished(pipe_deadline) and err.finished(pipe_deadline)):
            log.warning("model.escaped", pid=proc.pid,
                        reason="a descendant left the model's process group and still holds its output open")
        return RunReport(
            exit_code=proc.returncode,
            duration_s=time.monotonic() - start,
            timed_out=timed_out and not cancelled,
            cancelled=cancelled,
            stdout_tail=out.text(),
            stderr_tail=err.text(),
        )

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        """TERM to the group, then KILL after the grace period."""
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.kill_grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def reap_orphans(self) -> int:
        """Reap zombie children that are not ours to wait for; needed when we run as PID 1.

        Orphaned descendants of models are re-parented to PID 1, and a container's PID 1
        must reap them or they pile up. Our own running models are left to ``Popen``:
        the lock keeps a just-started model from being mistaken for an orphan.
        """
        me, reaped = os.getpid(), 0
        with self._lock:
            ours = set(self._running)
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or int(entry.name) in ours:
                    continue
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as fh:
                        fields = fh.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                if fields[0] == b"Z" and int(fields[1]) == me:
                    try:
                        os.waitpid(int(entry.name), os.WNOHANG)
                        reaped += 1
                    except ChildProcessError:
                        pass
        return reaped

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            procs = list(self._running.values())
            self._cancelled.update(p.pid for p in procs)
        threads = [threading.Thread(target=self._terminate, args=(p,), daemon=True) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.kill_grace + 1)

"""Warm workers (the ``entry`` runner): model processes that load the model once and serve request after request.

Each worker is the model's interpreter running ``modelside/host.py`` with an entry
(``MODULE_OR_PATH:FACTORY``); the factory is called once, and every request is one call
of what it returned. The watcher and a worker talk JSON lines over two pipes of their
own (the protocol is in host.py), so what the model prints never mixes with it.

- **Pool**: ``workers`` slots, each serving one request at a time, each with its own
  workspace (``<workspace>/w<n>``, seeded from the shared one when first made), because
  a model may rewrite its caches in place (upstream rewrites its pickle on every run).
- **Start**: ``start()`` starts every worker and waits until each has loaded the model,
  within ``start_timeout``, so the daemon reports ready only when requests can be
  served; a model that cannot load is a ``ModelLoadError`` naming why.
- **Containment**, as for one process per request (``containment``): every worker has
  its own session and a run id, is recorded while alive, and its descendants are swept.
  A request that outlives its timeout kills the worker's whole group
  (``model_timeout``); a worker that dies gives its request ``model_failed`` with the
  last lines of its stderr. Either way, and after ``max_requests`` requests or once its
  resident memory passes ``max_rss`` bytes, the worker is replaced in the background.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import secrets
import select
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..logs import get_logger
from ..volume import fsio
from ..volume.names import MAX_RESULT_BYTES, WORKER_WORKSPACE_PREFIX
from .argv import render, render_for_worker
from .base import (
    NO_OUTPUT,
    ModelJob,
    ModelLoadError,
    RunReport,
    announce_start,
    announce_wait,
    discard,
    signal_name,
)
from .containment import Containment
from .records import REQUEST_ID_SEP, RUN_ID_ENV
from .tail import Tail

log = get_logger(__name__)

_EOF = "eof"
"""What the reader thread queues when the worker's reply pipe ends: the worker is gone."""
SEND_CHECK_EVERY = 0.05
"""Seconds between a blocked send's checks for a stop (``_Worker.send``): its share of a stop's time."""
SHARED_OVERLAP = 2
"""``WarmRunner.overlap`` in shared mode, smaller: a request taken ahead is claimed, and a request claimed by a busy
watcher is one an idle watcher cannot take (a burst of ten on three watchers of one worker each: three, three and
three with two; five, five and none with four), nor anyone before its lease runs out if its watcher is killed."""
READ_BYTES = 65536
"""The most one read of a worker's pipes takes."""
ONE_WRITE_BYTES = 64 * 1024
"""An input up to this size goes to the worker in one write with its request line (copied once to join them:
a route of a few KiB); a larger one is written as it is, after the line."""


@dataclass(frozen=True)
class WorkerSpec:
    """How to start a worker: the interpreter (with its flags), the entry, the model command, where."""

    python: list[str]
    entry: str
    host: Path
    template: list[str] = dataclasses.field(default_factory=list)
    """The model command; rendered for the worker (its workspace) and again for each request."""
    cwd: Path | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    """Variables the worker gets on top of the watcher's environment."""


class _Worker:
    """One warm model process: its pipes, its reader thread, and what it has served."""

    def __init__(self, proc: subprocess.Popen[bytes], requests_fd: int, replies_fd: int, run_id: str,
                 workspace: Path) -> None:
        self.proc = proc
        self.run_id = run_id
        self.workspace = workspace
        self.served = 0
        self.sent = 0
        self.request_id: str | None = None
        """The run id of the request in progress, which what it starts carries (``records.REQUEST_ID_SEP``)."""
        self.rss_kb = 0
        os.set_blocking(requests_fd, False)  # a send is bounded: see ``send``
        self._requests_fd = requests_fd
        self._send_lock = threading.Lock()
        """Held by a send; ``close_requests`` takes it to close the pipe only between sends."""
        self._closing = threading.Event()
        """Set by ``abandon`` and ``close_requests``: a send in progress gives up at its next check."""
        self._replies: queue.SimpleQueue[dict[str, Any] | str] = queue.SimpleQueue()
        self.out, self.err = Tail(), Tail()
        self._reader = threading.Thread(target=self._read, args=(replies_fd,), daemon=True,
                                         name=f"worker-{proc.pid}")
        self._reader.start()

    @property
    def pgid(self) -> int:
        return self.proc.pid

    def _read(self, replies_fd: int) -> None:
        """Drain stdout and stderr (tails kept) and turn reply lines into queued messages, until the worker is gone."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        tails = {self.proc.stdout.fileno(): self.out, self.proc.stderr.fileno(): self.err}
        quick = selectors.DefaultSelector()  # the tails alone, for ``_drain`` before each reply
        for fd in tails:
            quick.register(fd, selectors.EVENT_READ)
        for fd in (*tails, replies_fd):
            sel.register(fd, selectors.EVENT_READ)
        replies = _Replies()
        try:
            while sel.get_map():
                for key, _ in sel.select():
                    try:
                        chunk = os.read(key.fd, READ_BYTES)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(key.fd)
                        if key.fd in quick.get_map():
                            quick.unregister(key.fd)
                        if key.fd == replies_fd:
                            self._replies.put(_EOF)
                        continue
                    if key.fd != replies_fd:
                        tails[key.fd].feed(chunk)
                        continue
                    messages = replies.feed(chunk)
                    if messages and quick.get_map():  # what the request printed before its reply is in the tails first
                        self._drain(quick, tails)
                    for message in messages:
                        self._replies.put(message)
        finally:
            sel.close()
            quick.close()
            os.close(replies_fd)
            self.proc.stdout.close()
            self.proc.stderr.close()

    @staticmethod
    def _drain(quick: selectors.BaseSelector, tails: dict[int, Tail], limit: int = 64) -> None:
        """Read what is already waiting on stdout and stderr (at most ``limit`` chunks, so a model printing without
        end cannot hold a reply back), before every reply. A forked child's output reaches these pipes before its
        parent replies, but the select that reports the reply need not report the output too: epoll and poll look
        at one descriptor after another, and output and reply written between two of those looks leave the reply
        alone in that round (skipping this drain when no tail read filled its buffer was tried, and dropped for
        that). A tail found at its end leaves ``quick``; the main loop sees its end too."""
        for _ in range(limit):
            ready = quick.select(0)
            if not ready:
                return
            for key, _ in ready:
                try:
                    chunk = os.read(key.fd, READ_BYTES)
                except OSError:
                    chunk = b""
                if chunk:
                    tails[key.fd].feed(chunk)
                else:
                    quick.unregister(key.fd)


    def send(self, msg: dict[str, Any], payload: bytes | None, deadline: float) -> bool | None:
        """A request, and the raw bytes that follow its line (``input_bytes``): True once written, False when the
        worker is gone (broken pipe, retired, abandoned), None when ``deadline`` (``time.monotonic``) passed first.

        Bounded, because an input larger than the pipe's buffer is written only as fast as the worker reads it:
        a worker that stopped reading (hung, or dead while a process it forked still holds the pipe) would
        otherwise hold the request, and the runner's stop, for ever. Its request then times out like a hung
        model, and the worker's group is killed.
        """
        line, payload = json.dumps(msg).encode() + b"\n", payload or b""
        # One write (one system call fewer) where copying is cheap; an empty part writes nothing.
        parts = [line + payload] if len(payload) <= ONE_WRITE_BYTES else [line, payload]
        chunks = [memoryview(part) for part in parts]
        with self._send_lock:
            if self._requests_fd < 0:
                return False
            poller: select.poll | None = None
            for chunk in chunks:
                while chunk:
                    try:
                        chunk = chunk[os.write(self._requests_fd, chunk):]
                        continue
                    except BlockingIOError:
                        pass
                    except OSError:  # the worker is gone (broken pipe)
                        return False
                    left = deadline - time.monotonic()
                    # Given up, or the worker ended (a process it forked may still hold the pipe open):
                    if self._closing.is_set() or _exit_code(self.proc.pid, 0.0) is not _STILL_RUNNING:
                        return False
                    if left <= 0:
                        return None
                    if poller is None:
                        poller = select.poll()
                        poller.register(self._requests_fd, select.POLLOUT)
                    poller.poll(min(left, SEND_CHECK_EVERY) * 1000)
        return True

    def receive(self, timeout: float) -> dict[str, Any] | str | None:
        """The next reply, ``_EOF`` when the worker is gone, None after ``timeout``."""
        try:
            return self._replies.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def abandon(self) -> None:
        """Wake the request waiting on this worker as if the worker were gone (the runner is stopping)."""
        self._closing.set()
        self._replies.put(_EOF)

    def close_requests(self) -> None:
        """Close the request pipe (a worker reading it exits by itself), once a send in progress has given up."""
        self._closing.set()
        with self._send_lock:
            if self._requests_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._requests_fd)
                self._requests_fd = -1


class _Replies:
    """The reply pipe's stream cut into messages: JSON lines, a line with ``output_bytes`` N followed by N raw bytes
    (the output, put in the message as ``output``). Linear in what it reads: the output is not searched for lines."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiting: tuple[dict[str, Any], int] | None = None
        """A reply whose output's bytes are still coming, and how many."""

    def feed(self, chunk: bytes) -> list[dict[str, Any] | str]:
        self._buffer += chunk
        messages: list[dict[str, Any] | str] = []
        while True:
            if self._waiting is not None:
                reply, size = self._waiting
                if len(self._buffer) < size:
                    return messages
                reply["output"] = bytes(self._buffer[:size])
                del self._buffer[:size]
                self._waiting = None
                messages.append(reply)
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                return messages
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            msg = _decode(line)
            announced = msg.get("output_bytes") if isinstance(msg, dict) else None
            if announced is None:
                messages.append(msg)
            elif isinstance(msg, dict) and isinstance(announced, int) and 0 <= announced <= MAX_RESULT_BYTES:
                self._waiting = (msg, announced)
            else:
                messages.append(_EOF)  # a host that says it sends more than it may is broken: treat it as gone


def _decode(line: bytes) -> dict[str, Any] | str:
    try:
        msg = json.loads(line)
    except ValueError:
        return _EOF  # a host that writes garbage to its reply pipe is broken: treat it as gone
    return msg if isinstance(msg, dict) else _EOF


class WarmRunner:
    """A pool of warm workers behind the ``ModelRunner`` interface (see the module docstring).

    Every worker is tracked in ``_live`` from the moment it is started until its
    retirement has reaped it: the orphan sweep spares it (a worker still loading the
    model, or one exiting on its own once retired, is not a leftover), and ``stop()``
    ends it, whatever it is doing. A slot's index is in
    ``_idle`` whenever no request holds it and no replacement is being started for it;
    every path out of ``run()`` gives it back or hands it to the replacement.
    """

    def __init__(self, spec: WorkerSpec, *, workspace: Path, workers: int = 1, kill_grace: float = 3.0,
                 start_timeout: float = 60.0, max_requests: int = 0, max_rss: int = 0,
                 model_cpus: frozenset[int] | None = None, shared: bool = False) -> None:
        self.spec = spec
        if shared:
            self.overlap = SHARED_OVERLAP
        self.workspace = workspace
        self.kill_grace = kill_grace
        self.start_timeout = start_timeout
        self.max_requests = max_requests
        self.max_rss = max_rss
        self.model_cpus = model_cpus
        """The CPUs each worker takes back before it loads the model (the daemon's threads run on one of them)."""
        self.model_policy = _policy() if model_cpus else None
        """The scheduling policy each worker takes back with them: the daemon's now, before it pins itself and its
        threads take turns (``watcher/affinity.py``)."""
        self._lock = threading.Lock()
        self._slots: list[_Worker | None] = [None] * workers
        self._idle: queue.SimpleQueue[int] = queue.SimpleQueue()
        for n in range(workers):
            self._idle.put(n)
        self._live: dict[int, _Worker] = {}
        self._finishing: set[_Worker] = set()
        """Workers whose ``_finish`` has begun: a second caller (``stop()`` meeting a retirement) leaves it."""
        self._finished = threading.Condition(self._lock)
        """Notified as each finishing worker is forgotten: ``stop()`` waits for the retirements under way."""
        self._busy: dict[int, _Worker] = {}
        self._jobs: dict[int, ModelJob] = {}
        """The job each busy slot serves (``cancel`` finds it here)."""
        self._cancelled: set[int] = set()
        self._stopped = False
        self._containment = Containment()

    # -- the ModelRunner interface -----------------------------------------

    def start(self, record_dir: Path) -> int:
        """Take charge of model processes, then start every worker and wait until each has loaded the model."""
        stopped = self._containment.take_charge(record_dir)
        errors: list[Exception] = []

        def fill(n: int) -> None:
            try:
                self._fill(n)
            except Exception as exc:  # noqa: BLE001 - reported below, whatever it is
                errors.append(exc)

        threads = [threading.Thread(target=fill, args=(n,), name=f"worker-start-{n}") for n in range(len(self._slots))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            first = errors[0]
            raise first if isinstance(first, ModelLoadError) else ModelLoadError(f"cannot start a worker: {first}")
        log.info("runner.workers_ready", workers=len(self._slots), entry=self.spec.entry)
        return stopped

    overlap = 4
    """Four requests beyond ``--workers`` wait here for a worker (see ``ModelRunner.overlap``): while the workers
    score, the next requests are read and checked and the last ones published. Publishing waits on the disk
    (two fsyncs a request, each a journal commit or a device flush on a journalled ext4), and there most of a
    request's time in the daemon is its publication (2.3 of 4 threads publishing, 1.6 in fsync, with two).
    Draining 3,000 requests on a journalled ext4 (four drains each, interleaved), four rather than two took two
    workers from 729 to 756 a second and one from 671 to 738; eight or twelve no more, the fsyncs taking longer
    as more wait at once; a tmpfs the same with two, four or eight. Two in shared mode (``SHARED_OVERLAP``)."""

    def run(self, job: ModelJob) -> RunReport:
        """Serve ``job`` on a worker once one is idle; the report says how it ended, as the subprocess runner's does.

        The wait for a worker is not the model's time: ``job.timeout`` starts when a worker takes the job. The
        wait is bounded all the same, since every worker is given back within its own timeout and kill grace.
        """
        n = self._checkout(job)
        start = time.monotonic()
        if n is None:
            return RunReport(exit_code=None, duration_s=0.0, cancelled=True, reached_model=False)
        handed_off = False
        try:
            report, handed_off = self._run_in(n, job, start)
            return report
        except Exception:
            if self._stopped:
                return RunReport(exit_code=None, duration_s=time.monotonic() - start, cancelled=True)
            raise
        finally:
            if not handed_off:
                self._idle.put(n)

    def reap_orphans(self) -> int:
        """Reap zombies and kill what retired workers left (see ``containment``); live workers are spared."""
        with self._lock:
            live = list(self._live.values())
            ids = {w.run_id for w in live} | {w.request_id for w in live if w.request_id is not None}
            return self._containment.sweep({w.pgid for w in live}, ids)

    def cancel(self, job: ModelJob) -> None:
        """Cancel ``job`` if a worker serves it: the request ends ``cancelled`` at once and its worker, which is
        still busy with it, is replaced (a run waiting for a worker is not touched)."""
        with self._lock:
            slots = [n for n, served in self._jobs.items() if served is job]
            self._cancelled.update(slots)
            workers = [self._busy[n] for n in slots if n in self._busy]
        for w in workers:
            w.abandon()

    def stop(self) -> None:
        """End every worker, loading, idle or busy (requests in flight report ``cancelled``); refuse new runs.

        TERM to every group at once, KILL after one shared ``kill_grace``: a stop fits the
        container's 10 s however many workers there are.
        """
        with self._lock:
            self._stopped = True
            workers = [w for w in self._live.values() if w not in self._finishing]  # the rest: retiring
            self._cancelled.update(self._busy)
            busy = list(self._busy.values())
            self._slots = [None] * len(self._slots)
        for w in busy:  # their requests end now, even if something still holds a worker's reply pipe open
            w.abandon()
        for w in workers:
            w.close_requests()
            _signal_group(w.pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        for w in workers:
            self._finish(w, deadline)
        with self._finished:  # retirements begun before the stop are KILLed by this deadline too: a second more
            self._finished.wait_for(lambda: not self._finishing, max(0.0, deadline + 1.0 - time.monotonic()))
        for _ in range(len(self._slots)):  # wake runs waiting for a worker: they see the stop
            self._idle.put(-1)

    # -- one request ----------------------------------------------------------

    def _checkout(self, job: ModelJob) -> int | None:
        """An idle slot, waiting for one (``job.on_wait`` told first); None once stopped (``stop`` wakes every
        waiter)."""
        told = False
        while not self._stopped:
            try:
                n = self._idle.get_nowait()
            except queue.Empty:
                if not told:
                    told = True
                    announce_wait(job)
                n = self._idle.get()
            if n < 0:
                self._idle.put(n)  # the stop's wake-up: passed on to the next waiter
                return None
            if not self._stopped:
                return n
            self._idle.put(n)
        return None

    def _run_in(self, n: int, job: ModelJob, start: float) -> tuple[RunReport, bool]:
        """The request on slot ``n``; True beside the report when a replacement took the slot over."""
        worker = self._slots[n]
        if worker is None or worker.proc.poll() is not None:
            if worker is not None:  # it died while idle: retired before its slot is filled again
                with self._lock:
                    self._slots[n] = None
                self._retire(worker, kill=True)
            try:
                worker = self._fill(n)
            except ModelLoadError as exc:
                if self._stopped:  # stopped while its worker was (re)started: the model never had it
                    return RunReport(exit_code=None, duration_s=time.monotonic() - start, cancelled=True,
                                     reached_model=False), False
                return RunReport(exit_code=None, duration_s=time.monotonic() - start, launch_error=str(exc),
                                 stderr_tail=exc.detail or ""), False
        try:  # made again if ``.modelgen`` was removed under the daemon; never followed through a symlink
            fsio.ensure_private_dir(worker.workspace)
        except (OSError, fsio.UnsafeFile) as exc:
            return RunReport(exit_code=None, duration_s=time.monotonic() - start,
                             launch_error=f"the worker's workspace cannot be used: {exc}"), False
        return self._serve(n, worker, job, start)

    def _serve(self, n: int, worker: _Worker, job: ModelJob, start: float) -> tuple[RunReport, bool]:
        """One request on ``worker``. The worker writes its own copy of the input (sent with the request) and
        sends back what the model wrote: the files of a request are its process's work, not the daemon's, which
        is the one process every request goes through (a drain is bound by it, not by the workers)."""
        given = job.input_data is not None
        local = dataclasses.replace(
            job, output_path=worker.workspace / job.output_name, workspace=worker.workspace,
            input_path=worker.workspace / job.input_path.name if given else job.input_path,
        )
        worker.sent += 1
        request_id = f"{worker.run_id}{REQUEST_ID_SEP}{worker.sent}"
        msg: dict[str, Any] = {
            "type": "run", "id": request_id, "input": str(local.input_path),
            "output": str(local.output_path), "output_name": local.output_name, "workspace": str(worker.workspace),
            "key": job.key, "argv": render(self.spec.template, local) if self.spec.template else [],
            "env": {RUN_ID_ENV: request_id}, "max_output": MAX_RESULT_BYTES,
        }
        if job.input_data is not None:
            msg["input_bytes"] = len(job.input_data)
        out_mark, err_mark = worker.out.total, worker.err.total
        with self._lock:
            self._busy[n] = worker
            self._jobs[n] = job
            worker.request_id = request_id
        announce_start(job)
        deadline = time.monotonic() + job.timeout  # the model's time: from now, a fresh worker's loading aside
        try:
            sent = worker.send(msg, job.input_data, deadline)
            reply = worker.receive(deadline - time.monotonic()) if sent else None if sent is None else _EOF
            while isinstance(reply, dict) and reply.get("id") != msg["id"]:  # a reply to an earlier, abandoned run
                reply = worker.receive(deadline - time.monotonic())
        finally:
            with self._lock:
                self._busy.pop(n, None)
                self._jobs.pop(n, None)
                worker.request_id = None
                cancelled = n in self._cancelled
                self._cancelled.discard(n)
        duration = time.monotonic() - start
        if not isinstance(reply, dict) or cancelled or self._stopped or not isinstance(reply.get("output"), bytes):
            _discard_run(local, given)  # what a worker stopped, failed or killed under the request left behind
        if cancelled or self._stopped:
            report = RunReport(exit_code=None, duration_s=duration, cancelled=True)
            if self._stopped:
                return report, False
            self._replace(n, worker, reason="its request was cancelled")  # still busy with it
            return report, True
        if reply is None:  # timed out: the worker's whole group goes, a fresh worker takes the slot
            self._replace(n, worker, reason="timed out")
            return RunReport(exit_code=None, duration_s=duration, timed_out=True,
                             stdout_tail=worker.out.since(out_mark), stderr_tail=worker.err.since(err_mark)), True
        if not isinstance(reply, dict):  # the worker ended under the request (its reply pipe may end first)
            code = _exit_code(worker.proc.pid, time.monotonic() + 1.0)  # read before the retirement reaps it
            self._replace(n, worker, reason="ended during a request")
            why = (f"the model's warm worker ended during the request ({_exit_words(code)})"
                   if isinstance(code, int) else "the model's warm worker broke its reply pipe during the request")
            return RunReport(exit_code=None, duration_s=duration, launch_error=why,
                             stdout_tail=worker.out.since(out_mark), stderr_tail=worker.err.since(err_mark)), True
        worker.served += 1
        worker.rss_kb = int(reply.get("rss_kb") or 0)
        exit_code = int(reply.get("exit_code", 1))
        output, output_error = _output_of(reply) if exit_code == 0 else (None, None)
        report = RunReport(
            exit_code=exit_code, duration_s=duration, output=output, output_error=output_error,
            stdout_tail=str(reply.get("stdout_tail") or "") + worker.out.since(out_mark),
            stderr_tail=str(reply.get("stderr_tail") or "") + worker.err.since(err_mark),
        )
        return report, self._recycle(n, worker)

    def _recycle(self, n: int, worker: _Worker) -> bool:
        """Replace a worker that has served its share or grown too big; True when it was."""
        if self.max_requests and worker.served >= self.max_requests:
            self._replace(n, worker, reason=f"served {worker.served} requests", graceful=True)
            return True
        if self.max_rss and worker.rss_kb * 1024 > self.max_rss:
            self._replace(n, worker, reason=f"resident memory {worker.rss_kb * 1024} bytes", graceful=True)
            return True
        return False

    # -- workers ----------------------------------------------------------------

    def _fill(self, n: int) -> _Worker:
        """Start a worker into slot ``n``; retired at once if the runner stopped meanwhile (ModelLoadError)."""
        worker = self._spawn(n)
        with self._lock:
            if not self._stopped:
                self._slots[n] = worker
                return worker
        self._retire(worker, kill=True)
        raise ModelLoadError("the runner is stopped")

    def _spawn(self, n: int) -> _Worker:
        """Start worker ``n`` and wait until it has loaded the model; ModelLoadError if it cannot."""
        workspace = self._worker_workspace(n)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        ours = {req_w, rep_r}  # the ends we keep; the worker's two are closed here once it has them
        run_id = secrets.token_hex(16)
        argv = [*self.spec.python, str(self.spec.host), "--entry", self.spec.entry, "--workspace", str(workspace),
                "--requests", str(req_r), "--replies", str(rep_w),
                *(["--cpus", ",".join(map(str, sorted(self.model_cpus)))] if self.model_cpus else []),
                *(["--policy", str(self.model_policy)] if self.model_policy is not None else []), "--",
                *render_for_worker(self.spec.template, workspace)]
        try:
            with self._lock:
                if self._stopped:
                    raise ModelLoadError("the runner is stopped")
                try:
                    proc = subprocess.Popen(
                        argv, cwd=self.spec.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, pass_fds=(req_r, rep_w), start_new_session=True,
                        env={**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1", RUN_ID_ENV: run_id},
                    )
                except OSError as exc:
                    raise ModelLoadError(f"cannot start the model's interpreter {argv[0]!r}: {exc}") from exc
                worker = _Worker(proc, req_w, rep_r, run_id, workspace)
                ours.clear()  # now the worker object's
                self._live[proc.pid] = worker
        finally:
            for fd in (req_r, rep_w, *ours):
                os.close(fd)
        self._containment.record(proc.pid, run_id)
        hello = worker.receive(self.start_timeout)
        if isinstance(hello, dict) and hello.get("type") == "ready":
            log.info("worker.ready", slot=n, pid=proc.pid, python=hello.get("python"), cpus=hello.get("cpus"))
            return worker
        self._retire(worker, kill=True)
        if isinstance(hello, dict) and hello.get("type") == "failed":
            raise ModelLoadError(f"the model cannot load: {hello.get('error')}", str(hello.get("detail") or ""))
        why = "did not load within" if hello is None else "exited before it was ready, within"
        raise ModelLoadError(f"the model's worker {why} {self.start_timeout:g} s", worker.err.since(0)[-4000:])

    def _worker_workspace(self, n: int) -> Path:
        """``<workspace>/w<n>``; when first made, seeded with the shared workspace's files (the model's caches)."""
        return fsio.seed_dir(self.workspace / f"{WORKER_WORKSPACE_PREFIX}{n}", self.workspace)

    def _replace(self, n: int, worker: _Worker, reason: str, graceful: bool = False) -> None:
        """Take ``worker`` out of slot ``n``; in the background, retire it and start its successor.

        The slot's index goes back to the pool when the successor is ready (or failed to
        start: then the next request on that slot tries again and reports why).
        """
        log.info("worker.replaced", slot=n, pid=worker.pgid, reason=reason)
        with self._lock:
            if self._slots[n] is worker:
                self._slots[n] = None

        def refill() -> None:
            try:
                self._retire(worker, kill=not graceful)
                self._fill(n)
            except Exception as exc:  # noqa: BLE001 - a failed refill must never lose the slot
                if not self._stopped:
                    log.error("worker.start_failed", slot=n, error=str(exc))
            finally:
                self._idle.put(n)

        threading.Thread(target=refill, name=f"worker-refill-{n}", daemon=True).start()

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        """End a worker: close its requests (it exits by itself) or TERM its group; KILL after ``kill_grace``."""
        worker.close_requests()
        if kill:
            _signal_group(worker.pgid, signal.SIGTERM)
        self._finish(worker, time.monotonic() + self.kill_grace)

    def _finish(self, worker: _Worker, deadline: float) -> None:
        """Wait for the worker's exit until ``deadline``, KILL its group (the leader still unreaped, so the group
        id is still ours), reap it, and forget it. Only the first caller does (``stop()`` and a worker's own
        retirement can meet here): the group id is never signalled after the leader is reaped."""
        pid = worker.proc.pid
        with self._lock:
            if self._live.get(pid) is not worker or worker in self._finishing:
                return
            self._finishing.add(worker)
        if not _exited_by(worker.proc.pid, deadline):
            _signal_group(worker.pgid, signal.SIGKILL)
            _exited_by(worker.proc.pid, time.monotonic() + self.kill_grace)
        _signal_group(worker.pgid, signal.SIGKILL)  # what is left in its group goes with it
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(self.kill_grace)
        with self._lock:  # only now: until it is reaped, the sweep would take a worker still exiting for a stray
            if self._live.get(pid) is worker:  # not a new worker that was given the same pid since
                del self._live[pid]
            self._finishing.discard(worker)
            self._finished.notify_all()
        self._containment.unrecord(worker.pgid, worker.run_id)


def _exited_by(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` (our child) has exited, without reaping it; False at ``deadline``."""
    return _exit_code(pid, deadline) is not _STILL_RUNNING


_STILL_RUNNING = object()


def _exit_code(pid: int, deadline: float) -> int | object | None:
    """How ``pid`` (our child) ended, without reaping it: its exit code, minus the signal that killed it,
    None when it is already reaped (the code is gone), or _STILL_RUNNING at ``deadline``."""
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if info is not None:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return _STILL_RUNNING
        time.sleep(0.01)


def _policy() -> int | None:
    """This thread's scheduling policy; None where the system does not say."""
    try:
        return os.sched_getscheduler(0)
    except (AttributeError, OSError):
        return None


def _output_of(reply: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """The output a worker sent back with a request that exited 0, or why it could not (``host.collect_output``)."""
    output = reply.get("output")
    if isinstance(output, bytes):
        return output, None
    error = reply.get("output_error")
    return None, str(error) if error else NO_OUTPUT


def _discard_run(local: ModelJob, input_given: bool) -> None:
    """Remove a request's files from a worker's workspace: its output, and the input copy if the worker made it."""
    discard(local.output_path)
    if input_given:
        discard(local.input_path)


def _exit_words(code: int) -> str:
    return f"killed by {signal_name(-code)}" if code < 0 else f"exit code {code}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)

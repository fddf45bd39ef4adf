"""One request from snapshot to published status: read, judge, decode, run, normalise, publish.

Every final outcome of ``Pipeline.process`` leaves the volume consistent: either a
result whose ``meta.input_sha256`` names the scored bytes followed by an ``ok`` status,
or an ``error`` status and no result claiming that input (the status is written
before the old result is removed, so an ``ok`` status never stands without its
result). The other outcomes write no final status: a cancelled run is left ``running``
(redone at the next start), and a deferred, skipped or vanished input is left as it
is. Whether a request runs at all is ``retry.judge``'s decision.

In shared mode (``claims`` set) a request is claimed after it is judged to need a run
and judged again once claimed (another watcher may have published it just before);
every rename that publishes (result, status, a ``running`` status too) is fenced by the
claim (``claims.Claims.fence``), and the claim is released when the request ends. A
request another live watcher holds ends ``claimed``, one whose claim was taken over
while it ran ends ``lost``: both are looked at again once the other watcher's lease
could have run out. The claim's ``interruptions`` replace the in-flight records.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from ..logs import Logger, get_logger
from ..runners.base import NO_OUTPUT, ModelJob, ModelRunner, RunReport, discard, read_output, signal_name
from ..volume import fsio
from ..volume.claims import RETRY_SLACK, ClaimLost, Claims, Held, Taken
from ..volume.decoding import DecodeError, Stage, decode_route, decode_scored
from ..volume.documents import read_result, read_status
from ..volume.names import (
    MODEL_INPUT_PREFIX,
    MODEL_OUTPUT_PREFIX,
    WATCHER_TEMP_PREFIX,
    Layout,
    Request,
)
from ..volume.retry import MAX_INTERRUPTIONS, Verdict, is_transient, judge
from ..volume.schemas import ErrorInfo, ErrorKind, ResultMeta, RouteRequest, ScoredRoute, State, Status, utc_now_iso
from . import inflight
from .metrics import WatcherMetrics
from .outcomes import Outcome, Processed
from .readiness import VOLUME, Readiness
from .running import RunningStatuses

PREPARED_FOR = 1.0
"""Seconds the lone watcher trusts its last full check of its private dirs while ``.modelgen`` is unchanged."""
DETAIL_LINES = 20

log = get_logger(__name__)


class RequestFailed(Exception):
    """Ends a request with an error status; raised at the step that found the problem."""

    def __init__(self, kind: ErrorKind, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.info = ErrorInfo(kind=kind, message=message, detail=detail)


class _VolumeFault(RequestFailed):
    """The request failed because the watch dir refuses writes: an ``io_error``, retried, and the daemon unready."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(ErrorKind.io_error, message, detail)


class _NotYet(Exception):
    """The input is not complete yet (it changed while read, or is unparsable and fresh): look again later.

    The one way the pipeline says "not yet": raised where it is found, turned into a
    ``deferred`` outcome in one place.
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__("the input is not complete yet")
        self.retry_after = retry_after


def decode_model_output(raw: bytes) -> ScoredRoute:
    """Parse a model's output (bounded, see ``decoding``), unwrapping upstream's JSON-string form."""
    if not raw.strip():
        raise RequestFailed(ErrorKind.invalid_output, "the model wrote an empty output file")
    try:
        return decode_scored(raw)
    except DecodeError as exc:
        raise RequestFailed(ErrorKind.invalid_output, str(exc), _preview(raw)) from exc


def _preview(raw: bytes, limit: int = 500) -> str:
    text = raw[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(raw) > limit else "")


def _tail_lines(text: str, lines: int = DETAIL_LINES) -> str | None:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept) if kept else None


def _exit_description(code: int) -> str:
    return f"was killed by {signal_name(-code)}" if code < 0 else f"exited with code {code}"


def failure_from_report(report: RunReport, timeout: float) -> RequestFailed | None:
    """The error a finished run amounts to, or None when it succeeded."""
    detail = _tail_lines(report.stderr_tail) or _tail_lines(report.stdout_tail)
    if report.launch_error:
        return RequestFailed(ErrorKind.model_failed, report.launch_error, detail)
    if report.timed_out:
        return RequestFailed(
            ErrorKind.model_timeout,
            f"the model did not finish within {timeout:g} s and was killed with its process group",
            detail,
        )
    if report.exit_code != 0:
        last = (detail or "").splitlines()[-1:] or [""]
        hint = f": {last[0].strip()}" if last[0].strip() else ""
        return RequestFailed(
            ErrorKind.model_failed, f"the model {_exit_description(report.exit_code or 0)}{hint}", detail
        )
    return None


def check_shape(route: RouteRequest, scored: ScoredRoute) -> None:
    """One inner list per input route, one point per step of its first leg (the contract's result shape)."""
    if len(scored.routes) != len(route.routes):
        raise RequestFailed(
            ErrorKind.invalid_output,
            f"the model scored {len(scored.routes)} routes but the input has {len(route.routes)}",
        )
    for i, (points, r) in enumerate(zip(scored.routes, route.routes, strict=True)):
        if len(points) != len(r.legs[0].steps):
            raise RequestFailed(
                ErrorKind.invalid_output,
                f"the model gave {len(points)} points for route {i} but its first leg has {len(r.legs[0].steps)} steps",
            )


class Pipeline:
    """Turns one request's current input into a published result or error status."""

    def __init__(
        self,
        layout: Layout,
        runner: ModelRunner,
        *,
        model_label: str,
        model_timeout: float,
        max_input_bytes: int,
        settle: float = 2.0,
        metrics: WatcherMetrics | None = None,
        readiness: Readiness | None = None,
    ) -> None:
        self.layout = layout
        self.runner = runner
        self.model_label = model_label
        self.model_timeout = model_timeout
        self.max_input_bytes = max_input_bytes
        self.settle = settle
        self.metrics = metrics or WatcherMetrics()
        self.readiness = readiness or Readiness()
        self.life_started_ns = time.time_ns()
        """When this watcher started, on the volume's clock: the daemon sets it from the lock file's
        mtime; the default (this clock, now) serves the one-shot ``score``."""
        self._first_seen: dict[tuple[Request, str], float] = {}
        self._first_seen_lock = threading.Lock()
        self._running = RunningStatuses(self._write_status)
        self._slots = inflight.Slots(layout)
        """The lone watcher's in-flight records, one per request in hand."""
        self.claims: Claims | None = None
        """Shared mode: who serves which request (the daemon sets it); None for the lone watcher."""
        self.now: Callable[[], float] = time.time
        """"Now" to compare file times with: the volume's clock in shared mode (the daemon sets it)."""
        self._held: dict[Request, Held] = {}
        """Shared mode: the claim of each request being served, whose fence is checked before each rename."""
        self._disowned = False
        self._prepared: tuple[int, int, float] | None = None
        """The lone watcher's private dirs as last checked: ``.modelgen``'s inode and mtime, and until when."""

    def prepare(self) -> None:
        """Create the private directories this pipeline writes to; refuse any that is not a real one of ours.

        A shared watcher's workspace is seeded from ``.modelgen/workspace`` when first made.
        """
        layout = self.layout
        directories: tuple[Path, ...]
        seen: os.stat_result | None = None
        if self.claims is None:
            # All of them are in ``.modelgen``: while its inode and mtime are the same, none was removed,
            # replaced or added since the last check, so one lstat a request does (all of them, once a second).
            # Its lstat comes first: whatever changes during the checks changes it again for the next request.
            try:
                seen = os.lstat(layout.state_dir)
            except FileNotFoundError:
                seen = None
            if seen is not None and self._prepared is not None:
                ino, mtime_ns, until = self._prepared
                if (seen.st_ino, seen.st_mtime_ns) == (ino, mtime_ns) and time.monotonic() < until:
                    return
            directories = (layout.state_dir, layout.tmp_dir, layout.workspace, layout.inflight_dir, layout.parked_dir)
        else:
            fsio.ensure_private_dir(layout.state_dir)
            fsio.ensure_private_dir(layout.watchers_dir)
            fsio.ensure_private_dir(layout.private_dir)
            if not os.path.lexists(layout.workspace):
                fsio.seed_dir(layout.workspace, layout.shared_workspace)
            directories = (layout.tmp_dir, layout.workspace, layout.claims_dir)
        for directory in directories:
            fsio.ensure_private_dir(directory)
        if seen is not None:
            self._prepared = (seen.st_ino, seen.st_mtime_ns, time.monotonic() + PREPARED_FOR)

    # -- publishing -------------------------------------------------------

    def _publish(
        self, req: Request, *docs: tuple[Path, BaseModel], durable: bool = True, withdraw: Path | None = None
    ) -> None:
        """Write ``req``'s published files, in order: each one's temp in ``.modelgen/tmp/`` (one event in the
        watch dir), fsynced (``durable``; together, ``fsio.atomic_write_all``) and renamed into place once the
        fence (shared mode) says the request is still this watcher's; ``withdraw`` is removed just before the
        first rename (``fsio.atomic_write_all``).

        The rename itself is not made durable (no fsync of the directory): a publication a power cut takes
        back is redone by the start-up catch-up, which runs every input whose status is missing, names
        other bytes, or says ``ok`` beside a result that does not name them (``retry.judge``). What the
        fsync of the temp file buys is that no rename that survives points to bytes that did not: a result
        is never empty or partial, whatever the file system kept.
        """
        fence = self._fence(req)
        if durable:
            writes = [(path, fsio.dump_json(doc)) for path, doc in docs]
            fsio.atomic_write_all(writes, temp_prefix=WATCHER_TEMP_PREFIX, temp_dir=self.layout.tmp_dir,
                                  before_replace=fence, withdraw=withdraw)
            return
        for path, doc in docs:
            fsio.atomic_write(path, fsio.dump_json(doc), temp_prefix=WATCHER_TEMP_PREFIX, durable=False,
                              temp_dir=self.layout.tmp_dir, before_replace=fence)

    def _write_status(self, req: Request, status: Status) -> None:
        """Publish a status; only a final one is fsynced: ``running`` is news for a reader, not a record
        (see ``running``), and a request is served again at start without it."""
        self._publish(req, (self.layout.status(req.key), status), durable=status.state is not State.running)

    def _write_final(
        self, req: Request, sha: str | None, started_at: str, t0: float, error: ErrorInfo | None = None
    ) -> int:
        """Publish the ok or error status that ends a request; returns its duration in ms."""
        status = self._final_status(req, sha, started_at, t0, error)
        self._write_status(req, status)
        return status.duration_ms

    @staticmethod
    def _final_status(
        req: Request, sha: str | None, started_at: str, t0: float, error: ErrorInfo | None = None
    ) -> Status:
        """The ok or error status that ends a request, its duration counted until now."""
        return Status(
            state=State.ok if error is None else State.error,
            key=req.key,
            input_sha256=sha,
            started_at=started_at,
            finished_at=utc_now_iso(),
            duration_ms=int((time.monotonic() - t0) * 1000),
            error=error,
        )

    def disown(self) -> None:
        """The watch dir is another watcher's now: publish nothing more, not even a cancelled run's status."""
        self._disowned = True

    def _leave_running(self, req: Request, running: Status, bound: Logger) -> None:
        """A cancelled run stays ``running`` (redone at the next start), whether or not its grace had passed.

        Best effort: the old status, left as it is, gets the request redone all the same; a stop must not
        turn into an error for it. Never written by a disowned pipeline, whose run may be another's now.
        """
        if self._disowned:
            return
        try:
            self._write_status(req, running)
        except (OSError, fsio.UnsafeFile) as exc:
            bound.warning("request.running_status_unwritten", error=str(exc))

    # -- the request ------------------------------------------------------

    def process(self, req: Request) -> Processed:
        """Never raises for bad input, model failure or I/O trouble: each ends in a status or a retry.

        Its outcome and duration are counted here, once, when it ends (a bug that escapes
        counts as an error, as the scheduler treats it).
        """
        t0 = time.monotonic()
        outcome = Outcome.error
        try:
            processed = self._process(req, t0)
            outcome = processed.outcome
            return processed
        finally:
            self.metrics.request_done(outcome, time.monotonic() - t0)

    def _process(self, req: Request, t0: float) -> Processed:
        started_at = utc_now_iso()
        sha: str | None = None
        bound = log.bind(key=req.key, input_sha256=None)
        keep_claim = False
        record: inflight.InFlight | None = None
        held: Held | None = None
        try:
            snap = self._snapshot(req)
            if snap is None:
                return Processed(Outcome.gone)
            sha = snap.sha256
            bound = bound.bind(input_sha256=sha)
            verdict = self._judge(req, snap)
            if verdict is not Verdict.run:
                bound.debug("request.skipped", verdict=verdict.value)
                return _skipped(verdict)
            self.prepare()
            if self.claims is not None:
                claimed = self._claim(self.claims, req, snap, bound)
                if isinstance(claimed, Processed):
                    return claimed
                held = claimed
                interruptions, given_up = held.doc.interruptions, held.doc.given_up
            else:
                record = inflight.begin(self.layout, self._slots, req, sha, snap.mtime_ns)
                interruptions = record.interruptions
                given_up = interruptions >= MAX_INTERRUPTIONS
            if given_up:
                keep_claim = True  # the claim (or a parked marker) is the memory that these bytes are poisonous
                if record is not None:
                    record.give_up()
                raise RequestFailed(
                    ErrorKind.model_failed,
                    f"the watcher{'s' if held else ''} stopped {interruptions} times while serving these bytes "
                    "(killed, out of memory, or stopped by a signal, perhaps sent by the model); "
                    "not retried until it is published again",
                )
            route = self._parse_input(req, snap)
            running = Status(state=State.running, key=req.key, input_sha256=sha, started_at=started_at)
            self._running.started(req, running)
            try:
                on_wait, on_start = self._waiting(req, record, held)
                report, scored = self._run_model(req, snap.data, on_wait, on_start, held)
            finally:
                self._running.finished(req)
            if held is not None and held.lost:
                raise ClaimLost(f"another watcher took over {held.name}")
            if report.cancelled:
                # A stop with this request at its model counts, whoever sent the signal (its record, or its
                # claim left to expire, says it was at the model); one that found it still waiting for a warm
                # worker does not, and keeps its count (a record parked, or a claim that still says waiting),
                # nor does one that came before its runner had started it (stopped first: marked waiting now).
                keep_claim = True
                if not report.reached_model:
                    on_wait()
                if record is not None:
                    record.keep()
                self._leave_running(req, running, bound)
                bound.info("request.interrupted", outcome="cancelled", reason="shutdown; redone at next start")
                return Processed(Outcome.cancelled)
            assert scored is not None
            check_shape(route, scored)
            scored.meta = ResultMeta(
                input_sha256=sha,
                model=self.model_label,
                duration_ms=int(report.duration_s * 1000),
                scored_at=utc_now_iso(),
            )
            # The result first, then its status, flushed together: a reader that sees ``ok`` finds the result.
            # The status there until then (``ok`` for other bytes, most often) is withdrawn before the result
            # goes in: for the moment between the two renames, it would say the new result was those bytes'.
            status = self._final_status(req, sha, started_at, t0)
            status_path = self.layout.status(req.key)
            self._publish(req, (self.layout.result(req.key), scored), (status_path, status), withdraw=status_path)
            duration_ms = status.duration_ms
            self.readiness.clear(VOLUME, "a request was published")
            bound.info("request.done", outcome="ok", duration_ms=duration_ms, model_ms=scored.meta.duration_ms)
            return Processed(Outcome.ok)
        except ClaimLost:
            return self._lost(held, bound)
        except _NotYet as busy:
            return Processed(Outcome.deferred, retry_after=busy.retry_after)
        except _VolumeFault as fault:
            return self._fail(req, sha, started_at, t0, fault.info, bound, volume_fault=True)
        except RequestFailed as failed:
            return self._fail(req, sha, started_at, t0, failed.info, bound)
        except (OSError, fsio.UnsafeFile) as exc:
            # Reads of the input are turned into RequestFailed in _snapshot: what reaches
            # here is a write to the volume (or a private dir that is not ours) failing.
            trouble = self._blame_volume()
            info = ErrorInfo(kind=ErrorKind.io_error, message=f"cannot write to the watch dir: {exc}")
            return self._fail(req, sha, started_at, t0, info, bound, volume_fault=trouble is not None)
        finally:
            if record is not None:
                try:
                    record.end()  # a kept record stays (a stop), a given-up one's slot is cleared
                except OSError:
                    pass  # counted as one interruption at the next start; harmless
            if held is not None:
                self._unclaim(held, req, keep=keep_claim, bound=bound)

    def _claim(self, claims: Claims, req: Request, snap: fsio.Snapshot, bound: Logger) -> Held | Processed:
        """Shared mode: claim the request, and judge it again once claimed; the claim, or how the request ends."""
        got = claims.acquire(self.layout.names.input(req.key), sha=snap.sha256, mtime_ns=snap.mtime_ns,
                             give_up_at=MAX_INTERRUPTIONS)
        if isinstance(got, Taken):
            self.metrics.claims.labels(result="taken").inc()
            bound.debug("claim.taken", owner=got.owner, retry_after_s=round(got.retry_after, 3))
            return Processed(Outcome.claimed, retry_after=got.retry_after)
        self.metrics.claims.labels(result="takeover" if got.takeover else "won").inc()
        if got.takeover:
            before = got.previous
            bound.warning("claim.takeover", generation=got.generation, interruptions=got.doc.interruptions,
                          previous_watcher=before.watcher if before else None,
                          reason="its watcher stopped renewing it: stopped, paused or cut off for longer than "
                          "the lease")
        verdict = self._judge(req, snap)  # another watcher may have published it and let go just before
        if verdict is not Verdict.run:
            claims.release(got)
            bound.debug("request.skipped", verdict=verdict.value, after="claim")
            return _skipped(verdict)
        self._held[req] = got
        return got

    def _fence(self, req: Request) -> Callable[[], None] | None:
        """What checks, just before a rename publishes for ``req``, that its claim is still ours (shared mode)."""
        held = self._held.get(req)
        return None if held is None or self.claims is None else functools.partial(self.claims.fence, held)

    def _unclaim(self, held: Held, req: Request, *, keep: bool, bound: Logger) -> None:
        """The request ended: its claim goes, or stays to expire by itself (``keep``: given up, or stopped at the
        model by a shutdown, which a takeover then counts as an interruption)."""
        self._held.pop(req, None)
        assert self.claims is not None
        try:
            if keep:
                self.claims.keep(held)
            else:
                self.claims.release(held)
        except OSError as exc:  # it expires after its lease; another watcher's takeover removes it
            bound.warning("claim.release_failed", claim=held.path.name, error=str(exc))

    def _lost(self, held: Held | None, bound: Logger) -> Processed:
        """Another watcher took the request over: publish nothing; look again once that one could be gone too."""
        self.metrics.claims.labels(result="lost").inc()
        bound.warning("claim.lost", generation=held.generation if held else None,
                      reason="another watcher took the request over (this one was paused, cut off or too slow "
                      "to renew its claim); nothing published")
        lease = self.claims.lease if self.claims is not None else 0.0
        return Processed(Outcome.lost, retry_after=lease + RETRY_SLACK)

    def _fail(
        self,
        req: Request,
        sha: str | None,
        started_at: str,
        t0: float,
        info: ErrorInfo,
        bound: Logger,
        *,
        volume_fault: bool = False,
    ) -> Processed:
        """Publish the error: the status first (so no ``ok`` stands without its result), then drop the old result.

        An ``io_error`` is transient: the scheduler retries it with backoff. A status
        that cannot be written makes any error transient, since nothing was published.

        In shared mode an error found before the request was claimed (an unreadable or
        refused input) is published under a claim too, taken for it here, or not at all
        while another live watcher holds the request: no status is ever written over
        another watcher's work.
        """
        if self.claims is None or req in self._held:
            return self._publish_error(req, sha, started_at, t0, info, bound, volume_fault)
        try:
            got = self.claims.acquire(self.layout.names.input(req.key), sha=sha or "")
        except OSError as exc:
            self._blame_volume()
            bound.error("request.status_unwritable", error=f"cannot claim the request: {exc}")
            return Processed(Outcome.transient, error=info)
        if isinstance(got, Taken):
            bound.info("request.error_left", error_kind=info.kind.value, owner=got.owner,
                       reason="another live watcher holds the request: its outcome stands")
            return Processed(Outcome.claimed, retry_after=got.retry_after)
        self._held[req] = got
        try:
            return self._publish_error(req, sha, started_at, t0, info, bound, volume_fault)
        finally:
            self._unclaim(got, req, keep=False, bound=bound)

    def _publish_error(
        self, req: Request, sha: str | None, started_at: str, t0: float, info: ErrorInfo, bound: Logger,
        volume_fault: bool,
    ) -> Processed:
        transient = is_transient(info.kind)
        try:
            self._write_final(req, sha, started_at, t0, error=info)
            fence = self._fence(req)
            if fence is not None:
                fence()  # the removal of a result is a publication too
            fsio.remove_quietly(self.layout.result(req.key))  # no result may claim a failed input
            if not volume_fault:
                self.readiness.clear(VOLUME, "a request was published")
        except ClaimLost:
            return self._lost(self._held.get(req), bound)
        except OSError as exc:
            transient = True
            self._blame_volume()
            bound.error("request.status_unwritable", error=str(exc))
        self.metrics.errors.labels(kind=info.kind.value).inc()
        bound.warning(
            "request.done",
            outcome="error",
            duration_ms=int((time.monotonic() - t0) * 1000),
            error_kind=info.kind.value,
            error=info.message,
            retried=transient,
        )
        return Processed(Outcome.transient if transient else Outcome.error, error=info)

    def _blame_volume(self) -> str | None:
        """Whether the watch dir as a whole refuses writes, as a readiness problem; None when it does not.

        Asked after a failure, so that one unwritable path (a directory where a status
        goes) is that request's trouble, while a full or read-only volume turns the
        daemon unready.
        """
        trouble = fsio.refuses_writes(self.layout.root, WATCHER_TEMP_PREFIX)
        if trouble is not None:
            self.readiness.fail(VOLUME, trouble)
        return trouble

    def _snapshot(self, req: Request) -> fsio.Snapshot | None:
        """The input's bytes, read once and checked not to have changed while read."""
        path = self.layout.input(req.key)
        try:
            snap = fsio.safe_read(path, self.max_input_bytes)
            after = os.lstat(path)
        except FileNotFoundError:
            return None
        except fsio.UnsafeFile as exc:
            raise RequestFailed(ErrorKind.invalid_input, f"refused to read the input: {exc}") from exc
        except OSError as exc:
            raise RequestFailed(ErrorKind.io_error, f"cannot read the input: {exc.strerror or exc}") from exc
        if after.st_mtime_ns != snap.mtime_ns or after.st_size != snap.size:
            raise _NotYet(0.05)  # still being written: read again once it is quiet
        return snap

    def _judge(self, req: Request, snap: fsio.Snapshot) -> Verdict:
        """Run these bytes, or not: see ``retry.judge``, the one place that decides."""
        found = read_status(self.layout.status(req.key))
        ok_for_these = found is not None and found[0].input_sha256 == snap.sha256 and found[0].state is State.ok
        return judge(
            found,
            snap.sha256,
            input_mtime_ns=snap.mtime_ns,
            life_started_ns=self.life_started_ns,
            result_present=ok_for_these and read_result(self.layout.result(req.key), snap.sha256) is not None,
        )

    def _parse_input(self, req: Request, snap: fsio.Snapshot) -> RouteRequest:
        try:
            return decode_route(snap.data)
        except DecodeError as exc:
            if exc.stage is Stage.json:
                wait = self._settle_left(req, snap)
                if wait > 0:  # likely a writer that writes in place and has not finished: give it time
                    raise _NotYet(wait) from exc
            raise RequestFailed(ErrorKind.invalid_input, str(exc)) from exc

    def _settle_left(self, req: Request, snap: fsio.Snapshot) -> float:
        """Seconds an unparsable input still gets to be completed; 0 when it is final.

        An input modified within ``settle`` seconds (by its mtime; a future mtime from a
        skewed clock counts as recent) gets ``settle`` seconds from when these exact
        bytes were first seen, measured on our own monotonic clock, so no timestamp can
        make the wait longer than ``settle``.
        """
        if self.settle <= 0 or self.now() - snap.mtime_ns / 1e9 >= self.settle:
            return 0.0
        now = time.monotonic()
        with self._first_seen_lock:  # workers share it
            seen = self._first_seen.setdefault((req, snap.sha256), now)
            for stale in [k for k, t in self._first_seen.items() if now - t > 10 * self.settle + 60]:
                del self._first_seen[stale]
        return max(0.0, seen + self.settle - now)

    def _waiting(
        self, req: Request, record: inflight.InFlight | None, held: Held | None
    ) -> tuple[Callable[[], None], Callable[[], None]]:
        """What a runner calls when ``req`` must wait for a busy warm worker (``ModelJob.on_wait``) and when the
        model gets it (``on_start``): its in-flight record parked and back (``inflight``), or in shared mode its
        claim marked, only around an actual wait (a request that need not wait costs nothing here). The
        pipeline calls ``on_wait`` itself for a run cancelled before the model saw it (``reached_model``)."""
        waiting = False

        def note(waits: bool) -> bool:
            try:
                if held is not None and self.claims is not None:
                    self.claims.mark_waiting(held, waits)
                elif record is not None and waits:
                    record.park()
                elif record is not None:
                    record.unpark()
            except (OSError, ClaimLost) as exc:  # then a stop while it waits counts, as it did before it waited
                log.warning("request.inflight_unwritten", key=req.key, waiting=waits, error=str(exc))
                return False
            return True

        def on_wait() -> None:
            nonlocal waiting
            if not waiting:
                waiting = note(True)

        def on_start() -> None:
            nonlocal waiting
            if waiting and note(False):
                waiting = False

        return on_wait, on_start

    def _run_model(
        self, req: Request, data: bytes, on_wait: Callable[[], None] | None = None,
        on_start: Callable[[], None] | None = None, held: Held | None = None,
    ) -> tuple[RunReport, ScoredRoute | None]:
        """Run the model on a private copy of ``data``; the scored route, or RequestFailed.

        The run's files are discarded before a failure is judged: a model that filled the
        volume with its own output is the model's fault, not the volume's. In shared mode
        the run is cancelled as soon as its claim is lost (its result would be thrown away).
        """
        token = f"{req.label}-{fsio.unique_token()}"
        snapshot = self.layout.tmp_dir / f"{MODEL_INPUT_PREFIX}{token}.json"
        output = self.layout.workspace / f"{MODEL_OUTPUT_PREFIX}{token}.json"
        job = ModelJob(snapshot, output, self.layout.workspace, req.key, self.model_timeout, input_data=data,
                       on_wait=on_wait, on_start=on_start)
        report: RunReport | None = None
        try:
            if held is not None:
                held.on_lost(functools.partial(self.runner.cancel, job))
            report = self.runner.run(job)  # the runner writes the model's copy of the input, and removes it
            if report.reached_model:
                self.metrics.model_run(report.duration_s)
            collected = _read_output(output, report) if report.succeeded else None
        finally:
            if held is not None:
                held.on_lost(None)
            if report is None or (report.output is None and report.output_error is None):
                discard(output)  # what the model left at ``output`` (a runner that read the output removed it)
        if report.cancelled:
            return report, None
        failed = failure_from_report(report, self.model_timeout) or (
            collected if isinstance(collected, RequestFailed) else None
        )
        if failed:
            trouble = self._blame_volume()
            if trouble is not None:  # the model could not write either: the volume's fault, not the model's
                raise _VolumeFault(f"the model failed while {trouble}: {failed.info.message}", failed.info.detail)
            raise failed
        assert isinstance(collected, bytes)
        return report, decode_model_output(collected)


def _skipped(verdict: Verdict) -> Processed:
    return Processed(Outcome.skipped if verdict is Verdict.done else Outcome.skipped_error)


def _read_output(output: Path, report: RunReport) -> bytes | RequestFailed:
    """What a model that exited 0 wrote (as its runner read it, or from ``output``), or why it cannot be used."""
    if report.output is not None:
        return report.output
    problem = report.output_error
    if problem is None:
        read = read_output(output)
        if isinstance(read, bytes):
            return read
        problem = read
    if problem == NO_OUTPUT:
        return RequestFailed(
            ErrorKind.invalid_output,
            "the model exited 0 but wrote no output file",
            _tail_lines(report.stderr_tail) or _tail_lines(report.stdout_tail),
        )
    return RequestFailed(ErrorKind.invalid_output, f"the model's output was refused: {problem}")

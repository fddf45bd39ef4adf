"""The daemon's lifecycle: lock, start-up clean-up and catch-up, events, rescans, heartbeat, signals, stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from .. import runners
from ..lifecycle import Lifecycle
from ..logs import get_logger
from ..runners import ModelRunner
from ..settings import WatcherSettings
from ..volume import fsio
from ..volume.claims import Claims, Taken, VolumeClock
from ..volume.events import EventSource, ObserverKind
from ..volume.names import (
    MODEL_INPUT_PREFIX,
    MODEL_OUTPUT_PREFIX,
    WATCHER_TEMP_PREFIX,
    Layout,
    Rejected,
    Request,
    worker_workspace_slot,
)
from ..volume.retry import ONCE_ATTEMPTS
from ..volume.scan import RESCAN, InputScanner, Signature
from ..volume.schemas import Health, WatcherHealth, utc_now_iso
from . import affinity, inflight, peers, retention
from .lock import AlreadyRunning, WatchDirLock
from .metrics import WatcherMetrics
from .outcomes import Outcome
from .pipeline import Pipeline
from .readiness import VOLUME, Readiness
from .scheduler import Scheduler

__all__ = ["AlreadyRunning", "Daemon", "build_pipeline"]

log = get_logger(__name__)

MISSED_EVENT_AGE = 2.0
"""A change older than this that no event reported counts as a missed event."""
SHUTDOWN_BUDGET = 8.0
"""Seconds a stop may take in all; container engines kill at 10."""
REFUSED_REMEMBERED = 1024
"""Refused names remembered (so each is logged once); older ones are forgotten first."""
REFUSED_LOGGED_PER_HEARTBEAT = 10
"""Refusals logged one by one between two heartbeats; the rest are summed up in one line."""
INTERRUPTED_LAST = 0.5
"""Extra delay at start for requests that were in flight when the watcher last stopped: the
others are served first, so a request that stops the watcher cannot hold them all back."""
SHARED_TEMP_AGE = 3600.0
"""Shared mode: a top-level ``.modelgen-*`` temp file is another watcher's until it is this old (seconds, on the
volume's clock); then it is a dead one's, and removed at start."""
RETENTION_CLAIM = ".retention"
"""Shared mode: the claim whose holder sweeps (``.modelgen/claims/.retention.<generation>``); no input starts
with a dot, so it names none."""

_IDLE = "idle"
"""The lifecycle reason ``--once`` ends with when everything pending is done."""


def _content_changed(old: Signature | None, new: Signature) -> bool:
    """A change of inode, size or mtime; a chmod alone (mode) is not new content."""
    return old is None or old[:3] != new[:3]


def build_pipeline(
    settings: WatcherSettings, layout: Layout, metrics: WatcherMetrics | None = None,
    readiness: Readiness | None = None, model_cpus: frozenset[int] | None = None,
) -> tuple[Pipeline, ModelRunner]:
    """The pipeline and runner one settings object describes (shared by ``run`` and ``score``)."""
    runner = runners.create(settings, layout.workspace, settings.workers, model_cpus=model_cpus,
                            shared=settings.shared)
    pipeline = Pipeline(
        layout,
        runner,
        model_label=settings.model_label,
        model_timeout=settings.model_timeout,
        max_input_bytes=settings.max_input_bytes,
        settle=settings.settle,
        metrics=metrics,
        readiness=readiness,
    )
    return pipeline, runner


class Daemon:
    """One watcher on one directory. ``run()`` blocks until ``request_stop()`` or a signal."""

    def __init__(self, settings: WatcherSettings, *, owns_process: bool = False) -> None:
        """``owns_process``: the daemon is this process (the ``run`` command), and may run all its threads on one
        CPU (``affinity``); a daemon run in a thread of another program leaves that program's threads alone."""
        self.settings = settings
        self.watcher_id = settings.effective_watcher_id if settings.shared else None
        self.layout = Layout(settings.watch_dir.resolve(), settings.names, self.watcher_id)
        self.metrics = WatcherMetrics(shared=settings.shared)
        self.readiness = Readiness()
        self.model_cpus = affinity.model_cpus(settings) if owns_process else None
        """Set when the daemon runs its threads on one of these CPUs and its warm workers on all (``affinity``)."""
        self._pin: affinity.Pin | None = None
        """The daemon's CPU once pinned, moved when other processes crowd it."""
        self.pipeline, self.runner = build_pipeline(settings, self.layout, self.metrics, self.readiness,
                                                    self.model_cpus)
        self.claims: Claims | None = None
        """Shared mode's claims, with the volume's clock they are judged by; None for the lone watcher."""
        self._now: Callable[[], float] = time.time
        """"Now" for comparisons with file times: the volume's clock in shared mode."""
        if self.watcher_id is not None:
            clock = VolumeClock(self.layout.clock_file)
            self.claims = Claims(self.layout.claims_dir, self.layout.tmp_dir, self.watcher_id,
                                 settings.claim_lease, clock)
            self.pipeline.claims = self.claims
            self.pipeline.now = self._now = clock.now
        self._hostname = socket.gethostname()
        self.scheduler = Scheduler(
            self.pipeline.process,
            workers=settings.workers + self.runner.overlap,
            debounce=settings.debounce / 1000.0,
            max_attempts=ONCE_ATTEMPTS if settings.once else None,
        )
        self.events: EventSource | None = None
        self.lock = WatchDirLock(self.layout, shared=settings.shared)
        self._stop = threading.Event()
        self._scanner = InputScanner(self.layout.root, self.layout.names, RESCAN)
        self._refused: OrderedDict[str, None] = OrderedDict()
        self._refusals_logged = 0
        self._refusals_quiet = 0
        self._evented: set[str] = set()
        self._interrupted: set[str] = set()
        self._ticker_thread: threading.Thread | None = None
        self._next_sweep = 0.0
        """Monotonic time of the next retention sweep (the first comes with the first rescan)."""
        self._refused_lock = threading.Lock()
        """The observer thread and the main thread's first scan both refuse names."""
        self._life = Lifecycle()
        self._disowned = False
        """The watch dir was replaced or taken over: leave it alone at shutdown."""
        self._started_at = utc_now_iso()
        self.exit_code = 0

    @property
    def shared(self) -> bool:
        """Shared mode: many watchers on this volume, each request claimed by one (``claims``)."""
        return self.claims is not None

    # -- start-up ---------------------------------------------------------

    def _prepare(self) -> None:
        root = self.layout.root
        root.mkdir(parents=True, exist_ok=True)
        fsio.ensure_private_dir(self.layout.state_dir)
        self.lock.acquire()
        if self.claims is not None:
            self.pipeline.prepare()  # the private area first: the volume's clock is read from a file in it
            now_ns = self.pipeline.life_started_ns = self.claims.clock.sync()
            peers.check_shared(self.layout, watcher=self.claims.watcher, hostname=self._hostname, pid=os.getpid(),
                               now_ns=now_ns, lease=self.settings.claim_lease)
        else:
            self.pipeline.life_started_ns = self.lock.started_ns
            peers.check_lone(self.layout, now_ns=self.lock.started_ns)
            self.pipeline.prepare()
        self.runner.start(self.layout.run_dir)  # models a killed daemon left running
        self._clean_stale()
        if self.shared:
            return  # interruptions are counted in the claims: a takeover of a dead watcher's is one
        for req in inflight.count_interruptions(self.layout):
            self._interrupted.add(req.name)
            log.warning("request.interrupted_before", file=req.name, input_sha256=req.input_sha256,
                        interruptions=req.interruptions,
                        reason="the watcher stopped while serving it; served after the others")

    def _clean_stale(self) -> None:
        """Temp files of an earlier run can only be leftovers of a crash: remove them.

        Only files are removed, never followed: the private directories were checked to
        be real ones of ours, and a symlink found here is unlinked, not its target. In
        shared mode the watcher's own area is its alone; the temp files in the watch dir
        and ``.modelgen`` may be another live watcher's, so only those an hour old go.
        """
        layout = self.layout
        shared_age = SHARED_TEMP_AGE if self.shared else None
        stale_prefixes: list[tuple[Path, str, float | None]] = [
            (layout.root, WATCHER_TEMP_PREFIX, shared_age),
            (layout.state_dir, WATCHER_TEMP_PREFIX, shared_age),
            (layout.tmp_dir, "", None),  # every snapshot
            (layout.workspace, MODEL_OUTPUT_PREFIX, None),
        ]
        if not self.shared:
            stale_prefixes += [(d, WATCHER_TEMP_PREFIX, None) for d in (layout.inflight_dir, layout.parked_dir)]
        with os.scandir(layout.workspace) as entries:  # warm workers' own workspaces: their inputs and outputs too
            stale_prefixes += [
                (Path(e.path), prefix, None)
                for e in entries
                if worker_workspace_slot(e.name) is not None and e.is_dir(follow_symlinks=False)
                for prefix in (MODEL_INPUT_PREFIX, MODEL_OUTPUT_PREFIX)
            ]
        now = self._now()
        removed = 0
        for directory, prefix, min_age in stale_prefixes:
            for entry in os.scandir(directory):
                if not entry.name.startswith(prefix):
                    continue
                if min_age is not None and not _older(entry, now, min_age):
                    continue
                if not entry.is_dir(follow_symlinks=False):
                    removed += fsio.remove_quietly(Path(entry.path))
                elif directory != layout.root:  # a model left a directory as its output: ours to remove
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed += 1
        if removed:
            log.info("startup.cleaned", removed=removed)

    # -- events and scans -------------------------------------------------

    def on_name(self, name: str, complete: bool = False) -> None:
        """A file event for ``name``: schedule it if it is an input, log a refusal once if it is a bad one.

        ``complete`` (closed after writing, or renamed into place) skips the debounce:
        the writer is done, so waiting would only add latency. Bursts still coalesce,
        because a request that is running takes further notices as one queued rerun.
        """
        parsed = self.layout.names.parse(name)
        if isinstance(parsed, Request):
            self.metrics.events.inc()
            self._evented.add(name)
            self.scheduler.notify(parsed, delay=0.0 if complete else None)
        elif isinstance(parsed, Rejected):
            self._refuse(parsed)

    def _refuse(self, rejected: Rejected) -> None:
        """Log a refused name once, in bounded memory and at a bounded rate (a flood of bad names is one line)."""
        with self._refused_lock:
            if rejected.name in self._refused:
                self._refused.move_to_end(rejected.name)
                return
            self._refused[rejected.name] = None
            if len(self._refused) > REFUSED_REMEMBERED:
                self._refused.popitem(last=False)
            loud = self._refusals_logged < REFUSED_LOGGED_PER_HEARTBEAT
            if loud:
                self._refusals_logged += 1
            else:
                self._refusals_quiet += 1
        self.metrics.refused_names.inc()
        if loud:
            log.warning("input.refused", file=rejected.name, reason=rejected.reason)

    def _log_quiet_refusals(self) -> None:
        with self._refused_lock:
            quiet, self._refusals_logged, self._refusals_quiet = self._refusals_quiet, 0, 0
        if quiet:
            log.warning("input.refused_more", files=quiet,
                        reason="more names shaped like inputs with invalid keys; not logged one by one")

    def rescan(self, *, everything: bool = False) -> int:
        """Schedule the inputs that changed since the last scan (or all of them); returns how many.

        This is what makes dropped events harmless: inotify queue overflows, missed
        moves, or a mount that stops delivering events are all caught here. What a scan
        looks at, and why that is enough, is ``scan.InputScanner``'s to say; inputs that
        had an event since the last scan are checked by this one, so their change is not
        taken for a missed event.
        """
        scheduled = missed = 0
        evented, self._evented = self._evented, set()
        scan = self._scanner.scan(everything=everything, hint=evented)
        for rejected in scan.rejected:
            self._refuse(rejected)
        settled_before = self._now() - MISSED_EVENT_AGE
        for change in scan.changed:
            # New content no event told us about, old enough that its event cannot still be in flight.
            unreported = change.name not in evented and _content_changed(change.old, change.new)
            if not everything and unreported and change.new[2] / 1e9 < settled_before:
                missed += 1
            delay = INTERRUPTED_LAST if everything and change.name in self._interrupted else None
            self.scheduler.notify(change.request, delay=delay)
            scheduled += 1
        if not everything:
            self.metrics.rescans.inc()
            self.metrics.missed_events.inc(missed)
        if missed:
            self._on_missed_events(missed)
        return scheduled

    def _on_missed_events(self, missed: int) -> None:
        """Native events are not arriving for some writers (NFS, WSL and other shared mounts): poll instead."""
        if self.events is not None and self.events.kind == "native" and self.settings.observer == "auto":
            log.warning("observer.fallback", reason=f"a rescan found {missed} changed inputs no event reported",
                        observer="polling", poll_interval=self.settings.poll_interval)
            self.events.switch_to_polling()
        else:
            log.warning("events.missed", inputs=missed, observer=self.events.kind if self.events else None)

    def _expire(self) -> None:
        """Retention's sweep, when it is due (see ``retention.sweep_interval``).

        In shared mode one watcher sweeps at a time, the one that holds the retention
        claim, whose lease is the sweep interval: it is left in place after the sweep, so
        its time says when the next sweep is due, whichever watcher makes it.
        """
        if not self.settings.retention or time.monotonic() < self._next_sweep:
            return
        interval = retention.sweep_interval(self.settings.retention, self.settings.rescan_interval)
        self._next_sweep = time.monotonic() + interval
        if self.claims is None:
            self._sweep(self.scheduler.busy)
            return
        claims = self.claims
        got = claims.acquire(RETENTION_CLAIM, lease=interval)
        if isinstance(got, Taken):  # another watcher swept within the interval: due when its claim ends
            self._next_sweep = time.monotonic() + got.retry_after
            return
        try:
            claimed = claims.live_names()
            names = self.layout.names
            self._sweep(lambda req: self.scheduler.busy(req) or names.input(req.key) in claimed)
            claims.prune(lambda name: not os.path.lexists(self.layout.root / name))
            gone = retention.forget_watchers(self.layout, self._now())
            if gone:
                log.info("retention.watchers_forgotten", watchers=gone,
                         reason=f"no heartbeat for {retention.DEAD_WATCHER_AGE / 3600:g} hours")
        finally:
            claims.keep(got)

    def _sweep(self, busy: Callable[[Request], bool]) -> None:
        expired = retention.expire(self.layout, self.settings.retention, busy, now=self._now())
        if expired:
            self.metrics.retention_removed.inc(len(expired))
            log.info("retention.removed", keys=len(expired), max_age_s=self.settings.retention)

    # -- heartbeat --------------------------------------------------------

    def _write_health(self, observer: ObserverKind, ready: bool, stopped: str | None = None) -> None:
        """The heartbeat; ``stopped`` says why the last one of a stopping daemon is not ready.

        Written atomically but not fsynced (nor is the metrics file): a heartbeat is
        worth nothing after a power cut, stale by then whether or not it survived, and
        four fsyncs every two seconds were most of the idle daemon's cost, and a disk
        write every two seconds for ever. A reader sees the old file or the new one.
        """
        reason = self.readiness.reason() or stopped
        health = Health(
            pid=os.getpid(),
            started_at=self._started_at,
            heartbeat_at=utc_now_iso(),
            observer=observer,
            ready=ready and reason is None,
            reason=reason,
        )
        if self.watcher_id is not None:
            health = WatcherHealth(**health.model_dump(), watcher_id=self.watcher_id, hostname=self._hostname)
        data = fsio.dump_json(health)
        try:
            fsio.atomic_write(self.layout.health_file, data, temp_prefix=WATCHER_TEMP_PREFIX, durable=False,
                              temp_dir=self._heartbeat_temps)
        except OSError as exc:
            # No room for a temp file: say "not ready" in place, or readers would trust the
            # last heartbeat until it ages out. A torn read of it is red as well.
            self.readiness.fail(VOLUME, f"the watch dir cannot be written: {exc}")
            unready = health.model_copy(update={"ready": False, "reason": self.readiness.reason()})
            try:
                fsio.overwrite_in_place(self.layout.health_file, fsio.dump_json(unready))
            except OSError:
                pass
            raise
        self._write_metrics(observer)

    def _write_metrics(self, observer: ObserverKind) -> None:
        m = self.metrics
        m.queue_depth.set(self.scheduler.depth())
        m.native_observer.set(1 if observer == "native" else 0)
        m.ready.set(0 if self.readiness.reason() else 1)
        m.heartbeat.set(round(time.time(), 3))
        fsio.atomic_write(self.layout.metrics_file, m.render(), temp_prefix=WATCHER_TEMP_PREFIX, durable=False,
                          temp_dir=self._heartbeat_temps)

    @property
    def _heartbeat_temps(self) -> Path | None:
        """Where the heartbeat's temp files go: beside them for the lone watcher, in its own area in shared mode
        (``.modelgen/watchers/`` holds every watcher's files; none may leave temps there for others to find)."""
        return self.layout.tmp_dir if self.shared else None

    def _still_ours(self) -> str | None:
        """Why this daemon must stop serving the watch dir (it was replaced, or is another's now), or None.

        Private directories deleted meanwhile are made again here (only once the watch
        dir is known to be the same); one that became a symlink or another user's is a
        reason to stop (writing there would follow it).
        """
        reason = self.lock.check_dir()
        if reason is not None:
            return reason
        try:
            self.pipeline.prepare()
        except fsio.UnsafeFile as exc:
            return str(exc)
        except OSError as exc:
            self.readiness.fail(VOLUME, f"the watch dir cannot be written: {exc}")
        return self.lock.check_file()

    def _probe_volume(self) -> None:
        """While the volume is known to refuse writes, try one each heartbeat, so readiness turns green by itself."""
        if not self.readiness.has(VOLUME):
            return
        trouble = fsio.refuses_writes(self.layout.root, WATCHER_TEMP_PREFIX)
        if trouble is None:
            self.readiness.clear(VOLUME, "a test write in the watch dir succeeded")
        else:
            self.readiness.fail(VOLUME, trouble)

    def _lost(self, reason: str) -> None:
        """The watch dir is no longer ours to serve: stop, non-zero, without touching it further."""
        log.error("daemon.lost_watch_dir", reason=reason, action="exiting to be restarted")
        self._disowned = True
        self.pipeline.disown()
        self._exit(1, "the watch dir is not ours any more")

    def _exit(self, code: int, reason: str) -> None:
        """Stop the daemon from one of its threads, with ``code`` as the exit code."""
        self.exit_code = code
        self._life.stop(reason)

    def _ticker(self) -> None:
        """Heartbeat every few seconds and rescan periodically; stop the daemon if a part of it died.

        Nothing may end this thread quietly: without it there are no heartbeats, rescans
        or lock checks while the daemon still looks alive. An unexpected error stops the
        daemon with exit 1, so that its supervisor starts a fresh one.
        """
        next_rescan = time.monotonic() + self.settings.rescan_interval
        while not self._stop.wait(self.settings.heartbeat_interval):
            try:
                next_rescan = self._tick(next_rescan)
            except Exception:
                log.exception("daemon.unhealthy", reason="the heartbeat failed; exiting to be restarted")
                self._exit(1, "the heartbeat failed")
            if self.exit_code:
                return

    def _tick(self, next_rescan: float) -> float:
        """One heartbeat: claims, liveness, ownership, chores, heartbeat file; returns when the next rescan is due."""
        assert self.events is not None
        self._renew()
        if not (self.scheduler.is_alive() and self.events.is_alive()):
            log.error("daemon.unhealthy", reason="the scheduler or the observer stopped; exiting to be restarted")
            self._exit(1, "a part of the daemon stopped")
            return next_rescan
        reason = self._still_ours()
        if reason is not None:
            self._lost(reason)
            return next_rescan
        if time.monotonic() >= next_rescan:
            next_rescan = time.monotonic() + self.settings.rescan_interval
            for chore in (self.rescan, self._expire):
                try:
                    chore()
                except OSError as exc:
                    log.error("daemon.io_error", chore=chore.__name__, error=str(exc))
        self.runner.reap_orphans()
        if self._pin is not None:
            self._pin.check()
        self._probe_volume()
        self._log_quiet_refusals()
        self._heartbeat()
        return next_rescan

    def _renewals(self) -> None:
        """``--once`` in shared mode: the claims renewed, and the pinned daemon moved off a crowded CPU (several
        jobs on one machine), at the heartbeat's pace until the run ends."""
        while not self._stop.wait(self.settings.heartbeat_interval):
            self._renew()
            if self._pin is not None:
                try:
                    self._pin.check()
                except Exception:  # the renewals must go on; the daemon stays where it is
                    log.exception("daemon.cpu_check_failed")
                    self._pin = None

    def _renew(self) -> None:
        """Shared mode, first at every heartbeat: read the volume's clock and renew every claim held.

        A claim found taken over has its run cancelled (``Held.mark_lost``); the request
        logs ``claim.lost`` when it ends. A volume that refuses the renewal makes the
        watcher unready: its claims will expire, and other watchers take its requests.
        """
        if self.claims is None:
            return
        try:
            self.claims.clock.sync()
            for held in self.claims.renew():
                log.debug("claim.renewal_found_lost", claim=held.name, generation=held.generation)
        except OSError as exc:
            self.readiness.fail(VOLUME, f"claims cannot be renewed: {exc}")

    def _heartbeat(self) -> None:
        """Write the heartbeat; a failure is a readiness problem (logged once by _write_health), never a crash."""
        assert self.events is not None
        try:
            self._write_health(self.events.kind, ready=True)
        except OSError:
            pass

    # -- lifecycle --------------------------------------------------------

    def request_stop(self, reason: object = "requested", *_: object) -> None:
        """End ``run()`` from another thread (tests, embedders); also usable as a signal handler
        (``signal.signal(SIGTERM, daemon.request_stop)`` where ``run()`` is not in the main thread)."""
        self._life.stop(signal.Signals(reason).name if isinstance(reason, int) else str(reason))

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT or ``request_stop()``; returns the exit code."""
        with self._life:
            return self._serve()

    def _serve(self) -> int:
        if self.model_cpus is not None:  # before the daemon starts a thread: each inherits it
            cpu = affinity.pin_threads(self.model_cpus)
            if cpu is not None:
                log.info("daemon.cpu", cpu=cpu, model_cpus=sorted(self.model_cpus))
                self._pin = affinity.Pin(cpu, self.model_cpus)
        self._prepare()
        self.scheduler.start()
        if self.settings.once:
            return self._run_once()
        mode = self.settings.observer_mode
        if mode != self.settings.observer:
            log.info("observer.shared_polling", observer=mode, poll_interval=self.settings.poll_interval,
                     reason="shared mode: other machines' writes raise no file events here")
        self.events = EventSource(
            self.layout.root, self.on_name, mode=mode, poll_interval=self.settings.poll_interval,
            names=self.layout.names, direct=True,
        )
        observer = self.events.start()
        pending = self.rescan(everything=True)
        self._heartbeat()
        log.info(
            "daemon.ready",
            watch_dir=str(self.layout.root),
            observer=observer,
            workers=self.settings.workers,
            model=self.settings.model_label,
            pending=pending,
            **({"shared": True, "watcher_id": self.watcher_id, "claim_lease_s": self.settings.claim_lease}
               if self.shared else {}),
        )
        self._ticker_thread = threading.Thread(target=self._ticker, name="ticker", daemon=True)
        self._ticker_thread.start()
        reason = self._life.wait()
        self._shutdown(reason)
        return self.exit_code

    def _run_once(self) -> int:
        pending = self.rescan(everything=True)
        log.info("once.start", watch_dir=str(self.layout.root), pending=pending)
        threading.Thread(target=self._stop_when_idle, name="once", daemon=True).start()
        if self.claims is not None:  # no heartbeat with --once, but the claims still need renewing
            self._ticker_thread = threading.Thread(target=self._renewals, name="renewals", daemon=True)
            self._ticker_thread.start()
        reason = self._life.wait()
        interrupted = reason != _IDLE
        self._shutdown(reason)
        errors = (
            self.scheduler.outcomes[Outcome.error]
            + self.scheduler.outcomes[Outcome.skipped_error]
            + self.scheduler.gave_up
        )
        log.info(
            "once.done",
            ok=self.scheduler.outcomes[Outcome.ok],
            errors=errors,
            skipped=self.scheduler.outcomes[Outcome.skipped],
        )
        if interrupted:  # a signal ended the run: interrupted work is redone next time
            return self.exit_code
        return 1 if errors else self.exit_code

    def _stop_when_idle(self) -> None:
        """``--once``'s watch: stop when nothing is pending, or with exit 1 if the scheduler died meanwhile."""
        try:
            while not self.scheduler.wait_idle(timeout=1.0):
                if not self.scheduler.is_alive():
                    log.error("daemon.unhealthy", reason="the scheduler stopped before the work was done")
                    self._exit(1, "the scheduler stopped")
                    return
        except Exception:
            log.exception("daemon.unhealthy", reason="waiting for the work to be done failed")
            self._exit(1, "waiting for the work failed")
            return
        self._life.stop(_IDLE)

    def _shutdown(self, reason: str | None) -> None:
        t0 = time.monotonic()
        log.info("daemon.stopping", reason=reason)
        self._stop.set()
        if self._ticker_thread is not None:  # no heartbeat may land after the final one below
            self._ticker_thread.join(2.0)
        self.scheduler.halt()
        if self.events is not None:
            self.events.stop()
        # Kill models first so the workers waiting on them return promptly.
        self.runner.stop()
        self.scheduler.stop(timeout=max(0.5, SHUTDOWN_BUDGET - (time.monotonic() - t0)))
        if self.events is not None and not self._disowned:
            try:
                self._write_health(self.events.kind, ready=False, stopped=f"the watcher stopped ({reason})")
            except OSError:
                pass
        self.lock.release()
        log.info("daemon.stopped", seconds=round(time.monotonic() - t0, 3))


def _older(entry: os.DirEntry[str], now: float, age: float) -> bool:
    """``entry`` was last modified more than ``age`` seconds before ``now`` (gone: False)."""
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > age
    except FileNotFoundError:
        return False

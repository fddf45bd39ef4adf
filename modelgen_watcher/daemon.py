"""The daemon's lifecycle: lock, start-up clean-up and catch-up, events, rescans, heartbeat, signals, stop."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import IO

from . import fsio, retention
from .logs import get_logger
from .metrics import Metrics, watcher_metrics
from .observe import EventSource, ObserverKind
from .pipeline import Outcome, Pipeline
from .protocol import MODEL_OUTPUT_PREFIX, WATCHER_TEMP_PREFIX, Layout, Rejected, Request
from .runners import ModelRunner, SubprocessRunner
from .scheduler import Scheduler
from .schemas import Health, utc_now_iso
from .settings import WatcherSettings

log = get_logger("modelgen_watcher.daemon")

MISSED_EVENT_AGE = 2.0
"""A change older than this that no event reported counts as a missed event."""
SHUTDOWN_BUDGET = 8.0
"""Seconds a stop may take in all; container engines kill at 10."""


class AlreadyRunning(Exception):
    """Another watcher holds this watch dir's lock."""


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def build_pipeline(
    settings: WatcherSettings, layout: Layout, metrics: Metrics | None = None
) -> tuple[Pipeline, ModelRunner]:
    """The pipeline and runner one settings object describes (shared by ``run`` and ``score``)."""
    runner = SubprocessRunner(settings.command_template, cwd=settings.model_cwd, kill_grace=settings.kill_grace)
    pipeline = Pipeline(
        layout,
        runner,
        model_label=settings.model_label,
        model_timeout=settings.model_timeout,
        max_input_bytes=settings.max_input_bytes,
        settle=settings.settle,
        metrics=metrics,
    )
    return pipeline, runner


class Daemon:
    """One watcher on one directory. ``run()`` blocks until ``request_stop()`` or a signal."""

    def __init__(self, settings: WatcherSettings) -> None:
        self.settings = settings
        self.layout = Layout(settings.watch_dir.resolve(), settings.names)
        self.metrics = watcher_metrics()
        self.pipeline, self.runner = build_pipeline(settings, self.layout, self.metrics)
        self.scheduler = Scheduler(
            self.pipeline.process, workers=settings.workers, debounce=settings.debounce / 1000.0
        )
        self.events: EventSource | None = None
        self._stop = threading.Event()
        self._lock_fh: IO[str] | None = None
        self._seen: dict[str, tuple[int, int, int, int]] = {}
        self._rejected: set[str] = set()
        self._evented: set[str] = set()
        self._stop_requested = False
        self._started_at = utc_now_iso()
        self.exit_code = 0

    # -- start-up ---------------------------------------------------------

    def _prepare(self) -> None:
        root = self.layout.root
        root.mkdir(parents=True, exist_ok=True)
        self.layout.state_dir.mkdir(exist_ok=True)
        self._lock_fh = open(self.layout.lock_file, "a+")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_fh.seek(0)
            holder = self._lock_fh.read().strip() or "unknown"
            self._lock_fh.close()
            raise AlreadyRunning(f"another modelgen-watcher (pid {holder}) is serving {root}") from exc
        self._lock_fh.seek(0)
        self._lock_fh.truncate()
        self._lock_fh.write(str(os.getpid()))
        self._lock_fh.flush()
        self.runner.start(self.layout.run_dir)  # models a killed daemon left running
        self._clean_stale()

    def _clean_stale(self) -> None:
        """Temp files of an earlier run can only be leftovers of a crash: remove them."""
        removed = 0
        for entry in os.scandir(self.layout.root):
            if entry.name.startswith(WATCHER_TEMP_PREFIX) and not entry.is_dir(follow_symlinks=False):
                removed += fsio.remove_quietly(Path(entry.path))
        for path in self.layout.state_dir.glob(WATCHER_TEMP_PREFIX + "*"):
            removed += fsio.remove_quietly(path)
        if self.layout.tmp_dir.exists():
            removed += sum(1 for _ in self.layout.tmp_dir.iterdir())
            shutil.rmtree(self.layout.tmp_dir, ignore_errors=True)
        if self.layout.workspace.exists():
            for path in self.layout.workspace.glob(MODEL_OUTPUT_PREFIX + "*"):
                removed += fsio.remove_quietly(path)
        self.layout.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.layout.workspace.mkdir(parents=True, exist_ok=True)
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
            self.metrics.inc("events_total")
            self._evented.add(name)
            self.scheduler.notify(parsed, delay=0.0 if complete else None)
        elif isinstance(parsed, Rejected) and name not in self._rejected:
            self._rejected.add(name)
            log.warning("input.refused", file=name, reason=parsed.reason)

    def rescan(self, *, everything: bool = False) -> int:
        """List the watch dir and schedule inputs that changed since the last scan (or all of them).

        This is what makes dropped events harmless: inotify queue overflows, missed
        moves, or a mount that stops delivering events are all caught here.
        """
        current: dict[str, tuple[int, int, int, int]] = {}
        scheduled = missed = 0
        evented, self._evented = self._evented, set()
        settled_before = time.time() - MISSED_EVENT_AGE
        for entry in os.scandir(self.layout.root):
            parsed = self.layout.names.parse(entry.name)
            if parsed is None:
                continue
            if isinstance(parsed, Rejected):
                self.on_name(entry.name)
                continue
            try:
                sig = _signature(entry.stat(follow_symlinks=False))
            except FileNotFoundError:
                continue
            current[entry.name] = sig
            if everything or self._seen.get(entry.name) != sig:
                # A change no event told us about, old enough that its event cannot still be in flight.
                if not everything and entry.name not in evented and sig[2] / 1e9 < settled_before:
                    missed += 1
                self.scheduler.notify(parsed)
                scheduled += 1
        self._seen = current
        if not everything:
            self.metrics.inc("rescans_total")
            self.metrics.inc("missed_events_total", missed)
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
        if not self.settings.retention:
            return
        expired = retention.expire(self.layout, self.settings.retention, self.scheduler.busy)
        if expired:
            self.metrics.inc("retention_removed_total", len(expired))
            log.info("retention.removed", keys=len(expired), max_age_s=self.settings.retention)

    # -- heartbeat --------------------------------------------------------

    def _write_health(self, observer: ObserverKind, ready: bool) -> None:
        health = Health(
            pid=os.getpid(),
            started_at=self._started_at,
            heartbeat_at=utc_now_iso(),
            observer=observer,
            ready=ready,
        )
        fsio.atomic_write_json(self.layout.health_file, health.model_dump(), temp_prefix=WATCHER_TEMP_PREFIX)
        self._write_metrics(observer)

    def _write_metrics(self, observer: ObserverKind) -> None:
        m = self.metrics
        for outcome, count in self.scheduler.outcomes.items():
            m.set("requests_total", count, outcome=outcome.value)
        m.set("queue_depth", self.scheduler.depth())
        m.set("native_observer", 1 if observer == "native" else 0)
        m.set("heartbeat_timestamp_seconds", round(time.time(), 3))
        fsio.atomic_write(self.layout.metrics_file, m.render().encode(), temp_prefix=WATCHER_TEMP_PREFIX)

    def _ticker(self) -> None:
        """Heartbeat every few seconds and rescan periodically; stop the daemon if a part of it died."""
        next_rescan = time.monotonic() + self.settings.rescan_interval
        while not self._stop.wait(self.settings.heartbeat_interval):
            assert self.events is not None
            if not (self.scheduler.is_alive() and self.events.is_alive()):
                log.error("daemon.unhealthy", reason="the scheduler or the observer stopped; exiting to be restarted")
                self.exit_code = 1
                self._stop_requested = True
                return
            if time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + self.settings.rescan_interval
                for chore in (self.rescan, self._expire):
                    try:
                        chore()
                    except OSError as exc:
                        log.error("daemon.io_error", chore=chore.__name__, error=str(exc))
            self.runner.reap_orphans()
            try:  # the heartbeat must not depend on the chores above succeeding
                self._write_health(self.events.kind, ready=True)
            except OSError as exc:
                log.error("daemon.io_error", chore="heartbeat", error=str(exc))

    # -- lifecycle --------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        """Signal handler: only sets a flag (taking a lock here could deadlock the main thread)."""
        self._stop_requested = True

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)

    def _wait_for_stop(self) -> None:
        while not self._stop_requested:
            time.sleep(0.2)  # sleep is interrupted by signals; the flag is checked right after

    def run(self) -> int:
        """Serve until stopped; returns the exit code."""
        self._install_signals()
        self._prepare()
        self.scheduler.start()
        if self.settings.once:
            return self._run_once()
        self.events = EventSource(
            self.layout.root, self.on_name, mode=self.settings.observer, poll_interval=self.settings.poll_interval
        )
        observer = self.events.start()
        pending = self.rescan(everything=True)
        self._write_health(observer, ready=True)
        log.info(
            "daemon.ready",
            watch_dir=str(self.layout.root),
            observer=observer,
            workers=self.settings.workers,
            model=self.settings.model_label,
            pending=pending,
        )
        threading.Thread(target=self._ticker, name="ticker", daemon=True).start()
        self._wait_for_stop()
        self._shutdown()
        return self.exit_code

    def _run_once(self) -> int:
        pending = self.rescan(everything=True)
        log.info("once.start", watch_dir=str(self.layout.root), pending=pending)
        while not self._stop_requested and not self.scheduler.wait_idle(timeout=0.2):
            pass
        interrupted = self._stop_requested
        self._shutdown()
        errors = self.scheduler.outcomes[Outcome.error] + self.scheduler.outcomes[Outcome.skipped_error]
        log.info(
            "once.done",
            ok=self.scheduler.outcomes[Outcome.ok],
            errors=errors,
            skipped=self.scheduler.outcomes[Outcome.skipped],
        )
        if interrupted:  # a signal ended the run: interrupted work is redone next time
            return self.exit_code
        return 1 if errors else self.exit_code

    def _shutdown(self) -> None:
        t0 = time.monotonic()
        log.info("daemon.stopping")
        self._stop.set()
        self.scheduler.halt()
        if self.events is not None:
            self.events.stop()
        # Kill models first so the workers waiting on them return promptly.
        self.runner.stop()
        self.scheduler.stop(timeout=max(0.5, SHUTDOWN_BUDGET - (time.monotonic() - t0)))
        if self.events is not None:
            try:
                self._write_health(self.events.kind, ready=False)
            except OSError:
                pass
        if self._lock_fh is not None:
            self._lock_fh.close()
        log.info("daemon.stopped", seconds=round(time.monotonic() - t0, 3))

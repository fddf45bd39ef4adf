"""Idle cost of the daemon: CPU with nothing to do, native and polling, beside 10 and 10,000 finished requests.

Why: a sidecar runs for months next to a volume that fills with finished requests
(retention keeps them a week by default). What it costs while nothing happens must not
grow with them: heartbeats, rescans, the retention sweep and the polling observer all
run while idle.

What one run measures, on throw-away temp directories:

1. For each size (10 and 10,000 by default), a watch dir with that many *finished*
   keyed requests (input, result, ``ok`` status), made by the watcher itself: the inputs
   are written, then ``modelgen-watcher run --once`` (a warm worker) scores them all.
2. For each observer (``native``, and ``polling`` at its default 1 s interval), a daemon
   with the default settings (rescan every 10 s, heartbeat every 2 s, retention on) is
   started on that dir and left alone until a heartbeat says its start-up catch-up is
   done and it has made its first rescan (which comes with the start-up retention
   sweep; the next sweep is an hour later, so its cost is given apart, measured in this
   process); then its CPU time is read over the window (default 60 s: six rescans).
   CPU time is the sum of its threads' run time in ``/proc/PID/task/*/schedstat``
   (nanoseconds), cross-checked with ``utime + stime`` of ``/proc/PID/stat`` (ticks);
   it is the daemon's alone (the idle warm worker blocks on its pipe).
3. The table gives % of one core, the rescans done in the window (a window without
   them would hide their cost), and whether any model ran (it must not: idle means idle).

Run: ``.venv/bin/python bench/idle.py [--sizes 10,10000] [--window 60]``; about 6 minutes
with the defaults on a 2-core machine. Every daemon is stopped with SIGTERM and every
temp directory removed, even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _harness import (
    CLK_TCK,
    NAMES,
    BenchError,
    DaemonUnderTest,
    Processes,
    cleaned_up,
    cpu_ticks,
    make_route,
    markdown_table,
    mib,
    peak_rss_kib,
    progress,
    read_json,
    rss_kib,
    stop_on_sigterm,
    verdict,
)

from modelgen_watcher.settings import WatcherSettings
from modelgen_watcher.volume.names import Layout
from modelgen_watcher.watcher.retention import expire, sweep_interval

DEFAULT_RETENTION = WatcherSettings.model_fields["retention"].default
DEFAULT_RESCAN = WatcherSettings.model_fields["rescan_interval"].default
TARGETS = {"native": 0.1, "polling": 2.0}
"""% of one core the idle daemon may use (issue 9): native with any number of finished requests,
polling with 10,000."""
POLLING_TARGET_SIZE = 10_000


def thread_ns(pid: int) -> dict[int, int]:
    """Run time so far of each live thread of ``pid``, in nanoseconds (the first field of its schedstat)."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                out[int(tid)] = int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


@dataclass
class Idle:
    percent: float
    """% of one core over the window, from schedstat (or from ticks if threads came and went)."""
    ticks_percent: float | None
    source: str


def measure_idle(pid: int, window: float) -> Idle:
    ns0, ticks0, t0 = thread_ns(pid), cpu_ticks(pid), time.monotonic()
    time.sleep(window)
    ns1, ticks1, t1 = thread_ns(pid), cpu_ticks(pid), time.monotonic()
    elapsed = t1 - t0
    ticks_pct = None if ticks0 is None or ticks1 is None else 100.0 * (ticks1 - ticks0) / CLK_TCK / elapsed
    if ns0 and set(ns0) == set(ns1):
        return Idle(100.0 * sum(ns1[t] - ns0[t] for t in ns1) / 1e9 / elapsed, ticks_pct, "schedstat")
    if ticks_pct is None:
        raise BenchError(f"pid {pid} vanished while measured")
    return Idle(ticks_pct, ticks_pct, "ticks (threads changed)")


def finished_dir(root: Path, size: int, rng: random.Random) -> Path:
    """A watch dir holding ``size`` keyed requests, each scored ``ok`` by the watcher itself (``run --once``)."""
    watch = root / f"finished-{size}"
    watch.mkdir()
    for i in range(size):
        (watch / NAMES.input(f"k{i:05d}")).write_bytes(make_route(i, rng))
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "modelgen_watcher", "run", "--once", "--watch-dir", str(watch)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "MODELGEN_LOG_FORMAT": "json"},
    )
    if done.returncode != 0:
        raise BenchError(f"run --once on {size} inputs exited {done.returncode}: {done.stderr[-2000:]!r}")
    sample = read_json(watch / NAMES.status("k00000"))
    if not (isinstance(sample, dict) and sample.get("state") == "ok"):
        raise BenchError(f"run --once left no ok status: {sample}")
    progress(f"{size} finished requests made in {time.monotonic() - t0:.0f} s")
    return watch


def wait_first_rescan(daemon: DaemonUnderTest, timeout: float = 60.0) -> None:
    """Until a heartbeat counts a rescan: the first one comes with the start-up retention sweep, hourly after."""
    deadline = time.monotonic() + timeout
    while (daemon.metric("modelgen_rescans_total") or 0) < 1:
        daemon.alive()
        if time.monotonic() > deadline:
            raise BenchError(f"no rescan within {timeout:g} s")
        time.sleep(0.2)


def sweep_cost(watch: Path) -> str:
    """CPU of one retention sweep over ``watch`` (nothing expires), in this process: the daemon's hourly chore."""
    layout = Layout(watch, NAMES)
    t0 = time.process_time()
    expire(layout, DEFAULT_RETENTION, busy=lambda _req: False)
    ms = (time.process_time() - t0) * 1000.0
    every = sweep_interval(DEFAULT_RETENTION, DEFAULT_RESCAN)
    return f"{ms:.0f} ms per retention sweep, one every {every / 60:.0f} min ({100 * ms / 1000 / every:.4f} % of a core)"


def bench_idle(procs: Processes, watch: Path, size: int, observer: str, window: float) -> list[str]:
    daemon = DaemonUnderTest(procs, watch, ["--observer", observer])
    progress(f"idle, {observer}, {size} finished: starting")
    daemon.start()
    try:
        daemon.wait_idle(timeout=300.0)
        wait_first_rescan(daemon)
        runs_before = sum(1 for rec in daemon.log_records() if rec.get("event") == "request.done")
        rescans_before = daemon.metric("modelgen_rescans_total") or 0.0
        progress(f"idle, {observer}, {size} finished: measuring for {window:g} s")
        idle = measure_idle(daemon.pid, window)
        rss, peak = rss_kib(daemon.pid), peak_rss_kib(daemon.pid)
        daemon.alive()
        time.sleep(2.5)  # one more heartbeat, so the metrics file counts the window's rescans
        rescans = (daemon.metric("modelgen_rescans_total") or 0.0) - rescans_before
        runs = sum(1 for rec in daemon.log_records() if rec.get("event") == "request.done") - runs_before
    finally:
        rc = daemon.stop()
    target = TARGETS[observer] if observer == "native" or size >= POLLING_TARGET_SIZE else None
    notes = [f"{rescans:.0f} rescans in the window", f"CPU from {idle.source}"]
    if idle.ticks_percent is not None and idle.source == "schedstat":
        notes.append(f"utime+stime says {idle.ticks_percent:.3f} %")
    if runs:
        notes.append(f"{runs} request(s) processed during the window: not idle")
    if rc not in (0, None):
        notes.append(f"exit code {rc} on SIGTERM")
    return [
        observer,
        f"{size:,}",
        f"{idle.percent:.3f}",
        f"{idle.percent * 10:.2f}",
        f"{mib(rss)} ({mib(peak)})",
        "-" if target is None else f"< {target:g} %: {verdict(idle.percent < target and not runs)}",
        "; ".join(notes),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,10000", help="finished requests in the dir, comma-separated")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of idle measured per setup (default 60)")
    parser.add_argument("--observers", default="native,polling", help="observers to measure, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    observers = [o for o in args.observers.split(",") if o]
    if any(o not in TARGETS for o in observers):
        parser.error(f"--observers: choose from {', '.join(TARGETS)}")
    stop_on_sigterm()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="modelgen-bench-idle-"))
    procs = Processes()
    rows: list[list[str]] = []
    sweeps: list[str] = []
    t_start, load_before = time.monotonic(), os.getloadavg()[0]
    with cleaned_up(procs, root):
        for size in sizes:
            watch = finished_dir(root, size, rng)
            for observer in observers:
                rows.append(bench_idle(procs, watch, size, observer, args.window))
            sweeps.append(f"{size:,} finished requests: {sweep_cost(watch)}")
    header = ["observer", "finished requests", "idle CPU % of a core", "ms CPU per s", "daemon RSS (peak)", "target",
              "notes"]
    print(markdown_table(header, rows, right={1, 2, 3, 4}))
    print()
    print(
        f"Idle CPU of the daemon over {args.window:g} s per row, after its start-up catch-up, default settings "
        f"(rescan 10 s, heartbeat 2 s, polling 1 s, retention 7 days). {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after, Python {sys.version.split()[0]}, "
        f"{time.monotonic() - t_start:.0f} s. Daemon RSS: ``VmRSS`` at the end of the window (``VmHWM``, the peak "
        "since its start, in brackets): what a directory's finished requests cost in memory. Each window starts after the "
        "first rescan, which comes with the retention sweep of start-up; the sweeps after it, hourly, are not "
        "in any window:"
    )
    print()
    print("\n".join(f"- {line}" for line in sweeps))
    return 0


if __name__ == "__main__":
    sys.exit(main())

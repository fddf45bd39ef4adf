"""Drain rate: 1,000 keyed requests dropped at once, each runner, one and two workers; and the memory it takes.

Why: a burst of uploads (or a restart with a backlog) is when a process per request
hurts most, and when memory peaks. This puts the runners side by side on the same
backlog, in one run.

What one run measures, on throw-away temp directories, for each runner (``subprocess``,
``fork`` where this watcher has it, ``entry``) and each ``--workers`` (1 and 2), all with
the embedded reference model (``subprocess`` and ``fork`` run it as a script, with
upstream's flags, ``REFERENCE_MODEL_CMD``; ``entry`` calls it in a warm worker):

1. A daemon (native observer) is started and left to say it is ready (workers loaded).
2. N keyed requests (default 1,000) with distinct contents are dropped as fast as this
   process can publish them (temp dot-file, then rename). The clock runs from the
   first drop until the daemon has logged ``request.done`` ``ok`` for all of them (read
   from its log as it is written, every 20 ms); then every status is checked to be ``ok``
   for its own input's sha256.
3. Memory: the daemon's peak resident set (``VmHWM``, exact), and the peak of the sum of
   the resident sets of its descendants (warm workers, the fork server and its children,
   or the model processes), sampled every 50 ms from ``/proc``: a process per request
   lives about 30 ms, so that column is a sample, not a bound.

Each setup is drained again, with a fresh daemon, until its drains add up to ``--min-seconds`` (default 10)
or ``--max-drains`` (default 9) have run, and its row gives the median rate and the range. Why: a warm
runner drains 1,000 requests in about a second, where a scheduling hiccup of the machine (a VM's
neighbours) moves the rate by a tenth or more, while a process per request takes 20 to 40 seconds, long
enough to average such hiccups out by itself. Every setup gets at least that much draining to its median.

Target (issue 9): ``entry`` drains at least 15x faster than ``subprocess`` in the same run (medians).

Each set of rows is drained in a scratch directory of its own (``--scratch``): by default
the temp dir and, where it is another file system, the tmpfs /dev/shm, because a disk
can cost more than the daemon: an ext4 without a journal searches its inode bitmap past
recently deleted inodes for every new file, and a request creates six.

Run: ``.venv/bin/python bench/drain.py [--requests N]``; about 5 minutes with the
defaults on a 2-core machine. Every daemon is stopped with SIGTERM and every temp
directory removed, even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import typing
from dataclasses import dataclass
from pathlib import Path

from _harness import (
    NAMES,
    DaemonUnderTest,
    LogTail,
    Processes,
    cleaned_up,
    descendants,
    drop,
    file_system,
    make_route,
    markdown_table,
    mib,
    peak_rss_kib,
    progress,
    rss_kib,
    sha256,
    statuses_not_ok,
    stop_on_sigterm,
    verdict,
    wait_drained,
)

from modelgen_watcher.settings import REFERENCE_MODEL_CMD, ModelSettings

SAMPLE_S = 0.05
TARGET_RATIO = 15.0


def runners() -> list[tuple[str, list[str]]]:
    """Each runner this watcher has, with the flags that run the reference model through it."""
    kinds = typing.get_args(typing.get_args(ModelSettings.model_fields["runner"].annotation)[0])
    script = ["--model-cmd", REFERENCE_MODEL_CMD]
    table = {
        "subprocess": ["--runner", "subprocess"],
        "fork": ["--runner", "fork", *script],
        "entry": ["--runner", "entry"],
    }
    return [(kind, table[kind]) for kind in ("subprocess", "fork", "entry") if kind in kinds]


class MemorySampler:
    """The peak of the summed resident sets of a daemon's descendants, sampled in a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.most_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            kids = descendants(self.pid)
            total = sum(rss_kib(pid) or 0 for pid in kids)
            self.peak_kib = max(self.peak_kib, total)
            self.most_processes = max(self.most_processes, len(kids))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def scratch_dirs(spec: str) -> list[str]:
    """``--scratch`` as directories; ``auto``: the temp dir, plus /dev/shm when that is another file system (a
    tmpfs, which tells the daemon's cost from the cost of the disk under it)."""
    if spec != "auto":
        return [d for d in spec.split(",") if d]
    dirs = [tempfile.gettempdir()]
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(dirs[0]).st_dev:
        dirs.append(shm)
    return dirs


@dataclass
class Drain:
    fs: str
    runner: str
    workers: int
    n: int
    seconds: float
    daemon_peak_kib: int | None
    children_peak_kib: int
    most_processes: int
    notes: list[str]

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    def cells(self) -> list[str]:
        return [
            self.fs,
            f"`{self.runner}`",
            str(self.workers),
            str(self.n),
            f"{self.seconds:.1f}",
            f"{self.rate:.0f}",
            mib(self.daemon_peak_kib),
            f"{mib(self.children_peak_kib)} ({self.most_processes} processes at most)",
            "; ".join(self.notes),
        ]


@dataclass
class Setup:
    """The drains of one setup (file system, runner, workers), summed up in one row."""

    drains: list[Drain]

    @property
    def first(self) -> Drain:
        """The first drain: what the setup was (file system, runner, workers, requests) is every drain's."""
        return self.drains[0]

    @property
    def rate(self) -> float:
        return statistics.median(d.rate for d in self.drains)

    def cells(self) -> list[str]:
        first, rates = self.first, [d.rate for d in self.drains]
        daemon = [d.daemon_peak_kib for d in self.drains if d.daemon_peak_kib is not None]
        children = max(self.drains, key=lambda d: d.children_peak_kib)
        notes = list(dict.fromkeys(note for d in self.drains for note in d.notes))
        return [
            first.fs,
            f"`{first.runner}`",
            str(first.workers),
            str(first.n),
            str(len(self.drains)),
            f"{statistics.median(d.seconds for d in self.drains):.1f}",
            f"{self.rate:.0f}",
            f"{min(rates):.0f}-{max(rates):.0f}",
            mib(max(daemon) if daemon else None),
            f"{mib(children.children_peak_kib)} ({children.most_processes} processes at most)",
            "; ".join(notes),
        ]


def drain_setup(
    procs: Processes, root: Path, fs: str, runner: str, args: list[str], workers: int, n: int, rng: random.Random,
    min_seconds: float, max_drains: int,
) -> Setup:
    """Drain one setup once, then again until its drains add up to ``min_seconds`` or ``max_drains`` ran."""
    drains = [bench_drain(procs, root, fs, runner, args, workers, n, rng)]
    while sum(d.seconds for d in drains) < min_seconds and len(drains) < max_drains:
        drains.append(bench_drain(procs, root, fs, runner, args, workers, n, rng))
    return Setup(drains)


def bench_drain(
    procs: Processes, root: Path, fs: str, runner: str, args: list[str], workers: int, n: int, rng: random.Random
) -> Drain:
    watch = Path(tempfile.mkdtemp(prefix=f"{runner}-{workers}-", dir=root))
    daemon = DaemonUnderTest(procs, watch, ["--observer", "native", "--workers", str(workers), *args])
    progress(f"{runner}, {workers} worker(s): starting")
    daemon.start(timeout=120.0)
    datas = {f"d{i:05d}": make_route(i, rng) for i in range(n)}
    shas = {sha256(data) for data in datas.values()}
    tail = LogTail(daemon.log_path)
    tail.records()  # start-up lines
    try:
        with MemorySampler(daemon.pid) as memory:
            t0 = time.perf_counter()
            for key, data in datas.items():
                drop(watch, data, NAMES.input(key))
            progress(f"{runner}, {workers} worker(s): {n} dropped in {time.perf_counter() - t0:.1f} s")
            wait_drained([tail], shas, daemon.alive, runner)
            seconds = time.perf_counter() - t0
        daemon_peak = peak_rss_kib(daemon.pid)
    finally:
        rc = daemon.stop()
    wrong = statuses_not_ok(watch, datas)
    notes = []
    if wrong:
        notes.append(f"{len(wrong)} statuses not ok for their input (e.g. {wrong[0]})")
    if rc not in (0, None):
        notes.append(f"exit code {rc} on SIGTERM")
    return Drain(fs, runner, workers, n, seconds, daemon_peak, memory.peak_kib, memory.most_processes, notes)


def targets(setups: list[Setup]) -> list[str]:
    lines = []
    for fs, workers in sorted({(s.first.fs, s.first.workers) for s in setups}):
        rates: dict[str, list[float]] = {}
        for setup in setups:
            if (setup.first.fs, setup.first.workers) == (fs, workers):
                rates.setdefault(setup.first.runner, []).append(setup.rate)
        if "entry" in rates and "subprocess" in rates:
            ratio = statistics.median(rates["entry"]) / statistics.median(rates["subprocess"])
            lines.append(f"- {fs}, `--workers {workers}`: `entry` drains {ratio:.1f}x as fast as `subprocess` "
                         f"(target >= {TARGET_RATIO:g}x): {verdict(ratio >= TARGET_RATIO)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="keyed requests dropped at once (default 1000)")
    parser.add_argument("--workers", default="1,2", help="--workers values, comma-separated (default 1,2)")
    parser.add_argument("--runners", default="", help="only these runners, comma-separated (default: every one)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="go through every setup this many times, in turns (default 1)")
    parser.add_argument("--min-seconds", type=float, default=10.0,
                        help="drain a setup again until its drains add up to this many seconds (default 10)")
    parser.add_argument("--max-drains", type=int, default=9, help="but no more drains than this (default 9)")
    parser.add_argument("--scratch", default="auto",
                        help="directories to drain in, comma-separated, one set of rows each (default: the temp "
                             "dir, and /dev/shm when it is a tmpfs on another file system)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    stop_on_sigterm()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="modelgen-bench-drain-"))
    scratches = [Path(tempfile.mkdtemp(prefix="modelgen-bench-drain-", dir=d)) for d in scratch_dirs(args.scratch)]
    procs = Processes()
    setups: list[Setup] = []
    t_start, load_before = time.monotonic(), os.getloadavg()[0]
    with cleaned_up(procs, root):
        chosen = [(r, f) for r, f in runners() if not args.runners or r in args.runners.split(",")]
        try:
            for scratch in scratches or [root]:
                fs = file_system(scratch)
                for _ in range(args.repeat):
                    for workers in worker_counts:
                        for runner, flags in chosen:
                            setups.append(drain_setup(procs, scratch, fs, runner, flags, workers, args.requests,
                                                      rng, args.min_seconds, args.max_drains))
        finally:
            procs.stop_all()  # before their directories go
            for scratch in scratches:
                shutil.rmtree(scratch, ignore_errors=True)
    header = ["file system", "runner", "workers", "requests", "drains", "seconds (median)", "requests/s (median)",
              "requests/s (range)", "daemon peak RSS", "model processes' peak RSS, summed (sampled)", "notes"]
    print(markdown_table(header, [s.cells() for s in setups], right={2, 3, 4, 5, 6, 7}))
    print()
    print(
        f"From the first drop until the daemon logged `ok` for every request; each setup drained until its "
        f"drains added up to {args.min_seconds:g} s (at most {args.max_drains}), a fresh daemon each, the median "
        f"rate; the reference model, native observer; model processes sampled every {SAMPLE_S * 1000:.0f} ms; "
        f"peaks the highest of the setup's drains. {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after, Python {sys.version.split()[0]}, "
        f"{time.monotonic() - t_start:.0f} s."
    )
    print()
    print("Targets (issue 9):")
    print("\n".join(targets(setups)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

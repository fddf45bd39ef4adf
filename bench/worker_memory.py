"""A warm worker's memory over 10,000 requests: does it grow?

Why: a warm worker lives as long as the daemon (``--worker-max-requests 0``, the
default, never replaces it), so anything it keeps per request is a leak that only
``--worker-max-rss`` would end. This serves many requests through one worker and
compares its resident memory at the start and at the end.

What one run measures, on a throw-away temp directory: a daemon with ``--runner entry``
(the embedded reference model), one worker, the native observer. Requests are keyed
inputs with distinct contents, dropped in batches of 100 (keys reused from batch to
batch, each batch waited for in the daemon's log), N in all (default 10,000). The
worker's ``VmRSS`` is read after it loaded the model (before any request), after the
first batch, and after the last; its pid must stay the same (the worker was never
replaced). The daemon's own ``VmRSS`` is shown beside it.

Target (issue 9): the worker's RSS grows less than 5 % from the start to the end. The
start is taken after the first batch: that is when the first requests' one-time
allocations (the JSON decoder's, the page cache's for the code) are made; the growth
from before any request is shown too.

Run: ``.venv/bin/python bench/worker_memory.py [--requests N]``; about a minute with
the default on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from _harness import (
    NAMES,
    BenchError,
    DaemonUnderTest,
    LogTail,
    Processes,
    cleaned_up,
    descendants,
    drop,
    make_route,
    markdown_table,
    mib,
    progress,
    rss_kib,
    sha256,
    stop_on_sigterm,
    verdict,
)

BATCH = 100
TRACE_BATCHES = 10
"""Batches between two readings of the trace printed under the table."""
BATCH_TIMEOUT = 120.0
TARGET_GROWTH = 5.0


def worker_of(daemon: DaemonUnderTest) -> int:
    kids = descendants(daemon.pid)
    if len(kids) != 1:
        raise BenchError(f"expected one warm worker under the daemon, found {kids}")
    return kids[0]


def serve_batch(daemon: DaemonUnderTest, tail: LogTail, seq0: int, rng: random.Random) -> None:
    """Drop ``BATCH`` requests and wait until the daemon logged every one ``ok``."""
    shas = set()
    for i in range(BATCH):
        data = make_route(seq0 + i, rng)
        shas.add(sha256(data))
        drop(daemon.watch_dir, data, NAMES.input(f"m{i:03d}"))
    deadline = time.monotonic() + BATCH_TIMEOUT
    while shas:
        for rec in tail.records():
            if rec.get("event") == "request.done":
                if rec.get("outcome") != "ok":
                    raise BenchError(f"a request ended {rec.get('outcome')}: {rec}")
                shas.discard(str(rec.get("input_sha256")))
        if not shas:
            return
        daemon.alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{len(shas)} requests of a batch not done after {BATCH_TIMEOUT:g} s")
        time.sleep(0.01)


def growth(start: int, end: int) -> float:
    return 100.0 * (end - start) / start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help=f"requests in all, in batches of {BATCH}")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    batches = max(2, args.requests // BATCH)
    stop_on_sigterm()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="modelgen-bench-memory-"))
    procs = Processes()
    t_start, load_before = time.monotonic(), os.getloadavg()[0]
    daemon = DaemonUnderTest(procs, root / "watch", ["--observer", "native", "--runner", "entry", "--workers", "1"])
    with cleaned_up(procs, root):
        progress("starting")
        daemon.start(timeout=60.0)
        tail = LogTail(daemon.log_path)
        worker = worker_of(daemon)
        loaded, daemon_loaded = rss_kib(worker), rss_kib(daemon.pid)
        serve_batch(daemon, tail, 0, rng)
        first, daemon_first = rss_kib(worker), rss_kib(daemon.pid)
        trace: list[tuple[int | None, int | None]] = [(first, daemon_first)]
        t0 = time.perf_counter()
        for b in range(1, batches):
            serve_batch(daemon, tail, b * BATCH, rng)
            if (b + 1) % TRACE_BATCHES == 0:
                trace.append((rss_kib(worker), rss_kib(daemon.pid)))
                progress(f"{(b + 1) * BATCH} requests, worker at {mib(trace[-1][0])}")
        seconds = time.perf_counter() - t0
        if worker_of(daemon) != worker:
            raise BenchError("the warm worker was replaced during the run: its growth cannot be read")
        end, daemon_end = rss_kib(worker), rss_kib(daemon.pid)
    if None in (loaded, first, end, daemon_loaded, daemon_first, daemon_end):
        progress("a process vanished before its memory was read")
        return 1
    assert loaded and first and end and daemon_loaded and daemon_first and daemon_end
    n = batches * BATCH
    header = ["process", "loaded (0 requests)", f"after {BATCH}", f"after {n:,}", f"growth from {BATCH}",
              "growth from 0", "target"]
    rows = [
        ["warm worker (`--runner entry`, reference model)", mib(loaded), mib(first), mib(end),
         f"{growth(first, end):+.1f} %", f"{growth(loaded, end):+.1f} %",
         f"< {TARGET_GROWTH:g} %: {verdict(growth(first, end) < TARGET_GROWTH)}"],
        ["daemon", mib(daemon_loaded), mib(daemon_first), mib(daemon_end),
         f"{growth(daemon_first, daemon_end):+.1f} %", f"{growth(daemon_loaded, daemon_end):+.1f} %", "-"],
    ]
    def mib_list(values: list[int | None]) -> str:
        return ", ".join("-" if v is None else f"{v / 1024:.1f}" for v in values)

    print(markdown_table(header, rows, right={1, 2, 3, 4, 5}))
    print()
    step = TRACE_BATCHES * BATCH
    print(f"MiB after {BATCH}, then every {step:,} requests: worker {mib_list([w for w, _ in trace])}; "
          f"daemon {mib_list([d for _, d in trace])}.")
    print()
    print(
        f"VmRSS of one warm worker (never replaced: same pid throughout) and of the daemon; {n:,} requests in "
        f"batches of {BATCH} ({(n - BATCH) / seconds:.0f} requests/s after the first batch). {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after, "
        f"Python {sys.version.split()[0]}, {time.monotonic() - t_start:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

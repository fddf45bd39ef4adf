"""Shared mode's drain rate: 1,000 requests with 1, 2 and 3 shared watchers on one directory, and what a claim costs.

Why: shared mode is how the watcher scales out (``compose --scale``, more pods), so the
question is how the drain rate grows with watchers on one volume, and what the claims
(and the polling shared mode implies) cost a request compared with the lone watcher.

What one run measures, on throw-away temp directories, every watcher with warm workers
(``--runner entry``) and ``--workers 1``, for each model time (``--model-ms``, default 0
and 20): 0 is the embedded reference model (about 1 ms a request), where the watchers'
own CPU is the limit; more is the same model sleeping that long first
(``bench/slow_reference.py``), as a slower model on machines of its own would, where
the model is the limit and more watchers drain faster:

1. The setups, in turns: the lone watcher with native events (the default) and polling
   (the same observer as shared mode, so the pair isolates what the claims cost), then 1,
   2 and 3 shared watchers (``--shared``, each its own ``--watcher-id``). Polling is every
   ``POLL`` s in every polling row. The watchers are started and left to say they are
   ready.
2. N keyed requests (default 1,000) with distinct contents are dropped as fast as this
   process can publish them. The clock runs from the first drop until the watchers have
   logged ``request.done`` ``ok`` for every request (their logs read as they are written,
   every 20 ms); then every status is checked to be ``ok`` for its own input's sha256,
   and the runs are counted (``request.done`` ``ok`` lines, all watchers: N when every
   request ran once).
3. CPU: the user + system time of the watchers' own processes (not their models') over
   the drain, per request, summed over the watchers. The claim overhead per request is
   the shared single watcher's less the lone polling watcher's, in CPU and in wall time.

Run: ``.venv/bin/python bench/shared_drain.py [--requests N] [--repeat R] [--scratch DIR]``; about a
minute per repeat with the default on a 2-core machine. Every daemon is stopped with
SIGTERM and every temp directory removed, even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _harness import (
    CLK_TCK,
    NAMES,
    DaemonUnderTest,
    LogTail,
    Processes,
    cleaned_up,
    cpu_ticks,
    drop,
    file_system,
    make_route,
    markdown_table,
    progress,
    scored_ok,
    sha256,
    statuses_not_ok,
    stop_on_sigterm,
    wait_drained,
)

SLOW_MODEL = Path(__file__).resolve().parent / "slow_reference.py"
POLL = 0.2
"""Seconds between polls in every polling row (the default, 1 s, would only delay the start of a drain)."""
SETUPS: tuple[tuple[str, int, list[str]], ...] = (
    ("lone, native", 1, ["--observer", "native"]),
    ("lone, polling", 1, ["--observer", "polling", "--poll-interval", str(POLL)]),
    ("shared", 1, []),
    ("shared", 2, []),
    ("shared", 3, []),
)


@dataclass
class Drain:
    model_ms: int
    setup: str
    watchers: int
    n: int
    seconds: float
    cpu_s: float
    runs: int
    notes: list[str]

    @property
    def rate(self) -> float:
        return self.n / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s * 1000 / self.n

    @property
    def wall_ms(self) -> float:
        return self.seconds * 1000 / self.n

    def cells(self) -> list[str]:
        return [str(self.model_ms), self.setup, str(self.watchers), str(self.n), f"{self.seconds:.1f}", f"{self.rate:.0f}",
                f"{self.cpu_ms:.2f}", str(self.runs), "; ".join(self.notes)]


def shared_args(watcher: str) -> list[str]:
    return ["--shared", "--watcher-id", watcher, "--observer", "polling", "--poll-interval", str(POLL)]


def bench_drain(procs: Processes, root: Path, model_ms: int, setup: str, watchers: int, flags: list[str], n: int,
                rng: random.Random) -> Drain:
    watch = Path(tempfile.mkdtemp(prefix=f"{setup.replace(', ', '-')}-{watchers}-", dir=root))
    model = ["--model-entry", f"{SLOW_MODEL}:create"] if model_ms else []
    os.environ["BENCH_MODEL_MS"] = str(model_ms)  # the daemons and their workers inherit it
    daemons = []
    for i in range(watchers):
        args = [*flags, *shared_args(f"w{i}")] if setup == "shared" else flags
        daemons.append(DaemonUnderTest(procs, watch, ["--runner", "entry", "--workers", "1", *model, *args],
                                       name=f"w{i}"))
    progress(f"model {model_ms} ms, {setup}, {watchers} watcher(s): starting")
    for daemon in daemons:
        daemon.start(timeout=120.0)
    datas = {f"d{i:05d}": make_route(i, rng) for i in range(n)}
    shas = {sha256(data) for data in datas.values()}
    tails = [LogTail(d.log_path) for d in daemons]
    for tail in tails:
        tail.records()  # start-up lines

    def alive() -> None:
        for d in daemons:
            d.alive()

    try:
        ticks0 = [cpu_ticks(d.pid) or 0 for d in daemons]
        t0 = time.perf_counter()
        for key, data in datas.items():
            drop(watch, data, NAMES.input(key))
        runs = wait_drained(tails, shas, alive, f"{setup} x{watchers}")
        seconds = time.perf_counter() - t0
        ticks = sum((cpu_ticks(d.pid) or 0) - t for d, t in zip(daemons, ticks0, strict=True))
        time.sleep(1.0)  # a late duplicate run would log by now
        runs += sum(len(scored_ok(tail, shas)) for tail in tails)
    finally:
        codes = [d.stop() for d in daemons]
    wrong = statuses_not_ok(watch, datas)
    notes = []
    if wrong:
        notes.append(f"{len(wrong)} statuses not ok for their input (e.g. {wrong[0]})")
    if any(rc not in (0, None) for rc in codes):
        notes.append(f"exit codes {codes} on SIGTERM")
    return Drain(model_ms, setup, watchers, n, seconds, ticks / CLK_TCK, runs, notes)


def medians(drains: list[Drain], model_ms: int, setup: str, watchers: int) -> tuple[float, float, float] | None:
    """The medians of (requests/s, CPU ms/request, wall ms/request) over the repeats of one setup."""
    rows = [d for d in drains if (d.model_ms, d.setup, d.watchers) == (model_ms, setup, watchers)]
    if not rows:
        return None
    return (statistics.median(d.rate for d in rows), statistics.median(d.cpu_ms for d in rows),
            statistics.median(d.wall_ms for d in rows))


def summary(drains: list[Drain]) -> list[str]:
    lines = []
    for model_ms in sorted({d.model_ms for d in drains}):
        lone = medians(drains, model_ms, "lone, polling", 1)
        one = medians(drains, model_ms, "shared", 1)
        if lone and one:
            lines.append(f"- Model {model_ms} ms, claim overhead per request (shared x1 less lone polling x1, "
                         f"medians): {one[1] - lone[1]:+.2f} ms of the watcher's CPU ({one[1]:.2f} against "
                         f"{lone[1]:.2f}), {one[2] - lone[2]:+.2f} ms of wall time.")
        for watchers in (2, 3):
            more = medians(drains, model_ms, "shared", watchers)
            if one and more:
                lines.append(f"- Model {model_ms} ms: {watchers} shared watchers drain {more[0] / one[0]:.2f}x as "
                             f"fast as one (medians).")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="keyed requests dropped at once (default 1000)")
    parser.add_argument("--repeat", type=int, default=1, help="drain each setup this many times, in turns (default 1)")
    parser.add_argument("--model-ms", default="0,20",
                        help="model times in ms, comma-separated: 0 the reference model, more the same model "
                             "sleeping that long first (default 0,20)")
    parser.add_argument("--scratch", default=None, help="the directory to drain in (default: the temp dir)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    stop_on_sigterm()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="modelgen-bench-shared-", dir=args.scratch))
    procs = Processes()
    drains: list[Drain] = []
    t_start, load_before = time.monotonic(), os.getloadavg()[0]
    with cleaned_up(procs, root):
        for model_ms in [int(m) for m in args.model_ms.split(",") if m]:
            for _ in range(args.repeat):
                for setup, watchers, flags in SETUPS:
                    if model_ms and setup == "lone, native":
                        continue  # the pair that tells the claims' cost is the polling one
                    drains.append(bench_drain(procs, root, model_ms, setup, watchers, flags, args.requests, rng))
    header = ["model ms", "setup", "watchers", "requests", "seconds", "requests/s", "watchers' CPU ms/request", "runs", "notes"]
    print(markdown_table(header, [d.cells() for d in drains], right={0, 2, 3, 4, 5, 6, 7}))
    print()
    print(
        f"From the first drop until the watchers logged `ok` for every request; warm workers (`--runner entry`, "
        f"the reference model, sleeping first for the model time), `--workers 1` each, polling every {POLL:g} s but in the native row; runs are "
        f"`request.done ok` lines of all watchers; on {file_system(root)}. {os.cpu_count()} CPUs, load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after, Python {sys.version.split()[0]}, {time.monotonic() - t_start:.0f} s."
    )
    print()
    print("\n".join(summary(drains)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

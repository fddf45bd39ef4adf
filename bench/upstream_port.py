"""By hand, not in CI: upstream's real model.py (a port to current packages) through the daemon, runner by runner.

Upstream's model cannot run in CI (its 2018 stack needs Python 3.7, and the project
must not depend on a copy of it), so this script measures a local port of it, made by
the recipe in the shared real-model notes (``make_port.sh``, a venv with its
requirements, ``routegen.py`` routes). What one run does, on throw-away directories:

1. **A warm pickle.** Upstream trains its tree on an unseeded random split when its
   workspace has no ``human_read_dectree.pkl``, so two cold runs score differently.
   One model run makes the pickle; every daemon's workspace is seeded with it, so
   every runner scores with the same tree and their results can be compared.
2. **One daemon per runner**, all started before the first request (``--runner
   subprocess``; ``entry`` with ``--model-entry cyclesafe``; ``fork`` preloading what
   the script imports (``--preload auto``, the default), and ``fork-listed`` the
   modules ``--preload`` names), each on its own watch dir, with
   upstream's command line (CONTRACT section 6) and ``--model-cwd`` at the port. The
   start-up time (to the heartbeat's ``ready``) is recorded.
3. **Drop to ``ok``**: N routes, each dropped once per daemon, interleaved (route 1 to
   each daemon in turn, then route 2, ...), one request in flight at a time, so load
   drifts hit every runner alike. Latency is from the ``os.replace`` of the input to a
   status saying ``ok`` for its sha256 (``bench/latency.py``'s measure).
4. **Memory**: a sampler reads the RSS of each daemon and of every process under it
   every 20 ms: the peak of the whole tree, and the largest single model process; and
   the tree's RSS once each request is done (warm workers stay, processes are gone),
   after the first request and after the last.
5. **Scores**: each runner's ``routes`` and ``totalScores`` for every route, compared
   with the ``subprocess`` runner's.

Run (about 2 minutes with N=20 on 2 cores):
``.venv/bin/python bench/upstream_port.py --port /tmp/cs-port --python /tmp/cs-venv/bin/python3
--routes /tmp/cs-routes [--requests N] [--runners subprocess,entry,fork,fork-listed] [--preload ...]``.
Not part of ``make bench``: the port is not available there.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    RESULT_NAME,
    STATUS_NAME,
    BenchError,
    DaemonUnderTest,
    Processes,
    descendants,
    drop,
    markdown_table,
    p95,
    progress,
    read_json,
    rss_kib,
    sha256,
    wait_status_ok,
)

from modelgen_watcher.volume.names import STATE_DIR, WORKSPACE_DIR

UPSTREAM_ARGS = ("./modelmanager/model.py --workspace={workspace} --routefile={input} "
                 "--dumpresponse={output_name} --datafile=./data/txdot_cris_20170427.csv")
PICKLE = "human_read_dectree.pkl"
SAMPLE_S = 0.02
REQUEST_TIMEOUT = 60.0


def runner_args(runner: str, args: argparse.Namespace) -> list[str]:
    """The daemon's flags for a runner: ``entry`` is the adapter; ``fork`` preloads what the script imports
    (``--preload auto``, the default); ``fork-listed`` preloads the modules ``--preload`` names."""
    if runner == "entry":
        return ["--runner", "entry", "--model-entry", "cyclesafe"]
    if runner == "fork":
        return ["--runner", "fork"]
    if runner == "fork-listed":
        return ["--runner", "fork", "--preload", args.preload]
    return ["--runner", runner]


def has_runner(runner: str) -> bool:
    """Whether this watcher offers ``runner`` (``fork`` arrives later than the others)."""
    out = subprocess.run([sys.executable, "-m", "modelgen_watcher", "run", "--help"],
                         capture_output=True, text=True, check=True).stdout
    return runner.partition("-")[0] in out


# -- memory ----------------------------------------------------------------------


def tree_rss_kib(daemon: DaemonUnderTest) -> int:
    """RSS of the daemon and every process under it, now."""
    assert daemon.proc is not None
    return sum(rss_kib(pid) or 0 for pid in [daemon.proc.pid, *descendants(daemon.proc.pid)])


class TreeSampler(threading.Thread):
    """Samples a daemon's RSS and its descendants' every SAMPLE_S: peak of the tree, largest single model process."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name=f"rss-{pid}")
        self.pid = pid
        self.peak_tree_kib = 0
        self.peak_model_kib = 0
        self.peak_daemon_kib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_S):
            daemon = rss_kib(self.pid) or 0
            models = [rss_kib(pid) or 0 for pid in descendants(self.pid)]
            self.peak_daemon_kib = max(self.peak_daemon_kib, daemon)
            self.peak_model_kib = max([self.peak_model_kib, *models])
            self.peak_tree_kib = max(self.peak_tree_kib, daemon + sum(models))

    def stop(self) -> None:
        self._halt.set()
        self.join()


# -- one runner ------------------------------------------------------------------


@dataclass
class Setup:
    runner: str
    daemon: DaemonUnderTest
    start_s: float = 0.0
    samples: list[float] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    sampler: TreeSampler | None = None
    settled_kib: list[int] = field(default_factory=list)
    """RSS of the daemon and what runs under it once each request is done (warm workers stay; processes go)."""


def seed_pickle(root: Path, python: str, port: Path, route: Path) -> Path:
    """One cold model run, as upstream runs: its pickle is the tree every daemon then scores with."""
    work = root / "seed"
    work.mkdir()
    cmd = [python, *shlex.split(UPSTREAM_ARGS.format(workspace=work, input=route, output_name="out.json"))]
    done = subprocess.run(cmd, cwd=port, capture_output=True, text=True)
    if done.returncode != 0 or not (work / PICKLE).is_file():
        raise BenchError(f"the seeding run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return work / PICKLE


def start(procs: Processes, root: Path, runner: str, args: argparse.Namespace, pickle: Path) -> Setup:
    watch = root / runner
    workspace = watch / STATE_DIR / WORKSPACE_DIR
    workspace.mkdir(parents=True, mode=0o700)
    shutil.copy2(pickle, workspace / PICKLE)
    cmd = f"{shlex.quote(args.python)} {UPSTREAM_ARGS}"
    daemon = DaemonUnderTest(procs, watch, [
        "--observer", "native", "--model-cwd", str(args.port), "--model-cmd", cmd,
        "--model-timeout", str(REQUEST_TIMEOUT), *runner_args(runner, args),
    ])
    t0 = time.perf_counter()
    daemon.start(timeout=120.0)
    setup = Setup(runner, daemon, start_s=time.perf_counter() - t0)
    assert daemon.proc is not None
    setup.sampler = TreeSampler(daemon.proc.pid)
    setup.sampler.start()
    progress(f"{runner}: ready in {setup.start_s:.1f} s")
    return setup


def request(setup: Setup, data: bytes) -> None:
    watch = setup.daemon.watch_dir
    t0 = drop(watch, data)
    ms = wait_status_ok(watch / STATUS_NAME, sha256(data), t0, timeout=REQUEST_TIMEOUT)
    if ms is None:
        setup.daemon.alive()
        raise BenchError(f"{setup.runner}: no result within {REQUEST_TIMEOUT:g} s:\n{setup.daemon.log_tail()}")
    doc = read_json(watch / RESULT_NAME)
    if not isinstance(doc, dict) or doc.get("meta", {}).get("input_sha256") != sha256(data):
        raise BenchError(f"{setup.runner}: the result does not name the input just scored")
    setup.samples.append(ms)
    setup.settled_kib.append(tree_rss_kib(setup.daemon))
    setup.results.append({"routes": doc["routes"], "totalScores": doc["totalScores"]})


# -- table -----------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def table(setups: list[Setup], n: int) -> str:
    base = statistics.median(setups[0].samples)
    header = ["runner", "start to ready s", "median ms", "p95 ms", "max ms", "x faster than subprocess",
              "peak RSS daemon + model MiB", "largest model process MiB",
              "daemon + workers after 1st / last request MiB", "scores equal subprocess's"]
    body = []
    for s in setups:
        assert s.sampler is not None
        med = statistics.median(s.samples)
        same = sum(a == b for a, b in zip(s.results, setups[0].results, strict=True))
        body.append([s.runner, f"{s.start_s:.1f}", f"{med:.0f}", f"{p95(s.samples):.0f}", f"{max(s.samples):.0f}",
                     f"{base / med:.1f}", mib(s.sampler.peak_tree_kib), mib(s.sampler.peak_model_kib),
                     f"{mib(s.settled_kib[0])} / {mib(s.settled_kib[-1])}", f"{same}/{n} routes"])
    return markdown_table(header, body, right=set(range(1, 9)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=Path, required=True, help="the ported modelgen checkout (--model-cwd)")
    parser.add_argument("--python", default="python3", help="the model's interpreter, with its packages")
    parser.add_argument("--routes", type=Path, required=True, help="a directory of route JSON files")
    parser.add_argument("--requests", type=int, default=20, help="requests per runner (default 20)")
    parser.add_argument("--runners", default="subprocess,entry,fork,fork-listed",
                        help="runners to measure, the first the reference: subprocess, entry (the cyclesafe adapter), "
                        "fork (--preload auto), fork-listed (--preload as given); default all four")
    parser.add_argument("--preload", default="pandas,sklearn,matplotlib,seaborn,scipy",
                        help="the fork-listed row's modules (default pandas,sklearn,matplotlib,seaborn,scipy)")
    args = parser.parse_args(argv)
    args.port = args.port.resolve()
    routes = sorted(args.routes.glob("*.json"))
    if not routes:
        parser.error(f"no *.json routes in {args.routes}")
    runners = [r for r in args.runners.split(",") if r]
    for r in [r for r in runners if not has_runner(r)]:
        progress(f"this watcher has no `{r}` runner: skipped")
        runners.remove(r)

    load_before = os.getloadavg()[0]
    procs = Processes()
    setups: list[Setup] = []
    try:
        with tempfile.TemporaryDirectory(prefix="upstream-port-bench-") as tmp:
            root = Path(tmp)
            pickle = seed_pickle(root, args.python, args.port, routes[0])
            setups = [start(procs, root, r, args, pickle) for r in runners]
            for i in range(args.requests):
                data = routes[i % len(routes)].read_bytes()
                for s in setups:
                    request(s, data)
                progress(f"route {i + 1}/{args.requests}: " + ", ".join(f"{s.runner} {s.samples[-1]:.0f} ms"
                                                                      for s in setups))
            for s in setups:
                assert s.sampler is not None
                s.sampler.stop()
                s.daemon.alive()
                s.daemon.stop()
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]} (watcher), model interpreter {args.python}, "
          f"n={args.requests} requests per runner, interleaved, one at a time; 1-minute load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a shared machine)\n")
    print(table(setups, args.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())

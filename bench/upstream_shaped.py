"""An upstream-shaped model through the real daemon: a process per request, a fork server, warm workers.

What one run measures, on throw-away temp directories, and prints as markdown tables:

1. **Drop to ``ok``** with ``bench/standin/model.py`` (upstream's shape: pandas,
   scikit-learn and matplotlib imported at the top, a generated crash CSV of the real
   one's size prepared per run, a pickled decision tree loaded and rewritten per run,
   upstream's flags and double-encoded output), run by ``modelgen-watcher run`` three
   ways with one ``--model-cmd`` whose interpreter is the bench venv's python:

   - ``--runner subprocess``: a fresh process per request, as every other watcher runs
     a model;
   - ``--runner fork --preload pandas,sklearn,matplotlib``: a fork server imports those
     once and forks a child per request that runs the unchanged script; and again with
     the default, ``--preload auto``: what the script imports at its top level (skipped,
     and said so, where this checkout's watcher has no fork runner);
   - ``--runner entry --model-entry bench/standin/model.py:create``: a warm worker
     prepares once and scores each request with the same function the script uses.

   The daemons run side by side and the requests are interleaved: each round drops the
   same new route into every setup, one after the other, the order rotated every round,
   so drifts in the machine's load hit every setup alike. Latency is from the input's
   ``os.replace`` until its status says ``ok`` for that sha256 (``_harness``). Each
   setup's first request is a warm-up and not counted.
2. **Same output**: every setup's workspace is seeded with one pickled tree (trained
   once by a cold run of the script), so each scores with the same tree; each round's
   result, ``meta`` aside, must be byte-identical to the subprocess one (the target for
   fork; entry is checked too).
3. **Where a run's time goes**: the stand-in's own phases (imports, preparing the CSV,
   scoring), timed in fresh processes (``bench/standin/phases.py``), which is what
   each runner saves.

The stand-in needs its own venv (``.venv-bench``, ``make bench-venv``, from
``bench/standin/requirements.txt``); the watcher runs from the project's venv.

Run: ``.venv/bin/python bench/upstream_shaped.py [--requests N]`` (default 30; about
two minutes on a 2-core machine, most of it the subprocess rows).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    RESULT_NAME,
    STATUS_NAME,
    STATUS_POLL,
    BenchError,
    DaemonUnderTest,
    Processes,
    cleaned_up,
    descendants,
    drop,
    make_route,
    markdown_table,
    mib,
    p95,
    peak_rss_kib,
    progress,
    read_json,
    rss_kib,
    sha256,
    wait_status_ok,
)

from modelgen_watcher.volume.names import STATE_DIR, WORKSPACE_DIR

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "bench" / "standin"
MODEL = STANDIN / "model.py"
PHASES = STANDIN / "phases.py"
MAKE_DATA = STANDIN / "make_data.py"
DEFAULT_BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PICKLE = "human_read_dectree.pkl"
"""The stand-in's cache, as upstream names it: seeded into every setup's workspace."""
DEFAULT_PRELOADS = ["pandas,sklearn,matplotlib", "auto"]
"""The issue's list (top-level packages), and the default, ``auto``: the modules the script imports at its top
level, submodules included (``sklearn`` alone leaves ``sklearn.tree`` for each child to import)."""
REQUEST_TIMEOUT = 120.0
"""A process per request takes seconds here; a loaded 2-core machine can make it many."""
START_TIMEOUT = 180.0
FORK_TARGET, ENTRY_TARGET = 3.0, 40.0
"""Median speed-up over subprocess each runner must reach (issue 9); fork's is judged on the issue's preload list."""


@dataclass
class Setup:
    """One way of running the model: its daemon's flags, and what it measured."""

    name: str
    label: str
    args: list[str]
    target: float | None = None
    daemon: DaemonUnderTest | None = None
    samples: list[float] = field(default_factory=list)
    outputs: dict[str, bytes] = field(default_factory=dict)
    """input sha256 -> the result without ``meta``, canonical JSON."""
    timeouts: int = 0
    model_side: str = ""

    @property
    def watch(self) -> Path:
        assert self.daemon is not None
        return self.daemon.watch_dir


def fork_runner_available() -> bool:
    """Whether this checkout's watcher offers ``--runner fork`` (checkouts before it landed have none)."""
    done = subprocess.run([sys.executable, "-m", "modelgen_watcher", "run", "--help"],
                          capture_output=True, text=True, check=False)
    return re.search(r"\bfork\b", done.stdout) is not None and "--preload" in done.stdout


def check_bench_python(python: Path) -> str:
    """The bench venv's Python and package versions; BenchError saying how to make it when missing or incomplete."""
    probe = "import sys, pandas, sklearn, matplotlib; print(sys.version.split()[0], pandas.__version__, " \
            "sklearn.__version__, matplotlib.__version__)"
    try:
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BenchError(f"no bench venv at {python} ({exc}); make it with `make bench-venv`") from exc
    if done.returncode:
        raise BenchError(f"{python} lacks the stand-in's packages; `make bench-venv`:\n{done.stderr[-2000:]}")
    version, pandas, sklearn, matplotlib = done.stdout.split()
    return f"Python {version}, pandas {pandas}, scikit-learn {sklearn}, matplotlib {matplotlib}"


def model_cmd(python: Path, datafile: Path) -> str:
    """Upstream's command line (CONTRACT section 6's flags) with the bench venv's interpreter and the generated CSV."""
    return (f"{shlex.quote(str(python))} {shlex.quote(str(MODEL))} --workspace={{workspace}} "
            f"--routefile={{input}} --dumpresponse={{output_name}} --datafile={shlex.quote(str(datafile))}")


def make_datafile(root: Path) -> Path:
    """The generated crash CSV (``bench/standin/make_data.py``, deterministic), where every setup reads it."""
    path = root / "data" / "txdot_standin.csv"
    done = subprocess.run([sys.executable, str(MAKE_DATA), str(path)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise BenchError(f"bench/standin/make_data.py failed:\n{done.stderr[-3000:]}")
    return path


def train_once(python: Path, root: Path, datafile: Path) -> tuple[Path, float]:
    """A cold run of the script (no pickle: it trains on a random split); its pickle and its wall time."""
    work = root / "seed"
    work.mkdir()
    (work / "route.json").write_bytes(make_route(0, random.Random(0)))
    t0 = time.perf_counter()
    done = subprocess.run([str(python), str(MODEL), f"--workspace={work}", f"--routefile={work / 'route.json'}",
                           "--dumpresponse=out.json", f"--datafile={datafile}"], capture_output=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode or not (work / PICKLE).is_file():
        raise BenchError(f"the stand-in's cold run failed ({done.returncode}):\n"
                         f"{done.stderr.decode(errors='replace')[-3000:]}")
    return work / PICKLE, seconds


def phases(python: Path, root: Path, datafile: Path, pickle: Path, runs: int) -> dict[str, float]:
    """Median seconds of each phase of a run over ``runs`` fresh processes (the tree loaded, as in the daemons)."""
    work = root / "phases"
    work.mkdir()
    shutil.copy2(pickle, work / PICKLE)
    route = work / "route.json"
    route.write_bytes(make_route(1, random.Random(1)))
    seen: dict[str, list[float]] = {}
    for _ in range(runs):
        done = subprocess.run([str(python), str(PHASES), str(datafile), str(route), str(work)],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise BenchError(f"bench/standin/phases.py failed:\n{done.stderr[-3000:]}")
        for name, seconds in json.loads(done.stdout).items():
            seen.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in seen.items()}


def start(procs: Processes, root: Path, setup: Setup, pickle: Path) -> None:
    """The setup's daemon on a fresh watch dir whose workspace already holds the tree."""
    watch = root / setup.name
    workspace = watch / STATE_DIR / WORKSPACE_DIR
    workspace.mkdir(parents=True, mode=0o700)
    shutil.copy2(pickle, workspace / PICKLE)
    setup.daemon = DaemonUnderTest(procs, watch, setup.args)
    progress(f"{setup.name}: starting `run {' '.join(setup.args)}`")
    t0 = time.perf_counter()
    setup.daemon.start(timeout=START_TIMEOUT)
    progress(f"{setup.name}: ready in {time.perf_counter() - t0:.1f} s")


def scored_content(watch: Path, sha: str) -> bytes:
    """The published result for ``sha`` without its ``meta`` (timings, names), as canonical JSON bytes."""
    doc = read_json(watch / RESULT_NAME)
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict) or doc["meta"].get("input_sha256") != sha:
        raise BenchError(f"{watch / RESULT_NAME} is not the result of {sha[:12]} although its status says ok")
    return json.dumps({k: v for k, v in doc.items() if k != "meta"}, sort_keys=True).encode()


def request(setup: Setup, data: bytes, sha: str, counted: bool) -> None:
    assert setup.daemon is not None
    t0 = drop(setup.watch, data)
    ms = wait_status_ok(setup.watch / STATUS_NAME, sha, t0, timeout=REQUEST_TIMEOUT)
    if ms is None:
        setup.daemon.alive()
        setup.timeouts += 1
        return
    setup.outputs[sha] = scored_content(setup.watch, sha)
    if counted:
        setup.samples.append(ms)


def model_side(setup: Setup) -> str:
    """The processes the daemon keeps between requests (warm worker, fork server) and their resident memory."""
    assert setup.daemon is not None and setup.daemon.proc is not None
    pids = descendants(setup.daemon.proc.pid)
    sizes = [kib for kib in map(rss_kib, pids) if kib is not None]
    if not sizes:
        return "no model process between requests"
    return f"{len(sizes)} model process{'es' if len(sizes) > 1 else ''} between requests, RSS {mib(sum(sizes))}"


def render(setups: list[Setup], base: Setup) -> str:
    base_median = statistics.median(base.samples) if base.samples else None
    body = []
    for s in setups:
        if not s.samples:
            body.append([s.label, "-", "-", "-", "-", "; ".join(filter(None, [s.model_side, "no samples"]))])
            continue
        median = statistics.median(s.samples)
        ratio = base_median / median if base_median else None
        notes = [f"n={len(s.samples)}"]
        if s is not base:
            same = sum(1 for sha, out in s.outputs.items() if base.outputs.get(sha) == out)
            common = sum(1 for sha in s.outputs if sha in base.outputs)
            notes.append(f"output identical to subprocess: {same}/{common}")
            if s.target is not None and ratio is not None:
                notes.append(f"target >= {s.target:g}x: {'met' if ratio >= s.target else 'MISSED'}")
        if s.timeouts:
            notes.append(f"{s.timeouts} request(s) timed out after {REQUEST_TIMEOUT:g} s")
        notes.append(s.model_side)
        body.append([
            s.label, f"{median:.0f}", f"{p95(s.samples):.0f}", f"{max(s.samples):.0f}",
            "1x" if s is base else (f"{ratio:.1f}x lower" if ratio is not None else "-"), "; ".join(notes),
        ])
    return markdown_table(["setup", "median ms", "p95 ms", "max ms", "median vs subprocess", "notes"], body,
                          {1, 2, 3, 4})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="counted requests per setup (default 30)")
    parser.add_argument("--bench-python", type=Path, default=DEFAULT_BENCH_PYTHON,
                        help="the stand-in's interpreter, with pandas, scikit-learn and matplotlib "
                             "(default .venv-bench/bin/python, made by `make bench-venv`)")
    parser.add_argument("--preload", action="append",
                        help="a fork setup's --preload; repeat for several setups (default: "
                             + " and ".join(DEFAULT_PRELOADS) + ")")
    parser.add_argument("--runners", default="subprocess,fork,entry",
                        help="which setups to run, comma-separated (subprocess is always run: it is the baseline)")
    parser.add_argument("--phase-runs", type=int, default=3, help="fresh processes timing the phases (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the routes (default 1)")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    wanted = {"subprocess", *args.runners.split(",")}
    rng = random.Random(args.seed)

    def _terminate(signum: int, _frame: object) -> None:  # SIGTERM (make, CI) runs the finally like Ctrl-C
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    python = args.bench_python.absolute()  # not resolved: a venv's python is a symlink to the base interpreter
    root = Path(tempfile.mkdtemp(prefix="modelgen-upstream-shaped-"))
    procs = Processes()
    notes: list[str] = []
    t_start = time.monotonic()
    load_start = os.getloadavg()[0]
    with cleaned_up(procs, root):
        versions = check_bench_python(python)
        datafile = make_datafile(root)
        progress(f"bench venv: {versions}; training the tree once (a cold run)")
        pickle, cold = train_once(python, root, datafile)
        progress(f"cold run {cold:.1f} s; timing the phases ({args.phase_runs} fresh processes)")
        phase = phases(python, root, datafile, pickle, args.phase_runs) if args.phase_runs > 0 else {}

        cmd = model_cmd(python, datafile)
        common = ["--observer", "native", "--debounce", "50", "--model-timeout", f"{REQUEST_TIMEOUT:g}",
                  "--model-cwd", str(root), "--model-cmd", cmd]
        setups = [Setup("subprocess", "`--runner subprocess`: a process per request",
                        ["--runner", "subprocess", *common])]
        if "fork" in wanted:
            if fork_runner_available():
                for n, preload in enumerate(args.preload or DEFAULT_PRELOADS):
                    setups.append(Setup(f"fork{n}", f"`--runner fork --preload {preload}`: a forked child per request",
                                        ["--runner", "fork", "--preload", preload, *common],
                                        target=FORK_TARGET if n == 0 else None))
            else:
                notes.append("fork: not measured, this checkout's watcher has no `--runner fork` yet")
        if "entry" in wanted:
            setups.append(Setup("entry", "`--runner entry --model-entry model.py:create`: a warm worker",
                                ["--runner", "entry", "--model-entry", f"{MODEL}:create", *common],
                                target=ENTRY_TARGET))
        for s in setups:
            start(procs, root, s, pickle)

        for i in range(args.requests + 1):  # round 0 warms every setup up and is not counted
            data = make_route(i, rng)
            sha = sha256(data)
            k = i % len(setups)
            for s in setups[k:] + setups[:k]:
                request(s, data, sha, counted=i > 0)
            if i % 10 == 0:
                progress(f"round {i}/{args.requests}")
        for s in setups:
            s.model_side = model_side(s)
            assert s.daemon is not None and s.daemon.proc is not None
            s.model_side += f"; daemon peak RSS {mib(peak_rss_kib(s.daemon.proc.pid))}"
        for s in setups:
            assert s.daemon is not None
            rc = s.daemon.stop()
            if rc not in (0, None):
                s.model_side += f"; exit code {rc} on SIGTERM"

    print(render(setups, setups[0]))
    print()
    if phase:
        print(f"| phase of one stand-in run (median of {args.phase_runs} fresh processes) | ms |")
        print("| --- | ---: |")
        for name, what in (("imports", "importing pandas, scikit-learn, matplotlib (Agg)"),
                           ("prepare", "reading and preparing the crash CSV (2,232 rows, 25 columns)"),
                           ("score", "loading the tree, scoring one route, rewriting pickle and output")):
            print(f"| {what} | {phase[name] * 1000:.0f} |")
        print()
    print(
        f"Drop to `ok` = os.replace of the input until its status names its sha256 as ok, polled every "
        f"{STATUS_POLL * 1000:.0f} ms; {args.requests} counted rounds, each dropping one new route into every "
        f"setup in turn (order rotated per round), after one warm-up round; p95 interpolated. Every workspace was "
        f"seeded with one tree (a cold run trained it in {cold:.1f} s); output compared = the published result "
        f"without `meta`, every round (warm-up included). Stand-in on {versions}. "
        + "".join(f"{n}. " for n in notes)
        + f"{os.cpu_count()} CPUs, load average {load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
        f"(1 min), {time.monotonic() - t_start:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-request wall time of the model runner: the thread-per-pipe runner it replaced against the contained one.

For a trivial model (``/bin/true``, and ``python -c pass``, which is closer to a real
model's start), every runner runs the model N times, interleaved (old, new, new started,
old, new, …) so drifts in machine load hit every row alike. Rows:

- **old**: ``modelgen_watcher/runners/subprocess.py`` at ``--old-rev`` (default
  b57ec54, the last version with a drain thread per pipe), imported from a temp copy.
- **new**: today's runner as the one-shot ``score`` command uses it (no ``start()``):
  selector loop in the calling thread, pidfd for the exit, pipes closed after the run.
- **new, started**: today's runner as the daemon uses it, after ``start()``: the same
  plus a subreaper, a run record written and removed per run, and a sweep of /proc for
  escaped descendants after each run. The benchmark process becomes a subreaper.

Why: the containment work must cost no latency; this puts a number on it.

Run: ``.venv/bin/python bench/runner_overhead.py [--runs N] [--old-rev REV]`` (about 10 s).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from modelgen_watcher.runners import ModelJob
from modelgen_watcher.runners.subprocess import SubprocessRunner

ROOT = Path(__file__).resolve().parent.parent


def load_old_runner(rev: str, tmp: Path) -> ModuleType:
    """The runner module as it was at ``rev``, imported as a sibling of today's so its relative imports resolve."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:modelgen_watcher/runners/subprocess.py"],
                            check=True, capture_output=True, text=True).stdout
    path = tmp / "old_subprocess.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("modelgen_watcher.runners._bench_old_subprocess", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="runs of each runner per model (default 50)")
    parser.add_argument("--old-rev", default="b57ec54", help="git revision of the old runner (default b57ec54)")
    args = parser.parse_args(argv)

    models = {"python -c pass": [sys.executable, "-c", "pass"]}
    true = shutil.which("true")
    if true:
        models = {"/bin/true": [true], **models}

    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp_name:
        tmp = Path(tmp_name)
        old = load_old_runner(args.old_rev, tmp)
        ws = tmp / "ws"
        ws.mkdir()
        job = ModelJob(tmp / "in.json", ws / "out.json", ws, "bench", 30.0)
        rows: list[tuple[str, str, list[float]]] = []
        for label, argv_ in models.items():
            started = SubprocessRunner(argv_)
            started.start(tmp / f"run-{len(rows)}")
            runners: dict[str, Callable[[ModelJob], object]] = {
                f"old ({args.old_rev})": old.SubprocessRunner(argv_).run,
                "new": SubprocessRunner(argv_).run,
                "new, started (as the daemon)": started.run,
            }
            samples: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(3):  # warm-up: page cache, imports
                for run in runners.values():
                    run(job)
            for _ in range(args.runs):
                for name, run in runners.items():
                    t0 = time.perf_counter()
                    report = run(job)
                    samples[name].append((time.perf_counter() - t0) * 1000)
                    assert getattr(report, "exit_code", None) == 0, (name, report)
            rows += [(label, name, s) for name, s in samples.items()]

    print(f"| model | runner | median ms | p95 ms | min ms |  ({args.runs} runs each, interleaved)")
    print("| --- | --- | ---: | ---: | ---: |")
    for label, name, s in rows:
        print(f"| {label} | {name} | {statistics.median(s):.2f} | {percentile(s, 0.95):.2f} | {min(s):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

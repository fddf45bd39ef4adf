"""Drop-to-result latency of modelgen-watcher, next to the cost of the model itself and upstream's old loop.

What one run measures, on throw-away temp directories, and prints as one markdown table:

1. **Bare model run**: the embedded reference model as a subprocess
   (``python -m modelgen_watcher.modelside.reference --workspace W --routefile R --dumpresponse out.json``),
   median / p95 / max over N runs. This is the floor: no watcher can answer faster than
   one interpreter start plus the scoring.
2. **Daemon drop-to-result**: a real ``python -m modelgen_watcher run`` daemon with the
   native observer (inotify, debounce 50 ms, the defaults), the polling observer at its
   default 1.0 s, and the polling observer at 0.1 s. Each request is a keyed input
   (``gps_input_route.bench.json``) with distinct content, published the recommended way
   (temp dot-file, then ``os.replace``), one at a time. Latency is the time from the
   ``os.replace`` until ``gps_scored_route.bench.status.json`` says ``ok`` for that
   input's sha256, polled every 5 ms, so each sample is high by up to 5 ms.
   A random pause before each drop samples the polling phase uniformly, so the polling
   rows show the average wait rather than one lucky or unlucky phase.
3. **Upstream baseline**: what upstream used before, a ``run_if_changed.sh``-style bash
   loop that stats the input's ctime with ``stat -c %Z`` (one-second resolution) once a
   second and runs the same model when the value changes. To be measurable it copies the
   input before scoring it and publishes the copy's sha256 when the model is done; that
   adds a few ms of ``cp``/``sha256sum`` over the bare loop. Its latency is measured the
   same way. Drops for this row are kept in different wall-clock seconds, or the loop
   would never see them: that failure is measured separately as the *burst*.
4. **Burst of 10 writes within one second** (for the baseline and every daemon setup):
   a write is *missed* when neither its content nor any later write's content is ever
   scored, i.e. the published result stays older than the file for good. A ctime with
   one-second resolution cannot tell two writes in the same second apart, so the
   baseline misses every write after its one check in that second; the daemon may
   coalesce intermediate writes, but the content present last is always scored, so it
   misses none.
5. **Peak RSS** of each daemon process (``VmHWM`` in ``/proc/PID/status``, read just
   before it is stopped; model subprocesses are not included), and its **idle CPU**
   (user + system time over 5 s with nothing to do).

Why: the daemon's promise is "about one model run plus a few ms after the file lands,
and never a stale result"; this puts numbers on both halves against the bare model and
against the loop it replaces.

Run: ``.venv/bin/python bench/latency.py [--requests N] [--slow-requests M]``. The
default (N=20, M=8 for the 1-second rows) takes about a minute on a 2-core machine.
Every daemon and loop is stopped with SIGTERM and every temp directory removed, even
on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
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
    INPUT_NAME,
    REQUEST_TIMEOUT,
    STATUS_NAME,
    STATUS_POLL,
    BenchError,
    DaemonUnderTest,
    Processes,
    drop,
    make_route,
    markdown_table,
    mib,
    p95,
    peak_rss_kib,
    progress,
    read_json,
    sha256,
    wait_status_ok,
)

BURST_WRITES = 10
BURST_SPACING = 0.085
"""Seconds between the burst's writes: 10 writes from ~0.02 s to ~0.8 s into one second."""

# The baseline: upstream's run_if_changed.sh shape (ctime with 1 s resolution, checked once a
# second), plus a snapshot and a published sha256 so the bench can tell which content was scored.
BASELINE_LOOP = r"""
set -u
input=$1 work=$2 py=$3
last=
while :; do
  cur=$(stat -c %Z -- "$input" 2>/dev/null) || cur=
  if [ -n "$cur" ] && [ "$cur" != "$last" ]; then
    last=$cur
    if cp -- "$input" "$work/snapshot.json"; then
      sum=$(sha256sum -- "$work/snapshot.json") && sum=${sum%% *}
      if "$py" -m modelgen_watcher.modelside.reference --workspace "$work" \
           --routefile "$work/snapshot.json" --dumpresponse out.json; then
        printf '%s\n' "$sum" >> "$work/scored.log"
        printf '%s' "$sum" > "$work/done.tmp" && mv -f -- "$work/done.tmp" "$work/done.sha"
      fi
    fi
  fi
  sleep 1
done
"""


# -- inputs -------------------------------------------------------------------


def wait_marker(marker: Path, sha: str, t0: float, timeout: float = REQUEST_TIMEOUT) -> float | None:
    """Milliseconds from ``t0`` until the baseline's done-marker names ``sha``; None on timeout."""
    deadline = t0 + timeout
    while True:
        try:
            if marker.read_text().strip() == sha:
                return (time.perf_counter() - t0) * 1000.0
        except FileNotFoundError:
            pass
        if time.perf_counter() > deadline:
            return None
        time.sleep(STATUS_POLL)


# -- statistics and table -----------------------------------------------------


@dataclass
class Row:
    setup: str
    samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        if not self.samples:
            return [self.setup, "-", "-", "-", "; ".join(self.notes)]
        return [
            self.setup,
            f"{statistics.median(self.samples):.0f}",
            f"{p95(self.samples):.0f}",
            f"{max(self.samples):.0f}",
            "; ".join(self.notes),
        ]


def render(rows: list[Row]) -> str:
    return markdown_table(["setup", "median ms", "p95 ms", "max ms", "notes"], [r.cells() for r in rows], {1, 2, 3})


# -- processes ----------------------------------------------------------------


IDLE_WINDOW_S = 5.0


def idle_cpu_percent(pid: int, window: float) -> float | None:
    """CPU the idle daemon uses (user + system, % of one core) over ``window`` seconds.

    Polling watchers are known to burn CPU while nothing happens (watchfiles in Docker
    at 75%); this is the number to compare.
    """

    def ticks() -> int | None:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            return None

    before = ticks()
    time.sleep(window)
    after = ticks()
    if before is None or after is None:
        return None
    return 100.0 * (after - before) / os.sysconf("SC_CLK_TCK") / window


# -- burst ----------------------------------------------------------------------


@dataclass
class Burst:
    shas: list[str]
    same_second: bool


def write_burst(directory: Path, rng: random.Random, seq0: int) -> Burst:
    """Ten writes of distinct content inside one wall-clock second (so one ctime second)."""
    now = time.time()
    time.sleep(math.floor(now) + 1.02 - now)  # 20 ms into the next second: never the previous drop's second
    shas, ctimes = [], []
    for i in range(BURST_WRITES):
        data = make_route(seq0 + i, rng)
        drop(directory, data)
        ctimes.append(os.stat(directory / INPUT_NAME).st_ctime_ns // 1_000_000_000)
        shas.append(sha256(data))
        if i < BURST_WRITES - 1:
            time.sleep(BURST_SPACING)
    return Burst(shas, len(set(ctimes)) == 1)


def missed(burst: Burst, scored: set[str]) -> int:
    """Writes after the last one whose content was scored (all of them if none was)."""
    last = max((i for i, s in enumerate(burst.shas) if s in scored), default=-1)
    return len(burst.shas) - 1 - last


# -- the measurements -----------------------------------------------------------


def bench_bare_model(root: Path, n: int, rng: random.Random) -> Row:
    work = root / "bare"
    work.mkdir()
    row = Row("bare model run: `python -m modelgen_watcher.modelside.reference` subprocess")
    cmd_tail = ["--workspace", str(work), "--routefile", str(work / "route.json"), "--dumpresponse", "out.json"]
    cmd = [sys.executable, "-m", "modelgen_watcher.modelside.reference", *cmd_tail]
    for i in range(n + 1):  # the first run warms the page cache and is not counted
        (work / "route.json").write_bytes(make_route(i, rng))
        (work / "out.json").unlink(missing_ok=True)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True)
        ms = (time.perf_counter() - t0) * 1000.0
        if done.returncode != 0 or not (work / "out.json").exists():
            raise BenchError(f"reference model failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        if i:
            row.samples.append(ms)
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    row.notes.append(f"n={n}; spawn + interpreter start + scoring; peak RSS of a run {mib(child_peak)}")
    return row


def bench_daemon(
    procs: Processes, root: Path, label: str, args: list[str], n: int, jitter: float, rng: random.Random
) -> Row:
    watch = root / label.replace(" ", "-").replace(".", "_")
    daemon = DaemonUnderTest(procs, watch, args)
    row = Row(f"daemon {label}: `run {' '.join(args)}`")
    progress(f"daemon {label}: starting")
    daemon.start()
    assert daemon.proc is not None
    try:
        status = watch / STATUS_NAME
        timeouts = 0
        for i in range(n + 1):  # request 0 warms the daemon up and is not counted
            time.sleep(rng.uniform(0, jitter))
            data = make_route(1000 + i, rng)
            sha = sha256(data)
            t0 = drop(watch, data)
            ms = wait_status_ok(status, sha, t0)
            if ms is None:
                daemon.alive()
                timeouts += 1
            elif i:
                row.samples.append(ms)
        progress(f"daemon {label}: {n} requests done, burst")
        burst = write_burst(watch, rng, 5000)
        t_last = time.perf_counter()
        got = wait_status_ok(status, burst.shas[-1], t_last)
        doc = read_json(status)
        final_sha = doc.get("input_sha256") if isinstance(doc, dict) and doc.get("state") == "ok" else None
        scored = {burst.shas[-1]} if got is not None else ({final_sha} if final_sha else set())
        time.sleep(0.2)  # request.done is logged just after the status is written
        runs = daemon.runs_for(set(burst.shas))
        peak = peak_rss_kib(daemon.proc.pid)
        idle = idle_cpu_percent(daemon.proc.pid, IDLE_WINDOW_S)
    finally:
        rc = daemon.stop()
    row.notes.append(f"n={n}")
    if timeouts:
        row.notes.append(f"{timeouts} request(s) timed out after {REQUEST_TIMEOUT:g} s")
    row.notes.append(
        f"burst: {missed(burst, scored)}/{BURST_WRITES} missed ({runs} model run{'s' if runs != 1 else ''})"
        + ("" if burst.same_second else " [burst spilled over a second boundary]")
    )
    row.notes.append(f"peak RSS {mib(peak)}")
    if idle is not None:
        row.notes.append(f"idle CPU {idle:.1f}% over {IDLE_WINDOW_S:g} s")
    if rc not in (0, None):
        row.notes.append(f"exit code {rc} on SIGTERM")
    return row


def bench_baseline(procs: Processes, root: Path, n: int, rng: random.Random) -> Row:
    inbox, work = root / "baseline-inbox", root / "baseline-work"
    inbox.mkdir()
    work.mkdir()
    row = Row("baseline: bash loop, `stat -c %Z` (1 s resolution) once a second")
    progress("baseline loop: starting")
    errors = root / "baseline.stderr"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            ["bash", "-c", BASELINE_LOOP, "baseline", str(inbox / INPUT_NAME), str(work), sys.executable],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # own process group: SIGTERM reaches its sleep and model too
        )
    procs.add(proc, group=True)
    try:
        marker = work / "done.sha"
        timeouts = 0
        last_second = -1
        for i in range(n + 1):  # request 0 is a warm-up, as for the daemons
            time.sleep(rng.uniform(0, 1.0))
            # A drop in the same ctime second as the previous one is invisible to this loop
            # for good; the latency rows keep drops apart, the burst below measures that case.
            while time.time() < last_second + 1.02:
                time.sleep(0.01)
            data = make_route(2000 + i, rng)
            sha = sha256(data)
            t0 = drop(inbox, data)
            last_second = os.stat(inbox / INPUT_NAME).st_ctime_ns // 1_000_000_000
            ms = wait_marker(marker, sha, t0)
            if ms is None:
                if proc.poll() is not None:
                    raise BenchError(f"baseline loop exited: {errors.read_text(errors='replace')}")
                timeouts += 1
            elif i:
                row.samples.append(ms)
        progress(f"baseline loop: {n} requests done, burst")
        burst = write_burst(inbox, rng, 6000)
        time.sleep(3.0)  # three more ticks: anything the loop will ever score is scored by now
        log = work / "scored.log"
        scored = set(log.read_text().split()) if log.exists() else set()
        runs = sum(1 for s in burst.shas if s in scored)
        peak = peak_rss_kib(proc.pid)
    finally:
        Processes.stop(proc, group=True)
    row.notes.append(f"n={n}")
    if timeouts:
        row.notes.append(f"{timeouts} request(s) never scored within {REQUEST_TIMEOUT:g} s")
    final = "scored" if burst.shas[-1] in scored else "never scored"
    plural = "s" if runs != 1 else ""
    row.notes.append(
        f"burst: {missed(burst, scored)}/{BURST_WRITES} missed ({runs} model run{plural}, last content {final})"
        + ("" if burst.same_second else " [burst spilled over a second boundary]")
    )
    row.notes.append(f"peak RSS of the bash loop {mib(peak)}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="requests per fast setup (default 20)")
    parser.add_argument(
        "--slow-requests", type=int, default=None, help="requests for the 1-second rows (default min(8, N))"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the contents and pauses (default 1)")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    n = args.requests
    n_slow = args.slow_requests if args.slow_requests is not None else min(8, n)
    if n_slow < 1:
        parser.error("--slow-requests must be at least 1")
    rng = random.Random(args.seed)

    # SIGTERM (e.g. from make or CI) must run the finally below like Ctrl-C does.
    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)

    root = Path(tempfile.mkdtemp(prefix="modelgen-bench-"))
    procs = Processes()
    rows: list[Row] = []
    t_start = time.monotonic()
    try:
        progress(f"bare model: {n} runs")
        rows.append(bench_bare_model(root, n, rng))
        native = ["--observer", "native", "--debounce", "50"]
        rows.append(bench_daemon(procs, root, "native, warm worker", [*native, "--runner", "entry"], n, 0.1, rng))
        rows.append(bench_daemon(procs, root, "native, a process per request", [*native, "--runner", "subprocess"],
                                 n, 0.1, rng))
        rows.append(
            bench_daemon(procs, root, "polling 0.1 s", ["--observer", "polling", "--poll-interval", "0.1"], n, 0.1, rng)
        )
        rows.append(
            bench_daemon(
                procs, root, "polling 1.0 s", ["--observer", "polling", "--poll-interval", "1.0"], n_slow, 1.0, rng
            )
        )
        rows.append(bench_baseline(procs, root, n_slow, rng))
    except KeyboardInterrupt:
        progress("interrupted; stopping everything")
        return 130
    except BenchError as exc:
        progress(f"failed: {exc}")
        return 1
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)

    bare = statistics.median(rows[0].samples)
    for row in rows[1:]:
        if row.samples:
            row.notes.insert(1, f"median {statistics.median(row.samples) - bare:+.0f} ms over the bare run")
    print(render(rows))
    print()
    print(
        f"Drop-to-result = os.replace of the input until the status (baseline: done marker) names its sha256, "
        f"polled every {STATUS_POLL * 1000:.0f} ms; p95 interpolated; the first request of each setup is a "
        f"warm-up and not counted. Burst: {BURST_WRITES} writes {BURST_SPACING * 1000:.0f} ms apart inside one "
        "second; a write is missed when neither it nor a later write is ever scored. "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.monotonic() - t_start:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

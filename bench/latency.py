"""Drop-to-result latency of modelgen-watcher beside the watchers people use instead, all running the same model.

What one run measures, on throw-away temp directories, and prints as one markdown table:

1. **Bare model run**: the embedded reference model as a process, in upstream's
   command-line shape (``REFERENCE_MODEL_CMD``: ``python -I -S reference.py --workspace W
   --routefile R --dumpresponse out.json``): the floor of any watcher that starts a
   process per event.
2. **The daemon** (``python -m modelgen_watcher run``), with warm workers (``--runner
   entry``, the default) and with a process per request (``--runner subprocess``, the
   command above), each with the native observer (inotify, debounce 50 ms: the
   defaults) and with the polling observer at its default 1 s. Each request is a keyed
   input (``gps_input_route.bench.json``) with distinct content, published the
   recommended way (temp dot-file, then ``os.replace``), one at a time. Latency is the
   time from the ``os.replace`` until ``gps_scored_route.bench.status.json`` says ``ok``
   for that input's sha256 (the status is written after the result).
3. **The peers**, written here as their users would write them, each running the bare
   model command above on the input as a process per event:
   ``watchmedo shell-command`` (watchdog's own tool, inotify), ``entr -np`` (the file
   given on stdin; it follows a file renamed over), an ``inotifywait -m`` loop on
   ``close_write`` and ``moved_to``, and upstream's ``run_if_changed.sh`` shape: a bash
   loop that stats the input's ctime (``stat -c %Z``, one-second resolution) once a
   second. Latency is the time from the ``os.replace`` until the model's output file
   holds exactly the bytes the model writes for that input (computed here beforehand;
   every input's coordinates differ, so a stale or partial file never matches). A
   peer whose tool is not installed gets a row saying so. Drops for the ctime loop
   are kept in different wall-clock seconds, or it would never see them: that failure
   is what the *burst* shows.
4. **Bursts of 10 writes within one second** (five per setup: what a loop that looks
   once a second sees depends on where in the second it looks): a write is *missed*
   when neither its content nor any later write's content is ever scored; the daemon
   coalesces intermediate writes but always scores the content present last. For a
   peer, the output left 3 s after a burst tells which write was scored last.
5. **Peak RSS**: the daemon's (``VmHWM``) and its warm workers'; the peer's own
   process (the model processes of a process-per-event setup are not included; the
   bare row gives one).

A random pause before each drop samples the polling and ctime phases uniformly. The
first request of each setup is a warm-up and not counted. Statuses and outputs are
polled every millisecond, so each sample is high by up to 1 ms.

Targets (issue 9), checked below the table: with ``entry`` and the native observer,
median at most 10 ms, p99 at most 30 ms, and at least 5x below every peer's median.

Run: ``.venv/bin/python bench/latency.py [--requests N] [--slow-requests M]
[--watchmedo PATH]``. N (default 200) requests per native setup and peer, M (default
20) for the 1-second rows; about 5 minutes on a 2-core machine (``--requests 20
--slow-requests 5``: about one). Every process is stopped with SIGTERM and every temp
directory removed, even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    INPUT_NAME,
    REQUEST_TIMEOUT,
    STATUS_NAME,
    BenchError,
    DaemonUnderTest,
    Processes,
    cleaned_up,
    descendants,
    drop,
    make_route,
    markdown_table,
    mib,
    peak_rss_kib,
    percentile,
    progress,
    read_json,
    sha256,
    stop_on_sigterm,
    verdict,
    wait_status_ok,
)

from modelgen_watcher.modelside.reference import score_route
from modelgen_watcher.settings import REFERENCE_MODEL_CMD

OUTPUT_NAME = "out.json"
BURST_WRITES = 10
BURSTS = 5
"""Bursts per setup: where a write is seen depends on where in the second a loop looks, so one burst is luck."""
BURST_SPACING = 0.085
"""Seconds between the burst's writes: 10 writes from ~0.02 s to ~0.8 s into one second."""
POLL = 0.001
"""Seconds between reads of a status or an output: 5 ms (the harness's default) would add 2.5 ms on average to
every sample, half of a warm worker's answer."""
PEER_START_TIMEOUT = 20.0
PEER_TIMEOUT = 5.0
"""Seconds after which a peer's drop counts as never scored (the bare model takes tens of ms)."""
LOSS_PROBES = 10
"""Drops at the daemon rows' pace (0-0.1 s after the previous result) that check whether a peer loses some."""
TARGET_MEDIAN_MS = 10.0
TARGET_P99_MS = 30.0
TARGET_PEER_RATIO = 5.0


def model_argv(workspace: Path, routefile: Path) -> list[str]:
    """The bare reference model's command for one input: the daemon's own default ``--model-cmd``, rendered."""
    values = {"workspace": str(workspace), "input": str(routefile), "output_name": OUTPUT_NAME}
    return [arg.format(**values) for arg in shlex.split(REFERENCE_MODEL_CMD)]


def expected_output(data: bytes) -> bytes:
    """What the reference model writes for ``data`` (its own scoring function, its own encoding)."""
    return json.dumps(score_route(json.loads(data))).encode("utf-8")


# -- rows ---------------------------------------------------------------------------


@dataclass
class Row:
    setup: str
    samples: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peer: bool = False
    skipped: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def cells(self) -> list[str]:
        if not self.samples:
            return [self.setup, "-", "-", "-", "-", "-", "; ".join([self.skipped or "no samples", *self.notes])]
        return [
            self.setup,
            str(len(self.samples)),
            f"{self.median:.1f}",
            f"{percentile(self.samples, 95):.1f}",
            f"{percentile(self.samples, 99):.1f}",
            f"{max(self.samples):.1f}",
            "; ".join(self.notes),
        ]


def wait_output(output: Path, expected: bytes, t0: float, timeout: float = REQUEST_TIMEOUT) -> float | None:
    """Milliseconds from ``t0`` until ``output`` holds exactly ``expected``; None on timeout."""
    deadline = t0 + timeout
    while True:
        try:
            if output.read_bytes() == expected:
                return (time.perf_counter() - t0) * 1000.0
        except FileNotFoundError:
            pass
        if time.perf_counter() > deadline:
            return None
        time.sleep(POLL)


def sample(
    row: Row,
    n: int,
    rng: random.Random,
    jitter: float,
    one: Callable[[int], float | None],
    *,
    alive: Callable[[], None],
    min_gap: float = 0.0,
    distinct_seconds: Path | None = None,
) -> None:
    """``n`` counted requests (plus a warm-up) through ``one(seq) -> ms``, each after a pause of ``min_gap`` plus
    a random share of ``jitter``.

    ``distinct_seconds``: keep each drop in a later ctime second than the previous one
    (the ctime loop cannot see two drops in one second, ever).
    """
    timeouts = 0
    last_second = -1
    for i in range(n + 1):
        time.sleep(min_gap + rng.uniform(0, jitter))
        if distinct_seconds is not None:
            while time.time() < last_second + 1.02:
                time.sleep(0.01)
        ms = one(i)
        if distinct_seconds is not None:
            last_second = os.stat(distinct_seconds).st_ctime_ns // 1_000_000_000
        if ms is None:
            alive()
            timeouts += 1
        elif i:
            row.samples.append(ms)
    if timeouts:
        row.notes.append(f"{timeouts} request(s) never scored (timed out)")


# -- burst ----------------------------------------------------------------------------


@dataclass
class Burst:
    datas: list[bytes]
    same_second: bool


def write_burst(directory: Path, rng: random.Random, seq0: int) -> Burst:
    """Ten writes of distinct content inside one wall-clock second (so one ctime second)."""
    now = time.time()
    time.sleep(math.floor(now) + 1.02 - now)  # 20 ms into the next second: never the previous drop's second
    datas, ctimes = [], []
    for i in range(BURST_WRITES):
        data = make_route(seq0 + i, rng)
        drop(directory, data, INPUT_NAME)
        ctimes.append(os.stat(directory / INPUT_NAME).st_ctime_ns // 1_000_000_000)
        datas.append(data)
        if i < BURST_WRITES - 1:
            time.sleep(BURST_SPACING)
    return Burst(datas, len(set(ctimes)) == 1)


def burst_note(missed: list[int], details: list[str], spilled: int) -> str:
    """The bursts' missed writes, one figure a burst (and what was scored or run, per burst)."""
    spill = f" [{spilled} spilled over a second boundary]" if spilled else ""
    return (f"{len(missed)} bursts: {', '.join(map(str, missed))} of {BURST_WRITES} writes missed "
            f"({'; '.join(details)}){spill}")


# -- the bare model ----------------------------------------------------------------------


def bench_bare_model(root: Path, n: int, rng: random.Random) -> Row:
    work = root / "bare"
    work.mkdir()
    row = Row("bare model run: `python -I -S reference.py` (upstream's flags), a process")
    cmd = model_argv(work, work / "route.json")
    for i in range(n + 1):  # the first run warms the page cache and is not counted
        (work / "route.json").write_bytes(make_route(i, rng))
        (work / OUTPUT_NAME).unlink(missing_ok=True)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True)
        ms = (time.perf_counter() - t0) * 1000.0
        if done.returncode != 0 or not (work / OUTPUT_NAME).exists():
            raise BenchError(f"reference model failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        if i:
            row.samples.append(ms)
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    row.notes.append(f"spawn + interpreter start + scoring; peak RSS of a run {mib(child_peak)}")
    return row


# -- the daemon -----------------------------------------------------------------------------


def bench_daemon(
    procs: Processes, root: Path, label: str, args: list[str], n: int, jitter: float, rng: random.Random
) -> Row:
    watch = root / label.replace(" ", "-").replace(",", "").replace(".", "_")
    daemon = DaemonUnderTest(procs, watch, args)
    row = Row(f"daemon, {label}: `run {' '.join(args)}`")
    progress(f"daemon {label}: starting")
    daemon.start()
    status = watch / STATUS_NAME
    try:

        def one(seq: int) -> float | None:
            data = make_route(1000 + seq, rng)
            return wait_status_ok(status, sha256(data), drop(watch, data, INPUT_NAME), poll=POLL)

        sample(row, n, rng, jitter, one, alive=daemon.alive)
        progress(f"daemon {label}: {n} requests done, {BURSTS} bursts")
        missed, runs, spilled = [], [], 0
        for b in range(BURSTS):
            burst = write_burst(watch, rng, 5000 + 100 * b)
            shas = [sha256(d) for d in burst.datas]
            got = wait_status_ok(status, shas[-1], time.perf_counter(), poll=POLL)
            doc = read_json(status)
            final = doc.get("input_sha256") if isinstance(doc, dict) and doc.get("state") == "ok" else None
            scored = {shas[-1]} if got is not None else ({final} if final else set())
            time.sleep(0.2)  # request.done is logged just after the status is written
            runs.append(f"{daemon.runs_for(set(shas))}")
            missed.append(BURST_WRITES - 1 - max((i for i, s in enumerate(shas) if s in scored), default=-1))
            spilled += not burst.same_second
        peak = peak_rss_kib(daemon.pid)
        workers = [peak_rss_kib(pid) or 0 for pid in descendants(daemon.pid)]
    finally:
        rc = daemon.stop()
    row.notes.append(burst_note(missed, [f"{', '.join(runs)} model runs"], spilled))
    row.notes.append(f"peak RSS {mib(peak)}" + (f" + warm worker {mib(sum(workers))}" if workers else ""))
    if rc not in (0, None):
        row.notes.append(f"exit code {rc} on SIGTERM")
    return row


# -- the peers --------------------------------------------------------------------------------

INOTIFYWAIT_LOOP = r"""
inbox=$1 name=$2; shift 2
inotifywait -m -q -e close_write -e moved_to --format '%f' -- "$inbox" |
while IFS= read -r f; do
  if [ "$f" = "$name" ]; then "$@"; fi
done
"""

# Upstream's run_if_changed.sh shape: ctime with 1 s resolution, checked once a second, the model
# run in the foreground on the input itself.
CTIME_LOOP = r"""
input=$1; shift
last=
while :; do
  cur=$(stat -c %Z -- "$input" 2>/dev/null) || cur=
  if [ -n "$cur" ] && [ "$cur" != "$last" ]; then
    last=$cur
    "$@"
  fi
  sleep 1
done
"""


@dataclass
class Peer:
    label: str
    tool: str | None
    """The executable it needs (None: bash and coreutils only)."""
    argv: Callable[[Path, list[str]], list[str]]
    """(inbox, model command) -> the peer's command line."""
    stdin: Callable[[Path], bytes] | None = None
    jitter: float = 0.1
    min_gap: float = 0.0
    """Pause before each counted drop on top of the jitter, for a peer that loses drops at the daemon's pace
    (how many it loses is measured separately, with the daemon's pace)."""
    once_a_second: bool = False


def inbox_input(inbox: Path) -> Path:
    return inbox / INPUT_NAME


def peers(watchmedo: str | None) -> list[Peer]:
    return [
        Peer(
            "watchmedo shell-command (watchdog, inotify)",
            watchmedo,
            lambda inbox, model: [
                str(watchmedo), "shell-command", "--patterns", f"**/{INPUT_NAME}", "--ignore-directories",
                "--command", shlex.join(model), str(inbox),
            ],
        ),
        Peer("entr -np (the input on stdin)", "entr", lambda inbox, model: ["entr", "-n", "-p", *model],
             stdin=lambda inbox: f"{inbox_input(inbox)}\n".encode(), min_gap=0.5),
        Peer("inotifywait -m loop (close_write, moved_to)", "inotifywait",
             lambda inbox, model: ["bash", "-c", INOTIFYWAIT_LOOP, "inotifywait-loop", str(inbox), INPUT_NAME, *model]),
        Peer("upstream's loop: `stat -c %Z` (1 s resolution) once a second", None,
             lambda inbox, model: ["bash", "-c", CTIME_LOOP, "ctime-loop", str(inbox_input(inbox)), *model],
             jitter=1.0, once_a_second=True),
    ]


def bench_peer(procs: Processes, root: Path, peer: Peer, n: int, rng: random.Random) -> Row:
    row = Row(f"peer: {peer.label}", peer=True)
    if peer.tool is not None and shutil.which(peer.tool) is None:
        row.skipped = f"not installed (`{peer.tool}` not found)"
        return row
    slug = peer.label.split()[0].strip("'`")
    inbox, work = root / f"peer-{slug}-inbox", root / f"peer-{slug}-work"
    inbox.mkdir()
    work.mkdir()
    output = work / OUTPUT_NAME
    # The input exists before the peer starts (entr opens the files it is given).
    first = make_route(3000, rng)
    drop(inbox, first, INPUT_NAME)
    argv = peer.argv(inbox, model_argv(work, inbox / INPUT_NAME))
    progress(f"peer {slug}: starting")
    errors = root / f"peer-{slug}.stderr"

    def launch() -> subprocess.Popen[bytes]:
        with open(errors, "ab") as err:
            started = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if peer.stdin else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # its own group: SIGTERM reaches the loop's children too
            )
        procs.add(started, group=True)
        if peer.stdin is not None and started.stdin is not None:
            started.stdin.write(peer.stdin(inbox))
            started.stdin.close()
        return started

    proc = launch()

    def alive() -> None:
        if proc.poll() is not None:
            raise BenchError(f"{slug} exited with {proc.returncode}: {errors.read_text(errors='replace')[-2000:]}")

    try:
        # Ready when a drop is answered: watchers print nothing when their watches are in place.
        deadline = time.monotonic() + PEER_START_TIMEOUT
        seq = 3001
        while True:
            alive()
            data = make_route(seq, rng)
            seq += 1
            if wait_output(output, expected_output(data), drop(inbox, data, INPUT_NAME), timeout=1.5) is not None:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{slug} never ran the model within {PEER_START_TIMEOUT:g} s")

        def one(i: int) -> float | None:
            data = make_route(4000 + i, rng)
            return wait_output(output, expected_output(data), drop(inbox, data, INPUT_NAME), timeout=PEER_TIMEOUT)

        if not peer.once_a_second:  # the ctime loop's losses are the burst's to show
            probe = Row("loss probe")
            sample(probe, LOSS_PROBES, rng, 0.1, lambda i: one(10_000 + i), alive=alive)
            lost = LOSS_PROBES - len(probe.samples)
            row.notes.append(f"{lost}/{LOSS_PROBES} drops lost at the daemon rows' pace (0-0.1 s after a result)")
        sample(row, n, rng, peer.jitter, one, alive=alive, min_gap=peer.min_gap,
               distinct_seconds=inbox / INPUT_NAME if peer.once_a_second else None)
        if peer.min_gap:
            row.notes.append(f"counted drops {peer.min_gap:g}-{peer.min_gap + peer.jitter:g} s after a result")
        progress(f"peer {slug}: {n} requests done, {BURSTS} bursts")
        missed, spilled, last_scored = [], 0, 0
        current = (inbox / INPUT_NAME).read_bytes()
        for b in range(BURSTS):
            if peer.once_a_second:
                # A loop that looks once a second sees a burst as where in the second it looks: start it
                # afresh at a random point of the second, so each burst meets another phase.
                Processes.stop(proc, group=True)
                time.sleep(rng.uniform(0.0, 1.0))
                proc = launch()
                if wait_output(output, expected_output(current), time.perf_counter(), timeout=PEER_TIMEOUT) is None:
                    raise BenchError(f"{slug} did not score the input present when it started")
            burst = write_burst(inbox, rng, 7000 + 100 * b)
            current = burst.datas[-1]
            time.sleep(3.0)  # three more ticks of the ctime loop: anything a peer will ever score is scored by now
            try:
                final = output.read_bytes()
            except FileNotFoundError:
                final = b""
            scored = [i for i, d in enumerate(burst.datas) if expected_output(d) == final]
            last = scored[-1] if scored else -1
            missed.append(BURST_WRITES - 1 - last)
            last_scored += last == BURST_WRITES - 1
            spilled += not burst.same_second
        peak = peak_rss_kib(proc.pid)
    finally:
        Processes.stop(proc, group=True)
    restarts = "; the loop started afresh at a random point of the second before each" if peer.once_a_second else ""
    row.notes.append(burst_note(missed, [f"the last write scored in {last_scored} of {BURSTS}{restarts}"], spilled))
    row.notes.append(f"peak RSS of the watcher process {mib(peak)}")
    return row


# -- the table ----------------------------------------------------------------------------------


def targets(rows: list[Row], warm: Row) -> list[str]:
    """One line per target of issue 9, with its figure and whether it is met."""
    if not warm.samples:
        return ["- the warm worker row has no samples: no target can be checked"]
    median, p99 = warm.median, percentile(warm.samples, 99)
    lines = [
        f"- `entry`, native: median {median:.1f} ms (target <= {TARGET_MEDIAN_MS:g} ms): "
        f"{verdict(median <= TARGET_MEDIAN_MS)}",
        f"- `entry`, native: p99 {p99:.1f} ms over n={len(warm.samples)} (target <= {TARGET_P99_MS:g} ms): "
        f"{verdict(p99 <= TARGET_P99_MS)}",
    ]
    measured = [r for r in rows if r.peer and r.samples]
    missing = [r.setup for r in rows if r.peer and not r.samples]
    if measured:
        ratios = ", ".join(f"{r.setup.removeprefix('peer: ').split(' (')[0]} {r.median / median:.1f}x" for r in measured)
        lowest = min(r.median / median for r in measured)
        lines.append(f"- at least {TARGET_PEER_RATIO:g}x below every peer's median: {ratios}: "
                     f"{verdict(lowest >= TARGET_PEER_RATIO and not missing)}")
    if missing:
        lines.append(f"- not measured (tool missing): {'; '.join(missing)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per native setup and peer (default 200)")
    parser.add_argument("--slow-requests", type=int, default=20, help="requests for the 1-second rows (default 20)")
    parser.add_argument("--watchmedo", default=shutil.which("watchmedo"),
                        help="watchmedo to run (default: the one on PATH; `make bench` installs one in .venv-bench)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the contents and pauses (default 1)")
    args = parser.parse_args(argv)
    n, n_slow = args.requests, args.slow_requests
    if n < 1 or n_slow < 1:
        parser.error("--requests and --slow-requests must be at least 1")
    rng = random.Random(args.seed)
    stop_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="modelgen-bench-"))
    procs = Processes()
    rows: list[Row] = []
    t_start, load_before = time.monotonic(), os.getloadavg()[0]
    native, polling = ["--observer", "native", "--debounce", "50"], ["--observer", "polling", "--poll-interval", "1.0"]
    with cleaned_up(procs, root):
        progress(f"bare model: {n} runs")
        rows.append(bench_bare_model(root, n, rng))
        warm = bench_daemon(procs, root, "native, warm worker", [*native, "--runner", "entry"], n, 0.1, rng)
        rows.append(warm)
        rows.append(bench_daemon(procs, root, "native, a process per request",
                                 [*native, "--runner", "subprocess"], n, 0.1, rng))
        rows.append(bench_daemon(procs, root, "polling 1 s, warm worker", [*polling, "--runner", "entry"],
                                 n_slow, 1.0, rng))
        rows.append(bench_daemon(procs, root, "polling 1 s, a process per request",
                                 [*polling, "--runner", "subprocess"], n_slow, 1.0, rng))
        for peer in peers(args.watchmedo):
            rows.append(bench_peer(procs, root, peer, n_slow if peer.once_a_second else n, rng))

    bare = rows[0].median
    for row in rows[1:]:
        if row.samples:
            row.notes.insert(0, f"{row.median - bare:+.0f} ms over the bare run")
    header = ["setup", "n", "median ms", "p95 ms", "p99 ms", "max ms", "notes"]
    print(markdown_table(header, [r.cells() for r in rows], right={1, 2, 3, 4, 5}))
    print()
    print(
        "Drop-to-result = `os.replace` of the input until the daemon's status names its sha256 as `ok` (peers: until "
        f"the model's output holds exactly the bytes scored from it), polled every {POLL * 1000:.0f} ms; "
        "percentiles interpolated; the first request of each setup is a warm-up and not counted. "
        f"Bursts: {BURST_WRITES} writes {BURST_SPACING * 1000:.0f} ms apart inside one second; a write is missed when "
        f"neither it nor a later write is ever scored. A peer's drop unscored after {PEER_TIMEOUT:g} s is lost. "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after, "
        f"Python {sys.version.split()[0]}, {time.monotonic() - t_start:.0f} s."
    )
    print()
    print("Targets (issue 9):")
    print("\n".join(targets(rows, warm)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the benchmarks share: routes to drop, the drop itself, a bounded wait for the status, a real daemon, tables.

One home for the pieces every ``bench/`` script that drives ``modelgen-watcher run``
needs, so the latency rows and the upstream-shaped rows are measured the same way:

- ``make_route`` / ``drop``: a distinct DirectionsResult published the recommended way
  (temp dot-file, then ``os.replace``) as the keyed input ``KEY``; ``drop`` returns the
  ``perf_counter`` of the rename, where every latency starts.
- ``wait_status_ok``: polls the status every ``STATUS_POLL`` s until it is ``ok`` for the
  input's sha256 (each sample is high by up to one poll), with a deadline.
- ``DaemonUnderTest``: ``python -m modelgen_watcher run`` in a subprocess, started until
  its health file says ready, stopped with SIGTERM; ``Processes`` stops whatever is
  left in a ``finally``.
- ``p95``, ``percentile``, ``mib``, ``verdict``, ``markdown_table``, ``peak_rss_kib``,
  ``rss_kib``, ``descendants``, ``cpu_ticks``: the figures and how they are printed.
- ``stop_on_sigterm``: a SIGTERM (from make) runs the script's ``finally`` blocks.
- ``LogTail``: the daemon's log records as they are written (``request.done`` counts what is done).
- ``file_system``: what a scratch directory is on (a disk can cost more than the daemon).

Imported by path: the scripts run as ``python bench/NAME.py``, which puts ``bench/`` first
on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelgen_watcher.volume.names import HEALTH_FILE, METRICS_FILE, STATE_DIR, WATCHERS_DIR, Names

KEY = "bench"
NAMES = Names()
INPUT_NAME = NAMES.input(KEY)
STATUS_NAME = NAMES.status(KEY)
RESULT_NAME = NAMES.result(KEY)
STATUS_POLL = 0.005
"""Seconds between reads of the status file while waiting for a result."""
REQUEST_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A setup could not be measured (daemon would not start, model failed, ...)."""


def make_route(seq: int, rng: random.Random) -> bytes:
    """A DirectionsResult with two routes of ten steps; ``seq`` and a nonce make every request distinct."""
    maneuvers = ["", "turn-left", "", "turn-right", "straight", "", "turn-slight-left", "", "roundabout-right", ""]
    lat0, lng0 = 30.2894657 + rng.uniform(-0.01, 0.01), -97.7367919 + rng.uniform(-0.01, 0.01)
    routes = []
    for r in range(2):
        steps = [
            {
                "end_location": {"lat": round(lat0 + 0.001 * i + 0.01 * r, 7), "lng": round(lng0 - 0.001 * i, 7)},
                "maneuver": m,
                "distance": {"text": "0.1 mi", "value": 160},
            }
            for i, m in enumerate(maneuvers)
        ]
        routes.append({"legs": [{"steps": steps}], "summary": f"route {r}"})
    doc = {"routes": routes, "geocoded_waypoints": [], "bench": {"seq": seq, "nonce": rng.getrandbits(64)}}
    return json.dumps(doc).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def drop(directory: Path, data: bytes, name: str = INPUT_NAME) -> float:
    """Publish ``data`` as ``name`` (temp dot-file, then rename); returns perf_counter at the rename."""
    tmp = directory / f".bench-{os.getpid()}-{time.monotonic_ns()}.tmp"
    tmp.write_bytes(data)
    t0 = time.perf_counter()
    os.replace(tmp, directory / name)
    return t0


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def wait_status_ok(
    status: Path, sha: str, t0: float, timeout: float = REQUEST_TIMEOUT, poll: float = STATUS_POLL
) -> float | None:
    """Milliseconds from ``t0`` until the status is ``ok`` for ``sha`` (read every ``poll`` s); None on timeout."""
    deadline = t0 + timeout
    while True:
        doc = read_json(status)
        if isinstance(doc, dict) and doc.get("input_sha256") == sha:
            if doc.get("state") == "ok":
                return (time.perf_counter() - t0) * 1000.0
            if doc.get("state") == "error":
                raise BenchError(f"the daemon failed the request: {doc.get('error')}")
        if time.perf_counter() > deadline:
            return None
        time.sleep(poll)


def percentile(values: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile, interpolated between the two nearest samples (the sample itself when n=1)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def verdict(met: bool) -> str:
    """How a table says whether a target is met."""
    return "**met**" if met else "**not met**"


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Processes:
    """Every long-lived process the bench starts, so a finally can stop them all with SIGTERM."""

    def __init__(self) -> None:
        self._procs: list[tuple[subprocess.Popen[bytes], bool]] = []

    def add(self, proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
        self._procs.append((proc, group))

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], group: bool = False) -> int | None:
        """SIGTERM (to the process group for shell loops, whose children would linger), then wait."""
        if proc.poll() is not None:
            if group:  # the leader is gone; what it started may not be
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except OSError:
                    pass
            return proc.returncode
        try:
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            progress(f"pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:g} s; killing it")
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            return proc.wait()

    def stop_all(self) -> None:
        while self._procs:
            proc, group = self._procs.pop()
            self.stop(proc, group)


def peak_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def stop_on_sigterm() -> None:
    """SIGTERM (from make or CI) runs the script's ``finally`` blocks, as Ctrl-C does."""

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)


class DaemonUnderTest:
    """``python -m modelgen_watcher run`` on one watch dir, its JSON log in a file beside the dir."""

    def __init__(self, procs: Processes, watch_dir: Path, args: Sequence[str], name: str = "") -> None:
        """``name`` tells the logs of several daemons on one watch dir apart (shared mode)."""
        self.procs = procs
        self.watch_dir = watch_dir
        self.args = list(args)
        self.log_path = watch_dir.parent / f"{watch_dir.name}{'-' + name if name else ''}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def state_file(self) -> Path:
        """Its heartbeat: ``.modelgen/health.json``, or in shared mode ``.modelgen/watchers/<id>.json``."""
        if "--shared" in self.args:
            return self.watch_dir / STATE_DIR / WATCHERS_DIR / f"{self.args[self.args.index('--watcher-id') + 1]}.json"
        return self.watch_dir / STATE_DIR / HEALTH_FILE

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until its health file says ready (``timeout`` covers the warm workers' start)."""
        self.watch_dir.mkdir(parents=True, exist_ok=True)  # a bench may seed its workspace first
        cmd = [sys.executable, "-m", "modelgen_watcher", "run", "--watch-dir", str(self.watch_dir), *self.args]
        env = {**os.environ, "MODELGEN_LOG_FORMAT": "json"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.add(self.proc)
        deadline = time.monotonic() + timeout
        health = self.state_file
        while True:
            self.alive()
            doc = read_json(health)
            if isinstance(doc, dict) and doc.get("pid") == self.proc.pid and doc.get("ready"):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"daemon not ready after {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_records(self) -> Iterator[dict[str, Any]]:
        """Every JSON line the daemon has logged so far."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec

    def runs_for(self, shas: set[str]) -> int:
        """Successful model runs the daemon logged for any of ``shas``."""
        return sum(
            1
            for rec in self.log_records()
            if rec.get("event") == "request.done" and rec.get("outcome") == "ok" and rec.get("input_sha256") in shas
        )

    def metric(self, name: str) -> float | None:
        """A sample without labels from the metrics file the last heartbeat wrote; None if not there yet."""
        try:
            text = (self.watch_dir / STATE_DIR / METRICS_FILE).read_text()
        except OSError:
            return None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        return None

    def wait_idle(self, timeout: float) -> None:
        """Until a heartbeat written after now says nothing is queued or running (start-up catch-up done)."""
        deadline = time.monotonic() + timeout
        since = time.time()
        while True:
            self.alive()
            beat = self.metric("modelgen_heartbeat_timestamp_seconds")
            if beat is not None and beat > since and self.metric("modelgen_queue_depth") == 0:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"daemon still busy after {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        assert self.proc is not None
        return Processes.stop(self.proc)


class LogTail:
    """A daemon's JSON log lines as they come: each call returns the records written since the last one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def records(self) -> list[dict[str, Any]]:
        try:
            with open(self._path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


DRAIN_TIMEOUT = 900.0
"""Seconds a drain of a backlog may take before the bench gives up on it."""


def scored_ok(tail: LogTail, shas: set[str]) -> list[str]:
    """The input hashes of the ``request.done`` ``ok`` lines for ``shas`` logged since the last look: one per run,
    so a request scored twice is there twice."""
    return [str(rec["input_sha256"]) for rec in tail.records()
            if rec.get("event") == "request.done" and rec.get("outcome") == "ok" and rec.get("input_sha256") in shas]


def wait_drained(tails: Sequence[LogTail], shas: set[str], alive: Callable[[], None], label: str) -> int:
    """Block until the daemons whose logs ``tails`` follow have logged every hash of ``shas`` ``ok``, read every
    20 ms; returns how many such lines were read (runs, a request scored twice counting twice). ``alive``
    raises when a daemon died; a drain past ``DRAIN_TIMEOUT`` is a BenchError."""
    done: set[str] = set()
    runs = 0
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        for tail in tails:
            seen = scored_ok(tail, shas)
            done.update(seen)
            runs += len(seen)
        if len(done) >= len(shas):
            return runs
        alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{label}: {len(done)}/{len(shas)} done after {DRAIN_TIMEOUT:g} s")
        time.sleep(0.02)


def statuses_not_ok(watch: Path, datas: Mapping[str, bytes]) -> list[str]:
    """The keys of ``datas`` whose status in ``watch`` is not ``ok`` for their own input's hash."""
    wrong = []
    for key, data in datas.items():
        doc = read_json(watch / NAMES.status(key))
        if not (isinstance(doc, dict) and doc.get("state") == "ok" and doc.get("input_sha256") == sha256(data)):
            wrong.append(key)
    return wrong


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]], right: set[int]) -> str:
    """A markdown table with padded columns; the columns in ``right`` (numbers) are right-aligned."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` now (``VmRSS``), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_ticks(pid: int) -> int | None:
    """User + system clock ticks (``CLK_TCK`` a second) ``pid`` has used, its threads included; None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children of each thread, recursively): a daemon's workers or fork server."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as fh:
                    children = [int(c) for c in fh.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def file_system(path: Path) -> str:
    """The type of the file system ``path`` is on (its longest mount point in /proc/mounts), and
    whether an ext4 one keeps a journal: without one, every new file costs a search of the inode
    bitmaps that skips recently deleted inodes, and a request creates six."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            mounts = [line.split()[1:3] for line in fh if len(line.split()) > 2]
    except OSError:
        return kind
    real = os.path.realpath(path)
    for point, fstype in mounts:
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    if kind == "ext4" and not _has_journal(best):
        kind = "ext4, no journal"
    return kind


def _has_journal(mount_point: str) -> bool:
    """Whether the ext4 file system at ``mount_point`` has a journal (its jbd2 thread exists); True if unknown."""
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            device = next(line.split()[0] for line in fh if line.split()[1:2] == [mount_point])
    except (OSError, StopIteration):
        return True
    name = os.path.basename(device)
    try:
        return any(entry.startswith(name + "-") for entry in os.listdir("/proc/fs/jbd2"))
    except OSError:
        return False  # no jbd2 at all: no ext4 file system here keeps a journal


@contextlib.contextmanager
def cleaned_up(procs: Processes, root: Path) -> Iterator[None]:
    """Around a bench's setups: every process stopped and the scratch dir removed however it ends; an interrupt
    exits 130 and a failed setup 1, each said on stderr (the one home of what every bench's main did)."""
    try:
        yield
    except KeyboardInterrupt:
        progress("interrupted; stopping everything")
        raise SystemExit(130) from None
    except BenchError as exc:
        progress(f"failed: {exc}")
        raise SystemExit(1) from None
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)

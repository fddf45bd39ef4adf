"""What every benchmark of the daemon needs: inputs, a real daemon in a subprocess, /proc figures, tables.

The one home of these helpers for ``bench/``: the scripts are run by path
(``python bench/latency.py``), so this module is found beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modelgen_watcher.volume.names import HEALTH_FILE, METRICS_FILE, STATE_DIR, Names

NAMES = Names()
STATUS_POLL = 0.005
"""Seconds between reads of a status file while waiting for a result."""
REQUEST_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A setup could not be measured (daemon would not start, model failed, ...)."""


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- inputs -------------------------------------------------------------------


def make_route(seq: int, rng: random.Random) -> bytes:
    """A DirectionsResult with two routes of ten steps; ``seq`` and a nonce make every request distinct.

    The start point is random too, so the scored result (which repeats each step's
    coordinates) differs for every input: a stale result never looks like a fresh one.
    """
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


def drop(directory: Path, data: bytes, name: str) -> float:
    """Publish ``data`` as ``name`` the recommended way (temp dot-file, then rename); returns perf_counter at the rename."""
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


def wait_status_ok(status: Path, sha: str, t0: float, timeout: float = REQUEST_TIMEOUT) -> float | None:
    """Milliseconds from ``t0`` until the status is ``ok`` for ``sha``; None on timeout."""
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
        time.sleep(STATUS_POLL)


# -- statistics and tables ------------------------------------------------------


def percentile(values: Sequence[float], pct: int) -> float:
    """The ``pct``-th percentile, interpolated between the two nearest samples (the sample itself when n=1)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def render(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A markdown table, padded so it also reads as plain text; columns in ``right`` are right-aligned."""
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in rows)])


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


# -- /proc ------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """User + system clock ticks ``pid`` has used (its threads included); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` line of ``/proc/PID/status``: ``VmRSS`` (resident now) or ``VmHWM`` (the peak of it)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children of each of its threads, recursively; Linux 3.5+)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as fh:
                    kids = [int(p) for p in fh.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


# -- processes ----------------------------------------------------------------------


class Processes:
    """Every long-lived process a bench starts, so a finally can stop them all with SIGTERM."""

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


def stop_on_sigterm() -> None:
    """SIGTERM (from make or CI) runs the script's ``finally`` blocks, as Ctrl-C does."""

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)


class DaemonUnderTest:
    """``python -m modelgen_watcher run`` on one watch dir, its JSON log in a file beside the dir."""

    def __init__(self, procs: Processes, watch_dir: Path, args: Sequence[str]) -> None:
        self.procs = procs
        self.watch_dir = watch_dir
        self.args = list(args)
        self.log_path = watch_dir.parent / f"{watch_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0, *, wait_ready: bool = True) -> None:
        self.watch_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "modelgen_watcher", "run", "--watch-dir", str(self.watch_dir), *self.args]
        env = {**os.environ, "MODELGEN_LOG_FORMAT": "json"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.add(self.proc)
        if wait_ready:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = self.watch_dir / STATE_DIR / HEALTH_FILE
        while True:
            self.alive()
            doc = read_json(health)
            if isinstance(doc, dict) and doc.get("pid") == self.pid and doc.get("ready"):
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

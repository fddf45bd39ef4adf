"""Test helpers: route builders, file writers, bounded polls, and a real daemon in a subprocess."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

MODELS = Path(__file__).parent / "models"
PY = shlex.quote(sys.executable)
T = TypeVar("T")


def route(steps: list[str] | None = None, *, routes: int = 1, lat0: float = 30.2894657, lng0: float = -97.7367919,
          **extra: Any) -> dict[str, Any]:
    """A DirectionsResult with ``routes`` routes whose first leg has one step per maneuver in ``steps``."""
    steps = ["", "turn-left"] if steps is None else steps
    out = []
    for r in range(routes):
        legs = [{"steps": [
            {"end_location": {"lat": lat0 + 0.001 * i + 0.01 * r, "lng": lng0 - 0.001 * i}, "maneuver": m,
             "distance": {"text": "0.1 mi", "value": 160}}
            for i, m in enumerate(steps)
        ]}]
        out.append({"legs": legs, "summary": f"route {r}"})
    return {"routes": out, "geocoded_waypoints": [], **extra}


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_name(key: str | None) -> str:
    return "gps_input_route.json" if key is None else f"gps_input_route.{key}.json"


def result_name(key: str | None) -> str:
    return "gps_scored_route.json" if key is None else f"gps_scored_route.{key}.json"


def status_name(key: str | None) -> str:
    return "gps_scored_route.status.json" if key is None else f"gps_scored_route.{key}.status.json"


def drop(watch_dir: Path, data: bytes | dict[str, Any], key: str | None = None) -> bytes:
    """Publish an input the recommended way: temp dot-file in the same directory, then rename."""
    raw = encode(data) if isinstance(data, dict) else data
    tmp = watch_dir / f".writer-{os.getpid()}-{time.monotonic_ns()}.tmp"
    tmp.write_bytes(raw)
    os.replace(tmp, watch_dir / input_name(key))
    return raw


def wait_for(fn: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}")
        time.sleep(interval)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing or not (yet) JSON; any other JSON fails."""
    doc = read_json(path)
    if doc is None:
        return None
    assert isinstance(doc, dict), f"{path} holds a JSON {type(doc).__name__}, not an object"
    return doc


def inflight_records(watch_dir: Path) -> list[dict[str, Any]]:
    """The records in the watcher's in-flight slots (``watcher/inflight.py``: a record's line, padded); an empty
    slot is left out, and so is one read while the daemon rewrites it (a torn read is "not yet")."""
    records = []
    for slot in (watch_dir / ".modelgen" / "inflight").glob("slot-*"):
        try:
            line = slot.read_bytes().split(b"\n", 1)[0]
            if line:
                records.append(json.loads(line))
        except (OSError, ValueError):
            continue
    return records


def status_of(watch_dir: Path, key: str | None = None) -> dict[str, Any] | None:
    return read_object(watch_dir / status_name(key))


def result_of(watch_dir: Path, key: str | None = None) -> dict[str, Any] | None:
    return read_object(watch_dir / result_name(key))


def must_status(watch_dir: Path, key: str | None = None) -> dict[str, Any]:
    """The status for ``key`` as it is now; fails the test when there is none."""
    st = status_of(watch_dir, key)
    assert st is not None, f"no status for {key or 'legacy'} in {watch_dir}"
    return st


def must_result(watch_dir: Path, key: str | None = None) -> dict[str, Any]:
    """The result for ``key`` as it is now; fails the test when there is none."""
    res = result_of(watch_dir, key)
    assert res is not None, f"no result for {key or 'legacy'} in {watch_dir}"
    return res


def wait_final(watch_dir: Path, key: str | None, input_sha: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the status is final (ok or error) for exactly this input hash."""

    def final() -> dict[str, Any] | None:
        st = status_of(watch_dir, key)
        if st and st.get("input_sha256") == input_sha and st.get("state") in ("ok", "error"):
            return st
        return None

    return wait_for(final, timeout, what=f"final status of {key or 'legacy'} for {input_sha[:12]}")


def wait_error(watch_dir: Path, key: str | None, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for an error status (for inputs that have no readable hash, such as a FIFO)."""

    def err() -> dict[str, Any] | None:
        st = status_of(watch_dir, key)
        return st if st and st.get("state") == "error" else None

    return wait_for(err, timeout, what=f"error status of {key}")


RUNNERS = ("subprocess", "fork", "entry")
"""Every runner the integration suite runs through (a parametrised fixture, ``runner``, in conftest)."""


def fake_model_args(mode: str, *extra: str, runner: str = "subprocess") -> list[str]:
    """The daemon's flags for tests/models/fake_model.py in ``mode``, under ``runner``: a process per request, or
    warm workers that run its ``main`` per request (its ``create`` entry), or a fork server that runs the script
    in a forked child per request, with the same command line."""
    cmd = fake_model_cmd(mode, *extra)
    if runner == "entry":
        return ["--runner", "entry", "--model-entry", f"{MODELS / 'fake_model.py'}:create", "--model-cmd", cmd]
    if runner == "fork":
        return ["--runner", "fork", "--model-cmd", cmd]
    return ["--model-cmd", cmd]


def fake_model_cmd(mode: str, *extra: str) -> str:
    """The ``--model-cmd`` for tests/models/fake_model.py in ``mode``."""
    args = " ".join(shlex.quote(e) for e in extra)
    return f"{PY} {shlex.quote(str(MODELS / 'fake_model.py'))} {mode} --input {{input}} --output {{output}} {args}".strip()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def score_route(route_file: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The published result of ``modelgen-watcher score ROUTE ARGS...`` (one route, no watching)."""
    out = subprocess.run([sys.executable, "-m", "modelgen_watcher", "score", str(route_file), *args],
                         capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, **(env or {})}).stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


class Daemon:
    """``python -m modelgen_watcher`` on a directory, with its JSON log captured to a file."""

    def __init__(self, watch_dir: Path, *args: str, env: dict[str, str] | None = None, log_path: Path | None = None,
                 fd_limit: int | None = None):
        self.watch_dir = watch_dir
        self.fd_limit = fd_limit
        self.args = list(args)
        self.env = {**os.environ, "MODELGEN_LOG_FORMAT": "json", **(env or {})}
        self.log_path = log_path or watch_dir.parent / f"daemon-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelgen_watcher", "run", "--watch-dir", str(self.watch_dir), *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
            preexec_fn=self._limit_fds if self.fd_limit is not None else None,
        )
        if wait_ready:
            self.wait_ready()
        return self

    def _limit_fds(self) -> None:
        """In the daemon's process before exec: at most ``fd_limit`` open files (RLIMIT_NOFILE, soft and hard)."""
        assert self.fd_limit is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    @property
    def health_file(self) -> Path:
        """The heartbeat this daemon writes: its own under ``.modelgen/watchers/`` in shared mode (the tests give
        every shared daemon its ``--watcher-id``)."""
        if "--shared" in self.args:
            watcher = self.args[self.args.index("--watcher-id") + 1]
            return self.watch_dir / ".modelgen" / "watchers" / f"{watcher}.json"
        return self.watch_dir / ".modelgen" / "health.json"

    def wait_ready(self, timeout: float = 30.0) -> None:
        proc = self.proc
        assert proc is not None

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited with {proc.returncode}:\n{self.log_text()}")
            h = read_json(self.health_file)
            return bool(h and h.get("pid") == proc.pid and h.get("ready"))

        wait_for(ready, timeout, what="daemon ready")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if name is None or rec.get("event") == name:
                out.append(rec)
        return out

    def runs(self, key: str | None = "__any__") -> list[dict[str, Any]]:
        """Requests that reached a final outcome (each one model run or validation failure)."""
        return [e for e in self.events("request.done") if key == "__any__" or e.get("key") == key]

    def wait_runs(self, key: str | None, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The request.done lines for ``key`` once there are at least ``count`` (logged after the status)."""

        def enough() -> list[dict[str, Any]] | None:
            runs = self.runs(key)
            return runs if len(runs) >= count else None

        return wait_for(enough, timeout, what=f"{count} runs of {key}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        """Signal the daemon and wait; returns (exit code, seconds it took)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc, time.monotonic() - t0


class DaemonFactory(Protocol):
    """The ``daemon_factory`` fixture: a ``Daemon`` on the test's watch dir, started unless ``start=False``."""

    def __call__(self, *args: str, env: dict[str, str] | None = None, start: bool = True, wait_ready: bool = True,
                 fd_limit: int | None = None) -> Daemon: ...


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, parsed by ``prometheus_client``'s parser, by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text exposition, or None when absent."""
    return samples(text).get((name, frozenset(labels.items())))


def metric(watch_dir: Path, name: str, **labels: str) -> float | None:
    """A sample from the watcher's metrics file (``.modelgen/metrics.prom``), or None when absent."""
    path = watch_dir / ".modelgen" / "metrics.prom"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return sample(text, name, **labels)


def each_thread(pid: int, read: Callable[[int], T]) -> list[T]:
    """``read(tid)`` for every thread of process ``pid``; a thread that ends meanwhile is left out (its /proc
    entries gone, or the system call told it is no more)."""
    values = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            values.append(read(int(tid)))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return values


def proc_status(pid: int, field: str) -> int:
    """A number from /proc/<pid>/status (``VmHWM`` and ``VmRSS`` in kB, ``Threads``)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def health_of(watch_dir: Path, max_age: float = 30.0) -> tuple[bool, str]:
    """What ``modelgen-watcher health`` would answer, through the same function."""
    from modelgen_watcher.volume.health import check

    result = check(watch_dir, max_age)
    return result.healthy, result.message


def _python37() -> str | None:
    """A Python 3.7 that runs (pyenv's shim is on PATH even where 3.7 is not selected)."""
    candidates = [shutil.which("python3.7"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.7*/bin/python3.7")))]
    for python in filter(None, candidates):
        if subprocess.run([python, "-c", "import sys; assert sys.version_info[:2] == (3, 7)"],
                          capture_output=True).returncode == 0:
            return python
    return None


PYTHON37 = _python37()


python37_only = pytest.mark.skipif(PYTHON37 is None, reason="no Python 3.7 on this machine (vermin checks the syntax in static-checks)")
"""For the code that runs on the model's interpreter: upstream's is Python 3.7."""

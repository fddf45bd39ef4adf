"""The reference server under the four attacks of the abuse review, before and after, as one markdown table.

Each column is a real ``modelgen-watcher serve`` subprocess started from one source tree
(the working tree, and the package as of ``--old REV`` extracted with ``git archive``
into a temp dir, imported first because it is the subprocess's working directory),
with the same venv, on a temp watch dir. Per tree, in order:

1. **Slowloris**: 300 connections send a partial head and then one byte every 0.5 s
   for ``--slow-seconds`` (15); a connection the server closes is reopened at once, as
   an attacker would. Meanwhile ``/healthz`` is probed every 0.1 s on a fresh connection:
   a probe succeeds on 200 within 2 s. Also: how many slow connections the server
   closed, and after how long.
2. **Oversized headers**: 40 connections at once each send 99 header lines of 60 KB;
   the server's VmRSS (and its peak, VmHWM) before and after, and what they were answered.
3. **Smuggling**: a POST with two different Content-Lengths, the body hiding a
   ``GET /healthz``; and a POST with ``Transfer-Encoding : chunked`` (space before the
   colon) whose chunk is the hidden request. "Answered" = more than one status line came back.
4. **Long-polls**: a watcher whose model sleeps 60 s keeps one key pending; 300 clients
   at once ``GET /rest/score/retrieve?key=K&wait=10`` while ``/healthz`` is probed 30
   times, 0.3 s apart. Counts of 200/202, 503 (with Retry-After), and errors (reset or
   no answer within 40 s); probe failures and the longest run of consecutive failures.

Run: ``.venv/bin/python bench/server_abuse.py [--old b57ec54]`` from the repository
root; about two minutes. Every process is stopped and every temp dir removed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKE_MODEL = ROOT / "tests" / "models" / "fake_model.py"
PROBE_LIMIT_S = 2.0
ROUTE = json.dumps({"routes": [{"legs": [{"steps": [
    {"end_location": {"lat": 30.2894657, "lng": -97.7367919}, "maneuver": ""},
    {"end_location": {"lat": 30.29, "lng": -97.74}, "maneuver": "turn-left"}]}]}]}).encode()
HIDDEN = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def progress(msg: str) -> None:
    print(f"[server_abuse] {msg}", file=sys.stderr, flush=True)


class Proc:
    """A ``python -m modelgen_watcher`` subprocess run from ``tree``, its JSON log in a file."""

    def __init__(self, tree: Path, log: Path, *args: str) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115
        env = {**os.environ, "MODELGEN_LOG_FORMAT": "json", "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, "-m", "modelgen_watcher", *args], cwd=tree,
                                     stdout=self._fh, stderr=subprocess.STDOUT, env=env)

    def wait_event(self, name: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited: {self.log.read_text()[-2000:]}")
            for line in self.log.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("event") == name:
                    return dict(json.loads(line))
            time.sleep(0.05)
        raise RuntimeError(f"no {name} within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def probe(port: int) -> bool:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_LIMIT_S)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200 and time.monotonic() - t0 <= PROBE_LIMIT_S
    except OSError:
        return False
    finally:
        conn.close()


def longest_run(flags: list[bool]) -> int:
    best = run = 0
    for ok in flags:
        run = 0 if ok else run + 1
        best = max(best, run)
    return best


def read_to_eof(sock: socket.socket, limit_s: float) -> bytes:
    deadline = time.monotonic() + limit_s
    chunks = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# -- 1. slowloris -----------------------------------------------------------------------


def slowloris(port: int, seconds: float, count: int = 300) -> dict[str, Any]:
    start = b"GET /rest/score/retrieve?key=abc HTTP/1.1\r\nHost: x\r\nX-Slow: "
    socks: list[tuple[socket.socket, float]] = []

    def open_one() -> tuple[socket.socket, float]:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(start)
        sock.setblocking(False)
        return sock, time.monotonic()

    for _ in range(count):
        socks.append(open_one())
    closed_after: list[float] = []
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            for i, (sock, opened) in enumerate(socks):
                try:
                    gone = sock.recv(4096) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if not gone:
                    try:
                        sock.send(b"x")
                        continue
                    except OSError:
                        pass
                closed_after.append(time.monotonic() - opened)
                sock.close()
                try:
                    socks[i] = open_one()
                except OSError:
                    pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    results = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        results.append(probe(port))
        time.sleep(0.1)
    stop.set()
    thread.join(10)
    for sock, _ in socks:
        sock.close()
    refused = [t for t in closed_after if t < 2]
    cut = [t for t in closed_after if t >= 2]
    return {
        "probes ok": f"{sum(results)}/{len(results)} ({100 * sum(results) / len(results):.0f} %)",
        "longest probe failure run": longest_run(results),
        "slow connections refused at once (< 2 s)": len(refused),
        "slow connections cut by a deadline": len(cut),
        "median s until cut": f"{statistics.median(cut):.1f}" if cut else f"never (> {seconds:g})",
    }


# -- 2. oversized headers ------------------------------------------------------------------


def header_attack(port: int, pid: int) -> dict[str, Any]:
    value = b"v" * 60_000
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, value) for i in range(99)) + b"\r\n"
    rss0, hwm0 = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
    answers: list[bytes] = []
    barrier = threading.Barrier(40)

    def attack() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            barrier.wait(30)

            def send() -> None:
                try:
                    sock.sendall(head)
                except OSError:
                    pass

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            answers.append(read_to_eof(sock, 30))
            sender.join(30)

    threads = [threading.Thread(target=attack) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    codes: dict[str, int] = {}
    for a in answers:
        code = a[9:12].decode() if a.startswith(b"HTTP/1.1 ") else "closed"
        codes[code] = codes.get(code, 0) + 1
    return {
        "VmRSS growth MB": f"{(vm_kib(pid, 'VmRSS') - rss0) / 1024:.1f}",
        "VmHWM (peak) growth MB": f"{(vm_kib(pid, 'VmHWM') - hwm0) / 1024:.1f}",
        "answers": ", ".join(f"{n} x {c}" for c, n in sorted(codes.items())),
    }


# -- 3. smuggling -----------------------------------------------------------------------


def smuggling(port: int) -> dict[str, Any]:
    two_lengths = (b"POST /rest/score/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s%s"
                   % (len(ROUTE), len(ROUTE + HIDDEN), ROUTE, HIDDEN))
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(HIDDEN), HIDDEN)
    spaced_te = (b"POST /rest/score/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n%s" % chunk)
    out = {}
    for name, payload in (("two Content-Lengths", two_lengths), ("Transfer-Encoding : chunked", spaced_te)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(payload)
            answer = read_to_eof(sock, 10)
        codes = [part[:3].decode() for part in answer.split(b"HTTP/1.1 ")[1:]]
        out[f"{name}: hidden request answered"] = f"{'yes' if len(codes) > 1 else 'no'} ({' '.join(codes)})"
    return out


# -- 4. long-polls ------------------------------------------------------------------------


def long_polls(port: int, key: str, count: int = 300) -> dict[str, Any]:
    outcomes: list[str] = []
    lock = threading.Lock()

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
        try:
            conn.request("GET", f"/rest/score/retrieve?key={key}&wait=10")
            resp = conn.getresponse()
            resp.read()
            outcome = str(resp.status) + ("+Retry-After" if resp.status == 503 and resp.getheader("Retry-After") else "")
        except OSError as exc:
            outcome = f"error ({type(exc).__name__})"
        finally:
            conn.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # pacing: let the flood arrive before probing
    results = []
    for _ in range(30):
        results.append(probe(port))
        time.sleep(0.3)
    for t in threads:
        t.join(60)
    tally: dict[str, int] = {}
    for o in outcomes:
        tally[o] = tally.get(o, 0) + 1
    return {
        "long-poll answers": ", ".join(f"{n} x {o}" for o, n in sorted(tally.items())),
        "probe failures (of 30)": len(results) - sum(results),
        "longest probe failure run": longest_run(results),
    }


# -- driver -------------------------------------------------------------------------------


def measure(tree: Path, work: Path, slow_seconds: float) -> dict[str, Any]:
    """The four phases, each against a fresh server so that one attack's leftovers cannot skew the next."""
    watch = work / "data"
    watch.mkdir(parents=True)
    figures: dict[str, Any] = {}
    phases: list[tuple[str, Callable[[int, int], dict[str, Any]]]] = [  # each called with (port, server pid)
        (f"slowloris for {slow_seconds:g} s", lambda port, pid: slowloris(port, slow_seconds)),
        ("oversized headers", header_attack),
        ("smuggling", lambda port, pid: smuggling(port)),
        ("300 long-polls", lambda port, pid: long_polls_on_a_slow_model(tree, work, watch, port)),
    ]
    for n, (name, phase) in enumerate(phases, start=1):
        progress(f"{tree}: {name}")
        server = Proc(tree, work / f"server-{n}.log", "serve", "--watch-dir", str(watch), "--port", "0")
        try:
            port = int(server.wait_event("server.ready")["port"])
            figures.update({f"{n}. {k}": v for k, v in phase(port, server.proc.pid).items()})
        finally:
            server.stop()
    return figures


def long_polls_on_a_slow_model(tree: Path, work: Path, watch: Path, port: int) -> dict[str, Any]:
    model = f"{sys.executable} {FAKE_MODEL} slow --sleep 60 --input {{input}} --output {{output}}"
    daemon = Proc(tree, work / "daemon.log", "run", "--watch-dir", str(watch), "--model-cmd", model)
    try:
        _wait_ready(watch, daemon)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/rest/score/upload", ROUTE, {"Content-Type": "application/json"})
        key = json.loads(conn.getresponse().read())["key"]
        conn.close()
        return long_polls(port, key)
    finally:
        daemon.stop()


def _wait_ready(watch: Path, daemon: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    health = watch / ".modelgen" / "health.json"
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {daemon.log.read_text()[-2000:]}")
        try:
            doc = json.loads(health.read_text())
            if doc.get("ready") and doc.get("pid") == daemon.proc.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError("daemon not ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="b57ec54", help="git revision of the 'before' column (default b57ec54)")
    parser.add_argument("--slow-seconds", type=float, default=15.0, help="length of the slowloris phase (default 15)")
    args = parser.parse_args(argv)

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    root = Path(tempfile.mkdtemp(prefix="modelgen-abuse-"))
    try:
        old_tree = root / "old"
        old_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "modelgen_watcher"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        columns = {f"before ({args.old})": measure(old_tree, root / "run-old", args.slow_seconds),
                   "after (working tree)": measure(ROOT, root / "run-new", args.slow_seconds)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    names = list(next(iter(columns.values())))
    print("| measure | " + " | ".join(columns) + " |")
    print("| --- | " + " | ".join("---" for _ in columns) + " |")
    for name in names:
        print(f"| {name} | " + " | ".join(str(col.get(name, "")) for col in columns.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

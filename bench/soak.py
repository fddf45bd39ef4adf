"""A long soak of the watcher and the reference server under mixed good and bad traffic: do they stay flat?

What one run does, on a throw-away directory, for ``--minutes`` (default 10):

- starts ``modelgen-watcher run`` (embedded model) and ``modelgen-watcher serve`` on one folder;
- drives them at about ``--rate`` requests a second, one client thread each: good routes
  POSTed and fetched back by key (checked by hash), uploads that must be refused (not
  JSON, not a route, string coordinates, a million ``{}``, over the size limit), and
  files dropped straight onto the volume that must be refused (invalid keys, invalid
  JSON, a directory where an input goes);
- samples each process's RSS, open fds and threads (``/proc``) after a 30 s warm-up and
  at the end, and prints them side by side with the counts of each kind of answer.

A leak shows as fds or threads that grow with the number of requests, or RSS that
keeps climbing after the warm-up. The process is judged flat when fds and threads end
within a few of where they started and RSS within 20 MB.

Run: ``.venv/bin/python bench/soak.py [--minutes 10] [--rate 8]`` (``make reliability``).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from modelgen_watcher.volume.names import Names

NAMES = Names()
WARMUP = float(os.environ.get("SOAK_WARMUP", "30"))


def sample(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as fh:
        status = dict(line.split(":", 1) for line in fh)
    return {
        "rss_mb": int(status["VmRSS"].split()[0]) // 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
    }


def _route(i: int) -> bytes:
    steps = [{"end_location": {"lat": 30.28 + 0.0001 * j + 1e-7 * i, "lng": -97.73}, "maneuver": "turn-left" * (j % 2)}
             for j in range(5)]
    return json.dumps({"routes": [{"legs": [{"steps": steps}]}]}).encode()


BAD_UPLOADS: dict[str, tuple[bytes, int]] = {
    "not JSON": (b"{not json", 400),
    "not a route": (b'{"routes": [{"legs": []}]}', 400),
    "string coordinates": (b'{"routes":[{"legs":[{"steps":[{"end_location":{"lat":"1","lng":2}}]}]}]}', 400),
    "a million {}": (b'{"routes":[' + b",".join([b"{}"] * 1_000_000) + b"]}", 400),
    "over the size limit": (b" " * (6 * 1024 * 1024), 413),
}


class Load:
    def __init__(self, port: int, watch_dir: Path) -> None:
        self.port, self.watch_dir = port, watch_dir
        self.counts: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.lock = threading.Lock()
        self.i = 0

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=90)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def one(self) -> None:
        with self.lock:
            self.i += 1
            i = self.i
        roll = random.random()
        if roll < 0.6:
            status, body = self.request("POST", "/rest/score/upload", _route(i))
            ack = json.loads(body)
            status, body = self.request("GET", f"/rest/score/retrieve?key={ack['key']}&wait=60")
            ok = status == 200 and json.loads(body)["meta"]["input_sha256"] == ack["input_sha256"]
            self.count("good route scored (200, hash checked)" if ok else f"good route FAILED ({status})")
            if not ok:
                with self.lock:
                    self.unexpected.append(f"{time.strftime('%H:%M:%S')} {status} {body[:300]!r}")
        elif roll < 0.85:
            name, (payload, expected) = random.choice(list(BAD_UPLOADS.items()))
            try:
                status, _ = self.request("POST", "/rest/score/upload", payload)
            except (BrokenPipeError, ConnectionResetError):
                if expected != 413:
                    raise
                status = 413  # answered and closed before the body was read, as it should be: the send fails
            self.count(f"bad upload refused ({expected})" if status == expected else f"bad upload: {name} got {status}")
        else:
            kind = random.choice(["invalid key", "invalid JSON", "directory"])
            if kind == "invalid key":
                (self.watch_dir / f"gps_input_route.bad key {i}.json").write_bytes(b"{}")
            elif kind == "invalid JSON":
                tmp = self.watch_dir / f".soak-{i}.tmp"
                tmp.write_bytes(b'{"routes": [')
                os.replace(tmp, self.watch_dir / NAMES.input(f"broken{i}"))
            else:
                (self.watch_dir / NAMES.input(f"dir{i}")).mkdir()
            self.count(f"bad file dropped ({kind})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=8.0, help="requests a second, all clients together")
    parser.add_argument("--keep", type=Path, help="copy both logs here at the end")
    args = parser.parse_args()
    env = {**os.environ, "MODELGEN_LOG_FORMAT": "json", "MODELGEN_LOG_LEVEL": "warning"}
    with tempfile.TemporaryDirectory(prefix="modelgen-soak-") as tmp:
        watch_dir = Path(tmp) / "data"
        watch_dir.mkdir()
        logs = Path(tmp)
        with open(logs / "watcher.log", "wb") as out:  # the child keeps its own copy of the descriptor
            watcher = subprocess.Popen([sys.executable, "-m", "modelgen_watcher", "run", "--watch-dir", str(watch_dir)],
                                       stdout=out, stderr=subprocess.STDOUT, env=env)
        with open(logs / "server.log", "wb") as out:
            server = subprocess.Popen([sys.executable, "-m", "modelgen_watcher", "serve", "--watch-dir",
                                       str(watch_dir), "--port", "0", "--log-level", "info"],
                                      stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            port = None
            while port is None:
                time.sleep(0.1)
                for line in (logs / "server.log").read_text().splitlines():
                    if '"server.ready"' in line:
                        port = json.loads(line)["port"]
            load = Load(port, watch_dir)
            stop = threading.Event()
            workers = 4

            def client() -> None:
                while not stop.is_set():
                    t = time.monotonic()
                    try:
                        load.one()
                    except (OSError, ValueError, KeyError) as exc:
                        load.count(f"client error: {type(exc).__name__}")
                    stop.wait(max(0.0, workers / args.rate - (time.monotonic() - t)))

            threads = [threading.Thread(target=client) for _ in range(workers)]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            time.sleep(WARMUP)
            start = {"watcher": sample(watcher.pid), "server": sample(server.pid)}
            stop.wait(max(0.0, args.minutes * 60 - WARMUP))
            end = {"watcher": sample(watcher.pid), "server": sample(server.pid)}
            stop.set()
            for t in threads:
                t.join()
            seconds = time.monotonic() - t0
        finally:
            for proc in (watcher, server):
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
        print(f"soak: {seconds / 60:.1f} min, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
              f"{sum(load.counts.values())} requests, exit codes watcher {watcher.returncode} server {server.returncode}\n")
        print(f"| process | RSS MB (after {WARMUP:g} s → end) | open fds | threads |\n| --- | ---: | ---: | ---: |")
        flat = True
        for name in ("watcher", "server"):
            a, b = start[name], end[name]
            print(f"| {name} | {a['rss_mb']} → {b['rss_mb']} | {a['fds']} → {b['fds']} | {a['threads']} → {b['threads']} |")
            flat &= b["rss_mb"] - a["rss_mb"] <= 20 and b["fds"] - a["fds"] <= 4 and b["threads"] - a["threads"] <= 4
        print("\n| answer | count |\n| --- | ---: |")
        for what, n in sorted(load.counts.items()):
            print(f"| {what} | {n} |")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for log_name in ("watcher.log", "server.log"):
                shutil.copy(logs / log_name, args.keep / log_name)
        for line in load.unexpected[:10]:
            print("unexpected:", line)
        failures = [w for w in load.counts if "FAILED" in w or "got" in w or "client error" in w]
        print(f"\nflat: {'yes' if flat else 'NO'}; unexpected answers: {len(failures)}")
        return 0 if flat and not failures and watcher.returncode == 0 and server.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""``kill -9`` the watcher over and over under load while a reader checks every status against its result and input.

What one run does, on a throw-away directory:

- a **writer** keeps publishing keyed requests (temp file, then rename), rewriting the
  same 20 keys with new bytes, nine good routes for every invalid one;
- a **killer** starts ``python -m modelgen_watcher run`` with the embedded model, waits a
  random 0.1-1.5 s (so kills land during start-up, catch-up, model runs and publishes)
  and sends SIGKILL, ``--kills`` times;
- a **reader** reads every key's status, result and status again, over and over. When
  the two status reads agree and say ``ok``, the result must be there and name the same
  input hash (CONTRACT section 3, guarantees 4 and 5); every hash a status or result
  names must be the hash of bytes really written to that key (guarantee 3); and no
  status or result may ever be torn (unparsable) (guarantee 4).

Then the writer stops, one last watcher is started, and every key must reach a final
status for the bytes on disk (guarantee 6: nothing lost). Requests given up after
repeated interruptions (``retry.MAX_INTERRUPTIONS``) are counted apart: they end in an
error status of their own, they are not lost.

Run: ``.venv/bin/python bench/killloop.py [--kills 100]`` (``make reliability`` runs it with
the soak). About 2 minutes for 100 kills on a 2-core machine. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelgen_watcher.volume.names import Names

NAMES = Names()
KEYS = [f"k{i:02d}" for i in range(20)]


def _route(i: int) -> bytes:
    steps = [{"end_location": {"lat": 30.28 + 0.001 * j + 1e-6 * i, "lng": -97.73}, "maneuver": "turn-left" * (j % 2)}
             for j in range(3)]
    return json.dumps({"routes": [{"legs": [{"steps": steps}]}], "n": i}).encode()


@dataclass
class Tally:
    written: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KEYS})
    requests: int = 0
    checks: int = 0
    ok_checks: int = 0
    torn: int = 0
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def writer(watch_dir: Path, tally: Tally, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        key = random.choice(KEYS)
        data = _route(i) if i % 10 else b'{"routes": [{"legs": "broken %d"}]}' % i
        with tally.lock:
            tally.written[key].add(hashlib.sha256(data).hexdigest())
            tally.requests += 1
        tmp = watch_dir / f".writer-{i}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, watch_dir / NAMES.input(key))
        stop.wait(random.uniform(0.005, 0.05))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def reader(watch_dir: Path, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        for key in KEYS:
            s1, res, s2 = (_read(watch_dir / NAMES.status(key)), _read(watch_dir / NAMES.result(key)),
                           _read(watch_dir / NAMES.status(key)))
            docs = []
            for raw in (s1, res, s2):
                try:
                    docs.append(json.loads(raw) if raw is not None else None)
                except ValueError:
                    docs.append(None)
                    with tally.lock:
                        tally.torn += 1
            st, result, _ = docs
            with tally.lock:
                tally.checks += 1
                known = tally.written[key]
                if st and st.get("input_sha256") and st["input_sha256"] not in known:
                    tally.violations.append(f"{key}: status names bytes never written")
                if result and result["meta"]["input_sha256"] not in known:
                    tally.violations.append(f"{key}: result names bytes never written")
                if s1 is not None and s1 == s2 and st and st["state"] == "ok":
                    tally.ok_checks += 1
                    if result is None:
                        tally.violations.append(f"{key}: ok status without its result")
                    elif result["meta"]["input_sha256"] != st["input_sha256"]:
                        tally.violations.append(f"{key}: ok status beside another input's result")


def start_watcher(watch_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "modelgen_watcher", "run", "--watch-dir", str(watch_dir)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "MODELGEN_LOG_FORMAT": "json"})


def leftover_models(watch_dir: Path) -> int:
    """Model processes still running with a snapshot of this watch dir on their command line."""
    marker = str(watch_dir / ".modelgen").encode()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            count += marker in cmdline and b"reference_model" in cmdline
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelgen-killloop-") as tmp:
        watch_dir, log = Path(tmp) / "data", Path(tmp) / "watcher.log"
        watch_dir.mkdir()
        tally, stop_writing, stop_reading = Tally(), threading.Event(), threading.Event()
        threads = [threading.Thread(target=writer, args=(watch_dir, tally, stop_writing)),
                   threading.Thread(target=reader, args=(watch_dir, tally, stop_reading))]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        try:
            for _ in range(args.kills):
                proc = start_watcher(watch_dir, log)
                time.sleep(random.uniform(0.1, 1.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            kill_seconds = time.monotonic() - t0
            stop_writing.set()
            threads[0].join()
            final = start_watcher(watch_dir, log)
            current = {k: hashlib.sha256((watch_dir / NAMES.input(k)).read_bytes()).hexdigest()
                       for k in KEYS if (watch_dir / NAMES.input(k)).exists()}
            deadline = time.monotonic() + 120
            pending = dict(current)
            while pending and time.monotonic() < deadline:
                for key, sha in list(pending.items()):
                    try:
                        st = json.loads((watch_dir / NAMES.status(key)).read_bytes())
                    except (OSError, ValueError):
                        continue
                    if st.get("input_sha256") == sha and st.get("state") in ("ok", "error"):
                        del pending[key]
                time.sleep(0.05)
            given_up = 0
            for key in current:
                try:
                    st = json.loads((watch_dir / NAMES.status(key)).read_bytes())
                except (OSError, ValueError):
                    continue
                given_up += "stopped" in ((st.get("error") or {}).get("message") or "")
            final.send_signal(signal.SIGTERM)
            final.wait(15)
            leftovers = leftover_models(watch_dir)
        finally:
            stop_writing.set()
            stop_reading.set()
            for t in threads:
                t.join()
        runs = sum(1 for line in log.read_text(errors="replace").splitlines() if '"request.done"' in line)
        rows = [
            ("kills (SIGKILL at a random 0.1-1.5 s after start)", f"{args.kills} in {kill_seconds:.0f} s"),
            ("requests written (20 keys rewritten, 1 in 10 invalid)", tally.requests),
            ("requests finished by a watcher (request.done lines)", runs),
            ("reader checks (status, result, status)", f"{tally.checks} ({tally.ok_checks} of a stable ok status)"),
            ("torn status or result files read", tally.torn),
            ("ok status without its result, or beside another input's", sum("ok status" in v for v in tally.violations)),
            ("status or result naming bytes never written", sum("never written" in v for v in tally.violations)),
            ("keys without a final status for their last bytes (lost)", len(pending)),
            ("requests given up after repeated interruptions", given_up),
            ("model processes left running afterwards", leftovers),
        ]
        print(f"kill loop: {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
        print("| measure | value |\n| --- | ---: |")
        for name, value in rows:
            print(f"| {name} | {value} |")
        for v in tally.violations[:10]:
            print("violation:", v)
        return 1 if tally.violations or tally.torn or pending else 0


if __name__ == "__main__":
    sys.exit(main())

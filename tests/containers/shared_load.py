"""The container test's shared-mode load: requests posted through the server, their answers and who scored them.

Run on the host's own Python (standard library only), by ``tests/containers/run.sh``:

    shared_load.py post BASE_URL N REQUESTS.json      post N distinct routes, write their keys and hashes
    shared_load.py done VOLUME REQUESTS.json          print how many of them have an ``ok`` status on the volume
    shared_load.py answers BASE_URL REQUESTS.json S   GET each by key (waiting up to S seconds in all): 200, its hash
    shared_load.py runs REQUESTS.json KILLED.log LOG...   each scored once, or twice with one by the killed watcher

Counting ``request.done`` lines per key across the watchers' logs is how "each scored once" is checked: a
watcher logs one when a request ends, so a key with two lines was scored twice. Only what the killed watcher had
in flight may differ from one line: its run cut short and redone by another (one line), finished and published
but killed before its line (none), or finished and logged but not marked done, then redone (two). One worker a
watcher, and at most two more requests taken ahead by a warm runner (``warm.SHARED_OVERLAP``): at most 3 such keys,
none with 3 lines.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any


def route(i: int) -> bytes:
    """A two-step route in Austin, distinct per ``i`` so that every request has its own hash."""
    lat = round(30.2894657 + 0.0001 * i, 7)
    doc = {"routes": [{"legs": [{"steps": [
        {"end_location": {"lat": lat, "lng": -97.7367919}, "maneuver": ""},
        {"end_location": {"lat": 30.29, "lng": -97.74}, "maneuver": "turn-left"}]}]}]}
    return json.dumps(doc).encode()


def request(url: str, body: bytes | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP exchange: the status and body, whatever the status (urllib raises on 4xx/5xx)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def post(base: str, n: int, out: Path) -> None:
    requests = []
    for i in range(n):
        raw = route(i)
        code, body = request(f"{base}/upload", raw)
        if code != 200:
            sys.exit(f"upload {i}: {code} {body[:300]!r}")
        ack = json.loads(body)
        if ack["input_sha256"] != hashlib.sha256(raw).hexdigest():
            sys.exit(f"upload {i}: the server names hash {ack['input_sha256']}, not the route's")
        requests.append({"key": ack["key"], "sha": ack["input_sha256"]})
    out.write_text(json.dumps(requests))
    print(f"posted {n} requests")


def load(path: Path) -> list[dict[str, str]]:
    requests: list[dict[str, str]] = json.loads(path.read_text())
    return requests


def done(volume: Path, requests: list[dict[str, str]]) -> None:
    count = 0
    for r in requests:
        try:
            status = json.loads((volume / f"gps_scored_route.{r['key']}.status.json").read_bytes())
        except (OSError, ValueError):
            continue  # not there yet, or replaced while read
        count += status.get("state") == "ok" and status.get("input_sha256") == r["sha"]
    print(count)


def answers(base: str, requests: list[dict[str, str]], budget: float) -> None:
    """Every request answered 200 with a result naming its hash, within ``budget`` seconds for all."""
    deadline = time.monotonic() + budget
    failures = []
    for r in requests:
        while True:
            left = max(1, min(30, int(deadline - time.monotonic())))
            code, body = request(f"{base}/retrieve?key={r['key']}&wait={left}", timeout=left + 10)
            if code != 202 or time.monotonic() > deadline:
                break
        if code != 200:
            failures.append(f"{r['key']}: {code} {body[:200]!r}")
            continue
        meta: dict[str, Any] = json.loads(body)["meta"]
        if meta["input_sha256"] != r["sha"]:
            failures.append(f"{r['key']}: the result names {meta['input_sha256']}, not {r['sha']}")
    if failures:
        sys.exit(f"{len(failures)} of {len(requests)} requests not answered right:\n" + "\n".join(failures))
    print(f"all {len(requests)} answered 200, each with its own input's hash")


def done_lines(log: Path) -> Counter[str]:
    """The keys of a watcher's ``request.done`` lines (JSON log lines; anything else is skipped)."""
    keys: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if '"request.done"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "request.done":
            if record.get("outcome") != "ok":
                sys.exit(f"{log.name}: a request did not end ok: {line}")
            keys[record.get("key")] += 1
    return keys


def runs(requests: list[dict[str, str]], killed_log: Path, logs: list[Path], in_flight: int = 3) -> None:
    killed = done_lines(killed_log)
    survivors = [done_lines(log) for log in logs]
    total = sum(survivors, killed.copy())
    odd = {r["key"]: [killed[r["key"]]] + [s[r["key"]] for s in survivors] for r in requests if total[r["key"]] != 1}
    too_many = {k: v for k, v in odd.items() if sum(v) > 2}
    if too_many or len(odd) > in_flight:
        sys.exit(f"requests not scored once, beyond the killed watcher's {in_flight} in flight "
                 f"(lines in the killed watcher's log, then the others'): {odd}")
    spread = [sum(s[r["key"]] for r in requests) for s in survivors]
    which = f"all but {len(odd)}, in flight on the killed watcher: {odd}" if odd else "one request.done line each"
    print(f"each request scored once ({which}); request.done lines per watcher: "
          f"the killed one {sum(killed[r['key']] for r in requests)}, the others {spread}")


def main(argv: list[str]) -> None:
    match argv:
        case ["post", base, n, out]:
            post(base, int(n), Path(out))
        case ["done", volume, reqs]:
            done(Path(volume), load(Path(reqs)))
        case ["answers", base, reqs, budget]:
            answers(base, load(Path(reqs)), float(budget))
        case ["runs", reqs, killed_log, *logs] if logs:
            runs(load(Path(reqs)), Path(killed_log), [Path(log) for log in logs])
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The page's costs: its queue on a volume of many requests, and the time from "Score" to the picture.

What one run measures and prints as one markdown table:

1. **Queue, in process** (``volume.queue.RecentRequests.read``) on a watch dir of
   ``--requests`` keyed requests (an input and a status each, 10,000 by default): the
   first look (one ``scandir``, a ``stat`` per input and status, the newest 100 statuses
   read); a look after one status changed (the scan again, one status read); a look
   at a volume that did not change (one ``stat`` of the directory). Against it, the
   naive way: read and parse every status file, sort by time, keep 100.
2. **Queue over HTTP**: ``GET /ui/queue`` of a running ``serve`` on the same volume,
   one status changed before each request (so each answer comes from a fresh scan).
3. **Upload to picture over HTTP**: ``serve`` and a watcher (the embedded reference
   model, warm worker) on a fresh volume: ``POST`` a bundled sample, ``retrieve`` with
   ``wait``, ``GET /ui/picture.svg``, the page's three requests in sequence.
4. **Upload to picture in Chromium** (skipped without it): the page's "Score the
   sample" button clicked, until the picture is in the document and a frame has been
   painted, timed in the page.

Why: the issue asks for a queue "cheap enough to refresh every second" on a volume of
thousands of requests, and for a sample "coloured within a second".

Run: ``.venv/bin/python bench/page.py [--requests N] [--runs R] [--screenshot docs/page.png]``
(defaults 10,000 and 10; about 30 s on a 2-core machine, most of it writing the volume
and the HTTP row's pauses). ``--screenshot`` also saves the page, as the README shows it.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test suite's server, watcher and browser drivers: one home each

from modelgen_watcher.volume.documents import read_status  # noqa: E402
from modelgen_watcher.volume.names import Layout, Names  # noqa: E402
from modelgen_watcher.volume.queue import MIN_INTERVAL_S, RecentRequests  # noqa: E402
from modelgen_watcher.volume.schemas import State, Status  # noqa: E402
from tests.e2e.browser import CHROMIUM, Browser  # noqa: E402
from tests.e2e.conftest import Server  # noqa: E402
from tests.helpers import Daemon  # noqa: E402

SAMPLE = ROOT / "modelgen_watcher" / "server" / "ui" / "samples" / "ut-tower-to-zilker-park.json"


def fill(layout: Layout, requests: int) -> None:
    """``requests`` keyed requests, each an input and an ``ok`` status, a second apart in mtime."""
    base = time.time_ns() - (requests + 100) * 10**9
    route = SAMPLE.read_bytes()
    for i in range(requests):
        key = f"bench{i:06d}"
        status = Status(state=State.ok, key=key, input_sha256="0" * 64, started_at="2026-11-29T10:00:00.000Z",
                        finished_at="2026-11-29T10:00:00.007Z", duration_ms=7)
        for path, data in ((layout.input(key), route), (layout.status(key), status.model_dump_json().encode())):
            path.write_bytes(data)
            os.utime(path, ns=(base + i * 10**9, base + i * 10**9))
    os.utime(layout.root, ns=(base, base))  # a quiet volume: last changed long ago


def touch_status(layout: Layout, key: str) -> None:
    """Replace one status as the watcher does (a rename), which changes the directory."""
    tmp = layout.root / ".bench.tmp"
    status = Status(state=State.running, key=key, started_at="2026-11-29T10:00:01.000Z")
    tmp.write_bytes(status.model_dump_json().encode())
    os.replace(tmp, layout.status(key))


def naive(layout: Layout, limit: int = 100) -> list[Status]:
    """Every status read and parsed, sorted by time: what the queue endpoint must not do each second."""
    found = []
    for path in layout.root.glob("*.status.json"):
        read = read_status(path)
        if read is not None:
            found.append(read)
    return [s for s, _ in heapq.nlargest(limit, found, key=lambda pair: pair[1])]


def timed(fn: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def row(what: str, ms: list[float], notes: str) -> str:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"| {what} | {statistics.median(ms):.1f} | {p95:.1f} | {max(ms):.1f} | n={len(ms)}; {notes} |"


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
        body: bytes = resp.read()
        return body


def post(port: int, path: str, body: bytes) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: bytes = resp.read()
        return answer


def queue_rows(tmp: Path, requests: int, runs: int) -> list[str]:
    root = tmp / "many"
    root.mkdir()
    layout = Layout(root, Names())
    fill(layout, requests)
    rows = []
    first = timed(lambda: RecentRequests(layout, min_interval=0).read(), runs)
    rows.append(row(f"queue, first look at {requests:,} requests", first, "scandir, a stat per status, 100 statuses read"))
    recent = RecentRequests(layout, min_interval=0)
    recent.read()
    reads0 = recent.files_read
    changed = timed(recent.read, runs, before=lambda: touch_status(layout, f"bench{requests - 1:06d}"))
    rows.append(row("queue, one status changed", changed,
                    f"scandir and status stats again, {(recent.files_read - reads0) / runs:g} status read per look"))
    os.utime(root, ns=(time.time_ns() - 10**10,) * 2)  # quiet again
    recent.read()
    scans0 = recent.scans
    quiet = timed(recent.read, runs)
    rows.append(row("queue, nothing changed", quiet, f"one stat of the directory; {recent.scans - scans0} scans"))
    slow = timed(lambda: naive(layout), max(3, runs // 3))
    rows.append(row(f"naive: read and parse all {requests:,} statuses", slow, "what a look must not cost"))

    server = Server(root, tmp / "serve-many.log")
    try:
        get(server.port, "/ui/queue")

        def before() -> None:
            time.sleep(MIN_INTERVAL_S + 0.05)  # past the shared answer's lifetime: a scan each time
            touch_status(layout, f"bench{requests - 2:06d}")

        http = timed(lambda: get(server.port, "/ui/queue"), runs, before=before)
        size = len(get(server.port, "/ui/queue"))
        rows.append(row("`GET /ui/queue`, one status changed", http, f"a fresh scan each time; {size:,} bytes of JSON"))
    finally:
        server.stop()
    return rows


def picture_rows(tmp: Path, runs: int, screenshot: Path | None) -> list[str]:
    root = tmp / "fresh"
    root.mkdir()
    daemon = Daemon(root, "--runner", "entry", log_path=tmp / "daemon.log").start()
    server = Server(root, tmp / "serve.log")
    rows = []
    try:
        sample = SAMPLE.read_bytes()

        def upload_to_picture() -> None:
            key = json.loads(post(server.port, "/rest/score/upload", sample))["key"]
            get(server.port, f"/rest/score/retrieve?key={key}&wait=10")
            get(server.port, f"/ui/picture.svg?key={key}")

        if screenshot is not None:  # the README's, as a new user sees the page: one sample scored, the queue below
            with Browser(tmp / "shot", width=960, height=900) as shooter:
                shooter.goto(f"http://127.0.0.1:{server.port}/")
                shooter.wait_for("document.querySelectorAll('#sample option').length >= 3")
                shooter.js("document.querySelector('#sample').value = '/ui/samples/mueller-to-the-capitol.json'")
                shooter.js(CLICK_TO_PAINT)
                shooter.wait_for("document.querySelector('#queue tr.mine td:nth-child(2)')?.textContent === 'ok'")
                shooter.screenshot(screenshot)
        http = timed(upload_to_picture, runs)
        rows.append(row("upload, retrieve, picture over HTTP", http, "the sample with 2 routes, 19 steps; reference "
                                                                         "model, warm worker"))
        if CHROMIUM is None:
            rows.append("| upload to picture in Chromium | | | | skipped: no chromium |")
            return rows
        browser = Browser(tmp / "profile", width=960, height=800)
        try:
            browser.goto(f"http://127.0.0.1:{server.port}/")
            browser.wait_for("document.querySelectorAll('#sample option').length >= 3")
            browser.js("document.querySelector('#sample').value = '/ui/samples/ut-tower-to-zilker-park.json'")
            in_page = [float(browser.js(CLICK_TO_PAINT)) for _ in range(runs)]
            rows.append(row("upload to picture in Chromium", in_page, "click to the frame painted with the picture, "
                                                                       "timed in the page"))
        finally:
            browser.close()
    finally:
        server.stop()
        daemon.stop()
    return rows


CLICK_TO_PAINT = """new Promise((resolve) => {
  const figure = document.querySelector('#picture');
  const t0 = performance.now();
  const seen = new MutationObserver(() => {
    if (!figure.querySelector('svg')) return;
    seen.disconnect();
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
  });
  seen.observe(figure, {childList: true});
  document.querySelector('#score-sample').click();
})"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests on the volume for the queue rows")
    parser.add_argument("--runs", type=int, default=10, help="measurements per row")
    parser.add_argument("--screenshot", type=Path, help="save the page in Chromium here as PNG (docs/page.png)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        rows = queue_rows(Path(tmp), args.requests, args.runs) + picture_rows(Path(tmp), args.runs, args.screenshot)
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    print("| what | median ms | p95 ms | max ms | notes |")
    print("| --- | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Inputs are picked up however they are written, and the content scored last is the content present last."""

from __future__ import annotations

import json
import os
import threading
import time

from tests.helpers import drop, encode, input_name, must_result, result_name, route, sha, status_name, wait_final


def assert_scored(watch_dir, key, raw):
    st = wait_final(watch_dir, key, sha(raw))
    assert st["state"] == "ok", st
    res = must_result(watch_dir, key)
    assert res["meta"]["input_sha256"] == sha(raw)
    return res


def test_atomic_writer_legacy_name(daemon, watch_dir):
    raw = drop(watch_dir, route(["", "turn-left"]))
    res = assert_scored(watch_dir, None, raw)
    assert [p["score"] for p in res["routes"][0]] == [0.939394, 0.911523]
    assert res["totalScores"] == [(0.939394 + 0.911523) / 2]
    assert res["routes"][0][0]["lat"] == 30.2894657
    assert res["meta"]["model"] == "reference"
    assert len(daemon.wait_runs(None)) == 1


def test_atomic_writer_keyed(daemon, watch_dir):
    raw = drop(watch_dir, route(["", "", ""], routes=2), key="user-1")
    res = assert_scored(watch_dir, "user-1", raw)
    assert len(res["routes"]) == 2 and all(len(r) == 3 for r in res["routes"])
    assert not (watch_dir / "gps_scored_route.json").exists()


def test_in_place_writer_in_chunks_is_never_scored_half_written(daemon_factory, watch_dir, observer):
    from tests.conftest import OBSERVER_ARGS

    # A generous settle window, so a slow machine cannot turn the pauses into an error status.
    daemon = daemon_factory(*OBSERVER_ARGS[observer], "--settle", "10")
    raw = encode(route(["turn-left"] * 40))
    path = watch_dir / input_name("slow")
    chunks = [raw[i : i + len(raw) // 5 + 1] for i in range(0, len(raw), len(raw) // 5 + 1)]
    with open(path, "wb") as fh:  # written in place, flushed in chunks with pauses
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
            time.sleep(0.3)
    res = assert_scored(watch_dir, "slow", raw)
    assert len(res["routes"][0]) == 40
    # no partial content ever reached a final status
    assert all(r["outcome"] == "ok" for r in daemon.wait_runs("slow")), daemon.runs("slow")


def test_rapid_rewrites_score_the_last_content_with_few_runs(daemon, watch_dir):
    path = watch_dir / input_name("burst")
    last = b""
    pauses, started = 0, time.monotonic()
    previous = started
    for i in range(200):
        last = encode(route(["turn-left"] * (1 + i % 7), lat0=30.0 + i / 1000))
        path.write_bytes(last)  # in place, as a careless writer would
        now = time.monotonic()
        pauses += now - previous >= 0.04  # a writer stalled this long (a loaded machine) looks finished
        previous = now
    burst = time.monotonic() - started
    res = assert_scored(watch_dir, "burst", last)
    assert res["routes"][0][0]["lat"] == 30.0 + 199 / 1000
    runs = daemon.wait_runs("burst")
    # Single flight: runs never overlap, so a burst holds at most one run per run's length (a close-after-write
    # skips the debounce, and a warm worker takes a few ms), plus one for each stall past the debounce, plus the
    # queued rerun after it. Never one a write.
    shortest_s = max(min(r["duration_ms"] for r in runs), 1) / 1000
    allowed = min(2 + pauses + int(burst / shortest_s), 50)
    assert 1 <= len(runs) <= allowed, f"{len(runs)} model runs for one burst of {burst:.1f} s with {pauses} pauses"


def test_twenty_keyed_requests_at_once_each_get_their_own_result(daemon_factory, watch_dir, observer):
    from tests.conftest import OBSERVER_ARGS

    daemon_factory(*OBSERVER_ARGS[observer], "--workers", "2")
    raws = {}
    barrier = threading.Barrier(20)

    def submit(i: int) -> None:
        raws[f"k{i}"] = encode(route(["turn-left"] * (i % 4 + 1), lat0=31.0 + i / 100))
        barrier.wait()
        drop(watch_dir, raws[f"k{i}"], key=f"k{i}")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key, raw in raws.items():
        res = assert_scored(watch_dir, key, raw)
        i = int(key[1:])
        assert len(res["routes"][0]) == i % 4 + 1
        assert res["routes"][0][0]["lat"] == 31.0 + i / 100


def test_rename_over_an_existing_input_is_rescored(daemon, watch_dir):
    first = drop(watch_dir, route([""]), key="again")
    assert_scored(watch_dir, "again", first)
    second = drop(watch_dir, route(["turn-left", "turn-right"]), key="again")
    res = assert_scored(watch_dir, "again", second)
    assert [p["score"] for p in res["routes"][0]] == [0.911523, 0.911523]


def test_same_content_rewritten_is_not_rescored(daemon, watch_dir):
    raw = drop(watch_dir, route([""]), key="same")
    assert_scored(watch_dir, "same", raw)
    drop(watch_dir, raw, key="same")
    marker = drop(watch_dir, route(["x"]), key="marker")  # a later request proves the first was seen
    assert_scored(watch_dir, "marker", marker)
    daemon.wait_runs("marker")
    assert len(daemon.runs("same")) == 1


def test_a_reader_never_sees_an_ok_status_beside_a_newer_result(daemon, watch_dir):
    """While one key is published again and again, no stable ``ok`` status ever stands beside a result of other
    bytes (before: the old status stood there between the new result's rename and its own, 432 times in a
    26-s kill loop). The reader reads as ``bench/killloop.py`` does: status, result, status."""
    status, result = watch_dir / status_name("again"), watch_dir / result_name("again")
    stop = threading.Event()
    seen = {"stable_ok": 0, "mismatched": 0}
    failures: list[BaseException] = []

    def read(path):
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def reader():
        try:
            while not stop.is_set():
                s1, res, s2 = read(status), read(result), read(status)
                if s1 is None or s1 != s2 or res is None:
                    continue
                st = json.loads(s1)
                if st["state"] == "ok":
                    seen["stable_ok"] += 1
                    seen["mismatched"] += json.loads(res)["meta"]["input_sha256"] != st["input_sha256"]
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost with the thread
            failures.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(25):
            raw = drop(watch_dir, route(["turn-left"], lat0=31.0 + i / 1000), key="again")
            assert_scored(watch_dir, "again", raw)
            drop(watch_dir, route(["turn-right"], lat0=32.0 + i / 1000), key="again")  # not waited for
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    assert seen["stable_ok"] > 0
    assert seen["mismatched"] == 0, seen

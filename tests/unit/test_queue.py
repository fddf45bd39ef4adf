"""The newest requests on a volume (``volume/queue.py``), on real files in a temp dir."""

from __future__ import annotations

import os
import time
from pathlib import Path

from modelgen_watcher.volume import fsio
from modelgen_watcher.volume.names import Layout, Names
from modelgen_watcher.volume.queue import RecentRequests
from modelgen_watcher.volume.schemas import ErrorInfo, ErrorKind, State, Status

LAYOUT_NAMES = Names()
HOUR_NS = 3600 * 10**9


def write_status(layout: Layout, key: str | None, state: State, mtime_ns: int | None = None,
                 error: ErrorKind | None = None) -> None:
    status = Status(state=state, key=key, input_sha256="a" * 64, started_at="2026-11-29T10:00:00.000Z",
                    finished_at=None if state is State.running else "2026-11-29T10:00:00.012Z",
                    duration_ms=12, error=ErrorInfo(kind=error, message="it broke") if error else None)
    fsio.atomic_write(layout.status(key), status.model_dump_json().encode())
    if mtime_ns is not None:
        os.utime(layout.status(key), ns=(mtime_ns, mtime_ns))


def write_input(layout: Layout, key: str | None, mtime_ns: int) -> None:
    layout.input(key).write_text('{"routes": []}')
    os.utime(layout.input(key), ns=(mtime_ns, mtime_ns))


def settle(root: Path, when_ns: int) -> None:
    """The directory last changed long ago, as a quiet volume's has: a scan may be skipped."""
    os.utime(root, ns=(when_ns, when_ns))


def volume(tmp_path: Path) -> tuple[Layout, int]:
    layout = Layout(tmp_path, LAYOUT_NAMES)
    base = time.time_ns() - 10 * HOUR_NS
    for i in range(150):
        write_status(layout, f"k{i:03d}", State.ok, base + i * 10**9)
        write_input(layout, f"k{i:03d}", base + i * 10**9 - 10**6)
    write_status(layout, None, State.error, base + 200 * 10**9, error=ErrorKind.model_failed)
    for i in range(5):  # published, not yet picked up: no status
        write_input(layout, f"new{i}", base + (300 + i) * 10**9)
    (tmp_path / "gps_scored_route.k001.json").write_text("{}")  # a result: not a request of its own
    (tmp_path / ".client-tmp").write_text("x")
    (tmp_path / "gps_scored_route.kdir.status.json").mkdir()  # not a regular file
    (tmp_path / "notes.txt").write_text("unrelated")
    settle(tmp_path, base)
    return layout, base


def test_the_newest_hundred_of_many_reading_only_their_statuses(tmp_path):
    layout, _ = volume(tmp_path)
    recent = RecentRequests(layout, min_interval=0)
    snap = recent.read()
    assert snap.total == 156 and len(snap.entries) == 100
    assert [e.key for e in snap.entries[:7]] == ["new4", "new3", "new2", "new1", "new0", None, "k149"]
    assert {e.state for e in snap.entries[:5]} == {"queued"}
    legacy = snap.entries[5].as_json()
    assert legacy["state"] == "error" and legacy["error_kind"] == "model_failed" and legacy["error_message"] == "it broke"
    assert snap.entries[-1].key == "k056"  # 5 queued, the legacy one, then k149 down to k056
    assert recent.files_read == 95  # the statuses shown, no other

    again = recent.read()  # nothing changed on the volume: no scan, no read
    assert recent.scans == 1 and recent.files_read == 95 and again.entries == snap.entries


def test_a_change_rescans_and_reads_only_the_status_that_changed(tmp_path):
    layout, _ = volume(tmp_path)
    recent = RecentRequests(layout, min_interval=0)
    recent.read()
    write_status(layout, "k149", State.error, error=ErrorKind.model_timeout)  # a rename: the directory changes
    snap = recent.read()
    assert recent.scans == 2 and recent.files_read == 96
    (k149,) = [e for e in snap.entries if e.key == "k149"]
    assert k149.state == "error" and k149.as_json()["error_kind"] == "model_timeout"
    assert snap.entries[0].key == "k149"  # now the newest

    write_input(layout, "k148", time.time_ns())  # published again after its status
    (tmp_path / "gps_scored_route.k147.status.json").write_text("{not json")
    snap = recent.read()
    rows = {e.key: e for e in snap.entries}
    assert rows["k148"].input_newer and rows["k148"].state == "ok"
    assert rows["k147"].state == "unreadable"


def test_callers_close_together_share_one_scan(tmp_path):
    layout, _ = volume(tmp_path)
    recent = RecentRequests(layout, min_interval=3600)
    first = recent.read()
    write_status(layout, "k000", State.running)
    assert recent.read() is first and recent.scans == 1


def test_a_directory_changed_just_now_is_scanned_whatever_its_mtime_says(tmp_path):
    layout = Layout(tmp_path, LAYOUT_NAMES)
    write_status(layout, "a", State.running)
    recent = RecentRequests(layout, min_interval=0)
    recent.read()
    recent.read()
    assert recent.scans == 2  # modified within RACY_S: a coarse mtime could hide a second change


def test_running_has_no_duration_yet(tmp_path):
    layout = Layout(tmp_path, LAYOUT_NAMES)
    write_status(layout, "a", State.running)
    (entry,) = RecentRequests(layout).read().entries
    assert entry.as_json()["state"] == "running" and entry.as_json()["duration_ms"] is None


def test_pending_counts_what_waits_for_an_outcome_once_asked(tmp_path):
    layout, base = volume(tmp_path)  # 150 ok, the legacy one failed, 5 new with no status
    write_status(layout, "k000", State.running, base + 400 * 10**9)
    write_status(layout, "k001", State.error, base + 400 * 10**9, error=ErrorKind.io_error)  # retried: pending
    write_input(layout, "k002", base + 500 * 10**9)  # published again after its status
    settle(tmp_path, base)
    recent = RecentRequests(layout, min_interval=0)
    assert recent.read().pending is None  # not counted until asked
    read_before = recent.files_read
    assert recent.pending() == 5 + 3
    assert recent.files_read == read_before  # the page's statuses read again only when changed
    write_status(layout, "k000", State.ok, base + 600 * 10**9)
    settle(tmp_path, time.time_ns() - HOUR_NS)
    assert recent.pending() == 5 + 2

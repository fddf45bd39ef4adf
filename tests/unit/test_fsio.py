"""Atomic publish and guarded reads of untrusted files."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgen_watcher.volume.fsio import UnsafeFile, atomic_write, atomic_write_all, read_json_file, safe_read


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_creates_and_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write(target, b"first")
    atomic_write(target, b"second, longer content")
    assert target.read_bytes() == b"second, longer content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_file_is_world_readable(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write(target, b"{}")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~_umask()
    if _umask() == 0o022:
        assert mode == 0o644


def test_atomic_write_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        atomic_write(tmp_path / "taken", b"data")  # cannot replace a directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_atomic_write_with_temp_dir_leaves_only_the_target_beside_it(tmp_path: Path) -> None:
    temps = tmp_path / "tmp"
    temps.mkdir()
    target = tmp_path / "out.json"
    atomic_write(target, b"data", temp_dir=temps)
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "tmp"]
    assert list(temps.iterdir()) == []


def test_atomic_write_missing_temp_dir_writes_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write(target, b"data", temp_dir=tmp_path / "removed")
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.fixture
def temps_elsewhere(tmp_path: Path) -> Iterator[Path]:
    """A temp dir on another file system than ``tmp_path``'s (a directory in /dev/shm), or the test is skipped."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system other than the temp dir's")
    temps = Path(tempfile.mkdtemp(dir=shm))
    try:
        yield temps
    finally:
        shutil.rmtree(temps)


def test_atomic_write_temp_dir_on_another_file_system_writes_beside_the_target(
        tmp_path: Path, temps_elsewhere: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write(target, b"data", temp_dir=temps_elsewhere)  # the rename fails with EXDEV, then redone here
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert list(temps_elsewhere.iterdir()) == []


def test_atomic_write_all_replaces_each_in_order_with_its_fence_before_each(tmp_path: Path) -> None:
    temps = tmp_path / "tmp"
    temps.mkdir()
    first, second = tmp_path / "result.json", tmp_path / "status.json"
    second.write_bytes(b"old status")
    seen: list[tuple[bool, bytes]] = []

    def fence() -> None:  # what each rename finds: the result already in place before the status's
        seen.append((first.exists(), second.read_bytes()))

    atomic_write_all([(first, b"result"), (second, b"status")], temp_prefix=".t-", temp_dir=temps,
                     before_replace=fence)
    assert (first.read_bytes(), second.read_bytes()) == (b"result", b"status")
    assert seen == [(False, b"old status"), (True, b"old status")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "status.json", "tmp"]
    assert list(temps.iterdir()) == []


def test_atomic_write_all_withdraws_a_file_just_before_the_first_rename(tmp_path: Path) -> None:
    """The status of other bytes goes after the first fence, before the new result goes in (and comes back new)."""
    temps = tmp_path / "tmp"
    temps.mkdir()
    result, status = tmp_path / "result.json", tmp_path / "status.json"
    result.write_bytes(b"old result")
    status.write_bytes(b"old status")
    seen: list[tuple[bytes, bool]] = []
    atomic_write_all([(result, b"new result"), (status, b"new status")], temp_prefix=".t-", temp_dir=temps,
                     before_replace=lambda: seen.append((result.read_bytes(), status.exists())), withdraw=status)
    assert seen == [(b"old result", True), (b"new result", False)]
    assert (result.read_bytes(), status.read_bytes()) == (b"new result", b"new status")


def test_atomic_write_all_stops_where_a_fence_refuses_and_leaves_no_temp(tmp_path: Path) -> None:
    temps = tmp_path / "tmp"
    temps.mkdir()
    calls = []

    def fence() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("lost the claim")

    with pytest.raises(RuntimeError):
        atomic_write_all([(tmp_path / "a", b"1"), (tmp_path / "b", b"2")], temp_prefix=".t-", temp_dir=temps,
                         before_replace=fence)
    assert (tmp_path / "a").read_bytes() == b"1" and not (tmp_path / "b").exists()  # the first was published
    assert list(temps.iterdir()) == []
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):  # cannot replace a directory
        atomic_write_all([(tmp_path / "c", b"3"), (tmp_path / "taken", b"4")], temp_prefix=".t-", temp_dir=temps)
    assert list(temps.iterdir()) == []


def test_atomic_write_all_without_its_temp_dir_writes_beside_the_targets(tmp_path: Path) -> None:
    atomic_write_all([(tmp_path / "a", b"1"), (tmp_path / "b", b"2")], temp_prefix=".t-",
                     temp_dir=tmp_path / "removed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_atomic_write_all_temp_dir_on_another_file_system_writes_beside_the_targets(
        tmp_path: Path, temps_elsewhere: Path) -> None:
    atomic_write_all([(tmp_path / "a", b"1"), (tmp_path / "b", b"2")], temp_prefix=".t-", temp_dir=temps_elsewhere)
    assert [(p.name, p.read_bytes()) for p in sorted(tmp_path.iterdir())] == [("a", b"1"), ("b", b"2")]
    assert list(temps_elsewhere.iterdir()) == []


def test_safe_read_returns_bytes_and_sha256(tmp_path: Path) -> None:
    f = tmp_path / "in.json"
    f.write_bytes(b'{"routes": []}')
    snap = safe_read(f, max_bytes=1024)
    assert snap.data == b'{"routes": []}'
    assert snap.sha256 == hashlib.sha256(b'{"routes": []}').hexdigest()
    assert snap.size == len(snap.data)


def test_safe_read_size_limit(tmp_path: Path) -> None:
    f = tmp_path / "in.json"
    f.write_bytes(b"x" * 10)
    assert safe_read(f, max_bytes=10).data == b"x" * 10
    with pytest.raises(UnsafeFile, match="limit"):
        safe_read(f, max_bytes=9)


def test_safe_read_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_bytes(b"{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(UnsafeFile, match="symlink"):
        safe_read(link, max_bytes=1024)


def test_safe_read_refuses_directory(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFile, match="directory"):
        safe_read(tmp_path, max_bytes=1024)


def test_safe_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        safe_read(tmp_path / "nope.json", max_bytes=1024)


def test_safe_read_refuses_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "in.json"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            safe_read(fifo, max_bytes=1024)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            outcome.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the reader so the thread can end, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("safe_read blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], UnsafeFile)
    assert "FIFO" in str(outcome[0])


def test_read_json_file(tmp_path: Path) -> None:
    good, bad, empty = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "empty.json"
    good.write_bytes(b'{"state": "ok"}')
    bad.write_bytes(b"{not json")
    empty.write_bytes(b"")
    assert read_json_file(good, 1024) == {"state": "ok"}
    assert read_json_file(bad, 1024) is None
    assert read_json_file(empty, 1024) is None
    assert read_json_file(tmp_path / "missing.json", 1024) is None
    assert read_json_file(good, 3) is None  # over the limit


def test_a_document_is_encoded_as_its_plain_json_would_be() -> None:
    """``dump_json`` has pydantic encode a document: the bytes ``json.dumps`` made of it, compact, UTF-8."""
    import json
    import math

    from modelgen_watcher.volume.fsio import dump_json
    from modelgen_watcher.volume.schemas import (
        ErrorInfo,
        ErrorKind,
        Health,
        ResultMeta,
        ScoredRoute,
        State,
        Status,
        WatcherHealth,
    )

    def plain(doc: object) -> bytes:
        assert hasattr(doc, "model_dump")
        return json.dumps(doc.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")).encode()

    points = [{"score": s, "lat": 30.0 + i / 7, "lng": -97.5 - i / 3} for i, s in enumerate((0.1, 1 / 3, 0.0, 1.0))]
    scored = ScoredRoute.model_validate({"routes": [points], "totalScores": [math.pi], "extra": "é"})
    scored.meta = ResultMeta(input_sha256="a" * 64, model="m", duration_ms=3, scored_at="2026-11-29T00:00:00Z")
    documents = [
        scored,
        Status(state=State.ok, key="k", input_sha256="b" * 64, started_at="t0", finished_at="t1", duration_ms=2),
        Status(state=State.error, key=None, input_sha256=None, started_at="t0",
               error=ErrorInfo(kind=ErrorKind.invalid_input, message="ünreadable \"x\"", detail="a\nb")),
        Health(pid=1, started_at="t0", heartbeat_at="t1", observer="native", ready=False, reason="why"),
        WatcherHealth(pid=1, started_at="t0", heartbeat_at="t1", observer="polling", ready=True, watcher_id="w",
                      hostname="h"),
    ]
    for doc in documents:
        assert dump_json(doc) == plain(doc)

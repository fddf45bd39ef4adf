"""Safe file primitives: atomic publish, guarded reads of untrusted inputs, hashing.

Every file the watcher, client or server publishes goes through `atomic_write`, and
every input they read goes through `safe_read`, so the guarantees live in one place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()
_EUID = os.geteuid()


_TEMP_SERIALS = itertools.count()
_process_token = secrets.token_hex(6)


def _new_process_token() -> None:
    global _process_token
    _process_token = secrets.token_hex(6)


os.register_at_fork(after_in_child=_new_process_token)


def unique_token() -> str:
    """A token unique across processes (a random part made once per process, and again after a fork)
    and within one (a serial), so a publish costs no ``getrandom`` call. Every file named with it is
    created with ``O_EXCL``, so a clash could fail a write, never mix two."""
    return f"{_process_token}{next(_TEMP_SERIALS):x}"


def temp_name(prefix: str, name: str) -> str:
    """The temp file that becomes ``name``."""
    return f"{prefix}{name}.{unique_token()}.tmp"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; best effort where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    data: bytes,
    *,
    temp_prefix: str = ".tmp-",
    durable: bool = True,
    sync_dir: bool = True,
    temp_dir: Path | None = None,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new one, never a part.

    The temp file is flushed and fsynced before the rename, and the directory is fsynced
    after it so the new name survives a crash. ``durable=False`` skips both fsyncs, for
    private bookkeeping that only has to survive the process. ``sync_dir=False`` keeps the
    file's fsync and leaves the directory's to the next durable write in the same
    directory, which covers every rename before it: the watcher's result, whose status
    follows at once (see ``Pipeline``).

    By default the temp file is a dot-file beside ``path``. ``temp_dir`` puts it in another
    directory of the same file system instead: the watcher writes its temps in its private
    ``.modelgen/tmp/`` so that the watched directory sees one event per publish (the
    rename in) instead of five (create, modify, close, rename out and in, which the
    native observer pairs by a linear search). Where ``temp_dir`` turns out to be on
    another file system (a mount over it), the rename fails with EXDEV and the write is
    redone beside ``path``: a rename across file systems would not be atomic. So it is
    where ``temp_dir`` is missing (removed by hand while the watcher runs).

    ``before_replace`` is called when the temp file is complete, just before the rename:
    whatever it raises cancels the write (the temp file is removed). Shared mode fences
    its publications there (``claims.Claims.fence``), as close to the rename as it gets.
    """
    if temp_dir is not None:
        try:
            tmp = temp_dir / temp_name(temp_prefix, path.name)
            _write_and_rename(path, data, tmp, durable, sync_dir, before_replace)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOENT):
                raise
    _write_and_rename(path, data, path.parent / temp_name(temp_prefix, path.name), durable, sync_dir, before_replace)


def _write_and_rename(
    path: Path, data: bytes, tmp: Path, durable: bool, sync_dir: bool, before_replace: Callable[[], None] | None
) -> None:
    fd = _create_new(tmp)
    try:
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        _unlink_missing_ok(tmp)
        raise
    if durable and sync_dir:
        fsync_dir(path.parent)


def atomic_write_all(
    writes: Sequence[tuple[Path, bytes]],
    *,
    temp_prefix: str,
    temp_dir: Path,
    before_replace: Callable[[], None] | None = None,
    withdraw: Path | None = None,
) -> None:
    """Replace each path with its data, in order, as ``atomic_write`` would one after another (``durable``, no
    directory fsync), but flushed together: every temp file is written, and its writeback started, before the
    first fsync; all are fsynced before the first rename.

    Why: on a journalled file system each fsync waits for a journal commit. With the later files' blocks
    already under writeback, the first fsync's commit carries them, and the fsyncs after it find nothing left
    to commit: a result and its status cost one commit instead of two (0.93 to 0.63 ms a pair alone on a
    journalled ext4; two warm workers drain about 1.15x the requests a second). What a reader sees is the
    same: each file replaced by a rename of a complete, flushed file, the first before the second.

    Temp files go in ``temp_dir``, falling back to beside their target as ``atomic_write`` does (``temp_dir``
    missing, or on another file system). ``before_replace`` is called before each rename. ``withdraw``, if
    present, is removed after the first ``before_replace``, just before the first rename: a file that must not
    stand beside the first new one while the next is renamed (the watcher's status of other bytes, beside
    their new result: a reader would take that result for those bytes' own).
    """
    temps: list[Path] = []
    renamed = 0
    try:
        fds: list[int] = []
        try:
            for path, data in writes:
                tmp = temp_dir / temp_name(temp_prefix, path.name)
                try:
                    fd = _create_new(tmp)
                except FileNotFoundError:  # ``temp_dir`` removed by hand: beside the target
                    tmp = path.parent / temp_name(temp_prefix, path.name)
                    fd = _create_new(tmp)
                temps.append(tmp)
                fds.append(fd)
                _write_all(fd, data)
                if _START_WRITEBACK is not None and len(fds) > 1:  # the first is flushed by its own fsync next
                    with contextlib.suppress(OSError):  # a hint: the fsync below flushes it all the same
                        _START_WRITEBACK(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for fd in fds:
                os.fsync(fd)
        finally:
            _close_all(fds)
        for (path, data), tmp in zip(writes, temps, strict=True):
            if before_replace is not None:
                before_replace()
            if withdraw is not None and not renamed:
                _unlink_missing_ok(withdraw)
            try:
                os.replace(tmp, path)
            except OSError as exc:  # ``temp_dir`` on another file system, or removed since: redone beside the target
                if exc.errno not in (errno.EXDEV, errno.ENOENT) or tmp.parent == path.parent:
                    raise
                _unlink_missing_ok(tmp)
                _write_and_rename(path, data, path.parent / temp_name(temp_prefix, path.name), True, False,
                                  before_replace)
            renamed += 1
    except BaseException:
        for tmp in temps[renamed:]:
            _unlink_missing_ok(tmp)
        raise


def _close_all(fds: list[int]) -> None:
    """Close every fd, even when one close fails; the first failure is raised after."""
    failed: OSError | None = None
    for fd in fds:
        try:
            os.close(fd)
        except OSError as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


_START_WRITEBACK: Callable[[int, int, int, int], None] | None = getattr(os, "posix_fadvise", None)
"""``posix_fadvise(DONTNEED)`` starts the writeback of a file's dirty pages without waiting for it (Linux);
absent on macOS, where the files are flushed by their fsyncs alone."""


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (never an existing file or a symlink) with ``data``, not fsynced, no rename.

    For a private file that nobody reads until this returns (the model's snapshot of
    an input): the atomic rename buys nothing there.
    """
    fd = _create_new(path)
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        _unlink_missing_ok(path)
        raise
    os.close(fd)


_EXCL_TEMP_PREFIX = "excl-"
"""Temp files of ``create_exclusive`` in their temp dir."""
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})
"""What ``link`` answers where a file system (or a temp dir on another one) has no hard links for us."""


def create_exclusive(path: Path, data: bytes, temp_dir: Path) -> bool:
    """Create ``path`` holding ``data`` unless a file of that name exists; True when this call created it.

    Exactly one of any number of callers racing for one name wins, on one machine or
    many: the complete file is written in ``temp_dir`` (same file system) and linked to
    ``path``, an operation NFS v3 and v4 servers perform atomically, so a reader never
    sees the file empty or half written. NFS may answer EEXIST to a link that succeeded
    (a retransmitted request); the temp file's link count tells (open(2)'s recipe for
    lock files on NFS). Where hard links are not available, ``O_CREAT | O_EXCL`` decides
    instead, and the data is written after the create.
    """
    tmp = temp_dir / f"{_EXCL_TEMP_PREFIX}{unique_token()}"
    try:
        write_new(tmp, data)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EXDEV):
            raise
        return _create_excl(path, data)  # no temp dir (removed by hand): the create decides
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return os.stat(tmp).st_nlink == 2
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        return _create_excl(path, data)
    finally:
        _unlink_missing_ok(tmp)


def _create_excl(path: Path, data: bytes) -> bool:
    try:
        write_new(path, data)
    except FileExistsError:
        return False
    return True


def seed_dir(path: Path, source: Path) -> Path:
    """``path``, created if missing; when this call creates it, seeded with copies of ``source``'s files.

    For workspaces: a model may rewrite its caches in place, and two processes rewriting
    one file race, so each warm worker (and each shared watcher) gets a copy of the files
    of the workspace it comes from. Dot-files and the watcher's own (``modelgen-``) are
    not copied, nor are directories; a ``source`` that is missing seeds nothing.
    """
    if path.is_dir():
        return path
    path.mkdir(parents=True, exist_ok=True)
    try:
        entries = list(os.scandir(source))
    except FileNotFoundError:
        return path
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith(("modelgen-", ".")):
            shutil.copy2(entry.path, path / entry.name)
    return path


def _create_new(path: Path) -> int:
    """Open a new file for writing: never an existing one, never through a symlink (a temp file, a snapshot)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all is written: no buffered file object, whose set-up costs more than the write of a
    status (the heartbeat writes two files every 2 s for ever, a drain three a request)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_missing_ok(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Rewrite an existing file without a temp file: for when an atomic write failed for lack of space.

    Not atomic: only for documents where a torn read is as good as the news itself
    (a heartbeat that says "not ready" reads as "no valid heartbeat", red either way).
    """
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def dump_json(obj: Any) -> bytes:
    """The one JSON encoding used for every published file: compact, UTF-8.

    A pydantic document is encoded by pydantic (in Rust: a result in a fifth of the time
    of ``model_dump`` and ``json.dumps``, the same bytes for every document tested).
    """
    if isinstance(obj, BaseModel):
        return obj.model_dump_json().encode("utf-8")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class UnsafeFile(Exception):
    """The path exists but must not be read: not a regular file, a symlink, or too large."""


@dataclass(frozen=True)
class Snapshot:
    """The exact bytes read from an input, their hash, and the file's identity when read."""

    data: bytes
    sha256: str
    mtime_ns: int
    size: int


def describe_mode(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _open_regular_fd(path: Path) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without following a symlink or blocking on a FIFO; refuse all but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{path.name} is a symlink, not a regular file") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path.name} is {describe_mode(st.st_mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def safe_read(path: Path, max_bytes: int) -> Snapshot:
    """Read a regular file without following symlinks, blocking on FIFOs, or reading past ``max_bytes``.

    Raises FileNotFoundError when the file is gone, UnsafeFile when it must not be
    read, and OSError for other I/O failures. The size is checked before reading and
    the read is capped, so a file that grows meanwhile cannot exhaust memory.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{path.name} is {describe_mode(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise UnsafeFile(f"{path.name} is {st.st_size} bytes, over the limit of {max_bytes} bytes")
    fd, fst = _open_regular_fd(path)
    try:
        chunks: list[bytes] = []
        # Reads sized by the file (and a byte more, to see its end), not 1 MiB each: a read allocates what it
        # asks for, and 1 MiB is an mmap and a munmap of its own for every file of a few KiB.
        size = min(fst.st_size + 1, 1 << 20)
        got = 0
        while got <= max_bytes:
            want = min(max_bytes + 1 - got, size)
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if len(chunk) < want and got == fst.st_size:
                break  # the size it had, and a short read: its end, without one more read to see nothing
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnsafeFile(f"{path.name} is over the limit of {max_bytes} bytes")
    return Snapshot(data=data, sha256=sha256_hex(data), mtime_ns=fst.st_mtime_ns, size=len(data))


def open_regular(path: Path, max_bytes: int) -> tuple[BinaryIO, int]:
    """Open a regular file for streaming, with ``safe_read``'s guards; the open file and its size.

    The size is the file's when opened (fstat): a file that grows meanwhile is sent as
    it was, one that shrinks ends the response short. The caller closes the file.
    """
    fd, st = _open_regular_fd(path)
    if st.st_size > max_bytes:
        os.close(fd)
        raise UnsafeFile(f"{path.name} is {st.st_size} bytes, over the limit of {max_bytes} bytes")
    return os.fdopen(fd, "rb"), st.st_size


def read_json_file(path: Path, max_bytes: int) -> Any:
    """Parse a JSON file read with ``safe_read``'s guards; None when missing, unsafe or not JSON."""
    try:
        return json.loads(safe_read(path, max_bytes).data)
    except (OSError, UnsafeFile, ValueError, RecursionError):
        return None


def volume_trouble(directory: Path) -> str | None:
    """Why nothing can be written under ``directory`` (read-only, full), read from the file system itself.

    Cheap (one statvfs), and it works when nothing else can be written to say so.
    File systems that report no sizes (some FUSE and network mounts) are not judged full.
    """
    try:
        st = os.statvfs(directory)
    except OSError as exc:
        return f"the watch dir cannot be inspected: {exc}"
    if st.f_flag & os.ST_RDONLY:
        return "the watch dir is on a read-only file system"
    if st.f_blocks and not st.f_bavail:
        return "the watch dir's file system is full"
    return None


PROBE_BYTES = 65536
"""A probe write's size: on a nearly full volume a few bytes can still fit where a result would not."""


def probe_writable(directory: Path, temp_prefix: str) -> str | None:
    """Why a file cannot be written in ``directory`` (tried: written, fsynced, removed), or None when it can."""
    probe = directory / f"{temp_prefix}probe-{secrets.token_hex(4)}"
    try:
        atomic_write(probe, bytes(PROBE_BYTES), temp_prefix=temp_prefix)
        remove_quietly(probe)
    except OSError as exc:
        return f"the watch dir cannot be written: {exc}"
    return None


def refuses_writes(directory: Path, temp_prefix: str) -> str | None:
    """Why ``directory``'s file system takes no writes now (read-only, full, not writable), or None.

    statvfs first (free), then a real 64 KiB write: it finds permissions, and a volume
    with a few pages left (a failed run's clean-up frees some).
    """
    return volume_trouble(directory) or probe_writable(directory, temp_prefix)


def ensure_private_dir(path: Path, mode: int = 0o777) -> None:
    """Create ``path`` (with ``mode``, less the umask) if missing; refuse it unless it is a real directory
    owned by this process's user.

    The watcher deletes stale files in its private directories at every start, so a
    symlink planted there (``.modelgen -> /somewhere``) must never be followed: that
    would delete files outside the volume.
    """
    try:
        st = os.lstat(path)  # asked before every request: one system call when all is well
    except FileNotFoundError:
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeFile(f"{path} is {describe_mode(st.st_mode)}, not a directory; refusing to follow or replace it")
    if st.st_uid != _EUID:
        raise UnsafeFile(
            f"{path} is owned by uid {st.st_uid}, not by this watcher (uid {_EUID}); "
            "remove it or chown it to the watcher's user"
        )


def remove_quietly(path: Path) -> bool:
    """Unlink a file if present; True when something was removed."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False

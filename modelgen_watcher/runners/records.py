"""Records of running models, so a daemon started after a ``kill -9`` stops what the last one left running.

A model runs in a session of its own, so it survives a daemon that is SIGKILLed, and
its timeout died with that daemon: without help it would run forever. So while a model
runs, the runner keeps one small file under ``.modelgen/run/`` naming it, and removes
the file when the run ends; a file found at start-up is a model the last daemon never
saw end. A record names the process by pid, start time and boot id (a recycled pid is
never killed) and carries the run's random id, which every process the model starts
inherits in its environment, so descendants that left the model's group are found too.

The directory is on a shared volume other writers can reach. It is created 0700, used
only if it is a real directory of ours (never through a symlink), and records that are
not ours, not regular files or not parsable are removed without being acted on. A
record can only lead to killing a session leader whose start time and boot match, or
processes started with the record's 128-bit run id.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..volume import fsio
from . import procfs

RUN_ID_ENV = "MODELGEN_RUN_ID"
"""The environment variable that carries a run's id into the model and everything it starts."""
REQUEST_ID_SEP = "/"
"""A request served by a long-lived worker carries ``<worker's run id>/<n>``: what it leaves behind is told from
what the worker started for itself, and still found from the worker's record."""


def recorded_id(run_id: str | None) -> str | None:
    """The run id a record names for a process carrying ``run_id``: the worker's, for one of its requests."""
    return None if run_id is None else run_id.partition(REQUEST_ID_SEP)[0]
RECORD_SUFFIX = ".json"
MAX_RECORD_BYTES = 4096


class UnsafeRecordDir(OSError):
    """The record directory is a symlink, not a directory, or not ours: it is not used."""


@dataclass(frozen=True)
class RunRecord:
    """One running model: the leader of its process group and session (pgid == sid == pid)."""

    pid: int
    start_time: int | None
    boot_id: str | None
    run_id: str

    @property
    def file_name(self) -> str:
        return f"{self.pid}{RECORD_SUFFIX}"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> RunRecord | None:
        """The record in ``raw``, or None if it is not one (anything else on the volume is untrusted)."""
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        pid, start, boot, run_id = doc.get("pid"), doc.get("start_time"), doc.get("boot_id"), doc.get("run_id")
        if type(pid) is not int or pid <= 1:  # never 0, 1 or negative: those signal more than one process
            return None
        if not (start is None or type(start) is int) or not (boot is None or isinstance(boot, str)):
            return None
        if not isinstance(run_id, str) or len(run_id) < 16:
            return None
        return cls(pid, start, boot, run_id)


class RecordDir:
    """The directory of run records. Every operation opens it anew with O_NOFOLLOW (no fd is held)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, path: Path) -> RecordDir:
        """Create ``path`` (0700) if needed; UnsafeRecordDir unless it is a real directory owned by us."""
        try:
            fsio.ensure_private_dir(path, mode=0o700)
        except fsio.UnsafeFile as exc:
            raise UnsafeRecordDir(f"{exc}; not used") from exc
        return cls(path)

    @contextmanager
    def _dir_fd(self) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    def write(self, record: RunRecord) -> None:
        """Write ``record`` (one small write; a torn one is merely unparsable at the next start).

        The directory is made again if ``.modelgen`` was removed under the daemon.
        """
        try:
            self._write(record)
        except FileNotFoundError:
            RecordDir.open(self.path)
            self._write(record)

    def _write(self, record: RunRecord) -> None:
        with self._dir_fd() as dfd:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(record.file_name, flags, 0o600, dir_fd=dfd)
            try:
                os.write(fd, record.encode())
            finally:
                os.close(fd)

    def remove(self, record: RunRecord) -> None:
        """Remove ``record``'s file, unless it now holds another run's record (a recycled pid)."""
        try:
            with self._dir_fd() as dfd:
                on_disk = self._read(record.file_name, dfd)
                if on_disk is None or on_disk.run_id == record.run_id:
                    os.unlink(record.file_name, dir_fd=dfd)
        except OSError:  # already gone: nothing to do
            pass

    def load(self) -> list[RunRecord]:
        """Every valid record; anything else in the directory is removed without being acted on."""
        found = []
        with self._dir_fd() as dfd:
            for name in os.listdir(dfd):
                record = self._read(name, dfd) if name.endswith(RECORD_SUFFIX) else None
                if record is not None and record.file_name == name:
                    found.append(record)
                    continue
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:  # a directory someone put there: leave it, it is never read
                    pass
        return found

    @staticmethod
    def _read(name: str, dfd: int) -> RunRecord | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                return None
            return RunRecord.decode(os.read(fd, MAX_RECORD_BYTES))
        except OSError:
            return None
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Leftovers:
    """What a start-up found still running from records of an earlier daemon."""

    groups: int
    processes: int


def stop_leftovers(records: RecordDir, spare: Collection[int] = ()) -> Leftovers:
    """SIGKILL each recorded model group still running and each process carrying a recorded run id; clear the records.

    No grace period: these models' requests are redone anyway, and start-up should
    not wait. Records from another boot are only removed (their processes are gone).
    ``spare`` holds pids never to touch (models this runner is running itself).
    """
    found = records.load()
    boot = procfs.boot_id()
    this_boot = [r for r in found if boot is not None and r.boot_id == boot]
    groups = {r.pid for r in this_boot if r.pid not in spare and _kill_group_if_unchanged(r)}
    processes = _kill_carriers({r.run_id for r in this_boot}, set(spare), groups)
    for record in found:
        records.remove(record)
    return Leftovers(len(groups), processes)


def _kill_group_if_unchanged(record: RunRecord) -> bool:
    """Kill the recorded group if its leader is still the very process recorded (pid, start time, own session)."""
    if record.start_time is None or record.pid in (os.getpid(), os.getpgrp()):
        return False
    st = procfs.read_stat(record.pid)
    if st is None or st.zombie or st.start_time != record.start_time or not st.session_leader:
        return False
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except OSError:
        return False
    return True


def _kill_carriers(run_ids: set[str], spare: set[int], killed_groups: set[int]) -> int:
    """Kill each process started with one of ``run_ids`` outside the groups already killed: escaped descendants."""
    if not run_ids:
        return 0
    me, killed = os.getpid(), 0
    for pid in procfs.all_pids():
        if pid == me or pid in spare or recorded_id(procfs.environ_value(pid, RUN_ID_ENV)) not in run_ids:
            continue
        st = procfs.read_stat(pid)
        if st is None or st.zombie or st.pgrp in killed_groups:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except OSError:
            pass
    return killed

"""Requests in flight, recorded on the volume, so that a request which keeps stopping the watcher is given up.

A record of each request in the watcher's hands is written before its input is decoded
(``begin``) and cleared when the request ends in any way except the watcher stopping.
A record found at start-up therefore means the watcher stopped with that request in its
hands: killed, out of memory, or stopped by a signal (possibly sent by the model itself).
Each start counts one more interruption for those bytes and parks a marker of it until
the request is begun again.

The records are slots: files ``.modelgen/inflight/slot-<life>-<n>``, one per request in hand
(as many as the watcher has requests in flight at once), each rewritten in place. A
request that has to wait for a busy warm worker is marked so in its slot (``park``) and
back (``unpark``): a stop meanwhile, the model never having had it, is not counted, and
its count is kept, neither raised nor forgotten. Rewriting a file in place creates,
renames and removes nothing: a marker file per request (written, renamed twice around a
wait, removed) cost the daemon about 0.2 ms a request, and on an ext4 without a journal,
whose inode allocator steps over every recently removed inode, more with every request
of a drain.

A parked marker (``.modelgen/parked/<input name>``) is a request at rest since a start
counted it, or one given up: the rare cases, one file each. ``begin`` takes its count
over (the slot first, then the marker removed: a stop between the two leaves the slot,
the newer, to win at the next start).

At ``retry.MAX_INTERRUPTIONS`` the pipeline ends the request with an error instead of
running it again, so one poisonous request (a model that kills the watcher, or an
input whose decoding does) cannot keep the watcher in a crash loop while the others
wait.

Records need no fsync: they only have to survive the process, not the machine (after a
power cut the count restarts, which costs at most a few more attempts). A slot is one
write of one page, which a ``kill -9`` cannot tear.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..volume import fsio
from ..volume.names import INFLIGHT_SLOT_PREFIX, MAX_DOCUMENT_BYTES, WATCHER_TEMP_PREFIX, Layout, Request

SLOT_BYTES = 4096
"""A slot's record is padded to one page, so that a shorter record overwrites all of a longer one."""


class _Marker(BaseModel):
    input_sha256: str
    input_mtime_ns: int = 0
    """Which publication of those bytes: publishing them again is a fresh start."""
    interruptions: int = 0
    given_up: bool = False
    """These bytes were given up: kept as the memory of it, no longer counted or delayed at start."""
    waiting: bool = False
    """Waiting for a busy warm worker, not in the watcher's hands: a stop is not counted (a parked slot, or a
    marker an earlier version parked in place)."""
    name: str | None = None
    """The input's name, in a slot (a marker is named by its input)."""


@dataclass(frozen=True)
class Interrupted:
    """A request that was in flight when the watcher last stopped."""

    name: str
    input_sha256: str
    interruptions: int


def _parse(data: bytes) -> _Marker | None:
    try:
        return _Marker.model_validate_json(data)
    except ValidationError:
        return None


def _read(path: Path) -> _Marker | None:
    """A marker, or a slot's record (its first line; None for an empty slot); None when unreadable."""
    try:
        data = fsio.safe_read(path, MAX_DOCUMENT_BYTES).data
    except (OSError, fsio.UnsafeFile):
        return None
    line = data.split(b"\n", 1)[0].strip()
    return _parse(line) if line else None


def _write(path: Path, marker: _Marker) -> None:
    """A parked marker: a file of its own, replaced whole."""
    data = marker.model_copy(update={"name": None, "waiting": False}).model_dump_json().encode()
    fsio.atomic_write(path, data, temp_prefix=WATCHER_TEMP_PREFIX, durable=False)


def _put(slot: Path, marker: _Marker | None) -> None:
    """Rewrite a slot in place (made if missing, never through a symlink): the record's line, padded.

    Opened for each write, not kept open (which would save two system calls each time): a file held open for
    writing on the volume stops it from being remounted read-only (``EBUSY``), and on NFS a removed file still
    open lingers as a ``.nfs*`` file."""
    line = (b"" if marker is None else marker.model_dump_json().encode()) + b"\n"
    data = line.ljust(SLOT_BYTES)
    fd = os.open(slot, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    try:
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(errno.ENOSPC, "short write of an in-flight record", str(slot))
    finally:
        os.close(fd)


class Slots:
    """The slot files of one watcher's life: a free one is reused, a new one made when all are in use.

    Their names carry a token of this life (``slot-<token>-<n>``): a watcher that lost its watch dir to
    another (``disown``) and still ends a request clears its own slot, never the new watcher's.
    """

    def __init__(self, layout: Layout) -> None:
        self._dir = layout.inflight_dir
        self._token = fsio.unique_token()
        self._lock = threading.Lock()
        self._free: list[Path] = []
        self._made = 0
        self._held: dict[str, tuple[Path, _Marker]] = {}
        """Records left in their slots for good, by input name: a give-up whose parked marker could not be
        written. ``begin`` reads them before ``parked/``."""

    def take(self) -> Path:
        with self._lock:
            if self._free:
                return self._free.pop()
            self._made += 1
            return self._dir / f"{INFLIGHT_SLOT_PREFIX}{self._token}-{self._made - 1}"

    def give_back(self, slot: Path) -> None:
        with self._lock:
            self._free.append(slot)

    def hold(self, name: str, slot: Path, marker: _Marker) -> None:
        with self._lock:
            self._held[name] = (slot, marker)

    def unhold(self, name: str) -> tuple[Path, _Marker] | None:
        with self._lock:
            return self._held.pop(name, None)


class InFlight:
    """One request begun (``begin``): its count, and the moves of its record until it ends."""

    def __init__(self, layout: Layout, slots: Slots, name: str, marker: _Marker, slot: Path | None) -> None:
        self._layout = layout
        self._slots = slots
        self._name = name
        self._marker = marker
        self._slot = slot
        """None once the request is no longer recorded in a slot: ended, kept, or given up before it was."""

    @property
    def interruptions(self) -> int:
        """The interruptions of this publication so far."""
        return self._marker.interruptions

    @property
    def given_up(self) -> bool:
        return self._marker.given_up

    def park(self) -> None:
        """It waits for a busy warm worker (or was stopped before the model got it): a stop while it waits is not
        counted, and its count is kept."""
        self._mark(waiting=True)

    def unpark(self) -> None:
        """A worker took it after it waited (``park``): a stop counts again."""
        self._mark(waiting=False)

    def _mark(self, *, waiting: bool) -> None:
        if self._slot is not None:
            self._marker.waiting = waiting
            _put(self._slot, self._marker)

    def give_up(self) -> None:
        """Keep a parked marker as the memory that this publication is given up; later starts leave it be.

        The slot says so first, in place (that holds even on a full volume): when the marker cannot be
        written, the slot stays as the memory, for ``begin`` in this life and for the next start to park.
        """
        if self._marker.given_up:
            return
        self._marker.given_up = True
        if self._slot is not None:
            _put(self._slot, self._marker)
        try:
            _write(self._layout.parked_dir / self._name, self._marker)
        except OSError:
            if self._slot is not None:
                self._slots.hold(self._name, self._slot, self._marker)
                self._slot = None  # ``end`` leaves it
            raise

    def keep(self) -> None:
        """The watcher stops with the request in hand: its record stays for the next start to count (or not)."""
        self._slot = None

    def end(self) -> None:
        """The request ended (any way but a stop of the watcher): its slot is cleared and free again."""
        slot, self._slot = self._slot, None
        if slot is None:
            return
        try:
            _put(slot, None)
        finally:
            self._slots.give_back(slot)  # whatever is in it is overwritten by the next request's record


def begin(layout: Layout, slots: Slots, req: Request, sha: str, mtime_ns: int) -> InFlight:
    """Record that ``req`` is in flight with the input published at ``mtime_ns`` with hash ``sha``.

    Its ``interruptions`` are those of that same publication so far. Publishing the input
    again (even the same bytes: a new mtime) starts the count afresh, as it does for a
    model failure (see ``retry``). A publication given up is not recorded again.
    """
    name = layout.names.input(req.key)
    held = slots.unhold(name)
    old = held[1] if held is not None else _read(layout.parked_dir / name)
    same = old is not None and (old.input_sha256, old.input_mtime_ns) == (sha, mtime_ns)
    if old is not None and same and old.given_up:
        if held is not None:
            slots.hold(name, *held)  # still the only memory of it
        return InFlight(layout, slots, name, old, None)
    marker = _Marker(input_sha256=sha, input_mtime_ns=mtime_ns, interruptions=old.interruptions if same and old else 0,
                     name=name)
    slot = held[0] if held is not None else slots.take()
    try:
        _put(slot, marker)
    except BaseException:
        slots.give_back(slot)
        raise
    if old is not None:
        fsio.remove_quietly(layout.parked_dir / name)
    return InFlight(layout, slots, name, marker, slot)


def count_interruptions(layout: Layout) -> list[Interrupted]:
    """At start-up: every record left in the watcher's hands is one more interruption of its request, and is
    parked; returns them all. ``inflight/`` is left empty. Records and markers whose input is gone are removed."""
    found: list[Interrupted] = []
    records: list[tuple[Path, str, _Marker]] = []
    for entry in _names(layout.inflight_dir):
        path = layout.inflight_dir / entry
        marker = _read(path)
        name = entry
        if entry.startswith(INFLIGHT_SLOT_PREFIX):  # an empty slot, or one with a request's record
            name = marker.name if marker is not None and marker.name is not None else ""
        if marker is None or not _plain(name) or not os.path.lexists(layout.root / name):
            fsio.remove_quietly(path)
            continue
        records.append((path, name, marker))
    # Given-up records last: where a request has two (a give-up, then a later try of it), the memory wins.
    for path, name, marker in sorted(records, key=lambda record: record[2].given_up):
        counted = not (marker.given_up or marker.waiting)
        if counted:
            marker.interruptions += 1
            found.append(Interrupted(name, marker.input_sha256, marker.interruptions))
        if counted or marker.given_up or marker.interruptions:
            # The marker first, then the record gone: a stop between the two counts the same one again, not twice.
            _write(layout.parked_dir / name, marker)
        fsio.remove_quietly(path)
    for name in _names(layout.parked_dir):
        if not os.path.lexists(layout.root / name) or _read(layout.parked_dir / name) is None:
            fsio.remove_quietly(layout.parked_dir / name)
    return found


def _plain(name: str) -> bool:
    """A bare file name (a slot's record names its input; nothing it says may reach outside the watch dir)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def _names(directory: Path) -> list[str]:
    """The records and markers in ``directory`` (files, temp files aside)."""
    with os.scandir(directory) as entries:
        return [e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]

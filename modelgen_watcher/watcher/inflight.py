"""Requests in flight, recorded on the volume, so that a request which keeps stopping the watcher is given up.

A marker (``.modelgen/inflight/<input name>``) is written before a request's input is
decoded (``begin``) and removed when the request ends in any way except the watcher
stopping. A marker found there at start-up therefore means the watcher stopped with that
request in its hands: killed, out of memory, or stopped by a signal (possibly sent by
the model itself). Each start counts one more interruption for those bytes and parks
the marker until the request is begun again.

A parked marker (``.modelgen/parked/<input name>``) is a request not in the watcher's
hands: at rest since a start counted it, or waiting for a busy warm worker (``park``
when it has to wait, ``unpark`` when a worker takes it). A stop meanwhile, the model
never having had it, is not counted, and its count is kept, neither raised nor
forgotten. Parking is a rename, not a rewrite (a temp file written and renamed): in a
drain nearly every request waits, so its marker moves twice; a rename and back cost
half as much as two rewrites. Where a marker is in both places (a stop between the two
steps of ``begin``), the one in ``inflight/`` is the newer.

At ``retry.MAX_INTERRUPTIONS`` the pipeline ends the request with an error instead of
running it again, so one poisonous request (a model that kills the watcher, or an
input whose decoding does) cannot keep the watcher in a crash loop while the others
wait.

Markers need no fsync: they only have to survive the process, not the machine (after
a power cut the count restarts, which costs at most a few more attempts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..volume import fsio
from ..volume.names import MAX_DOCUMENT_BYTES, WATCHER_TEMP_PREFIX, Layout, Request


class _Marker(BaseModel):
    input_sha256: str
    input_mtime_ns: int = 0
    """Which publication of those bytes: publishing them again is a fresh start."""
    interruptions: int = 0
    given_up: bool = False
    """These bytes were given up: kept as the memory of it, no longer counted or delayed at start."""
    waiting: bool = False
    """Written by earlier versions for what is now a parked marker; read as parked."""


@dataclass(frozen=True)
class Interrupted:
    """A request that was in flight when the watcher last stopped."""

    name: str
    input_sha256: str
    interruptions: int


def _read(directory: Path, name: str) -> _Marker | None:
    try:
        return _Marker.model_validate_json(fsio.safe_read(directory / name, MAX_DOCUMENT_BYTES).data)
    except (OSError, fsio.UnsafeFile, ValidationError):
        return None


def _write(directory: Path, name: str, marker: _Marker) -> None:
    fsio.atomic_write(
        directory / name, marker.model_dump_json().encode(), temp_prefix=WATCHER_TEMP_PREFIX, durable=False
    )


def begin(layout: Layout, req: Request, sha: str, mtime_ns: int) -> int:
    """Record that ``req`` is in flight with the input published at ``mtime_ns`` with hash ``sha``.

    Returns the interruptions of that same publication so far. Publishing the input
    again (even the same bytes: a new mtime) starts the count afresh, as it does for
    a model failure (see ``retry``).
    """
    name = layout.names.input(req.key)
    parked = None
    if (old := _read(layout.inflight_dir, name)) is None:
        old = parked = _read(layout.parked_dir, name)
    same = old is not None and (old.input_sha256, old.input_mtime_ns) == (sha, mtime_ns)
    if old is not None and same and old.given_up:
        return old.interruptions
    count = old.interruptions if old is not None and same else 0
    _write(layout.inflight_dir, name, _Marker(input_sha256=sha, input_mtime_ns=mtime_ns, interruptions=count))
    if parked is not None:
        fsio.remove_quietly(layout.parked_dir / name)
    return count


def park(layout: Layout, req: Request) -> None:
    """``req`` (begun) waits for a busy warm worker: a stop while it waits is not counted, and its count is kept."""
    name = layout.names.input(req.key)
    os.replace(layout.inflight_dir / name, layout.parked_dir / name)


def unpark(layout: Layout, req: Request) -> None:
    """A worker took ``req`` after it waited (``park``): a stop counts again."""
    name = layout.names.input(req.key)
    os.replace(layout.parked_dir / name, layout.inflight_dir / name)


def give_up(layout: Layout, req: Request) -> None:
    """Keep the marker as the memory that this publication is given up; later starts leave it be."""
    name = layout.names.input(req.key)
    old = _read(layout.inflight_dir, name)
    if old is not None and not old.given_up:
        _write(layout.inflight_dir, name, old.model_copy(update={"given_up": True}))


def end(layout: Layout, req: Request) -> None:
    """The request ended (any way but a stop of the watcher): forget it, wherever its marker is."""
    name = layout.names.input(req.key)
    if not fsio.remove_quietly(layout.inflight_dir / name):
        fsio.remove_quietly(layout.parked_dir / name)


def count_interruptions(layout: Layout) -> list[Interrupted]:
    """At start-up: every marker left in the watcher's hands is one more interruption of its request, and is parked;
    returns them all. Markers whose input is gone are removed, as are parked ones that ``inflight/`` supersedes."""
    found: list[Interrupted] = []
    for name in _names(layout.inflight_dir):
        marker = _read(layout.inflight_dir, name)
        if marker is None or not os.path.lexists(layout.root / name):
            fsio.remove_quietly(layout.inflight_dir / name)
            continue
        if marker.given_up or marker.waiting:  # ``waiting``: parked in place by an earlier version
            continue
        marker.interruptions += 1
        # Parked first, then counted there: a stop between the two loses this count rather than counting it twice.
        os.replace(layout.inflight_dir / name, layout.parked_dir / name)
        _write(layout.parked_dir, name, marker)  # at rest until the request is begun again
        found.append(Interrupted(name, marker.input_sha256, marker.interruptions))
    for name in _names(layout.parked_dir):
        superseded = os.path.lexists(layout.inflight_dir / name)
        if superseded or not os.path.lexists(layout.root / name) or _read(layout.parked_dir, name) is None:
            fsio.remove_quietly(layout.parked_dir / name)
    return found


def _names(directory: Path) -> list[str]:
    """The markers in ``directory`` (files, temp files aside)."""
    with os.scandir(directory) as entries:
        return [e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]

"""Requests in flight, recorded on the volume, so that a request which keeps stopping the watcher is given up.

A marker (``.modelgen/inflight/<input name>``) is written before a request's input is
decoded (``begin``) and removed when the request ends in any way except the watcher
stopping. A marker found at start-up therefore means the watcher stopped with that
request in flight: killed, out of memory, or stopped by a signal (possibly sent by the
model itself). Each start counts one more interruption for those bytes and leaves the
marker at rest (``waiting``) until the request is begun again. A request that must wait
for a busy warm worker says so (``waiting``, written only when it has to wait) until a
worker takes it (``at_model``): a stop meanwhile, the model never having had it, is
not counted, and its count is kept, neither raised nor forgotten. At
``retry.MAX_INTERRUPTIONS`` the pipeline ends the request with an error instead of
running it again, so one poisonous request (a model that kills the watcher, or an
input whose decoding does) cannot keep the watcher in a crash loop while the others
wait.

Markers need no fsync: they only have to survive the process, not the machine (after
a power cut the count restarts, which costs at most a few more attempts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
    """Not in the watcher's hands now: waiting for a busy warm worker, or at rest since a start counted it (not
    begun again since). A stop is not counted against it."""


@dataclass(frozen=True)
class Interrupted:
    """A request that was in flight when the watcher last stopped."""

    name: str
    input_sha256: str
    interruptions: int


def _read(layout: Layout, name: str) -> _Marker | None:
    try:
        return _Marker.model_validate_json(fsio.safe_read(layout.inflight_dir / name, MAX_DOCUMENT_BYTES).data)
    except (OSError, fsio.UnsafeFile, ValidationError):
        return None


def _write(layout: Layout, name: str, marker: _Marker) -> None:
    fsio.atomic_write(
        layout.inflight_dir / name, marker.model_dump_json().encode(), temp_prefix=WATCHER_TEMP_PREFIX, durable=False
    )


def begin(layout: Layout, req: Request, sha: str, mtime_ns: int) -> int:
    """Record that ``req`` is in flight with the input published at ``mtime_ns`` with hash ``sha``.

    Returns the interruptions of that same publication so far. Publishing the input
    again (even the same bytes: a new mtime) starts the count afresh, as it does for
    a model failure (see ``retry``).
    """
    name = layout.names.input(req.key)
    old = _read(layout, name)
    same = old is not None and (old.input_sha256, old.input_mtime_ns) == (sha, mtime_ns)
    if old is not None and same and old.given_up:
        return old.interruptions
    count = old.interruptions if old is not None and same else 0
    _write(layout, name, _Marker(input_sha256=sha, input_mtime_ns=mtime_ns, interruptions=count))
    return count


def waiting(layout: Layout, req: Request, sha: str, mtime_ns: int, interruptions: int, waits: bool) -> None:
    """``req`` (begun with ``begin``, which returned ``interruptions``) waits for a busy warm worker (``waits``), or
    a worker took it after such a wait: a stop while it waits is not counted, and its count is kept."""
    _write(layout, layout.names.input(req.key),
           _Marker(input_sha256=sha, input_mtime_ns=mtime_ns, interruptions=interruptions, waiting=waits))


def give_up(layout: Layout, req: Request) -> None:
    """Keep the marker as the memory that this publication is given up; later starts leave it be."""
    name = layout.names.input(req.key)
    old = _read(layout, name)
    if old is not None and not old.given_up:
        _write(layout, name, old.model_copy(update={"given_up": True}))


def end(layout: Layout, req: Request) -> None:
    """The request ended (any way but a stop of the watcher): forget it."""
    fsio.remove_quietly(layout.inflight_dir / layout.names.input(req.key))


def count_interruptions(layout: Layout) -> list[Interrupted]:
    """At start-up: every marker left in the watcher's hands is one more interruption of its request; returns them
    all."""
    found: list[Interrupted] = []
    for entry in os.scandir(layout.inflight_dir):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        marker = _read(layout, entry.name)
        if marker is None or not os.path.lexists(layout.root / entry.name):
            fsio.remove_quietly(layout.inflight_dir / entry.name)
            continue
        if marker.given_up or marker.waiting:
            continue
        marker.interruptions += 1
        marker.waiting = True  # at rest until the request is begun again
        _write(layout, entry.name, marker)
        found.append(Interrupted(entry.name, marker.input_sha256, marker.interruptions))
    return found

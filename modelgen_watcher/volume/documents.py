"""Reading the watcher's documents back from the volume: status, health and a result's provenance, validated.

The pipeline, the client, the server and the ``health`` command all read these
files; they do it here, with the same size caps and the same schema.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from . import fsio
from .decoding import DecodeError, decode_scored
from .names import MAX_DOCUMENT_BYTES, MAX_RESULT_BYTES
from .schemas import Health, ScoredRoute, Status, WatcherHealth


def read_status(path: Path) -> tuple[Status, int] | None:
    """The status at ``path`` and its file's mtime in ns; None when missing, unsafe or invalid."""
    try:
        snap = fsio.safe_read(path, MAX_DOCUMENT_BYTES)
        return Status.model_validate_json(snap.data), snap.mtime_ns
    except (OSError, fsio.UnsafeFile, ValidationError, RecursionError):
        return None


def read_health(path: Path) -> Health | None:
    """The heartbeat document at ``path``; None when missing, unsafe or invalid."""
    try:
        return Health.model_validate_json(fsio.safe_read(path, MAX_DOCUMENT_BYTES).data)
    except (OSError, fsio.UnsafeFile, ValidationError, RecursionError):
        return None


def read_watcher_health(path: Path) -> WatcherHealth | None:
    """A shared-mode watcher's heartbeat at ``path``; None when missing, unsafe or invalid."""
    try:
        return WatcherHealth.model_validate_json(fsio.safe_read(path, MAX_DOCUMENT_BYTES).data)
    except (OSError, fsio.UnsafeFile, ValidationError, RecursionError):
        return None


def read_result(path: Path, sha: str) -> tuple[bytes, ScoredRoute] | None:
    """The result at ``path`` (its bytes and document) if it is readable and names input ``sha``; else None.

    A result is a reader's only when its ``meta.input_sha256`` is the hash of the input
    it wrote: an ``ok`` status beside an older result (its rename lost to a power cut
    while the status's was kept) is no answer yet.
    """
    try:
        raw = fsio.safe_read(path, MAX_RESULT_BYTES).data
        result = decode_scored(raw)
    except (OSError, fsio.UnsafeFile, DecodeError):
        return None
    if result.meta is None or result.meta.input_sha256 != sha:
        return None
    return raw, result

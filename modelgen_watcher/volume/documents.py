"""Reading the watcher's documents back from the volume: status and health, validated.

The pipeline, the client, the server and the ``health`` command all read these
files; they do it here, with the same size caps and the same schema.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from . import fsio
from .names import MAX_DOCUMENT_BYTES
from .schemas import Health, Status, WatcherHealth


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

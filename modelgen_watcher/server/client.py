"""The server side of the file protocol: publish a route, then wait for *its* outcome.

Usable from any server, with no web framework. A result is only ever returned when its
``meta.input_sha256`` is the hash of the bytes this client wrote, so a reader can never
be handed an older result or another user's.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..volume import fsio, retry
from ..volume.decoding import DecodeError, decode_route
from ..volume.documents import read_result, read_status
from ..volume.events import EventSource
from ..volume.names import (
    CLIENT_TEMP_PREFIX,
    DEFAULT_INPUT_NAME,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_OUTPUT_NAME,
    Layout,
    Names,
    is_valid_key,
)
from ..volume.schemas import ErrorKind, ScoredRoute, State, Status

POLL_INTERVAL = 0.25
"""The bounded poll under the file events: waiting works even where no event arrives."""


class InvalidRoute(ValueError):
    """The route cannot be submitted: not JSON, not a route, or too large (``too_large``)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class ModelError(Exception):
    """The watcher finished the request with an error status: ``kind``, ``message``, ``detail``."""

    def __init__(self, kind: str, message: str, detail: str | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.detail = kind, message, detail


class WaitTimeout(TimeoutError):
    """No final outcome for this submission within the deadline; the request may still finish."""


@dataclass(frozen=True)
class Submission:
    """What was published: the key, the hash of the exact bytes, and the input's mtime after publishing.

    ``published_ns`` lets a retry of the same bytes tell a fresh error from one left by
    an earlier attempt (the watcher redoes transient failures, so those are stale).
    """

    key: str | None
    input_sha256: str
    published_ns: int = 0


def _as_object(raw: bytes) -> dict[str, Any]:
    """A published result as a dict (already validated by poll_raw: a JSON object)."""
    doc = json.loads(raw)
    assert isinstance(doc, dict)
    return doc


def new_key() -> str:
    """A fresh, unguessable request key that matches the protocol's key pattern."""
    return secrets.token_urlsafe(12).replace("_", "x").replace("-", "y")


class _StatusEvents:
    """One event source per client, waking every waiter on any change in the directory (they re-check).

    Started lazily, native only: where it cannot start (no inotify left, odd mount)
    waiters simply rely on the bounded poll, which is what polling would do anyway.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._cond = threading.Condition()
        self._generation = 0
        self._source: EventSource | None = None
        self._tried = False
        self._lock = threading.Lock()

    def _changed(self, name: str, complete: bool) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def ensure_started(self) -> None:
        with self._lock:
            if self._tried:
                return
            self._tried = True
            source = EventSource(self._root, self._changed, mode="native")
            try:
                source.start()
            except (OSError, RuntimeError):  # no inotify left, odd mount, or no thread to be had
                return  # events are an optimisation; the bounded poll still works
            self._source = source

    def wait(self, seen: int, timeout: float) -> int:
        """Block until something changed in the directory after ``seen``, or ``timeout``."""
        with self._cond:
            if self._generation == seen:
                self._cond.wait(timeout)
            return self._generation

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def stop(self) -> None:
        with self._lock:
            if self._source is not None:
                self._source.stop()
            self._source, self._tried = None, False


class Client:
    """Submits routes to a watch dir and waits for their outcome."""

    def __init__(
        self,
        watch_dir: Path | str,
        *,
        input_name: str = DEFAULT_INPUT_NAME,
        output_name: str = DEFAULT_OUTPUT_NAME,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        use_events: bool = True,
    ) -> None:
        names = Names(input_name, output_name)
        problem = names.check()
        if problem:
            raise ValueError(problem)
        self.layout = Layout(Path(watch_dir), names)
        self.max_input_bytes = max_input_bytes
        self._events = _StatusEvents(self.layout.root) if use_events else None

    # -- submit -----------------------------------------------------------

    def _check_size(self, raw: bytes) -> None:
        if len(raw) > self.max_input_bytes:
            raise InvalidRoute(f"the route is {len(raw)} bytes, over the limit of {self.max_input_bytes}",
                               too_large=True)

    def encode_route(self, route: Any) -> bytes:
        """Validate a route (dict, or JSON bytes/str) and return the exact bytes to publish.

        Validated exactly as the watcher will (``decoding.decode_route``, bounded memory
        whatever the bytes hold), so what is accepted here is never refused there.
        """
        if isinstance(route, (bytes, str)):
            raw = route.encode() if isinstance(route, str) else route
        else:
            raw = fsio.dump_json(route)
        self._check_size(raw)  # before parsing: a huge body is refused unread
        try:
            decode_route(raw, what="the route")
        except DecodeError as exc:
            raise InvalidRoute(str(exc)) from exc
        return raw

    def submit(self, route: Any, key: str | None = "") -> Submission:
        """Publish ``route`` atomically under ``key`` (a fresh key when ``""``; the legacy name when None)."""
        if key == "":
            key = new_key()
        if key is not None and not is_valid_key(key):
            raise ValueError(f"invalid key {key!r}")
        raw = self.encode_route(route)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        path = self.layout.input(key)
        fsio.atomic_write(path, raw, temp_prefix=CLIENT_TEMP_PREFIX)
        return Submission(key=key, input_sha256=fsio.sha256_hex(raw), published_ns=os.lstat(path).st_mtime_ns)

    def submission_for(self, key: str | None) -> Submission:
        """The Submission for an input already on the volume (written by another process).

        Its bytes define the hash to wait for. Raises FileNotFoundError when there is no
        such input, ``fsio.UnsafeFile`` or OSError when it must not or cannot be read.
        """
        return self.read_input(key)[0]

    def read_input(self, key: str | None) -> tuple[Submission, bytes]:
        """``submission_for(key)`` and the input's bytes it stands for, read once (raises as it does)."""
        snap = fsio.safe_read(self.layout.input(key), self.max_input_bytes)
        return Submission(key=key, input_sha256=snap.sha256, published_ns=snap.mtime_ns), snap.data

    # -- outcome ----------------------------------------------------------

    def status(self, key: str | None) -> tuple[Status, int] | None:
        """The request's status and the status file's mtime (ns), or None when missing or invalid."""
        return read_status(self.layout.status(key))

    def poll_raw(self, sub: Submission) -> bytes | None:
        """The result's bytes as published if it is ready, None while pending; ModelError if the request failed.

        The result is validated with the bounded decoder (one decode at a time in the
        process) and then handed back as read: a server answering many retrieves at once
        holds each result once, as bytes, not as a parsed document.
        """
        found = self.poll_scored(sub)
        return None if found is None else found[0]

    def poll_scored(self, sub: Submission) -> tuple[bytes, ScoredRoute] | None:
        """``poll_raw``, with the validated document it decoded beside the bytes (for a reader that draws it)."""
        found = self.status(sub.key)
        if found is None:
            return None
        status, written_ns = found
        if status.input_sha256 != sub.input_sha256 or status.state is State.running:
            return None
        if status.state is State.error:
            err = status.error
            if err is None or retry.is_transient(err.kind):
                return None  # the watcher retries it with backoff while it runs
            if err.kind is not ErrorKind.invalid_input and retry.republished(sub.published_ns, written_ns):
                return None  # an earlier attempt's model failure: the watcher runs it again for this publication
            raise ModelError(err.kind.value, err.message, err.detail)
        return read_result(self.layout.result(sub.key), sub.input_sha256)  # None: a newer outcome is on its way

    def poll(self, sub: Submission) -> dict[str, Any] | None:
        """The result if it is ready, None while pending; raises ModelError if the request failed."""
        raw = self.poll_raw(sub)
        return None if raw is None else _as_object(raw)

    def wait_raw(self, sub: Submission, timeout: float = 60.0) -> bytes:
        """Block until ``sub`` is scored (its result's bytes) or failed (ModelError); WaitTimeout after ``timeout``."""
        deadline = time.monotonic() + timeout
        if self._events is not None:
            self._events.ensure_started()
        seen = self._events.generation if self._events else 0
        while True:
            raw = self.poll_raw(sub)
            if raw is not None:
                return raw
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"no outcome for key {sub.key} within {timeout:g} s")
            step = min(remaining, POLL_INTERVAL)
            if self._events is not None:
                seen = self._events.wait(seen, step)
            else:
                time.sleep(step)

    def wait(self, sub: Submission, timeout: float = 60.0) -> dict[str, Any]:
        """Block until ``sub`` is scored (its result) or failed (ModelError); WaitTimeout after ``timeout``."""
        return _as_object(self.wait_raw(sub, timeout))

    def close(self) -> None:
        if self._events is not None:
            self._events.stop()

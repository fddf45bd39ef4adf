"""Why the daemon cannot make progress right now, if it cannot: what its heartbeat's ``ready`` says.

Parts of the daemon report a problem when they hit one (the volume refused a write)
and clear it when the same thing works again; the heartbeat publishes ``ready: false``
with the reasons while any problem stands, so probes go red while requests cannot be
served and green as soon as they can.
"""

from __future__ import annotations

import threading

from ..logs import get_logger

VOLUME = "volume"
"""The watch dir refused a write (full, read-only, not writable)."""

log = get_logger(__name__)


class Readiness:
    """A thread-safe set of named problems, each with the message a person can act on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}

    def fail(self, name: str, message: str) -> None:
        """Record a problem; it is logged when it starts, not at every retry."""
        with self._lock:
            new = name not in self._problems
            self._problems[name] = message
        if new:
            log.error("daemon.not_ready", problem=name, reason=message)

    def clear(self, name: str, why: str) -> None:
        """The problem is gone (``why``: what showed it); logged when it ends."""
        with self._lock:
            gone = self._problems.pop(name, None) is not None
        if gone:
            log.warning("daemon.ready_again", problem=name, reason=why)

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._problems

    def reason(self) -> str | None:
        """Every standing problem in one line, or None when ready."""
        with self._lock:
            return "; ".join(self._problems.values()) or None

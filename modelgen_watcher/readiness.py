"""Why the daemon cannot make progress right now, if it cannot: what its heartbeat's ``ready`` says.

Parts of the daemon report a problem when they hit one (the volume refused a write)
and clear it when the same thing works again; the heartbeat publishes ``ready: false``
with the reasons while any problem stands, so probes go red while requests cannot be
served and green as soon as they can.
"""

from __future__ import annotations

import threading

VOLUME = "volume"
"""The watch dir refused a write (full, read-only, not writable)."""


class Readiness:
    """A thread-safe set of named problems, each with the message a person can act on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}

    def fail(self, name: str, message: str) -> bool:
        """Record a problem; True when it is new (so it is logged once, not at every retry)."""
        with self._lock:
            new = name not in self._problems
            self._problems[name] = message
            return new

    def clear(self, name: str) -> bool:
        """The problem is gone; True when there was one."""
        with self._lock:
            return self._problems.pop(name, None) is not None

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._problems

    def reason(self) -> str | None:
        """Every standing problem in one line, or None when ready."""
        with self._lock:
            return "; ".join(self._problems.values()) or None

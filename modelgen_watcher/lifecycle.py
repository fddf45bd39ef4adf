"""Waiting for the end of a long-running command: signals and stop requests from other threads, in one queue.

As in gunicorn's arbiter, a signal handler only enqueues the signal's name (nothing
there can deadlock, and ``SimpleQueue.put`` is safe in a handler), and the main thread
blocks on the queue: no polling, no flag checked every 0.2 s. Threads that decide the
process must end (a dead observer, a lost watch dir) put their reason in the same
queue. The handlers in place before are restored on exit, so a test or an embedding
program gets its process back as it was. Outside the main thread no handler can be
installed; then only ``stop()`` ends the wait.
"""

from __future__ import annotations

import queue
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    """``with Lifecycle() as life: ... reason = life.wait()`` - the reason a command should stop."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self._signals = signals
        self._reasons: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> Lifecycle:
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # None: installed from C, cannot be put back from Python
                signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._reasons.put(signal.Signals(signum).name)

    def stop(self, reason: str) -> None:
        """Ask the waiting thread to end the command (from any thread)."""
        self._reasons.put(reason)

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until a signal arrives or ``stop()`` is called: its reason; None after ``timeout``."""
        try:
            return self._reasons.get(timeout=timeout)
        except queue.Empty:
            return None

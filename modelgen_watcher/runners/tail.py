"""The last bytes of a model's output: what an error status shows, whatever the model printed before.

Both runners keep one per stream; trimming is done in batches, so megabytes of output
cost little copying. ``total`` counts everything fed, so a warm worker's part for one
request can be told from the rest of its life (``since``).
"""

from __future__ import annotations

import threading

TAIL_BYTES = 16 * 1024
"""How much of each stream is kept for the error status; the rest is read and dropped."""


class Tail:
    """The last TAIL_BYTES of a stream, fed from one thread and read from another."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            self._buf += chunk
            self.total += len(chunk)
            if len(self._buf) > 2 * TAIL_BYTES:
                del self._buf[:-TAIL_BYTES]

    def text(self) -> str:
        return self.since(0)

    def since(self, mark: int) -> str:
        """What arrived after ``total`` was ``mark`` (as much of it as is still kept)."""
        with self._lock:
            new = min(self.total - mark, len(self._buf), TAIL_BYTES)
            return bytes(self._buf[len(self._buf) - new:]).decode("utf-8", errors="replace") if new > 0 else ""

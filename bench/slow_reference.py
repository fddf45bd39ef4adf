"""A model for ``bench/shared_drain.py``: the embedded reference model, made slower by ``BENCH_MODEL_MS`` per request.

With the reference model (about 1 ms a request) a backlog is drained as fast as the
watchers' own CPU allows, so on a small machine more watchers only share the same
cores. A model that takes its time (sleeping: it leaves the CPU to the watchers, as a
model on a machine of its own would) shows what shared mode is for: the drain rate
grows with the watchers. Run by the warm workers as ``--model-entry
bench/slow_reference.py:create``, on the watcher's interpreter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from modelgen_watcher.modelside import reference


def create(workspace: str, argv: list[str]) -> Callable[[Any], None]:
    score = reference.create(workspace, argv)
    pause = float(os.environ.get("BENCH_MODEL_MS", "0")) / 1000

    def slow(job: Any) -> None:
        time.sleep(pause)
        score(job)

    return slow

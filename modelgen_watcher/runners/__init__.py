"""Model-running strategies behind one interface (``base.ModelRunner``), chosen in one place: ``create``.

- ``subprocess`` (``subprocess.py``): one contained process per request.
- ``entry`` (``warm.py``): warm workers that load the model once, on the model's own
  interpreter (``modelside/host.py``), and serve each request as a call.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ModelJob, ModelLoadError, ModelRunner, RunReport

if TYPE_CHECKING:
    from ..settings import ModelSettings
    from .warm import WorkerSpec

__all__ = ["ModelJob", "ModelLoadError", "ModelRunner", "RunReport", "create"]


def create(settings: ModelSettings, workspace: Path, workers: int = 1) -> ModelRunner:
    """The runner these settings ask for: the one place where a strategy is picked.

    Strategies are imported here, not at the package's top: the settings (and so the
    server, which never runs a model) import ``runners.argv``, and must not load the
    process-running code with it.
    """
    if settings.runner_kind == "entry":
        from .warm import WarmRunner

        return WarmRunner(
            worker_spec(settings), workspace=workspace, workers=workers, kill_grace=settings.kill_grace,
            start_timeout=settings.worker_start_timeout, max_requests=settings.worker_max_requests,
            max_rss=settings.worker_max_rss,
        )
    from .subprocess import SubprocessRunner

    return SubprocessRunner(settings.command_template, cwd=settings.model_cwd, kill_grace=settings.kill_grace)


def worker_spec(settings: ModelSettings) -> WorkerSpec:
    """How a warm worker starts: the embedded model isolated on the watcher's interpreter (``-I -S``: the
    standard library only); any other entry on the interpreter ``--model-cmd`` starts (the model's own),
    or the watcher's when there is no ``--model-cmd``. An entry named by a word (``cyclesafe``) is that file
    of ``modelside``."""
    from ..modelside import ENTRIES, HOST, REFERENCE
    from .warm import WorkerSpec

    if settings.model_entry in (None, "reference"):
        return WorkerSpec(python=[sys.executable, "-I", "-S"], entry=f"{REFERENCE}:create", host=HOST,
                          cwd=settings.model_cwd)
    template = settings.command_template if settings.model_cmd is not None else []
    python = [template[0]] if template else [sys.executable]
    named = ENTRIES.get(str(settings.model_entry))
    entry = f"{named}:create" if named is not None else str(settings.model_entry)
    return WorkerSpec(python=python, entry=entry, host=HOST, template=template, cwd=settings.model_cwd)

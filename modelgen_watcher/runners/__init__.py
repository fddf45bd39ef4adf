"""Model-running strategies behind one interface (``base.ModelRunner``), chosen in one place: ``create``.

- ``subprocess`` (``subprocess.py``): one contained process per request.
- ``entry`` (``warm.py``): warm workers that load the model once, on the model's own
  interpreter (``modelside/host.py``), and serve each request as a call.
- ``fork``: the same warm workers, whose entry is a fork server (``modelside/forkserver.py``):
  heavy modules imported once, the unchanged script run in a forked child per request.
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


def create(
    settings: ModelSettings, workspace: Path, workers: int = 1, model_cpus: frozenset[int] | None = None,
    shared: bool = False,
) -> ModelRunner:
    """The runner these settings ask for: the one place where a strategy is picked.

    ``model_cpus``: the CPUs a warm worker takes back when the daemon runs on one of them
    (``watcher/affinity.py``). ``shared``: one of several watchers of the watch dir (``--shared``).

    Strategies are imported here, not at the package's top: the settings (and so the
    server, which never runs a model) import ``runners.argv``, and must not load the
    process-running code with it.
    """
    if settings.runner_kind in ("entry", "fork"):
        from .warm import WarmRunner

        return WarmRunner(
            worker_spec(settings), workspace=workspace, workers=workers, kill_grace=settings.kill_grace,
            start_timeout=settings.worker_start_timeout, max_requests=settings.worker_max_requests,
            max_rss=settings.worker_max_rss, model_cpus=model_cpus, shared=shared,
        )
    from .subprocess import SubprocessRunner

    return SubprocessRunner(settings.command_template, cwd=settings.model_cwd, kill_grace=settings.kill_grace,
                            workers=workers)


def worker_spec(settings: ModelSettings) -> WorkerSpec:
    """How a warm worker starts.

    A fork server runs on the interpreter (with its options) that ``--model-cmd`` names, told what to
    preload. The embedded model runs isolated on the watcher's interpreter (``-I -S``: the standard
    library only); upstream's adapter (``cyclesafe``) on the interpreter, with its options, that runs
    upstream's script in ``--model-cmd``; any other entry on the interpreter ``--model-cmd`` starts (the
    model's own), or the watcher's when there is no ``--model-cmd``."""
    from ..modelside import CYCLESAFE, FORKSERVER, HOST, REFERENCE
    from ..modelside.forkserver import PRELOAD_ENV, split_command
    from .warm import WorkerSpec

    if settings.runner_kind == "fork":  # the script's interpreter, with its options, runs the fork server
        interpreter, _, _ = split_command(settings.command_template)
        return WorkerSpec(python=interpreter, entry=f"{FORKSERVER}:create", host=HOST,
                          template=settings.command_template, cwd=settings.model_cwd,
                          env={PRELOAD_ENV: ",".join(settings.preload_modules)})
    if settings.model_entry in (None, "reference"):
        return WorkerSpec(python=[sys.executable, "-I", "-S"], entry=f"{REFERENCE}:create", host=HOST,
                          cwd=settings.model_cwd)
    if settings.model_entry == "cyclesafe":  # upstream's script imported where its interpreter would run it
        interpreter, _, _ = split_command(settings.command_template)
        return WorkerSpec(python=interpreter, entry=f"{CYCLESAFE}:create", host=HOST,
                          template=settings.command_template, cwd=settings.model_cwd)
    template = settings.command_template if settings.model_cmd is not None else []
    python = [template[0]] if template else [sys.executable]
    return WorkerSpec(python=python, entry=str(settings.model_entry), host=HOST, template=template,
                      cwd=settings.model_cwd)

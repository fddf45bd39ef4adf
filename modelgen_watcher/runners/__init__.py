"""Model-running strategies behind one interface (``base.ModelRunner``), chosen in one place: ``create``.

Today there is one strategy, a subprocess per request; warm runners that load a model
once will implement the same interface and be chosen here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ModelJob, ModelRunner, RunReport

if TYPE_CHECKING:
    from ..settings import ModelSettings

__all__ = ["ModelJob", "ModelRunner", "RunReport", "create"]


def create(settings: ModelSettings) -> ModelRunner:
    """The runner these settings ask for: the one place where a strategy is picked.

    Strategies are imported here, not at the package's top: the settings (and so the
    server, which never runs a model) import ``runners.argv``, and must not load the
    process-running code with it.
    """
    from .subprocess import SubprocessRunner

    return SubprocessRunner(settings.command_template, cwd=settings.model_cwd, kill_grace=settings.kill_grace)

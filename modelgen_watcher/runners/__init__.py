"""Model-running strategies behind one interface (``base.ModelRunner``), chosen in one place: ``create``.

Today there is one strategy, a subprocess per request; warm runners that load a model
once implement the same interface and are chosen here by setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ModelJob, ModelRunner, RunReport
from .subprocess import SubprocessRunner

if TYPE_CHECKING:
    from ..settings import ModelSettings

__all__ = ["ModelJob", "ModelRunner", "RunReport", "SubprocessRunner", "create"]


def create(settings: ModelSettings) -> ModelRunner:
    """The runner these settings ask for: the one place where a strategy is picked."""
    return SubprocessRunner(settings.command_template, cwd=settings.model_cwd, kill_grace=settings.kill_grace)

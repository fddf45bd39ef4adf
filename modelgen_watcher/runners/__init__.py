"""Model-running strategies behind one small interface (see ``base``).

Today there is one strategy, a subprocess per request; a long-lived warm worker that
loads a model once can sit beside it by implementing the same ``ModelRunner``.
"""

from .base import ModelJob, ModelRunner, RunReport
from .subprocess import SubprocessRunner

__all__ = ["ModelJob", "ModelRunner", "RunReport", "SubprocessRunner"]

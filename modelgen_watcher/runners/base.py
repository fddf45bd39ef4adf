"""The runner interface: what the pipeline hands a model, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ModelJob:
    """One scoring run: the snapshot to read and the file to write (inside ``workspace``)."""

    input_path: Path
    output_path: Path
    workspace: Path
    key: str | None
    timeout: float

    @property
    def output_name(self) -> str:
        return self.output_path.name


@dataclass(frozen=True)
class RunReport:
    """How a run ended. ``launch_error`` is set when the model could not be started at all."""

    exit_code: int | None
    duration_s: float
    timed_out: bool = False
    cancelled: bool = False
    launch_error: str | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.cancelled or self.launch_error)


class ModelRunner(Protocol):
    """A strategy that runs a model on one job at a time per calling thread."""

    def run(self, job: ModelJob) -> RunReport:
        """Run to completion, timeout or cancellation; never raises for model misbehaviour."""
        ...

    def stop(self) -> None:
        """Cancel every run in flight (their reports say ``cancelled``) and refuse new ones."""
        ...

"""The model's argument template: its placeholders, the check of a template, and its rendering for one job.

Settings check a ``--model-cmd`` with ``unknown_placeholders`` and every runner fills it
with ``render``: one list of placeholders and one pattern, so what is accepted is
exactly what is filled.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import ModelJob

PLACEHOLDERS: dict[str, str] = {
    "input": "the snapshot to score",
    "output": "the file to write",
    "workspace": "the model's persistent cache directory",
    "output_name": "the name of `{output}` relative to `{workspace}`",
    "key": "the request's key",
}
"""Every placeholder, with what it stands for (``--model-cmd``'s help and the docs say this)."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def unknown_placeholders(template: str) -> list[str]:
    """Names in braces that are not placeholders, sorted; empty when the template is fine."""
    return sorted({name for name in _PLACEHOLDER.findall(template) if name not in PLACEHOLDERS})


def render(template: list[str], job: ModelJob) -> list[str]:
    """Fill the placeholders in each argument in one pass (a value is never re-scanned); no shell is involved."""
    return _fill(template, {
        "input": str(job.input_path),
        "output": str(job.output_path),
        "workspace": str(job.workspace),
        "output_name": job.output_name,
        "key": job.key or "",
    })


def render_for_worker(template: list[str], workspace: Path) -> list[str]:
    """The command as a warm worker gets it when it starts: no request yet, so only ``{workspace}`` has a value
    and the per-request placeholders are empty."""
    return _fill(template, dict.fromkeys(PLACEHOLDERS, "") | {"workspace": str(workspace)})


def _fill(template: list[str], values: dict[str, str]) -> list[str]:
    return [_PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), arg) for arg in template]

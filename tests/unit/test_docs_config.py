"""docs/configuration.md is the page the settings classes generate, as committed."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from modelgen_watcher import docs_config
from modelgen_watcher.settings import COMMAND_SETTINGS, env_only_fields, env_var, flag, flag_fields

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_page_matches_the_settings() -> None:
    expected = docs_config.markdown()
    committed = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    if committed != expected:
        diff = "".join(difflib.unified_diff(
            committed.splitlines(keepends=True), expected.splitlines(keepends=True),
            "docs/configuration.md (committed)", "docs/configuration.md (from the settings classes)",
        ))
        pytest.fail(f"docs/configuration.md differs from the settings classes: run `make docs` and commit it.\n{diff}")


def test_page_has_a_row_per_option_of_every_command() -> None:
    for command, cls in COMMAND_SETTINGS.items():
        section = docs_config.command_section(command)
        for name, _ in flag_fields(cls):
            assert f"| `{flag(name)}` | `{env_var(name)}` |" in section
        for name, _ in env_only_fields(cls):
            assert f"| *environment only* | `{env_var(name)}` |" in section


def test_cells_escape_markup_outside_code() -> None:
    assert docs_config._md("a <b> | `<c>|`") == "a &lt;b&gt; \\| `<c>\\|`"

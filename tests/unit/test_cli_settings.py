"""The command line generated from the settings classes: flags, defaults shown, choices, env-only fields."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from modelgen_watcher import cli
from modelgen_watcher.runners.argv import PLACEHOLDERS
from modelgen_watcher.settings import (
    COMMAND_SETTINGS,
    HealthSettings,
    ScoreSettings,
    WatcherSettings,
    _Base,
    env_var,
)

WARM_FLAGS = ("--runner", "--model-entry", "--preload", "--worker-max-requests", "--worker-max-rss",
              "--worker-start-timeout")
"""Added with the warm runners (names fixed by the contract, but for the start timeout)."""
SHARED_FLAGS = ("--shared", "--watcher-id")
"""Added with shared mode (names fixed by the contract and the issue); ``run`` has ``--claim-lease`` too."""
FLAGS = {
    "run": {
        "--watch-dir", "--input-name", "--output-name", "--model-cmd", "--model-cwd", "--model-timeout",
        "--model-name", "--kill-grace", "--max-input-bytes", "--workers", "--observer", "--poll-interval",
        "--debounce", "--settle", "--rescan-interval", "--retention", "--once", "--log-format", "--log-level",
        *WARM_FLAGS, *SHARED_FLAGS, "--claim-lease",
        "--daemon-cpu",  # added with warm runners' drain rate: the daemon's threads on one CPU
    },
    "health": {"--watch-dir", "--max-age", *SHARED_FLAGS},  # it prints one line and logs nothing: no log flags
    "score": {
        "-o", "--output", "--svg", "--model-cmd", "--model-cwd", "--model-timeout", "--model-name", "--kill-grace",
        "--max-input-bytes", "--log-format", "--log-level", *WARM_FLAGS,
    },
    "serve": {
        "--watch-dir", "--input-name", "--output-name", "--host", "--port", "--static-dir", "--max-input-bytes",
        "--max-wait", "--legacy-wait", "--health-max-age", "--request-timeout", "--head-timeout",
        "--keepalive-timeout", "--max-connections", "--log-format", "--log-level",
    },
}
"""The flags each command had before they were generated: generating them changed none."""

FIELDS = [(command, name) for command, cls in COMMAND_SETTINGS.items() for name in cls.model_fields]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MODELGEN_"):
            monkeypatch.delenv(name)


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = cli._Parser(prog=f"modelgen-watcher {command}")
    cli.add_command_args(parser, command)
    return parser


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


def shown_help(command: str, name: str) -> str:
    """What --help says of a field: its flag's help, or its sentence in the epilog when it has no flag."""
    parser = command_parser(command)
    for action in parser._actions:
        if action.dest == name:
            return str(action.help).replace("%%", "%")
    match = re.search(re.escape(env_var(name)) + r", (.*?\))\.", parser.epilog or "")
    assert match, f"{env_var(name)} is neither a flag nor in the epilog of {command}"
    return match.group(1)


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_flags_are_unchanged(command: str) -> None:
    assert option_strings(command_parser(command)) == FLAGS[command]


def test_main_parser_has_every_command() -> None:
    args = cli.build_parser().parse_args(["health", "--max-age", "5"])
    assert vars(args) == {"command": "health", "max_age": "5"}


@pytest.mark.parametrize(("command", "name"), FIELDS)
def test_help_shows_the_field_default(command: str, name: str) -> None:
    cls = COMMAND_SETTINGS[command]
    info = cls.model_fields[name]
    text = shown_help(command, name)
    assert text.count("default") == 1, text  # shown once, from the field; never typed in the description
    shown = re.search(r"\(default: ([^;)]*)", text)
    assert shown, text
    value = shown.group(1)
    if info.default is None:
        extra = info.json_schema_extra
        assert isinstance(extra, dict), extra  # a dict of ours, not pydantic's callable form
        assert value == extra["none_means"]
    elif isinstance(info.default, bool):
        assert value == ("on" if info.default else "off")
    else:  # typed back as a flag, the default shown gives the field's default
        flags: dict[str, Any] = {name: value}  # a field picked at run time: no static type for its value
        assert getattr(cls(**flags), name) == info.default


@pytest.mark.parametrize(("command", "name"), FIELDS)
def test_every_field_has_a_one_line_description(command: str, name: str) -> None:
    description = COMMAND_SETTINGS[command].model_fields[name].description
    assert description and "\n" not in description
    assert "default" not in description.lower()


def test_choices_shown_in_help() -> None:
    text = command_parser("run").format_help()
    assert "--observer {auto,native,polling}" in text
    assert "--log-format {json,console}" in text
    assert "--log-level {debug,info,warning,error}" in text
    assert "{json,console}" in command_parser("serve").format_help()


def test_choices_enforced(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        command_parser("run").parse_args(["--observer", "magic"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--observer" in lines[0] and "auto" in lines[0]
    with pytest.raises(SystemExit):  # observer was never case-insensitive
        command_parser("run").parse_args(["--observer", "NATIVE"])
    with pytest.raises(SystemExit):
        command_parser("health").parse_args(["--log-level", "loud"])


def test_log_settings_stay_case_insensitive() -> None:
    args = command_parser("run").parse_args(["--log-level", "DEBUG", "--log-format", "JSON"])
    settings = cli.load(WatcherSettings, args)
    assert (settings.log_level, settings.log_format) == ("debug", "json")


def test_bad_choice_from_the_environment_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELGEN_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit) as info:
        cli.load(WatcherSettings, command_parser("run").parse_args([]))
    assert info.value.code == 2
    assert "--log-format (MODELGEN_LOG_FORMAT)" in capsys.readouterr().err


def test_one_variable_switches_the_runner_of_an_image(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cyclesafe image sets the entry runner's settings; MODELGEN_RUNNER alone picks another, and the start says
    what it leaves unused."""
    monkeypatch.setenv("MODELGEN_MODEL_CMD", "python3 model.py {input}")
    monkeypatch.setenv("MODELGEN_MODEL_ENTRY", "cyclesafe.py:create")
    monkeypatch.setenv("MODELGEN_RUNNER", "entry")
    assert cli.load(WatcherSettings, command_parser("run").parse_args([])).runner_kind == "entry"
    assert capsys.readouterr().err == ""
    for runner in ("fork", "subprocess"):
        monkeypatch.setenv("MODELGEN_RUNNER", runner)
        assert cli.load(WatcherSettings, command_parser("run").parse_args([])).runner_kind == runner
        note = f"note: --model-entry (MODELGEN_MODEL_ENTRY) is not used by the {runner} runner; ignored"
        assert note in capsys.readouterr().err


def test_health_offers_only_its_options() -> None:
    assert set(HealthSettings.model_fields) == {"watch_dir", "max_age", "shared", "watcher_id"}
    text = command_parser("health").format_help()
    assert set(re.findall(r"--[a-z-]+", text)) == {"--help", "--watch-dir", "--max-age", "--shared", "--watcher-id"}


def test_only_given_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGEN_SETTLE", "5")
    monkeypatch.setenv("MODELGEN_WORKERS", "2")
    args = command_parser("run").parse_args(["--workers", "3", "--once"])
    assert vars(args) == {"workers": "3", "once": True}
    settings = cli.load(WatcherSettings, args)
    assert (settings.workers, settings.settle, settings.once) == (3, 5.0, True)


def test_env_only_fields_have_no_flag_and_are_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        command_parser("run").parse_args(["--heartbeat-interval", "1"])
    assert "MODELGEN_HEARTBEAT_INTERVAL" in (command_parser("run").epilog or "")
    monkeypatch.setenv("MODELGEN_HEARTBEAT_INTERVAL", "1")
    assert cli.load(WatcherSettings, command_parser("run").parse_args([])).heartbeat_interval == 1.0
    with pytest.raises(SystemExit):
        command_parser("score").parse_args(["route.json", "--input-name", "x.json"])


def test_env_only_must_name_a_field() -> None:
    with pytest.raises(TypeError, match="ENV_ONLY names no field: hartbeat"):

        class Misspelt(_Base):
            ENV_ONLY = frozenset({"hartbeat"})
            heartbeat: float = Field(default=1.0, description="seconds")


def test_score_reads_only_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGEN_WORKERS", "0")  # a watcher setting, not score's
    monkeypatch.setenv("MODELGEN_OUTPUT_NAME", "out.json")
    args = command_parser("score").parse_args(["route.json", "--model-timeout", "7"])
    settings = cli.load(ScoreSettings, args)
    pipeline = settings.pipeline_settings()
    assert isinstance(pipeline, WatcherSettings)
    assert (pipeline.model_timeout, pipeline.output_name, pipeline.settle) == (7.0, "out.json", 0.0)
    assert pipeline.command_template == settings.command_template


def test_every_placeholder_is_explained() -> None:
    help_text = shown_help("run", "model_cmd")
    assert all(f"{{{p}}} {meaning.replace('`', '')}" in help_text for p, meaning in PLACEHOLDERS.items())


def test_every_modelgen_variable_of_the_deploy_files_is_known() -> None:
    """No container or compose file may set a variable the commands would warn about as misspelt."""
    from modelgen_watcher.settings import unknown_variables

    root = Path(__file__).resolve().parents[2]
    files = ["Dockerfile.modelgen", "Dockerfile.server", "compose.yaml", "compose.cyclesafe.yaml", "compose.shared.yaml",
             "tests/containers/compose.slow.yaml", "tests/containers/compose.shared-test.yaml",
             "deploy/k8s/base/deployment.yaml", "deploy/k8s/overlays/shared/modelgen.yaml"]
    names = {n for f in files for n in re.findall(r"MODELGEN_[A-Z_]+", (root / f).read_text())}
    assert unknown_variables(dict.fromkeys(names, "")) == []

"""Settings: environment and flags, precedence, and errors a person can act on."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from modelgen_watcher.settings import ModelSettings, WatcherSettings, describe_error


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MODELGEN_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = WatcherSettings()
    assert s.workers == 1
    assert s.model_cmd is None


def test_env_var_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGEN_WORKERS", "3")
    assert WatcherSettings().workers == 3


def test_init_value_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGEN_WORKERS", "3")
    assert WatcherSettings(workers=5).workers == 5


@pytest.mark.parametrize("value", ["0", "65", "many", "-1"])
def test_invalid_env_value_names_flag_and_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MODELGEN_WORKERS", value)
    with pytest.raises(ValidationError) as info:
        WatcherSettings()
    line = describe_error(info.value)
    assert "--workers (MODELGEN_WORKERS)" in line
    assert "\n" not in line


def test_invalid_init_value_names_flag_and_variable() -> None:
    with pytest.raises(ValidationError) as info:
        WatcherSettings(model_timeout=0)
    assert "--model-timeout (MODELGEN_MODEL_TIMEOUT)" in describe_error(info.value)


def test_model_cmd_unknown_placeholder_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSettings(model_cmd="python model.py --in {input} --out {outptu}")
    line = describe_error(info.value)
    assert "--model-cmd (MODELGEN_MODEL_CMD)" in line
    assert "{outptu}" in line


def test_model_cmd_unbalanced_quote_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSettings(model_cmd='python "model.py --in {input}')
    assert "--model-cmd (MODELGEN_MODEL_CMD)" in describe_error(info.value)


def test_model_cmd_from_env_with_known_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = "python3 model.py --in {input} --out {output} --ws {workspace} --name {output_name} --key {key}"
    monkeypatch.setenv("MODELGEN_MODEL_CMD", cmd)
    s = ModelSettings()
    assert s.model_cmd == cmd
    assert s.command_template[0] == "python3"


def test_model_program_must_exist() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSettings(model_cmd="no-such-model-program {input}")
    assert "not on PATH" in describe_error(info.value)
    with pytest.raises(ValidationError) as info:
        ModelSettings(model_cmd="./missing/model {input}")
    assert "not an executable file" in describe_error(info.value)


def test_model_label() -> None:
    assert ModelSettings().model_label == "reference"
    upstream = "python3 /opt/cyclesafe/modelmanager/model.py --workspace={workspace} --routefile={input} --dumpresponse={output_name}"
    assert ModelSettings(model_cmd=upstream).model_label == "model.py"
    assert ModelSettings(model_cmd="/bin/sh -c true").model_label == "sh"
    assert ModelSettings(model_cmd=upstream, model_name="tree-v2").model_label == "tree-v2"


def test_clashing_names_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSettings(input_name="same.json", output_name="same.json")
    assert "differ" in describe_error(info.value)

"""Settings: environment and flags, precedence, and errors a person can act on."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from modelgen_watcher.modelside import CYCLESAFE
from modelgen_watcher.runners import worker_spec
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


UPSTREAM = "python3 ./modelmanager/model.py --workspace={workspace} --routefile={input} --dumpresponse={output_name}"


def test_the_cyclesafe_entry_is_upstreams_command_run_warm() -> None:
    s = ModelSettings(model_entry="cyclesafe", model_cmd=UPSTREAM)
    assert s.runner_kind == "entry"
    assert s.model_label == "model.py"  # what the same command says as a process per request
    spec = worker_spec(s)
    assert spec.entry == f"{CYCLESAFE}:create"
    assert spec.python == ["python3"] and spec.template[1] == "./modelmanager/model.py"
    with_options = ModelSettings(model_entry="cyclesafe", model_cmd=UPSTREAM.replace("python3", "python3 -u -W ignore"))
    assert worker_spec(with_options).python == ["python3", "-u", "-W", "ignore"]  # as the script would run


def test_the_cyclesafe_entry_needs_the_model_command() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSettings(model_entry="cyclesafe")
    line = describe_error(info.value)
    assert "--model-entry (MODELGEN_MODEL_ENTRY)" in line and "needs --model-cmd" in line
    with pytest.raises(ValidationError) as info:
        ModelSettings(model_entry="cyclesafe", model_cmd="python3 -m modelmanager.model --workspace={workspace}")
    assert "--model-cmd (MODELGEN_MODEL_CMD): `--model-entry cyclesafe` needs `PYTHON [OPTIONS] SCRIPT" in describe_error(
        info.value)


def test_an_entry_is_a_path_or_a_name() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSettings(model_entry="cyclesafe.py")
    assert "MODULE_OR_PATH:FACTORY, `reference` or `cyclesafe`" in describe_error(info.value)


def test_clashing_names_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        ModelSettings(input_name="same.json", output_name="same.json")
    assert "differ" in describe_error(info.value)

"""The adapter's reading of upstream's command line (modelside/cyclesafe.py); its runs are in tests/integration."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelgen_watcher.modelside.cyclesafe import ModelCommandError, create, option_value, split_command, with_option

UPSTREAM = ["python3", "./modelmanager/model.py", "--workspace=/w", "--routefile=.", "--dumpresponse=",
            "--datafile=./data/txdot_cris_20170427.csv"]


def test_the_script_is_what_the_interpreter_runs() -> None:
    assert split_command(UPSTREAM) == ("./modelmanager/model.py", UPSTREAM[2:])
    assert split_command(["/opt/venv/bin/python3.7", "-u", "-W", "ignore", "model.py", "--x"]) == ("model.py", ["--x"])
    for not_a_script in (["python3", "-m", "modelmanager.model"], ["python3"], ["python3", "-c", "pass"]):
        with pytest.raises(ModelCommandError, match="must run upstream's script"):
            split_command(not_a_script)


@pytest.mark.parametrize("args", [["--routefile=a.json", "--v"], ["--routefile", "a.json", "--v"]])
def test_an_option_is_read_and_set_in_the_form_it_has(args: list[str]) -> None:
    assert option_value(args, "--routefile") == "a.json"
    changed = with_option(args, "--routefile", "b.json")
    assert option_value(changed, "--routefile") == "b.json" and len(changed) == len(args) and args[-1] == "--v"


def test_a_missing_option_is_added() -> None:
    assert option_value(["--v"], "--routefile") is None
    assert with_option(["--v"], "--routefile", "b.json") == ["--v", "--routefile=b.json"]


def test_a_missing_script_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelCommandError, match=r"script './modelmanager/model.py' is not a file \(from "):
        create(str(tmp_path), UPSTREAM)

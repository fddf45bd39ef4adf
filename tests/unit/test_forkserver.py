"""How the fork server reads a model command: the interpreter's options are its own, the rest is the child's."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelgen_watcher.modelside.forkserver import script_args, split_command
from modelgen_watcher.settings import WatcherSettings


@pytest.mark.parametrize(
    ("argv", "interpreter", "kind", "target", "args"),
    [
        (["python3", "model.py", "--workspace", "w"], ["python3"], "script", "model.py", ["--workspace", "w"]),
        (["python", "-u", "-W", "ignore", "-X", "dev", "m.py", "-u"], ["python", "-u", "-W", "ignore", "-X", "dev"],
         "script", "m.py", ["-u"]),
        (["/opt/venv/bin/python3.7", "-Wignore", "-I", "--", "-odd.py", "x"], ["/opt/venv/bin/python3.7", "-Wignore", "-I"],
         "script", "-odd.py", ["x"]),
        (["pypy3", "-m", "pkg.model", "--in", "f"], ["pypy3"], "module", "pkg.model", ["--in", "f"]),
        (["python3", "-OO", "-mpkg", "a"], ["python3", "-OO"], "module", "pkg", ["a"]),
    ],
)
def test_a_command_is_split_into_the_interpreter_and_what_the_child_runs(
    argv: list[str], interpreter: list[str], kind: str, target: str, args: list[str]
) -> None:
    command = split_command(argv)
    assert command == (interpreter, kind, target)
    assert script_args(argv, command) == args


@pytest.mark.parametrize("argv", [["sh", "model.sh"], ["/usr/bin/env", "python3", "m.py"], ["python3"], ["python3", "-u"], ["python3", "-c", "print(1)"], ["python", "-Bc", "x"], []])
def test_what_cannot_be_forked_is_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError, match=r"fork runner|empty|Python interpreter"):
        split_command(argv)


def test_settings_refuse_what_the_fork_runner_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--model-cmd: the fork runner runs a script or a module, not `-c` code"):
        WatcherSettings(watch_dir=tmp_path, runner="fork", model_cmd="python3 -c 'print(1)'")
    with pytest.raises(ValueError, match="must begin with a Python interpreter"):
        WatcherSettings(watch_dir=tmp_path, runner="fork", model_cmd="/bin/sh model.sh {input} {output}")
    with pytest.raises(ValueError, match="--preload: only the `fork` runner preloads modules"):
        WatcherSettings(watch_dir=tmp_path, preload="pandas")
    with pytest.raises(ValueError, match="--preload: 'pandas sklearn' is not a module name"):
        WatcherSettings(watch_dir=tmp_path, runner="fork", preload="pandas sklearn")
    # An explicit runner decides; what only another runner uses is left unused (an image sets each runner's).
    assert WatcherSettings(watch_dir=tmp_path, runner="fork", model_entry="m.py:create").unused_settings == ["model_entry"]
    assert WatcherSettings(watch_dir=tmp_path, runner="entry", model_entry="m.py:create",
                           preload="pandas").unused_settings == ["preload"]
    assert WatcherSettings(watch_dir=tmp_path, runner="fork", preload="pandas").unused_settings == []
    ok = WatcherSettings(watch_dir=tmp_path, runner="fork", preload=" pandas, sklearn.tree ,")
    assert ok.preload_modules == ["pandas", "sklearn.tree"]
    assert WatcherSettings(watch_dir=tmp_path, runner="fork").preload_modules == ["auto"]

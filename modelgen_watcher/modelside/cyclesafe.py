"""An entry for upstream cyclesafe's ``modelmanager/model.py``: prepare once, score each request with its own functions.

    --runner entry --model-entry cyclesafe --model-cwd /app \\
    --model-cmd 'python3 ./modelmanager/model.py --workspace={workspace} --routefile={input}
                 --dumpresponse={output_name} --datafile=./data/txdot_cris_20170427.csv'

(``cyclesafe`` names this file; ``--model-entry /path/to/cyclesafe.py:create`` is the same.)

Run as a script, model.py spends about 2 s importing pandas, scikit-learn and
matplotlib and preparing the crash CSV, then about 25 ms scoring, and throws the rest
away. Its module level only imports and defines functions (the work is under
``if __name__ == '__main__'``), so this entry does what that block does for the
route-scoring service, split in two:

- once per worker (``create``): import the script the model command runs as a
  module, parse the worker's flags with its ``get_global_configs()`` (from ``sys.argv``,
  as the script does), and run ``model_prepare(**options)``;
- per request (``score``): parse the request's own flags again, so the options are
  what a process for this request would have had, point ``local_json_input`` and
  ``local_json_gen`` at the job's input and output, and call
  ``__score_manual_generic_route_and_save_to_file(*prepared, **options)``, which loads
  and rewrites its pickle in the worker's workspace, scores, and writes the output as
  upstream writes it (a JSON string holding the JSON).

Nothing of upstream is copied here: its functions are called by name. The double
underscore of the scoring function is no obstacle: names are mangled only inside a
class body, so ``getattr(module, SCORE)`` finds it.

Runs on the model's interpreter: standard library only, Python 3.7+.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from typing import Any, Callable

PARSE = "get_global_configs"
PREPARE = "model_prepare"
SCORE = "__score_manual_generic_route_and_save_to_file"
"""Upstream's functions, called in this order by its ``__main__`` block for the route-scoring service."""

ROUTEFILE = "--routefile"


class ModelCommandError(ValueError):
    """The model command cannot drive upstream's model.py (no script in it, flags it rejects)."""


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """The script of ``python3 [OPTIONS] SCRIPT ARGS`` and its arguments, split as the fork server splits a model
    command (``forkserver.split_command``, the one home of that); an error for anything but a script."""
    commands = _sibling("forkserver")
    try:
        _, kind, script = command = commands.split_command(argv)
    except ValueError:
        kind = None
    if kind != "script":
        raise ModelCommandError(
            "the model command must run upstream's script, `PYTHON [OPTIONS] SCRIPT [ARGS]`, e.g. "
            "--model-cmd 'python3 ./modelmanager/model.py --workspace={workspace} --routefile={input} ...'; got "
            + repr(argv)
        )
    return script, list(commands.script_args(argv, command))


def option_value(args: list[str], flag: str) -> Any:
    """The value of ``flag`` (``--flag=V`` or ``--flag V``) in ``args``; None when it is absent."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1:]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def with_option(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag`` set to ``value``, in the form it had (``--flag=V`` or ``--flag V``), or appended."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg.startswith(flag + "="):
            out[i] = flag + "=" + value
            return out
        if arg == flag and i + 1 < len(out):
            out[i + 1] = value
            return out
    return [*out, flag + "=" + value]


def import_path(name: str, path: str) -> Any:
    """The module in file ``path``, imported as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _sibling(name: str) -> Any:
    """``modelside/<name>.py``, imported by path once: ``host.py`` starts this file by path, so no package is there."""
    if "modelgen_" + name in sys.modules:
        return sys.modules["modelgen_" + name]
    return import_path("modelgen_" + name, os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py"))


def load_module(script: str) -> Any:
    """Import ``script`` as a module named after its file (``model``), with its directory first on ``sys.path``,
    as running it would put it there: model.py imports its siblings (helpers, txdot_parse, ...) by name."""
    path = os.path.abspath(script)
    if not os.path.isfile(path):
        raise ModelCommandError(f"the model's script {script!r} is not a file (from {os.getcwd()})")
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return import_path(os.path.splitext(os.path.basename(path))[0], path)


def functions(module: Any) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """Upstream's three functions, or an error naming the ones this script lacks."""
    found: dict[str, Callable[..., Any]] = {}
    for name in (PARSE, PREPARE, SCORE):
        fn = getattr(module, name, None)
        if callable(fn):
            found[name] = fn
    missing = [name for name in (PARSE, PREPARE, SCORE) if name not in found]
    if missing:
        raise ModelCommandError(
            f"{module.__file__} has no {', '.join(missing)}: is it upstream cyclesafe's modelmanager/model.py?"
        )
    return found[PARSE], found[PREPARE], found[SCORE]


def parse_options(parse: Callable[..., Any], script: str, args: list[str]) -> Any:
    """Upstream's options for these flags: ``sys.argv`` set as running the script sets it, then its parser.

    Its parser exits on flags it rejects, having printed why on stderr: that message
    becomes this error, so a start-up failure says it.
    """
    sys.argv = [script, *args]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            options, _runmodels = parse()
    except SystemExit as exc:
        raise ModelCommandError(
            f"{PARSE}() rejected the model command's flags {args!r}: {err.getvalue().strip() or exc}"
        ) from None
    sys.stderr.write(err.getvalue())
    return options


def create(workspace: str, argv: list[str]) -> Callable[[Any], None]:
    """Import and prepare upstream's model once; return what scores one request (see the module docstring).

    ``argv`` is the model command rendered for this worker, with no request's values
    (``{input}`` is empty or ``.``). Upstream's parser insists that the route file
    exists although preparing never reads it, so at start-up a ``--routefile`` that is
    no file names the script itself, a file that surely exists (and is never read).
    """
    script, args = split_command(argv)
    module = load_module(script)
    parse, prepare, score_and_save = functions(module)
    if not os.path.isfile(option_value(args, ROUTEFILE) or ""):
        args = with_option(args, ROUTEFILE, script)
    prepared = prepare(**parse_options(parse, script, args))  # a tuple: (data, data_dummies, df_int_nonan, featdef)

    def score(job: Any) -> None:
        _, job_args = split_command(job.argv)
        options = parse_options(parse, script, with_option(job_args, ROUTEFILE, job.input))
        options["local_json_input"] = job.input
        options["local_json_gen"] = job.output
        options["workspace_dir"] = job.workspace
        score_and_save(*prepared, **options)

    return score

"""The ``fork`` runner's worker: heavy modules imported once, a forked child per request runs the unchanged script.

A model that is a script (``python3 model.py --flags``) spends most of each run
importing (upstream: 1.5-2 s of pandas, scikit-learn and matplotlib for 25 ms of
scoring). This entry, loaded by ``host.py`` like any other, imports the modules named
in ``MODELGEN_PRELOAD`` once; then for each request it forks, and the child runs the
script as ``python3 model.py ...`` would, with the argv the subprocess runner would give
it (the model command rendered for the request), in the same working directory, in a
process group of its own. The parent waits for it and reports its exit code.

Forking a process that imported the scientific stack has hazards, handled here:

- **Threads.** A process with threads must not fork (a lock held by another thread stays
  held in the child forever). numpy's and scipy's OpenBLAS start threads at import
  unless told not to, so the BLAS thread variables are set to 1 before anything is
  imported (an operator's own values win), and the thread count is checked after the
  preload (a start-up error naming it) and before every fork (the worker ends and a
  fresh one takes its place).
- **Random state.** Every child inherits the parent's: Python's ``random`` reseeds itself
  in a forked child (3.7+); numpy's global state is reseeded here, so two cold runs do
  not train the same "random" tree.
- **matplotlib.** ``MPLBACKEND=Agg`` (unless set): no display, no GUI thread.
- **Leaving.** The child ends with ``os._exit``: the parent's ``atexit`` handlers (the
  preloaded modules') never run in it, while the script's own do, as they would at the
  end of ``python3 model.py``. Its output is flushed first.

Standard library only, Python 3.7+: it runs on the model's interpreter.
"""

from __future__ import annotations

import atexit
import importlib
import os
import runpy
import signal
import sys
import traceback
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

PRELOAD_ENV = "MODELGEN_PRELOAD"
"""Comma-separated modules the fork server imports before it serves (``--preload``)."""

SINGLE_THREAD_ENV = (
    "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS",
)
"""What keeps BLAS libraries from starting threads at import; set to 1 unless already set."""

THREADS_EXIT_CODE = 70
"""The fork server's exit code when it finds itself multi-threaded before a fork."""

_OPTIONS_WITH_VALUE = ("-W", "-X")
"""Interpreter options whose value may be the next argument."""

Command = Tuple[List[str], str, str]
"""A model command split: the interpreter with its options, ``script`` or ``module``, and the script's path or the
module's name. The script's own arguments follow it in the command."""


def split_command(argv: List[str]) -> Command:
    """Split ``python3 [OPTIONS] SCRIPT ARGS`` or ``python3 [OPTIONS] -m MODULE ARGS``; ValueError otherwise.

    The interpreter's options go to the fork server itself (``-u``, ``-O``, ``-I``... act on
    the whole process), the rest is what the child runs.
    """
    if not argv:
        raise ValueError("the model command is empty")
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" and i + 1 < len(argv):
            return argv[:i], "module", argv[i + 1]
        if arg.startswith("-m") and len(arg) > 2:
            return argv[:i], "module", arg[2:]
        if arg == "-c" or (arg.startswith("-") and not arg.startswith("--") and "c" in arg[1:]
                           and arg[:2] not in _OPTIONS_WITH_VALUE):
            raise ValueError("the fork runner runs a script or a module, not `-c` code")
        if arg == "--":
            if i + 1 < len(argv):
                return argv[:i], "script", argv[i + 1]
            break
        if arg in _OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        return argv[:i], "script", arg
    raise ValueError("the model command names no script: the fork runner needs `PYTHON [OPTIONS] SCRIPT [ARGS]` "
                     "or `PYTHON [OPTIONS] -m MODULE [ARGS]`")


def script_args(argv: List[str], command: Command) -> List[str]:
    """What follows the script (or module) in ``argv``: the arguments it sees after ``sys.argv[0]``."""
    interpreter, kind, _ = command
    rest = argv[len(interpreter):]
    if kind == "module":
        rest = rest[2:] if rest[0] == "-m" else rest[1:]
    else:
        rest = rest[2:] if rest[0] == "--" else rest[1:]
    return rest


def thread_count() -> int:
    """Threads of this process, native ones included (``threading`` sees only Python's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _exit_code(exc: SystemExit) -> int:
    """``sys.exit(x)``'s code, as the interpreter computes it (kept in step with ``host._exit_code``: the files
    in modelside are started by path, possibly isolated, so one cannot import the other)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


class ForkServer:
    """Serves one request at a time by forking a child that runs the script (see the module docstring)."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.cwd = os.getcwd()
        self.child: Optional[int] = None
        self.path_head = self._path_head()

    def _path_head(self) -> Optional[str]:
        """What ``python3 SCRIPT`` puts first on ``sys.path`` (None when isolated): the script's directory, or
        the working directory for ``-m``."""
        if sys.flags.isolated or getattr(sys.flags, "safe_path", False):
            return None
        _, kind, target = self.command
        return os.path.dirname(os.path.abspath(target)) if kind == "script" else os.getcwd()

    def on_term(self, signum: int, frame: Any) -> None:
        """The watcher stops this worker (a stop, a timeout): the running child's group goes first."""
        child = self.child
        if child is not None:
            for kill in (os.killpg, os.kill):
                try:
                    kill(child, signal.SIGKILL)
                except OSError:
                    pass
        os._exit(128 + signum)

    def __call__(self, job: Any) -> None:
        """One request: fork, run the script in the child, wait; a failing child fails the request with its code."""
        threads = thread_count()
        if threads > 1:
            message = ("modelgen fork server: %d threads before a fork (a module started threads after the "
                       "preload); this worker ends and a fresh one takes its place\n" % threads)
            os.write(2, message.encode())
            os._exit(THREADS_EXIT_CODE)
        args = script_args(list(job.argv), self.command)
        env = dict(job.env)
        _flush(sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # a stop now finds the child named in self.child
        pid = os.fork()
        if pid == 0:
            self._child(args, env)  # never returns
        self.child = pid
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            try:
                os.setpgid(pid, pid)  # also done by the child: whichever runs first, no signal can miss the group
            except OSError:
                pass
            _, status = os.waitpid(pid, 0)
        finally:
            self.child = None
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if code != 0:
            raise SystemExit(code)

    def _child(self, args: List[str], env: Dict[str, str]) -> None:
        """Run the script as the interpreter would, and leave with ``os._exit`` whatever happens."""
        code = 1
        try:
            os.setpgid(0, 0)
            os.environ.update(env)  # the request's run id: what the script starts is known as this request's
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # the host captured them for itself
            os.chdir(self.cwd)
            _reseed()
            _clear_atexit()
            code = self._run(args)
            _run_atexit()
        except BaseException:  # noqa: BLE001 - the child must reach os._exit, never return into the server
            traceback.print_exc()
        finally:
            _flush(sys.stdout, sys.stderr)
            os._exit(code & 0xFF)  # as the interpreter passes sys.exit's code to exit()

    def _run(self, args: List[str]) -> int:
        _, kind, target = self.command
        if self.path_head is not None:
            sys.path[0:0] = [self.path_head]
        try:
            if kind == "module":
                sys.argv = ["-m", *args]
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                sys.argv = [target, *args]
                runpy.run_path(target, run_name="__main__")
            return 0
        except SystemExit as exc:
            return _exit_code(exc)
        except BaseException as exc:  # noqa: BLE001 - printed as the interpreter would, then exit 1
            _print_from_script(exc)
            return 1


def _print_from_script(exc: BaseException) -> None:
    """The traceback as ``python3 model.py`` prints it: the frames of this file and of runpy left out."""
    tb = exc.__traceback__
    skip = {os.path.abspath(__file__), os.path.abspath(runpy.__file__)}
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) in skip:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def _flush(*streams: Optional[IO[str]]) -> None:
    """Flush what is buffered, so nothing printed before a fork is printed twice, nor lost at ``os._exit``."""
    for stream in streams:
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # noqa: BLE001 - a closed or broken stream must not stop a fork or an exit
            pass


def _reseed() -> None:
    """A fresh random state for numpy's global generator (Python's ``random`` reseeds itself after a fork)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        try:
            numpy.random.seed()
        except Exception:  # noqa: BLE001 - an unusual numpy build keeps its state; never worth failing for
            pass


def _clear_atexit() -> None:
    clear = getattr(atexit, "_clear", None)
    if clear is not None:
        clear()


def _run_atexit() -> None:
    run = getattr(atexit, "_run_exitfuncs", None)
    if run is not None:
        run()


def _preload(names: List[str]) -> None:
    for name in names:
        importlib.import_module(name)


def create(workspace: str, argv: List[str]) -> Callable[[Any], None]:
    """The entry ``host.py`` loads: set the single-thread variables, preload, check, and return the fork server.

    ``argv`` is the model command rendered for this worker; each request brings its own.
    """
    command = split_command(argv)
    for name in SINGLE_THREAD_ENV:
        os.environ.setdefault(name, "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # host.py's folder is not the model's
    server = ForkServer(command)
    if server.path_head is not None:
        sys.path.insert(0, server.path_head)  # the preload finds the model's own modules, as the script will
    names = [n.strip() for n in os.environ.get(PRELOAD_ENV, "").split(",") if n.strip()]
    _preload(names)
    if server.path_head is not None:
        sys.path.remove(server.path_head)  # each child puts it back first, as the interpreter would
    threads = thread_count()
    if threads > 1:
        raise RuntimeError(
            "after preloading %s the fork server runs %d threads, and a process with threads cannot fork safely; "
            "preload fewer modules, or keep their thread pools off (%s=1), or use --runner subprocess"
            % (", ".join(names) or "nothing", threads, "/".join(SINGLE_THREAD_ENV[:2])))
    signal.signal(signal.SIGTERM, server.on_term)
    return server

"""The ``fork`` runner's worker: heavy modules imported once, a forked child per request runs the unchanged script.

A model that is a script (``python3 model.py --flags``) spends most of each run
importing (upstream: 1.5-2 s of pandas, scikit-learn and matplotlib for 25 ms of
scoring). This entry, loaded by ``host.py`` like any other, imports the modules named
in ``MODELGEN_PRELOAD`` once (``auto``: those the script imports at its top level);
then for each request it forks, and the child runs the script as ``python3 model.py
...`` would, with the argv the subprocess runner would give it (the model command
rendered for the request), in the same working directory, in a process group of its
own. The parent waits for it and reports its exit code.

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
- **Leaving.** The child ends with ``os._exit``, after doing what an interpreter does at
  its end: non-daemon threads are joined, the script's ``atexit`` handlers run (with
  those of ``logging`` and ``multiprocessing``, not those of the server's own imports),
  ``__main__`` is cleared and garbage collected (files left open are flushed), and the
  streams are flushed.
- **What differs from a fresh process** is undone in the child: the host's protocol pipes
  are closed, its faulthandler turned off (unless asked for), the environment is the
  one the server started with (the BLAS libraries have read theirs), and the script runs
  as the interpreter runs a file (``__file__``, ``__loader__``, ``sys.path[0]`` through
  symlinks).
- **Leftovers.** The server is a child subreaper: after each request it kills the child's
  group and every process the request left (orphans come back to it), as the
  subprocess runner does after each run.

Standard library only, Python 3.7+: it runs on the model's interpreter.
"""

from __future__ import annotations

import atexit
import builtins
import faulthandler
import gc
import importlib
import importlib.machinery
import os
import runpy
import signal
import sys
import threading
import time
import traceback
import types
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
    if not _is_python(argv[0]):
        raise ValueError("the fork runner starts its server on the model's Python, so the command must begin "
                         "with a Python interpreter (python3, /opt/venv/bin/python...), not %r" % argv[0])
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


def _is_python(program: str) -> bool:
    """Whether ``program`` names a Python interpreter (by its name, or the name of what a symlink points to)."""
    names = {os.path.basename(program), os.path.basename(os.path.realpath(program))}
    return any(name.startswith(("python", "pypy")) for name in names)


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

    def __init__(self, command: Command, environ: Dict[str, str]) -> None:
        self.command = command
        self.environ = environ
        """The environment the server was started with, before the single-thread variables: the child's."""
        self.cwd = os.getcwd()
        self.child: Optional[int] = None
        self.path_head = self._path_head()
        self.host_fds = [fd for fd in _open_fds() if fd > 2]
        """What the host holds (its protocol pipes): a fresh process has none of it."""
        self.main_module: Optional[types.ModuleType] = None

    def _path_head(self) -> Optional[str]:
        """What ``python3 SCRIPT`` puts first on ``sys.path`` (None when isolated): the script's directory, or
        the working directory for ``-m``."""
        if sys.flags.isolated or getattr(sys.flags, "safe_path", False):
            return None
        _, kind, target = self.command
        return os.path.dirname(os.path.realpath(target)) if kind == "script" else os.getcwd()

    def on_term(self, signum: int, frame: Any) -> None:
        """The watcher stops this worker (a stop, a timeout): the running child's group goes first."""
        child = self.child
        if child is not None:
            for kill in (os.killpg, os.kill):
                try:
                    kill(child, signal.SIGKILL)
                except OSError:
                    pass
        _kill_children()
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
        try:
            os.killpg(pid, signal.SIGKILL)  # what the script left in its group
        except OSError:
            pass
        _kill_children()  # and what left it: orphans come back to this subreaper
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if code != 0:
            raise SystemExit(code)

    def _child(self, args: List[str], env: Dict[str, str]) -> None:
        """Run the script as the interpreter would, and leave with ``os._exit`` whatever happens."""
        code = 1
        try:
            os.setpgid(0, 0)
            for fd in self.host_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if not (sys._xoptions.get("faulthandler") or os.environ.get("PYTHONFAULTHANDLER")
                    or getattr(sys.flags, "dev_mode", False)):
                faulthandler.disable()  # the host's: a crash in the script reports the script, as it would alone
            os.environ.clear()
            os.environ.update(self.environ)
            os.environ.update(env)  # the request's run id: what the script starts is known as this request's
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # the host captured them for itself
            os.chdir(self.cwd)
            _reseed()
            _clear_atexit()
            code = self._run(args)
            _finish_like_an_interpreter(self.main_module)
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
            elif os.path.isfile(target):
                sys.argv = [target, *args]
                self.main_module = _run_file(target)
            else:
                sys.argv = [target, *args]
                runpy.run_path(target, run_name="__main__")  # a directory or zip with __main__.py
            return 0
        except SystemExit as exc:
            return _exit_code(exc)
        except KeyboardInterrupt as exc:
            _print_from_script(exc)
            if sys.version_info >= (3, 8):  # the interpreter ends "killed by SIGINT", so that callers can tell
                _flush(sys.stdout, sys.stderr)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            return 1
        except BaseException as exc:  # noqa: BLE001 - printed as the interpreter would, then exit 1
            _print_from_script(exc)
            return 1


def _print_from_script(exc: BaseException) -> None:
    """The traceback as ``python3 model.py`` prints it: the frames of this file and of runpy left out."""
    tb = exc.__traceback__
    skip = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}
    while tb is not None and (tb.tb_frame.f_code.co_filename in skip
                              or os.path.abspath(tb.tb_frame.f_code.co_filename) in skip):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def _run_file(path: str) -> types.ModuleType:
    """Run a script file as ``python3 PATH`` does: a fresh ``__main__`` with the ``__file__`` (absolute from 3.9)
    and ``__loader__`` the interpreter gives it, compiled without this file's ``__future__`` flags."""
    name = os.path.join(os.getcwd(), path) if sys.version_info >= (3, 9) else path
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=name, __cached__=None, __builtins__=builtins,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", name))
    sys.modules["__main__"] = main
    with open(path, "rb") as fh:
        code = compile(fh.read(), name, "exec", dont_inherit=True)
    exec(code, main.__dict__)
    return main


def _finish_like_an_interpreter(main: Optional[types.ModuleType]) -> None:
    """What an interpreter does at its end and ``os._exit`` would skip: join non-daemon threads, run the exit
    handlers, let ``__main__``'s objects go (a file left open is flushed by its finaliser)."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    _run_atexit()
    if main is not None:
        main.__dict__.clear()
    gc.collect()


def _open_fds() -> List[int]:
    try:
        return [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return []


def _become_subreaper() -> None:
    """Orphans of a request's child come back to this process (not the watcher), which ends them after it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, Linux 3.4+
    except Exception:  # noqa: BLE001 - elsewhere the watcher's own sweep remains
        pass


def _children() -> List[int]:
    """This process's children, from /proc."""
    me = os.getpid()
    try:
        with open("/proc/%d/task/%d/children" % (me, me)) as fh:
            return [int(pid) for pid in fh.read().split()]
    except OSError:
        pass
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == me:
                        kids.append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    return kids


def _kill_children(deadline_s: float = 5.0) -> None:
    """Kill and reap every child of this process: between requests it has none of its own, so what is here is
    what a request left."""
    deadline = time.monotonic() + deadline_s
    while True:
        kids = _children()
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                reaped, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if reaped == 0:
                break
        if not kids or time.monotonic() > deadline:
            return
        time.sleep(0.005)


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
    """Drop the server's exit handlers (its imports'), but keep those a fresh process running the script
    would have too: logging's flush of its handlers, multiprocessing's clean-up of its children."""
    clear = getattr(atexit, "_clear", None)
    if clear is None:
        return
    clear()
    logging = sys.modules.get("logging")
    if logging is not None:
        atexit.register(logging.shutdown)
    for module, name in (("multiprocessing.util", "_exit_function"), ("concurrent.futures.thread", "_python_exit")):
        found = getattr(sys.modules.get(module), name, None)
        if found is not None and not (module == "concurrent.futures.thread" and sys.version_info >= (3, 9)):
            atexit.register(found)  # from 3.9, concurrent.futures' handler runs from threading._shutdown


def _run_atexit() -> None:
    run = getattr(atexit, "_run_exitfuncs", None)
    if run is not None:
        run()


AUTO = "auto"
"""In ``--preload``: the modules the script imports at its top level (not its own, which the child imports)."""


def _preload(names: List[str], command: Command) -> List[str]:
    """Import ``names`` (``auto`` expanded); returns what was imported. A named module that fails is a start-up
    error; one found by ``auto`` that fails is left to the child, which fails as the script would."""
    done = []
    for name in names:
        if name == AUTO:
            for found in _top_level_imports(command):
                try:
                    importlib.import_module(found)
                    done.append(found)
                except Exception as exc:  # noqa: BLE001 - the script meets the same error in its child
                    sys.stderr.write("modelgen fork server: not preloaded %s: %s\n" % (found, exc))
        else:
            importlib.import_module(name)
            done.append(name)
    return done


def _top_level_imports(command: Command) -> List[str]:
    """Modules the script imports at its top level (in ``try`` blocks too), with ``from X import y`` submodules,
    except the script's own (from its folder): importing those once would change when their code runs."""
    import ast
    import importlib.util

    _, kind, target = command
    if kind != "script" or not os.path.isfile(target):
        return []
    with open(target, "rb") as fh:
        tree = ast.parse(fh.read(), target)
    own = os.path.dirname(os.path.realpath(target)) + os.sep
    names: List[str] = []
    statements = list(tree.body)
    while statements:
        node = statements.pop(0)
        if isinstance(node, ast.Try):
            statements[:0] = node.body
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names.extend(node.module + "." + alias.name for alias in node.names if alias.name != "*")
    def is_own(top: str) -> bool:
        """Whether a top-level name is found in the script's folder (asked before anything of it is imported)."""
        spec = importlib.util.find_spec(top)
        places = [spec.origin or "", *(spec.submodule_search_locations or [])] if spec is not None else []
        return any(os.path.realpath(place).startswith(own) for place in places if place)

    found: List[str] = []
    for name in names:
        try:
            if name in found or is_own(name.partition(".")[0]) or importlib.util.find_spec(name) is None:
                continue
        except Exception:  # noqa: BLE001 - an attribute, not a module, or a parent that fails: the child's
            continue
        found.append(name)
    return found


def create(workspace: str, argv: List[str]) -> Callable[[Any], None]:
    """The entry ``host.py`` loads: set the single-thread variables, preload, check, and return the fork server.

    ``argv`` is the model command rendered for this worker; each request brings its own.
    """
    command = split_command(argv)
    environ = dict(os.environ)
    environ.pop(PRELOAD_ENV, None)
    for name in SINGLE_THREAD_ENV:
        os.environ.setdefault(name, "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # host.py's folder is not the model's
    server = ForkServer(command, environ)
    _become_subreaper()
    if server.path_head is not None:
        sys.path.insert(0, server.path_head)  # the preload finds the model's own modules, as the script will
    names = _preload([n.strip() for n in os.environ.get(PRELOAD_ENV, "").split(",") if n.strip()], command)
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

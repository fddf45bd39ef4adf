"""The model's side of a warm runner: load a model once, then score request after request.

Started by the watcher as ``python3 host.py --entry MODULE_OR_PATH:FACTORY --workspace DIR
--requests FD --replies FD [--cpus LIST] [--policy N] -- ARG...``, on the model's own interpreter.
Standard library only, Python 3.7+: nothing of the watcher is imported here. ``--cpus``:
the CPUs to take back before the model loads, when the watcher runs its own threads on
one of them (``watcher/affinity.py``); ``--policy``: the scheduling policy to take back with them.

The entry is a factory, called once: ``factory(workspace, argv)`` returns a callable that
scores one request, ``score(job)``, where ``job`` has ``input``, ``output``,
``output_name``, ``workspace``, ``key`` and ``argv`` (the model command rendered for
this request, if one is set). It must write ``job.output``; raising (or
``sys.exit(n)``, n != 0) fails the request, and the next one is served.

The protocol is JSON, one object a line, on two pipes of their own (``--requests``,
``--replies``), so nothing the model prints can be mistaken for it:

- host -> watcher, once: ``{"type": "ready", "pid", "python", "cpus"}`` or
  ``{"type": "failed", "error", "detail"}`` (the factory raised: the model cannot load);
- watcher -> host: ``{"type": "run", "id", "input", "output", "output_name",
  "workspace", "key", "argv", "env", "input_bytes", "max_output"}`` (``env``: variables
  for the processes the request starts, its run id; the fork server's child sets them;
  ``input_bytes`` N, if present: the line is followed by the input's N bytes, raw, which
  the host writes at ``input`` before the model runs and removes after; ``max_output``,
  if present: the host sends the output back, at most that many bytes, and removes its
  file);
- host -> watcher: ``{"type": "done", "id", "exit_code", "stdout_tail", "stderr_tail",
  "rss_kb", "seconds"}``, and, for a request that asked ``max_output`` and exited 0,
  ``"output_bytes": N`` (the line is followed by the output's N bytes, raw: no
  encoding, no copy in JSON) or ``"output_error"`` (why not: "no output file", or the
  file was not a regular one, or too large);
- the watcher closes ``--requests`` (or sends ``{"type": "stop"}``) to end the host.

What the model prints from Python during a request goes into that request's tails (the
last TAIL_BYTES of each), so an error status shows its own traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import faulthandler
import importlib
import importlib.util
import io
import json
import os
import platform
import stat
import sys
import time
import traceback
from typing import Any, Callable

Score = Callable[[Any], None]
Factory = Callable[[str, "list[str]"], Score]

TAIL_BYTES = 16 * 1024


class Job:
    """One request, as the entry's ``score`` callable receives it."""

    def __init__(self, msg: dict[str, Any]) -> None:
        self.input = msg["input"]
        self.output = msg["output"]
        self.output_name = msg["output_name"]
        self.workspace = msg["workspace"]
        self.key = msg.get("key")
        self.argv = list(msg.get("argv") or [])
        self.env: dict[str, str] = dict(msg.get("env") or {})
        """Variables for what the request starts (its run id): a fork server's child sets them."""


class _Tail(io.TextIOBase):
    """A text stream that keeps only its last TAIL_BYTES characters (``.buffer`` takes bytes, as stdout's does)."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[str] = []
        self._size = 0
        self.buffer = _BytesInto(self)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size > 2 * TAIL_BYTES:
            joined = "".join(self._parts)[-TAIL_BYTES:]
            self._parts, self._size = [joined], len(joined)
        return len(text)

    def text(self) -> str:
        return "".join(self._parts)[-TAIL_BYTES:]


class _BytesInto(io.RawIOBase):
    """``sys.stdout.buffer`` during a request: bytes, decoded into the text tail."""

    def __init__(self, tail: _Tail) -> None:
        super().__init__()
        self._tail = tail

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._tail.write(bytes(data).decode("utf-8", errors="replace"))
        return len(data)


def load_entry(spec: str) -> Factory:
    """``MODULE:FACTORY`` (importable from the working directory) or ``PATH.py:FACTORY``."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"the entry must be MODULE_OR_PATH:FACTORY, got {spec!r}")
    if target.endswith(".py") or os.sep in target:
        path = os.path.abspath(target)
        module_spec = importlib.util.spec_from_file_location("modelgen_entry", path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["modelgen_entry"] = module
        module_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(target)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise AttributeError(f"{target} has no callable {name!r}")
    return factory  # type: ignore[no-any-return]  # an attribute of a module loaded at run time


def _rss_kb() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux: a high-water mark
    except (ImportError, OSError):
        return 0


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


NO_OUTPUT = "no output file"
"""``output_error`` when the model wrote nothing (the watcher's ``runners.base.NO_OUTPUT``)."""


def _write_input(path: str, data: bytes) -> None:
    """The model's copy of the input, written by this process: a new file, never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, in the watcher's words (``fsio.describe_mode``)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def collect_output(path: str, limit: int) -> bytes | str:
    """The output file's bytes, sent after the reply, or why not (for ``output_error``); a file read is removed.

    Read as the watcher reads a file: never through a symlink, never blocking on a FIFO,
    a regular file only, at most ``limit`` bytes.
    """
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return NO_OUTPUT
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "{} is a symlink, not a regular file".format(name)
        return "{}: {}".format(name, exc.strerror or exc)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return "{} is {}, not a regular file".format(name, _kind(st.st_mode))
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, st.st_size + 1, 1 << 20))  # the file's size: no big buffer to shrink
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        return "{} is over the limit of {} bytes".format(name, limit)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return data


def serve_one(score: Score, msg: dict[str, Any], given: bytes | None = None) -> tuple[dict[str, Any], bytes | None]:
    """Run one request (``given``: the input's bytes that came with it): its outcome, with what it printed from
    Python; and its output, when asked for."""
    out, err = _Tail(), _Tail()
    started = time.monotonic()
    me = os.getpid()
    if given is not None:
        try:
            _write_input(msg["input"], given)
        except OSError as exc:
            return _done(msg, started, 1, "", "cannot write the model's copy of the input: {}\n".format(exc)), None
    try:
        reply = _run(score, msg, out, err, started)
        if os.getpid() != me:  # a child the model forked returned from score: only the worker may answer
            os._exit(0)
    finally:
        if given is not None and os.getpid() == me:
            with contextlib.suppress(OSError):
                os.unlink(msg["input"])
    limit = msg.get("max_output")
    if limit is None or reply["exit_code"] != 0:
        return reply, None
    output = collect_output(msg["output"], int(limit))
    if isinstance(output, str):
        reply["output_error"] = output
        return reply, None
    reply["output_bytes"] = len(output)
    return reply, output


def _done(msg: dict[str, Any], started: float, code: int, stdout: str, stderr: str) -> dict[str, Any]:
    return {
        "type": "done",
        "id": msg["id"],
        "exit_code": code,
        "stdout_tail": stdout,
        "stderr_tail": stderr,
        "rss_kb": _rss_kb(),
        "seconds": time.monotonic() - started,
    }


def _run(score: Score, msg: dict[str, Any], out: _Tail, err: _Tail, started: float) -> dict[str, Any]:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            score(Job(msg))
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:  # noqa: BLE001 - any failure of the model is this request's, never the host's
            traceback.print_exc()
            code = 1
    return _done(msg, started, code, out.text(), err.text())


def _take_cpus(cpus: str) -> None:
    """Run on ``cpus``, not only on the one CPU the watcher runs its own threads on, which this process inherited:
    before the model loads, so its threads (BLAS, its pools) and the processes it starts are not confined."""
    try:
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    except (AttributeError, OSError, ValueError) as exc:
        print("modelgen-host: cannot run on CPUs {}: {}".format(cpus, exc), file=sys.stderr, flush=True)


def _take_policy(policy: int) -> None:
    """Run with scheduling policy ``policy``, the watcher's before its threads took turns on their CPU
    (``SCHED_BATCH``, which this process inherited): the model is scheduled as the watcher was."""
    try:
        if os.sched_getscheduler(0) != policy:
            os.sched_setscheduler(0, policy, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        print("modelgen-host: cannot take scheduling policy {}: {}".format(policy, exc), file=sys.stderr, flush=True)


def _cpus() -> list[int] | None:
    """The CPUs this process may run on (None where the system does not say)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelgen-host", description="A warm model worker (see the module doc).")
    parser.add_argument("--entry", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--requests", type=int, required=True, help="fd the watcher writes requests to")
    parser.add_argument("--replies", type=int, required=True, help="fd this host writes replies to")
    parser.add_argument("--cpus", help="the CPUs this worker takes back before the model loads, comma-separated")
    parser.add_argument("--policy", type=int, help="the scheduling policy it takes back (os.SCHED_*)")
    parser.add_argument("argv", nargs="*", help="the model command, rendered for this worker")
    args = parser.parse_args(argv)
    faulthandler.enable()  # a crash in C code leaves its traceback on stderr, which the watcher keeps
    if args.cpus:
        _take_cpus(args.cpus)
    if args.policy is not None:
        _take_policy(args.policy)
    for fd in (args.requests, args.replies):  # a program the model starts must not inherit the protocol
        os.set_inheritable(fd, False)
    requests = os.fdopen(args.requests, "rb")
    replies = os.fdopen(args.replies, "w", encoding="utf-8")

    def send(msg: dict[str, Any], payload: bytes | None = None) -> None:
        replies.write(json.dumps(msg) + "\n")
        if payload is not None:  # the raw bytes after their line (``output_bytes``)
            replies.flush()
            replies.buffer.write(payload)
        replies.flush()

    try:
        score = load_entry(args.entry)(args.workspace, list(args.argv))
    except BaseException as exc:  # noqa: BLE001 - the watcher must hear why the model cannot load
        detail = traceback.format_exc()[-8000:]
        send({"type": "failed", "error": f"{type(exc).__name__}: {exc}", "detail": detail})
        return 1
    send({"type": "ready", "pid": os.getpid(), "python": platform.python_version(), "cpus": _cpus()})
    for line in requests:
        msg = json.loads(line)
        if msg.get("type") == "stop":
            break
        size = msg.get("input_bytes")
        given = requests.read(size) if isinstance(size, int) else None
        if given is not None and len(given) < size:
            break  # the watcher closed the pipe mid-request: it is going
        send(*serve_one(score, msg, given))
    return 0


if __name__ == "__main__":
    sys.exit(main())

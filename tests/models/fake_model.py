"""A model double whose misbehaviour is chosen on the command line (tests only).

    fake_model.py MODE --input {input} --output {output} [--sleep S] [--linger S] [--pidfile F]

Modes: ok (plain JSON), double (upstream's JSON string holding JSON), fail (traceback,
exit 1), hang (sleeps forever with a child process), chatty (megabytes on stdout and
stderr, then ok), garbage (not JSON), nothing (exit 0, no file), badshape (JSON of the
wrong shape), slow (sleep, then ok), trapterm (ignores SIGTERM while hanging), orphan
(leaves a grandchild to be re-parented), escape (a setsid descendant holds stdout open),
chattyfail (megabytes of output, then exit 3), killwatcher (sends --signal to its parent,
the watcher, then waits to be stopped), hugeoutput (a list of a million empty objects),
diroutput (a directory where the output goes), fillup (writes its output until the disk is
full, then exits 1), leak (keeps 40 MB more at every request it serves in a warm worker).
--hang-marked hangs on inputs with "hang_me": true.
--keep DIR copies the output's bytes and how the script was run (argv, __name__, sys.path[0],
cwd, __file__, flags, stdin) into DIR, one file each per request, to compare runners.
--drawfile F appends a draw of Python's random and, if imported, numpy's, one line per request.
--sleep waits before reading the input, --linger after starting any descendants;
--pidfile appends the model's pid and those of the processes it starts, one a line;
--trace F appends "<sha256 of the input> <pid>" when a run starts, one line per run (to count runs).
--cpufile F appends the CPUs the run may use and its scheduling policy, one line per run.
"""

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time


def score(doc):
    routes, totals = [], []
    for route in doc["routes"]:
        pts = [
            {"score": 0.5 if s.get("maneuver") else 0.9, "lat": s["end_location"]["lat"], "lng": s["end_location"]["lng"]}
            for s in route["legs"][0]["steps"]
        ]
        routes.append(pts)
        totals.append(sum(p["score"] for p in pts) / len(pts))
    return {"routes": routes, "totalScores": totals}


_LEAKED = []  # type: list[bytearray]


def create(workspace, argv):
    """The entry form (``--runner entry --model-entry fake_model.py:create``): each request runs ``main`` in the
    warm worker with the request's rendered command line, so every mode behaves as the script does."""

    def score(job):
        code = main(job.argv[2:])  # [python, fake_model.py, MODE, ...]
        if code:
            raise SystemExit(code)

    return score


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--linger", type=float, default=0.0, help="seconds to sleep after starting descendants")
    p.add_argument("--pidfile")
    p.add_argument("--fail-marked", action="store_true", help="fail (exit 1) on inputs with \"fail_me\": true")
    p.add_argument("--signal", default="SIGTERM", help="what killwatcher sends to the watcher")
    p.add_argument("--hang-marked", action="store_true", help='hang on inputs with "hang_me": true')
    p.add_argument("--kill-marked", action="store_true",
                   help="on inputs with \"kill_me\": true, behave as killwatcher; score the rest")
    p.add_argument("--keep", help="a directory: copies of the output and of how this run was started")
    p.add_argument("--drawfile", help="append draws of the random generators here")
    p.add_argument("--trace", help="append the input's sha256 and this pid here when a run starts")
    p.add_argument("--cpufile", help="append the CPUs this run may use here, comma-separated, and its scheduling policy "
                   "(os.sched_getscheduler), one line per run")
    a = p.parse_args(argv)
    if a.cpufile:
        with open(a.cpufile, "a") as fh:
            fh.write(",".join(map(str, sorted(os.sched_getaffinity(0)))) + f" {os.sched_getscheduler(0)}\n")
    if a.trace:
        with open(a.input, "rb") as fh:
            traced = f"{hashlib.sha256(fh.read()).hexdigest()} {os.getpid()}\n"
        fd = os.open(a.trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:  # one write of one short line: lines from several watchers' models never interleave
            os.write(fd, traced.encode())
        finally:
            os.close(fd)
    if a.pidfile:
        with open(a.pidfile, "a") as fh:
            fh.write(f"{os.getpid()}\n")
    if a.sleep:  # not time.sleep: under libfaketime (the clock skew test) its clock_nanosleep fails with EINVAL
        threading.Event().wait(a.sleep)
    with open(a.input) as fh:
        doc = json.load(fh)
    if a.mode == "orphan":  # leaves a short-lived grandchild behind, re-parented to PID 1
        subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n    time.sleep(0.3)\n"])
    if a.mode == "escape":  # a descendant in its own session keeps our stdout open for a minute
        escaped = subprocess.Popen(["setsid", sys.executable, "-c", "import time; time.sleep(60)"])
        if a.pidfile:
            with open(a.pidfile, "a") as fh:
                fh.write(f"{escaped.pid}\n")
    if a.linger:
        time.sleep(a.linger)
    if a.hang_marked and doc.get("hang_me"):
        time.sleep(3600)
    if a.mode == "leak":
        block = bytearray(40 * 1024 * 1024)
        block[::4096] = b"\x01" * (len(block) // 4096)  # every page touched: resident, not just reserved
        _LEAKED.append(block)
    if a.mode == "killwatcher" or (a.kill_marked and doc.get("kill_me")):
        os.kill(os.getppid(), getattr(signal, a.signal))
        time.sleep(3600)
    if a.fail_marked and doc.get("fail_me"):
        raise RuntimeError("this route was marked to fail")
    if a.mode in ("hang", "trapterm"):
        if a.mode == "trapterm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        if a.pidfile:
            with open(a.pidfile, "a") as fh:
                fh.write(f"{child.pid}\n")
        time.sleep(3600)
    if a.mode == "fail":
        raise RuntimeError("the model blew up on purpose")
    if a.mode in ("chatty", "chattyfail"):
        line = ("x" * 1023 + "\n").encode()
        for _ in range(3 * 1024):
            sys.stdout.buffer.write(line)
            sys.stderr.buffer.write(line)
        sys.stderr.buffer.write(b"chatty model: last line of stderr\n")
        if a.mode == "chattyfail":
            sys.stderr.flush()
            return 3
    if a.mode == "nothing":
        return 0
    if a.mode == "diroutput":
        os.mkdir(a.output)
        return 0
    if a.mode == "linkoutput":  # the output a symlink to the input: never followed
        os.symlink(os.path.abspath(a.input), a.output)
        return 0
    if a.mode == "fillup":
        with open(a.output, "wb") as fh:
            while True:  # until ENOSPC: the traceback is the model's failure
                fh.write(bytes(65536))
                fh.flush()
    with open(a.output, "w") as fh:
        if a.mode == "garbage":
            fh.write("<html>this is not json")
        elif a.mode == "hugeoutput":
            fh.write('{"routes": [' + ",".join(["{}"] * 1_000_000) + '], "totalScores": []}')
        elif a.mode == "badshape":
            json.dump({"routes": "nope"}, fh)
        elif a.mode in ("orphan", "escape", "leak"):
            json.dump(score(doc), fh)
        elif a.mode == "double":
            fh.write(json.dumps(json.dumps(score(doc))))
        else:
            json.dump(score(doc), fh)
    if a.keep:
        _keep(a.keep, a.output)
    if a.drawfile:
        numpy = sys.modules.get("numpy")
        with open(a.drawfile, "a") as fh:
            fh.write(f"{random.random()!r} {numpy.random.rand() if numpy else None!r}\n")
    return 0


def _keep(directory, output):
    """Copy the output and how this process runs the script, to compare a forked child with a fresh process."""
    n = len(os.listdir(directory)) // 2
    with open(output, "rb") as src, open(os.path.join(directory, f"{n}.output"), "wb") as dst:
        dst.write(src.read())
    main_module = sys.modules["__main__"]
    how = {
        "argv0": sys.argv[0], "argc": len(sys.argv), "name": __name__,
        "main_is_this": getattr(main_module, "main", None) is main, "path0": sys.path[0], "cwd": os.getcwd(),
        "file": __file__, "flags": repr(sys.flags), "stdin": sys.stdin.read() if sys.stdin else None,
        "pgid_is_pid": os.getpgid(0) == os.getpid(), "executable": sys.executable,
    }
    with open(os.path.join(directory, f"{n}.how"), "w") as fh:
        json.dump(how, fh, sort_keys=True)


if __name__ == "__main__":
    sys.exit(main())

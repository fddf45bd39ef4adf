"""SubprocessRunner with real child processes: exit codes, timeouts, cancellation, big output, containment."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelgen_watcher.runners import procfs
from modelgen_watcher.runners.argv import render as render_argv
from modelgen_watcher.runners.base import ModelJob, RunReport
from modelgen_watcher.runners.records import RUN_ID_ENV, RecordDir, RunRecord, UnsafeRecordDir
from modelgen_watcher.runners.subprocess import PIPE_GRACE, SubprocessRunner
from modelgen_watcher.runners.tail import TAIL_BYTES
from tests.helpers import pid_alive, wait_for


def job(tmp_path: Path, timeout: float = 30.0, key: str | None = "k1") -> ModelJob:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    return ModelJob(tmp_path / "in.json", ws / "out.json", ws, key, timeout)


def py(code: str, **kwargs: Any) -> SubprocessRunner:  # SubprocessRunner's keyword options, passed on
    return SubprocessRunner([sys.executable, "-c", code], **kwargs)


def test_render_argv_replaces_placeholders(tmp_path: Path) -> None:
    j = job(tmp_path)
    template = ["model", "--in={input}", "{output}", "--ws", "{workspace}", "{workspace}/{output_name}", "k={key}"]
    assert render_argv(template, j) == [
        "model",
        f"--in={tmp_path / 'in.json'}",
        str(tmp_path / "ws" / "out.json"),
        "--ws",
        str(tmp_path / "ws"),
        f"{tmp_path / 'ws'}/out.json",
        "k=k1",
    ]
    assert render_argv(["{key}"], job(tmp_path, key=None)) == [""]


def test_exit_codes_are_reported(tmp_path: Path) -> None:
    ok = py("print('fine')").run(job(tmp_path))
    assert ok.exit_code == 0 and ok.succeeded
    assert ok.stdout_tail.strip() == "fine"
    bad = py("import sys; print('broken input', file=sys.stderr); sys.exit(3)").run(job(tmp_path))
    assert bad.exit_code == 3 and not bad.succeeded
    assert not bad.timed_out and not bad.cancelled and bad.launch_error is None
    assert bad.stderr_tail.strip() == "broken input"


def test_placeholders_reach_the_process(tmp_path: Path) -> None:
    code = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    runner = SubprocessRunner([sys.executable, "-c", code, "{output}", "{key}"])
    j = job(tmp_path)
    assert runner.run(j).succeeded
    assert j.output_path.read_text() == "k1"


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    t0 = time.monotonic()
    report = py(code, kill_grace=1.0).run(job(tmp_path, timeout=1.5))
    assert time.monotonic() - t0 < 15
    assert report.timed_out and not report.cancelled and not report.succeeded
    assert report.exit_code is not None and report.exit_code < 0
    child = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(child), timeout=5, what=f"child {child} to be gone")


def test_timeout_kills_a_model_that_ignores_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    report = py(code, kill_grace=0.3).run(job(tmp_path, timeout=1.5))
    assert marker.exists()  # it did get to ignore SIGTERM
    assert report.timed_out
    assert report.exit_code == -signal.SIGKILL


def test_stop_cancels_a_running_job(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    runner = py(f"import time; open({str(marker)!r}, 'w').close(); time.sleep(60)", kill_grace=1.0)
    reports: list[RunReport] = []
    t = threading.Thread(target=lambda: reports.append(runner.run(job(tmp_path, timeout=60))), daemon=True)
    t.start()
    wait_for(marker.exists, timeout=10, what="model start")
    t0 = time.monotonic()
    runner.stop()
    t.join(10)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 5
    (report,) = reports
    assert report.cancelled and not report.timed_out and not report.succeeded

    # A stopped runner refuses new work without starting anything.
    marker.unlink()
    again = runner.run(job(tmp_path))
    assert again.cancelled and again.exit_code is None
    assert not marker.exists()


def test_big_output_does_not_deadlock(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.stdout.write('o' * 5_000_000 + '\\nSTDOUT-END\\n')\n"
        "sys.stderr.write('e' * 5_000_000 + '\\nSTDERR-END\\n')\n"
    )
    report = py(code).run(job(tmp_path, timeout=30))
    assert report.exit_code == 0 and not report.timed_out
    assert report.stderr_tail.endswith("STDERR-END\n")
    assert report.stdout_tail.endswith("STDOUT-END\n")
    assert len(report.stderr_tail) <= TAIL_BYTES and len(report.stdout_tail) <= TAIL_BYTES


def test_missing_executable_is_a_launch_error(tmp_path: Path) -> None:
    report = SubprocessRunner([str(tmp_path / "no-such-model"), "{input}"]).run(job(tmp_path))
    assert report.launch_error is not None
    assert "no-such-model" in report.launch_error
    assert report.exit_code is None and not report.succeeded


def test_render_argv_does_not_rescan_substituted_values(tmp_path: Path) -> None:
    odd = ModelJob(Path("/data/{key}/in.json"), Path("/ws/out.json"), Path("/ws"), "alice", 5.0)
    assert render_argv(["{input}"], odd) == ["/data/{key}/in.json"]


# -- containment: no fd, thread or process outlives its request ---------------------

needs_setsid = pytest.mark.skipif(shutil.which("setsid") is None, reason="setsid is not installed")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in Linux's /proc")
SLEEPER = "import time; time.sleep(120)"
"""What every escaped descendant in these tests runs; teardown kills only processes running exactly this."""


def escape_code(pidfile: Path, *, keep_pipes: bool = True) -> str:
    """A model that leaves a ``setsid`` descendant (holding its stdout and stderr, or not) and exits 0 at once."""
    stdio = "" if keep_pipes else ", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL"
    return (
        "import subprocess, sys\n"
        f"child = subprocess.Popen(['setsid', sys.executable, '-c', {SLEEPER!r}]{stdio})\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('model done')\n"
    )


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids of escaped sleepers a test made; killed at teardown if still running (and still a sleeper of ours)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if SLEEPER.encode() not in fh.read():
                    continue
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


GROUP_CHILD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "time.sleep(60)\n"
)
CHATTY = "import sys\nsys.stdout.write('o' * 3_000_000)\nsys.stderr.write('e' * 3_000_000 + '\\nEND\\n')\n"


@needs_proc
@pytest.mark.parametrize("case", ["ok", "chatty", "timeout", "escape"])
def test_a_run_keeps_no_fd_or_thread(tmp_path: Path, leftovers: list[int], case: str) -> None:
    pidfile = tmp_path / "escaped.pid"
    code = {"ok": "print('fine')", "chatty": CHATTY, "timeout": GROUP_CHILD, "escape": escape_code(pidfile)}[case]
    if case == "escape" and shutil.which("setsid") is None:
        pytest.skip("setsid is not installed")
    py("pass").run(job(tmp_path))  # warm-up: imports and caches that live for the process
    fds0, threads0 = open_fds(), threading.active_count()
    t0 = time.monotonic()
    report = py(code, kill_grace=1.0).run(job(tmp_path, timeout=1.0 if case == "timeout" else 30))
    elapsed = time.monotonic() - t0
    if case == "escape":
        leftovers.append(read_pid(pidfile) or 0)
        # Not started (no subreaper): the descendant survives, but its pipes are cut after PIPE_GRACE.
        assert elapsed < 5 * (1.0 + PIPE_GRACE)
    assert report.timed_out == (case == "timeout")
    assert report.succeeded == (case != "timeout")
    if case == "chatty":
        assert report.stderr_tail.endswith("\nEND\n") and len(report.stderr_tail) <= TAIL_BYTES
    assert open_fds() == fds0, "a pipe or pidfd was left open"
    assert threading.active_count() == threads0, "a thread outlived the run"


@needs_setsid
@needs_proc
@pytest.mark.parametrize("keep_pipes", [True, False], ids=["holding-pipes", "daemonised"])
def test_a_started_runner_kills_escaped_descendants(tmp_path: Path, leftovers: list[int], keep_pipes: bool) -> None:
    pidfile = tmp_path / "escaped.pid"
    runner = py(escape_code(pidfile, keep_pipes=keep_pipes), kill_grace=1.0)
    runner.start(tmp_path / "run")
    py("pass").run(job(tmp_path))
    fds0, threads0 = open_fds(), threading.active_count()
    t0 = time.monotonic()
    report = runner.run(job(tmp_path))
    elapsed = time.monotonic() - t0
    child = read_pid(pidfile)
    assert child is not None
    leftovers.append(child)
    assert report.succeeded and report.stdout_tail == "model done\n"
    assert elapsed < 5 * (runner.kill_grace + PIPE_GRACE)
    wait_for(lambda: not pid_alive(child), timeout=10, what=f"escaped descendant {child} to be killed")
    assert open_fds() == fds0 and threading.active_count() == threads0
    assert list((tmp_path / "run").iterdir()) == []  # the run's record is gone with it


@needs_setsid
@needs_proc
def test_a_descendant_of_a_model_still_running_is_spared(tmp_path: Path, leftovers: list[int]) -> None:
    """With parallel workers, one run ending must not kill what another, still running, started."""
    pidfile, release = tmp_path / "escaped.pid", tmp_path / "release"
    spawn = escape_code(pidfile, keep_pipes=False)
    code = (
        "import os, subprocess, sys, time\n"
        "if sys.argv[1] == 'a':\n"
        # The intermediate exits at once: its setsid child is re-parented to the runner's process.
        f"    subprocess.run([sys.executable, '-c', {spawn!r}], stdout=subprocess.DEVNULL)\n"
        "    deadline = time.monotonic() + 60\n"
        f"    while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:\n"
        "        time.sleep(0.02)\n"
    )
    runner = SubprocessRunner([sys.executable, "-c", code, "{key}"], kill_grace=1.0)
    runner.start(tmp_path / "run")
    reports: list[RunReport] = []
    a = threading.Thread(target=lambda: reports.append(runner.run(job(tmp_path, timeout=60, key="a"))), daemon=True)
    a.start()
    try:
        child = wait_for(lambda: read_pid(pidfile), timeout=15, what="the escaped descendant of run a")
        leftovers.append(child)
        assert runner.run(job(tmp_path, key="b")).succeeded
        runner.reap_orphans()  # what the daemon's heartbeat does
        assert pid_alive(child), "run b's clean-up killed a descendant of run a, which is still running"
    finally:
        release.touch()
        a.join(30)
    assert reports and reports[0].succeeded
    wait_for(lambda: not pid_alive(child), timeout=10, what="run a's escaped descendant killed when a ended")


def test_a_running_model_is_recorded_until_it_ends(tmp_path: Path) -> None:
    marker, release, run_dir = tmp_path / "started", tmp_path / "release", tmp_path / "run"
    code = (
        "import os, time\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "deadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(release)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
    )
    runner = py(code)
    runner.start(run_dir)
    reports: list[RunReport] = []
    t = threading.Thread(target=lambda: reports.append(runner.run(job(tmp_path, timeout=60))), daemon=True)
    t.start()
    try:
        wait_for(marker.exists, timeout=15, what="model start")
        (path,) = wait_for(lambda: list(run_dir.iterdir()), timeout=5, what="the run's record")
        doc = json.loads(path.read_bytes())
        assert path.name == f"{doc['pid']}.json"
        assert procfs.environ_value(doc["pid"], RUN_ID_ENV) == doc["run_id"]
        if os.path.exists("/proc/self/stat"):
            st = procfs.read_stat(doc["pid"])
            assert st is not None and st.session_leader and doc["start_time"] == st.start_time
            assert doc["boot_id"] == procfs.boot_id()
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    finally:
        release.touch()
        t.join(30)
    assert reports[0].succeeded
    assert list(run_dir.iterdir()) == []


def _sleeper(tmp_path: Path, run_id: str | None = None, escape_to: Path | None = None) -> subprocess.Popen[bytes]:
    """A process in a session of its own, like a model left running by a daemon that was SIGKILLed."""
    code = (escape_code(escape_to, keep_pipes=False) if escape_to else "") + "import time; time.sleep(120)\n"
    env = {**os.environ, RUN_ID_ENV: run_id} if run_id else dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@needs_setsid
@pytest.mark.skipif(procfs.boot_id() is None, reason="needs Linux's /proc for start times and the boot id")
def test_start_stops_only_leftovers_that_still_match_their_record(tmp_path: Path, leftovers: list[int]) -> None:
    run_dir = tmp_path / "run"
    records = RecordDir.open(run_dir)
    boot = procfs.boot_id()

    def record(proc: subprocess.Popen[bytes], run_id: str, *, start_shift: int = 0, boot_id: str | None = boot) -> None:
        st = procfs.read_stat(proc.pid)
        assert st is not None
        records.write(RunRecord(proc.pid, st.start_time + start_shift, boot_id, run_id))

    run_id = secrets.token_hex(16)
    escaped_pid = tmp_path / "escaped.pid"
    orphan = _sleeper(tmp_path, run_id, escape_to=escaped_pid)  # a model and the descendant it set loose
    recycled = _sleeper(tmp_path)  # a recorded pid that now names another process
    other_boot = _sleeper(tmp_path)  # a record from before a reboot
    bystanders = [recycled, other_boot]
    try:
        escaped = wait_for(lambda: read_pid(escaped_pid), timeout=15, what="the orphan's escaped descendant")
        leftovers.append(escaped)
        record(orphan, run_id)
        record(recycled, secrets.token_hex(16), start_shift=-1)
        record(other_boot, secrets.token_hex(16), boot_id="another-boot")
        (run_dir / "4242.json").write_bytes(b"{half a rec")
        (run_dir / "4244.json").write_bytes(RunRecord(orphan.pid, None, boot, run_id).encode())  # misnamed
        (tmp_path / "elsewhere.json").write_bytes(b"{}")
        os.symlink(tmp_path / "elsewhere.json", run_dir / "4243.json")

        assert SubprocessRunner(["true"]).start(run_dir) == 1
        assert orphan.wait(10) == -signal.SIGKILL
        wait_for(lambda: not pid_alive(escaped), timeout=10, what="the orphan's escaped descendant killed")
        assert all(p.poll() is None for p in bystanders), "a process that no longer matches its record was killed"
        assert list(run_dir.iterdir()) == []
        assert (tmp_path / "elsewhere.json").read_bytes() == b"{}"  # the symlink was removed, not followed
    finally:
        for p in [orphan, *bystanders]:
            p.kill()
            p.wait()


def test_a_record_dir_that_is_a_symlink_is_never_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "run")
    runner = py("print('fine')")
    assert runner.start(tmp_path / "run") == 0  # refused, logged; the runner still works
    assert runner.run(job(tmp_path)).succeeded
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(UnsafeRecordDir):
        RecordDir.open(tmp_path / "run")


def test_without_pidfd_exits_are_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pidfd_open is missing (old kernels, other systems) the same guarantees hold by polling."""
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    ok = py("print('fine')").run(job(tmp_path))
    assert ok.succeeded and ok.stdout_tail == "fine\n"
    pidfile = tmp_path / "child.pid"
    spawn = "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    code = GROUP_CHILD.replace(spawn, f"open({str(pidfile)!r}, 'w').write(str({spawn}.pid))")
    report = py(code, kill_grace=1.0).run(job(tmp_path, timeout=1.0))
    assert report.timed_out and report.exit_code is not None and report.exit_code < 0
    child = read_pid(pidfile)
    assert child is not None
    wait_for(lambda: not pid_alive(child), timeout=5, what="the timed-out model's child to be gone")


@needs_proc
@pytest.mark.parametrize("of_a_model", [False, True], ids=["operator's-process", "model-leftover"])
def test_the_sweep_kills_only_leftovers_of_model_runs(tmp_path: Path, leftovers: list[int], of_a_model: bool) -> None:
    """As PID 1 every orphan in the container comes to the watcher: only a model's leftovers are its to kill."""
    runner = py("pass")
    runner.start(tmp_path / "run")
    pidfile = tmp_path / "orphan.pid"
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}
    if of_a_model:
        env[RUN_ID_ENV] = secrets.token_hex(16)  # a run that has ended
    spawn = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
             f"open({str(pidfile)!r}, 'w').write(str(p.pid))")
    subprocess.run([sys.executable, "-c", spawn], env=env, check=True)  # exits at once: its child is orphaned
    orphan = wait_for(lambda: read_pid(pidfile), timeout=10, what="the orphan's pid")
    leftovers.append(orphan)
    wait_for(lambda: orphan in [c.pid for c in procfs.children(os.getpid())], 10, what="the orphan re-parented to us")
    runner.reap_orphans()
    if of_a_model:
        wait_for(lambda: not pid_alive(orphan), 10, what="the model's leftover killed")
    else:
        assert pid_alive(orphan), "a process that no model started was killed"


def test_warm_runners_take_fewer_requests_ahead_in_shared_mode(tmp_path: Path) -> None:
    """A request a shared watcher takes ahead is claimed, and one another watcher cannot take: fewer ahead."""
    from modelgen_watcher.runners import create
    from modelgen_watcher.runners.warm import SHARED_OVERLAP, WarmRunner
    from modelgen_watcher.settings import WatcherSettings

    settings = WatcherSettings(watch_dir=tmp_path, runner="entry")
    alone, shared = create(settings, tmp_path), create(settings, tmp_path, shared=True)
    assert isinstance(alone, WarmRunner) and isinstance(shared, WarmRunner)
    assert (alone.overlap, shared.overlap) == (WarmRunner.overlap, SHARED_OVERLAP)
    assert WarmRunner.overlap > SHARED_OVERLAP

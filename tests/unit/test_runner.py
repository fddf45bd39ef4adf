"""SubprocessRunner with real child processes: exit codes, timeouts, cancellation, big output."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from modelgen_watcher.runners.base import ModelJob, RunReport
from modelgen_watcher.runners.subprocess import TAIL_BYTES, SubprocessRunner, render_argv
from tests.helpers import pid_alive, wait_for


def job(tmp_path: Path, timeout: float = 30.0, key: str | None = "k1") -> ModelJob:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    return ModelJob(tmp_path / "in.json", ws / "out.json", ws, key, timeout)


def py(code: str, **kwargs: float) -> SubprocessRunner:
    return SubprocessRunner([sys.executable, "-c", code], **kwargs)  # type: ignore[arg-type]


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

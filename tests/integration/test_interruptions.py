"""A request that keeps stopping the watcher is given up after three stops; the others are served; readers never
see an ``ok`` status without its result.

Before: a request in flight when the watcher died (OOM-killed, or a model that sends
SIGTERM to the watcher) stayed ``running`` and was retried at every start, stopping
the watcher again each time: a crash loop in which nothing else was scored. And a
failure removed the old result before writing the new status, so an ``ok`` status
could be read with no result beside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.helpers import (
    Daemon,
    drop,
    fake_model_cmd,
    result_name,
    route,
    sha,
    status_name,
    status_of,
    wait_final,
    wait_for,
)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_request_that_stops_the_watcher_is_given_up_after_three_stops(watch_dir, tmp_path, sig):
    pidfile = tmp_path / "pids"
    cmd = fake_model_cmd("ok", "--kill-marked", "--signal", sig, "--pidfile", str(pidfile))
    poison = drop(watch_dir, {**route([""]), "kill_me": True}, key="poison")
    good = drop(watch_dir, route(["turn-left"]), key="good")
    starts = 0
    try:
        while (status_of(watch_dir, "poison") or {}).get("state") != "error":
            assert starts < 6, "the poisonous request was never given up"
            starts += 1
            d = Daemon(watch_dir, "--model-cmd", cmd, log_path=tmp_path / f"daemon-{starts}.log").start(wait_ready=False)
            proc = d.proc
            assert proc is not None

            def stopped_or_given_up(p: subprocess.Popen[bytes] = proc) -> bool:
                return p.poll() is not None or (status_of(watch_dir, "poison") or {}).get("state") == "error"

            wait_for(stopped_or_given_up, 60, what="the watcher stopped by its model, or the request given up")
        assert starts == 4  # three stops, then the fourth start gives up without running the model
        st = wait_final(watch_dir, "poison", sha(poison))
        assert st["error"]["kind"] == "model_failed"
        assert "stopped 3 times" in st["error"]["message"]
        assert wait_final(watch_dir, "good", sha(good))["state"] == "ok"
        assert d.proc is not None and d.proc.poll() is None  # the fourth watcher serves on
        d.stop()
        # A restart alone does not run those bytes again (that would restart the crash loop)...
        fixed = Daemon(watch_dir, log_path=tmp_path / "fixed.log").start()
        assert fixed.wait_runs("poison", 1)[0]["error_kind"] == "model_failed"
        # ...but publishing them again is a fresh try (here with a model that no longer stops the watcher).
        drop(watch_dir, poison, key="poison")
        wait_for(lambda: (status_of(watch_dir, "poison") or {}).get("state") == "ok", 30, what="the fresh try scored")
        fixed.stop()
    finally:
        for pid in [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []:
            try:
                os.kill(pid, signal.SIGKILL)  # models orphaned by a killed watcher
            except ProcessLookupError:
                pass


def test_an_ok_status_never_stands_without_its_result(daemon_factory, watch_dir):
    """A reader checks status, result, status; when the status did not change meanwhile and says ok,
    the result must be there and name the same bytes, while good and bad inputs alternate."""
    daemon_factory("--settle", "0")
    violations: list[str] = []
    stop = threading.Event()
    status_path, result_path = watch_dir / status_name("k"), watch_dir / result_name("k")

    def read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def reader() -> None:
        while not stop.is_set():
            before, result, after = read(status_path), read(result_path), read(status_path)
            if before is None or before != after:
                continue
            st = json.loads(before)
            if st["state"] != "ok":
                continue
            if result is None:
                violations.append(f"ok status for {st['input_sha256'][:12]} with no result")
            elif json.loads(result)["meta"]["input_sha256"] != st["input_sha256"]:
                violations.append(f"ok status for {st['input_sha256'][:12]} beside another input's result")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for i in range(40):
            good = drop(watch_dir, route([""], lat0=30 + i / 1000), key="k")
            assert wait_final(watch_dir, "k", sha(good))["state"] == "ok"
            bad = drop(watch_dir, b'{"routes": "not a list %d"}' % i, key="k")
            assert wait_final(watch_dir, "k", sha(bad))["state"] == "error"
    finally:
        stop.set()
        thread.join(5)
    assert not violations, violations[:5]


_DECODE_KILLER = '''\
import os, signal
import modelgen_watcher.watcher.pipeline as pipeline
_decode = pipeline.decode_route
def _killing(data, *args, **kwargs):
    if b"kill_me_in_decode" in data:  # a crash of the watcher while it decodes this input (OOM, a fault in C)
        os.kill(os.getpid(), signal.SIGKILL)
    return _decode(data, *args, **kwargs)
pipeline.decode_route = _killing
'''


def test_an_input_whose_decoding_kills_the_watcher_is_given_up_after_three_stops(watch_dir, tmp_path):
    """The in-flight marker is written before the input is decoded: a watcher that dies decoding it counts that
    stop like one at the model, and gives the request up at the third start, then serves the others."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_DECODE_KILLER)
    env = {"PYTHONPATH": str(hook)}
    poison = drop(watch_dir, {**route([""]), "kill_me_in_decode": True}, key="poison")
    for start in range(3):
        d = Daemon(watch_dir, env=env, log_path=tmp_path / f"d{start}.log").start(wait_ready=False)
        assert d.proc is not None
        assert d.proc.wait(60) == -signal.SIGKILL
    last = Daemon(watch_dir, env=env, log_path=tmp_path / "last.log").start()
    st = wait_final(watch_dir, "poison", sha(poison))
    assert st["state"] == "error" and "stopped 3 times" in st["error"]["message"], st
    good = drop(watch_dir, route(["turn-left"]), key="good")  # and the watcher goes on serving
    assert wait_final(watch_dir, "good", sha(good))["state"] == "ok"
    last.stop()

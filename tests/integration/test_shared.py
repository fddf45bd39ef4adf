"""Shared mode: several real daemons on one directory, polling as they would on NFS, each request scored by one.

Each watcher is its own process with its own id, as on separate machines: they share
nothing but the directory. Runs are counted by the model itself (``fake_model.py
--trace``: one line per run, the input's hash and the worker's pid), so a second run
that published nothing is counted too. Leases are short here (``LEASE``, heartbeats
every 0.5 s) so that takeovers happen within the tests' time.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modelgen_watcher.runners.warm import SHARED_OVERLAP
from tests.helpers import (
    Daemon,
    DaemonFactory,
    drop,
    fake_model_args,
    must_result,
    must_status,
    route,
    sha,
    status_of,
    wait_final,
    wait_for,
)

LEASE = 4.0
SHARED_ENV = {"MODELGEN_HEARTBEAT_INTERVAL": "0.5"}


def shared_args(watcher: str, *model: str) -> list[str]:
    return ["--shared", "--watcher-id", watcher, "--claim-lease", str(LEASE), "--observer", "polling",
            "--poll-interval", "0.2", *model]


def start_watcher(daemon_factory: DaemonFactory, watcher: str, *model: str, env: dict[str, str] | None = None,
                  ) -> Daemon:
    return daemon_factory(*shared_args(watcher, *model), env={**SHARED_ENV, **(env or {})})


def runs(trace: Path) -> list[tuple[str, int]]:
    """Every model run so far: (the input's sha256, the pid that ran it)."""
    if not trace.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in trace.read_text().splitlines() if line.strip()]


def done(daemon: Daemon, key: str) -> list[dict[str, Any]]:
    return [e for e in daemon.runs(key) if e.get("outcome") == "ok"]


def worker_pids(daemon: Daemon) -> set[int]:
    return {int(e["pid"]) for e in daemon.events("worker.ready")}


def test_three_watchers_score_500_requests_once_each_though_one_is_killed(daemon_factory, watch_dir, tmp_path):
    trace = tmp_path / "runs.txt"
    model = fake_model_args("ok", "--trace", str(trace), runner="entry")
    watchers = {w: start_watcher(daemon_factory, w, *model) for w in ("a", "b", "c")}
    shas = {}
    for i in range(500):
        raw = drop(watch_dir, route(["", "turn-left"], lat0=30.0 + i * 1e-4), key=f"k{i}")
        shas[f"k{i}"] = sha(raw)

    def scored() -> int:
        return sum(1 for k, h in shas.items() if (status_of(watch_dir, k) or {}).get("input_sha256") == h
                   and (status_of(watch_dir, k) or {}).get("state") == "ok")

    wait_for(lambda: scored() >= 150, 60, interval=0.1, what="150 requests scored")
    victim = watchers["c"]
    assert victim.proc is not None
    victim.proc.kill()  # SIGKILL, midway: whatever it held is taken over after the lease
    victim.proc.wait()
    wait_for(lambda: scored() == len(shas), 90, interval=0.2, what="every request scored")

    for key, h in shas.items():
        st = must_status(watch_dir, key)
        assert (st["state"], st["input_sha256"]) == ("ok", h), key
        assert must_result(watch_dir, key)["meta"]["input_sha256"] == h, key  # never a result naming another hash
    per_sha = Counter(h for h, _ in runs(trace))
    assert set(per_sha) == set(shas.values())
    twice = {h for h, n in per_sha.items() if n > 1}
    assert max(per_sha.values()) <= 2
    # Only what the killed watcher had in flight can run twice: it ran there, and again elsewhere. With one warm
    # worker and its overlap in shared mode (two requests more) that is three at most: one at the model and two
    # whose runs had ended and were being published.
    killed_pids = worker_pids(victim)
    assert len(twice) <= 1 + SHARED_OVERLAP, f"run twice: {twice}"
    for h in twice:
        assert any(pid in killed_pids for hh, pid in runs(trace) if hh == h), f"{h} ran twice, not on the killed one"
    takeovers = sum(len(d.events("claim.takeover")) for d in watchers.values())
    assert takeovers >= len(twice)
    for key in shas:
        assert sum(len(done(d, key)) for d in watchers.values()) <= 1, f"{key} published twice"
    for w in ("a", "b"):
        assert not watchers[w].events("claim.lost"), f"{w} lost a claim it renewed"
        proc = watchers[w].proc
        assert proc is not None and proc.poll() is None


def test_a_watcher_paused_past_its_lease_publishes_nothing_for_the_request_taken_over(
        daemon_factory, watch_dir, tmp_path):
    trace = tmp_path / "runs.txt"
    model = fake_model_args("ok", "--sleep", "3", "--trace", str(trace), runner="entry")
    paused = start_watcher(daemon_factory, "paused", *model)
    raw = drop(watch_dir, route([""]), key="slow")
    h = sha(raw)
    wait_for(lambda: (status_of(watch_dir, "slow") or {}).get("state") == "running" and runs(trace), 20,
             what="the first watcher running the request")
    other = start_watcher(daemon_factory, "other", *model)  # finds the request claimed: looks again later
    assert paused.proc is not None
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        st = wait_final(watch_dir, "slow", h, timeout=40)
        assert st["state"] == "ok"
        other.wait_runs("slow", 1)
        assert other.events("claim.takeover")
        status_bytes = (watch_dir / "gps_scored_route.slow.status.json").read_bytes()
        result_bytes = (watch_dir / "gps_scored_route.slow.json").read_bytes()
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    lost = wait_for(lambda: paused.events("claim.lost"), 20, what="the paused watcher noticing its loss")
    assert lost[0]["key"] == "slow"
    # Whatever it was doing when paused, it published nothing: no request.done, the files as the other left them.
    assert not paused.runs("slow")
    assert (watch_dir / "gps_scored_route.slow.status.json").read_bytes() == status_bytes
    assert (watch_dir / "gps_scored_route.slow.json").read_bytes() == result_bytes
    # And it serves on: a new request is scored (by whichever watcher claims it), once.
    raw2 = drop(watch_dir, route(["", "turn-left"]), key="after")
    wait_final(watch_dir, "after", sha(raw2), timeout=30)
    wait_for(lambda: len(paused.runs("after")) + len(other.runs("after")) == 1, 10, what="one request.done")
    assert (watch_dir / "gps_scored_route.slow.status.json").read_bytes() == status_bytes
    assert Counter(hh for hh, _ in runs(trace))[sha(raw2)] == 1


def test_watchers_started_after_the_requests_catch_up_and_run_each_once(daemon_factory, watch_dir, tmp_path):
    trace = tmp_path / "runs.txt"
    shas = {f"c{i}": sha(drop(watch_dir, route([""], lat0=31.0 + i * 1e-4), key=f"c{i}")) for i in range(60)}
    model = fake_model_args("ok", "--trace", str(trace), runner="entry")
    started = [start_watcher(daemon_factory, w, *model) for w in ("a", "b", "c")]  # each scans everything at start
    for key, h in shas.items():
        assert wait_final(watch_dir, key, h)["state"] == "ok"
    assert sorted(h for h, _ in runs(trace)) == sorted(shas.values())
    assert sum(len(d.runs()) for d in started) == len(shas)


def test_a_takeover_of_a_request_that_only_waited_for_the_worker_counts_no_interruption(daemon_factory, watch_dir,
                                                                                          tmp_path):
    """The one worker has a poison whose model kills its watcher; the good request waits for the worker meanwhile,
    and says so in its claim. The watcher that takes it over counts nothing against it: its model never had it."""
    pidfile = tmp_path / "pids"
    args = fake_model_args("ok", "--kill-marked", "--signal", "SIGKILL", "--sleep", "1.5", "--pidfile", str(pidfile),
                           runner="entry")
    first = start_watcher(daemon_factory, "first", *args)
    try:
        drop(watch_dir, {**route([""]), "kill_me": True}, key="poison")
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="the poison at the model")
        good = drop(watch_dir, route(["turn-left"]), key="good")
        claim = watch_dir / ".modelgen" / "claims" / "gps_input_route.good.json.1"
        wait_for(lambda: claim.exists() and json.loads(claim.read_text()).get("waiting"), 10,
                 what="the good request waiting for the worker, in its claim")
        assert first.proc is not None
        wait_for(lambda: first.proc is not None and first.proc.poll() is not None, 30, what="the watcher killed")
    finally:
        for pid in [int(p) for p in pidfile.read_text().split()] if pidfile.exists() else []:
            try:
                os.kill(pid, signal.SIGKILL)  # the worker the killed watcher left
            except ProcessLookupError:
                pass
    os.unlink(watch_dir / "gps_input_route.poison.json")  # the operator removes the poison
    second = start_watcher(daemon_factory, "second", *args)
    took = wait_for(lambda: second.events("claim.takeover"), 20, what="the good request taken over")
    assert (took[0]["key"], took[0]["interruptions"]) == ("good", 0)
    assert wait_final(watch_dir, "good", sha(good))["state"] == "ok"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelgen_watcher", *args], capture_output=True, text=True,
                          timeout=60)


def test_health_checks_its_own_watcher_with_shared_and_any_watcher_without(daemon_factory, watch_dir):
    a = start_watcher(daemon_factory, "a")
    own = cli("health", "--watch-dir", str(watch_dir), "--shared", "--watcher-id", "a")
    assert own.returncode == 0, own.stdout
    missing = cli("health", "--watch-dir", str(watch_dir), "--shared", "--watcher-id", "b")
    assert missing.returncode == 1 and "watchers/b.json" in missing.stdout
    anyone = cli("health", "--watch-dir", str(watch_dir))
    assert anyone.returncode == 0 and "1 of 1 shared watchers ready" in anyone.stdout
    heartbeat = json.loads(a.health_file.read_text())
    assert (heartbeat["watcher_id"], heartbeat["shared"], heartbeat["ready"]) == ("a", True, True)
    assert heartbeat["hostname"] and heartbeat["pid"] == a.proc.pid  # type: ignore[union-attr]
    assert (watch_dir / ".modelgen" / "watchers" / "a.prom").exists()
    assert not (watch_dir / ".modelgen" / "health.json").exists()
    a.stop()
    assert cli("health", "--watch-dir", str(watch_dir), "--shared", "--watcher-id", "a").returncode == 1
    assert cli("health", "--watch-dir", str(watch_dir)).returncode == 1


def test_one_id_is_one_watcher_and_a_restart_under_it_takes_its_leftovers_at_once(daemon_factory, watch_dir,
                                                                                    tmp_path):
    trace = tmp_path / "runs.txt"
    model = fake_model_args("ok", "--sleep", "30", "--trace", str(trace), runner="entry")
    first = start_watcher(daemon_factory, "pod-0", *model)
    twin = daemon_factory(*shared_args("pod-0", *model), env=SHARED_ENV, wait_ready=False)
    assert twin.proc is not None and twin.proc.wait(30) == 1
    assert "watcher id 'pod-0' is in use" in twin.log_text()
    raw = drop(watch_dir, route([""]), key="held")
    wait_for(lambda: runs(trace), 20, what="the run")
    assert first.proc is not None
    first.proc.kill()
    first.proc.wait()
    again = start_watcher(daemon_factory, "pod-0", *fake_model_args("ok", "--trace", str(trace), runner="entry"))
    took = wait_for(lambda: again.events("claim.takeover"), 10, what="the leftover taken over")
    assert took[0]["key"] == "held" and took[0]["interruptions"] == 1 and took[0]["previous_watcher"] == "pod-0"
    assert wait_final(watch_dir, "held", sha(raw), timeout=20)["state"] == "ok"


def test_a_lone_watcher_and_a_shared_one_never_serve_one_volume_together(daemon_factory, watch_dir):
    lone = daemon_factory()
    shared = daemon_factory(*shared_args("s"), env=SHARED_ENV, wait_ready=False)
    assert shared.proc is not None and shared.proc.wait(30) == 1
    assert "not in shared mode" in shared.log_text()
    lone.stop()
    shared = start_watcher(daemon_factory, "s")
    lone = daemon_factory(wait_ready=False)
    assert lone.proc is not None and lone.proc.wait(30) == 1
    assert "shared-mode watchers (--shared) are serving" in lone.log_text()


def test_across_machines_the_other_modes_fresh_heartbeat_refuses_the_start(daemon_factory, watch_dir):
    """No flock reaches another machine: a heartbeat on the volume, fresh and ready, is what shows a watcher there."""
    state = watch_dir / ".modelgen"
    (state / "watchers").mkdir(parents=True)
    elsewhere = {"pid": 1, "started_at": "2026-01-01T00:00:00Z", "heartbeat_at": "2026-01-01T00:00:00Z",
                 "observer": "polling", "ready": True}
    (state / "health.json").write_text(json.dumps(elsewhere))
    shared = daemon_factory(*shared_args("s"), env=SHARED_ENV, wait_ready=False)
    assert shared.proc is not None and shared.proc.wait(30) == 1
    assert "not in shared mode (pid 1)" in shared.log_text()
    (state / "health.json").unlink()
    (state / "watchers" / "far.json").write_text(json.dumps({**elsewhere, "watcher_id": "far", "hostname": "far"}))
    lone = daemon_factory(wait_ready=False)
    assert lone.proc is not None and lone.proc.wait(30) == 1
    assert "shared-mode watchers (far) are serving" in lone.log_text()


def test_one_watcher_sweeps_at_a_time_and_expired_requests_go(daemon_factory, watch_dir):
    sweep = ["--retention", "1", "--rescan-interval", "0.5"]
    watchers = [start_watcher(daemon_factory, w, *sweep) for w in ("a", "b")]
    raw = drop(watch_dir, route([""]), key="old")
    wait_final(watch_dir, "old", sha(raw))
    wait_for(lambda: not (watch_dir / "gps_input_route.old.json").exists(), 20, what="the expired request removed")
    assert not (watch_dir / "gps_scored_route.old.status.json").exists()
    wait_for(lambda: sum(len(d.events("retention.removed")) for d in watchers), 10, what="the sweep's log line")
    assert sum(len(d.events("retention.removed")) for d in watchers) == 1  # logged after the removal

    def only_the_sweeps() -> bool:  # the last sweep's claim, kept (two for an instant while one takes over); none of a request
        claims = [p.name for p in (watch_dir / ".modelgen" / "claims").iterdir()]
        return len(claims) == 1 and claims[0].startswith(".retention.")

    wait_for(only_the_sweeps, 5, what="no claim but the last sweep's")
    assert not any(d.events("daemon.io_error") for d in watchers)


# -- clock skew ---------------------------------------------------------------------------------------------


def _libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    return found[0] if found else None


_PROBE = """
import os, sys, time
path = sys.argv[1]
open(path, "w").close()
os.utime(path)
print(time.time(), os.stat(path).st_mtime, time.monotonic())
"""


def skewed_env(offset_s: int, probe_dir: Path) -> dict[str, str] | None:
    """The environment that runs a process ``offset_s`` seconds off this machine's clock under libfaketime, as a
    machine with a wrong clock is: its wall clock moved, its monotonic clock not, and a file's time set by the file
    system (a touch of a file, ``utime`` with no times, is set by the kernel or the NFS server, not by the caller's
    clock). libfaketime rewrites ``utime`` unless told not to, and how it is told differs between versions: each
    way is tried, and one that really behaves so is returned (None when none does)."""
    lib = _libfaketime()
    if lib is None:
        return None
    base = {"LD_PRELOAD": lib, "FAKETIME": f"{offset_s:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "NO_FAKE_STAT": "1"}
    for extra in ({"FAKE_UTIME": "1"}, {"FAKE_UTIME": "0"}, {}):
        env = {**base, **extra}
        before = time.time()
        out = subprocess.run([sys.executable, "-c", _PROBE, str(probe_dir / "probe")], env={**os.environ, **env},
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            continue
        wall, mtime, mono = (float(x) for x in out.stdout.split())
        if abs(wall - before - offset_s) < 5 and abs(mtime - before) < 5 and abs(mono - time.monotonic()) < 5:
            return env
    return None


def test_clocks_30_s_apart_neither_steal_live_claims_nor_keep_dead_ones(daemon_factory, watch_dir, tmp_path):
    ahead, behind = skewed_env(+30, tmp_path), skewed_env(-30, tmp_path)
    if ahead is None or behind is None:
        pytest.skip("libfaketime (Debian's faketime package) is needed to run a watcher on a skewed clock: "
                    "apt-get install faketime" if _libfaketime() is None else
                    "libfaketime here cannot leave utime and the monotonic clock alone")
    trace = tmp_path / "runs.txt"
    model = fake_model_args("ok", "--sleep", "6", "--trace", str(trace), runner="entry")
    late = start_watcher(daemon_factory, "behind", *model, env=behind)

    # A live claim of the watcher 30 s behind is not stolen by the one 30 s ahead, to which it would look 60 s old.
    raw1 = drop(watch_dir, route([""]), key="live")
    wait_for(lambda: runs(trace), 20, what="the run on the watcher behind")
    early = start_watcher(daemon_factory, "ahead", *model, env=ahead)
    assert wait_final(watch_dir, "live", sha(raw1), timeout=30)["state"] == "ok"
    assert [h for h, _ in runs(trace)] == [sha(raw1)]
    assert not early.events("claim.takeover") and not early.runs("live")
    assert len(late.runs("live")) == 1

    # A dead claim of the watcher ahead is taken over by the one behind after about one lease, not 30 s later.
    assert late.proc is not None and early.proc is not None
    late.proc.send_signal(signal.SIGSTOP)  # so that the watcher ahead takes the next request
    try:
        raw2 = drop(watch_dir, route(["", "turn-left"]), key="dead")
        wait_for(lambda: len(runs(trace)) == 2, 20, what="the run on the watcher ahead")
    finally:
        late.proc.send_signal(signal.SIGCONT)
    early.proc.kill()
    killed_at = time.monotonic()
    wait_for(lambda: late.events("claim.takeover"), 30, interval=0.05, what="the takeover by the watcher behind")
    took = time.monotonic() - killed_at
    # About one lease after its last renewal (at most a heartbeat before the kill, more on a busy machine), and
    # far from the 30 s more that a lease measured on this watcher's own clock would take.
    assert LEASE / 2 <= took <= LEASE + 10.0, f"taken over {took:.1f} s after the kill (lease {LEASE:g} s)"
    assert wait_final(watch_dir, "dead", sha(raw2), timeout=30)["state"] == "ok"
    assert json.loads((watch_dir / "gps_scored_route.dead.json").read_text())["meta"]["input_sha256"] == sha(raw2)

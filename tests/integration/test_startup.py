"""Catch-up at start: pending work is done (through every runner), finished work is not redone, leftovers are cleaned."""

from __future__ import annotations

import json

from tests.helpers import drop, must_result, result_name, route, sha, status_name, wait_final


def test_files_present_before_start_are_scored(daemon_factory, watch_dir, runner):
    legacy = drop(watch_dir, route([""]))
    keyed = drop(watch_dir, route(["turn-left"]), key="early")
    daemon_factory("--runner", runner)
    assert wait_final(watch_dir, None, sha(legacy))["state"] == "ok"
    assert wait_final(watch_dir, "early", sha(keyed))["state"] == "ok"


def test_running_status_left_by_a_killed_daemon_is_redone(daemon_factory, watch_dir, runner):
    raw = drop(watch_dir, route([""]), key="crashed")
    (watch_dir / status_name("crashed")).write_text(json.dumps({
        "state": "running", "key": "crashed", "input_sha256": sha(raw),
        "started_at": "2026-01-01T00:00:00Z", "finished_at": None, "duration_ms": 0, "error": None,
    }))
    daemon_factory("--runner", runner)
    assert wait_final(watch_dir, "crashed", sha(raw))["state"] == "ok"
    assert must_result(watch_dir, "crashed")["meta"]["input_sha256"] == sha(raw)


def test_status_for_another_hash_is_redone(daemon_factory, watch_dir, runner):
    old = drop(watch_dir, route([""]), key="changed")
    d = daemon_factory("--runner", runner)
    wait_final(watch_dir, "changed", sha(old))
    d.stop()
    new = drop(watch_dir, route(["turn-left"]), key="changed")  # changed while no daemon ran
    daemon_factory("--runner", runner)
    assert wait_final(watch_dir, "changed", sha(new))["state"] == "ok"


def test_an_ok_status_beside_a_result_of_other_bytes_is_redone(daemon_factory, watch_dir):
    """What a power cut can leave, since the directory is not fsynced: the status's rename kept, the result's
    lost (the result of the bytes before). The status alone does not make the request done."""
    old = drop(watch_dir, route([""]), key="cut")
    d = daemon_factory()
    wait_final(watch_dir, "cut", sha(old))
    old_result = (watch_dir / result_name("cut")).read_bytes()
    new = drop(watch_dir, route(["turn-left"]), key="cut")
    wait_final(watch_dir, "cut", sha(new))
    d.stop()
    (watch_dir / result_name("cut")).write_bytes(old_result)  # the new result's rename, taken back
    again = daemon_factory("--once", wait_ready=False)
    assert again.proc.wait(30) == 0
    assert [r.get("key") for r in again.runs()] == ["cut"]
    assert must_result(watch_dir, "cut")["meta"]["input_sha256"] == sha(new)


def test_restart_with_nothing_new_runs_no_model(daemon_factory, watch_dir):
    for k in ("a", "b"):
        drop(watch_dir, route([""]), key=k)
    first = daemon_factory()
    for k in ("a", "b"):
        wait_final(watch_dir, k, sha(json.dumps(route([""])).encode()))
    first.stop()
    second = daemon_factory("--once", wait_ready=False)
    assert second.proc.wait(30) == 0
    assert second.runs() == []
    assert second.events("once.done")[0]["skipped"] == 2


def test_stale_temp_files_are_removed_at_start(daemon_factory, watch_dir):
    (watch_dir / ".modelgen-gps_scored_route.json.abc.tmp").write_text("partial")
    (watch_dir / ".modelgen" / "tmp").mkdir(parents=True)
    (watch_dir / ".modelgen" / "tmp" / "input-x.json").write_text("{}")
    (watch_dir / ".modelgen" / "workspace").mkdir()
    (watch_dir / ".modelgen" / "workspace" / "modelgen-out-x.json").write_text("{}")
    (watch_dir / ".modelgen" / "workspace" / "cache.pkl").write_text("keep me")
    (watch_dir / ".modelgen" / "workspace" / "w0").mkdir()  # a warm worker's own workspace
    (watch_dir / ".modelgen" / "workspace" / "w0" / "modelgen-out-y.json").write_text("{}")
    (watch_dir / ".modelgen" / "workspace" / "w0" / "cache.pkl").write_text("keep me too")
    (watch_dir / ".writer-tmp").write_text("someone else's temp file")
    daemon_factory()
    assert not (watch_dir / ".modelgen-gps_scored_route.json.abc.tmp").exists()
    assert list((watch_dir / ".modelgen" / "tmp").iterdir()) == []
    assert not (watch_dir / ".modelgen" / "workspace" / "modelgen-out-x.json").exists()
    assert (watch_dir / ".modelgen" / "workspace" / "cache.pkl").read_text() == "keep me"
    assert not (watch_dir / ".modelgen" / "workspace" / "w0" / "modelgen-out-y.json").exists()
    assert (watch_dir / ".modelgen" / "workspace" / "w0" / "cache.pkl").read_text() == "keep me too"
    assert (watch_dir / ".writer-tmp").read_text() == "someone else's temp file"


def test_a_second_daemon_on_the_same_dir_is_refused(daemon_factory, watch_dir):
    daemon_factory()
    second = daemon_factory(wait_ready=False)
    assert second.proc.wait(30) == 1
    assert "another modelgen-watcher" in second.log_text()

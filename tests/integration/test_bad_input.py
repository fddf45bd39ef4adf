"""Bad inputs end in a clear error status or one logged refusal, never a crash or a hang."""

from __future__ import annotations

import os

from tests.helpers import (
    drop,
    encode,
    input_name,
    must_result,
    result_of,
    route,
    sha,
    status_of,
    wait_error,
    wait_final,
)


def test_invalid_json(daemon, watch_dir):
    raw = drop(watch_dir, b'{"routes": [', key="json")
    st = wait_final(watch_dir, "json", sha(raw))
    assert st["error"]["kind"] == "invalid_input"
    assert "not valid JSON" in st["error"]["message"]
    assert result_of(watch_dir, "json") is None


def test_empty_file(daemon, watch_dir):
    raw = drop(watch_dir, b"", key="empty")
    st = wait_final(watch_dir, "empty", sha(raw))
    assert st["error"]["message"] == "the input is empty"


def test_wrong_schema(daemon, watch_dir):
    raw = drop(watch_dir, {"routes": [{"legs": [{"steps": [{"maneuver": ""}]}]}]}, key="schema")
    st = wait_final(watch_dir, "schema", sha(raw))
    assert st["error"]["kind"] == "invalid_input"
    assert "routes.0.legs.0.steps.0.end_location" in st["error"]["message"]


def test_route_without_steps(daemon, watch_dir):
    raw = drop(watch_dir, route([]), key="nosteps")
    st = wait_final(watch_dir, "nosteps", sha(raw))
    assert st["error"]["kind"] == "invalid_input"


def test_empty_route_list_is_scored_as_empty(daemon, watch_dir):
    raw = drop(watch_dir, {"routes": []}, key="none")
    assert wait_final(watch_dir, "none", sha(raw))["state"] == "ok"
    assert must_result(watch_dir, "none")["routes"] == []


def test_input_over_the_size_limit(daemon_factory, watch_dir):
    daemon_factory("--max-input-bytes", "1000")
    drop(watch_dir, route([""] * 100), key="big")
    st = wait_error(watch_dir, "big")
    assert st["error"]["kind"] == "invalid_input"
    assert "over the limit of 1000 bytes" in st["error"]["message"]


def test_symlink_named_like_an_input_is_never_read(daemon, watch_dir, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_bytes(encode(route([""])))
    os.symlink(secret, watch_dir / input_name("link"))
    st = wait_error(watch_dir, "link")
    assert "symlink" in st["error"]["message"]
    assert result_of(watch_dir, "link") is None


def test_directory_named_like_an_input(daemon, watch_dir):
    (watch_dir / input_name("dir")).mkdir()
    st = wait_error(watch_dir, "dir")
    assert "directory" in st["error"]["message"]


def test_fifo_named_like_an_input_does_not_hang_the_daemon(daemon, watch_dir):
    os.mkfifo(watch_dir / input_name("fifo"))
    st = wait_error(watch_dir, "fifo")
    assert "FIFO" in st["error"]["message"]
    raw = drop(watch_dir, route([""]), key="after")
    assert wait_final(watch_dir, "after", sha(raw))["state"] == "ok"


def test_invalid_key_is_logged_once_and_ignored(daemon, watch_dir):
    bad = watch_dir / "gps_input_route.bad key!.json"
    bad.write_bytes(encode(route([""])))
    bad.write_bytes(encode(route(["x"])))
    reserved = watch_dir / "gps_input_route.status.json"
    reserved.write_bytes(encode(route([""])))
    raw = drop(watch_dir, route([""]), key="marker")
    wait_final(watch_dir, "marker", sha(raw))
    daemon.wait_runs("marker")
    refusals = daemon.events("input.refused")
    assert [r["file"] for r in refusals].count(bad.name) == 1
    assert [r["file"] for r in refusals].count(reserved.name) == 1
    assert status_of(watch_dir, "bad key!") is None
    assert daemon.proc.poll() is None


def test_dot_files_are_ignored_and_never_deleted(daemon, watch_dir):
    tmp = watch_dir / ".gps_input_route.json.partial"
    tmp.write_bytes(b"{half")
    raw = drop(watch_dir, route([""]), key="marker")
    wait_final(watch_dir, "marker", sha(raw))
    assert tmp.read_bytes() == b"{half"
    assert status_of(watch_dir, None) is None

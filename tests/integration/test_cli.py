"""The command line as a user meets it: health, score, --once, bad settings, --version."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import drop, encode, must_status, read_json, route, sha, wait_for


def cli(*args: str, env: dict[str, str] | None = None, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelgen_watcher", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd,
    )


def test_version():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("modelgen-watcher ")


def test_help_of_each_command_is_its_own():
    health = cli("health", "--help")
    assert health.returncode == 0
    assert set(re.findall(r"--[a-z-]+", " ".join(health.stdout.split()))) == {
        "--help", "--watch-dir", "--max-age", "--shared", "--watcher-id"}
    run = " ".join(cli("run", "--help").stdout.split())  # whatever the terminal's width
    assert "--observer {auto,native,polling}" in run and "MODELGEN_HEARTBEAT_INTERVAL" in run
    assert "killed (default: 120; " in run


def test_health_follows_the_daemon(daemon_factory, watch_dir):
    assert cli("health", "--watch-dir", str(watch_dir)).returncode == 1  # nothing running yet
    d = daemon_factory()
    ok = cli("health", "--watch-dir", str(watch_dir))
    assert ok.returncode == 0 and "healthy" in ok.stdout
    assert read_json(watch_dir / ".modelgen" / "health.json")["observer"] in ("native", "polling")
    d.stop()
    assert cli("health", "--watch-dir", str(watch_dir)).returncode == 1


def test_health_reports_a_stale_heartbeat(daemon_factory, watch_dir):
    d = daemon_factory()
    d.proc.kill()  # SIGKILL: no chance to say goodbye
    d.proc.wait()
    health = watch_dir / ".modelgen" / "health.json"
    doc = json.loads(health.read_text())
    doc["heartbeat_at"] = "2020-01-01T00:00:00.000Z"
    health.write_text(json.dumps(doc))
    out = cli("health", "--watch-dir", str(watch_dir), "--max-age", "30")
    assert out.returncode == 1 and "heartbeat" in out.stdout


def test_heartbeat_is_refreshed(daemon_factory, watch_dir):
    daemon_factory()
    first = read_json(watch_dir / ".modelgen" / "health.json")["heartbeat_at"]
    wait_for(lambda: read_json(watch_dir / ".modelgen" / "health.json")["heartbeat_at"] != first, 10,
             what="a newer heartbeat")


def test_score_to_stdout_and_file(tmp_path):
    src = tmp_path / "route.json"
    src.write_bytes(encode(route(["", "turn-left"])))
    out = cli("score", str(src))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["meta"]["input_sha256"] == sha(src.read_bytes())
    assert [p["score"] for p in doc["routes"][0]] == [0.939394, 0.911523]
    dest = tmp_path / "scored.json"
    assert cli("score", str(src), "-o", str(dest)).returncode == 0
    assert json.loads(dest.read_text())["routes"] == doc["routes"]


def test_score_draws_the_result_as_svg(tmp_path):
    import xml.etree.ElementTree as ET

    from modelgen_watcher.picture import VIRIDIS

    doc = route(["", "turn-left", "", "turn-left", "turn-left"], routes=2)
    doc["routes"][1]["legs"][0]["steps"][0]["start_location"] = {"lat": 30.2884, "lng": -97.7360}
    src = tmp_path / "route.json"
    src.write_bytes(encode(doc))
    svg = tmp_path / "out" / "route.svg"
    svg.parent.mkdir()
    out = cli("score", str(src), "--svg", str(svg))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["totalScores"]  # the result still goes to stdout
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.parse(svg).getroot()  # well-formed XML, a standalone SVG document
    assert root.tag == f"{ns}svg" and root.get("role") == "img"
    routes = root.findall(f"{ns}g[@class='route']")
    assert len(routes) == 2
    for g in routes:
        steps = g.findall(f"{ns}path[@class='step']")
        assert [float(p.get("data-score", "")) for p in steps] == [0.939394, 0.911523, 0.939394, 0.911523, 0.911523]
        assert [p.get("stroke") for p in steps] == [VIRIDIS[-1], VIRIDIS[0], VIRIDIS[-1], VIRIDIS[0], VIRIDIS[0]]
    first_steps = [g.find(f"{ns}path[@class='step']") for g in routes]
    assert [len(p.get("d", "").split("L")) for p in first_steps if p is not None] == [1, 2]  # a start: a segment
    assert "Route 2: 5 steps" in (root.findtext(f"{ns}desc") or "")
    assert [p.name for p in svg.parent.iterdir()] == ["route.svg"]  # written atomically: no temp file left


def test_score_bad_route_says_why(tmp_path):
    src = tmp_path / "route.json"
    src.write_text('{"routes": 5}')
    out = cli("score", str(src))
    assert out.returncode == 1
    assert "invalid_input" in out.stderr and "routes" in out.stderr
    assert cli("score", str(tmp_path / "missing.json")).returncode == 1


def test_once_processes_pending_and_exits(watch_dir):
    good = drop(watch_dir, route([""]), key="good")
    drop(watch_dir, route([""]))
    out = cli("--once", "--watch-dir", str(watch_dir))
    assert out.returncode == 0, out.stdout + out.stderr
    assert must_status(watch_dir, "good")["input_sha256"] == sha(good)
    assert must_status(watch_dir, None)["state"] == "ok"
    drop(watch_dir, b"{not json", key="bad")
    out = cli("run", "--once", "--watch-dir", str(watch_dir), "--settle", "0")
    assert out.returncode == 1
    assert must_status(watch_dir, "bad")["state"] == "error"


def test_defaults_watch_dir_is_created(tmp_path):
    out = cli("--once", cwd=tmp_path)
    assert out.returncode == 0
    assert (tmp_path / "data" / ".modelgen").is_dir()


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--workers", "0"], {}, "--workers (MODELGEN_WORKERS)"),
        (["--model-timeout", "soon"], {}, "--model-timeout"),
        ([], {"MODELGEN_OBSERVER": "magic"}, "--observer (MODELGEN_OBSERVER)"),
        (["--observer", "magic"], {}, "argument --observer: invalid choice: 'magic'"),
        (["--log-level", "loud"], {}, "argument --log-level: invalid choice"),
        (["--heartbeat-interval", "1"], {}, "unrecognized arguments"),
        (["--model-cmd", "m {inptu}"], {}, "unknown placeholder {inptu}"),
        (["--input-name", "same.json", "--output-name", "same.json"], {}, "must differ"),
        (["--model-cwd", "/nonexistent"], {}, "--model-cwd"),
        (["--no-such-flag"], {}, "unrecognized arguments"),
        (["serve", "--request-timeout", "0"], {}, "--request-timeout (MODELGEN_REQUEST_TIMEOUT)"),
        (["serve"], {"MODELGEN_MAX_CONNECTIONS": "2"}, "--max-connections (MODELGEN_MAX_CONNECTIONS)"),
        (["--shared", "--observer", "native"], {}, "--observer (MODELGEN_OBSERVER): `native` sees no other machine"),
        (["--shared", "--claim-lease", "9"], {}, "--claim-lease (MODELGEN_CLAIM_LEASE): must be at least 5 heartbeats"),
        ([], {"MODELGEN_SHARED": "1", "MODELGEN_CLAIM_LEASE": "2", "MODELGEN_HEARTBEAT_INTERVAL": "0.5"},
         "--claim-lease (MODELGEN_CLAIM_LEASE)"),
        (["--watcher-id", "../up"], {}, "--watcher-id (MODELGEN_WATCHER_ID): must match"),
    ],
)
def test_bad_setting_exits_2_with_one_line(tmp_path, args, env, words):
    out = cli(*args, "--watch-dir", str(tmp_path / "d"), env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr
    assert not (tmp_path / "d").exists()  # nothing was started


def test_flag_wins_over_environment(watch_dir):
    out = cli("--once", "--watch-dir", str(watch_dir), "--workers", "1", env={"MODELGEN_WORKERS": "0"})
    assert out.returncode == 0


def test_environment_sets_the_watch_dir(tmp_path):
    d = tmp_path / "from-env"
    out = cli("--once", env={"MODELGEN_WATCH_DIR": str(d)})
    assert out.returncode == 0 and (d / ".modelgen").is_dir()


def test_score_keeps_its_log_off_stdout_so_the_result_stays_clean(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"routes": "nope"}')
    out = cli("score", str(bad), "--log-level", "info")
    assert out.returncode == 1 and out.stdout == ""
    assert "invalid_input" in out.stderr


def test_a_misspelt_variable_is_warned_about_and_a_missing_program_names_its_setting(tmp_path):
    out = cli("health", "--watch-dir", str(tmp_path), env={"MODELGEN_MODLE_CMD": "x"})
    assert "MODELGEN_MODLE_CMD is not a setting" in out.stderr
    bad = cli("score", str(tmp_path / "r.json"), env={"MODELGEN_MODEL_CMD": "nosuchprogram {input}"})
    assert bad.returncode == 2
    assert "--model-cmd (MODELGEN_MODEL_CMD): program 'nosuchprogram' is not on PATH" in bad.stderr

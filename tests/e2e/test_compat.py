"""Upstream's server.py shape runs unchanged on the files-only protocol through the drop-in module."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelgen_watcher.server.compat import PATH as COMPAT_PATH
from tests.helpers import encode, fake_model_cmd, route

STANDIN = Path(__file__).parent / "upstream_server_standin.py"


@pytest.fixture
def standin(watch_dir):
    env = {**os.environ, "PYTHONPATH": COMPAT_PATH, "MODELGEN_WATCH_DIR": str(watch_dir),
           "MODELGEN_RESULT_TIMEOUT": "20"}
    proc = subprocess.Popen([sys.executable, str(STANDIN)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield port
    proc.terminate()
    proc.wait(10)


def call(port, method, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, "/", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def test_post_then_get_through_the_drop_in(daemon_factory, standin, watch_dir):
    daemon_factory()
    status, body = call(standin, "POST", encode(route(["", "turn-left"])))
    assert status == 200 and json.loads(body) == {"key": "100001"}
    assert (watch_dir / "gps_input_route.100001.json").exists()
    status, body = call(standin, "GET")
    assert status == 200
    result = json.loads(json.loads(body))  # the page's double parse
    assert [p["score"] for p in result["routes"][0]] == [0.939394, 0.911523]


def test_model_failure_raises_instead_of_returning_stale_data(daemon_factory, standin):
    daemon_factory("--model-cmd", fake_model_cmd("ok", "--fail-marked"))
    assert call(standin, "POST", encode(route([""])))[0] == 200
    assert call(standin, "GET")[0] == 200
    assert call(standin, "POST", encode({**route(["turn-left"]), "fail_me": True}))[0] == 200
    status, body = call(standin, "GET")
    assert status == 500
    err = json.loads(body)
    assert err["error"] == "ModelError" and "marked to fail" in err["message"]


def test_drop_in_accepts_upstreams_integer_key(daemon_factory, watch_dir, monkeypatch):
    """Upstream calls retrieve_json_results(100001) with the number it saved under."""
    import importlib
    import sys as _sys

    monkeypatch.setenv("MODELGEN_WATCH_DIR", str(watch_dir))
    monkeypatch.setenv("MODELGEN_RESULT_TIMEOUT", "20")
    monkeypatch.syspath_prepend(COMPAT_PATH)
    _sys.modules.pop("server_api_model", None)
    api = importlib.import_module("server_api_model")
    daemon_factory()
    key, path = api.save_json_file(route(["turn-left"]), "gps_input_route.json", 100001)
    assert key == "100001" and path.endswith("gps_input_route.100001.json")
    assert json.loads(api.retrieve_json_results(100001))["totalScores"] == [0.911523]
    assert api.save_json_file(route([""]), "gps_input_route.json", 0)[0] is None  # 0 is upstream's "no key"
    _sys.modules.pop("server_api_model", None)

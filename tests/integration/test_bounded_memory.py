"""Memory stays bounded whatever an input or a model's output holds.

Before: a 3 MB list of a million ``{}`` took the watcher to 1.2 GB while validating it
(one error object per element). Under the deploy's 512 MiB limit that was an OOM kill,
and the catch-up retried the input at every start: a crash loop. Here the daemon runs
with its address space capped a few hundred MB above its idle size (standing in for
the container's limit), and its peak RSS is read from /proc.
"""

from __future__ import annotations

import json
import resource
from typing import Any

import pytest

from tests.helpers import drop, fake_model_cmd, proc_status, route, sha, wait_final

HEADROOM = 300 * 1024 * 1024
"""Address space allowed above the idle daemon's: allocations past it fail, as at a memory limit."""
PEAK_RSS_KB = 256 * 1024
"""Half the watcher container's limit in deploy/k8s (512 MiB), which also holds the model."""


def _cap_address_space(pid: int) -> None:
    limit = proc_status(pid, "VmSize") * 1024 + HEADROOM
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))


def _step(i: int) -> dict[str, Any]:
    """A step shaped like the browser's: points of its path twice over, a polyline, text."""
    pts = [{"lat": 30.28 + 0.0001 * k, "lng": -97.73 - 0.0001 * k} for k in range(4)]
    return {
        "distance": {"text": "120 m", "value": 120}, "duration": {"text": "1 min", "value": 29},
        "end_location": pts[-1], "start_location": pts[0], "polyline": {"points": "a{~vDx_toQ[?]{@" * 3},
        "path": pts, "lat_lngs": pts, "instructions": f"Turn left onto <b>Street {i}</b>",
        "maneuver": "turn-left" if i % 2 else "", "travel_mode": "BICYCLING",
    }


FLOODS = {
    "a million empty objects": (b'{"routes":[' + b",".join([b"{}"] * 1_000_000) + b"]}", "objects and arrays"),
    "steps without locations": (
        b'{"routes":[{"legs":[{"steps":[' + b",".join([b"{}"] * 1_500_000) + b"]}]}]}", "objects and arrays"),
    "two million numbers": (b'{"routes":[' + b",".join([b"1"] * 2_000_000) + b"]}", "not a route"),
    "100,000 levels deep": (b"[" * 100_000, "nested too deeply"),
    "30,000 valid steps": (
        json.dumps({"routes": [{"legs": [{"steps": [{"end_location": {"lat": 1, "lng": 1}}] * 30_000}]}]}).encode(),
        "steps, over the limit"),
}


@pytest.mark.parametrize("flood", sorted(FLOODS))
def test_a_flood_of_elements_is_refused_within_the_memory_limit(daemon_factory, watch_dir, flood):
    data, words = FLOODS[flood]
    d = daemon_factory(env={"MALLOC_ARENA_MAX": "2"})
    assert d.proc is not None
    _cap_address_space(d.proc.pid)
    st = wait_final(watch_dir, "flood", sha(drop(watch_dir, data, key="flood")), timeout=60)
    assert st["error"]["kind"] == "invalid_input"
    assert words in st["error"]["message"]
    assert proc_status(d.proc.pid, "VmHWM") < PEAK_RSS_KB
    # The daemon is alive and serves the next request.
    raw = drop(watch_dir, route(["", "turn-left"]), key="next")
    assert wait_final(watch_dir, "next", sha(raw))["state"] == "ok"


def test_a_large_valid_route_is_scored_within_the_memory_limit(daemon_factory, watch_dir):
    """A 4.5 MB DirectionsResult (the real shape, 6,500 steps) cost +169 MB before."""
    doc = {"routes": [{"legs": [{"steps": [_step(i) for i in range(6_500)]}]}], "status": "OK"}
    data = json.dumps(doc).encode()
    assert 4_000_000 < len(data) < 5 * 1024 * 1024
    d = daemon_factory(env={"MALLOC_ARENA_MAX": "2"})
    assert d.proc is not None
    _cap_address_space(d.proc.pid)
    st = wait_final(watch_dir, "big", sha(drop(watch_dir, data, key="big")), timeout=60)
    assert st["state"] == "ok", st
    assert proc_status(d.proc.pid, "VmHWM") < PEAK_RSS_KB


def test_a_model_that_prints_a_flood_of_garbage_json_costs_little(daemon_factory, watch_dir):
    """A model's output is decoded with the same bounds (before: 600 KB of garbage JSON, +320 MB)."""
    d = daemon_factory("--model-cmd", fake_model_cmd("hugeoutput"), env={"MALLOC_ARENA_MAX": "2"})
    assert d.proc is not None
    _cap_address_space(d.proc.pid)
    st = wait_final(watch_dir, "out", sha(drop(watch_dir, route([""]), key="out")), timeout=60)
    assert st["error"]["kind"] == "invalid_output"
    assert "objects and arrays" in st["error"]["message"]
    assert proc_status(d.proc.pid, "VmHWM") < PEAK_RSS_KB

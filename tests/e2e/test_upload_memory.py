"""The server validates uploads with the watcher's bounded decoder: a flood of elements costs it little.

Before: one unauthenticated 3 MB POST of a million ``{}`` took the server past 1 GB
(validation errors), killing it at its 256 MiB limit in deploy/k8s.
"""

from __future__ import annotations

import resource

from tests.helpers import proc_status

HEADROOM = 200 * 1024 * 1024
PEAK_RSS_KB = 128 * 1024
"""Half the server container's limit in deploy/k8s (256 MiB)."""


def test_a_million_empty_objects_get_400_and_the_server_stays_small(server_factory):
    server = server_factory()
    pid = server.proc.pid
    limit = proc_status(pid, "VmSize") * 1024 + HEADROOM
    resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
    flood = b'{"routes":[' + b",".join([b"{}"] * 1_000_000) + b"]}"
    resp = server.post_route(flood)
    assert resp.status == 400
    assert "objects and arrays" in resp.json()["message"]
    assert proc_status(pid, "VmHWM") < PEAK_RSS_KB
    assert server.get("/healthz").status == 200


def test_string_coordinates_are_refused_at_upload(server_factory):
    """lat/lng must be numbers: before, "30.2" passed here and failed later in the model."""
    server = server_factory()
    doc = b'{"routes":[{"legs":[{"steps":[{"end_location":{"lat":"30.2","lng":-97.7}}]}]}]}'
    resp = server.post_route(doc)
    assert resp.status == 400
    assert "end_location.lat" in resp.json()["message"]


def test_concurrent_retrieves_of_a_large_result_hold_it_as_bytes(daemon_factory, server_factory):
    """Before: each retrieve parsed the result and serialised it again, about 19 MB at a time for the
    largest result allowed (20,000 points): 30 at once was over half a GB."""
    import json
    import threading

    from modelgen_watcher.volume.decoding import MAX_STEPS

    daemon_factory()
    server = server_factory()
    doc = {"routes": [{"legs": [{"steps": [{"end_location": {"lat": 30.2, "lng": -97.7}, "maneuver": "x"}]
                                 * MAX_STEPS}]}]}
    ack = server.post_route(json.dumps(doc).encode()).json()
    first = server.get(f"/rest/score/retrieve?key={ack['key']}&wait=60")
    assert first.status == 200 and len(first.json()["routes"][0]) == MAX_STEPS
    pid = server.proc.pid
    before = proc_status(pid, "VmHWM")
    answers: list[int] = []

    def fetch() -> None:
        resp = server.get(f"/rest/score/retrieve?key={ack['key']}")
        answers.append(resp.status if resp.body == first.body else -1)

    threads = [threading.Thread(target=fetch) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert answers == [200] * 30  # each the very bytes published
    assert proc_status(pid, "VmHWM") - before < 64 * 1024

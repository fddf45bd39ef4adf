"""The page's paths over HTTP, on a running watcher and server: the page, its samples, the queue, the picture.

What a browser does with them is tests/e2e/test_browser.py's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from modelgen_watcher.picture import VIRIDIS
from tests.e2e.conftest import Server
from tests.helpers import encode, fake_model_cmd, route, sample, wait_for

SVG = "{http://www.w3.org/2000/svg}"


def upload(server: Server, doc: dict[str, Any] | bytes) -> dict[str, Any]:
    resp = server.post_route(doc if isinstance(doc, bytes) else encode(doc))
    assert resp.status == 200, resp.body
    ack: dict[str, Any] = resp.json()
    return ack


def csp_sources(policy: str, directive: str) -> set[str]:
    for part in policy.split(";"):
        words = part.split()
        if words and words[0] == directive:
            return set(words[1:])
    return set()


def test_the_page_is_at_the_root_without_static_files_and_at_ui_always(daemon_factory, server_factory, tmp_path):
    daemon_factory()
    server = server_factory()
    page = server.get("/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert server.get("/ui/").body == server.get("/ui").body == page.body
    html = page.body.decode()
    assert "https://" not in html and "http://" not in html.replace('"http://www.w3.org', "")  # works offline
    # The policy lets exactly the page's own script and style run: nothing injected, nothing fetched elsewhere.
    policy = page.headers["content-security-policy"]
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        assert len(blocks) == 1
        digest = base64.b64encode(hashlib.sha256(blocks[0].encode()).digest()).decode()
        assert csp_sources(policy, directive) == {f"'sha256-{digest}'"}
    assert csp_sources(policy, "default-src") == {"'none'"} and csp_sources(policy, "connect-src") == {"'self'"}
    assert page.headers["x-content-type-options"] == "nosniff"

    static = tmp_path / "static"
    static.mkdir()
    (static / "directions.html").write_text("<html>upstream's page</html>")
    with_static = server_factory("--static-dir", str(static))
    assert with_static.get("/").body == b"<html>upstream's page</html>"
    assert with_static.get("/ui/").body == page.body
    for path in ("/ui/nothing", "/ui/samples/../index.html", "/ui/samples/nothing.json", "/ui/samples/%2e%2e/x",
                 "/ui/samples.json/x"):
        assert server.get(path).status == 404, path


def test_every_sample_is_a_route_the_model_scores(daemon_factory, server_factory):
    daemon_factory()
    server = server_factory()
    listing = server.get("/ui/samples.json").json()
    assert len(listing) >= 3 and any(s["routes"] > 1 for s in listing)
    for s in listing:
        body = server.get(s["url"])
        assert body.status == 200 and body.headers["content-type"] == "application/json"
        ack = upload(server, body.body)
        result = server.get(f"/rest/score/retrieve?key={ack['key']}&wait=20")
        assert result.status == 200, result.body
        doc = result.json()
        assert len(doc["routes"]) == s["routes"] and sum(len(r) for r in doc["routes"]) == s["steps"]
        assert s["title"] and ", TX" not in s["title"]  # the place names only


def test_the_picture_of_a_request_follows_its_state(daemon_factory, server_factory):
    daemon_factory("--model-cmd", fake_model_cmd("ok", "--fail-marked", "--sleep", "3"))
    server = server_factory()
    assert server.get("/ui/picture.svg?key=bad%20key").status == 400
    assert server.get("/ui/picture.svg").status == 400
    assert server.get("/ui/picture.svg?key=nosuchkey").status == 404

    ack = upload(server, route(["", "turn-left", "", "turn-right"], routes=2))
    pending = server.get(f"/ui/picture.svg?key={ack['key']}")
    assert pending.status == 202 and pending.json()["state"] == "pending"
    assert server.get(f"/rest/score/retrieve?key={ack['key']}&wait=20").status == 200
    drawn = server.get(f"/ui/picture.svg?key={ack['key']}")
    assert drawn.status == 200 and drawn.headers["content-type"] == "image/svg+xml; charset=utf-8"
    svg = ET.fromstring(drawn.body)
    routes = svg.findall(f"{SVG}g[@class='route']")
    assert len(routes) == 2
    for g in routes:
        steps = g.findall(f"{SVG}path[@class='step']")
        assert [p.get("data-score") for p in steps] == ["0.9", "0.5", "0.9", "0.5"]  # the fake model's scores
        assert [p.get("stroke") for p in steps] == [VIRIDIS[-1], VIRIDIS[0], VIRIDIS[-1], VIRIDIS[0]]
    assert svg.get("aria-labelledby") == f"route-{ack['key']}-title route-{ack['key']}-desc"

    failed = upload(server, {**route([""]), "fail_me": True})
    assert server.get(f"/rest/score/retrieve?key={failed['key']}&wait=20").status == 502
    resp = server.get(f"/ui/picture.svg?key={failed['key']}")
    assert resp.status == 502 and resp.json()["error"] == "model_failed"


def test_the_queue_lists_the_newest_requests_with_their_outcome(daemon_factory, server_factory):
    daemon_factory("--model-cmd", fake_model_cmd("ok", "--fail-marked"))
    server = server_factory()
    empty = server.get("/ui/queue").json()
    assert empty["requests"] == [] and empty["total"] == 0 and empty["limit"] == 100
    assert empty["watcher"]["ready"] is True
    good = upload(server, route([""]))
    bad = upload(server, {**route([""]), "fail_me": True})
    for ack in (good, bad):
        server.get(f"/rest/score/retrieve?key={ack['key']}&wait=20")

    def final() -> dict[str, Any] | None:
        doc: dict[str, Any] = server.get("/ui/queue").json()
        states = {r["key"]: r["state"] for r in doc["requests"]}
        return doc if states == {good["key"]: "ok", bad["key"]: "error"} else None

    doc = wait_for(final, 10, what="both requests final in the queue")
    rows = {r["key"]: r for r in doc["requests"]}
    assert rows[good["key"]]["input_sha256"] == good["input_sha256"] and rows[good["key"]]["duration_ms"] >= 0
    assert rows[bad["key"]]["error_kind"] == "model_failed"
    assert "marked to fail" in rows[bad["key"]]["error_message"]
    assert doc["total"] == 2
    times = [r["updated_at_ms"] for r in doc["requests"]]
    assert times == sorted(times, reverse=True)  # newest first

    # An open page polls the queue every second: those answers are counted, not logged at info.
    logged = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    paths = {rec.get("path") for rec in logged if rec.get("event") == "http.request"}
    assert "/rest/score/upload" in paths and "/ui/queue" not in paths
    metrics = server.get("/metrics").body.decode()
    list(text_string_to_metric_families(metrics))  # the whole body parses
    assert (sample(metrics, "modelgen_server_http_requests_total", code="200", endpoint="queue") or 0) >= 2
    assert sample(metrics, "modelgen_server_http_request_duration_seconds_count", endpoint="picture") == 0

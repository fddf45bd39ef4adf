"""The watcher and the reference server as subprocesses on one folder, requests over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import encode, fake_model_cmd, proc_status, route, sample, sha, wait_for


def upload(server, doc) -> dict[str, Any]:
    resp = server.post_route(encode(doc))
    assert resp.status == 200, resp.body
    body: dict[str, Any] = resp.json()
    return body


def test_upload_then_retrieve(daemon_factory, server_factory):
    daemon_factory()
    server = server_factory()
    doc = route(["", "turn-left"])
    ack = upload(server, doc)
    assert set(ack) == {"key", "input_sha256"}  # no echo of the body
    assert ack["input_sha256"] == sha(encode(doc))
    resp = server.get(f"/rest/score/retrieve?key={ack['key']}&wait=20")
    assert resp.status == 200
    result = resp.json()
    assert result["meta"]["input_sha256"] == ack["input_sha256"]
    assert [p["score"] for p in result["routes"][0]] == [0.939394, 0.911523]


def test_legacy_get_is_double_encoded_for_upstreams_page(daemon_factory, server_factory):
    daemon_factory()
    server = server_factory()
    assert server.get("/rest/score/retrieve").status == 404  # nothing uploaded yet
    upload(server, route(["turn-left"]))
    resp = server.get("/rest/score/retrieve")
    assert resp.status == 200
    text = resp.body.decode()
    result = json.loads(json.loads(text))  # what the page does: JSON.parse(JSON.parse(text))
    assert result["totalScores"] == [0.911523]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "words"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"routes": [{"legs": []}]}', "application/json", 400, "routes.0.legs"),
        (b'{"routes": []}', "text/plain", 415, "application/json"),
        (b"x" * 2000, "application/json", 413, "over the limit"),
    ],
)
def test_upload_errors(daemon_factory, server_factory, body, ctype, status, words):
    daemon_factory()
    server = server_factory("--max-input-bytes", "1000")
    resp = server.post_route(body, ctype)
    assert resp.status == status
    assert words in resp.json()["message"]


def test_retrieve_errors(daemon_factory, server_factory):
    daemon_factory()
    server = server_factory()
    assert server.get("/rest/score/retrieve?key=bad%20key").status == 400
    assert server.get("/rest/score/retrieve?key=status").status == 400
    assert server.get("/rest/score/retrieve?key=nosuchkey").status == 404
    assert server.get("/rest/score/retrieve?key=abc&wait=-1").status == 400
    assert server.get("/rest/score/retrieve?key=abc&wait=soon").status == 400


def test_pending_answers_202_with_retry_after(daemon_factory, server_factory):
    daemon_factory("--model-cmd", fake_model_cmd("slow", "--sleep", "3"))
    server = server_factory()
    ack = upload(server, route([""]))
    resp = server.get(f"/rest/score/retrieve?key={ack['key']}")
    assert resp.status == 202
    assert resp.headers["retry-after"] == "1"
    assert resp.json()["state"] == "pending"
    assert server.get(f"/rest/score/retrieve?key={ack['key']}&wait=30").status == 200


def test_model_failure_is_502_and_the_next_request_succeeds(daemon_factory, server_factory):
    daemon_factory("--model-cmd", fake_model_cmd("ok", "--fail-marked"))
    server = server_factory()
    bad = upload(server, {**route([""]), "fail_me": True})
    resp = server.get(f"/rest/score/retrieve?key={bad['key']}&wait=20")
    assert resp.status == 502
    assert resp.json()["error"] == "model_failed"
    assert "this route was marked to fail" in resp.json()["message"]
    good = upload(server, route(["turn-left"]))
    resp = server.get(f"/rest/score/retrieve?key={good['key']}&wait=20")
    assert resp.status == 200 and resp.json()["meta"]["input_sha256"] == good["input_sha256"]


def test_watcher_not_alive_is_504(daemon_factory, server_factory):
    d = daemon_factory()
    server = server_factory()
    assert server.get("/readyz").status == 200
    d.stop()
    ack = upload(server, route([""]))
    resp = server.get(f"/rest/score/retrieve?key={ack['key']}&wait=5")
    assert resp.status == 504
    assert server.get("/readyz").status == 503
    assert server.get("/healthz").status == 200


def test_fifty_clients_at_once_each_get_their_own_result(daemon_factory, server_factory):
    daemon_factory("--workers", "2")
    server = server_factory()
    outcomes: dict[int, tuple[int, dict[str, Any]]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(50)

    def client(i: int) -> None:
        try:
            doc = route(["turn-left"] * (i % 5 + 1), lat0=29.0 + i / 1000)
            start.wait(30)
            ack = upload(server, doc)
            assert ack["input_sha256"] == sha(encode(doc))
            resp = server.get(f"/rest/score/retrieve?key={ack['key']}&wait=60", timeout=90)
            outcomes[i] = (resp.status, resp.json() | {"expected_sha": ack["input_sha256"]})
        except BaseException as exc:  # noqa: BLE001 - reported below, with the client's number
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(outcomes) == 50
    for i, (status, result) in outcomes.items():
        assert status == 200, (i, result)
        assert result["meta"]["input_sha256"] == result["expected_sha"]
        assert len(result["routes"][0]) == i % 5 + 1
        assert result["routes"][0][0]["lat"] == 29.0 + i / 1000


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_upstream_style_curl_check(daemon_factory, server_factory, tmp_path):
    """Upstream #25: curl --fail-with-body, then check the body, not just the exit code."""
    daemon_factory()
    server = server_factory()
    src = tmp_path / "route.json"
    src.write_bytes(encode(route(["", "turn-left"])))
    base = f"http://127.0.0.1:{server.port}/rest/score"
    post = subprocess.run(["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json",
                           "--data-binary", f"@{src}", f"{base}/upload"], capture_output=True, text=True, timeout=60)
    assert post.returncode == 0, post.stdout + post.stderr
    key = json.loads(post.stdout)["key"]
    get = subprocess.run(["curl", "-sS", "--fail-with-body", f"{base}/retrieve?key={key}&wait=20"],
                         capture_output=True, text=True, timeout=60)
    assert get.returncode == 0, get.stdout + get.stderr
    assert json.loads(get.stdout)["totalScores"] == [(0.939394 + 0.911523) / 2]
    bad = subprocess.run(["curl", "-sS", "--fail-with-body", f"{base}/retrieve?key=unknown"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 22 and "unknown_key" in bad.stdout


def test_static_files_never_leave_the_folder(daemon_factory, server_factory, tmp_path):
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "directions.html").write_text("<html>page</html>")
    (static / "js" / "app.js").write_text("console.log(1)")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, static / "link.txt")
    os.symlink(tmp_path, static / "up")
    server = server_factory("--static-dir", str(static))
    assert server.get("/").body == b"<html>page</html>"
    resp = server.get("/js/app.js")
    assert resp.status == 200 and "javascript" in resp.headers["content-type"]
    for path in ["/../secret.txt", "/js/../../secret.txt", "/%2e%2e/secret.txt", "/js/%2E%2E/%2e%2e/secret.txt",
                 "//etc/passwd", "/%2Fetc%2Fpasswd", "/link.txt", "/up/secret.txt", "/nothing.html",
                 "/js/..%2f..%2fsecret.txt"]:
        resp = server.request("GET", path)
        assert resp.status == 404, path
        assert b"top secret" not in resp.body and b"root:" not in resp.body


def test_large_static_files_are_streamed_not_held(server_factory, tmp_path):
    """Ten downloads of a 32 MB file at once: the bytes arrive whole, the server's memory stays flat."""
    static = tmp_path / "static"
    static.mkdir()
    blob = os.urandom(32 * 1024 * 1024)
    (static / "tiles.bin").write_bytes(blob)
    server = server_factory("--static-dir", str(static))
    head = server.request("HEAD", "/tiles.bin")
    assert head.status == 200 and head.headers["content-length"] == str(len(blob)) and head.body == b""
    before = proc_status(server.proc.pid, "VmHWM")
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(server.get("/tiles.bin").body)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(bodies) == 10 and all(sha(b) == sha(blob) for b in bodies)
    assert proc_status(server.proc.pid, "VmHWM") - before < 32 * 1024  # kB: less than one copy of the file


def test_without_static_dir_other_gets_are_404(server_factory):
    server = server_factory()
    assert server.get("/").headers["content-type"].startswith("text/html")  # the page (tests/e2e/test_page.py)
    assert server.get("/directions.html").status == 404


def test_metrics_endpoint_serves_server_and_watcher_counters(daemon_factory, server_factory):
    daemon_factory()
    server = server_factory()
    ack = upload(server, route([""]))
    assert server.get(f"/rest/score/retrieve?key={ack['key']}&wait=20").status == 200
    assert server.get("/rest/score/retrieve?key=nosuch").status == 404
    resp = server.get("/metrics")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.body.decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}  # the whole body parses
    assert families["modelgen_server_http_requests"] == "counter"
    assert families["modelgen_server_http_request_duration_seconds"] == "histogram"
    assert families["modelgen_requests"] == "counter"  # the watcher's, from the volume
    assert families["modelgen_model_seconds"] == "histogram"
    assert sample(text, "modelgen_server_http_requests_total", code="200", endpoint="upload") == 1
    assert sample(text, "modelgen_server_http_requests_total", code="404", endpoint="retrieve") == 1
    assert sample(text, "modelgen_server_http_request_duration_seconds_count", endpoint="upload") == 1
    # The watcher's count of the request, once a heartbeat has written it.
    wait_for(lambda: sample(server.get("/metrics").body.decode(), "modelgen_requests_total", outcome="ok") == 1,
             10, what="the watcher's ok request on /metrics")


def test_shared_watchers_each_have_their_series_and_readiness_needs_one(daemon_factory, server_factory, watch_dir):
    env = {"MODELGEN_HEARTBEAT_INTERVAL": "0.5"}
    watchers = [daemon_factory("--shared", "--watcher-id", w, "--claim-lease", "4", "--observer", "polling",
                               "--poll-interval", "0.2", env=env) for w in ("w1", "w2")]
    server = server_factory()
    assert server.get("/readyz").status == 200
    acks = [upload(server, route([""], lat0=30.0 + i * 1e-3)) for i in range(6)]
    for ack in acks:
        assert server.get(f"/rest/score/retrieve?key={ack['key']}&wait=20").status == 200

    def scraped() -> str | None:
        text = server.get("/metrics").body.decode()
        counted = [sample(text, "modelgen_requests_total", outcome="ok", watcher=w) for w in ("w1", "w2")]
        return text if None not in counted and sum(c or 0 for c in counted) == 6 else None

    text = wait_for(scraped, 10, what="both watchers' counts on /metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}  # one family per name: it parses
    assert {s.labels.get("watcher") for s in families["modelgen_ready"].samples} == {"w1", "w2"}
    assert sample(text, "modelgen_claims_total", result="won", watcher="w1") is not None
    assert sample(text, "modelgen_pending_requests") == 0
    for w in watchers:
        w.stop()
    assert server.get("/readyz").status == 503
    wait_for(lambda: sample(server.get("/metrics").body.decode(), "modelgen_pending_requests") == 0, 5)
    upload(server, route(["", "turn-left"]))  # nobody serves it now
    wait_for(lambda: sample(server.get("/metrics").body.decode(), "modelgen_pending_requests") == 1, 10,
             what="the waiting request counted")


def _raw_exchange(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("length", ["-1", "0_71", "abc", "1e3"])
def test_malformed_content_length_is_refused(server_factory, length):
    server = server_factory()
    resp = server.request("POST", "/rest/score/upload", b"{}",
                          {"Content-Type": "application/json", "Content-Length": length})
    assert resp.status == 411


def test_chunked_upload_is_refused(server_factory):
    """Any Transfer-Encoding is a framing error (400, connection closed); 411 is left for a POST with no length."""
    server = server_factory()
    answer = _raw_exchange(server.port, b"POST /rest/score/upload HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    assert answer.count(b"HTTP/1.1 ") == 1


def test_a_get_body_is_never_read_as_a_second_request(server_factory):
    server = server_factory()
    smuggled = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = _raw_exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(smuggled), smuggled))
    assert answer.count(b"HTTP/1.1 ") == 1

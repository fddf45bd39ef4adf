"""The front end's strict head parser: what it accepts, and the status and kind of what it refuses."""

from __future__ import annotations

import pytest

from modelgen_watcher.server.httpfront import MAX_HEADER_LINES, HeadError, parse_head


def head(*lines: str, request_line: str = "GET /x?a=1 HTTP/1.1") -> bytes:
    return ("\r\n".join([request_line, *lines]) + "\r\n\r\n").encode("latin-1")


def refused(data: bytes) -> HeadError:
    with pytest.raises(HeadError) as info:
        parse_head(data)
    return info.value


def test_a_plain_request():
    req = parse_head(head("Host: x", "Content-Length: 12", "X-Empty:", "X-Spaced:  v a l  "))
    assert (req.method, req.target, req.version, req.path, req.query) == ("GET", "/x?a=1", "HTTP/1.1", "/x", "a=1")
    assert req.content_length == 12 and req.length_valid and req.keep_alive and not req.expect_continue
    assert req.headers.get("HOST") == "x" and req.headers.get("x-empty") == "" and req.headers.get("x-spaced") == "v a l"
    assert "content-length" in req.headers and "transfer-encoding" not in req.headers


@pytest.mark.parametrize(("version", "connection", "keep"), [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Keep-Alive, Close", False),
    ("HTTP/1.0", None, False), ("HTTP/1.0", "keep-alive", True),
])
def test_keep_alive_follows_version_and_connection(version, connection, keep):
    lines = [f"Connection: {connection}"] if connection else []
    assert parse_head(head(*lines, request_line=f"GET / {version}")).keep_alive is keep


def test_targets_are_normalised_like_the_standard_library():
    assert parse_head(head(request_line="GET //etc/passwd HTTP/1.1")).path == "/etc/passwd"
    assert parse_head(head(request_line="GET http://h:1/a/b?c=d HTTP/1.1")).target == "/a/b?c=d"
    assert parse_head(head(request_line="GET /a#frag HTTP/1.1")).path == "/a"


def test_an_unparsable_content_length_is_kept_as_unknown_framing():
    req = parse_head(head("Content-Length: 1e3"))
    assert req.content_length is None and not req.length_valid


def test_expect_continue_only_for_http_1_1():
    assert parse_head(head("Expect: 100-Continue")).expect_continue
    assert not parse_head(head("Expect: 100-continue", request_line="GET / HTTP/1.0")).expect_continue


@pytest.mark.parametrize(("data", "status", "kind"), [
    (head("Content-Length: 1", "Content-Length: 2"), 400, "bad_framing"),
    (head("Content-Length: 1", "Content-Length: 1"), 400, "bad_framing"),
    (head("Transfer-Encoding: chunked"), 400, "bad_framing"),
    (head("Transfer-Encoding : chunked"), 400, "bad_header"),
    (head("transfer-encoding: identity"), 400, "bad_framing"),
    (head("Host: a", "Host: b"), 400, "bad_framing"),
    (head("X-A: 1", " folded"), 400, "bad_header"),
    (head("X-A: 1", "\tfolded"), 400, "bad_header"),
    (head("X-A: 1\rX-B: 2"), 400, "bad_line_ending"),
    (head("X-A: 1\nX-B: 2"), 400, "bad_line_ending"),
    (head("X A: 1"), 400, "bad_header"),
    (head("X-A 1"), 400, "bad_header"),
    (head(": 1"), 400, "bad_header"),
    (head("X-A: a\x00b"), 400, "bad_header"),
    (head("X-A: a\x7fb"), 400, "bad_header"),
    (head(request_line="GET /x"), 400, "bad_request_line"),
    (head(request_line="GET  /x HTTP/1.1"), 400, "bad_request_line"),
    (head(request_line="G(T /x HTTP/1.1"), 400, "bad_request_line"),
    (head(request_line="GET /x HTTP/1.1 extra"), 400, "bad_request_line"),
    (head(request_line="GET /x HTTP/2.0"), 505, "http_version_not_supported"),
    (head(request_line="GET x HTTP/1.1"), 400, "bad_request_target"),
    (head(request_line="GET /\xe9 HTTP/1.1"), 400, "bad_request_target"),
    (head(*[f"X-{i}: 1" for i in range(MAX_HEADER_LINES + 1)]), 431, "too_many_headers"),
])
def test_refused(data, status, kind):
    err = refused(data)
    assert (err.status, err.kind) == (status, kind), err.message


def test_exactly_the_header_line_limit_is_accepted():
    assert len(parse_head(head(*[f"X-{i}: 1" for i in range(MAX_HEADER_LINES)])).headers) == MAX_HEADER_LINES


def test_a_refusal_names_the_request_when_its_line_was_read():
    err = refused(head("Content-Length: 1", "Content-Length: 2", request_line="POST /up?k=1 HTTP/1.1"))
    assert (err.method, err.target) == ("POST", "/up?k=1")

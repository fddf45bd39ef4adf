"""The HTTP/1.1 front end: accepts connections, reads bounded request heads without a thread per connection,
dispatches complete requests to bounded pools, and writes every response through one path.

The REST API (``server/http.py``) only ever sees complete, strictly parsed requests; framing, limits and
deadlines live here.
"""

from __future__ import annotations

import email.utils
import errno
import queue
import re
import resource
import selectors
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, BinaryIO, Protocol

from ..logs import get_logger
from ..volume import fsio

log = get_logger(__name__)

MAX_HEAD_BYTES = 16 * 1024
"""Request line plus header lines. Browsers and curl send well under 4 KiB; the standard library
allowed 100 lines of 64 KiB each, so 40 connections could pin 226 MB. Never more is buffered."""

MAX_REQUEST_LINE = 8 * 1024
"""Longest request line (the URL included) before 414; this API's URLs are under 200 bytes."""

MAX_HEADER_LINES = 64
"""Header lines per request before 431: real clients send about 10 to 20."""

LINGER_S = 2.0
"""After an error that may leave request bytes unread, how long they are read and dropped before the
close. Closing at once would make the kernel reset the connection, which can destroy the error
response before the client has read it."""

LINGER_BYTES = 256 * 1024
"""At most this much is read and dropped while lingering, so a client cannot keep us reading."""

ACCEPT_BATCH = 64
"""Connections accepted per wake-up before the selector serves the ones it already has."""

LISTEN_BACKLOG = 1024
"""The kernel's accept queue (capped by net.core.somaxconn): a burst of connections waits there
instead of being reset, and the selector drains it in batches."""

FD_RESERVE = 128
"""File descriptors kept out of the connection cap for pool workers' files, the watch dir observer and logs."""

RETRY_AFTER_S = 1
"""Seconds a client told 503 should wait before trying again (the API's 202 uses it too)."""

SERVER_NAME = "modelgen-watcher"
"""The Server header: the program's name only, no Python or library version to look up exploits for."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # RFC 9110 5.5: no CR, LF, NUL or other controls
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: browsers percent-encode everything else
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_DIGITS = re.compile(r"[0-9]{1,12}")


# -- requests and responses ------------------------------------------------------


class HeadError(Exception):
    """The request head is refused before it reaches the API: ``status``, ``kind``, ``message``."""

    def __init__(self, status: int, kind: str, message: str, *, method: str | None = None,
                 target: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.method, self.target = method, target


class RequestTimeout(Exception):
    """The whole-request deadline passed while the body was still arriving."""


class IncompleteBody(Exception):
    """The client closed the connection (or it broke) before sending the body it announced."""


class Headers:
    """Header fields in arrival order; names compare case-insensitively, values are latin-1 text."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, as the standard library's ``headers.get`` gave it."""
        low = name.lower()
        for key, value in self._fields:
            if key == low:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [value for key, value in self._fields if key == low]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self._fields)


@dataclass
class Request:
    """One strictly parsed request head; ``read_body()`` reads its body within the request's deadline."""

    method: str
    target: str
    version: str
    headers: Headers
    content_length: int | None
    """None when the request has no Content-Length, or one that is not a plain number."""
    length_valid: bool
    """False when a Content-Length was sent but is not a plain number: where the body ends is unknown."""
    keep_alive: bool
    expect_continue: bool
    started: float = 0.0
    _body: _Body | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return split_target(self.target)[0]

    @property
    def query(self) -> str:
        return split_target(self.target)[1]

    def read_body(self) -> bytes:
        """Exactly Content-Length bytes; RequestTimeout or IncompleteBody when they do not all arrive in time."""
        if self._body is None:
            raise RuntimeError("the body of a request can only be read by the worker serving it")
        return self._body.read()


STREAM_CHUNK = 1 << 18
"""Bytes of a streamed file read and sent at a time: what one response holds in memory."""


def _send_before(sock: socket.socket, data: bytes, deadline: float) -> bool:
    """Send all of ``data`` before ``deadline`` (monotonic); False when time ran out."""
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        sent = sock.send(view[:STREAM_CHUNK])
        view = view[sent:]
    return True


@dataclass
class Response:
    """What the API answers; ``log`` holds extra fields for the request's ``http.request`` line."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False
    log: dict[str, Any] = field(default_factory=dict)
    stream: BinaryIO | None = None
    """An open file sent after the head instead of ``body``, ``stream_length`` bytes of it, in
    chunks: a large static file never sits in memory. Closed once sent (or not)."""
    stream_length: int = 0

    @property
    def length(self) -> int:
        return self.stream_length if self.stream is not None else len(self.body)


def json_response(status: int, obj: Any, *, headers: dict[str, str] | None = None, close: bool = False) -> Response:
    return Response(status, fsio.dump_json(obj), headers=dict(headers or {}), close=close)


def error_response(status: int, kind: str, message: str, *, headers: dict[str, str] | None = None,
                   close: bool = False, **extra: Any) -> Response:
    """Every error body has this one shape: ``{"error": kind, "message": ...}``."""
    return json_response(status, {"error": kind, "message": message, **extra}, headers=headers, close=close)


@dataclass(frozen=True)
class Exchange:
    """One answered request, for the API's log line and metrics. ``refused`` when the front end answered it."""

    method: str | None
    path: str | None
    status: int
    duration_s: float
    fields: Mapping[str, Any]
    refused: bool


class App(Protocol):
    """What the front end needs from the API behind it."""

    def classify(self, request: Request) -> str:
        """The name of the pool that serves ``request``."""

    def handle(self, request: Request) -> Response:
        """Answer ``request`` (called on a pool worker; may block up to the request's own limits)."""

    def record(self, exchange: Exchange) -> None:
        """Log and count one response; called once for every response, whoever produced it."""


@dataclass(frozen=True)
class PoolSpec:
    """A pool: ``workers`` requests served at once, ``backlog`` more waiting, then 503."""

    workers: int
    backlog: int
    what: str
    """What its requests are, for the 503's message ("long-polls")."""


# -- parsing ---------------------------------------------------------------------


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of an origin-form target, as ``urllib.parse.urlsplit`` reads them."""
    parts = urllib.parse.urlsplit(target)
    return parts.path, parts.query


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HeadError(400, "bad_request_line", "the request line must be METHOD SP TARGET SP HTTP/1.x")
    method_b, target_b, version_b = parts
    if not _TOKEN.fullmatch(method_b):
        raise HeadError(400, "bad_request_line", "the method is not a token")
    method = method_b.decode("ascii")
    version_m = _VERSION.fullmatch(version_b)
    if not version_m:
        raise HeadError(400, "bad_request_line", "the protocol must be HTTP/1.0 or HTTP/1.1", method=method)
    if version_m.group(1) != b"1":
        raise HeadError(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are spoken here",
                        method=method)
    if not _TARGET.fullmatch(target_b):
        raise HeadError(400, "bad_request_target", "the request target holds spaces, controls or non-ASCII bytes",
                        method=method)
    target = target_b.decode("ascii")
    if target.startswith(("http://", "https://")):  # absolute-form: only its path and query matter here
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    elif not target.startswith("/") and target != "*":
        raise HeadError(400, "bad_request_target", "the request target must start with /", method=method)
    if target.startswith("//"):  # as the standard library does: '//host/x' must not read as a host
        target = "/" + target.lstrip("/")
    return method, target, version_b.decode("ascii")


def parse_head(head: bytes) -> Request:
    """Parse a complete request head (ending in an empty line) strictly, or raise HeadError.

    Strict where lenient parsers disagree with proxies (request smuggling): a field name
    is a token followed at once by ``:``, no obs-fold continuation lines, no bare CR or
    LF, no Transfer-Encoding at all and exactly one Content-Length.
    """
    if not head.endswith(b"\r\n\r\n"):
        raise HeadError(400, "bad_head", "the head must end with an empty line")
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise HeadError(400, "bad_line_ending", "lines must end with CRLF; bare CR or LF is refused")
    method, target, version = _request_line(lines[0])
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise HeadError(431, "too_many_headers", f"more than {MAX_HEADER_LINES} header lines",
                        method=method, target=target)
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "bad_header", "obsolete line folding (a line starting with whitespace) is refused",
                            method=method, target=target)
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HeadError(400, "bad_header", "a header name must be a token followed at once by ':'",
                            method=method, target=target)
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise HeadError(400, "bad_header", f"header {name.decode('ascii')} holds control characters",
                            method=method, target=target)
        fields.append((name.decode("ascii").lower(), value.decode("latin-1")))
    headers = Headers(fields)

    def refuse(message: str) -> HeadError:
        return HeadError(400, "bad_framing", message, method=method, target=target)

    # A proxy and this server must agree where each request ends, or a second request hides in a body.
    if "transfer-encoding" in headers:
        raise refuse("Transfer-Encoding is refused: send the body with one Content-Length")
    lengths = headers.get_all("content-length")
    if len(lengths) > 1:
        raise refuse("more than one Content-Length")
    if len(headers.get_all("host")) > 1:
        raise refuse("more than one Host")
    length: int | None = None
    length_valid = True
    if lengths:
        raw = lengths[0]
        if _DIGITS.fullmatch(raw):
            length = int(raw)
        else:
            length_valid = False
    tokens = {t.strip().lower() for value in headers.get_all("connection") for t in value.split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    expect = (headers.get("expect") or "").lower() == "100-continue" and version == "HTTP/1.1"
    return Request(method, target, version, headers, length, length_valid, keep_alive, expect)


def _problem_so_far(buf: bytearray, new_from: int) -> HeadError | None:
    """Why an incomplete head can already be refused (so nothing more of it is waited for or kept)."""
    if _BARE_LF.search(buf, max(0, new_from - 1)):
        return HeadError(400, "bad_line_ending", "lines must end with CRLF; bare LF is refused")
    line_end = buf.find(b"\r\n")
    if (line_end < 0 and len(buf) > MAX_REQUEST_LINE) or line_end > MAX_REQUEST_LINE:
        return HeadError(414, "uri_too_long", f"the request line is over {MAX_REQUEST_LINE} bytes",
                         method=_partial_method(buf))
    if len(buf) >= MAX_HEAD_BYTES:
        return HeadError(431, "headers_too_large", f"the request head is over {MAX_HEAD_BYTES} bytes",
                         method=_partial_method(buf))
    if buf.count(b"\r\n") > MAX_HEADER_LINES + 1:
        return HeadError(431, "too_many_headers", f"more than {MAX_HEADER_LINES} header lines",
                         method=_partial_method(buf))
    return None


def _partial_method(buf: bytearray) -> str | None:
    word = bytes(buf[:16]).split(b" ", 1)[0]
    return word.decode("ascii") if len(word) < 16 and _TOKEN.fullmatch(word) else None


# -- bodies ------------------------------------------------------------------------


class _Body:
    """Reads exactly one request's body off a blocking socket, every read bounded by the request's deadline.

    It starts with what the selector had already read past the head, and never reads
    past the body, so a pipelined next request stays for the selector.
    """

    def __init__(self, sock: socket.socket, prefix: bytes, request: Request, deadline: float) -> None:
        self._sock, self._request, self._deadline = sock, request, deadline
        length = request.content_length or 0
        self._prefix = prefix[:length]
        self.leftover = prefix[length:]
        self.complete = request.length_valid and length == 0  # an unread body ends the connection
        self._read = False

    def read(self) -> bytes:
        if self._read:
            raise RuntimeError("the body was already read")
        self._read = True
        need = self._request.content_length or 0
        data = bytearray(self._prefix)
        if len(data) < need and self._request.expect_continue:
            self._sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(data) < need:
            try:
                self._sock.settimeout(self._remaining())
                chunk = self._sock.recv(min(need - len(data), 1 << 16))
            except TimeoutError:
                raise RequestTimeout from None
            except OSError as exc:
                raise IncompleteBody(str(exc)) from None
            if not chunk:
                raise IncompleteBody(f"the connection closed after {len(data)} of {need} body bytes")
            data += chunk
        self.complete = self._request.length_valid
        return bytes(data)

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    def _sendall(self, data: bytes) -> None:
        try:
            self._sock.settimeout(self._remaining())
            self._sock.sendall(data)
        except TimeoutError:
            raise RequestTimeout from None
        except OSError as exc:
            raise IncompleteBody(str(exc)) from None


# -- pools -------------------------------------------------------------------------


class _Pool:
    """Up to ``workers`` daemon threads (started as needed) and ``backlog`` waiting jobs; ``submit`` never blocks.

    Daemon threads because a long-poll may wait a minute: a stopping server must not wait for it.
    """

    def __init__(self, name: str, spec: PoolSpec) -> None:
        self.name, self.spec = name, spec
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._pending = 0  # running + waiting

    def submit(self, job: Callable[[], None]) -> bool:
        with self._lock:
            if self._pending >= self.spec.workers + self.spec.backlog:
                return False
            self._pending += 1
            start = self._pending > self._threads and self._threads < self.spec.workers
            if start:
                self._threads += 1
        if start:
            try:
                threading.Thread(target=self._work, name=f"http-{self.name}-{self._threads}", daemon=True).start()
            except RuntimeError as exc:  # no thread to be had (pids.max, RLIMIT_NPROC): give the slot back
                with self._lock:
                    self._threads -= 1
                    orphaned = self._threads == 0
                    if orphaned:
                        self._pending -= 1
                log.error("http.worker_unavailable", pool=self.name, error=str(exc))
                if orphaned:  # no worker would ever take the job: refuse it (503) rather than queue it
                    return False
        self._jobs.put(job)
        return True

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:
                log.exception("http.worker_failed", pool=self.name)
            finally:
                with self._lock:
                    self._pending -= 1


# -- connections -----------------------------------------------------------------------

_HEAD, _IDLE, _LINGER = "head", "idle", "linger"


class _Conn:
    __slots__ = ("buf", "fileno", "linger_left", "since", "sock", "state")

    def __init__(self, sock: socket.socket, state: str, since: float, buf: bytes = b"") -> None:
        self.sock = sock
        self.fileno = sock.fileno()
        self.buf = bytearray(buf)
        self.state = state
        self.since = since  # head: when the request began; idle: when the last response ended; linger: its start
        self.linger_left = LINGER_BYTES


def connection_cap(wanted: int, pools: Mapping[str, PoolSpec]) -> int:
    """``wanted``, lowered so that connections waiting for a head plus every pool's connections fit the fd limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    in_pools = sum(s.workers + s.backlog for s in pools.values())
    return max(8, min(wanted, soft - in_pools - FD_RESERVE))


class HttpFront:
    """One selector thread reads heads; complete requests go to the pool ``app.classify`` names."""

    def __init__(self, host: str, port: int, app: App, pools: Mapping[str, PoolSpec], *,
                 request_timeout: float, head_timeout: float, keepalive_timeout: float,
                 max_connections: int) -> None:
        self._app = app
        self._pools = {name: _Pool(name, spec) for name, spec in pools.items()}
        self.request_timeout = request_timeout
        self.head_timeout = min(head_timeout, request_timeout)
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = connection_cap(max_connections, pools)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._returns: queue.SimpleQueue[tuple[socket.socket, bytes | None]] = queue.SimpleQueue()
        # One ordered dict per state, each in deadline order (all of a state share one timeout).
        self._by_state: dict[str, OrderedDict[int, _Conn]] = {s: OrderedDict() for s in (_LINGER, _IDLE, _HEAD)}
        self._accept_paused_until = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="http-front", daemon=True)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close every connection the selector holds; requests in workers are abandoned."""
        self._stopping.set()
        self._wake()
        self._thread.join(5)
        for conns in self._by_state.values():
            for conn in conns.values():
                conn.sock.close()
            conns.clear()
        self._listener.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # full (a wake-up is already pending) or closed
            pass

    # -- the selector thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self._sel.select(self._next_timeout())
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            for key, _ in events:
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    self._drain_wake()
                elif key.data.sock.fileno() >= 0:  # (not closed to make room earlier in this round)
                    try:
                        self._readable(key.data)
                    except Exception:
                        log.exception("http.front_failed")
                        self._close(key.data)
            self._take_returns()
            self._expire(time.monotonic())

    def _timeouts(self) -> dict[str, float]:
        return {_HEAD: self.head_timeout, _IDLE: self.keepalive_timeout, _LINGER: LINGER_S}

    def _next_timeout(self) -> float:
        now = time.monotonic()
        nearest = 1.0
        for state, limit in self._timeouts().items():
            conns = self._by_state[state]
            if conns:
                first = next(iter(conns.values()))
                nearest = min(nearest, first.since + limit - now)
        if self._accept_paused_until:
            nearest = min(nearest, self._accept_paused_until - now)
        return max(0.0, nearest)

    def _count(self) -> int:
        return sum(len(c) for c in self._by_state.values())

    def _track(self, conn: _Conn, state: str, since: float) -> None:
        conn.state, conn.since = state, since
        self._by_state[state][conn.fileno] = conn

    def _untrack(self, conn: _Conn) -> None:
        conns = self._by_state[conn.state]
        if conns.get(conn.fileno) is conn:  # a closed connection's number may already be a new one's
            del conns[conn.fileno]

    def _close(self, conn: _Conn) -> None:
        self._untrack(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _accept(self) -> None:
        now = time.monotonic()
        if now < self._accept_paused_until:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if not self._evict_one(now):  # every descriptor is in a worker: stop accepting briefly
                        self._pause_accepting(now)
                        return
                    continue
                return  # ECONNABORTED and the like: that one connection is gone
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            while self._count() >= self.max_connections and self._evict_one(now):
                pass
            conn = _Conn(sock, _HEAD, now)
            self._sel.register(sock, selectors.EVENT_READ, conn)
            self._track(conn, _HEAD, now)

    def _pause_accepting(self, now: float) -> None:
        self._accept_paused_until = now + 0.1
        self._sel.unregister(self._listener)

    def _resume_accepting(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, "listen")

    def _evict_one(self, now: float) -> bool:
        """Make room: a lingering connection first, then an idle keep-alive one, then the oldest incomplete head."""
        for state in (_LINGER, _IDLE, _HEAD):
            conns = self._by_state[state]
            if conns:
                conn = next(iter(conns.values()))
                if state == _HEAD and conn.buf:
                    self._refuse(conn, HeadError(
                        503, "too_many_connections",
                        f"{self.max_connections} connections were waiting for their requests; the oldest was dropped",
                        method=_partial_method(conn.buf)), now, linger=False, retry=True)
                else:
                    self._close(conn)
                return True
        return False

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _take_returns(self) -> None:
        """Connections a worker is done with: back to waiting for the next request, or lingering before the close."""
        now = time.monotonic()
        self._resume_accepting(now)
        while True:
            try:
                sock, leftover = self._returns.get_nowait()
            except queue.Empty:
                return
            if self._stopping.is_set():
                sock.close()
                continue
            try:
                sock.setblocking(False)
                conn = _Conn(sock, _IDLE, now, leftover or b"")
                self._sel.register(sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):
                sock.close()
                continue
            while self._count() >= self.max_connections and self._evict_one(now):
                pass
            if leftover is None:
                self._track(conn, _LINGER, now)
            elif leftover:  # the next request was pipelined behind the last one: it began already
                self._track(conn, _HEAD, now)
                try:
                    self._try_head(conn, 0, now)
                except Exception:
                    log.exception("http.front_failed")
                    self._close(conn)
            else:
                self._track(conn, _IDLE, now)

    def _expire(self, now: float) -> None:
        for state, limit in self._timeouts().items():
            conns = self._by_state[state]
            while conns:
                conn = next(iter(conns.values()))
                if conn.since + limit > now:
                    break
                if state == _HEAD and conn.buf:
                    self._refuse(conn, HeadError(
                        408, "request_timeout", f"the request head did not arrive within {self.head_timeout:g} s",
                        method=_partial_method(conn.buf)), now)
                else:
                    self._close(conn)  # nothing of a request was sent: close without an answer

    def _readable(self, conn: _Conn) -> None:
        now = time.monotonic()
        if conn.state == _LINGER:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            conn.linger_left -= len(data)
            if not data or conn.linger_left <= 0:
                self._close(conn)
            return
        try:
            data = conn.sock.recv(MAX_HEAD_BYTES - len(conn.buf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)  # the client went away; a half-sent head has nobody to answer
            return
        if conn.state == _IDLE:  # the next request on a kept-alive connection begins now
            self._untrack(conn)
            self._track(conn, _HEAD, now)
        old = len(conn.buf)
        conn.buf += data
        self._try_head(conn, old, now)

    def _try_head(self, conn: _Conn, old: int, now: float) -> None:
        buf = conn.buf
        while buf.startswith(b"\r\n"):  # RFC 9112 2.2: empty lines before a request line are ignored
            del buf[:2]
            old = 0
        if not buf:
            return
        end = buf.find(b"\r\n\r\n", max(0, old - 3))
        if end < 0:  # (the buffer never holds more than MAX_HEAD_BYTES, so a head that ended fits)
            problem = _problem_so_far(buf, old)
            if problem is not None:
                self._refuse(conn, problem, now)
            return
        head, leftover = bytes(buf[:end + 4]), bytes(buf[end + 4:])
        try:
            request = parse_head(head)
        except HeadError as err:
            self._refuse(conn, err, now)
            return
        request.started = conn.since
        pool = self._pools[self._app.classify(request)]
        self._untrack(conn)
        self._sel.unregister(conn.sock)
        conn.buf = bytearray()
        sock = conn.sock
        if not pool.submit(lambda: self._serve(sock, request, leftover)):
            spec = pool.spec
            busy = error_response(
                503, "overloaded",
                f"too many {spec.what} at once ({spec.workers} served, {spec.backlog} waiting); retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)}, close=True, limit=pool.name)
            self._answer_now(sock, request.method, request.target, busy, conn.since, now, refused=True)
            self._linger_or_close(sock, True)

    def _refuse(self, conn: _Conn, err: HeadError, now: float, *, linger: bool = True, retry: bool = False) -> None:
        """Answer a head the front end will not pass on, from this thread, then close (after lingering)."""
        self._untrack(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
        resp = error_response(err.status, err.kind, err.message, headers=headers, close=True)
        self._answer_now(conn.sock, err.method, err.target, resp, conn.since, now, refused=True)
        conn.buf = bytearray()
        self._linger_or_close(conn.sock, linger)

    def _answer_now(self, sock: socket.socket, method: str | None, target: str | None, resp: Response,
                    started: float, now: float, *, refused: bool) -> None:
        """A small answer written without blocking: it fits in a fresh socket's send buffer, or is dropped."""
        data = self._serialize(method, resp, keep_alive=False)
        try:
            sock.send(data)
        except OSError:
            pass
        self._record(method, target, resp, time.monotonic() - started, refused=refused)

    def _linger_or_close(self, sock: socket.socket, linger: bool) -> None:
        if not linger:
            sock.close()
            return
        try:
            sock.shutdown(socket.SHUT_WR)  # the client sees the answer and then the end of the stream
            sock.setblocking(False)
            conn = _Conn(sock, _LINGER, time.monotonic())
            self._sel.register(sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            sock.close()
            return
        self._track(conn, _LINGER, conn.since)

    # -- workers ----------------------------------------------------------------------

    def _serve(self, sock: socket.socket, request: Request, leftover: bytes) -> None:
        """On a pool worker: the body (if the API reads it), the API's answer, then the connection goes back."""
        body = _Body(sock, leftover, request, request.started + self.request_timeout)
        request._body = body
        try:
            resp = self._app.handle(request)
        except RequestTimeout:
            resp = error_response(408, "request_timeout",
                                  f"the request did not arrive within {self.request_timeout:g} s", close=True)
        except IncompleteBody as exc:
            resp = error_response(400, "incomplete_body", str(exc), close=True)
        except Exception:
            log.exception("http.handler_failed", method=request.method, path=request.path)
            resp = error_response(500, "internal_error", "the server failed to answer this request", close=True)
        keep = request.keep_alive and body.complete and not resp.close
        written = self._write(sock, request, resp, keep)
        self._record(request.method, request.target, resp, time.monotonic() - request.started, refused=False)
        if written and keep:
            self._give_back(sock, body.leftover)
        elif written:
            self._give_back(sock, None)
        else:
            sock.close()

    def _write(self, sock: socket.socket, request: Request, resp: Response, keep: bool) -> bool:
        """The whole answer within one request timeout (a client that reads slowly cannot hold the worker)."""
        deadline = time.monotonic() + self.request_timeout
        try:
            if not _send_before(sock, self._serialize(request.method, resp, keep_alive=keep), deadline):
                return False
            if resp.stream is None or request.method == "HEAD":
                return True
            left = resp.stream_length
            while left > 0:
                chunk = resp.stream.read(min(left, STREAM_CHUNK))
                if not chunk:
                    return False  # the file shrank while sent: the announced length cannot be kept
                if not _send_before(sock, chunk, deadline):
                    return False
                left -= len(chunk)
            return True
        except OSError:
            return False
        finally:
            if resp.stream is not None:
                resp.stream.close()

    def _give_back(self, sock: socket.socket, leftover: bytes | None) -> None:
        if leftover is None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                sock.close()
                return
        self._returns.put((sock, leftover))
        self._wake()

    # -- the one response path ------------------------------------------------------------

    @staticmethod
    def _serialize(method: str | None, resp: Response, *, keep_alive: bool) -> bytes:
        try:
            phrase = HTTPStatus(resp.status).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"HTTP/1.1 {resp.status} {phrase}",
            f"Server: {SERVER_NAME}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {resp.content_type}",
            f"Content-Length: {resp.length}",
            "Cache-Control: no-store",
            *(f"{name}: {value}" for name, value in resp.headers.items()),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if method == "HEAD" or resp.stream is not None else head + resp.body

    def _record(self, method: str | None, target: str | None, resp: Response, duration_s: float, *,
                refused: bool) -> None:
        path = split_target(target)[0] if target is not None else None
        try:
            self._app.record(Exchange(method, path, resp.status, duration_s, resp.log, refused))
        except Exception:
            log.exception("http.record_failed")


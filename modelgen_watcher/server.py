"""The reference server: cyclesafe's REST API spoken through files only (``modelgen-watcher serve``).

Standard library ``ThreadingHTTPServer``: one thread per connection suits requests that
mostly wait on a file, needs no extra dependency, and serves 50+ concurrent clients.
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import fsio, health
from .client import Client, InvalidRoute, ModelError, Submission, WaitTimeout
from .logs import get_logger
from .metrics import Metrics
from .protocol import KEY_PATTERN, MAX_DOCUMENT_BYTES, MAX_STATIC_FILE_BYTES, RESERVED_KEYS, is_valid_key
from .settings import ServerSettings

log = get_logger("modelgen_watcher.server")

UPLOAD_PATH = "/rest/score/upload"
RETRIEVE_PATH = "/rest/score/retrieve"
RETRY_AFTER_S = 1
MAX_CONNECTIONS = 256
_DIGITS = re.compile(r"[0-9]{1,12}")
ENDPOINTS = {UPLOAD_PATH: "upload", RETRIEVE_PATH: "retrieve", "/healthz": "healthz", "/readyz": "readyz",
             "/metrics": "metrics"}


class ScoreServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections when 50 clients arrive at once

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.client = Client(
            settings.watch_dir,
            input_name=settings.input_name,
            output_name=settings.output_name,
            max_input_bytes=settings.max_input_bytes,
        )
        self.static_root = settings.static_dir.resolve() if settings.static_dir else None
        self._last_lock = threading.Lock()
        self._last_upload: Submission | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.metrics = Metrics("modelgen_server")
        self.metrics.describe("http_requests_total", "counter", "HTTP requests answered, by endpoint and status code.")
        super().__init__((settings.host, settings.port), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One thread per connection, but no more than MAX_CONNECTIONS: the rest get a 503 at once."""
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: %d\r\n"
                                b"Connection: close\r\n\r\n" % RETRY_AFTER_S)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def remember_upload(self, sub: Submission) -> None:
        with self._last_lock:
            self._last_upload = sub

    def last_upload(self) -> Submission | None:
        with self._last_lock:
            return self._last_upload

    def watcher_alive(self) -> health.HealthCheck:
        return health.check(self.settings.watch_dir, self.settings.health_max_age)

    def server_close(self) -> None:
        self.client.close()
        super().server_close()


class Handler(BaseHTTPRequestHandler):
    server: ScoreServer
    protocol_version = "HTTP/1.1"
    server_version = "modelgen-watcher"
    timeout = 30  # seconds a connection may sit idle or half-sent before its thread is freed

    # -- plumbing ---------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silenced: every request is logged once, as structured JSON, in ``_send``."""

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.metrics.inc("http_requests_total", endpoint=self._endpoint, code=str(code))
        log.info("http.request", method=self.command, path=self.path.split("?")[0], status=code,
                 duration_ms=int((time.monotonic() - self._t0) * 1000), **self._log_fields)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, fsio.dump_json(obj), headers=headers)

    def _error(self, code: int, kind: str, message: str) -> None:
        self._json(code, {"error": kind, "message": message})

    def _begin(self) -> tuple[str, dict[str, list[str]]]:
        self._t0 = time.monotonic()
        self._log_fields: dict[str, Any] = {}
        url = urllib.parse.urlsplit(self.path)
        self._endpoint = ENDPOINTS.get(url.path, "static")
        return url.path, urllib.parse.parse_qs(url.query, keep_blank_values=True)

    # -- POST ---------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path, _ = self._begin()
        if path != UPLOAD_PATH:
            self.close_connection = True
            return self._error(404, "not_found", f"no such endpoint: POST {path}")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self.close_connection = True
            return self._error(415, "unsupported_media_type", "send the route as Content-Type: application/json")
        raw_length = (self.headers.get("Content-Length") or "").strip()
        if "Transfer-Encoding" in self.headers or not _DIGITS.fullmatch(raw_length):
            # Chunked or unknown lengths are refused: a proxy and this server must agree where a request ends.
            self.close_connection = True
            return self._error(411, "length_required", "send the route with a Content-Length (no chunked encoding)")
        length = int(raw_length)
        if length > self.server.settings.max_input_bytes:
            self.close_connection = True  # the body is not read; the connection cannot be reused
            return self._error(413, "too_large",
                               f"the route is {length} bytes, over the limit of {self.server.settings.max_input_bytes}")
        body = self.rfile.read(length)
        try:
            sub = self.server.client.submit(body)
        except InvalidRoute as exc:
            return self._error(413 if exc.too_large else 400, "too_large" if exc.too_large else "invalid_route",
                               str(exc))
        except OSError as exc:
            return self._error(503, "io_error", f"cannot write to the shared volume: {exc.strerror}")
        self.server.remember_upload(sub)
        self._log_fields = {"key": sub.key, "input_sha256": sub.input_sha256}
        self._json(200, {"key": sub.key, "input_sha256": sub.input_sha256})

    # -- GET ----------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802
        path, query = self._begin()
        if "Transfer-Encoding" in self.headers or (self.headers.get("Content-Length") or "0").strip() != "0":
            self.close_connection = True  # an unread body must not be taken for the next request
        if path == "/healthz":
            return self._json(200, {"status": "ok"})
        if path == "/readyz":
            alive = self.server.watcher_alive()
            return self._json(200 if alive.healthy else 503, {"ready": alive.healthy, "watcher": alive.message})
        if path == RETRIEVE_PATH:
            return self._retrieve(query)
        if path == "/metrics":
            return self._metrics()
        return self._static(path)

    def _metrics(self) -> None:
        """The server's counters, then the watcher's (from its metrics file on the volume)."""
        text = self.server.metrics.render()
        try:
            watcher = fsio.safe_read(self.server.client.layout.metrics_file, MAX_DOCUMENT_BYTES).data.decode()
        except (OSError, fsio.UnsafeFile, UnicodeDecodeError):
            watcher = ""
        self._send(200, (text + watcher).encode(), content_type="text/plain; version=0.0.4; charset=utf-8")

    do_HEAD = do_GET  # noqa: N815

    def _retrieve(self, query: dict[str, list[str]]) -> None:
        settings = self.server.settings
        try:
            wait = float(query.get("wait", ["0"])[-1] or 0)
            if not 0 <= wait <= settings.max_wait:
                raise ValueError
        except ValueError:
            return self._error(400, "bad_request", f"wait must be a number of seconds from 0 to {settings.max_wait:g}")
        if "key" not in query:
            return self._retrieve_legacy(wait if "wait" in query else settings.legacy_wait)
        key = query["key"][-1]
        if not is_valid_key(key):
            return self._error(400, "bad_key", f"key must match {KEY_PATTERN} and not be one of {sorted(RESERVED_KEYS)}")
        try:
            sub = self.server.client.submission_for(key)
        except FileNotFoundError:
            return self._error(404, "unknown_key", f"no request with key {key}")
        except (OSError, fsio.UnsafeFile) as exc:
            return self._error(404, "unknown_key", f"request {key} cannot be read: {exc}")
        self._log_fields = {"key": key, "input_sha256": sub.input_sha256}
        self._answer(sub, wait, legacy=False)

    def _retrieve_legacy(self, wait: float) -> None:
        sub = self.server.last_upload()
        if sub is None:
            return self._error(404, "no_upload", "nothing was uploaded to this server yet")
        self._log_fields = {"key": sub.key, "input_sha256": sub.input_sha256, "legacy": True}
        self._answer(sub, wait, legacy=True)

    def _answer(self, sub: Submission, wait: float, *, legacy: bool) -> None:
        client = self.server.client
        try:
            result = client.poll(sub)
            if result is None:
                alive = self.server.watcher_alive()
                if not alive.healthy:
                    return self._error(504, "watcher_unavailable", f"the model watcher is not running: {alive.message}")
                result = client.wait(sub, wait) if wait > 0 else None
        except ModelError as exc:
            self._log_fields["error_kind"] = exc.kind
            return self._json(502, {"error": exc.kind, "message": exc.message, "key": sub.key,
                                    "input_sha256": sub.input_sha256})
        except WaitTimeout:
            result = None
        if result is None and wait > 0 and not self.server.watcher_alive().healthy:
            return self._error(504, "watcher_unavailable", "the model watcher stopped while the request was pending")
        if result is None:
            return self._json(202, {"state": "pending", "key": sub.key, "input_sha256": sub.input_sha256},
                              headers={"Retry-After": str(RETRY_AFTER_S)})
        if legacy:  # upstream's page runs JSON.parse(JSON.parse(text)): a JSON string holding the JSON
            return self._send(200, json.dumps(json.dumps(result)).encode())
        self._json(200, result)

    # -- static files ---------------------------------------------------------

    def _static(self, path: str) -> None:
        root = self.server.static_root
        target = self._static_target(root, path) if root else None
        if target is None:
            return self._error(404, "not_found", f"no such file: {path}")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        try:
            data = fsio.safe_read(target, MAX_STATIC_FILE_BYTES).data
        except (OSError, fsio.UnsafeFile):
            return self._error(404, "not_found", f"no such file: {path}")
        self._send(200, data, content_type=ctype)

    @staticmethod
    def _static_target(root: Path, path: str) -> Path | None:
        """The file under ``root`` that ``path`` names, or None for anything that would leave it."""
        rel = urllib.parse.unquote(path)
        if "\x00" in rel or "\\" in rel:
            return None
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return None
        candidate = root.joinpath(*parts) if parts else root / "directions.html"
        resolved = candidate.resolve()
        if not resolved.is_relative_to(root) or not resolved.is_file():
            return None
        if candidate.is_symlink() or any(p.is_symlink() for p in candidate.parents if p.is_relative_to(root)):
            return None  # no links at all: what is served is exactly what lies in the folder
        return resolved


def serve(settings: ServerSettings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    import signal

    server = ScoreServer(settings)
    stop_requested = False

    def _stop(*_: object) -> None:  # only a flag: taking a lock in a signal handler can deadlock
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    log.info("server.ready", host=host, port=port, watch_dir=str(settings.watch_dir),
             static_dir=str(server.static_root) if server.static_root else None)
    while not stop_requested:
        time.sleep(0.2)
    log.info("server.stopping")
    server.shutdown()
    server.server_close()
    log.info("server.stopped")
    return 0

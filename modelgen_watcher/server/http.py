"""The reference server: cyclesafe's REST API spoken through files only (``modelgen-watcher serve``).

Connections, framing, limits and deadlines are ``httpfront``'s; this module answers
complete requests. A retrieve mostly waits on a file, so it holds a pool thread, never
the selector that reads request heads.
"""

from __future__ import annotations

import json
import mimetypes
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from ..lifecycle import Lifecycle
from ..logs import get_logger
from ..settings import ServerSettings
from ..volume import fsio, health
from ..volume.names import MAX_DOCUMENT_BYTES, MAX_STATIC_FILE_BYTES, key_problem
from . import ui
from .client import Client, InvalidRoute, ModelError, Submission, WaitTimeout
from .httpfront import RETRY_AFTER_S, Exchange, HttpFront, PoolSpec, Request, Response, error_response
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics, label_watchers

log = get_logger(__name__)

UPLOAD_PATH = "/rest/score/upload"
RETRIEVE_PATH = "/rest/score/retrieve"
ENDPOINTS = {UPLOAD_PATH: "upload", RETRIEVE_PATH: "retrieve", "/healthz": "healthz", "/readyz": "readyz",
             "/metrics": "metrics"}
"""The ``endpoint`` label of each API path; the page's paths are ``ui.endpoint``'s, any other path is
``static``, a request with none ``invalid``."""

POOLS = {
    "probe": PoolSpec(workers=4, backlog=32, what="health probes"),
    "upload": PoolSpec(workers=8, backlog=128, what="uploads"),
    "retrieve": PoolSpec(workers=128, backlog=64, what="retrieves (long-polls)"),
    "other": PoolSpec(workers=16, backlog=64, what="page, static file and metrics requests"),
}
"""Requests served at once (and waiting) per kind, so no kind can take the others' threads.

Probes get a small pool of their own, so ``/healthz`` and ``/readyz`` answer while every
other pool is full. Uploads are few because each holds up to ``--max-input-bytes`` of
body in memory (8 x 5 MiB), but may queue deeply: a queued upload costs only its
socket. Retrieves mostly sleep on a file (up to ``--max-wait``), so they get many
threads; 128 long-polls plus 64 waiting, then 503 + Retry-After."""


class ScoreServer:
    """The REST API: what ``httpfront.HttpFront`` calls for every complete request."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.client = Client(
            settings.watch_dir,
            input_name=settings.input_name,
            output_name=settings.output_name,
            max_input_bytes=settings.max_input_bytes,
        )
        self.static_root = settings.static_dir.resolve() if settings.static_dir else None
        self.ui = ui.Ui(self.client, self.watcher_alive, at_root=self.static_root is None)
        self._last_lock = threading.Lock()
        self._last_upload: Submission | None = None
        self.metrics = ServerMetrics(endpoints=(*ENDPOINTS.values(), *ui.LABELS, "static", "invalid"))
        self.front = HttpFront(settings.host, settings.port, self, POOLS,
                               request_timeout=settings.request_timeout, head_timeout=settings.head_timeout,
                               keepalive_timeout=settings.keepalive_timeout,
                               max_connections=settings.max_connections)
        self.server_address = self.front.address

    # -- what the front end calls ------------------------------------------------

    def classify(self, request: Request) -> str:
        if request.path in ("/healthz", "/readyz") and request.method in ("GET", "HEAD"):
            return "probe"
        if request.method == "POST":
            return "upload"
        if request.path == RETRIEVE_PATH:
            return "retrieve"
        return "other"

    def handle(self, request: Request) -> Response:
        return Handler(self, request).dispatch()

    def record(self, exchange: Exchange) -> None:
        """The one log line and the one metric of every response, including those the front end refused."""
        endpoint = self.endpoint(exchange.path)
        self.metrics.answered(endpoint, exchange.status, exchange.duration_s)
        # A refusal (by the front end, or a 4xx from the API) and a failure (5xx) are warnings; the rest info,
        # but for what an open page polls every second.
        if exchange.refused or exchange.status >= 400:
            emit = log.warning
        else:
            emit = log.debug if endpoint in ui.POLLED else log.info
        emit("http.request", method=exchange.method, path=exchange.path, status=exchange.status,
             duration_ms=int(exchange.duration_s * 1000), **exchange.fields)

    def endpoint(self, path: str | None) -> str:
        """The ``endpoint`` label of a request's path (``invalid`` when it had none)."""
        if path is None:
            return "invalid"
        if path in ENDPOINTS:
            return ENDPOINTS[path]
        return self.ui.endpoint(path) if self.ui.handles(path) else "static"

    # -- shared state ---------------------------------------------------------------

    def remember_upload(self, sub: Submission) -> None:
        with self._last_lock:
            self._last_upload = sub

    def last_upload(self) -> Submission | None:
        with self._last_lock:
            return self._last_upload

    def watcher_alive(self) -> health.HealthCheck:
        return health.check(self.settings.watch_dir, self.settings.health_max_age)

    def start(self) -> None:
        self.front.start()

    def close(self) -> None:
        self.front.close()
        self.client.close()


class Handler:
    """One request's answer. Every method returns the Response; the front end writes, logs and counts it."""

    def __init__(self, server: ScoreServer, request: Request) -> None:
        self.server = server
        self.request = request
        self.command = request.method
        self.headers = request.headers
        self._log_fields: dict[str, Any] = {}

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None, close: bool = False) -> Response:
        return Response(code, body, content_type, dict(headers or {}), close, self._log_fields)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None, close: bool = False) -> Response:
        return self._send(code, fsio.dump_json(obj), headers=headers, close=close)

    def _error(self, code: int, kind: str, message: str, close: bool = False) -> Response:
        resp = error_response(code, kind, message, close=close)
        resp.log = self._log_fields
        return resp

    def dispatch(self) -> Response:
        path = self.request.path
        query = urllib.parse.parse_qs(self.request.query, keep_blank_values=True)
        if self.command == "POST":
            return self._post(path)
        if self.command in ("GET", "HEAD"):
            return self._get(path, query)
        return self._error(501, "not_implemented", f"method {self.command} is not supported")

    # -- POST ---------------------------------------------------------------

    def _post(self, path: str) -> Response:
        # Every early answer leaves the body unread, so the front end closes the connection after it.
        if path != UPLOAD_PATH:
            return self._error(404, "not_found", f"no such endpoint: POST {path}")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return self._error(415, "unsupported_media_type", "send the route as Content-Type: application/json")
        length = self.request.content_length
        if length is None:  # missing, or not a plain number (Transfer-Encoding never gets this far)
            return self._error(411, "length_required", "send the route with a Content-Length (no chunked encoding)",
                               close=True)
        if length > self.server.settings.max_input_bytes:
            return self._error(413, "too_large",
                               f"the route is {length} bytes, over the limit of {self.server.settings.max_input_bytes}")
        body = self.request.read_body()
        try:
            sub = self.server.client.submit(body)
        except InvalidRoute as exc:
            return self._error(413 if exc.too_large else 400, "too_large" if exc.too_large else "invalid_route",
                               str(exc))
        except OSError as exc:
            return self._error(503, "io_error", f"cannot write to the shared volume: {exc.strerror}")
        self.server.remember_upload(sub)
        self._log_fields = {"key": sub.key, "input_sha256": sub.input_sha256}
        return self._json(200, {"key": sub.key, "input_sha256": sub.input_sha256})

    # -- GET ----------------------------------------------------------------

    def _get(self, path: str, query: dict[str, list[str]]) -> Response:
        # A GET's body is never read, so the front end closes a connection that announced one.
        if path == "/healthz":
            return self._json(200, {"status": "ok"})
        if path == "/readyz":
            alive = self.server.watcher_alive()
            return self._json(200 if alive.healthy else 503, {"ready": alive.healthy, "watcher": alive.message})
        if path == RETRIEVE_PATH:
            return self._retrieve(query)
        if path == "/metrics":
            return self._metrics()
        if self.server.ui.handles(path):
            return self.server.ui.answer(path, query)
        return self._static(path)

    def _metrics(self) -> Response:
        """The server's series (with the pending requests counted now), then the watcher's from its metrics file
        on the volume, or, in shared mode, every live watcher's, labelled with its id."""
        server = self.server
        try:
            server.metrics.pending.set(server.ui.recent.pending())
        except OSError:
            pass  # the watch dir cannot be listed: the last count stands, /readyz says why
        own = server.metrics.render()
        layout = server.client.layout
        live = health.live_watchers(server.settings.watch_dir, server.settings.health_max_age)
        if live:
            watchers = label_watchers([(wid, _text(layout.watcher_metrics(wid))) for wid in live])
        else:
            watchers = _text(layout.metrics_file).encode()
        return self._send(200, own + watchers, content_type=METRICS_CONTENT_TYPE)

    def _retrieve(self, query: dict[str, list[str]]) -> Response:
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
        problem = key_problem(key)
        if problem:
            return self._error(400, "bad_key", problem)
        try:
            sub = self.server.client.submission_for(key)
        except FileNotFoundError:
            return self._error(404, "unknown_key", f"no request with key {key}")
        except (OSError, fsio.UnsafeFile) as exc:
            return self._error(404, "unknown_key", f"request {key} cannot be read: {exc}")
        self._log_fields = {"key": key, "input_sha256": sub.input_sha256}
        return self._answer(sub, wait, legacy=False)

    def _retrieve_legacy(self, wait: float) -> Response:
        sub = self.server.last_upload()
        if sub is None:
            return self._error(404, "no_upload", "nothing was uploaded to this server yet")
        self._log_fields = {"key": sub.key, "input_sha256": sub.input_sha256, "legacy": True}
        return self._answer(sub, wait, legacy=True)

    def _answer(self, sub: Submission, wait: float, *, legacy: bool) -> Response:
        client = self.server.client
        try:
            result = client.poll_raw(sub)
            if result is None:
                alive = self.server.watcher_alive()
                if not alive.healthy:
                    return self._error(504, "watcher_unavailable", f"the model watcher is not running: {alive.message}")
                result = client.wait_raw(sub, wait) if wait > 0 else None
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
            return self._send(200, json.dumps(result.decode("utf-8")).encode())
        return self._send(200, result)  # the published bytes, as read and checked: never parsed twice

    # -- static files ---------------------------------------------------------

    def _static(self, path: str) -> Response:
        root = self.server.static_root
        target = self._static_target(root, path) if root else None
        if target is None:
            return self._error(404, "not_found", f"no such file: {path}")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        try:
            stream, length = fsio.open_regular(target, MAX_STATIC_FILE_BYTES)
        except (OSError, fsio.UnsafeFile):
            return self._error(404, "not_found", f"no such file: {path}")
        return Response(200, content_type=ctype, headers={}, log=self._log_fields, stream=stream, stream_length=length)

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


def _text(path: Path) -> str:
    """A metrics textfile from the volume; empty when missing or unreadable."""
    try:
        return fsio.safe_read(path, MAX_DOCUMENT_BYTES).data.decode()
    except (OSError, fsio.UnsafeFile, UnicodeDecodeError):
        return ""


def serve(settings: ServerSettings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. Only the main thread can receive signals."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve() waits for SIGTERM/SIGINT and must run in the main thread")
    server = ScoreServer(settings)
    with Lifecycle() as life:
        server.start()
        host, port = server.server_address
        log.info("server.ready", host=host, port=port, watch_dir=str(settings.watch_dir),
                 static_dir=str(server.static_root) if server.static_root else None)
        reason = life.wait()
        log.info("server.stopping", reason=reason)
        server.close()
    log.info("server.stopped")
    return 0

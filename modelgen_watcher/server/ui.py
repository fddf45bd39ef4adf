"""The page to look at (``/ui/``, and ``/`` without ``--static-dir``) and the small endpoints behind it.

The page (``ui/index.html``) is one self-contained file: no CDN, no framework, no build
step. It uploads a route through the REST API like any client, waits on ``retrieve``,
then shows the picture this module renders with ``picture`` (the one drawing of a
result, which ``score --svg`` writes too) and a table built from the result; beside
it, the queue from ``/ui/queue`` every second. Everything is read from the package
once, at start, so serving the page costs no file access.

| path | answer |
| --- | --- |
| ``/ui/`` (``/ui``) | the page, with a Content-Security-Policy naming its one script and style by hash |
| ``/ui/samples.json`` | the bundled sample routes: name, title, routes, steps |
| ``/ui/samples/NAME.json`` | one sample route (a DirectionsResult) |
| ``/ui/queue`` | the newest requests on the volume (``volume/queue.py``) and the watcher's health |
| ``/ui/picture.svg?key=K`` | the result of K drawn (200), 202 pending, 502 the model failed, 400/404 as retrieve |
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .. import picture
from ..volume import fsio
from ..volume.decoding import DecodeError, decode_route
from ..volume.health import HealthCheck
from ..volume.names import key_problem
from ..volume.queue import RecentRequests
from .client import Client, ModelError
from .httpfront import RETRY_AFTER_S, Response, error_response, json_response

PREFIX = "/ui"
PAGE_PATHS = frozenset({PREFIX, PREFIX + "/"})
SAMPLES_PATH = PREFIX + "/samples.json"
SAMPLE_PREFIX = PREFIX + "/samples/"
QUEUE_PATH = PREFIX + "/queue"
PICTURE_PATH = PREFIX + "/picture.svg"

ENDPOINTS = {QUEUE_PATH: "queue", PICTURE_PATH: "picture"}
"""The ``endpoint`` metric label of the page's data endpoints; the page and its samples are ``ui``."""
LABELS = (*ENDPOINTS.values(), "ui")
POLLED = frozenset({"queue"})
"""Endpoints an open page asks every second: answered, they log at debug, or one open page would write a line a
second all day (refusals and failures still log as warnings, and every answer is counted in the metrics)."""

SVG_TYPE = "image/svg+xml; charset=utf-8"
HARDENING = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True)
class Sample:
    name: str
    title: str
    routes: int
    steps: int
    body: bytes


def _inline_hashes(html: str, tag: str) -> list[str]:
    """CSP source expressions for every inline ``<tag>`` block: the browser runs exactly these, nothing injected."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks]


def page_headers(html: str) -> dict[str, str]:
    """The page's headers: a policy allowing its own script and style, requests to this origin, nothing else."""
    policy = "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(_inline_hashes(html, "script")),
        "style-src " + " ".join(_inline_hashes(html, "style")),
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return {"Content-Security-Policy": policy, **HARDENING}


def load_samples() -> dict[str, Sample]:
    """The bundled sample routes, by name (the file's stem); each is checked as the server would check an upload."""
    folder = resources.files(__package__ or "modelgen_watcher.server") / "ui" / "samples"
    found: dict[str, Sample] = {}
    for item in sorted(folder.iterdir(), key=lambda i: i.name):
        if not item.name.endswith(".json"):
            continue
        body = item.read_bytes()
        doc = decode_route(body, what=f"sample {item.name}")
        request = (doc.model_extra or {}).get("request")
        origin = request.get("origin") if isinstance(request, dict) else None
        destination = request.get("destination") if isinstance(request, dict) else None
        name = item.name.removesuffix(".json")
        if isinstance(origin, str) and isinstance(destination, str):  # "UT Tower, Austin, TX": the place, no town
            title = f"{origin.split(',')[0]} to {destination.split(',')[0]}"
        else:
            title = name.replace("-", " ")
        steps = sum(len(r.legs[0].steps) for r in doc.routes)
        found[name] = Sample(name, title, len(doc.routes), steps, body)
    return found


class Ui:
    """Answers the page's paths; ``handles(path)`` says which those are."""

    def __init__(self, client: Client, watcher_alive: Callable[[], HealthCheck], *, at_root: bool) -> None:
        self.client = client
        self.watcher_alive = watcher_alive
        self.at_root = at_root
        html = (resources.files(__package__ or "modelgen_watcher.server") / "ui" / "index.html").read_text("utf-8")
        self.page = html.encode()
        self.headers = page_headers(html)
        self.samples = load_samples()
        self.listing = fsio.dump_json([
            {"name": s.name, "title": s.title, "routes": s.routes, "steps": s.steps,
             "url": f"{SAMPLE_PREFIX}{s.name}.json"} for s in self.samples.values()
        ])
        self.recent = RecentRequests(client.layout)

    def handles(self, path: str) -> bool:
        return path in PAGE_PATHS or path.startswith(PREFIX + "/") or (self.at_root and path == "/")

    def endpoint(self, path: str) -> str:
        """The metric label of a path this object handles."""
        return ENDPOINTS.get(path, "ui")

    def answer(self, path: str, query: dict[str, list[str]]) -> Response:
        if path in PAGE_PATHS or path == "/":
            return Response(200, self.page, "text/html; charset=utf-8", dict(self.headers))
        if path == SAMPLES_PATH:
            return Response(200, self.listing, headers=dict(HARDENING))
        if path.startswith(SAMPLE_PREFIX):
            sample = self.samples.get(path[len(SAMPLE_PREFIX):].removesuffix(".json"))
            if sample is not None and path.endswith(".json"):
                return Response(200, sample.body, headers=dict(HARDENING))
        if path == QUEUE_PATH:
            return self._queue()
        if path == PICTURE_PATH:
            return self._picture(query)
        return error_response(404, "not_found", f"no such page: {path}")

    def _queue(self) -> Response:
        try:
            snap = self.recent.read()
        except OSError as exc:
            return error_response(503, "io_error", f"cannot list the shared volume: {exc.strerror}")
        alive = self.watcher_alive()
        return json_response(200, {
            "requests": [e.as_json() for e in snap.entries],
            "shown": len(snap.entries),
            "total": snap.total,
            "limit": self.recent.limit,
            "watcher": {"ready": alive.healthy, "message": alive.message},
        })

    def _picture(self, query: dict[str, list[str]]) -> Response:
        key = query.get("key", [""])[-1]
        problem = key_problem(key)
        if problem:
            return error_response(400, "bad_key", problem)
        log: dict[str, Any] = {"key": key}
        try:
            sub, input_raw = self.client.read_input(key)
        except FileNotFoundError:
            return _with_log(error_response(404, "unknown_key", f"no request with key {key}"), log)
        except (OSError, fsio.UnsafeFile) as exc:
            return _with_log(error_response(404, "unknown_key", f"request {key} cannot be read: {exc}"), log)
        log["input_sha256"] = sub.input_sha256
        try:
            found = self.client.poll_scored(sub)
        except ModelError as exc:
            log["error_kind"] = exc.kind
            return _with_log(json_response(502, {"error": exc.kind, "message": exc.message, "key": key,
                                                 "input_sha256": sub.input_sha256}), log)
        if found is None:
            return _with_log(json_response(202, {"state": "pending", "key": key, "input_sha256": sub.input_sha256},
                                           headers={"Retry-After": str(RETRY_AFTER_S)}), log)
        try:
            starts = picture.route_starts(decode_route(input_raw))
        except DecodeError:
            starts = []  # (it was checked when submitted; replaced since by a writer of its own) no starts then
        svg = picture.render(found[1], starts, id_prefix=f"route-{key}")
        headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'", **HARDENING}
        return Response(200, svg.encode(), SVG_TYPE, headers, log=log)


def _with_log(resp: Response, log: dict[str, Any]) -> Response:
    resp.log = log
    return resp


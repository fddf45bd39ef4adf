"""Fixtures for end-to-end tests: a watcher and the reference server on one temp dir, over real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.helpers import wait_for


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """``modelgen-watcher serve`` on a free port, its JSON log in a file."""

    def __init__(self, watch_dir: Path, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelgen_watcher", "serve", "--watch-dir", str(watch_dir), "--port", "0", *args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "MODELGEN_LOG_FORMAT": "json"},
        )
        self.port = wait_for(self._port, 30, what="server ready")

    def _port(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited: {self.log_path.read_text()}")
        for line in self.log_path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("event") == "server.ready":
                return int(rec["port"])
        return None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post_route(self, data: bytes, content_type: str = "application/json") -> Response:
        return self.request("POST", "/rest/score/upload", data, {"Content-Type": content_type})

    def get(self, path: str, timeout: float = 60) -> Response:
        return self.request("GET", path, timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class ServerFactory(Protocol):
    """The ``server_factory`` fixture: a started ``Server`` on the test's watch dir, with extra ``serve`` flags."""

    def __call__(self, *args: str) -> Server: ...


@pytest.fixture
def server_factory(watch_dir: Path, tmp_path: Path) -> Iterator[ServerFactory]:
    servers: list[Server] = []

    def make(*args: str) -> Server:
        s = Server(watch_dir, tmp_path / f"server-{time.monotonic_ns()}.log", *args)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()

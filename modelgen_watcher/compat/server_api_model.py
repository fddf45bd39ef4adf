"""A drop-in for upstream cyclesafe's ``server_api_model``, speaking the file protocol.

Upstream's ``server.py`` imports this module and calls ``save_json_file`` on POST and
``retrieve_json_results`` on GET. Here neither imports model.py nor runs a hook: the
route is published for the watcher, and the answer is read back, checked by hash.
Settings come from the environment: ``MODELGEN_WATCH_DIR`` (default ``/data`` when it
exists, else ``./data``), ``MODELGEN_INPUT_NAME``, ``MODELGEN_OUTPUT_NAME``, and
``MODELGEN_RESULT_TIMEOUT`` (seconds a GET waits, default 60).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from modelgen_watcher.client import Client, ModelError, Submission, WaitTimeout
from modelgen_watcher.protocol import DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME, is_valid_key

__all__ = ["ModelError", "WaitTimeout", "retrieve_json_results", "save_json_file"]

_lock = threading.Lock()
_client: Client | None = None
_submissions: dict[str | None, Submission] = {}


def _watch_dir() -> Path:
    env = os.environ.get("MODELGEN_WATCH_DIR")
    if env:
        return Path(env)
    return Path("/data") if Path("/data").is_dir() else Path("data")


def _get_client() -> Client:
    global _client
    with _lock:
        if _client is None:
            _client = Client(
                _watch_dir(),
                input_name=os.environ.get("MODELGEN_INPUT_NAME", DEFAULT_INPUT_NAME),
                output_name=os.environ.get("MODELGEN_OUTPUT_NAME", DEFAULT_OUTPUT_NAME),
            )
        return _client


def save_json_file(response_json: Any, filename: str | None = None, genkey: Any = True) -> tuple[str | None, str]:
    """Publish the posted route; returns ``(key, filepath)``.

    ``genkey``: true for a fresh key, a string or number to use as the key, false or
    None for upstream's single-user name. ``filename`` is accepted for upstream's
    signature; the names on the volume are the watcher's (``MODELGEN_INPUT_NAME``).
    Raises ``modelgen_watcher.client.InvalidRoute`` for a route that cannot be scored.
    """
    if genkey is True:
        key: str | None = ""
    elif genkey is False or genkey is None:
        key = None
    else:
        key = str(genkey)
        if not is_valid_key(key):
            raise ValueError(f"invalid key {key!r}")
    client = _get_client()
    sub = client.submit(response_json, key=key)
    with _lock:
        _submissions[sub.key] = sub
    return sub.key, str(client.layout.input(sub.key))


def retrieve_json_results(key: str | None = None) -> str:
    """The scored route for ``key`` as a JSON string; raises ModelError or WaitTimeout, never stale data.

    Upstream's server ``json.dumps`` this string once more, which is the double-encoded
    form its page parses.
    """
    client = _get_client()
    with _lock:
        sub = _submissions.get(key)
    if sub is None:  # submitted by another process: the input on the volume defines the hash
        from modelgen_watcher import fsio

        data = client.layout.input(key).read_bytes()
        sub = Submission(key=key, input_sha256=fsio.sha256_hex(data))
    result = client.wait(sub, timeout=float(os.environ.get("MODELGEN_RESULT_TIMEOUT", "60")))
    return json.dumps(result)

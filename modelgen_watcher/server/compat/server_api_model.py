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
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelgen_watcher.server.client import Client, ModelError, Submission, WaitTimeout
from modelgen_watcher.settings import ServerSettings, describe_error
from modelgen_watcher.volume.names import is_valid_key

__all__ = ["ModelError", "WaitTimeout", "retrieve_json_results", "save_json_file"]

_lock = threading.Lock()
_client: Client | None = None
_submissions: OrderedDict[str | None, Submission] = OrderedDict()
_REMEMBERED = 1024


def _get_client() -> Client:
    """One client per process, configured like ``serve``: the same MODELGEN_* settings and checks."""
    global _client
    with _lock:
        if _client is None:
            try:
                settings = ServerSettings()
            except ValidationError as exc:
                raise ValueError(describe_error(exc)) from None
            watch_dir = settings.watch_dir
            if "watch_dir" not in settings.model_fields_set and Path("/data").is_dir():
                watch_dir = Path("/data")  # upstream's volume, where the images mount it
            _client = Client(
                watch_dir,
                input_name=settings.input_name,
                output_name=settings.output_name,
                max_input_bytes=settings.max_input_bytes,
            )
        return _client


def save_json_file(response_json: Any, filename: str | None = None, genkey: Any = True) -> tuple[str | None, str]:
    """Publish the posted route; returns ``(key, filepath)``.

    ``genkey``: ``True`` for a fresh key, a non-empty string or a non-zero number to
    use as the key (upstream's static 100001), anything false (``False``, ``None``,
    ``0``, ``""``) for upstream's single-user name. ``filename`` is accepted for upstream's
    signature; the names on the volume are the watcher's (``MODELGEN_INPUT_NAME``).
    Raises ``modelgen_watcher.server.client.InvalidRoute`` for a route that cannot be scored.
    """
    key: str | None
    if genkey is True:
        key = ""
    elif not genkey:
        key = None
    else:
        key = _key(genkey)
    client = _get_client()
    sub = client.submit(response_json, key=key)
    with _lock:
        _submissions[sub.key] = sub
        _submissions.move_to_end(sub.key)
        while len(_submissions) > _REMEMBERED:
            _submissions.popitem(last=False)
    return sub.key, str(client.layout.input(sub.key))


def _key(value: Any) -> str | None:
    """Upstream passes keys as numbers or strings; None means the single-user name."""
    if value is None:
        return None
    key = str(value)
    if not is_valid_key(key):
        raise ValueError(f"invalid key {key!r}")
    return key


def retrieve_json_results(key: Any = None) -> str:
    """The scored route for ``key`` as a JSON string; raises ModelError or WaitTimeout, never stale data.

    Upstream's server ``json.dumps`` this string once more, which is the double-encoded
    form its page parses.
    """
    client = _get_client()
    name = _key(key)
    with _lock:
        sub = _submissions.get(name)
    if sub is None:  # submitted by another process: the input on the volume defines the hash
        sub = client.submission_for(name)
    result = client.wait(sub, timeout=float(os.environ.get("MODELGEN_RESULT_TIMEOUT", "60")))
    return json.dumps(result)

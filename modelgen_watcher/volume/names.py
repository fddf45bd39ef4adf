"""The shared volume's names: which file is an input, a result or a status, and for which key.

Watcher, client and server all derive names here, so the three can never disagree
about what `gps_scored_route.<key>.status.json` belongs to.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

DEFAULT_INPUT_NAME = "gps_input_route.json"
DEFAULT_OUTPUT_NAME = "gps_scored_route.json"

KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_KEY_RE = re.compile(KEY_PATTERN)
RESERVED_KEYS = frozenset({"status"})

DEFAULT_MAX_INPUT_BYTES = 5 * 1024 * 1024
"""The default cap on an input route, for the watcher, the client and the server alike."""
MAX_RESULT_BYTES = 8 * 1024 * 1024
"""The cap on a model's output and a published result. A result has one point per step
(at most ``decoding.MAX_STEPS``, about 2 MB even pretty-printed and double-encoded), and
parsing costs up to ~12 bytes of memory per byte, so a larger cap only buys memory."""
MAX_STATIC_FILE_BYTES = 64 * 1024 * 1024
"""The cap on a file the reference server serves from ``--static-dir``."""
MAX_DOCUMENT_BYTES = 1024 * 1024
"""The cap on small documents of our own: status, health, metrics."""

STATE_DIR = ".modelgen"
"""The watcher's private area under the watch dir (health, workspace, temp files)."""
WATCHER_TEMP_PREFIX = ".modelgen-"
"""Top-level temp files of the watcher; every one is stale at start."""
CLIENT_TEMP_PREFIX = ".client-"
"""Temp files of writers using the client library (dot-files the watcher ignores)."""
HEALTH_FILE = "health.json"
METRICS_FILE = "metrics.prom"
LOCK_FILE = "lock"
WORKSPACE_DIR = "workspace"
TMP_DIR = "tmp"
INFLIGHT_DIR = "inflight"
INFLIGHT_SLOT_PREFIX = "slot-"
"""The in-flight records in ``inflight/``: ``slot-<life>-<n>``, one per request in the watcher's hands, rewritten in
place (``watcher/inflight.py``); any other name there is a marker of an earlier version, named by its input."""
PARKED_DIR = "parked"
"""Markers of requests at rest since a start counted them, or given up (``watcher/inflight.py``)."""
RUN_DIR = "run"
WATCHERS_DIR = "watchers"
"""Shared mode: each watcher's heartbeat (``<id>.json``), metrics (``<id>.prom``) and private area (``<id>/``)."""
CLAIMS_DIR = "claims"
"""Shared mode: who serves which request (``volume/claims.py``)."""
CLOCK_FILE = "clock"
"""Shared mode: the file a watcher touches to read the volume's clock (``claims.VolumeClock``)."""
MODEL_OUTPUT_PREFIX = "modelgen-out-"
MODEL_INPUT_PREFIX = "modelgen-in-"
"""The model's copy of a request's input: in ``.modelgen/tmp`` for a process per request, in a warm worker's
own workspace for a warm worker (which writes it)."""
WORKER_WORKSPACE_PREFIX = "w"
"""A warm worker's own workspace is ``<workspace>/w<n>`` (``runners.warm``)."""


def worker_workspace_slot(name: str) -> int | None:
    """The worker slot whose workspace a directory of this name under the workspace is, else None."""
    digits = name[len(WORKER_WORKSPACE_PREFIX):] if name.startswith(WORKER_WORKSPACE_PREFIX) else ""
    return int(digits) if digits.isdigit() and digits.isascii() else None

WATCHER_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_WATCHER_ID_RE = re.compile(WATCHER_ID_PATTERN)
_WATCHER_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def watcher_id_problem(value: str) -> str | None:
    """Why ``value`` cannot name a watcher (it names files and a directory under ``.modelgen/watchers/``)."""
    return None if _WATCHER_ID_RE.fullmatch(value) else f"must match {WATCHER_ID_PATTERN}, got {value!r}"


def default_watcher_id(hostname: str | None = None) -> str:
    """The host name made a valid watcher id: other characters become ``-``, leading ones that cannot start an
    id are dropped, at most 64 kept. A pod's host name is its name, a container's its id: one per watcher."""
    name = socket.gethostname() if hostname is None else hostname
    cleaned = _WATCHER_ID_BAD.sub("-", name).lstrip("-_.")[:64]
    return cleaned or "watcher"


def is_valid_key(key: str) -> bool:
    """True for a key that may appear in a file name (and is not reserved)."""
    return bool(_KEY_RE.fullmatch(key)) and key not in RESERVED_KEYS


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a request, in words for an error message; None when it can."""
    if is_valid_key(key):
        return None
    return f"key must match {KEY_PATTERN} and not be one of {sorted(RESERVED_KEYS)}"


def _split_suffix(name: str) -> tuple[str, str]:
    """Split at the last dot: ``gps_input_route.json`` -> (``gps_input_route``, ``.json``)."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def _insert(name: str, part: str) -> str:
    stem, suffix = _split_suffix(name)
    return f"{stem}.{part}{suffix}"


@dataclass(frozen=True, slots=True)
class Request:
    """One request on the volume; ``key`` is None for the legacy single-user name. Slots: a scanner keeps one
    per input in the directory."""

    key: str | None

    @property
    def label(self) -> str:
        return self.key if self.key is not None else "-"


@dataclass(frozen=True)
class Rejected:
    """A name that looks like an input but must never be read (invalid or reserved key)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Names:
    """The configured base names and every name derived from them."""

    input_name: str = DEFAULT_INPUT_NAME
    output_name: str = DEFAULT_OUTPUT_NAME

    def input(self, key: str | None) -> str:
        return self.input_name if key is None else _insert(self.input_name, key)

    def result(self, key: str | None) -> str:
        return self.output_name if key is None else _insert(self.output_name, key)

    def status(self, key: str | None) -> str:
        return _insert(self.result(key), "status")

    def parse(self, name: str) -> Request | Rejected | None:
        """Classify a file name found in the watch dir.

        Returns a Request for an exact input name, Rejected for a name shaped like a
        keyed input whose key is invalid, and None for everything else (results,
        statuses, dot-files, unrelated files).
        """
        if name == self.input_name:
            return Request(None)
        if name.startswith("."):
            return None
        head, suffix = self._input_affixes
        if not (name.startswith(head) and name.endswith(suffix)) or len(name) <= len(head) + len(suffix):
            return None
        key = name[len(head) : len(name) - len(suffix)] if suffix else name[len(head) :]
        if key in RESERVED_KEYS:
            return Rejected(name, f"key {key!r} is reserved")
        if not _KEY_RE.fullmatch(key):
            return Rejected(name, f"key {key!r} does not match {KEY_PATTERN}")
        return Request(key)

    @cached_property
    def _input_affixes(self) -> tuple[str, str]:
        """What comes before and after the key in a keyed input's name: ``gps_input_route.`` and ``.json``."""
        stem, suffix = _split_suffix(self.input_name)
        return stem + ".", suffix

    @cached_property
    def _output_affixes(self) -> tuple[str, str]:
        """What comes before and after the key in a keyed result's name: ``gps_scored_route.`` and ``.json``."""
        stem, suffix = _split_suffix(self.output_name)
        return stem + ".", suffix

    def may_be_input(self, name: str) -> bool:
        """False for a name ``parse`` answers None for, found with two string tests (True for a few more, which
        ``parse`` tells apart): what a scanner keeps of a directory of tens of thousands of results and
        statuses."""
        return name.startswith(self._input_affixes[0]) or name == self.input_name

    def request_file(self, name: str) -> tuple[str | None, bool] | None:
        """(key, is_input) when ``name`` is a request's input (True) or its status (False), else None.

        Plain string tests before the key's pattern, answering as ``parse`` and ``status`` do:
        the queue asks it of every name in a directory that may hold tens of thousands.
        """
        legacy_status, affixes = self._request_affixes
        if name == self.input_name:
            return None, True
        if name == legacy_status:
            return None, False
        for head, tail, is_input in affixes:
            if name.endswith(tail) and name.startswith(head) and len(name) > len(head) + len(tail):
                key = name[len(head):len(name) - len(tail)]
                return (key, is_input) if _KEY_RE.fullmatch(key) and key not in RESERVED_KEYS else None
        return None

    @cached_property
    def _request_affixes(self) -> tuple[str, tuple[tuple[str, str, bool], ...]]:
        """The legacy status name, and (head, tail, is_input) around the key of a keyed status and input."""
        head, suffix = self._output_affixes
        return self.status(None), ((head, ".status" + suffix, False), (*self._input_affixes, True))

    def output_key(self, name: str) -> str | None:
        """The key of a keyed result or status file name, else None."""
        head, suffix = self._output_affixes
        if not (name.startswith(head) and name.endswith(suffix)):
            return None
        middle = name[len(head) : len(name) - len(suffix)] if suffix else name[len(head) :]
        middle = middle.removesuffix(".status")
        return middle if is_valid_key(middle) else None

    def check(self) -> str | None:
        """Why this pair of names cannot work, or None when it can."""
        for label, value in (("input-name", self.input_name), ("output-name", self.output_name)):
            if not value or "/" in value or "\\" in value or value in (".", ".."):
                return f"{label} must be a plain file name, got {value!r}"
            if value.startswith("."):
                return f"{label} must not start with a dot (dot-files are ignored), got {value!r}"
            if not _split_suffix(value)[1]:
                return f"{label} needs a suffix such as .json, got {value!r}"
        if self.input_name == self.output_name:
            return "input-name and output-name must differ"
        # Every derived name is "<stem>.<...>", so two stems where one is the other plus a
        # dotted part can produce the same name for some key: demand stems that cannot.
        istem, ostem = _split_suffix(self.input_name)[0], _split_suffix(self.output_name)[0]
        if istem == ostem or istem.startswith(ostem + ".") or ostem.startswith(istem + "."):
            return (
                f"input-name {self.input_name!r} and output-name {self.output_name!r} could name the same file "
                "for some key; choose names whose stems differ before the first dot"
            )
        return None


@dataclass(frozen=True)
class Layout:
    """Paths of one watch dir: the public files and the watcher's private area.

    ``watcher`` is None for the lone watcher, whose private area is ``.modelgen`` itself. In shared mode
    it is the watcher's id: its heartbeat and metrics are ``.modelgen/watchers/<id>.json`` and ``.prom``,
    and its temp files, run records, workspace and clock are under ``.modelgen/watchers/<id>/``, so no
    watcher ever cleans up, or writes over, another's.
    """

    root: Path
    names: Names
    watcher: str | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def watchers_dir(self) -> Path:
        return self.state_dir / WATCHERS_DIR

    @property
    def claims_dir(self) -> Path:
        return self.state_dir / CLAIMS_DIR

    @property
    def private_dir(self) -> Path:
        """This watcher's own area: ``.modelgen``, or ``.modelgen/watchers/<id>`` in shared mode."""
        return self.state_dir if self.watcher is None else self.watchers_dir / self.watcher

    def watcher_health(self, watcher: str) -> Path:
        return self.watchers_dir / f"{watcher}.json"

    def watcher_metrics(self, watcher: str) -> Path:
        return self.watchers_dir / f"{watcher}.prom"

    @property
    def health_file(self) -> Path:
        return self.state_dir / HEALTH_FILE if self.watcher is None else self.watcher_health(self.watcher)

    @property
    def metrics_file(self) -> Path:
        return self.state_dir / METRICS_FILE if self.watcher is None else self.watcher_metrics(self.watcher)

    @property
    def lock_file(self) -> Path:
        return self.state_dir / LOCK_FILE

    @property
    def workspace(self) -> Path:
        """The model's workspace; in shared mode the watcher's own, seeded from ``shared_workspace``."""
        return self.private_dir / WORKSPACE_DIR

    @property
    def shared_workspace(self) -> Path:
        """``.modelgen/workspace``: the lone watcher's workspace, and what shared watchers seed theirs from."""
        return self.state_dir / WORKSPACE_DIR

    @property
    def tmp_dir(self) -> Path:
        return self.private_dir / TMP_DIR

    @property
    def inflight_dir(self) -> Path:
        """The lone watcher's in-flight records (shared watchers count interruptions in their claims)."""
        return self.state_dir / INFLIGHT_DIR

    @property
    def parked_dir(self) -> Path:
        """The lone watcher's markers of requests not in its hands: at rest since a start counted them, or given
        up."""
        return self.state_dir / PARKED_DIR

    @property
    def run_dir(self) -> Path:
        """Records of the models running now, so a daemon started after a ``kill -9`` can stop them."""
        return self.private_dir / RUN_DIR

    @property
    def clock_file(self) -> Path:
        return self.private_dir / CLOCK_FILE

    def input(self, key: str | None) -> Path:
        return self.root / self.names.input(key)

    def result(self, key: str | None) -> Path:
        return self.root / self.names.result(key)

    def status(self, key: str | None) -> Path:
        return self.root / self.names.status(key)

"""Settings of every command: flags and MODELGEN_* environment variables, validated in one place.

Each command has one settings class (``COMMAND_SETTINGS``), and its fields are the
command's options. A field's name gives its flag (``--model-timeout``) and its variable
(``MODELGEN_MODEL_TIMEOUT``), its ``description`` the help text, its default the default
shown, its bounds the range shown, and a ``Literal`` annotation the choices. The command
line (``cli``) and docs/configuration.md (``docs_config``) are generated from these
classes, so no default or meaning is typed twice. A field a class names in ``ENV_ONLY``
has no flag: it is set by its environment variable only.

The command line passes only the flags a user gave as init values, so pydantic-settings
gives them precedence over the environment, and the environment over the defaults.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import DirectoryPath, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from .modelside import ENTRIES, REFERENCE
from .modelside.forkserver import AUTO as PRELOAD_AUTO
from .modelside.forkserver import split_command
from .runners.argv import PLACEHOLDERS, unknown_placeholders
from .volume.names import (
    DEFAULT_INPUT_NAME,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_OUTPUT_NAME,
    WATCHER_ID_PATTERN,
    Names,
    default_watcher_id,
    watcher_id_problem,
)

ENV_PREFIX = "MODELGEN_"

REFERENCE_MODEL_CMD = (
    f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(REFERENCE))} "
    "--workspace={workspace} --routefile={input} --dumpresponse={output_name}"
)
"""The embedded model run as a script in upstream's command-line shape (``--runner subprocess``): by path,
isolated (``-I -S``), so the watcher's own packages never enter the model's process."""

_CASE_INSENSITIVE = ("log_level", "log_format")
"""Choices accepted in any case (lowered before they are checked)."""


def _none_means(text: str) -> dict[str, Any]:
    """``json_schema_extra`` of a field whose default is None: what that None does, as shown for its default."""
    return {"none_means": text}


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        protected_namespaces=(),
        env_ignore_empty=True,  # compose files often set VAR= to mean "unset"
    )

    ENV_ONLY: ClassVar[frozenset[str]] = frozenset()
    """Fields of this command with no flag, set by their environment variable only."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        unknown = cls.ENV_ONLY - set(cls.model_fields)
        if unknown:
            raise TypeError(f"{cls.__name__}.ENV_ONLY names no field: {', '.join(sorted(unknown))}")


class _Logged(_Base):
    """The log settings of every command that logs (``health`` prints one line and logs nothing)."""

    log_format: Literal["json", "console"] | None = Field(
        default=None,
        description="JSON lines for log collectors, or readable console lines",
        json_schema_extra=_none_means("console on a terminal, json otherwise"),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="the lowest level logged: debug to troubleshoot, warning or error for fewer lines"
    )

    @field_validator(*_CASE_INSENSITIVE, mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class _NamedFiles(_Logged):
    """The volume's base names, shared by every command that reads or writes requests."""

    input_name: str = Field(
        default=DEFAULT_INPUT_NAME,
        description="name of the input file the server writes; a keyed request inserts `.<key>` before the suffix",
    )
    output_name: str = Field(
        default=DEFAULT_OUTPUT_NAME,
        description="name of the result file; its status file is `<stem>.status<suffix>`",
    )

    @model_validator(mode="after")
    def _check_names(self) -> _NamedFiles:
        problem = self.names.check()
        if problem:
            raise ValueError(f"--input-name/--output-name: {problem}")
        return self

    @property
    def names(self) -> Names:
        return Names(self.input_name, self.output_name)


class ModelSettings(_NamedFiles):
    """How to run the model; shared by the daemon and by the one-shot ``score`` command."""

    model_cmd: str | None = Field(
        default=None,
        description="the model's argument template, split like a shell would but run without one; placeholders: "
        + ", ".join(f"`{{{name}}}` {meaning}" for name, meaning in PLACEHOLDERS.items()),
        json_schema_extra=_none_means("the embedded reference model"),
    )
    model_cwd: DirectoryPath | None = Field(
        default=None,
        description="the model's working directory, which must exist",
        json_schema_extra=_none_means("the current directory"),
    )
    model_timeout: float = Field(
        default=120.0, gt=0, le=86400, description="seconds a model may run before its whole process group is killed"
    )
    model_name: str | None = Field(
        default=None,
        description="the name recorded in each result's `meta.model`",
        json_schema_extra=_none_means("reference, or the model script's name"),
    )
    kill_grace: float = Field(
        default=3.0, gt=0, le=5, description="seconds between TERM and KILL; capped so a stop fits in 10 s"
    )
    max_input_bytes: int = Field(
        default=DEFAULT_MAX_INPUT_BYTES,
        ge=1,
        le=1024**3,
        description="largest input read; a larger one gets an `invalid_input` status unread",
    )
    runner: Literal["subprocess", "fork", "entry"] | None = Field(
        default=None,
        description="how the model runs: `subprocess` starts a process per request; `fork` keeps a fork server "
        "that imports `--preload` once and forks a child per request to run the unchanged `--model-cmd` script; "
        "`entry` keeps warm workers that load the model once (`--model-entry`) and serve each request as a call: "
        "milliseconds",
        json_schema_extra=_none_means("entry for the embedded model or with --model-entry, else subprocess"),
    )
    preload: str | None = Field(
        default=None,
        description="modules the `fork` runner's server imports once, comma-separated (e.g. "
        "`pandas,sklearn.tree`); `auto`: those the script imports at its top level, but its own; every request's "
        "child starts with them imported",
        json_schema_extra=_none_means("auto"),
    )
    model_entry: str | None = Field(
        default=None,
        description="what warm workers load once: `MODULE_OR_PATH:FACTORY` (found from --model-cwd), "
        "`reference` for the embedded model, or `cyclesafe` for upstream's model.py run from --model-cmd; "
        "the factory's interface is in docs/runners.md",
        json_schema_extra=_none_means("the embedded model's, when --model-cmd is not set"),
    )
    worker_max_requests: int = Field(
        default=0, ge=0, description="requests a warm worker serves before a fresh one replaces it; 0: no limit"
    )
    worker_max_rss: int = Field(
        default=0,
        ge=0,
        description="resident bytes past which a warm worker is replaced after its request; 0: no limit",
    )
    worker_start_timeout: float = Field(
        default=60.0, gt=0, le=3600, description="seconds a warm worker has to load the model before start-up fails"
    )

    @field_validator("model_entry")
    @classmethod
    def _check_entry(cls, value: str | None) -> str | None:
        if value is None or value in ENTRIES:
            return value
        target, sep, name = value.rpartition(":")
        if not (sep and target and name.isidentifier()):
            named = " or ".join(f"`{word}`" for word in ENTRIES)
            raise ValueError(f"must be MODULE_OR_PATH:FACTORY, {named}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_runner(self) -> ModelSettings:
        """An entry runner needs something to load, a fork runner a Python script; --preload alone picks no runner.

        An explicit ``--runner`` decides, and what only another runner uses is left unused
        (``unused_settings``): an image sets what each runner needs, and one variable
        (``MODELGEN_RUNNER``) switches between them.
        """
        if self.runner == "entry" and self.model_entry is None and self.model_cmd is not None:
            raise ValueError("--runner: `entry` needs --model-entry, the factory its workers load")
        if self.preload is not None and self.runner is None:  # without --runner, only --model-entry picks one
            raise ValueError("--preload: only the `fork` runner preloads modules (add --runner fork)")
        if self.runner == "fork":
            try:
                split_command(self.command_template)
            except ValueError as exc:
                raise ValueError(f"--model-cmd: {exc}") from exc
        bad = [name for name in self.preload_modules if not all(part.isidentifier() for part in name.split("."))]
        if bad:
            raise ValueError(f"--preload: {bad[0]!r} is not a module name")
        return self

    @model_validator(mode="after")
    def _check_cyclesafe(self) -> ModelSettings:
        """Upstream's adapter imports the script the model command runs: there must be one."""
        if self.model_entry != "cyclesafe":
            return self
        if self.model_cmd is None:
            raise ValueError("--model-entry: `cyclesafe` needs --model-cmd, upstream's command line (its model.py)")
        try:
            _, kind, _ = split_command(self.command_template)
        except ValueError:
            kind = None
        if kind != "script":
            raise ValueError("--model-cmd: `--model-entry cyclesafe` needs `PYTHON [OPTIONS] SCRIPT [ARGS]`, "
                             "upstream's model.py and its flags")
        return self

    @property
    def unused_settings(self) -> list[str]:
        """Settings given that the runner in effect does not use: ``--model-entry`` but for ``entry``,
        ``--preload`` but for ``fork`` (possible only with an explicit ``--runner``)."""
        unused = []
        if self.model_entry is not None and self.runner_kind != "entry":
            unused.append("model_entry")
        if self.preload is not None and self.runner_kind != "fork":
            unused.append("preload")
        return unused

    @property
    def preload_modules(self) -> list[str]:
        if self.preload is None:
            return [PRELOAD_AUTO]
        return [name.strip() for name in self.preload.split(",") if name.strip()]

    @property
    def runner_kind(self) -> Literal["subprocess", "fork", "entry"]:
        """The runner in effect: as set, else ``entry`` for the embedded model or an entry, else ``subprocess``."""
        if self.runner is not None:
            return self.runner
        return "entry" if self.model_entry is not None or self.model_cmd is None else "subprocess"

    @field_validator("model_cmd")
    @classmethod
    def _check_cmd(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split like a shell command: {exc}") from exc
        if not argv:
            raise ValueError("is empty")
        unknown = unknown_placeholders(value)
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}}; known: " + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            )
        return value

    @model_validator(mode="after")
    def _check_program(self) -> ModelSettings:
        """A model that cannot start is a setting error, found before the first request."""
        program = self.command_template[0]
        if "/" in program:
            path = Path(program)
            if not path.is_absolute():
                path = (self.model_cwd or Path.cwd()) / path
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise ValueError(f"--model-cmd: program {program!r} is not an executable file")
        elif shutil.which(program) is None:
            raise ValueError(f"--model-cmd: program {program!r} is not on PATH")
        return self

    @property
    def command_template(self) -> list[str]:
        return shlex.split(self.model_cmd or REFERENCE_MODEL_CMD)

    @property
    def model_label(self) -> str:
        """What meta.model says: the explicit name, ``reference``, the entry's module, or the model script's name."""
        if self.model_name:
            return self.model_name
        if self.model_entry not in (None, *ENTRIES) and self.runner_kind == "entry":
            return Path(str(self.model_entry).rpartition(":")[0]).name
        if self.model_cmd is None:
            return "reference"
        argv = self.command_template
        scripts = [Path(a).name for a in argv if a.endswith(".py")]
        return scripts[0] if scripts else Path(argv[0]).name


CLAIM_LEASE_HEARTBEATS = 5
"""A claim's lease is at least this many heartbeats: a live watcher renews it at every one, so a heartbeat or
two late (a busy machine, a slow rescan) never lets another watcher take a request from it."""


class _WatcherIdentity(_Base):
    """Which watcher this is in shared mode: the daemon's own name, and the one ``health --shared`` checks."""

    watcher_id: str | None = Field(
        default=None,
        description="with --shared: this watcher's name, unique among the watchers of one volume; it names its "
        "heartbeat `.modelgen/watchers/<id>.json`, its metrics and its claims",
        json_schema_extra=_none_means(f"the host name, made to match {WATCHER_ID_PATTERN}"),
    )

    @field_validator("watcher_id")
    @classmethod
    def _check_watcher_id(cls, value: str | None) -> str | None:
        problem = None if value is None else watcher_id_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def effective_watcher_id(self) -> str:
        """The id given, or the host name made a valid id (a pod's name, a container's id)."""
        return self.watcher_id or default_watcher_id()


class WatcherSettings(ModelSettings, _WatcherIdentity):
    """The daemon (``run``)."""

    ENV_ONLY = frozenset({"heartbeat_interval"})

    watch_dir: Path = Field(
        default=Path("data"), description="the shared volume watched for inputs; created if missing"
    )
    workers: int = Field(default=1, ge=1, le=64, description="requests of different keys scored in parallel")
    daemon_cpu: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: with warm workers (`entry`, `fork`) and more than one CPU, the daemon's "
        "own threads run on one CPU, taking turns there (`SCHED_BATCH`), which spares its interpreter lock a wake-up "
        "on another CPU at every system call (1.5x the requests a second), while the model's processes keep every "
        "CPU; it moves to a less busy CPU when other processes keep its own busy; off: wherever the kernel puts them",
    )
    observer: Literal["auto", "native", "polling"] = Field(
        default="auto",
        description="native (inotify), polling, or auto: native proven by a probe file at start, switched to "
        "polling if a rescan finds a change no event reported, as on NFS or WSL mounts",
    )
    poll_interval: float = Field(default=1.0, gt=0, le=60, description="seconds between polls of the polling observer")
    debounce: int = Field(default=50, ge=0, le=60000, description="milliseconds of quiet before an input is read")
    settle: float = Field(
        default=2.0, ge=0, le=600, description="seconds an unparsable, just-modified input is given to be completed"
    )
    rescan_interval: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="seconds between rescans that catch dropped events (docs/protocol.md says what one looks at)",
    )
    heartbeat_interval: float = Field(
        default=2.0, gt=0, le=5,
        description="seconds between heartbeats (the health and metrics files) and, with --shared, claim renewals",
    )
    retention: float = Field(
        default=7 * 24 * 3600, ge=0, description="seconds idle keyed request files are kept; 0 keeps them forever"
    )
    once: bool = Field(
        default=False,
        description="process everything pending, then exit: 0 if every input in the watch dir is scored, "
        "1 if any ended in error (now or, for an input already refused as invalid, in an earlier run); "
        "for cron, CI, Kubernetes Jobs",
    )
    shared: bool = Field(
        default=False,
        description="shared mode: any number of watchers on one volume, on one machine or many, each request "
        "scored by one of them (claims under `.modelgen/claims/`, a heartbeat per watcher under "
        "`.modelgen/watchers/`); implies polling, since no machine sees another's writes as events "
        "(docs/protocol.md)",
    )
    claim_lease: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="with --shared: seconds a watcher's claim on a request lives without renewal (renewed at every "
        f"heartbeat; at least {CLAIM_LEASE_HEARTBEATS} heartbeats); a dead watcher's requests are taken over after "
        "it, measured on the volume's clock",
    )

    @field_validator("watch_dir")
    @classmethod
    def _check_watch_dir(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @model_validator(mode="after")
    def _check_shared(self) -> WatcherSettings:
        """Shared mode polls (other machines' writes raise no events here), and a claim outlives a few heartbeats."""
        if not self.shared:
            return self
        if self.observer == "native":
            raise ValueError("--observer: `native` sees no other machine's writes, and shared mode must: use "
                             "`polling`, or `auto`, which polls in shared mode")
        least = CLAIM_LEASE_HEARTBEATS * self.heartbeat_interval
        if self.claim_lease < least:
            raise ValueError(f"--claim-lease: must be at least {CLAIM_LEASE_HEARTBEATS} heartbeats "
                             f"({least:g} s with MODELGEN_HEARTBEAT_INTERVAL={self.heartbeat_interval:g}), "
                             f"got {self.claim_lease:g}")
        return self

    @property
    def observer_mode(self) -> Literal["auto", "native", "polling"]:
        """The observer the daemon starts: ``--observer``, but ``polling`` for ``auto`` in shared mode."""
        return "polling" if self.shared else self.observer


class ScoreSettings(ModelSettings):
    """The one-shot ``score`` command: the model's settings, no watching.

    It scores in a temporary directory, so the file names matter only to the model
    (``{output_name}``): they follow the environment, as the daemon's do, with no flag.
    """

    ENV_ONLY = frozenset({"input_name", "output_name"})

    log_format: Literal["json", "console"] | None = Field(
        default="console",
        description="readable console lines, or JSON lines; either way on stderr, apart from the result",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="error",
        description="the lowest level logged on stderr; the outcome is reported there in any case",
    )

    def pipeline_settings(self) -> WatcherSettings:
        """What ``build_pipeline`` takes: these validated model settings and no settle time
        (no writer races ``score``: a bad file is bad at once); the watcher's own fields,
        which a pipeline does not read, keep their defaults."""
        return WatcherSettings.model_construct(_fields_set=set(self.model_fields_set), **dict(self), settle=0.0)


class HealthSettings(_WatcherIdentity):
    """The ``health`` probe."""

    watch_dir: Path = Field(default=Path("data"), description="the shared volume whose heartbeat is checked")
    max_age: float = Field(default=30.0, gt=0, description="seconds after which the daemon's heartbeat is stale")
    shared: bool = Field(
        default=False,
        description="check one shared-mode watcher's own heartbeat, `.modelgen/watchers/<id>.json` (the id as "
        "below); without it, healthy when any watcher is: the lone watcher's `.modelgen/health.json` or a "
        "shared one's",
    )


class ServerSettings(_NamedFiles):
    """The reference server (``serve``)."""

    watch_dir: Path = Field(
        default=Path("data"), description="the shared volume requests are written to and results read from"
    )
    host: str = Field(default="127.0.0.1", description="address to listen on; 0.0.0.0 in a container")
    port: int = Field(default=8009, ge=0, le=65535, description="port to listen on; 0 picks a free one")
    static_dir: DirectoryPath | None = Field(
        default=None,
        description="folder of static files answered to other GETs; `/` is `directions.html` (the built-in page "
        "stays at `/ui/`)",
        json_schema_extra=_none_means("none: `/` is the built-in page"),
    )
    max_input_bytes: int = Field(
        default=DEFAULT_MAX_INPUT_BYTES, ge=1, le=1024**3, description="largest upload accepted; a larger one gets 413"
    )
    max_wait: float = Field(default=60.0, ge=0, le=600, description="longest `?wait=` seconds a GET may ask for")
    legacy_wait: float = Field(
        default=30.0, ge=0, le=600, description="seconds the key-less GET waits for the last upload's result"
    )
    health_max_age: float = Field(
        default=30.0, gt=0, description="heartbeat age in seconds after which the watcher counts as down"
    )
    request_timeout: float = Field(
        default=30.0, ge=0.1, le=600, description="seconds to receive a whole request: line, headers and body"
    )
    head_timeout: float = Field(
        default=10.0, ge=0.1, le=600, description="seconds to receive the request line and headers"
    )
    keepalive_timeout: float = Field(
        default=15.0, ge=0.1, le=3600, description="seconds a kept-alive connection may sit idle between requests"
    )
    max_connections: int = Field(
        default=1024,
        ge=8,
        le=65536,
        description="connections waiting for a request before the oldest is dropped; lowered to fit the file limit",
    )


COMMAND_SETTINGS: dict[str, type[_Base]] = {
    "run": WatcherSettings,
    "health": HealthSettings,
    "score": ScoreSettings,
    "serve": ServerSettings,
}
"""Each command's settings class: its fields are the command's options."""


# -- what the command line and the docs show of a field ------------------------------


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_var(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _order(cls: type[_Base]) -> list[str]:
    """The volume first, logging last, the rest as declared, the watcher's id after them (beside --shared)."""
    names = list(cls.model_fields)
    return sorted(
        names, key=lambda n: (n != "watch_dir", n in _Logged.model_fields, n in _WatcherIdentity.model_fields)
    )


def flag_fields(cls: type[_Base]) -> list[tuple[str, FieldInfo]]:
    """The fields a command offers as flags, in the order shown."""
    return [(n, cls.model_fields[n]) for n in _order(cls) if n not in cls.ENV_ONLY]


def env_only_fields(cls: type[_Base]) -> list[tuple[str, FieldInfo]]:
    """The fields a command reads from its environment variable only."""
    return [(n, cls.model_fields[n]) for n in _order(cls) if n in cls.ENV_ONLY]


def choices(info: FieldInfo) -> tuple[str, ...]:
    """The values a ``Literal`` field accepts (``None`` aside); empty for other fields."""
    annotation = info.annotation
    arms = (annotation,) if typing.get_origin(annotation) is Literal else typing.get_args(annotation)
    values: list[str] = []
    for arm in arms:
        if typing.get_origin(arm) is Literal:
            values.extend(str(v) for v in typing.get_args(arm))
    return tuple(values)


def case_insensitive(field: str) -> bool:
    return field in _CASE_INSENSITIVE


def _number(value: object) -> str:
    """120.0 as ``120``, 0.1 as ``0.1``: a number as a user would type it."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def default_text(info: FieldInfo) -> str:
    """The field's real default as a user would type it, or what a None default means."""
    value = info.default
    if value is None:
        extra = info.json_schema_extra
        meaning = extra.get("none_means") if isinstance(extra, dict) else None
        if not isinstance(meaning, str):
            raise TypeError("a field whose default is None says what that means: json_schema_extra=_none_means(...)")
        return meaning
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return _number(value)
    return str(value)


def range_text(info: FieldInfo) -> str:
    """The bounds of a number field in words ("from 1 up to 64"), or empty."""
    lower = upper = ""
    for m in info.metadata:  # annotated_types' Ge, Gt, Le, Lt, as Field(ge=..., ...) records them
        for attr, word in (("ge", "from"), ("gt", "above"), ("le", "up to"), ("lt", "below")):
            bound = getattr(m, attr, None)
            if bound is not None and attr in ("ge", "gt"):
                lower = f"{word} {_number(bound)}"
            elif bound is not None:
                upper = f"{word} {_number(bound)}"
    return " ".join(t for t in (lower, upper) if t)


KNOWN_ELSEWHERE = frozenset(
    {"MODELGEN_RESULT_TIMEOUT", "MODELGEN_TOOLS", "MODELGEN_CHECKOUT", "MODELGEN_PODMAN_STATE", "MODELGEN_RUN_ID"}
)
"""``MODELGEN_*`` variables read outside the settings classes: the drop-in's result timeout, the
static checks' tool folder, the modelgen checkout compose.cyclesafe.yaml builds from, podman's state
folder for the container scripts, and the run id every model process carries (a model may call
the CLI)."""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``MODELGEN_*`` variables no command reads: most likely a misspelt setting, which would otherwise
    be ignored without a word (pydantic-settings ignores what it does not know)."""
    known = {env_var(name) for cls in COMMAND_SETTINGS.values() for name in cls.model_fields} | KNOWN_ELSEWHERE
    return sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)


def describe_error(exc: ValidationError) -> str:
    """One line naming the setting (as flag and environment variable) and what is wrong."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across fields names its setting first: "--model-cmd: program ... is not on PATH"
        named = re.match(r"--([a-z][a-z-]*): (.*)", msg)
        if named is None:
            return f"invalid settings: {msg}"
        field, msg = named.group(1).replace("-", "_"), named.group(2)
        return f"invalid setting {flag(field)} ({env_var(field)}): {msg}"
    field = loc[0]
    given = err.get("input")
    if isinstance(given, (str, int, float)) and not isinstance(given, bool) and str(given) not in msg:
        msg += f" (got {str(given)!r})"
    return f"invalid setting {flag(field)} ({env_var(field)}): {msg}"

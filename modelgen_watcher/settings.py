"""Settings of every command: flags and MODELGEN_* environment variables, validated in one place.

The command line passes only the flags a user gave as init values, so pydantic-settings
gives them precedence over the environment, and the environment over the defaults.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import DirectoryPath, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .runners.argv import PLACEHOLDERS, unknown_placeholders
from .volume.names import DEFAULT_INPUT_NAME, DEFAULT_MAX_INPUT_BYTES, DEFAULT_OUTPUT_NAME, Names

ENV_PREFIX = "MODELGEN_"

REFERENCE_MODEL_CMD = (
    f"{shlex.quote(sys.executable)} -m modelgen_watcher.reference_model "
    "--workspace={workspace} --routefile={input} --dumpresponse={output_name}"
)
"""The embedded default: the reference model run as a subprocess in upstream's command-line shape."""


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        protected_namespaces=(),
        env_ignore_empty=True,  # compose files often set VAR= to mean "unset"
    )

    log_format: Literal["json", "console"] | None = Field(
        default=None, description="json or console; default: console on a terminal, json otherwise"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class _NamedFiles(_Base):
    """The volume's base names, shared by every command that reads or writes requests."""

    input_name: str = DEFAULT_INPUT_NAME
    output_name: str = DEFAULT_OUTPUT_NAME

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

    model_cmd: str | None = Field(default=None, description="argument template; default: the embedded reference model")
    model_cwd: DirectoryPath | None = None
    model_timeout: float = Field(default=120.0, gt=0, le=86400)
    model_name: str | None = Field(default=None, description="name recorded in meta.model")
    kill_grace: float = Field(default=3.0, gt=0, le=5, description="capped so a stop fits in 10 s")
    max_input_bytes: int = Field(default=DEFAULT_MAX_INPUT_BYTES, ge=1, le=1024**3)

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
        """What meta.model says: the explicit name, ``reference``, or the model script's name."""
        if self.model_name:
            return self.model_name
        if self.model_cmd is None:
            return "reference"
        argv = self.command_template
        scripts = [Path(a).name for a in argv if a.endswith(".py")]
        return scripts[0] if scripts else Path(argv[0]).name


class WatcherSettings(ModelSettings):
    """The daemon (``run``)."""

    watch_dir: Path = Path("data")
    workers: int = Field(default=1, ge=1, le=64)
    observer: Literal["auto", "native", "polling"] = "auto"
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    debounce: int = Field(default=50, ge=0, le=60000, description="quiet time in ms before an input is read")
    settle: float = Field(
        default=2.0, ge=0, le=600, description="seconds an unparsable, just-modified input is given to be completed"
    )
    rescan_interval: float = Field(default=10.0, gt=0, le=3600)
    heartbeat_interval: float = Field(default=2.0, gt=0, le=5)
    retention: float = Field(
        default=7 * 24 * 3600, ge=0, description="seconds keyed request files are kept; 0 keeps them forever"
    )
    once: bool = False

    @field_validator("watch_dir")
    @classmethod
    def _check_watch_dir(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value


class HealthSettings(_Base):
    """The ``health`` probe."""

    watch_dir: Path = Path("data")
    max_age: float = Field(default=30.0, gt=0)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def describe_error(exc: ValidationError) -> str:
    """One line naming the setting (as flag and environment variable) and what is wrong."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return f"invalid settings: {msg}"
    field = loc[0]
    given = err.get("input")
    if isinstance(given, (str, int, float)) and not isinstance(given, bool) and str(given) not in msg:
        msg += f" (got {str(given)!r})"
    return f"invalid setting {_flag(field)} ({ENV_PREFIX}{field.upper()}): {msg}"


class ServerSettings(_NamedFiles):
    """The reference server (``serve``)."""

    watch_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(default=8009, ge=0, le=65535)
    static_dir: DirectoryPath | None = None
    max_input_bytes: int = Field(default=DEFAULT_MAX_INPUT_BYTES, ge=1, le=1024**3)
    max_wait: float = Field(default=60.0, ge=0, le=600, description="longest ?wait= a GET may ask for")
    legacy_wait: float = Field(default=30.0, ge=0, le=600, description="how long the key-less GET waits")
    health_max_age: float = Field(default=30.0, gt=0)
    request_timeout: float = Field(
        default=30.0, ge=0.1, le=600, description="seconds to receive a whole request (line, headers, body)"
    )
    head_timeout: float = Field(
        default=10.0, ge=0.1, le=600, description="seconds to receive the request line and headers"
    )
    keepalive_timeout: float = Field(
        default=15.0, ge=0.1, le=3600, description="seconds a kept-alive connection may sit idle between requests"
    )
    max_connections: int = Field(
        default=1024, ge=8, le=65536, description="connections waiting for a request before the oldest is dropped"
    )

"""Command line: subcommands, flags and exit codes (0 ok, 1 failure, 2 bad settings).

Each command's flags are generated from its settings class (``settings.COMMAND_SETTINGS``):
flag, help, default shown, range and choices all come from the class's fields.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from . import __version__
from .settings import (
    COMMAND_SETTINGS,
    ModelSettings,
    case_insensitive,
    choices,
    default_text,
    describe_error,
    env_only_fields,
    env_var,
    flag,
    flag_fields,
    range_text,
    unknown_variables,
)

COMMAND_HELP = {
    "run": "watch the directory and score every input (default)",
    "health": "exit 0 if a watcher's heartbeat is fresh and ready (with --shared: this watcher's)",
    "score": "score one route file, no watching",
    "serve": "the reference server: cyclesafe's REST API through files only",
}
COMMANDS = tuple(COMMAND_HELP)
SERVE_PRODUCTION_NOTE = (
    "It does not use the standard library's http.server, which the Python documentation calls "
    "'not recommended for production' ('it only implements basic security checks'): its own front "
    "end bounds every request (deadlines, header limits, strict framing, a pool per kind of "
    "request). It is still a small reference server: on the internet, put it behind a reverse "
    "proxy (nginx, Traefik, a Kubernetes ingress) for TLS, authentication and rate limits."
)
COMMAND_DESCRIPTION = {"serve": f"{COMMAND_HELP['serve']}. {SERVE_PRODUCTION_NOTE}"}

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

S = TypeVar("S", bound=BaseSettings)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as for any bad setting
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def plain(text: str) -> str:
    """A description as plain text: its backticks (code in the docs) dropped."""
    return text.replace("`", "")


def help_text(name: str, cls: type[BaseSettings]) -> str:
    """A field's help: its description, then its default and range, from the field itself."""
    info = cls.model_fields[name]
    extra = "; ".join(t for t in (f"default: {default_text(info)}", range_text(info)) if t)
    return f"{plain(info.description or '')} ({extra})"


EXTRA_ARGS: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
    "score": [
        (("route",), {"type": Path, "metavar": "ROUTE.json", "help": "the route JSON to score"}),
        (("-o", "--output"), {"type": Path, "metavar": "OUT.json", "default": None,
                              "help": "write the result here (default: stdout)"}),
        (("--svg",), {"type": Path, "metavar": "OUT.svg", "default": None,
                      "help": "also draw the result as SVG here: each step coloured by its score, as the server's "
                              "page shows it"}),
    ],
}
"""Arguments of a command that are not settings (no environment variable): names, ``add_argument`` keywords."""


def add_command_args(p: argparse.ArgumentParser, command: str) -> None:
    """A command's arguments: its own, then one flag per settings field (only flags given reach the class)."""
    cls = COMMAND_SETTINGS[command]
    for names, extra in EXTRA_ARGS.get(command, []):
        p.add_argument(*names, **extra)
    for name, info in flag_fields(cls):
        kw: dict[str, Any] = {}
        if info.annotation is bool:
            if info.default is not False:
                raise TypeError(f"{cls.__name__}.{name}: a flag switches on; its default must be False")
            kw["action"] = "store_true"
        values = choices(info)
        if values:
            kw["choices"] = values
            if case_insensitive(name):
                kw["type"] = str.lower
        p.add_argument(flag(name), dest=name, default=argparse.SUPPRESS,
                       help=help_text(name, cls).replace("%", "%%"), **kw)
    env_only = [f"{env_var(n)}, {help_text(n, cls)}." for n, _ in env_only_fields(cls)]
    p.epilog = (
        "Every option is also an environment variable MODELGEN_<NAME>; a flag wins. "
        + (f"Environment only: {' '.join(env_only)} " if env_only else "")
        + "See docs/configuration.md."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelgen-watcher", description="File-triggered model sidecar.")
    parser.add_argument("--version", action="version", version=f"modelgen-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for command, summary in COMMAND_HELP.items():
        description = COMMAND_DESCRIPTION.get(command, summary)
        add_command_args(sub.add_parser(command, help=summary, description=description), command)
    return parser


def load(cls: type[S], args: argparse.Namespace) -> S:
    """The settings of ``cls`` from the flags given (they win) and the environment; exit 2 on a bad one."""
    given = {k: v for k, v in vars(args).items() if k in cls.model_fields}
    for name in unknown_variables(os.environ):
        print(f"modelgen-watcher: warning: {name} is not a setting of any command (misspelt?); ignored",
              file=sys.stderr)
    try:
        settings = cls(**given)
    except ValidationError as exc:
        print(f"modelgen-watcher: {describe_error(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if isinstance(settings, ModelSettings):
        for name in settings.unused_settings:
            print(f"modelgen-watcher: note: {flag(name)} ({env_var(name)}) is not used by the "
                  f"{settings.runner_kind} runner; ignored", file=sys.stderr)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from . import logs
    from .runners import ModelLoadError
    from .settings import WatcherSettings
    from .volume.fsio import UnsafeFile
    from .watcher.daemon import AlreadyRunning, Daemon

    settings = load(WatcherSettings, args)
    logs.configure(settings.log_format, settings.log_level)
    try:
        code = Daemon(settings, owns_process=True).run()
    except (AlreadyRunning, UnsafeFile) as exc:
        print(f"modelgen-watcher: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except ModelLoadError as exc:
        print(f"modelgen-watcher: {exc}", file=sys.stderr)
        if exc.detail:
            print(exc.detail.rstrip(), file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"modelgen-watcher: cannot serve {settings.watch_dir}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    # Everything is stopped and flushed; do not let a worker thread still stuck in a
    # model's pipe hold the process past the container's stop timeout.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_health(args: argparse.Namespace) -> int:
    from .settings import HealthSettings
    from .volume import health

    settings = load(HealthSettings, args)
    if settings.shared:
        result = health.check_watcher(settings.watch_dir, settings.effective_watcher_id, settings.max_age)
    else:
        result = health.check(settings.watch_dir, settings.max_age)
    print(("healthy: " if result.healthy else "unhealthy: ") + result.message)
    return EXIT_OK if result.healthy else EXIT_FAIL


def cmd_score(args: argparse.Namespace) -> int:
    from . import logs
    from .settings import ScoreSettings
    from .volume import fsio
    from .volume.names import Layout, Request
    from .watcher.daemon import build_pipeline
    from .watcher.outcomes import Outcome

    settings = load(ScoreSettings, args)
    logs.configure(settings.log_format, settings.log_level, stream=sys.stderr)  # stdout is the result's
    route: Path = args.route
    try:
        snap = fsio.safe_read(route, settings.max_input_bytes)
    except (OSError, fsio.UnsafeFile) as exc:
        print(f"modelgen-watcher score: cannot read {route}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    with tempfile.TemporaryDirectory(prefix="modelgen-score-") as tmp:
        layout = Layout(Path(tmp), settings.names)
        pipeline, runner = build_pipeline(settings.pipeline_settings(), layout)
        fsio.atomic_write(layout.input(None), snap.data)
        try:
            processed = pipeline.process(Request(None))
        finally:
            runner.stop()  # a warm worker, if the runner keeps one, ends with the command
        if processed.outcome is not Outcome.ok:
            err = processed.error
            print(
                f"modelgen-watcher score: {err.kind.value}: {err.message}" if err else "modelgen-watcher score: failed",
                file=sys.stderr,
            )
            if err and err.detail:
                print(err.detail, file=sys.stderr)
            return EXIT_FAIL
        result = layout.result(None).read_bytes()
    if args.svg is not None:
        fsio.atomic_write(args.svg.resolve(), _drawing(result, snap.data).encode())
    if args.output is None:
        sys.stdout.write(json.dumps(json.loads(result), indent=2) + "\n")
    else:
        fsio.atomic_write(args.output.resolve(), result)
    return EXIT_OK


def _drawing(result: bytes, route: bytes) -> str:
    """The SVG of a scored result; the route (already scored, so valid) says where each route starts."""
    from . import picture
    from .volume.decoding import decode_route, decode_scored

    return picture.render(decode_scored(result), picture.route_starts(decode_route(route)))


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .server.http import serve
    from .settings import ServerSettings

    settings = load(ServerSettings, args)
    logs.configure(settings.log_format, settings.log_level)
    try:
        return serve(settings)
    except OSError as exc:
        print(f"modelgen-watcher serve: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "health": cmd_health, "score": cmd_score, "serve": cmd_serve}
    return handlers[args.command](args)

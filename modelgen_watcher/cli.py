"""Command line: subcommands, flags and exit codes (0 ok, 1 failure, 2 bad settings)."""

from __future__ import annotations

import argparse
import os
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import __version__

COMMANDS = ("run", "health", "score", "serve")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as for any bad setting
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def _opt(parser: argparse.ArgumentParser, flag: str, help_text: str, **kw: Any) -> None:
    parser.add_argument(flag, default=argparse.SUPPRESS, help=help_text, **kw)


def _logging_flags(p: argparse.ArgumentParser) -> None:
    _opt(p, "--log-format", "json or console (default: console on a terminal, else json)")
    _opt(p, "--log-level", "debug, info, warning or error (default info)")


def _volume_flags(p: argparse.ArgumentParser) -> None:
    _opt(p, "--watch-dir", "the shared volume (default ./data)")
    _opt(p, "--input-name", "input file name (default gps_input_route.json)")
    _opt(p, "--output-name", "result file name (default gps_scored_route.json)")


def _model_flags(p: argparse.ArgumentParser) -> None:
    _opt(p, "--model-cmd", "model argument template; placeholders {input} {output} {workspace} {output_name} {key}")
    _opt(p, "--model-cwd", "working directory of the model")
    _opt(p, "--model-timeout", "seconds before the model's process group is killed (default 120)")
    _opt(p, "--model-name", "name recorded in each result's meta.model")
    _opt(p, "--kill-grace", "seconds between TERM and KILL (default 3)")
    _opt(p, "--max-input-bytes", "largest input accepted (default 5 MiB)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelgen-watcher", description="File-triggered model sidecar.")
    parser.add_argument("--version", action="version", version=f"modelgen-watcher {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="watch the directory and score every input (default)")
    _volume_flags(run)
    _model_flags(run)
    _opt(run, "--workers", "requests scored in parallel (default 1)")
    _opt(run, "--observer", "auto, native or polling (default auto)")
    _opt(run, "--poll-interval", "seconds between polls of the polling observer (default 1)")
    _opt(run, "--debounce", "milliseconds of quiet before an input is read (default 50)")
    _opt(run, "--settle", "seconds a just-modified unparsable input is given to be completed (default 2)")
    _opt(run, "--rescan-interval", "seconds between full rescans that catch dropped events (default 10)")
    _opt(run, "--retention", "seconds keyed request files are kept; 0 keeps them (default 604800, 7 days)")
    _opt(run, "--once", "process everything pending, then exit", action="store_true")
    _logging_flags(run)

    health = sub.add_parser("health", help="exit 0 if the daemon's heartbeat is fresh and ready")
    _opt(health, "--watch-dir", "the shared volume (default ./data)")
    _opt(health, "--max-age", "seconds after which the heartbeat is stale (default 30)")
    _logging_flags(health)

    score = sub.add_parser("score", help="score one route file, no watching")
    score.add_argument("route", type=Path, help="the route JSON to score")
    score.add_argument("-o", "--output", type=Path, default=None, help="write the result here (default stdout)")
    _model_flags(score)
    _logging_flags(score)

    serve = sub.add_parser("serve", help="the reference server: cyclesafe's REST API through files only")
    _volume_flags(serve)
    _opt(serve, "--host", "address to listen on (default 127.0.0.1; 0.0.0.0 in containers)")
    _opt(serve, "--port", "port to listen on (default 8009; 0 picks a free one)")
    _opt(serve, "--static-dir", "folder of static files; / serves directions.html")
    _opt(serve, "--max-input-bytes", "largest upload accepted (default 5 MiB)")
    _opt(serve, "--max-wait", "longest ?wait= a GET may ask for, seconds (default 60)")
    _opt(serve, "--legacy-wait", "seconds the key-less GET waits for the last upload's result (default 30)")
    _opt(serve, "--health-max-age", "heartbeat age after which the watcher counts as down (default 30)")
    _opt(serve, "--request-timeout", "seconds to receive a whole request: line, headers and body (default 30)")
    _opt(serve, "--head-timeout", "seconds to receive the request line and headers (default 10)")
    _opt(serve, "--keepalive-timeout", "seconds an idle kept-alive connection stays open (default 15)")
    _opt(serve, "--max-connections", "connections waiting for a request before the oldest is dropped (default 1024)")
    _logging_flags(serve)
    return parser


def _settings(cls: type, args: argparse.Namespace, skip: tuple[str, ...] = ()) -> Any:
    from pydantic import ValidationError

    from .settings import describe_error

    given = {k: v for k, v in vars(args).items() if k not in ("command", *skip)}
    try:
        return cls(**given)
    except ValidationError as exc:
        print(f"modelgen-watcher: {describe_error(exc)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def cmd_run(args: argparse.Namespace) -> int:
    from . import logs
    from .watcher.daemon import AlreadyRunning, Daemon
    from .volume.fsio import UnsafeFile
    from .settings import WatcherSettings

    settings = _settings(WatcherSettings, args)
    logs.configure(settings.log_format, settings.log_level)
    try:
        code = Daemon(settings).run()
    except (AlreadyRunning, UnsafeFile) as exc:
        print(f"modelgen-watcher: {exc}", file=sys.stderr)
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
    from .volume import health
    from .settings import HealthSettings

    settings = _settings(HealthSettings, args)
    result = health.check(settings.watch_dir, settings.max_age)
    print(("healthy: " if result.healthy else "unhealthy: ") + result.message)
    return EXIT_OK if result.healthy else EXIT_FAIL


def cmd_score(args: argparse.Namespace) -> int:
    from .volume import fsio
    from . import logs
    from .watcher.daemon import build_pipeline
    from .watcher.outcomes import Outcome
    from .volume.names import Layout, Request
    from .settings import WatcherSettings

    # No writer is racing us here: a bad file is bad at once, not "maybe half-written".
    settings = _settings(WatcherSettings, args, skip=("route", "output")).model_copy(update={"settle": 0.0})
    logs.configure(settings.log_format or "console", "warning" if settings.log_level == "info" else settings.log_level)
    route: Path = args.route
    try:
        snap = fsio.safe_read(route, settings.max_input_bytes)
    except (OSError, fsio.UnsafeFile) as exc:
        print(f"modelgen-watcher score: cannot read {route}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    with tempfile.TemporaryDirectory(prefix="modelgen-score-") as tmp:
        layout = Layout(Path(tmp), settings.names)
        pipeline, _ = build_pipeline(settings, layout)
        fsio.atomic_write(layout.input(None), snap.data)
        processed = pipeline.process(Request(None))
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
    if args.output is None:
        sys.stdout.write(json.dumps(json.loads(result), indent=2) + "\n")
    else:
        fsio.atomic_write(args.output.resolve(), result)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .server.http import serve
    from .settings import ServerSettings

    settings = _settings(ServerSettings, args)
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

"""Logging: JSON lines for containers, readable lines on a terminal, for our records and everyone else's.

structlog sits on the standard library: our loggers (``get_logger(__name__)``) hand
their event dicts to a ``logging`` logger of the same name, and one handler on the root
logger renders every record with ``structlog.stdlib.ProcessorFormatter``. Records that
other libraries send through ``logging`` (watchdog's inotify queue overflow warning,
exactly when events are lost) and Python's warnings get the same renderer, level,
logger name and timestamp as ours.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO, TypeAlias

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

Logger: TypeAlias = FilteringBoundLogger
"""What ``get_logger`` returns: typed, so a misspelt method name is a type error."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

_HEX_HASH = re.compile(r"[0-9a-f]{32,}")
SHORT_HASH = 12
"""Characters of a hex hash (``input_sha256``) shown on a terminal; JSON lines keep the whole value."""

_handler: logging.Handler | None = None
"""The root handler ``configure`` installed last (replaced by the next call, never added twice)."""


def shorten_hashes(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Long hex hashes cut to ``SHORT_HASH`` characters, for readable terminal lines."""
    for key, value in event_dict.items():
        if isinstance(value, str) and _HEX_HASH.fullmatch(value):
            event_dict[key] = value[:SHORT_HASH]
    return event_dict


def configure(log_format: str | None = None, level: str = "info", stream: TextIO | None = None) -> None:
    """Set up logging for the process; ``log_format`` None picks console on a TTY, JSON otherwise.

    ``stream`` is where lines go (stdout by default). Calling it again replaces the set-up.
    """
    global _handler
    out = stream or sys.stdout
    fmt = log_format or ("console" if out.isatty() else "json")
    json_lines = fmt == "json"
    timestamper = (
        structlog.processors.TimeStamper(fmt="iso", utc=True)
        if json_lines
        else structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False)
    )
    # What every line gets, whether it came through structlog or straight through ``logging``.
    shared: list[Processor] = [structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper]
    last: list[Processor]
    if json_lines:
        last = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(sort_keys=False)]
    else:
        last = [shorten_hashes, structlog.dev.ConsoleRenderer(colors=out.isatty())]
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    _handler = handler
    logging.captureWarnings(True)  # warnings.warn(...) as records of the ``py.warnings`` logger
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Logger:
    """The logger of module ``name`` (pass ``__name__``): its lines carry ``logger=name``."""
    logger: Logger = structlog.get_logger(name)
    return logger

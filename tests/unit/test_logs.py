"""One formatter for every log record: ours (structlog) and the standard library's (watchdog, warnings)."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Iterator

import pytest
import structlog

from modelgen_watcher import logs

HASH = "0123456789abcdef" * 4  # a sha256 in hex


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures logging for the process; put back what pytest had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if logs._handler is not None:
        root.removeHandler(logs._handler)
        logs._handler = None
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_watchdog_warning_is_one_json_line_with_logger_and_level(capsys):
    logs.configure("json")
    logging.getLogger("watchdog.observers.inotify_buffer").warning("Inotify queue overflowed; %s", "events lost")
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    (rec,) = lines(out)
    assert rec["event"] == "Inotify queue overflowed; events lost"
    assert rec["level"] == "warning"
    assert rec["logger"] == "watchdog.observers.inotify_buffer"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", str(rec["timestamp"]))  # ISO, UTC


def test_our_lines_carry_the_module_name_and_full_hashes(capsys):
    logs.configure("json")
    log = logs.get_logger("modelgen_watcher.watcher.pipeline")
    log.bind(key="k", input_sha256=HASH).warning("request.done", outcome="error")
    (rec,) = lines(capsys.readouterr().out)
    assert rec == {"key": "k", "input_sha256": HASH, "outcome": "error", "event": "request.done",
                   "level": "warning", "logger": "modelgen_watcher.watcher.pipeline", "timestamp": rec["timestamp"]}
    assert str(rec["timestamp"]).endswith("Z")


def test_levels_filter_both_kinds_of_record(capsys):
    logs.configure("json", "warning")
    logs.get_logger("modelgen_watcher.x").info("quiet")
    logging.getLogger("watchdog.observers").info("quiet too")
    logs.get_logger("modelgen_watcher.x").error("loud")
    logging.getLogger("watchdog.observers").error("loud too")
    assert [r["event"] for r in lines(capsys.readouterr().out)] == ["loud", "loud too"]


def test_exceptions_and_warnings_are_json_lines_too(capsys):
    logs.configure("json")
    try:
        raise ValueError("boom")
    except ValueError:
        logs.get_logger("modelgen_watcher.watcher.scheduler").exception("request.crashed", key="k")
        logging.getLogger("somelib").exception("it broke")
    warnings.warn("a library warning", UserWarning, stacklevel=1)
    ours, theirs, warned = lines(capsys.readouterr().out)
    assert ours["level"] == theirs["level"] == "error"
    assert "ValueError: boom" in str(ours["exception"]) and "ValueError: boom" in str(theirs["exception"])
    assert theirs["logger"] == "somelib"
    assert warned["logger"] == "py.warnings" and "a library warning" in str(warned["event"])


def test_configuring_again_replaces_the_handler(capsys):
    logs.configure("json")
    logs.configure("json")
    logging.getLogger("watchdog").warning("once")
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_console_lines_shorten_hashes_and_show_the_logger():
    out = io.StringIO()
    logs.configure("console", stream=out)
    logs.get_logger("modelgen_watcher.watcher.pipeline").info("request.done", input_sha256=HASH, key="k")
    logging.getLogger("watchdog.observers.inotify_buffer").warning("Inotify queue overflowed")
    first, second = out.getvalue().splitlines()
    assert f"input_sha256={HASH[:12]} " in first + " " and HASH not in first
    assert "modelgen_watcher.watcher.pipeline" in first and "request.done" in first
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", first)  # local time, no T/Z
    assert "watchdog.observers.inotify_buffer" in second and "warning" in second


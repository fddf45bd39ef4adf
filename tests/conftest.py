"""Fixtures: a watch dir, and a factory for real daemons on it (stopped at teardown)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RUNNERS, Daemon, DaemonFactory

# The polling observer is tested at 0.1 s so the suite stays quick; it is the same code path.
OBSERVER_ARGS = {
    "native": ["--observer", "native"],
    "polling": ["--observer", "polling", "--poll-interval", "0.1"],
}


@pytest.fixture
def watch_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(params=sorted(OBSERVER_ARGS))
def observer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> str:
    """Each runner: the same test, through a process per request, a fork server and warm workers."""
    return str(request.param)


@pytest.fixture
def daemon_factory(watch_dir: Path) -> Iterator[DaemonFactory]:
    started: list[Daemon] = []

    def make(*args: str, env: dict[str, str] | None = None, start: bool = True, wait_ready: bool = True,
             fd_limit: int | None = None) -> Daemon:
        d = Daemon(watch_dir, *args, env=env, fd_limit=fd_limit)
        started.append(d)
        if start:
            d.start(wait_ready=wait_ready)
        return d

    yield make
    for d in started:
        if d.proc is not None:
            d.stop()


@pytest.fixture
def daemon(daemon_factory: DaemonFactory, observer: str, runner: str) -> Daemon:
    """A running daemon with the embedded reference model, for each observer and each runner."""
    return daemon_factory(*OBSERVER_ARGS[observer], "--runner", runner)

"""What every runner does so that no model process, nor anything it starts, outlives its work.

- ``take_charge`` (at start): the daemon becomes the subreaper of its models'
  descendants, and the model groups an earlier, killed daemon left running (recorded
  under ``.modelgen/run/``) are stopped.
- ``record``/``unrecord``: a model process group is recorded while it runs.
- ``sweep`` (after each run and every heartbeat): zombie children are reaped, and a
  child carrying a model's ``MODELGEN_RUN_ID`` that is not live any more is killed.
  Any other child is only reaped: as PID 1 every orphan of the container comes to us,
  and an operator's process there is not ours to kill.

A runner holds its own lock around ``sweep`` and the start of a model process, so a
model just started is never mistaken for a leftover.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection
from pathlib import Path

from ..logs import get_logger
from . import procfs
from .records import RUN_ID_ENV, RecordDir, RunRecord, stop_leftovers

log = get_logger(__name__)


class Containment:
    """The records and the sweep of one runner (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        """True once ``take_charge`` ran: only then are leftovers chased (not in the one-shot ``score``)."""
        self._records: RecordDir | None = None
        self._boot_id: str | None = None
        self._killed: set[int] = set()
        self._record_warned = False

    def take_charge(self, record_dir: Path, spare: Collection[int] = ()) -> int:
        """Become the subreaper and stop what a killed daemon left; returns how many model groups were stopped.

        Call it once, holding the watch dir's lock, before the first model starts, and
        only in a process that starts no children of its own besides models.
        """
        if not procfs.become_subreaper():
            log.info("runner.no_subreaper", reason="descendants that leave a model's group cannot be stopped here")
        self.active = True
        self._boot_id = procfs.boot_id()
        try:
            self._records = RecordDir.open(record_dir)
        except OSError as exc:
            log.error("runner.records_unusable", dir=str(record_dir), error=str(exc),
                      consequence="models left running by a killed daemon are not stopped at the next start")
            return 0
        try:
            found = stop_leftovers(self._records, spare=spare)
        except OSError as exc:
            log.error("runner.leftovers_unchecked", dir=str(record_dir), error=str(exc))
            return 0
        if found.groups or found.processes:
            log.warning("runner.leftovers_stopped", groups=found.groups, escaped=found.processes,
                        reason="model processes of an earlier daemon that was killed")
        return found.groups

    def record(self, pgid: int, run_id: str) -> None:
        """Record a model group while it runs, so a daemon started after a ``kill -9`` of this one stops it."""
        if self._records is None:
            return
        st = procfs.read_stat(pgid)
        try:
            self._records.write(RunRecord(pgid, st.start_time if st else None, self._boot_id, run_id))
        except OSError as exc:
            if not self._record_warned:
                self._record_warned = True
                log.warning("runner.record_failed", error=str(exc),
                            consequence="a model running when the daemon is killed is not stopped at the next start")

    def unrecord(self, pgid: int, run_id: str) -> None:
        if self._records is not None:
            self._records.remove(RunRecord(pgid, None, None, run_id))

    def sweep(self, live_pgids: Collection[int], live_ids: Collection[str]) -> int:
        """Reap zombie children and kill leftovers of model runs that are not live; returns how many."""
        handled = 0
        for child in procfs.children(os.getpid()):
            if child.pid in live_pgids:
                continue
            if child.zombie:
                handled += self.reap(child.pid)
            elif self.active:
                run_id = procfs.environ_value(child.pid, RUN_ID_ENV)
                if run_id is not None and run_id not in live_ids:
                    handled += self._kill_stray(child.pid)
        return handled

    def reap(self, pid: int) -> int:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if not reaped:
            return 0
        self._killed.discard(pid)
        return 1

    def _kill_stray(self, pid: int) -> int:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return 0
        if pid not in self._killed:  # one line per stray, not one per sweep until it is reaped
            self._killed.add(pid)
            log.warning("model.escaped", pid=pid, action="killed",
                        reason="it left a model's process group and outlived the model")
        return 1

"""Which inputs of the watch dir may have changed since the last look, at a cost that finished requests do not raise.

The daemon's periodic rescan and the polling event source both look through an
``InputScanner``. A watch dir that has served 10,000 requests holds 30,000 files
(input, result, status), of which only the inputs can ask for work, and almost all of
them are finished and quiet. Listing the directory and ``lstat``-ing each input at
every rescan, and every file at every poll, cost 2.7 % of a core at a 10-s rescan and
26 % polling every second. A scan does only what can find a change:

- **Names** (a new input, one renamed over, one removed): every such change moves the
  directory's mtime and ctime, so the directory is listed only when they moved since
  the last listing (``dirtimes.DirTimes``, which also says when a listing was too close
  to a change to trust), and every ``relist_every`` scans in case a file system does not
  keep them (once a listing shows one that does not, it is listed at every scan). A
  name renamed over is found by its new inode number in the listing, with no ``lstat``.
- **Content rewritten in place** (same name, same inode) shows only in the file's own
  ``lstat``: every scan ``lstat``s the legacy input (upstream's server rewrites it in
  place), every input that changed, appeared or had an event in the last
  ``HOT_SECONDS`` (a slow writer, a client publishing again, a touch asking for a failed
  request again are all recent), and, in turns, ``quiet_per_scan`` of the quiet rest.

``POLL`` and ``RESCAN`` say how much each scan does beyond what changed. The poller is
the only source of news where events do not arrive, so it checks more; the rescan is a
net behind events that do. ``scan(everything=True)`` (catch-up at start, ``--once``)
lists and checks every input.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Collection
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

from ..logs import get_logger
from .dirtimes import DirTimes
from .names import Names, Rejected, Request

log = get_logger(__name__)

Signature = tuple[int, int, int, int]
"""An input's ``(st_ino, st_size, st_mtime_ns, st_mode)``: what a rewrite, a rename over or a chmod changes."""

HOT_SECONDS = 600.0
"""An input that changed, appeared or had an event is checked at every scan for this long."""
@dataclass(frozen=True)
class Pace:
    """How much a scan does beyond what changed (each quiet ``lstat`` costs about 3 us, a listing of 30,000
    names about 20 ms)."""

    quiet_per_scan: int
    """Quiet inputs ``lstat``-ed per scan, in turn."""
    relist_every: int
    """Scans between listings of a directory whose mtime and ctime did not move."""


POLL = Pace(quiet_per_scan=1000, relist_every=10)
"""The polling observer (every ``--poll-interval``, 1 s): up to 1,000 quiet inputs are all checked at every
poll, 10,000 in 10 polls; a name on a file system that does not keep directory times is seen within 10."""
RESCAN = Pace(quiet_per_scan=250, relist_every=30)
"""The rescan (every ``--rescan-interval``, 10 s), behind events that arrive: an in-place rewrite of a quiet
input that no event reported is seen within ``ceil(quiet / 250)`` rescans (7 minutes for 10,000)."""


def signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


@dataclass(frozen=True)
class Change:
    """An input whose ``lstat`` differs from the last scan's (``old`` is None for an input new to the scanner)."""

    name: str
    request: Request
    old: Signature | None
    new: Signature


@dataclass
class Scan:
    changed: list[Change] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    """Names shaped like inputs with an invalid key, new in this listing (all of them with ``everything``)."""
    listed: bool = False
    checked: int = 0
    """Inputs ``lstat``-ed."""


@dataclass(slots=True)
class _Known:
    """What the scanner keeps of one input: one of these per input in the directory, tens of thousands in a
    directory that keeps its finished requests (hence slots, and no path: it is made when it is needed)."""

    request: Request
    d_ino: int
    sig: Signature | None = None


class InputScanner:
    """Keeps what the last scan saw of one directory's inputs; ``scan()`` says what changed since."""

    def __init__(self, root: Path, names: Names, pace: Pace) -> None:
        self.root = root
        self.names = names
        self._root = os.fsdecode(root)
        self._legacy = names.input(None)
        self._pace = pace
        self._known: dict[str, _Known] = {}
        self._listing: dict[str, int] = {}
        """The last listing: every name in the directory that may be an input (``Names.may_be_input``), with its
        inode number. Only those: results and statuses, twice as many, would triple its memory (a directory
        keeping 30,000 finished requests: 16 MiB for every name, 5 for these)."""
        self._count = 0
        """How many names the last listing found, of every kind: a periodic listing that finds another count
        (a new result or status too, such as the watcher's own) shows times that did not move."""
        self._hot: dict[str, float] = {}
        """Input name -> monotonic time until which it is checked at every scan."""
        self._turns: deque[str] = deque()
        """Every known input once (and names since removed, dropped when their turn comes)."""
        self._queued: set[str] = set()
        """The names in ``_turns``, so an input removed and published again is queued once."""
        self._times = DirTimes(root)
        self._scans_unlisted = 0
        self._always_list = False

    # -- the directory ------------------------------------------------------------

    def _list(self, everything: bool, now: float, scan: Scan, periodic: bool) -> None:
        """List the directory: new, replaced and removed inputs, new refused names.

        Only the names whose entry is new or has a new inode number since the last
        listing are looked at one by one (the comparison of 30,000 names is done on sets).
        A periodic listing (the directory's times had not moved) that finds such a name
        shows a file system that does not keep them: from then on the directory is
        listed at every scan.
        """
        with self._times.listing(), os.scandir(self._root) as entries:
            may_be_input = self.names.may_be_input
            listing: dict[str, int] = {}
            count = 0
            for entry in entries:
                count += 1
                if may_be_input(entry.name):
                    listing[entry.name] = entry.inode()
        previous, self._listing = self._listing, listing
        counted, self._count = self._count, count
        fresh: AbstractSet[tuple[str, int]]
        removed: AbstractSet[str]
        if everything:
            fresh, removed = listing.items(), set()
        elif listing == previous:  # the usual answer of a periodic listing, found at C speed
            fresh, removed = set(), set()
        else:
            fresh, removed = listing.items() - previous.items(), previous.keys() - listing.keys()
        for name, d_ino in fresh:
            kind = self.names.parse(name)
            if isinstance(kind, Rejected):
                if everything or name not in previous:
                    scan.rejected.append(kind)
            elif kind is not None:
                known = self._known.get(name)
                if known is None:
                    known = self._known[name] = _Known(kind, d_ino)
                    if name not in self._queued:
                        self._queued.add(name)
                        self._turns.append(name)
                elif known.d_ino == d_ino:
                    continue  # everything: an input listed before, unchanged
                known.d_ino = d_ino
                if not everything:
                    self._hot[name] = now + HOT_SECONDS  # new or renamed over: lstat it now
        for name in removed:
            if self._known.pop(name, None) is not None:
                self._hot.pop(name, None)
        if periodic and (removed or fresh or count != counted) and not self._always_list:
            self._always_list = True
            log.warning("scan.dir_times_unreliable", watch_dir=self._root,
                        reason="names changed while the directory's mtime and ctime stayed; listing it at every scan")
        self._scans_unlisted = 0
        scan.listed = True

    def _must_list(self) -> tuple[bool, bool]:
        """(list now, only because it is time to): the directory's times moved, or it is due, or always."""
        if self._always_list or not self._times.unchanged():
            return True, False
        return self._scans_unlisted + 1 >= self._pace.relist_every, True

    # -- the scan -------------------------------------------------------------------

    def scan(self, *, everything: bool = False, hint: Collection[str] = ()) -> Scan:
        """What changed since the last scan. ``hint``: names that had an event since (checked now, and kept hot).

        With ``everything`` every input is listed, checked and reported as changed.
        Raises OSError when the directory cannot be read.
        """
        now = time.monotonic()
        scan = Scan()
        listing, periodic = (True, False) if everything else self._must_list()
        if listing:
            self._list(everything, now, scan, periodic)
        else:
            self._scans_unlisted += 1
        for name in hint:
            if name in self._known:
                self._hot[name] = now + HOT_SECONDS
        for name in list(self._known) if everything else self._due(now):
            self._check(name, everything, now, scan)
        return scan

    def _due(self, now: float) -> list[str]:
        """The legacy input, the hot inputs, and the next quiet ones in turn."""
        for name in [n for n, until in self._hot.items() if until <= now]:
            del self._hot[name]
        due = list(self._hot)
        if self._legacy in self._known and self._legacy not in self._hot:
            due.append(self._legacy)
        quiet = 0
        for _ in range(len(self._turns)):
            if quiet >= self._pace.quiet_per_scan:
                break
            name = self._turns.popleft()
            if name not in self._known:
                self._queued.discard(name)  # removed: its turns end here
                continue
            self._turns.append(name)
            if name in self._hot or name == self._legacy:
                continue
            due.append(name)
            quiet += 1
        return due

    def _check(self, name: str, everything: bool, now: float, scan: Scan) -> None:
        known = self._known[name]
        try:
            st = os.lstat(os.path.join(self._root, name))
        except FileNotFoundError:  # removed since the listing: forgotten, so a file made again is new
            del self._known[name]
            self._listing.pop(name, None)
            self._hot.pop(name, None)
            return
        scan.checked += 1
        sig = signature(st)
        if everything or sig != known.sig:
            scan.changed.append(Change(name, known.request, known.sig, sig))
            if known.sig is not None and sig != known.sig:
                self._hot[name] = now + HOT_SECONDS
            known.sig = sig

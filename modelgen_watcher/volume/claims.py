"""Who serves a request when many watchers share one volume: claims, made of files on the volume itself.

Shared mode (``--shared``) runs any number of watchers on one watch dir, on one machine
or many. Nothing but the volume connects them, so the claims use only what NFS v3/v4
and local file systems do atomically: an exclusive create (``fsio.create_exclusive``,
a link), a removal, a ``utime``. Never ``flock``: across machines it is not there, or
not reliable.

- **A claim** is ``.modelgen/claims/<input name>.<generation>``, holding JSON: the
  watcher's id, a token of its own, the input's hash and mtime, and how many times the
  watchers stopped while serving those bytes (``interruptions``).
- **The owner** is the watcher whose claim has the highest generation.
- **Live** while its mtime is within the lease of the volume's now. The owner renews
  every claim it holds at every heartbeat (``renew``: ``utime``, set by the file
  server), long model runs included.
- **Taking**: a request with no claim is taken by creating generation 1. A claim whose
  lease ran out is taken over by creating generation g+1: the create is exclusive, so
  of any number of watchers that found it dead exactly one wins. Nothing is ever taken
  by a rename: a rename works on names, so a slow taker could move the winner's fresh
  claim. After any win, a listing: a higher generation means someone else won with a
  newer view, and ours is given back (``Taken``); lower ones are removed, lowest first.
  A claim of this watcher's id that this process did not make is a leftover of its
  earlier life (a pod restarted under its name): taken over at once.
- **Fence**: before each publication the owner checks that its claim is still there
  with its token and that generation g+1 does not exist (``fence``); a renewal checks
  the same. A watcher that lost its claim (paused, partitioned, too slow to renew)
  publishes nothing. The window that remains: a watcher paused longer than the lease
  exactly between the fence and its rename publishes after a takeover. It can only
  publish what it scored, named by its hash (docs/protocol.md says what that costs).
- **Release**: after publishing, the owner removes its claim. A run a shutdown
  stopped leaves its claim to expire (``keep``); a takeover then counts one more
  interruption, unless the claim says the request was only waiting for a busy warm
  worker (``mark_waiting``).

**Leases are measured on the volume's clock only** (``VolumeClock``): a claim's mtime is
set by the file server (or the local kernel) when it is created or renewed, and a
watcher reads "now" from that same clock, by touching a file of its own and reading its
mtime back, then counting forward on its own monotonic clock. No file time is ever
compared with ``time.time()``, so the machines' clocks, however wrong, do not enter.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..logs import get_logger
from . import fsio

log = get_logger(__name__)

MAX_CLAIM_BYTES = 64 * 1024
"""A claim is a line of JSON; anything larger is not one of ours."""
RETRY_SLACK = 1.0
"""Seconds past a live claim's lease at which a watcher that found it taken looks again (at most)."""
RACES = 3
"""Listings an ``acquire`` makes when claims vanish under it before it says ``Taken``."""


class ClaimDoc(BaseModel):
    """What a claim file holds."""

    watcher: str
    token: str
    """Unique to this claim: the fence tells it from a later claim with the same name."""
    input_sha256: str = ""
    input_mtime_ns: int = 0
    """With the hash, which publication of the input: publishing it again is a fresh start."""
    interruptions: int = 0
    """Times the watchers stopped while serving this publication (each takeover of a dead claim is one)."""
    given_up: bool = False
    """This publication was given up after too many interruptions: the claim is left as the memory of it."""
    waiting: bool = False
    """The request waits for a busy warm worker: its model does not have it, so a takeover counts no interruption."""


class ClaimLost(Exception):
    """This watcher no longer owns the request: another took it over. Publish nothing."""


@dataclass(frozen=True)
class Taken:
    """Another live watcher serves the request (or won the race for it): look again after ``retry_after`` s."""

    retry_after: float
    owner: str | None


class Held:
    """A claim this watcher won; ``lost`` once another watcher took the request over."""

    def __init__(self, name: str, generation: int, doc: ClaimDoc, path: Path, previous: ClaimDoc | None,
                 takeover: bool) -> None:
        self.name = name
        self.generation = generation
        self.doc = doc
        self.accepted: tuple[bytes, ...] = (_encode(doc),)
        """Every version of the claim this watcher wrote (at most two: ``waiting`` or not), any of which the file
        may hold while it is ours: the fence compares bytes (no parsing on the hot path). It only grows: a check
        on another thread (a renewal, a running status's fence) that read the file just before a rewrite's
        rename may compare after it, and must still know those bytes for its own. No other claim can hold
        them: the token is this claim's alone."""
        self.path = path
        self.previous = previous
        """What the claim taken over said (None for a fresh one, or one that could not be read)."""
        self.takeover = takeover
        self._lock = threading.Lock()
        self._lost = False
        self._on_lost: Callable[[], None] | None = None

    @property
    def lost(self) -> bool:
        with self._lock:
            return self._lost

    def mark_lost(self) -> bool:
        """Note the loss; True the first time. The callback (cancel the run) is called here, outside the lock."""
        with self._lock:
            if self._lost:
                return False
            self._lost = True
            callback = self._on_lost
        if callback is not None:
            callback()
        return True

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when the claim is lost (at once if it already is); None clears it."""
        with self._lock:
            self._on_lost = callback
            lost = self._lost
        if lost and callback is not None:
            callback()


class VolumeClock:
    """The volume's "now": the mtime the file system gives a file of ours when touched, carried forward on
    the monotonic clock between two readings.

    ``sync`` touches the probe (``utime`` with no times: the kernel, or the NFS server,
    sets its own time) and reads it back; the daemon calls it at every heartbeat.
    ``now_ns`` adds the monotonic time elapsed since, which is free of clock steps.
    """

    def __init__(self, probe: Path) -> None:
        self._probe = probe
        self._anchor: tuple[int, int] | None = None
        """(the volume's time, ``time.monotonic_ns()``) at the last reading."""

    def sync(self) -> int:
        """Read the volume's clock now; returns it (ns)."""
        before = time.monotonic_ns()
        try:
            os.utime(self._probe)
        except FileNotFoundError:
            fd = os.open(self._probe, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            os.close(fd)
            os.utime(self._probe)
        after = time.monotonic_ns()
        volume_ns = os.lstat(self._probe).st_mtime_ns
        self._anchor = (volume_ns, (before + after) // 2)
        return volume_ns

    def now_ns(self) -> int:
        anchor = self._anchor
        if anchor is None:
            self.sync()
            anchor = self._anchor
            assert anchor is not None
        return anchor[0] + time.monotonic_ns() - anchor[1]

    def now(self) -> float:
        """The volume's now in seconds: for what compares file times with now (retention, settle)."""
        return self.now_ns() / 1e9


@dataclass(frozen=True)
class _Found:
    generation: int
    doc: ClaimDoc | None
    mtime_ns: int


class Claims:
    """This watcher's claims in one claims directory (see the module docstring). Thread-safe."""

    def __init__(self, directory: Path, temp_dir: Path, watcher: str, lease: float, clock: VolumeClock) -> None:
        self.directory = directory
        self.temp_dir = temp_dir
        self.watcher = watcher
        self.lease = lease
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}
        """Token -> claim, for the claims this process holds and renews."""

    # -- taking ---------------------------------------------------------------------

    def acquire(self, name: str, *, sha: str = "", mtime_ns: int = 0, lease: float | None = None,
                give_up_at: int = 0) -> Held | Taken:
        """Claim ``name`` for the input published at ``mtime_ns`` with hash ``sha``: ``Held`` when this watcher
        now owns it, ``Taken`` when another live one does.

        A takeover of a claim for the same publication counts one more interruption; at
        ``give_up_at`` (0: never) the new claim says ``given_up``, and so does every later
        takeover of that publication. ``lease`` overrides the lease for this name (the
        retention sweeper's claim lives as long as a sweep interval).
        """
        lease_ns = int((self.lease if lease is None else lease) * 1e9)
        for _ in range(RACES):
            gens = self._generations(name)
            if not gens:
                won = self._create(name, 1, sha, mtime_ns, None, give_up_at)
                if won is not None:
                    return won
                continue  # someone made generation 1 first: look at it
            top = self._read(name, gens[-1])
            if top is None:
                continue  # removed as we looked: look again
            taken = self._live(top, lease_ns)
            if taken is not None:
                return taken
            won = self._create(name, top.generation + 1, sha, mtime_ns, top, give_up_at)
            if won is not None:
                return won
        return Taken(self.lease + RETRY_SLACK, None)

    def _live(self, top: _Found, lease_ns: int) -> Taken | None:
        """``Taken`` while ``top`` is another's live claim; None when it may be taken over."""
        doc = top.doc
        if doc is not None and doc.watcher == self.watcher:
            with self._lock:
                if doc.token not in self._held:
                    return None  # a leftover of this watcher's earlier life
        age = self.clock.now_ns() - top.mtime_ns
        if age >= lease_ns:
            return None
        remaining = (lease_ns - age) / 1e9
        return Taken(remaining + min(RETRY_SLACK, lease_ns / 1e9 / 10), doc.watcher if doc else None)

    def _create(self, name: str, generation: int, sha: str, mtime_ns: int, previous: _Found | None,
                give_up_at: int) -> Held | None:
        """Create generation ``generation`` of ``name``; the claim when this watcher won it and owns the name."""
        before = previous.doc if previous is not None else None
        interruptions = 0
        given_up = False
        if before is not None and (before.input_sha256, before.input_mtime_ns) == (sha, mtime_ns):
            interruptions = before.interruptions + (0 if before.given_up or before.waiting else 1)
            given_up = before.given_up or 0 < give_up_at <= interruptions
        doc = ClaimDoc(watcher=self.watcher, token=secrets.token_hex(8), input_sha256=sha, input_mtime_ns=mtime_ns,
                       interruptions=interruptions, given_up=given_up)
        path = self._path(name, generation)
        if not fsio.create_exclusive(path, _encode(doc), self.temp_dir):
            return None
        # Won this generation. A higher one means another watcher won with a newer view (our listing was
        # stale): ours goes. Lower ones are dead (or that other watcher's loss): removed, lowest first, so
        # that a generation's file never outlives the next one's.
        gens = self._generations(name)
        if any(g > generation for g in gens):
            fsio.remove_quietly(path)
            return None
        for g in gens:
            if g < generation:
                _remove(self._path(name, g))
        held = Held(name, generation, doc, path, before, takeover=previous is not None)
        with self._lock:
            self._held[doc.token] = held
        return held

    # -- holding --------------------------------------------------------------------

    def fence(self, held: Held) -> None:
        """Raise ClaimLost unless this watcher still owns ``held``'s request: its claim is there with its token
        and no higher generation exists. Called just before each rename that publishes."""
        if held.lost or not self._still_owner(held):
            held.mark_lost()
            raise ClaimLost(f"another watcher took over {held.name}")

    def _still_owner(self, held: Held) -> bool:
        return self._is_ours(held) and not os.path.lexists(self._path(held.name, held.generation + 1))

    @staticmethod
    def _is_ours(held: Held) -> bool:
        """``held``'s file holds what this watcher wrote there (its token with it). Read through an open, which on
        NFS asks the server (close-to-open consistency); anything but a regular file is not ours."""
        try:
            fd = os.open(held.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return False
            raise
        try:  # a margin over the longest version known: a read too short could only say "not ours"
            return os.read(fd, max(len(raw) for raw in held.accepted) + 64) in held.accepted
        except IsADirectoryError:
            return False
        finally:
            os.close(fd)

    def renew(self) -> list[Held]:
        """Renew every claim held (at every heartbeat); returns those found lost meanwhile (each once).

        A claim that cannot be checked (an I/O error) is left as it is and tried again at
        the next heartbeat: if that lasts past the lease, another watcher takes over and
        the next check finds it.
        """
        with self._lock:
            held = list(self._held.values())
        lost = []
        for claim in held:
            if claim.lost:
                continue
            try:
                owner = self._still_owner(claim)
                if owner:
                    os.utime(claim.path)
            except FileNotFoundError:
                owner = False
            except OSError as exc:
                log.warning("claim.renew_failed", claim=claim.path.name, error=str(exc))
                continue
            if not owner:
                with self._lock:
                    self._held.pop(claim.doc.token, None)
                if claim.mark_lost():
                    lost.append(claim)
        return lost

    def release(self, held: Held) -> None:
        """The request is published (or ended): remove this watcher's claim, unless it was lost already."""
        with self._lock:
            self._held.pop(held.doc.token, None)
        if held.lost:
            return  # the watcher that took it over removes it
        if self._is_ours(held):
            _remove(held.path)

    def mark_waiting(self, held: Held, waits: bool) -> None:
        """Note in ``held``'s claim that its request waits for a busy warm worker (``waits``), or no longer: a
        takeover while it waits counts no interruption (its model never had it). The owner rewrites its own
        claim, same token, fenced like a publication; ClaimLost if it is not its own any more."""
        doc = held.doc.model_copy(update={"waiting": waits})
        raw = _encode(doc)
        if raw not in held.accepted:
            held.accepted = (*held.accepted, raw)  # before the rename: from then on the file may hold either
        fsio.atomic_write(held.path, raw, temp_prefix=".", temp_dir=self.temp_dir, durable=False,
                          before_replace=functools.partial(self.fence, held))
        held.doc = doc

    def keep(self, held: Held) -> None:
        """Stop renewing ``held`` and leave its file in place: it expires by itself.

        For a request given up (the file, which says ``given_up``, is the memory of it:
        whoever takes it over gives up too), for a run that a shutdown stopped at the model
        (a takeover after the lease counts it as an interruption), and for retention's
        last sweep (its time is when the next is due).
        """
        with self._lock:
            self._held.pop(held.doc.token, None)

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    # -- what is claimed --------------------------------------------------------------

    def live_names(self) -> set[str]:
        """Names whose newest claim is live (retention leaves their requests alone)."""
        now = self.clock.now_ns()
        lease_ns = int(self.lease * 1e9)
        newest: dict[str, int] = {}
        for name, _, mtime_ns in self._listing():
            newest[name] = max(newest.get(name, 0), mtime_ns)
        return {name for name, mtime_ns in newest.items() if now - mtime_ns < lease_ns}

    def prune(self, gone: Callable[[str], bool]) -> int:
        """Remove the dead claims (lease run out) of names for which ``gone`` is true (their input was removed:
        nobody will look at them again); returns how many files went."""
        now = self.clock.now_ns()
        lease_ns = int(self.lease * 1e9)
        removed = 0
        for name, generation, mtime_ns in sorted(self._listing(), key=lambda c: (c[0], c[1])):
            if now - mtime_ns >= lease_ns and not name.startswith(".") and gone(name):
                removed += _remove(self._path(name, generation))
        return removed

    # -- files ------------------------------------------------------------------------

    def _path(self, name: str, generation: int) -> Path:
        return self.directory / f"{name}.{generation}"

    def _generations(self, name: str) -> list[int]:
        """The generations of ``name`` present, in order (the claims directory holds few files: claims in flight)."""
        prefix = name + "."
        gens = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(prefix):
                    rest = entry.name[len(prefix):]
                    if rest.isascii() and rest.isdigit():
                        gens.append(int(rest))
        gens.sort()
        return gens

    def _listing(self) -> list[tuple[str, int, int]]:
        """Every claim file: (name, generation, mtime in ns)."""
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name, _, rest = entry.name.rpartition(".")
                if not (name and rest.isascii() and rest.isdigit()):
                    continue
                try:
                    mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                except FileNotFoundError:
                    continue
                found.append((name, int(rest), mtime_ns))
        return found

    def _read(self, name: str, generation: int) -> _Found | None:
        """Generation ``generation`` of ``name``: what it says (None if unreadable) and its mtime; None when missing.

        Read through an open file: on NFS an open revalidates the file's attributes with
        the server (close-to-open), so the mtime is the server's, not a cached one.
        """
        path = self._path(name, generation)
        try:
            snap = fsio.safe_read(path, MAX_CLAIM_BYTES)
        except FileNotFoundError:
            return None
        except fsio.UnsafeFile:
            return _Found(generation, None, 0)  # not a claim (a directory, a symlink): dead at once
        try:
            doc = ClaimDoc.model_validate_json(snap.data)
        except ValidationError:
            doc = None  # being written where there are no hard links, or damaged: live by its mtime alone
        return _Found(generation, doc, snap.mtime_ns)


def _encode(doc: ClaimDoc) -> bytes:
    return doc.model_dump_json().encode()


def _remove(path: Path) -> int:
    """Remove a claim file; 1 when it went, 0 when it was gone (or is not a file: left for a person)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.EPERM):
            return 0
        raise
    return 1

"""What a node offers to its LAN: the content index, kept in the node's state directory.

One record (:class:`Holding`) per content this machine holds: its label
(``swift.content.label``), the file that holds it, the size, the hashed piece
size and the pieces' SHA-256 (``swift.piecehash``), the ranges written, the
file's inode and (once finished) its ``mtime_ns`` at recording time, and
whether it is private.

Rules:

* **Never a changed file.** A holding is offered only while its file is the
  one recorded: same inode and size, and for a finished file the same
  ``mtime_ns``. A file edited, replaced, moved or deleted by its user is
  never offered (:meth:`ContentIndex.offered` is None), and a request for it
  fails over to other sources. A download in flight (``NAME.part``) is
  written all the time, so only its inode and size are checked; its bytes
  are offered only where its done set says they are written.
* **A download that stopped.** A download in flight republishes its holding
  several times a second (``updated_ns``). One silent for
  :data:`STOPPED_AFTER` seconds has stopped (killed, crashed, stalled):
  what it was fetching is no hint any more (:meth:`Holding.fetching_now`),
  and its done pieces stay offered only while its part file was not written
  after its last publication (:meth:`Holding.still_matches`): they are
  bytes it checked and hashed, and nothing has touched them since. A part
  file written again by anyone else (a run with ``--no-share``, a restart
  that reused the inode) is not offered.
* **One file, one holding.** Recording a holding drops every other holding
  of the same path: a part file started over for another version of the
  file, or a file overwritten by another download, is that download's now.
* **Never private content.** A holding marked private is kept (so
  ``shares`` can say why it is not offered) but never offered.
* **One file, many processes.** The index is ``shares.json`` in the state
  directory, shared by the node and every ``get`` run with the same state
  directory (that is how a ``get`` hands its file to the running node). Every
  change is a read-modify-write under an exclusive ``flock`` on
  ``shares.lock``, written to a temporary file, fsynced and renamed into
  place, so a reader sees the old index or the new one, never a mix, and two
  writers never lose each other's records. A reader re-reads the file only
  when its ``mtime_ns`` or inode changed.
* **Piece hashes apart.** A holding's piece hashes are not in ``shares.json``
  but in ``shares.d/LABEL.sha256``: 32 raw bytes per piece at offset
  ``32 * index`` (all zero: not hashed yet). A download in flight
  republishes four times a second; with the hashes inline every publication
  rewrote every holding's hashes (31 MB for a hundred finished 4 GiB files,
  0.7 s each time). Now a publication writes only the digests new since the
  last one, before the index that names their pieces done, so a reader never
  sees a piece done without its digest whole; the index itself stays a few
  hundred bytes per holding. A digest file that cannot be read costs only
  sharing (its pieces are not offered).
* **Bad input.** An index that cannot be parsed (truncated, edited) is
  logged in one line and treated as empty: it only ever costs sharing,
  never a wrong byte (every LAN piece is checked by the requester anyway).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from .planning import RangeSet

__all__ = ["ContentIndex", "Holding", "INDEX_NAME"]

log = logging.getLogger(__name__)

INDEX_NAME = "shares.json"
LOCK_NAME = "shares.lock"
#: The directory of the holdings' piece digests (``LABEL.sha256``, see the rules).
HASHES_DIR = "shares.d"
_DIGEST = 32  # bytes of one SHA-256
_UNKNOWN = bytes(_DIGEST)
INDEX_VERSION = 1
#: Most holdings an index keeps: the oldest go first. Each is a few hundred bytes in
#: the index (its digests, 32 bytes a piece, are a file of their own).
MAX_HOLDINGS = 1024
#: Seconds after its last publication that a download in flight counts as stopped.
#: A running download republishes every quarter second while anything changes
#: (``engine.sharing.PUBLISH_INTERVAL``), so one silent this long was killed, crashed
#: or stalled; a requester must not wait for what it said it was fetching. The same
#: span is the slack for its last writes after its last publication.
STOPPED_AFTER = 3.0


@dataclass(frozen=True)
class Holding:
    """One content this machine holds; see the module docstring for the rules."""

    label: str
    path: str
    size: int
    piece_size: int
    done: RangeSet = field(default_factory=RangeSet)
    #: piece index -> SHA-256 hex; pieces without one are never offered
    hashes: dict[int, str] = field(default_factory=dict)
    inode: int = 0
    #: the file's mtime_ns when it was finished; None while the download is in flight
    mtime_ns: int | None = None
    private: bool = False
    #: why it is private, in words (shown by ``shares``)
    why_private: str = ""
    name: str = ""
    #: bytes the download in flight is fetching from the origin now (offered as a hint)
    fetching: RangeSet = field(default_factory=RangeSet)
    #: a random name of this holding (``protocol.Held.holder``)
    holder: str = ""
    #: wall-clock ns of the last publish: ``fetching`` is stale once its download stopped
    updated_ns: int = 0

    @property
    def complete(self) -> bool:
        return self.mtime_ns is not None

    def matches(self, st: os.stat_result) -> bool:
        """True if ``st`` (the file's stat now) is the file recorded (see the rules)."""
        if not stat.S_ISREG(st.st_mode) or st.st_ino != self.inode or st.st_size != self.size:
            return False
        return self.mtime_ns is None or st.st_mtime_ns == self.mtime_ns

    def stopped(self, now_ns: int) -> bool:
        """True for a download in flight that has not published for :data:`STOPPED_AFTER`
        seconds at wall-clock ``now_ns`` (never for a finished file, or a holding whose
        time is unknown: ``updated_ns`` 0, as an older index records it)."""
        return (not self.complete and self.updated_ns > 0
                and now_ns - self.updated_ns >= STOPPED_AFTER * 1e9)

    def fetching_now(self, now_ns: int) -> RangeSet:
        """What its download fetches from the origin now, as a hint to others: nothing once
        it is finished or stopped (see the module docstring)."""
        if self.complete or self.updated_ns == 0 or self.stopped(now_ns):
            return RangeSet()
        return self.fetching

    def answers(self, now_ns: int) -> bool:
        """True if a query for it gets an answer naming it: not for a download that stopped
        before it had a piece to offer (it is not a member starting the file either)."""
        return not self.stopped(now_ns) or bool(self.offered_ranges())

    def still_matches(self, st: os.stat_result, now_ns: int) -> bool:
        """:meth:`matches`, and for a download that stopped: its file was not written
        after its last publication (within :data:`STOPPED_AFTER` for its last writes)."""
        if not self.matches(st):
            return False
        return not self.stopped(now_ns) or \
            st.st_mtime_ns <= self.updated_ns + int(STOPPED_AFTER * 1e9)

    def offered_ranges(self) -> list[tuple[int, int]]:
        """The done ranges whose pieces all have a hash: what a requester can check."""
        out = RangeSet()
        for start, end in self.done:
            first = start // self.piece_size
            last = -(-end // self.piece_size)
            for index in range(first, last):
                p_start = index * self.piece_size
                p_end = min(self.size, p_start + self.piece_size)
                if start <= p_start and p_end <= end and index in self.hashes:
                    out.add(p_start, p_end)
        return list(out)

    def to_json(self) -> dict:
        """The index's record of this holding (its digests are kept apart: ``ContentIndex``)."""
        return {"label": self.label, "path": self.path, "size": self.size,
                "piece_size": self.piece_size, "done": self.done.to_json(),
                "inode": self.inode, "mtime_ns": self.mtime_ns, "private": self.private,
                "why_private": self.why_private, "name": self.name,
                "fetching": self.fetching.to_json(), "holder": self.holder,
                "updated_ns": self.updated_ns}

    @classmethod
    def from_json(cls, obj: object) -> "Holding":
        """A holding from the index file; ValueError for anything ``to_json`` could not write."""
        if not isinstance(obj, dict):
            raise ValueError("a holding must be an object")
        size, piece = obj.get("size"), obj.get("piece_size")
        if type(size) is not int or type(piece) is not int or size < 0 or piece <= 0:
            raise ValueError("bad size or piece size")
        label, path = obj.get("label"), obj.get("path")
        if (type(label) is not str or len(label) != 64 or type(path) is not str
                or not os.path.isabs(path)):
            raise ValueError("bad label or path")
        hashes = obj.get("hashes", {})  # inline in indexes written before ``shares.d``
        if not isinstance(hashes, dict):
            raise ValueError("bad hashes")
        parsed = {}
        for key, value in hashes.items():
            if not key.isdigit() or type(value) is not str or len(value) != 64:
                raise ValueError(f"bad hash entry {key!r}")
            parsed[int(key)] = value
        mtime, inode = obj.get("mtime_ns"), obj.get("inode")
        if type(inode) is not int or not (mtime is None or type(mtime) is int):
            raise ValueError("bad inode or mtime")
        return cls(label=label, path=path, size=size, piece_size=piece,
                   done=RangeSet.from_json(obj.get("done"), size), hashes=parsed, inode=inode,
                   mtime_ns=mtime, private=bool(obj.get("private")),
                   why_private=str(obj.get("why_private") or ""), name=str(obj.get("name") or ""),
                   fetching=RangeSet.from_json(obj.get("fetching") or [], size),
                   holder=_holder(obj.get("holder")),
                   updated_ns=obj.get("updated_ns") if type(obj.get("updated_ns")) is int else 0)


def _holder(value: object) -> str:
    if value in (None, ""):
        return ""
    if type(value) is not str or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("bad holder")
    return value


class ContentIndex:
    """The holdings of one state directory; thread-safe, and safe across processes.

    ``offered(label)`` is what a job server may serve; ``record``/``update``/
    ``remove`` change the index on disk at once (see the module docstring).
    """

    def __init__(self, state_dir: Path, *, enabled: bool = True) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / INDEX_NAME
        #: False with ``--no-share`` on a node: nothing is offered (records are still kept)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._holdings: dict[str, Holding] = {}
        self._seen: tuple[int, int] | None = None  # (mtime_ns, inode) of the file last read
        self._warned = False
        #: label -> (the digest file's (mtime_ns, size, inode) when read, its digests)
        self._digests: dict[str, tuple[tuple[int, int, int], dict[int, str]]] = {}

    # -- reading ------------------------------------------------------------------------------
    def holdings(self) -> list[Holding]:
        """Every holding recorded (offered or not), as the file says now."""
        with self._lock:
            self._refresh()
            return [self._whole(h) for h in self._holdings.values()]

    def get(self, label: str) -> Holding | None:
        with self._lock:
            self._refresh()
            holding = self._holdings.get(label)
            return self._whole(holding) if holding is not None else None

    def _whole(self, holding: Holding) -> Holding:
        """``holding`` with its digests (under ``_lock``)."""
        digests = self._read_digests(holding)
        if holding.hashes:  # an index written before ``shares.d``
            digests = {**holding.hashes, **digests}
        return replace(holding, hashes=digests)

    def offered(self, label: str) -> Holding | None:
        """The holding to serve ``label`` from, or None: not held, private, sharing off, or
        its file is no longer the one recorded."""
        if not self.enabled:
            return None
        holding = self.get(label)
        if holding is None or holding.private:
            return None
        try:
            st = os.stat(holding.path)
        except OSError:
            return None
        return holding if holding.still_matches(st, time.time_ns()) else None

    # -- changing -----------------------------------------------------------------------------
    def record(self, holding: Holding) -> None:
        """Add or replace the holding with its label, and drop every other one of its path
        (StorageError-free: a failure is logged)."""
        def apply(holdings: dict[str, Holding]) -> None:
            for key in [k for k, h in holdings.items() if h.path == holding.path]:
                del holdings[key]
            self._write_digests(holding, holding.hashes, whole=True)
            holdings[holding.label] = replace(holding, hashes={})
        self._change(apply)

    def drop(self, label: str, holder: str) -> None:
        """Remove the holding ``label`` if it is still the one named ``holder`` (a download
        withdrawing its own holding leaves one another download recorded meanwhile)."""
        def apply(holdings: dict[str, Holding]) -> None:
            if label in holdings and holdings[label].holder == holder:
                del holdings[label]
        self._change(apply)

    def update(self, label: str, **changes) -> None:
        """Change fields of the holding ``label`` (nothing if it is gone meanwhile).

        Not fsynced: a download in flight republishes several times a second, and an
        update lost in a crash costs only sharing (the file is still replaced whole)."""
        hashes = changes.pop("hashes", None)

        def apply(holdings: dict[str, Holding]) -> None:
            if label in holdings:
                if hashes is not None:  # first: a piece is never named done before its digest
                    self._write_digests(holdings[label], hashes)
                holdings[label] = replace(holdings[label], **changes)
        self._change(apply, durable=False)

    def remove(self, label_or_path: str) -> list[Holding]:
        """Stop offering the holdings with that label (or a prefix of 8+ characters of one),
        or whose file is that path; the holdings removed."""
        removed: list[Holding] = []

        def apply(holdings: dict[str, Holding]) -> None:
            for key, h in list(holdings.items()):
                if (key == label_or_path or (len(label_or_path) >= 8 and key.startswith(label_or_path))
                        or h.path == label_or_path or h.path == os.path.abspath(label_or_path)):
                    removed.append(holdings.pop(key))
        self._change(apply)
        return removed

    # -- the file -----------------------------------------------------------------------------
    def _change(self, apply, durable: bool = True) -> None:
        with self._lock:
            try:
                with self._file_lock():
                    self._seen = None
                    self._refresh()
                    before = set(self._holdings)
                    apply(self._holdings)
                    while len(self._holdings) > MAX_HOLDINGS:
                        del self._holdings[next(iter(self._holdings))]
                    for holding in self._holdings.values():  # an index from before shares.d
                        if holding.hashes:
                            self._write_digests(holding, holding.hashes, whole=True)
                    self._holdings = {k: replace(h, hashes={}) if h.hashes else h
                                      for k, h in self._holdings.items()}
                    self._save(durable)
                    for label in before - set(self._holdings):
                        self._forget_digests(label)
            except OSError as exc:  # said once: a download republishes four times a second
                (log.debug if self._warned else log.warning)(
                    "cannot update what this machine shares (%s): %s; it is not offered", self.path, exc)
                self._warned = True

    # -- the digest files -----------------------------------------------------------------------
    def _digest_path(self, label: str) -> Path:
        return self.state_dir / HASHES_DIR / f"{label}.sha256"

    def _read_digests(self, holding: Holding) -> dict[int, str]:
        """The digests in ``holding``'s file (empty if it has none or cannot be read)."""
        path = self._digest_path(holding.label)
        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._digests.get(holding.label)
            # a finished holding's file no longer changes; one in flight is read each time
            # (two writes within the file system's time granularity keep its mtime)
            if cached is not None and cached[0] == key and holding.complete:
                return dict(cached[1])
            count = -(-holding.size // holding.piece_size) if holding.size else 0
            with open(path, "rb") as f:
                data = f.read(count * _DIGEST)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.info("cannot read the piece digests of %s (%s): its pieces are not offered",
                     holding.name or holding.label[:12], exc)
            return {}
        digests = {i: data[i * _DIGEST:(i + 1) * _DIGEST].hex()
                   for i in range(len(data) // _DIGEST)
                   if data[i * _DIGEST:(i + 1) * _DIGEST] != _UNKNOWN}
        self._digests[holding.label] = (key, digests)
        return dict(digests)

    def _write_digests(self, holding: Holding, hashes: dict[int, str], *,
                       whole: bool = False) -> None:
        """Write ``hashes`` to ``holding``'s digest file (under the file lock): ``whole``
        makes a new file (written aside, renamed in); else only the digests it lacks are
        written in place."""
        path = self._digest_path(holding.label)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        count = -(-holding.size // holding.piece_size) if holding.size else 0
        known = {} if whole else self._read_digests(holding)
        new = {i: h for i, h in hashes.items() if 0 <= i < count and known.get(i) != h}
        gone = [i for i in known if i not in hashes]  # a piece given up: unknown again
        if whole:
            data = bytearray(count * _DIGEST)
            for i, h in new.items():
                data[i * _DIGEST:(i + 1) * _DIGEST] = bytes.fromhex(h)
            fd, tmp = tempfile.mkstemp(prefix=".digests-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
                tmp = None
            finally:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
        elif new or gone:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                for i in gone:
                    os.pwrite(fd, _UNKNOWN, i * _DIGEST)
                for i, h in sorted(new.items()):
                    os.pwrite(fd, bytes.fromhex(h), i * _DIGEST)
            finally:
                os.close(fd)
        else:
            return
        st = os.stat(path)
        kept = {i: h for i, h in known.items() if i not in gone}
        self._digests[holding.label] = ((st.st_mtime_ns, st.st_size, st.st_ino), {**kept, **new})

    def _forget_digests(self, label: str) -> None:
        self._digests.pop(label, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._digest_path(label))

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _refresh(self) -> None:
        """Re-read the index if the file changed since it was last read (under ``_lock``)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._holdings, self._seen = {}, None
            return
        except OSError as exc:
            log.warning("cannot read what this machine shares (%s): %s", self.path, exc)
            return
        seen = (st.st_mtime_ns, st.st_ino)
        if seen == self._seen:
            return
        self._seen = seen
        self._holdings = self._load()

    def _load(self) -> dict[str, Holding]:
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(obj, dict) or obj.get("version") != INDEX_VERSION:
                raise ValueError(f"not a version {INDEX_VERSION} index")
            holdings = [Holding.from_json(item) for item in obj.get("holdings", [])]
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("ignoring the share index %s (%s): nothing from it is offered", self.path,
                        exc)
            return {}
        return {h.label: h for h in holdings}

    def _save(self, durable: bool = True) -> None:
        data = json.dumps({"version": INDEX_VERSION,
                           "holdings": [h.to_json() for h in self._holdings.values()]},
                          separators=(",", ":")).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=".shares-", suffix=".tmp", dir=self.state_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            tmp = None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        st = os.stat(self.path)
        self._seen = (st.st_mtime_ns, st.st_ino)

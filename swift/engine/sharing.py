"""Sharing in one download: publish what it writes, and find the LAN copies it can use.

Two halves (docs/sharing.md):

* :class:`Publisher` feeds every block the download writes to a
  :class:`~swift.piecehash.PieceHasher` and records the download in the
  machine's content index (``swift.content_index``): first as ``NAME.part``
  in flight, its done ranges and piece hashes republished with each resume
  record, then as the finished file. What a download resumed from an earlier
  run already holds is read back and hashed by :class:`ResumedPieces`; a
  file that fails its whole-file checksum is withdrawn. Content that is
  private (credentials, cookies, a secret header, ``Cache-Control:
  private``/``no-store``) is recorded as private and never offered.
* :func:`ask_peers` asks every helper what it holds of the download's label
  (``query``/``held``), all at once with one deadline, right after the
  probe: the label is made of the origin's answer, so it cannot be asked
  before. What a helper answers becomes a *LAN copy* source
  (``engine.lan_copy``).

Pure policy is kept out of the I/O: :func:`identity_of` (a SHA-256/512
the file is checked against names it; else the URL and the validator) and
:func:`held_ranges` take values and return values.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

from .. import content, http
from ..content_index import ContentIndex, Holding
from ..piecehash import PieceHasher, pieces_within, piece_size_for
from ..planning import RangeSet
from .options import Options
from .report import Report

if TYPE_CHECKING:  # the peer machinery loads only where helpers are asked (start-up time)
    from .. import protocol
    from ..membership import Peer

log = logging.getLogger(__name__)

#: The source key prefix of a LAN copy: ``copy@HOST:PORT`` (a helper's origin
#: fetches stay ``HOST:PORT``, so the report tells the two apart).
LAN_PREFIX = Report.LAN_PREFIX
#: Seconds between two publications of a download in flight (its done ranges, piece
#: hashes and what it fetches now): another member that fetches the same file sees
#: our work this much later at most, and fetches twice what both fetch meanwhile.
#: The index is rewritten each time (a few KiB, not fsynced): cheap at 4 a second.
PUBLISH_INTERVAL = 0.25
#: Seconds the end of a download waits for the pieces it resumed to be hashed before it
#: records the finished file: they are read back at disk speed (a GB in seconds) from
#: the start of the download, so they are hashed long before unless nearly everything
#: was resumed; a piece still unhashed then is not offered (an error costs no more).
RESUMED_WAIT = 10.0
#: Bytes read back and hashed at once by :class:`ResumedPieces` (its whole memory), and
#: between two looks at its stop flags.
RESUMED_BLOCK = 1 << 20
#: Seconds the requester waits for every helper's answer to its query: a LAN round
#: trip and a handshake take milliseconds; a helper slower than this is not asked
#: for a copy in this download (it still fetches from the origin).
QUERY_DEADLINE = 2.0


def identity_of(url: str, probe: http.ProbeResult,
                checksum: str | None) -> tuple[content.ContentIdentity, str] | None:
    """What the download is shared under: its content identity and the URL's
    ``content.url_key`` ("" when a digest names the content: the URL then takes no
    part, whichever mirror or URL served the bytes). None: it cannot be shared (no
    length; no strong validator and no trusted digest; or, without a digest, a URL
    without a host).

    ``checksum`` is the ``ALGO:HEX`` the whole file is checked against at the end
    (``--checksum``, a Metalink's hash, or the origin's ``Repr-Digest``/``Digest``
    as the download adopted it); a SHA-256 or SHA-512 one is the identity
    (``content.identity_digest``; docs/sharing.md, "Identity")."""
    if probe.size is None:
        return None
    identity = content.ContentIdentity.of(probe.size, probe.encoding, probe.validator.etag,
                                          probe.validator.last_modified,
                                          content.identity_digest(checksum))
    if not identity.shareable:
        return None
    if identity.digest is not None:
        return identity, ""
    try:
        return identity, content.url_key(url)
    except ValueError:
        return None


def held_ranges(held: protocol.Held, size: int) -> tuple[RangeSet, dict[int, str]]:
    """What of a ``held`` answer a requester can check: the whole pieces that lie in its
    ranges *and* have a hash (anything else it offers is ignored)."""
    hashes = {index: digest for index, digest in held.hashes}
    usable = RangeSet()
    if held.size != size or held.piece_size != piece_size_for(size):
        return usable, {}
    for index in pieces_within(held.ranges, size, held.piece_size):
        if index in hashes:
            start = index * held.piece_size
            usable.add(start, min(size, start + held.piece_size))
    return usable, hashes


#: A member's claim (``held.fetching``) is left to it while it is at most this many
#: pieces (an honest download claims its running assignments: a few per worker, two
#: pieces each, about 32 with 16 workers) ...
CLAIM_FLOOR_PIECES = 64
#: ... or what its holding grew by in this many seconds at its pace so far.
CLAIM_SECONDS = 30.0


def claim_honoured(claimed: int, held: int, first_held: int, first_seen: float, now: float,
                   piece_size: int) -> bool:
    """Whether this download leaves a member's claim of ``claimed`` bytes to it.

    ``held`` is what the member offers now, ``first_held`` what it offered when first
    seen at ``first_seen`` (seconds, the clock of ``now``). A member that claims the
    whole file and hands out a trickle would hold every other member's download to
    its pace: it keeps at most ``CLAIM_SECONDS`` of its own pace (and always
    ``CLAIM_FLOOR_PIECES`` pieces, so that a download just started, whose pace is not
    known yet, keeps its first assignments). Beyond that its claim is ignored (the
    bytes are fetched here too: copies, never a wrong byte)."""
    if claimed <= CLAIM_FLOOR_PIECES * piece_size:
        return True
    elapsed = now - first_seen
    if elapsed <= 0:
        return False
    return claimed <= (held - first_held) / elapsed * CLAIM_SECONDS


#: Seconds a LAN copy may go without delivering a piece, while it holds bytes this
#: download still lacks, before those bytes are no longer left to it alone: a piece
#: crosses a LAN in milliseconds, so a copy silent this long (its member stopped,
#: overloaded, or hostile) must not hold the download up; as ``FETCHING_PATIENCE``.
COPY_PATIENCE = 3.0
#: ... and at most this many seconds of its pace so far: the longest a member's copy
#: may hold the download up once the rest is fetched. At a LAN's pace (10 MiB/s and
#: up) that is over a GiB left to the copy alone, so an honest copy still spares the
#: origin every byte of all but the largest files; a member that trickles out a piece
#: every 2.9 s (350 KiB/s) keeps 41 MiB, and the origin sources fetch the rest.
COPY_SECONDS = 120.0


def copy_honoured(outstanding: int, delivered: int, first_seen: float, last_delivery: float,
                  now: float) -> bool:
    """Whether this download leaves a LAN copy's bytes to that copy alone.

    ``outstanding``: bytes the copy offers that this download has not written yet;
    ``delivered``: bytes it wrote from this copy so far; ``first_seen``: when the copy's
    workers started, ``last_delivery``: when it last delivered a piece (``first_seen``
    before the first), both seconds on the clock of ``now``. A member that offers the
    whole file and hands out a trickle (or stops answering) would otherwise hold the
    download to its pace, since the origin sources do not hold what a copy holds: the
    copy keeps what it delivers in :data:`COPY_SECONDS` at its pace so far, and only
    while it delivered a piece within :data:`COPY_PATIENCE` seconds. Beyond that the
    origin sources may fetch its bytes too, and split or race its slow assignments
    (copies, never a wrong byte: whoever writes a byte first wins, as ever). Only for a
    holding that stands still (``LanPool._paced``): a member whose download is in flight
    is judged by its claims (:func:`claim_honoured`)."""
    if outstanding <= 0:
        return True
    if now - last_delivery >= COPY_PATIENCE:
        return False
    elapsed = now - first_seen
    if elapsed < COPY_PATIENCE:  # its first pieces: its pace is not known yet
        return True
    return outstanding <= delivered / elapsed * COPY_SECONDS


def _free(size: int, *taken: RangeSet) -> RangeSet:
    """The bytes of ``[0, size)`` in none of ``taken``."""
    free = RangeSet([(0, size)])
    for part in taken:
        for s, e in part:
            free.remove(s, e)
    return free


def _share_of(gap, r: int, n: int, align: int) -> int:
    """The offset r/n into the free run ``gap``, down to a multiple of ``align``, inside it."""
    unit = max(1, align)
    offset = (gap.start + gap.length * r // n) // unit * unit
    return min(max(offset, gap.start), gap.end - 1)


def _largest(free: RangeSet):
    """The longest run of ``free`` (the first of equals)."""
    return max(free.ranges(), key=lambda r: (r.length, -r.start))


def origin_start(size: int, align: int, at: int, done: RangeSet, copies: RangeSet,
                 mine: RangeSet, others: list[tuple[str, RangeSet]], holder: str) -> int:
    """Where this download's origin fetches go on from: a byte offset for
    ``Scheduler.start_at``.

    Members that fetch one file at once must not fetch the same bytes: each
    one walks its own part of the file and takes the others' parts from
    their LAN copies as they are hashed (docs/sharing.md, "Members that fetch
    at once"). What the others fetch now is left to them already
    (``LanPool.share_out``); this decides the order of the rest, since two
    members would otherwise both take the same *next* piece in the second or
    so before they see each other's work.

    ``done``: bytes this download wrote; ``copies``: bytes LAN copies offer
    it; ``mine``: what it fetches from the origin now; ``others``: each other
    member's download in flight as ``(holder, what it fetches from the origin
    now)``; ``holder``: this download's name (``Publisher.holder``); ``at``:
    the offset it goes on from now. Offsets are bytes; a move lands on a
    multiple of ``align`` inside a free run (free: nobody has or fetches it).

    * Its walk goes on from the first free byte from ``at`` when that byte
      is ``at`` itself or follows what it fetches or wrote, and no other
      member fetches the byte before it.
    * Other members fetch that byte before too, and so does this download
      (they started together, or did not see each other yet): of that group
      the one whose holder sorts first goes on; the rank-r one of n moves to
      r/n of the largest free run, so all of them moving at once still part.
    * Else (others walk into that byte, or its walk has run into another's
      part or the end of the file) it moves into the largest free run: where
      a fetch runs into that run, to (r+1)/(n+1) of it, else to r/n of it,
      for the rank r of its holder among the n members that may move there
      (all but the one walking into it). A late joiner thus starts halfway
      through what the others have not fetched yet, not on their heels, and
      two members whose parts end at the same moment do not jump to the
      same byte.
    """
    theirs = RangeSet()
    for _, ranges in others:
        for s, e in ranges:
            theirs.add(s, e)
    free = _free(size, done, copies, mine, theirs)
    if not free.total:
        return at
    ahead = free.first_within(at, size)
    gap = _largest(free)

    def share_of(r: int, n: int) -> int:
        return _share_of(gap, r, n, align)

    if ahead is not None:
        before = ahead.start - 1
        ours = ahead.start == at or before in mine or before in done
        if ours and before not in theirs:
            return ahead.start
        if before in theirs and before in mine:
            group = sorted({holder} | {h for h, ranges in others if before in ranges})
            rank = group.index(holder)
            return ahead.start if rank == 0 else share_of(rank, len(group))
    walkers = {h for h, ranges in others if gap.start > 0 and gap.start - 1 in ranges}
    movers = sorted(({h for h, _ in others} - walkers) | {holder})
    rank, n = movers.index(holder), len(movers)
    walked_into = gap.start > 0 and (gap.start - 1 in theirs or gap.start - 1 in mine)
    return share_of(rank + 1, n + 1) if walked_into else share_of(rank, n)


def first_start(size: int, align: int, done: RangeSet, copies: RangeSet,
                others: list[tuple[str, RangeSet]], starting: list[str], holder: str) -> int:
    """Where a download that has fetched nothing yet starts fetching from the origin.

    ``done``, ``copies``, ``others`` as in :func:`origin_start` (the members fetching it
    already,
    which places this download among them); ``starting`` the holders of
    members whose download of it is recorded but fetches nothing yet: they
    start now too. Of those, a member that saw us applies this same rule, and
    one that did not (it asked before we were recorded) starts where
    :func:`origin_start` puts it, at the start of the largest free run. So
    the group of n that includes this download takes the places 1/(n+1) ..
    n/(n+1) of the largest free run, by the order of holders: never its start,
    whoever saw whom.
    """
    at = origin_start(size, align, 0, done, copies, RangeSet(), others, holder)
    if not starting:
        return at
    free = _free(size, done, copies, *(ranges for _, ranges in others))
    if not free.total:
        return at
    group = sorted(set(starting) | {holder})
    return _share_of(_largest(free), group.index(holder) + 1, len(group) + 1, align)


def given_way(mine: RangeSet, others: list[tuple[str, RangeSet]], holder: str) -> RangeSet:
    """The bytes this download stops fetching from the origin: what it fetches now
    (``mine``) that a member whose holder sorts before ``holder`` fetches too (``others``
    as in :func:`origin_start`). The member sorting first keeps its fetches, so of two
    that started together exactly one copy of those bytes is paid for."""
    out = RangeSet()
    for other, ranges in others:
        if other >= holder:
            continue
        for s, e in ranges:
            at = s
            while (part := mine.first_within(at, e)) is not None:
                out.add(part.start, part.end)
                at = part.end
    return out


@dataclass
class LanHolding:
    """What one helper offers of this download: a LAN copy source."""

    peer: Peer
    ranges: RangeSet
    hashes: dict[int, str]
    piece_size: int
    #: what its download in flight fetches from the origin now (left to it)
    fetching: RangeSet = field(default_factory=RangeSet)
    #: the random name of its holding (``Held.holder``; "" when it gave none)
    holder: str = ""

    @property
    def source(self) -> str:
        return LAN_PREFIX + self.peer.key


class QueryLinks:
    """One kept connection per peer for a download's queries (four a second while it
    runs: a handshake each time, TLS with a secret, would cost more than the answer).
    ``query`` is safe from one thread per peer; ``close`` ends every connection."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self._conns: dict[str, object] = {}
        self._lock = threading.Lock()
        self._closed = False

    def query(self, peer: Peer, label: str):
        """``peer``'s answer to ``query{label}`` (any message). Raises what the link raises
        (OSError, TimeoutError, ``wire.ConnectionClosed``, ``protocol.ProtocolError``,
        ``wire.AuthError``); the connection is then dropped and made again next time."""
        from .. import protocol, wire
        with self._lock:
            conn = self._conns.pop(peer.key, None)  # this thread's while it asks
        if conn is None:
            conn = wire.client_connect(peer.host, peer.port, name=self.opts.name,
                                       secret=self.opts.secret, timeout=QUERY_DEADLINE)
        try:
            conn.send(protocol.Query(label))
            answer = conn.recv(timeout=QUERY_DEADLINE)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            if not self._closed and peer.key not in self._conns:
                self._conns[peer.key], conn = conn, None
        if conn is not None:
            conn.close()
        return answer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


def ask_peers(peers: list[Peer], label: str, size: int, opts: Options,
              stop: threading.Event, *, links: QueryLinks,
              own_holder: str | None = None) -> list[LanHolding]:
    """Every helper's answer to ``query{label}`` over ``links``, in parallel, within
    ``QUERY_DEADLINE``. Helpers that do not answer in time, answer nothing usable, or
    answer with this download's own holding (``own_holder``: published on this machine)
    are left out."""
    from .. import protocol, wire
    found: list[LanHolding] = []
    lock = threading.Lock()

    def ask(peer: Peer) -> None:
        try:
            answer = links.query(peer, label)
        except (OSError, TimeoutError, wire.ConnectionClosed, protocol.ProtocolError,
                wire.AuthError) as exc:
            log.info("%s: no answer to the copy query (%s)", peer.key, exc)
            return
        if not isinstance(answer, protocol.Held) or answer.label != label:
            return
        if own_holder is not None and answer.holder == own_holder:
            return  # our own download, as the node on this machine offers it
        ranges, hashes = held_ranges(answer, size)
        fetching = RangeSet(tuple(r) for r in answer.fetching) if answer.size == size else RangeSet()
        if ranges.total or fetching.total or answer.holder:  # (a download starting too)
            with lock:
                found.append(LanHolding(peer, ranges, hashes, answer.piece_size, fetching,
                                        answer.holder or ""))

    threads = [threading.Thread(target=ask, args=(p,), name=f"query-{p.key}", daemon=True)
               for p in peers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + QUERY_DEADLINE + 0.5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if stop.is_set():
        return []
    with lock:
        return sorted(found, key=lambda h: -h.ranges.total)


class Publisher:
    """Hashes what one download writes and records it in the content index.

    ``written``/``dropped`` are the board's hooks (any worker thread);
    ``publish(done)`` runs with each resume record; ``finished(path)`` once the
    file has its final name. Failures to write the index are logged and cost
    only sharing.
    """

    def __init__(self, index: ContentIndex, label: str, part: Path, size: int, *,
                 private: list[str], name: str) -> None:
        self.index = index
        self.label = label
        self.part = Path(part).absolute()
        self.size = size
        self.private = private
        self.name = name
        self.hasher = PieceHasher(size)
        #: the random name of this holding: a query answered with it is our own
        self.holder = secrets.token_hex(32)
        self._lock = threading.Lock()
        self._published: tuple | None = None
        self._passive = False  # a finished copy of this content is offered meanwhile
        self._recorded = False  # its part file was recorded in flight

    def written(self, offset: int, block: memoryview) -> None:
        with self._lock:
            self.hasher.feed(offset, block)

    def dropped(self, start: int, end: int) -> None:
        with self._lock:
            self.hasher.discard(start, end)

    def settled(self, index: int) -> bool:
        """True if piece ``index`` needs no more bytes (hashed, or given up)."""
        with self._lock:
            return self.hasher.settled(index)

    def known(self, index: int, digest: str) -> None:
        """Piece ``index`` hashes to ``digest``, computed from all of its bytes elsewhere: read
        back whole (``ResumedPieces``), or checked whole as a LAN copy gave it (``LanPool``)."""
        with self._lock:
            self.hasher.known(index, digest)

    def hash_resumed(self, part: Path, done: RangeSet,
                     stop: threading.Event) -> "ResumedPieces | None":
        """Start hashing what ``done`` (the ranges resumed from an earlier run) holds of
        ``part``, so those pieces are offered too; None when nothing was resumed."""
        if not done.total:
            return None
        return ResumedPieces(self, Path(part), done, stop).start()

    def withdraw(self) -> None:
        """Stop offering this download (its bytes failed the whole-file checksum): its
        holding is removed, unless another download holds the label meanwhile."""
        self.index.drop(self.label, self.holder)

    def _hashes(self) -> dict[int, str]:
        with self._lock:
            return dict(self.hasher.digests)

    def start(self, done: RangeSet) -> None:
        """Record the download in flight (``NAME.part``), unless this machine already offers
        the whole content from another file: that one stays offered until this one is done."""
        if self.index.offered(self.label) is not None and self.index.get(self.label).complete:
            self._passive = True
            return
        self._record(self.part, done, None)
        self._recorded = self.index.get(self.label) is not None

    def publish(self, done: RangeSet, fetching: RangeSet | None = None) -> None:
        """Republish the done ranges, hashes and what is being fetched from the origin
        (skipped when nothing changed)."""
        if self._passive:
            return
        hashes = self._hashes()
        # others leave to us what we fetch and what we wrote but cannot offer yet (a piece
        # whose hash is not complete): done and running, less the whole hashed pieces
        claimed = done.copy()
        for s, e in fetching or RangeSet():
            claimed.add(s, e)
        piece = self.hasher.piece_size
        for index in hashes:
            start = index * piece
            if done.covers(start, min(self.size, start + piece)):
                claimed.remove(start, min(self.size, start + piece))
        fetching = claimed
        mark = (done.total, len(hashes), tuple(fetching))
        if mark == self._published:
            return
        self._published = mark
        self.index.update(self.label, done=done, hashes=hashes, fetching=fetching,
                          updated_ns=time.time_ns())

    def finished(self, path: Path) -> None:
        """The file is complete under ``path``: offer it from there (its mtime now recorded),
        unless its user withdrew it while it ran (``unshare`` at the prompt removed the
        holding of its part file): that stays so for the finished file."""
        if self._recorded and self.index.get(self.label) is None:
            log.info("not offered: %s was unshared while it downloaded", self.name)
            return
        self._record(Path(path).absolute(), RangeSet([(0, self.size)]), "final")

    def _record(self, path: Path, done: RangeSet, final: str | None) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            log.info("not shared: cannot stat %s (%s)", path, exc)
            return
        self.index.record(Holding(
            label=self.label, path=str(path), size=self.size,
            piece_size=self.hasher.piece_size, done=done, hashes=self._hashes(),
            inode=st.st_ino, mtime_ns=st.st_mtime_ns if final else None,
            private=bool(self.private), why_private="; ".join(self.private), name=self.name,
            holder=self.holder, updated_ns=time.time_ns()))


class ResumedPieces:
    """Hashes the pieces a resumed download holds already, by reading them back.

    A download resumed from ``NAME.part`` never sees those bytes arrive, so
    the :class:`~swift.piecehash.PieceHasher` cannot hash them; this thread
    reads each piece of the resumed ranges back from the part file and hands
    it to the publisher: a piece wholly resumed is hashed here (outside the
    publisher's lock) and its digest recorded (``Publisher.known``); the
    resumed part of a piece the workers complete is fed like written bytes.
    The read is acceptable where the rule "no second read" holds for arriving
    bytes: these bytes were checked when they were written by the earlier run
    (and, with piece hashes, again by ``Board.check_resumed``), and are read
    once, in ``RESUMED_BLOCK`` blocks, by one thread.

    Owned by the download: it stops within a block when ``stop`` (the
    download's) or :meth:`stop` is set. A piece whose read fails or comes
    short is given up (never offered); the download is not affected.
    """

    def __init__(self, publisher: Publisher, path: Path, done: RangeSet,
                 stop: threading.Event) -> None:
        self.publisher = publisher
        self.path = path
        self.done = done.copy()
        self._outer = stop
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hash-resumed", daemon=True)
        #: pieces hashed here, bytes read back, pieces given up (a failed read)
        self.hashed = 0
        self.read_bytes = 0
        self.failed = 0

    def start(self) -> "ResumedPieces":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._halt.set()

    def wait(self, timeout: float) -> bool:
        """Wait until every resumed piece is hashed, at most ``timeout`` seconds (or until
        the download is stopped); then stop. True if it finished."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and not self._outer.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._thread.join(min(left, 0.1))
        finished = not self._thread.is_alive()
        if not finished:
            log.info("%d resumed pieces hashed when the download ended: the rest are not offered",
                     self.hashed)
        self.stop()
        return finished

    def _halted(self) -> bool:
        return self._halt.is_set() or self._outer.is_set()

    def _run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.info("resumed pieces not offered: cannot read %s (%s)", self.path, exc)
            return
        try:
            for index, start, end, whole in self._work():
                if self._halted():
                    return
                if not self.publisher.settled(index):
                    self._piece(fd, index, start, end, whole)
        finally:
            os.close(fd)

    def _work(self) -> list[tuple[int, int, int, bool]]:
        """``(piece, start, end, whole)`` for every piece the resumed ranges touch: first the
        parts of pieces the workers complete (their new bytes wait in the hasher's bounded
        pending buffer until the resumed prefix is fed), then the whole pieces. At most
        ``MAX_PIECES`` whole ones, and two parts per range."""
        piece, size = self.publisher.hasher.piece_size, self.publisher.size
        parts, wholes = [], []
        for start, end in self.done:
            index = start // piece
            while index * piece < end:
                p_start, p_end = index * piece, min(size, (index + 1) * piece)
                whole = start <= p_start and p_end <= end
                (wholes if whole else parts).append(
                    (index, max(start, p_start), min(end, p_end), whole))
                index += 1
        return parts + wholes

    def _piece(self, fd: int, index: int, start: int, end: int, whole: bool) -> None:
        """Read ``[start, end)`` of piece ``index`` back: hash it (``whole``) or feed it."""
        sha = hashlib.sha256() if whole else None
        at = start
        try:
            while at < end:
                if self._halted():
                    return
                block = os.pread(fd, min(RESUMED_BLOCK, end - at), at)
                if not block:
                    raise OSError(f"the part file ends at {at}")
                self.read_bytes += len(block)
                if sha is not None:
                    sha.update(block)
                else:
                    self.publisher.written(at, memoryview(block))
                at += len(block)
        except OSError as exc:
            log.info("resumed piece %d not offered: %s", index, exc)
            self.failed += 1
            p_start = index * self.publisher.hasher.piece_size
            self.publisher.dropped(p_start, min(self.publisher.size,
                                                p_start + self.publisher.hasher.piece_size))
            return
        if sha is not None:
            self.publisher.known(index, sha.hexdigest())
            self.hashed += 1

"""The LAN copy source: bytes of this content from a member that already holds them.

A member answered ``held`` for the download's label (``engine.sharing``);
its holding (whole hashed pieces, each with its SHA-256) becomes a source of
the scheduler that holds only those ranges (``Scheduler.hold``). The origin
sources (this machine and the helpers) are made to hold the rest, so the
bytes a LAN copy has never cost the internet; when a copy is left out, the
origin sources hold the whole file again.

Every byte from a LAN copy passes these checks before it is written:

* **Piece hashes.** A worker asks for whole hashed pieces (``fetch_copy``
  over the piece-aligned cover of its assignment), keeps each piece in
  memory until it is complete, and checks its SHA-256 against the hash the
  member reported. A piece that fails is never written: the assignment
  fails and is fetched elsewhere; a member that serves ``MAX_BAD_PIECES``
  such pieces is left out.
* **Origin spot checks.** A member could forge the hashes with its bytes.
  About ``SPOT_FRACTION`` of the LAN pieces (at least one per download),
  chosen at random when the copies are known, are also fetched from the
  origin by this machine and compared before they are written. A member
  caught so is left out at once, and everything it wrote is fetched again
  (``Board.forget``): a forger that corrupts more than a few pieces is
  caught with high odds; one that corrupts a single piece of thousands may
  not be (README, "Sharing: the threat model").
* **Trusted digest.** With ``--checksum`` the whole file is checked at the
  end; on a mismatch after LAN bytes, the download fetches every LAN range
  again from the origin and checks once more (``download.py``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import threading
import time
from typing import Callable

from .. import http, protocol, wire
from ..protocol import FetchCode
from ..errors import Cancelled, FileChanged, SwiftError
from ..fetchjob import Changed, Data, Failed, Finished, KeptAlive, RequesterJob
from ..piecehash import piece_size_for
from ..planning import Piece, RangeSet
from .board import Board
from .options import Options
from .sharing import (LAN_PREFIX, LanHolding, claim_honoured, copy_honoured, first_start,
                      given_way, origin_start)
from .sources import link
from .sources.base import Source

log = logging.getLogger(__name__)

#: Pieces a member may serve that fail their hash before it is left out: one can
#: be bad luck (a disk error under a healthy member), two is a pattern, as in
#: Delivery Optimization.
MAX_BAD_PIECES = 2
#: The share of LAN pieces also fetched from the origin and compared: 1 % costs
#: the origin 1 % of what the LAN saves, and finds a member that forges 10 % of
#: 1000 pieces with odds 1 - 0.9^10 = 65 %, of 4096 pieces with 1 - 0.9^41 = 99 %.
SPOT_FRACTION = 0.01
#: Seconds a member's holding may stand still before what it says it fetches is no
#: longer left to it: three of its publishing rounds (about one a second).
FETCHING_PATIENCE = 3.0
#: Seconds a LAN copy's worker waits before asking a member that refused it as busy
#: (too many connections) again: the member's other requesters' jobs end meanwhile.
BUSY_PAUSE = 1.0
#: Bytes of a running origin fetch worth giving up to a member that fetches them too:
#: less is left to finish (a local fetch that stops early costs its connection).
GIVE_WAY_MIN = 256 * 1024


class LanPool:
    """The LAN copies of one download: their holdings (refreshed while it runs), the
    spot-check draw, the origin sources' share, and what each copy wrote (to take back
    from a forger). ``spawn(name, body)`` starts a worker thread the download owns."""

    def __init__(self, board: Board, copies: list[LanHolding], origin_sources: list[str], *,
                 label: str, size: int, probe: http.ProbeResult, remote: http.RemoteFile,
                 opts: Options, notice: Callable[[str], None],
                 spawn: Callable[[str, Callable[[], None]], None] | None = None,
                 rng: random.Random | None = None, holder: str | None = None,
                 known: Callable[[int, str], None] | None = None,
                 dropped: Callable[[int, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.board = board
        self._clock = clock
        #: the publisher's hooks: a checked piece's SHA-256 is handed on, not computed twice
        self._known, self._dropped = known, dropped
        #: this download's holding name (``Publisher.holder``): orders members that fetch at once
        self.holder = holder or secrets.token_hex(32)
        self._at = 0  # where the origin sources go on from (``sharing.origin_start``)
        self._holders: dict[str, str] = {}  # source -> its holding's name
        self.copies: dict[str, LanHolding] = {}
        self.origin_sources = origin_sources
        self.label = label
        self.size = size
        self.probe = probe
        self.remote = remote
        self.opts = opts
        self.notice = notice
        self._spawn = spawn
        self._lock = threading.Lock()
        self._bad: dict[str, int] = {}
        self._banned: set[str] = set()
        self._written: dict[str, RangeSet] = {}
        self._fetching: dict[str, RangeSet] = {}  # what members fetch from the origin now
        self._growth: dict[str, tuple[int, float]] = {}  # source -> (bytes held, since when)
        self._first: dict[str, tuple[int, float]] = {}  # source -> (bytes held, when) first seen
        # source -> (when its workers started, when it last delivered a piece): its pace
        self._delivery: dict[str, tuple[float, float]] = {}
        self._started: set[str] = set()
        self.spot_checks = 0
        self._clock = clock
        #: ``clock()`` when the first checked piece from a LAN copy was written (None: none yet)
        self.first_write: float | None = None
        rng = rng or random.SystemRandom()
        # which pieces are spot-checked: a secret draw of about SPOT_FRACTION of the file's
        # pieces, so no member can tell; at least one LAN piece is made sure of at the end
        fraction = opts.spot_fraction if opts.spot_fraction is not None else SPOT_FRACTION
        pieces = -(-size // piece_size_for(size)) if size else 0
        count = max(1, round(pieces * fraction)) if fraction > 0 else 0  # 0: none at all
        self._spot = set(rng.sample(range(pieces), min(pieces, count)))
        self._final_check = fraction > 0
        self._spot_done: dict[tuple[int, str], bool] = {}
        self._spot_locks: dict[int, threading.Lock] = {}
        self._update(copies)
        #: members whose download of this content is recorded but fetches nothing yet
        self._starting = [a.holder for a in copies
                          if a.holder and not a.ranges.total and not a.fetching.total]
        self._placed = False

    # -- holdings --------------------------------------------------------------------------------
    def update(self, answers: list[LanHolding]) -> None:
        """The peers' latest answers (a refresh): copies grow, new ones get workers, and
        what the members fetch now is left to them."""
        self._update(answers)
        self.share_out()

    def _update(self, answers: list[LanHolding]) -> None:
        new: list[LanHolding] = []
        now = self._clock()
        with self._lock:
            for a in answers:  # when did its holding last grow?
                held = a.ranges.total
                if self._growth.get(a.source, (-1, now))[0] != held:
                    self._growth[a.source] = (held, now)
                self._first.setdefault(a.source, (held, now))
            # what a member fetches is left to it only while its holding grows, and only as
            # much as its pace makes good: a stalled member (or a stale index) must not hold
            # the download up, nor one that claims the file and delivers a trickle
            self._fetching = {
                a.source: a.fetching for a in answers if a.fetching.total
                and now - self._growth[a.source][1] < FETCHING_PATIENCE
                and claim_honoured(a.fetching.total, a.ranges.total, *self._first[a.source],
                                   now, a.piece_size)}
            self._holders.update({a.source: a.holder or a.source for a in answers})
            for a in answers:
                if a.source in self._banned or not a.ranges.total:
                    continue
                known = self.copies.get(a.source)
                self.copies[a.source] = a
                self._written.setdefault(a.source, RangeSet())
                if known is None:
                    new.append(a)
                    self._delivery.setdefault(a.source, (now, now))
        for copy in new:
            if self._spawn is not None:
                for name, body in self._workers_of(copy):
                    self._spawn(name, body)

    def share_out(self) -> None:
        """Each copy holds its ranges; the origin sources hold what no live copy holds and
        no member claims now."""
        with self._lock:
            live = [c for s, c in self.copies.items() if s not in self._banned]
            fetching = [r for s, r in self._fetching.items() if s not in self._banned]
            walkers = [(self._holders.get(s, s), r) for s, r in self._fetching.items()
                       if s not in self._banned]
        others = RangeSet()
        done = self.board.done_copy() if live else RangeSet()
        for c in live:
            self.board.hold(c.source, c.ranges)
            if self._paced(c, done):
                for s, e in c.ranges:
                    others.add(s, e)
        for ranges in fetching:
            for s, e in ranges:
                others.add(s, e)
        rest: RangeSet | None = None
        if others.total:
            rest = RangeSet([(0, self.size)])
            for s, e in others:
                rest.remove(s, e)
        log.debug("origin sources hold %s (copies %s, members fetch %s)",
                  list(rest) if rest is not None else "all",
                  {c.source: c.ranges.total for c in live}, [r.total for r in fetching])
        for source in self.origin_sources:
            self.board.hold(source, rest)
        if not self._placed:
            self._placed = True
            self._place(live, walkers)
        elif walkers:
            self._walk(live, walkers)

    def _paced(self, copy: LanHolding, done: RangeSet) -> bool:
        """Whether the origin sources leave ``copy``'s ranges to it (``sharing.copy_honoured``:
        not to a copy that stalled or hands out a trickle). A member whose holding grows (its
        download in flight, which others take pieces of as they are hashed) is judged by its
        claims instead; this is for a holding that stands still: a finished file, a stopped
        download's part file."""
        now = self._clock()
        with self._lock:
            grew = now - self._growth.get(copy.source, (0, now))[1] < FETCHING_PATIENCE
        if grew:
            with self._lock:
                first_seen, _ = self._delivery.get(copy.source, (now, now))
                self._delivery[copy.source] = (first_seen, now)
            return True
        outstanding = copy.ranges.copy()
        for s, e in done:
            outstanding.remove(s, e)
        with self._lock:
            first_seen, last = self._delivery.get(copy.source, (now, now))
            if not outstanding.total:  # it owes nothing (a member in flight we caught up
                # with): its patience starts again when it offers more
                self._delivery[copy.source] = (first_seen, now)
            delivered = self._written.get(copy.source, RangeSet()).total
        return copy_honoured(outstanding.total, delivered, first_seen, last, now)

    @staticmethod
    def _offered(live: list[LanHolding]) -> RangeSet:
        out = RangeSet()
        for c in live:
            for s, e in c.ranges:
                out.add(s, e)
        return out

    def _place(self, live: list[LanHolding], walkers: list[tuple[str, RangeSet]]) -> None:
        """Before the first fetch: where to start (``sharing.first_start``)."""
        if not walkers and not self._starting:
            return
        at = first_start(self.size, piece_size_for(self.size), self.board.done_copy(),
                         self._offered(live), walkers, self._starting, self.holder)
        if at:
            log.debug("origin fetches start at byte %d (%d members fetch, %d start too)",
                      at, len(walkers), len(self._starting))
            self._at = at
            self.board.start_at(at)

    def _walk(self, live: list[LanHolding], walkers: list[tuple[str, RangeSet]]) -> None:
        """Members fetch this file from the origin now: where ours go on from, so that each
        fetches its own part (``sharing.origin_start``)."""
        mine = self.board.fetching(LAN_PREFIX)
        at = origin_start(self.size, piece_size_for(self.size), self._at, self.board.done_copy(),
                          self._offered(live), mine, walkers, self.holder)
        clash = given_way(mine, walkers, self.holder)
        if clash.total:
            given = self.board.give_way(clash, self.origin_sources, GIVE_WAY_MIN)
            log.debug("gave way on %d bytes other members fetch too", given)
        if at != self._at:
            log.debug("origin fetches go on from byte %d (was %d)", at, self._at)
            self._at = at
            self.board.start_at(at)

    def stale(self, source: str) -> None:
        """``source`` no longer offers what it said: it holds nothing until the next answer."""
        with self._lock:
            copy = self.copies.get(source)
            if copy is not None:
                self.copies[source] = LanHolding(copy.peer, RangeSet(), copy.hashes, copy.piece_size)
        self.share_out()

    def ended(self, source: str) -> None:
        """A copy's worker ended: if the copy was left out, the origin takes its ranges back."""
        if self.board.has_no_work_for(source):
            with self._lock:
                self._banned.add(source)
            self.share_out()

    def workers(self) -> list[tuple[str, Callable[[], None]]]:
        """The workers of the copies known at the start (later ones are ``spawn``ed)."""
        out = []
        with self._lock:
            copies = list(self.copies.values())
        for copy in copies:
            out += self._workers_of(copy)
        return out

    def _workers_of(self, copy: LanHolding) -> list[tuple[str, Callable[[], None]]]:
        with self._lock:
            if copy.source in self._started:
                return []
            self._started.add(copy.source)
        slots = max(1, min(copy.peer.slots, self.opts.peer_slots))
        return [(f"copy-{copy.peer.key}-{i}", LanCopyWorker(self, copy.source).run)
                for i in range(slots)]

    def copy(self, source: str) -> LanHolding | None:
        with self._lock:
            return self.copies.get(source)

    def written_ranges(self) -> RangeSet:
        """Every range a LAN copy wrote in this download (to fetch again after a bad digest)."""
        out = RangeSet()
        with self._lock:
            for ranges in self._written.values():
                for s, e in ranges:
                    out.add(s, e)
        return out

    # -- checks ------------------------------------------------------------------------------------
    def bad_piece(self, source: str, index: int, why: str) -> bool:
        """A piece from ``source`` failed; True when ``source`` is now left out."""
        with self._lock:
            self._bad[source] = self._bad.get(source, 0) + 1
            out = self._bad[source] >= MAX_BAD_PIECES
        log.info("%s: piece %d %s", source, index, why)
        if out:
            self.ban(source, f"served {MAX_BAD_PIECES} pieces that failed their SHA-256 check")
        return out

    def ban(self, source: str, why: str) -> None:
        """Leave ``source`` out and fetch again all it wrote in finished assignments."""
        with self._lock:
            if source in self._banned:
                return
            self._banned.add(source)
            written = self._written.get(source, RangeSet()).copy()
        self.board.exclude(source, why)
        taken = self.board.forget(source, written)
        if taken:
            log.info("%s: %d bytes it wrote are fetched again", source, taken)
        self.share_out()

    def needs_spot_check(self, index: int) -> bool:
        return index in self._spot

    def spot_check(self, start: int, end: int, digest: str, session,
                   stop: threading.Event | None = None) -> bool:
        """The origin's bytes ``[start, end)`` have the SHA-256 ``digest`` (this machine asks,
        once per piece and digest: a piece two assignments share is checked once)."""
        with self._lock:
            piece_lock = self._spot_locks.setdefault(start, threading.Lock())
        with piece_lock:  # two workers that share a piece (after a split) fetch it once
            with self._lock:
                known = self._spot_done.get((start, digest))
            if known is not None:
                return known
            return self._compare(start, end, digest, session, stop)

    def _compare(self, start: int, end: int, digest: str, session,
                 stop: threading.Event | None) -> bool:
        sha = hashlib.sha256()
        fetch = http.RangeFetch(session, self.remote.final_url, self.size, self.probe.validator,
                                policy=self.opts.retry, stop=stop or self.board.stop,
                                encoding=self.probe.encoding, remote=self.remote,
                                timeout=self.opts.timeout)

        def deliver(block: bytes) -> bool:
            sha.update(block)
            return True

        got = fetch.run(start, lambda: end, deliver)
        if got != end - start:  # stopped, not compared: no verdict
            raise Cancelled("the spot check was stopped")
        same = sha.hexdigest() == digest
        with self._lock:
            self.spot_checks += 1
            self._spot_done[(start, digest)] = same
        return same

    def final_check(self, part_path) -> str | None:
        """At least one spot check per download: if the random draw checked no LAN piece,
        one piece a LAN copy wrote is compared with the origin now. The source that wrote
        it if it differs (every LAN byte must then be fetched again), else None."""
        with self._lock:
            if self.spot_checks or not self._final_check:
                return None
            candidates = [(src, s, e) for src, ranges in self._written.items() for s, e in ranges]
        if not candidates:
            return None
        piece = piece_size_for(self.size)
        rng = random.SystemRandom()
        src, s, e = rng.choice(candidates)
        start = min(e - 1, s + rng.randrange(0, e - s)) // piece * piece
        start = max(start, s)
        end = min(e, start + piece)
        with open(part_path, "rb") as f:
            data = os.pread(f.fileno(), end - start, start)
        session = self.remote.session(source_address=self.opts.source_address)
        try:
            same = self.spot_check(start, end, hashlib.sha256(data).hexdigest(), session,
                                   stop=threading.Event())
        except SwiftError as exc:
            log.info("the final spot check could not reach the origin: %s", exc)
            return None
        finally:
            session.close()
        return None if same else src

    def write_piece(self, source: str, assignment_id: int, index: int, digest: str,
                    data: memoryview, offset: int) -> bool | None:
        """``write`` of a whole checked piece ``index`` whose SHA-256 is ``digest``: this
        download offers it in turn under that digest, without hashing it again (about 0.7 s
        of CPU per GiB); if the bytes are not written after all, the piece is not offered."""
        if self._known is not None:
            self._known(index, digest)
        ok = self.write(source, assignment_id, data, offset)
        if not ok and self._dropped is not None:
            self._dropped(offset, offset + len(data))
        return ok

    def write(self, source: str, assignment_id: int, data: memoryview, offset: int) -> bool | None:
        """Write checked bytes for ``source``; None if ``source`` is left out meanwhile, else
        ``Board.write``'s answer. The ban and this write exclude each other, so a forger's
        bytes are either refused here or in what ``ban`` takes back."""
        with self._lock:
            if source in self._banned:
                return None
            self._written[source].add(offset, offset + len(data))  # before: a ban takes it back
            first_seen = self._delivery.get(source, (self._clock(), 0.0))[0]
            self._delivery[source] = (first_seen, self._clock())
        ok = self.board.write(assignment_id, source, data)
        with self._lock:
            if source in self._banned:  # left out meanwhile: the caller discards the assignment
                return None
            if ok and self.first_write is None:
                self.first_write = self._clock()
        return ok

    def first_write_after(self, started: float) -> float | None:
        """Seconds from ``started`` (the download's start, on ``clock``) to the first checked
        LAN write, in milliseconds' precision; None when no LAN copy wrote anything."""
        with self._lock:
            first = self.first_write
        return None if first is None else round(first - started, 3)


class PieceAssembler:
    """Whole pieces out of a copy job's data frames, in order: ``feed(payload)`` returns the
    pieces it completed as (file offset, bytes). Each piece is joined once from views of the
    frames' own buffers: one copy per byte (appending to a bytearray, then slicing it out
    and deleting the slice, made three)."""

    def __init__(self, start: int, piece_size: int, size: int) -> None:
        self.at = start  # the file offset of the piece being gathered
        self.piece_size = piece_size
        self.size = size
        self._parts: list[memoryview] = []
        self._held = 0

    def feed(self, payload: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        view = memoryview(payload).cast("B")
        out: list[tuple[int, bytes]] = []
        while len(view):
            whole = min(self.size, self.at + self.piece_size) - self.at
            if whole <= 0:  # past the end of the file: the job's checks refuse such bytes
                break
            take = view[:whole - self._held]
            self._parts.append(take)
            self._held += len(take)
            view = view[len(take):]
            if self._held == whole:
                out.append((self.at, b"".join(self._parts)))
                self.at += whole
                self._parts, self._held = [], 0
        return out


class LanCopyWorker(Source):
    """The LAN copy kind of :class:`~swift.engine.sources.Source`: one connection to a
    member holding a copy, ``run()`` until no work is left. It holds what the member
    offered (``holding``); each piece is checked before it is written (``_piece``)."""

    short_reason = "the member sent too few bytes"

    def __init__(self, pool: LanPool, source: str, *,
                 connect: Callable[..., wire.Connection] = wire.client_connect) -> None:
        super().__init__(pool.board, source)
        self.pool = pool
        self.source = source
        self.opts = pool.opts
        self._connect_to = connect
        self._conn: wire.Connection | None = None
        self._job: RequesterJob | None = None
        self._lock = threading.Lock()
        self._session = None
        self._failures = 0

    def holding(self) -> RangeSet | None:
        copy = self.pool.copy(self.source)
        return copy.ranges if copy is not None else RangeSet()

    def ready(self) -> bool:
        while self._conn is None:
            self._failures = self._connect(self._failures)
            if self._failures < 0:
                return False
        return True

    def run_piece(self, piece: Piece) -> bool:
        if not self._run(self._conn, piece):
            self._drop()
        return True

    def close(self) -> None:
        self._drop()
        if self._session is not None:
            self._session.close()
        self.pool.ended(self.source)

    @property
    def copy(self) -> LanHolding:
        """The member's latest answer (its holding grows while it downloads)."""
        copy = self.pool.copy(self.source)
        assert copy is not None
        return copy

    def _connect(self, failures: int) -> int:
        """Connect; the count of failures in a row, or -1 when the worker must end (the
        copy is banned when unreachable; a refused handshake is one more failure; a
        member that refuses the connection as busy is asked again, never left out)."""

        def busy(why: str) -> bool:
            # a member full of connections (others fetch from it too) is alive: this
            # slot waits and asks again, and the member is never left out for it
            log.info("%s: busy (%s); asking again", self.source, why)
            return self.board.stop.wait(BUSY_PAUSE) or self.board.has_no_work_for(self.source)

        self._conn, failures = link.connect(
            self.board, self.opts, self._connect_to, self.copy.peer, failures,
            unreachable=lambda why: self.pool.ban(self.source, why), busy=busy)
        return failures

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        link.hang_up(self.board, conn)

    def _aligned_end(self, end: int) -> int:
        size, piece = self.pool.size, self.copy.piece_size
        return min(size, -(-end // piece) * piece)

    def _tell_shrink(self, conn: wire.Connection, assignment_id: int, end: int) -> None:
        try:
            with self._lock:
                job = self._job
                msg = (job.shrink(self._aligned_end(end))
                       if job is not None and job.job_id == assignment_id else None)
                if msg is not None:
                    conn.send(msg)
        except (OSError, wire.ConnectionClosed, TimeoutError):
            pass

    # -- one assignment --------------------------------------------------------------------------
    def _run(self, conn: wire.Connection, piece: Piece) -> bool:
        """One assignment as one copy job over whole pieces; False to drop the connection."""
        aid = piece.assignment_id
        size, psize = self.pool.size, self.copy.piece_size
        with self._lock:
            end = self.board.carry(aid, lambda new_end: self._tell_shrink(conn, aid, new_end))
            if end == 0:
                return True
            first = piece.start // psize * psize
            self._job = RequesterJob(protocol.FetchCopy(  # type: ignore[arg-type]
                aid, self._label, first, self._aligned_end(end), size))
            job = self._job
            try:
                conn.send(job.request())
            except (OSError, wire.ConnectionClosed, TimeoutError) as exc:
                self.board.failed(aid, self.source, f"connection lost: {exc}")
                return False
        pieces = PieceAssembler(first, psize, size)
        position = piece.start  # the next byte the assignment writes
        while True:
            try:
                event = link.next_event(conn, job, self._lock, self.opts.peer_timeout)
            except (OSError, wire.ConnectionClosed, protocol.ProtocolError) as exc:
                if not self.board.stop.is_set():
                    self.board.failed(aid, self.source, f"connection lost: {exc}")
                return False
            if isinstance(event, Data):
                for at, whole in pieces.feed(event.payload):
                    verdict = self._piece(aid, at, whole, position)
                    if verdict is None:
                        return False
                    position = verdict
                continue
            if isinstance(event, KeptAlive):
                self.board.heard(aid)
                continue
            if isinstance(event, Finished):
                if not self.board.finished(aid):
                    self.board.failed(aid, self.source, "the member sent too few bytes")
                return True
            if isinstance(event, Failed):
                if event.code is FetchCode.GONE:
                    # its copy moved on (renamed when finished, or changed): no fault of the
                    # member's; nothing more from it until a refresh says what it holds now
                    self.board.failed(aid, self.source, event.reason, blame=False)
                    self.pool.stale(self.source)
                    return True
                self.board.failed(aid, self.source, event.reason, discard=event.discard)
                return event.keep_connection
            assert isinstance(event, Changed)
            self.board.failed(aid, self.source, event.message)
            return False

    @property
    def _label(self) -> str:
        return self.pool.label

    def _piece(self, aid: int, start: int, data: bytes, position: int) -> int | None:
        """Check one whole piece and write its part of the assignment; the assignment's new
        position, or None when the job must end (a bad piece, a lost assignment)."""
        psize = self.copy.piece_size
        index = start // psize
        digest = hashlib.sha256(data).hexdigest()
        expected = self.copy.hashes.get(index)
        if expected is None:
            # the member no longer names this piece (its download took the bytes back):
            # not a lie; nothing more from it until a refresh says what it holds now
            self.board.failed(aid, self.source, f"piece {index} is no longer offered", blame=False)
            self.pool.stale(self.source)
            return None
        if digest != expected:
            log.info("%s: piece %d (bytes %d..%d) has SHA-256 %s, the member said %s",
                     self.source, index, start, start + len(data), digest,
                     self.copy.hashes.get(index))
            self.board.failed(aid, self.source, f"piece {index} failed its SHA-256 check; "
                                                f"fetched elsewhere", discard=False)
            self.pool.bad_piece(self.source, index, "failed its SHA-256 check")
            return None
        if self.pool.needs_spot_check(index):
            if self._session is None:
                self._session = self.pool.remote.session(source_address=self.opts.source_address)
            try:
                same = self.pool.spot_check(start, start + len(data), digest, self._session)
            except FileChanged:
                self.board.failed(aid, self.source, "the origin's file changed", blame=False)
                return None
            except SwiftError as exc:
                log.info("spot check of piece %d could not reach the origin: %s", index, exc)
                same = True  # unchecked, not wrong: the piece hash still holds
            if not same:
                self.board.failed(aid, self.source, f"piece {index} differs from the origin's",
                                  discard=True)
                self.pool.ban(self.source, f"served piece {index} with a forged SHA-256 "
                                           f"(an origin spot check caught it)")
                return None
        end = min(start + len(data), self.board.end_of(aid))
        if end <= position:
            return position
        part = memoryview(data)[position - start:end - start]
        if position == start and end == start + len(data):  # the whole piece
            ok = self.pool.write_piece(self.source, aid, index, digest, part, position)
        else:
            ok = self.pool.write(self.source, aid, part, position)
        if ok is None:  # left out meanwhile (another slot caught it): nothing more from it
            self.board.failed(aid, self.source, "left out", discard=True, blame=False)
            return None
        return end if ok else None

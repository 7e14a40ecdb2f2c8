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
import math
import random
import threading
from typing import Callable

from .. import http, protocol, wire
from ..errors import FileChanged, SwiftError
from ..fetchjob import Changed, Data, Failed, Finished, KeptAlive, RequesterJob
from ..planning import Piece, RangeSet
from .board import Board
from .options import MAX_CONNECT_FAILURES, Options
from .sharing import LanHolding

log = logging.getLogger(__name__)

#: Pieces a member may serve that fail their hash before it is left out: one can
#: be bad luck (a disk error under a healthy member), two is a pattern, as in
#: Delivery Optimization.
MAX_BAD_PIECES = 2
#: The share of LAN pieces also fetched from the origin and compared: 1 % costs
#: the origin 1 % of what the LAN saves, and finds a member that forges 10 % of
#: 1000 pieces with odds 1 - 0.9^10 = 65 %, of 4096 pieces with 1 - 0.9^41 = 99 %.
SPOT_FRACTION = 0.01


class LanPool:
    """The LAN copies of one download: their holdings, the spot-check draw, the
    origin sources' share, and what each copy wrote (to take back from a forger)."""

    def __init__(self, board: Board, copies: list[LanHolding], origin_sources: list[str], *,
                 label: str, size: int, probe: http.ProbeResult, remote: http.RemoteFile, opts: Options,
                 notice: Callable[[str], None], rng: random.Random | None = None) -> None:
        self.board = board
        self.copies = {c.source: c for c in copies}
        self.origin_sources = origin_sources
        self.label = label
        self.size = size
        self.probe = probe
        self.remote = remote
        self.opts = opts
        self.notice = notice
        self._lock = threading.Lock()
        self._bad: dict[str, int] = {}
        self._banned: set[str] = set()
        self._written: dict[str, RangeSet] = {c.source: RangeSet() for c in copies}
        self.spot_checks = 0
        rng = rng or random.SystemRandom()
        pieces = sorted({start // c.piece_size for c in copies
                         for s, e in c.ranges for start in range(s, e, c.piece_size)})
        fraction = opts.spot_fraction if opts.spot_fraction is not None else SPOT_FRACTION
        count = max(1, math.ceil(len(pieces) * fraction)) if pieces else 0
        self._spot = set(rng.sample(pieces, min(count, len(pieces))))
        self._spot_done: dict[tuple[int, str], bool] = {}

    # -- holdings --------------------------------------------------------------------------------
    def share_out(self) -> None:
        """Each copy holds its ranges; the origin sources hold what no live copy holds."""
        with self._lock:
            live = [c for s, c in self.copies.items() if s not in self._banned]
        union = RangeSet()
        for c in live:
            self.board.hold(c.source, c.ranges)
            for s, e in c.ranges:
                union.add(s, e)
        rest = RangeSet([(0, self.size)]) if live else None
        if rest is not None:
            for s, e in union:
                rest.remove(s, e)
        for source in self.origin_sources:
            self.board.hold(source, rest)

    def ended(self, source: str) -> None:
        """A copy's last worker ended: if it was left out, the origin takes its ranges back."""
        if self.board.has_no_work_for(source):
            with self._lock:
                self._banned.add(source)
            self.share_out()

    def workers(self) -> list[tuple[str, Callable[[], None]]]:
        out = []
        for copy in self.copies.values():
            slots = max(1, min(copy.peer.slots, self.opts.peer_slots))
            for i in range(slots):
                out.append((f"copy-{copy.peer.key}-{i}", LanCopyWorker(self, copy).run))
        return out

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
            written = self._written[source].copy()
        self.board.exclude(source, why)
        taken = self.board.forget(source, written)
        if taken:
            log.info("%s: %d bytes it wrote are fetched again", source, taken)
        self.share_out()

    def needs_spot_check(self, index: int) -> bool:
        return index in self._spot

    def spot_check(self, start: int, end: int, digest: str, session) -> bool:
        """The origin's bytes ``[start, end)`` have the SHA-256 ``digest`` (this machine asks,
        once per piece and digest: a piece two assignments share is checked once)."""
        with self._lock:
            known = self._spot_done.get((start, digest))
        if known is not None:
            return known
        same = self._fetch_and_compare(start, end, digest, session)
        with self._lock:
            self._spot_done[(start, digest)] = same
        return same

    def _fetch_and_compare(self, start: int, end: int, digest: str, session) -> bool:
        sha = hashlib.sha256()
        fetch = http.RangeFetch(session, self.remote.final_url, self.size, self.probe.validator,
                                policy=self.opts.retry, stop=self.board.stop,
                                encoding=self.probe.encoding, remote=self.remote,
                                timeout=self.opts.timeout)

        def deliver(block: bytes) -> bool:
            sha.update(block)
            return True

        got = fetch.run(start, lambda: end, deliver)
        with self._lock:
            self.spot_checks += 1
        return got == end - start and sha.hexdigest() == digest

    def write(self, source: str, assignment_id: int, data: memoryview, offset: int) -> bool | None:
        """Write checked bytes for ``source``; None if ``source`` is left out meanwhile, else
        ``Board.write``'s answer. The ban and this write exclude each other, so a forger's
        bytes are either refused here or in what ``ban`` takes back."""
        with self._lock:
            if source in self._banned:
                return None
            ok = self.board.write(assignment_id, source, data)
            if ok:
                self._written[source].add(offset, offset + len(data))
            return ok


class LanCopyWorker:
    """One connection to a member holding a LAN copy: ``run()`` until no work is left."""

    def __init__(self, pool: LanPool, copy: LanHolding, *,
                 connect: Callable[..., wire.Connection] = wire.client_connect) -> None:
        self.pool = pool
        self.copy = copy
        self.board = pool.board
        self.source = copy.source
        self.opts = pool.opts
        self._connect_to = connect
        self._conn: wire.Connection | None = None
        self._job: RequesterJob | None = None
        self._lock = threading.Lock()
        self._session = None

    def run(self) -> None:
        failures = 0
        try:
            while not self.board.stop.is_set() and not self.board.has_no_work_for(self.source):
                if self._conn is None:
                    failures = self._connect(failures)
                    if failures < 0:
                        return
                    continue
                piece = self.board.next_piece(self.source)
                if piece is None:
                    return
                if not self._run(self._conn, piece):
                    self._drop()
        finally:
            self._drop()
            if self._session is not None:
                self._session.close()
            self.pool.ended(self.source)

    def _connect(self, failures: int) -> int:
        peer = self.copy.peer
        try:
            conn = self._connect_to(peer.host, peer.port, name=self.opts.name,
                                    secret=self.opts.secret,
                                    timeout=min(5.0, self.opts.peer_timeout), source_address=None)
        except (OSError, TimeoutError, wire.ConnectionClosed, protocol.ProtocolError,
                wire.AuthError) as exc:
            failures += 1
            if failures >= MAX_CONNECT_FAILURES:
                self.pool.ban(self.source, f"unreachable: {exc}")
                return -1
            return -1 if self.board.stop.wait(0.5 * failures) else failures
        conn.timeout = self.opts.peer_timeout
        self._conn = conn
        self.board.add_closer(conn.close)
        return 0

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self.board.discard_closer(conn.close)
            conn.close()

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
        buffer = bytearray()
        at = first  # the file offset of buffer[0]
        position = piece.start  # the next byte the assignment writes
        while True:
            try:
                frame = conn.recv(timeout=self.opts.peer_timeout)
            except TimeoutError:
                with self._lock:
                    event = job.timed_out(self.opts.peer_timeout)
            except (OSError, wire.ConnectionClosed, protocol.ProtocolError) as exc:
                if not self.board.stop.is_set():
                    self.board.failed(aid, self.source, f"connection lost: {exc}")
                return False
            else:
                with self._lock:
                    event = job.receive(frame)
            if isinstance(event, Data):
                buffer += event.payload
                while True:
                    p_end = min(size, at + psize)
                    if len(buffer) < p_end - at:
                        break
                    verdict = self._piece(aid, at, bytes(buffer[:p_end - at]), position)
                    if verdict is None:
                        return False
                    position = verdict
                    del buffer[:p_end - at]
                    at = p_end
                    if position >= self.board.end_of(aid):
                        break
                continue
            if isinstance(event, KeptAlive):
                self.board.heard(aid)
                continue
            if isinstance(event, Finished):
                if not self.board.finished(aid):
                    self.board.failed(aid, self.source, "the member sent too few bytes")
                return True
            if isinstance(event, Failed):
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
        if digest != self.copy.hashes.get(index):
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
        ok = self.pool.write(self.source, aid, part, position)
        if ok is None:  # left out meanwhile (another slot caught it): nothing more from it
            self.board.failed(aid, self.source, "left out", discard=True, blame=False)
            return None
        return end if ok else None

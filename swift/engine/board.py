"""The board: the one guard of a download's scheduler (aria2's ``SegmentMan`` role).

Every worker thread goes through it to get work, write what it received and
say how an assignment ended; nothing else touches the :class:`~swift.planning.Scheduler`.
Rules:

- Claim, write outside the lock, commit: :meth:`Board.write` claims the
  offset under the lock, ``pwrite`` s with the lock released, then commits.
- No I/O under the lock. A split's :class:`~swift.planning.Shrink`, and a
  lost race's, is delivered to the worker running the shrunk assignment (its
  *carrier*) after the lock is released.
- Time is read here (``clock``) and passed to the scheduler as ``now``.
- The first fatal error wins (:meth:`fail_all`); it stops every worker.
- With piece hashes (:class:`~swift.engine.piece_check.PieceCheck`), the
  worker whose write completes a piece reads it back and checks it (outside
  the lock) before the download may end; a bad piece leaves ``done`` and is
  fetched again, and ``on_bad_piece(index, servers)`` names who served it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..errors import ErrorCode
from ..planning import Piece, Scheduler
from ..storage import PartFile
from .options import LOCAL
from .piece_check import PieceCheck
from .report import DownloadError, Report

log = logging.getLogger(__name__)

#: Seconds an idle worker waits for the board to change before looking again.
IDLE_POLL = 0.5

Carrier = Callable[[int], None]  # tells an assignment's worker its new end


class Board:
    """Shared state of one parallel download, behind one condition variable."""

    def __init__(self, sched: Scheduler, part: PartFile, *,
                 clock: Callable[[], float] = time.monotonic,
                 notice: Callable[[str], None] = lambda text: None,
                 throttle: Callable[[int], None] | None = None,
                 names: dict[str, str] | None = None,
                 pieces: PieceCheck | None = None,
                 on_bad_piece: Callable[[int, set[str]], None] | None = None,
                 written: Callable[[int, memoryview], None] | None = None,
                 dropped: Callable[[int, int], None] | None = None):
        """``names``: a helper's key (``HOST:PORT``) → the name it gave itself, so that
        a notice calls it what the summary calls it. ``pieces``: the piece hashes to
        check as pieces complete; ``on_bad_piece(index, servers)`` is told of each bad one.
        ``written(offset, bytes)`` sees every block once it is on disk and
        ``dropped(start, end)`` every range taken back (the piece hashes of sharing,
        ``engine.sharing.Publisher``); both fast."""
        self.cond = threading.Condition()
        self.pieces = pieces
        self._on_bad_piece = on_bad_piece or (lambda index, servers: None)
        self.stop = threading.Event()
        self._sched = sched
        self._part = part
        self._clock = clock
        self._notice = notice
        self._throttle = throttle
        self._names = dict(names or {})
        self._written = written
        self._dropped = dropped
        self._carriers: dict[int, Carrier] = {}
        self._closers: set[Callable[[], None]] = set()
        self._bytes_by_source: dict[str, int] = {}
        self._announced: set[str] = set()
        self.left_out: dict[str, str] = {}  # peer → why it was left out (under ``cond``)
        self.error: BaseException | None = None
        self.dropped = 0
        self.live_workers = 0
        self.last_failure: str | None = None
        self._last_source: str | None = None

    # -- reading -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._sched.size

    def done_total(self) -> int:
        with self.cond:
            return self._sched.done.total

    def done_copy(self):
        with self.cond:
            return self._sched.done.copy()

    def contiguous_bytes(self) -> int:
        """The length of the gap-free prefix from offset 0 already written."""
        with self.cond:
            start, end = next(iter(self._sched.done), (0, 0))  # ranges come sorted
        return end if start == 0 else 0

    def bytes_by_source(self) -> dict[str, int]:
        with self.cond:
            return dict(self._bytes_by_source)

    def complete(self) -> bool:
        with self.cond:
            return self._ended_well()

    def suspects(self, start: int, end: int) -> set[str]:
        """Who served pieces of ``[start, end)`` that failed their hash (to avoid when refetching)."""
        if self.pieces is None:
            return set()
        with self.cond:
            return self.pieces.suspects(start, end)

    def has_no_work_for(self, source: str) -> bool:
        with self.cond:
            return self._ended_well() or self._sched.excluded(source)

    def end_of(self, assignment_id: int) -> int:
        """The assignment's current end; 0 once it is no longer running."""
        with self.cond:
            return self._sched.end_of(assignment_id) if self._sched.is_assigned(assignment_id) else 0

    # -- work ----------------------------------------------------------------------------------
    def next_piece(self, source: str) -> Piece | None:
        """Wait for a piece for ``source``; None when there is none to come (or on stop)."""
        with self.cond:
            while True:
                if self.stop.is_set() or self._ended_well() or self._sched.excluded(source):
                    return None
                piece = self._sched.assign(source, self._clock())
                if piece is not None:
                    break
                self.cond.wait(IDLE_POLL)
            carrier = self._carriers.get(piece.shrink.assignment_id) if piece.shrink else None
        if carrier is not None:
            carrier(piece.shrink.end)
        return piece

    def hold(self, source: str, ranges) -> None:
        """``source`` holds ``ranges`` of the file now (None: all of it); see
        :meth:`Scheduler.hold <swift.planning.Scheduler.hold>`."""
        with self.cond:
            self._sched.hold(source, ranges)
            self.cond.notify_all()  # an idle worker of that source may have work now

    def start_at(self, offset: int) -> None:
        """New pieces from byte ``offset`` on first; see
        :meth:`Scheduler.start_at <swift.planning.Scheduler.start_at>`."""
        with self.cond:
            self._sched.start_at(offset)

    def give_way(self, ranges, sources, min_length: int = 1) -> int:
        """Running assignments of ``sources`` stop where ``ranges`` begin; see
        :meth:`Scheduler.give_way <swift.planning.Scheduler.give_way>`. Their workers are
        told at once."""
        with self.cond:
            given = self._sched.give_way(ranges, sources, min_length)
            losers = self._losers()
            self.cond.notify_all()
        self._tell(losers)
        return given

    def heard(self, assignment_id: int) -> None:
        """A sign of life without data (a keep-alive): the assignment is not silent."""
        with self.cond:
            self._sched.heard(assignment_id, self._clock())

    def _losers(self) -> list[tuple[Carrier, int]]:
        """Under the lock: the carriers of assignments that just lost a race, with their new ends."""
        out = []
        for shrink in self._sched.take_losers():
            running = self._sched.is_assigned(shrink.assignment_id)
            carrier = (self._carriers.get if running else self._carriers.pop)(shrink.assignment_id, None)
            if carrier is not None:
                out.append((carrier, shrink.end))
        return out

    @staticmethod
    def _tell(losers: list[tuple[Carrier, int]]) -> None:
        for carrier, end in losers:
            carrier(end)

    def carry(self, assignment_id: int, carrier: Carrier) -> int:
        """Tell ``carrier`` of later splits of the assignment; returns its end now (0 if gone)."""
        with self.cond:
            if not self._sched.is_assigned(assignment_id):
                return 0
            self._carriers[assignment_id] = carrier
            return self._sched.end_of(assignment_id)

    def write(self, assignment_id: int, source: str, block, *,
              via: str | tuple[str, ...] | None = None) -> bool:
        """Write a received block at its offset; False once the assignment is no longer ours.

        ``via`` names who served the bytes for piece checks (a mirror's URL; default ``source``).
        """
        if self._throttle is not None:
            self._throttle(len(block))  # outside the lock: only this worker waits
        with self.cond:
            try:
                offset, n = self._sched.claim(assignment_id, len(block), self._clock())
            except KeyError:
                self.dropped += len(block)
                return False
            self.dropped += len(block) - n
            losers = self._losers()
        self._tell(losers)
        if n:
            self._part.pwrite(offset, memoryview(block)[:n])
            if self._written is not None:
                self._written(offset, memoryview(block)[:n])
        ready: list[int] = []
        with self.cond:
            self._sched.commit(assignment_id, n)
            self._bytes_by_source[source] = self._bytes_by_source.get(source, 0) + n
            if self.pieces is not None and n and self._sched.is_assigned(assignment_id):
                self.pieces.served(offset, n, via or source)
                ready = self.pieces.completed(self._sched.done, offset, n)
        if ready:
            self.check_pieces(ready)
        return True

    def check_resumed(self) -> None:
        """Check every whole piece a resumed download already holds (before any worker starts)."""
        if self.pieces is None:
            return
        with self.cond:
            ready = self.pieces.resumed(self._sched.done)
        self.check_pieces(ready)

    def check_pieces(self, indexes: list[int]) -> None:
        """Read back and hash pieces marked as being checked; a bad one is fetched again."""
        assert self.pieces is not None
        for index in indexes:
            start, end = self.pieces.hashes.span(index)
            try:
                good = self.pieces.hashes.check(index, self._part.pread(start, end - start))
            except BaseException:
                with self.cond:
                    self.pieces.verdict(index, False)
                    self._sched.redo(start, end)
                    if self._dropped is not None:  # sharing's hash of them is void too
                        self._dropped(start, end)
                    self.cond.notify_all()
                raise
            with self.cond:
                servers = self.pieces.verdict(index, good)
                if not good:
                    self._sched.redo(start, end)
                    self.dropped += end - start
                    if self._dropped is not None:  # sharing must not offer the bad bytes' hash
                        self._dropped(start, end)
                self.cond.notify_all()
            if not good:
                self._on_bad_piece(index, servers)

    def finished(self, assignment_id: int) -> bool:
        """The worker says the assignment is complete; False if it is not (it was failed "short")."""
        with self.cond:
            self._carriers.pop(assignment_id, None)
            ok = (self._sched.finished(assignment_id, self._clock())
                  if self._sched.is_assigned(assignment_id) else True)
            self.cond.notify_all()
            return ok

    def failed(self, assignment_id: int, source: str, reason: str, *, discard: bool = False,
               blame: bool = True) -> None:
        """The assignment failed: its remainder is requeued (with ``discard``, its bytes too).

        ``blame=False`` when the fault is ours, not the source's: it counts no failure.
        """
        log.info("%s: %s", source, reason)
        later = None
        with self.cond:
            self._carriers.pop(assignment_id, None)
            self.last_failure = f"{source}: {reason}"
            self._last_source = source
            if self._sched.is_assigned(assignment_id):
                self._fail_assignment(assignment_id, source, reason, discard, blame)
                if self._sched.excluded(source) and source != LOCAL:
                    why = self._why_excluded(source, reason)
                    if self._first(source, why):
                        later = f"{self._shown(source)} left out: {why}"
            self.cond.notify_all()
        if later:
            self._notice(later)

    def _fail_assignment(self, assignment_id: int, source: str, reason: str, discard: bool,
                         blame: bool) -> None:
        if not discard:
            self._sched.failed(assignment_id, reason, count=blame)
            return
        before = self._sched.bytes_by_source().get(source, 0)
        taken = self._sched.assignment(assignment_id)
        if self.pieces is not None:  # its bytes leave done: checked pieces among them are not good now
            self.pieces.forget(taken.start, taken.position)
        if self._dropped is not None and taken.position > taken.start:
            self._dropped(taken.start, taken.position)
        self._sched.failed(assignment_id, reason, discard=True, count=blame)
        lost = before - self._sched.bytes_by_source().get(source, 0)
        self._bytes_by_source[source] = self._bytes_by_source.get(source, 0) - lost
        self.dropped += lost

    def forget(self, source: str, ranges) -> int:
        """What ``source`` wrote in ``ranges`` is wrong: fetch it again (``Scheduler.forget``);
        the bytes taken back."""
        with self.cond:
            gone = self._sched.forget(source, ranges)
            self._bytes_by_source[source] = self._bytes_by_source.get(source, 0) - gone.total
            self.dropped += gone.total
            for start, end in gone:
                if self.pieces is not None:  # checked pieces among them are not good now
                    self.pieces.forget(start, end)
                if self._dropped is not None:
                    self._dropped(start, end)
            self.cond.notify_all()
        return gone.total

    def exclude(self, source: str, why: str) -> None:
        """No more work for ``source``; announced once per peer, not once per slot."""
        with self.cond:
            self._sched.exclude(source)
            self.cond.notify_all()
            first = self._first(source, why)
        if first:
            self._notice(f"{self._shown(source)} left out: {why}")

    def _shown(self, source: str) -> str:
        """``source`` as the summary names it: ``helper NAME``, or ``NAME (LAN copy)`` for a
        member's copy (its key is ``copy@HOST:PORT``, ``Report.LAN_PREFIX``)."""
        if source.startswith(Report.LAN_PREFIX):
            key = source[len(Report.LAN_PREFIX):]
            return f"{self._names.get(key) or key} (LAN copy)"
        return f"helper {self._names.get(source) or source}"

    def _why_excluded(self, source: str, reason: str) -> str:
        """Why the scheduler left ``source`` out, in the words of what happened: one cause
        on several of its assignments (a killed helper loses every connection) is that cause."""
        reasons = self._sched.failure_reasons(source)
        if len(set(reasons)) <= 1:
            return f"{reason}, on {len(reasons)} of its ranges" if len(reasons) > 1 else reason
        return f"{len(reasons)} failed ranges, the last: {reason}"

    def _first(self, source: str, why: str) -> bool:
        first = source not in self._announced
        self._announced.add(source)
        if first:
            self.left_out[source] = why  # for the summary and the report
        return first

    # -- workers and the end -----------------------------------------------------------------------
    def workers_started(self, n: int) -> None:
        with self.cond:
            self.live_workers = n

    def worker_added(self) -> None:
        """One more worker started after the first ones (a LAN copy found later)."""
        with self.cond:
            self.live_workers += 1

    def fetching(self, skip_prefix: str) -> "RangeSet":
        """The ranges ``[start, end)`` of running assignments whose source does not start
        with ``skip_prefix``: what this download fetches from the origin now."""
        from ..planning import RangeSet
        out = RangeSet()
        with self.cond:
            for a in self._sched.active_assignments:
                if not a.source.startswith(skip_prefix) and a.start < a.end:
                    out.add(a.start, a.end)
        return out

    def worker_ended(self) -> None:
        with self.cond:
            self.live_workers -= 1
            self.cond.notify_all()

    def settled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the end: complete, failed, or no worker left.

        True once it has ended; with no worker left, ``error`` says why.
        """
        with self.cond:
            if not self._ended():
                self.cond.wait(timeout)
            return self._ended()

    def _ended_well(self) -> bool:
        """Every byte written and, with piece hashes, no piece still being checked."""
        return self._sched.complete and not (self.pieces is not None and self.pieces.pending)

    def _ended(self) -> bool:
        if self._ended_well() or self.error is not None:
            return True
        if self.live_workers == 0:
            self.error = DownloadError(f"every source failed ({self.last_failure or 'no worker left'})",
                                       ErrorCode.NETWORK if self._last_source in (None, LOCAL)
                                       else ErrorCode.PEER_FAILED,
                                       kept="the partial download is kept for resume")
            return True
        return False

    def fail_all(self, error: BaseException) -> None:
        """Stop the download with ``error`` (the first one wins) and close every connection."""
        with self.cond:
            if self.error is None:
                self.error = error
            self.stop.set()
            self.cond.notify_all()
        self.close_all()

    def fail_internal(self, exc: BaseException) -> None:
        self.fail_all(DownloadError(f"internal error in a worker: {exc}", ErrorCode.LOCAL_PROTOCOL))

    def add_closer(self, close: Callable[[], None]) -> None:
        """Register something to close when the download stops (a peer connection)."""
        with self.cond:
            self._closers.add(close)

    def discard_closer(self, close: Callable[[], None]) -> None:
        with self.cond:
            self._closers.discard(close)

    def close_all(self) -> None:
        with self.cond:
            closers = list(self._closers)
            self._closers.clear()
        for close in closers:
            close()

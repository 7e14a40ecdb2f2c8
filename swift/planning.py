"""Range arithmetic and the scheduler that hands byte ranges to workers. Pure.

No threads, no locks, no clocks, no I/O: the download engine holds one lock
around every call, and passes the time in (``now``) where speed matters. That
keeps every decision reproducible and testable with fake workers and a fake
clock. All ranges are half-open ``[start, end)`` byte offsets.

Words: a *source* is where a worker's bytes come from (``"local"``, this
machine's own link to the origin, or a peer's key); an *assignment* is the
scheduler's unit of work, one range handed to one worker of one source and
tracked until it is finished or failed. (A peer runs an assignment as a
*fetch job* on the wire, :mod:`swift.fetchjob`, under the same id; a user's
download is a :class:`swift.nodeapp.DownloadEntry`.)

The life of an assignment, as the scheduler sees it::

    assign -> (claim, commit)* -> finished      all of [start, end) is written: retired
                               \\-> failed        [position, end) goes back to the queue

While an assignment runs, another worker's ``assign`` may *split* it: the assignment's
``end`` moves back to a point in what it has not claimed yet, and the far
part becomes a new assignment. Three offsets track an assignment, ``start <= position <=
claimed <= end``:

- ``claimed``: how far the worker's bytes have been accepted for writing
  (``claim`` hands out the offset to write at, under the caller's lock);
- ``position``: how far they are written (``commit``, after the caller's
  ``pwrite`` outside the lock);
- ``end``: where the assignment stops now; it only ever shrinks.

Splits never give away claimed bytes and a failure gives back everything
from ``position`` on, so at every moment the written bytes (``done``), the
queue and the running assignments' ``[position, end)`` cut ``[0, size)`` into
disjoint parts: no byte is lost and none is handed to two live assignments.

Each source holds a range set of the file (:meth:`Scheduler.hold`; by
default all of it, as an origin does): it is assigned, split to and raced
to only inside it, so a partial LAN copy serves what it has and the pool
the rest. What one source skips stays queued for the others.

One exception, by design: a *race* (with ``race_after`` and a clock). A
assignment whose worker has been silent that long while others progress gets a
backup assignment over its unclaimed ``[claimed, end)`` for an idle worker, as
BitTorrent's endgame or MapReduce's backup tasks do. The two overlap only
until one of them claims a byte: that one wins, the other's end moves back
to what it had claimed (:meth:`Scheduler.take_losers` says whom to tell),
so claims still never hand out a byte twice.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

#: Split points are rounded to this, so pieces start on page/extent-friendly offsets.
ALIGN = 64 * 1024


@dataclass(frozen=True, order=True)
class Range:
    """A half-open byte range ``[start, end)``; ``len(r)`` and ``r.length`` are its size."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad range [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start

    def __len__(self) -> int:
        return self.end - self.start


class RangeSet:
    """A set of byte offsets, kept as sorted, disjoint, coalesced ranges.

    Two parallel sorted arrays of 64-bit offsets (starts, ends) make every
    lookup a bisect and an add a slice assignment, at 16 bytes a range, so thousands of small adds (one per received
    block) stay cheap; ``total`` is kept up to date instead of summed.
    ``len()`` is the number of ranges, not of bytes, and iterating gives
    the ranges as ``(start, end)`` pairs.
    """

    def __init__(self, ranges: Iterable[Range | tuple[int, int]] = ()) -> None:
        self._starts = array("q")  # 8 bytes per offset: 100,000 ranges take 1.6 MB
        self._ends = array("q")
        self._total = 0
        for r in ranges:
            start, end = (r.start, r.end) if isinstance(r, Range) else r
            self.add(start, end)

    @staticmethod
    def _check(start: int, end: int) -> None:
        if not 0 <= start <= end:
            raise ValueError(f"bad range [{start}, {end})")

    def add(self, start: int, end: int) -> None:
        self._check(start, end)
        if start == end:
            return
        i = bisect.bisect_left(self._ends, start)   # first range ending at or after start
        j = bisect.bisect_right(self._starts, end)  # ranges starting at or before end touch us
        if i < j:
            self._total -= sum(self._ends[k] - self._starts[k] for k in range(i, j))
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = array("q", (start,))
        self._ends[i:j] = array("q", (end,))
        self._total += end - start

    def remove(self, start: int, end: int) -> None:
        self._check(start, end)
        if start == end:
            return
        i = bisect.bisect_right(self._ends, start)  # first range ending after start
        j = bisect.bisect_left(self._starts, end)   # ranges starting before end overlap
        if i >= j:
            return
        keep_starts = array("q")
        keep_ends = array("q")
        if self._starts[i] < start:
            keep_starts.append(self._starts[i])
            keep_ends.append(start)
        if self._ends[j - 1] > end:
            keep_starts.append(end)
            keep_ends.append(self._ends[j - 1])
        self._total -= sum(self._ends[k] - self._starts[k] for k in range(i, j))
        self._total += sum(e - s for s, e in zip(keep_starts, keep_ends))
        self._starts[i:j] = keep_starts
        self._ends[i:j] = keep_ends

    def __contains__(self, offset: int) -> bool:
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]

    def covers(self, start: int, end: int) -> bool:
        """True if every offset of ``[start, end)`` is in the set (an empty range always is)."""
        if start >= end:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end  # coalesced: one range must hold it all

    def overlaps(self, start: int, end: int) -> bool:
        """True if any offset of ``[start, end)`` is in the set."""
        if start >= end:
            return False
        i = bisect.bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end

    def first_within(self, start: int, end: int) -> Range | None:
        """The first part of the set inside ``[start, end)``, or None (a bisect)."""
        if start >= end:
            return None
        i = bisect.bisect_right(self._ends, start)  # the first range ending after start
        if i == len(self._starts) or self._starts[i] >= end:
            return None
        return Range(max(start, self._starts[i]), min(end, self._ends[i]))

    @property
    def total(self) -> int:
        """The number of bytes covered."""
        return self._total

    @property
    def end(self) -> int:
        """One past the last offset in the set (0 if empty)."""
        return self._ends[-1] if self._ends else 0

    def ranges(self) -> list[Range]:
        return [Range(s, e) for s, e in zip(self._starts, self._ends)]

    def missing(self, size: int) -> list[Range]:
        """The gaps in ``[0, size)``, in order."""
        gaps: list[Range] = []
        at = 0
        for s, e in zip(self._starts, self._ends):
            if s >= size:
                break
            if s > at:
                gaps.append(Range(at, s))
            at = e
        if at < size:
            gaps.append(Range(at, size))
        return gaps

    def gap_from(self, offset: int, size: int) -> Range | None:
        """The first gap of ``[0, size)`` at or after ``offset``, or None (a bisect, no list)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and self._ends[i] > offset:
            offset = self._ends[i]  # inside a range: the gap starts at its end
        if offset >= size:
            return None
        j = bisect.bisect_right(self._starts, offset)
        return Range(offset, min(self._starts[j], size) if j < len(self._starts) else size)

    def drop_shorter_than(self, length: int) -> int:
        """Forget every range shorter than ``length`` bytes; returns the bytes forgotten.

        For a fragmented resume record: a range shorter than what a request
        costs is cheaper to fetch again with the gaps around it than to
        fetch around, and the set stays small.
        """
        keep = [k for k in range(len(self._starts)) if self._ends[k] - self._starts[k] >= length]
        before = self._total
        self._starts = array("q", (self._starts[k] for k in keep))
        self._ends = array("q", (self._ends[k] for k in keep))
        self._total = sum(e - s for s, e in zip(self._starts, self._ends))
        return before - self._total

    def to_json(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends)]

    @classmethod
    def from_json(cls, obj: object, size: int) -> RangeSet:
        """Load what ``to_json`` wrote, refusing anything it could not have written.

        The input is a resume record read from disk, which may be truncated,
        edited or from another file. Trusting a bad one would mark missing
        bytes as done and silently produce a wrong file, so every entry must
        be an ``[start, end]`` pair of ints with ``0 <= start < end <= size``,
        in increasing order and not overlapping. Raises ValueError otherwise.
        """
        if type(size) is not int or size < 0:
            raise ValueError(f"bad size {size!r}")
        if not isinstance(obj, list):
            raise ValueError("ranges must be a list")
        out = cls()
        previous_end = 0
        for item in obj:
            if (not isinstance(item, (list, tuple)) or len(item) != 2
                    or not all(type(x) is int for x in item)):  # type(): refuses True/False
                raise ValueError(f"bad range entry {item!r}")
            start, end = item
            if not 0 <= start < end <= size:
                raise ValueError(f"range [{start}, {end}) is empty or outside [0, {size})")
            if start < previous_end:
                raise ValueError(f"range [{start}, {end}) is out of order or overlaps")
            if start == previous_end and out._ends:  # touching: one range
                out._ends[-1] = end
            else:
                out._starts.append(start)
                out._ends.append(end)
            out._total += end - start
            previous_end = end
        return out

    def copy(self) -> RangeSet:
        other = RangeSet()
        other._starts, other._ends = array("q", self._starts), array("q", self._ends)
        other._total = self._total
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """The ranges as ``(start, end)`` pairs, in order (as ``len()`` counts them)."""
        return zip(self._starts, self._ends)

    def __repr__(self) -> str:
        return f"RangeSet({self.to_json()})"


def plan_piece_size(size: int, workers: int, *, min_piece: int = 1 << 20,
                    max_piece: int = 64 << 20) -> int:
    """The queue's piece size: about ``size / (2 * workers)``, clamped, a multiple of 64 KiB.

    Why two pieces per worker: every worker gets a piece at once, and the fast
    ones come back for a second while the slow ones still work on their
    first, so speed differences even out without any measuring. The tail
    (the last pieces running on slow links) is handled by splitting, so the
    pieces themselves need not be small.

    Why the floor (1 MiB): every piece costs one range request, a round trip
    to the origin or more, during which that worker moves no data; pieces
    must be large next to what a link moves in that time.

    Why the ceiling (64 MiB): a failed or hung worker's piece is held until
    its timeout before its remainder is requeued, and the file fills (and its
    resume record stays compact) roughly front to back; both argue against
    a few enormous pieces on huge files.
    """
    if size <= 0:
        return min_piece
    piece = size // (2 * max(1, workers))
    piece = max(min_piece, min(max_piece, piece))
    return max(ALIGN, (piece + ALIGN // 2) // ALIGN * ALIGN)


@dataclass(frozen=True)
class Shrink:
    """A split moved running assignment ``assignment_id``'s end back to ``end``.

    The worker running that assignment must be told (a source stops at ``end``); the
    bytes from ``end`` on are a new piece now.
    """

    assignment_id: int
    end: int


@dataclass(frozen=True)
class Piece:
    """What a worker is told to fetch: assignment ``assignment_id``, ``[start, end)`` as assigned.

    ``shrink`` is set when the piece was split off a running assignment: that assignment
    now ends at ``shrink.end == start``, and its worker must be told. The
    new assignment's own end may later shrink too; ask ``Scheduler.end_of``.
    """

    assignment_id: int
    start: int
    end: int
    shrink: Shrink | None = None


@dataclass(frozen=True)
class ActiveAssignment:
    """A snapshot of one running assignment (``start <= position <= claimed <= end``)."""

    assignment_id: int
    source: str
    start: int
    claimed: int
    position: int
    end: int


@dataclass
class _Assignment:
    assignment_id: int
    source: str
    start: int
    claimed: int
    position: int
    end: int
    started: float | None  # the caller's clock at assignment, if it gave one
    heard: float | None = None  # the caller's clock at the assignment's last sign of life
    rival: int | None = None  # the assignment racing this one for [claimed, end), if any
    first: float | None = None  # the caller's clock at its first byte

    def snapshot(self) -> ActiveAssignment:
        return ActiveAssignment(self.assignment_id, self.source, self.start, self.claimed,
                                self.position, self.end)

    def rate(self, now: float | None, settle: float = 0.0) -> float | None:
        """Its measured speed (bytes/s) at ``now``, from its first byte on (the
        request's round trip is not transfer time), or None before ``settle``
        seconds of data: a young assignment's figure is mostly noise."""
        if now is not None and self.first is not None and now - self.first > settle \
                and self.claimed > self.start:
            return (self.claimed - self.start) / (now - self.first)
        return None


class PieceQueue:
    """The pieces waiting for a worker, planned lazily from the gaps of ``done``.

    Failed remainders wait at the front (:meth:`requeue`); after them comes
    every gap of ``done`` from a cursor on, cut into pieces of at most
    ``piece_size`` only when one is taken. So the queue costs nothing per
    piece, whatever the file's size or the record's fragments. Everything
    from the cursor on that is not done is unplanned: running assignments and
    requeued remainders all lie below it, and only running assignments commit.
    """

    def __init__(self, done: RangeSet, size: int, piece_size: int) -> None:
        self._done = done  # the scheduler's live set
        self._size = size
        self._piece_size = piece_size
        self._requeued: deque[Range] = deque()
        self._cursor = 0

    def take(self, held: RangeSet | None = None, start_at: int = 0) -> Range | None:
        """The next piece, or None; with ``held``, the next piece's part inside it.

        ``held`` is what the taker's source holds (None: the whole file). What
        of a piece it does not hold stays queued where it was; planned gaps it
        skips join the requeued remainders, in order, so the cursor rule holds.
        ``start_at`` (a byte offset) puts the pieces from there on first, the
        rest after them (see :meth:`Scheduler.start_at`).
        """
        if start_at > 0:
            ahead = held.copy() if held is not None else RangeSet([(0, self._size)])
            ahead.remove(0, min(start_at, self._size))
            if ahead.total and (r := self._take_within(ahead)) is not None:
                return r
        if held is None:
            if self._requeued:
                return self._requeued.popleft()
            r = self._planned_from(self._cursor)
            if r is not None:
                self._cursor = r.end
            return r
        return self._take_within(held)

    def _take_within(self, held: RangeSet) -> Range | None:
        found = self._find(held)
        if found is None:
            return None
        index, h = found
        if index is not None:
            r = self._requeued[index]
            del self._requeued[index]
            for part in (Range(h.end, r.end), Range(r.start, h.start)):  # back in r's place
                if part.length:
                    self._requeued.insert(index, part)
            return h
        at = self._cursor
        while at < h.start and (r := self._planned_from(at)) is not None and r.start < h.start:
            self._requeued.append(Range(r.start, min(r.end, h.start)))
            at = r.end
        self._cursor = h.end
        return h

    def has_held(self, held: RangeSet) -> bool:
        """True if :meth:`take` with ``held`` would give a piece."""
        return self._find(held) is not None

    def _find(self, held: RangeSet) -> tuple[int | None, Range] | None:
        """Where the next piece inside ``held`` is: (its index among the requeued,
        or None for a planned one; the part of it to take)."""
        for index, r in enumerate(self._requeued):
            h = held.first_within(r.start, r.end)
            if h is not None:
                return index, h
        at = self._cursor
        while (first := held.first_within(at, self._size)) is not None:
            r = self._planned_from(first.start)  # the first gap not done from there
            if r is None:
                return None
            h = held.first_within(r.start, r.end)
            if h is not None:
                return None, h
            at = r.start  # r starts in a hole of held: look from there
        return None

    def requeue(self, r: Range) -> None:
        """``r`` goes back to the front: it is the next piece given out."""
        self._requeued.appendleft(r)

    def undone(self, r: Range) -> None:
        """``r`` just left ``done``: what lies below the cursor goes to the front; what lies
        from the cursor on is a gap again, planned as any other."""
        if r.start < self._cursor:
            self._requeued.appendleft(Range(r.start, min(r.end, self._cursor)))

    def __bool__(self) -> bool:
        return bool(self._requeued) or self._planned_from(self._cursor) is not None

    def pieces(self) -> list[Range]:
        """Every piece waiting, in order (one entry each: for tests and diagnostics)."""
        out = list(self._requeued)
        at = self._cursor
        while (r := self._planned_from(at)) is not None:
            out.append(r)
            at = r.end
        return out

    def _planned_from(self, at: int) -> Range | None:
        gap = self._done.gap_from(at, self._size)
        return None if gap is None else Range(gap.start, min(gap.end, gap.start + self._piece_size))


class SourceBook:
    """What the scheduler knows of each source: bytes committed, speed, failures, exclusion."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures
        self._failures: dict[str, list[str]] = {}
        self._excluded: set[str] = set()
        self._bytes: dict[str, int] = {}
        self._rate: dict[str, float] = {}  # bytes/s of one assignment of that source
        self._latency: dict[str, float] = {}  # seconds to an assignment's first byte

    def strike(self, source: str, reason: str) -> None:
        """One failure; the source is excluded at ``max_failures``."""
        reasons = self._failures.setdefault(source, [])
        reasons.append(reason)
        if len(reasons) >= self.max_failures:
            self._excluded.add(source)

    def reasons(self, source: str) -> list[str]:
        return list(self._failures.get(source, ()))

    def exclude(self, source: str) -> None:
        self._excluded.add(source)

    def excluded(self, source: str) -> bool:
        return source in self._excluded

    def credit(self, source: str, n: int) -> None:
        """``n`` more bytes committed (negative: taken back)."""
        self._bytes[source] = self._bytes.get(source, 0) + n

    def bytes(self) -> dict[str, int]:
        return dict(self._bytes)

    def rate(self, source: str) -> float | None:
        return self._rate.get(source)

    def latency(self, source: str) -> float:
        """Seconds from assigning a piece to its first byte for ``source``
        (the last measured), else :data:`REQUEST_COST`."""
        return self._latency.get(source, REQUEST_COST)

    def first_byte(self, source: str, seconds: float) -> None:
        self._latency[source] = max(0.0, seconds)

    def observe(self, source: str, rate: float) -> None:
        """An assignment of ``source`` ran at ``rate`` bytes/s (averaged with what was known)."""
        old = self._rate.get(source)
        self._rate[source] = rate if old is None else (old + rate) / 2


#: With both speeds known, a split is judged in time, not in bytes. The
#: running assignment keeps at least what its link moves in this many seconds
#: (bytes already on their way to it past a new end are wasted), and at least
#: one 64 KiB :data:`ALIGN` unit.
IN_FLIGHT = 0.1
#: The least share of a running assignment's remaining time that a split must save.
#: A smaller gain is within the error of the speed estimates, and it is what a
#: slow source offers at the very end: its small piece, which cannot be split
#: again, then outlasts the fast workers that could have taken it (measured in
#: tests/unit/test_planning.py's simulations: 4.18 s instead of 3.9 s).
MIN_GAIN = 0.25
#: Seconds of data before an assignment's own speed counts over its source's earlier
#: assignments': its first bytes come in bursts (buffers filled during the round trip).
SETTLE = 0.25
#: Seconds a new range request costs before its first byte, until the source's
#: own first-byte time is measured (:meth:`SourceBook.latency`).
REQUEST_COST = 0.1


def split_victim(assignments: Iterable[_Assignment], source: str, min_split: int,
                 rate: Callable[[_Assignment], float | None]) -> list[_Assignment]:
    """The running assignments ``source`` may split, most urgent first: none racing, each
    with room for two parts of the smallest size :func:`split_point` allows.

    Urgent: the one that would finish last (by ``rate``, bytes/s, where
    known), else the largest unclaimed remainder; on a tie another source's assignment
    (its link, not ours, is the slow one), then the oldest. The caller tries
    them in order with :func:`split_point`: the first that a cut helps is cut.
    """
    def urgency(assignment: _Assignment) -> tuple[float, int, bool, int]:
        remaining = assignment.end - assignment.claimed
        speed = rate(assignment)
        return (remaining / speed if speed else math.inf, remaining, assignment.source != source,
                -assignment.assignment_id)

    least = 2 * min(ALIGN, min_split)
    return sorted((j for j in assignments if j.end - j.claimed >= least and j.rival is None),
                  key=urgency, reverse=True)


def split_point(claimed: int, end: int, min_split: int, theirs: float | None,
                ours: float | None, cost: float = REQUEST_COST) -> int | None:
    """Where to cut a running assignment at ``[claimed, end)``, or None if cutting would not help.

    Without both speeds (``theirs``: the running assignment's, ``ours``: the new
    worker's source's, in bytes/s) it halves, never within ``min_split`` of
    the claimed offset nor of the end: a new request for less costs more
    than it saves.

    With both, the cut is judged in time, so a slow link's last bytes are
    taken over however few they are (a fixed floor in bytes left a link at a
    tenth of the others' speed a tail of seconds): the running assignment keeps at
    least :data:`IN_FLIGHT` seconds of its link (and one :data:`ALIGN`
    unit), the new piece is at least one unit, and the cut is placed so
    that both end together when the new request first pays ``cost``
    seconds. Then the split must help: both parts must end at least
    :data:`MIN_GAIN` sooner than the running assignment would end alone, or no
    split. Rounded to :data:`ALIGN` where the bounds allow.
    """
    remaining = end - claimed
    if theirs and ours:
        # keep / theirs == cost + (remaining - keep) / ours
        keep = round(theirs * (cost * ours + remaining) / (theirs + ours))
        lo = claimed + min(min_split, max(ALIGN, round(theirs * IN_FLIGHT)))
        hi = end - min(min_split, ALIGN)
    else:
        keep = remaining // 2
        lo, hi = claimed + min_split, end - min_split
    if lo > hi:
        return None
    mid = min(max(claimed + keep, lo), hi)
    down = mid - mid % ALIGN
    for aligned in sorted((down, down + ALIGN), key=lambda a: abs(a - mid)):
        if lo <= aligned <= hi:
            mid = aligned
            break
    if theirs and ours and max(cost + (end - mid) / ours, (mid - claimed) / theirs) \
            > (1 - MIN_GAIN) * remaining / theirs:
        return None
    return mid


#: An assignment that has not delivered its first byte is raced only after this many
#: times ``race_after``: its connection, handshake and request may take that
#: long on a loaded machine (32 helpers on 2 cores raced 17 MiB for nothing
#: at 1.5 s, and a racing slot takes its host's link from the host's others).
UNSTARTED = 3


class Races:
    """Backup assignments for silent ones: who is silent, and who won (see the module docstring).

    Silent: no sign of life for ``after`` seconds (:data:`UNSTARTED` times
    that before its first byte) while some assignment made progress more recently
    (so the silence is that source's, not the origin's). The first of two rivals to claim a byte wins; the loser's end
    moves back to what it had claimed, and it is retired if nothing of it is
    left to write. Losers are kept until the caller asks (:meth:`take_losers`).
    """

    def __init__(self, after: float | None) -> None:
        self.after = after
        self._last_progress: float | None = None  # the caller's clock at the last claim
        self._losers: list[Shrink] = []

    def progressed(self, assignment: _Assignment, now: float) -> None:
        assignment.heard = self._last_progress = now

    def silent_assignment(self, assignments: Iterable[_Assignment], source: str,
                          now: float | None) -> _Assignment | None:
        """The longest-silent assignment of another source that may be raced now, or None."""
        if now is None or self.after is None or self._last_progress is None \
                or now - self._last_progress >= self.after:
            return None
        silent = [j for j in assignments if j.rival is None and j.source != source and j.end > j.claimed
                  and j.heard is not None
                  and now - j.heard >= (self.after if j.first is not None else self.after * UNSTARTED)]
        return min(silent, key=lambda j: (j.heard, j.assignment_id), default=None)

    def settle(self, assignments: dict[int, _Assignment], winner: _Assignment) -> None:
        """``winner`` claimed first: its rival stops at what it has claimed."""
        loser = assignments[winner.rival]
        winner.rival = loser.rival = None
        loser.end = loser.claimed
        self._losers.append(Shrink(loser.assignment_id, loser.end))
        if loser.position == loser.end:  # nothing of it is left to write: retired
            del assignments[loser.assignment_id]

    def shrunk(self, shrink: Shrink) -> None:
        """An assignment's end moved back for another reason: its worker is told with the losers."""
        self._losers.append(shrink)

    def take_losers(self) -> list[Shrink]:
        losers, self._losers = self._losers, []
        return losers


class Scheduler:
    """Hands byte ranges of a ``size``-byte file to workers; see the module docstring.

    ``done`` (what a resume record says is already written) is copied, so
    only its gaps are planned. ``min_split`` is the smallest piece a split
    may create: smaller ones cost a request for too little data.
    ``max_failures`` failures exclude a source for the rest of the download.
    ``race_after`` (seconds, with a clock) enables races of silent assignments.

    Optional clock: ``assign``, ``claim`` and ``finished`` accept ``now``
    (seconds, any monotonic clock). With it a split lets both parts end
    together, from measured speeds; without it (or before there is anything
    to measure) a split halves the remainder, which is never far wrong: a
    fast worker that finishes its half early simply splits again.
    """

    def __init__(self, size: int, *, piece_size: int, min_split: int,
                 done: RangeSet | None = None, max_failures: int = 3,
                 race_after: float | None = None) -> None:
        if size < 0 or piece_size <= 0 or min_split <= 0 or max_failures <= 0:
            raise ValueError("need size >= 0, and piece_size, min_split, max_failures > 0")
        if race_after is not None and race_after <= 0:
            raise ValueError("race_after must be > 0 seconds, or None")
        self.size = size
        self.piece_size = piece_size
        self.min_split = min_split
        self._done = done.copy() if done is not None else RangeSet()
        self._done.remove(size, max(size, self._done.end))  # nothing past the end of the file
        self._queue = PieceQueue(self._done, size, piece_size)
        self._assignments: dict[int, _Assignment] = {}
        self._next_id = 1  # never reused, so a stale worker's id never names a new assignment
        self.sources = SourceBook(max_failures)
        self._races = Races(race_after)
        self._holdings: dict[str, RangeSet] = {}  # a source not in it holds the whole file
        self._start_at = 0  # where new pieces are taken from first (``start_at``)

    # -- what each source holds ---------------------------------------------------------------
    def hold(self, source: str, ranges: RangeSet | None) -> None:
        """``source`` can deliver only ``ranges`` of the file (None: all of it, the default).

        An origin holds the whole file; a LAN copy holds what its member has
        written so far, and says so again as that grows. From then on
        ``assign`` gives ``source`` only bytes inside ``ranges``: a piece it
        takes from the queue is cut to them, and it splits or races only
        assignments whose unclaimed remainder lies inside them. Assignments
        already running are not changed (a source that lost bytes fails them).
        """
        if ranges is None:
            self._holdings.pop(source, None)
        else:
            self._holdings[source] = ranges.copy()

    def start_at(self, offset: int) -> None:
        """Hand out the pieces from byte ``offset`` on first, then the rest (0: in file order,
        the default). Where several members fetch one file from the origin at once, each
        walks its own part of it (``engine.sharing.origin_start``) instead of all taking
        the same first pieces. Failed remainders before ``offset`` wait until nothing from
        ``offset`` on is left; running assignments are not changed."""
        if not 0 <= offset:
            raise ValueError(f"offset must be >= 0, not {offset}")
        self._start_at = min(offset, self.size)

    def holding(self, source: str) -> RangeSet | None:
        """What ``source`` holds (a copy), or None when it holds the whole file."""
        held = self._holdings.get(source)
        return held.copy() if held is not None else None

    def _may_take(self, source: str, assignment: _Assignment) -> bool:
        """``source`` holds the unclaimed remainder of ``assignment`` (so it may split or race it)."""
        held = self._holdings.get(source)
        return held is None or held.covers(assignment.claimed, assignment.end)

    # -- handing out work ---------------------------------------------------------------------
    def assign(self, source: str, now: float | None = None) -> Piece | None:
        """The next piece for an idle worker of ``source``, or None.

        None if ``source`` is excluded or there is nothing to give. First the
        queue (failed remainders at its front), then a race of a silent assignment
        (:class:`Races`), then a split: a running assignment with at least
        ``2 * min_split`` unclaimed keeps ``[claimed, mid)`` and the piece is
        ``[mid, end)``, with ``piece.shrink`` naming the assignment and its new end
        (tell its worker); see :func:`split_victim` and :func:`split_point`.
        """
        if self.sources.excluded(source):
            return None
        r = self._queue.take(self._holdings.get(source), self._start_at)
        if r is not None:
            return self._start(source, r.start, r.end, now)
        return self._race(source, now) or self._split(source, now)

    def _split(self, source: str, now: float | None) -> Piece | None:
        ours = self.sources.rate(source) if now is not None else None
        cost = self.sources.latency(source)
        mine = [a for a in self._assignments.values() if self._may_take(source, a)]
        for victim in split_victim(mine, source, self.min_split,
                                   lambda assignment: self._assignment_rate(assignment, now)):
            mid = split_point(victim.claimed, victim.end, self.min_split, self._assignment_rate(victim, now),
                              ours, cost)
            if mid is not None:
                old_end, victim.end = victim.end, mid
                return self._start(source, mid, old_end, now, Shrink(victim.assignment_id, mid))
        return None

    def _assignment_rate(self, assignment: _Assignment, now: float | None) -> float | None:
        """With a clock: its source's speed from earlier assignments once known, but the
        assignment's own after :data:`SETTLE` seconds of data (a link that slowed
        down shows there first); None before either is known."""
        if now is None:
            return None
        return assignment.rate(now, SETTLE) or self.sources.rate(assignment.source) or assignment.rate(now)

    def _start(self, source: str, start: int, end: int, now: float | None,
               shrink: Shrink | None = None) -> Piece:
        assignment_id = self._next_id
        self._next_id += 1
        self._assignments[assignment_id] = _Assignment(assignment_id, source, start, start, start, end,
                                                       now, now)
        return Piece(assignment_id, start, end, shrink)

    # -- racing a silent assignment ------------------------------------------------------------
    def _race(self, source: str, now: float | None) -> Piece | None:
        """A backup assignment for the unclaimed ``[claimed, end)`` of a silent assignment, or None."""
        mine = (a for a in self._assignments.values() if self._may_take(source, a))
        assignment = self._races.silent_assignment(mine, source, now)
        if assignment is None:
            return None
        piece = self._start(source, assignment.claimed, assignment.end, now)
        assignment.rival = piece.assignment_id
        self._assignments[piece.assignment_id].rival = assignment.assignment_id
        return piece

    def give_way(self, ranges: RangeSet, sources: Iterable[str], min_length: int = 1) -> int:
        """Running assignments of ``sources`` stop where ``ranges`` begin; the bytes given up.

        For bytes another member fetches from the origin at the same time
        (``engine.sharing.given_way``): the assignment keeps what it has
        claimed and what lies before ``ranges``; the rest, from the first byte
        of ``ranges`` on, waits in the queue again (where holdings decide who
        may take it). Its worker is told as a race's loser is
        (:meth:`take_losers`); one with nothing left to write is retired.
        Assignments in a race, and cuts of fewer than ``min_length`` bytes, are
        left alone.
        """
        wanted = set(sources)
        given = 0
        for a in list(self._assignments.values()):
            if a.source not in wanted or a.rival is not None:
                continue
            first = ranges.first_within(a.claimed, a.end)
            if first is None or a.end - first.start < min_length:
                continue
            old_end, a.end = a.end, first.start
            self._queue.requeue(Range(a.end, old_end))
            self._races.shrunk(Shrink(a.assignment_id, a.end))
            if a.position == a.end:
                del self._assignments[a.assignment_id]
            given += old_end - a.end
        return given

    def take_losers(self) -> list[Shrink]:
        """The assignments that lost a race since the last call, with their new ends.

        Tell their workers (a source stops at the new end; an assignment no longer
        running stops at once).
        """
        return self._races.take_losers()

    def heard(self, assignment_id: int, now: float) -> None:
        """A sign of life from the assignment's worker that carried no data (a keep-alive)."""
        assignment = self._assignments.get(assignment_id)
        if assignment is not None:
            assignment.heard = now

    # -- progress -----------------------------------------------------------------------------
    def end_of(self, assignment_id: int) -> int:
        """The assignment's current end (shrinks when it is split). KeyError if not running."""
        return self._assignments[assignment_id].end

    def assignment(self, assignment_id: int) -> ActiveAssignment:
        """A snapshot of a running assignment. KeyError if not running."""
        return self._assignments[assignment_id].snapshot()

    def is_assigned(self, assignment_id: int) -> bool:
        return assignment_id in self._assignments

    def claim(self, assignment_id: int, nbytes: int, now: float | None = None) -> tuple[int, int]:
        """Accept ``nbytes`` more contiguous bytes received for an assignment: ``(offset, n)``.

        Write the first ``n`` of them at ``offset``, then ``commit(assignment_id, n)``.
        ``n = min(nbytes, end - claimed)``: what lies beyond the assignment's current
        end (it was split away, or the sender sent too much) is dropped.
        KeyError for an assignment that is not running: a worker that was given up on
        (a frozen source waking up) gets nothing written. The first claim of a
        byte by either side of a race settles it (see :meth:`take_losers`).
        ``now``, if given, is the assignment's last sign of life.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        assignment = self._assignments[assignment_id]
        n = min(nbytes, assignment.end - assignment.claimed)
        if n and assignment.rival is not None:
            self._races.settle(self._assignments, assignment)
        if n and now is not None:
            if assignment.first is None:
                assignment.first = now
                if assignment.started is not None:
                    self.sources.first_byte(assignment.source, now - assignment.started)
            self._races.progressed(assignment, now)
        offset = assignment.claimed
        assignment.claimed += n
        return offset, n

    def commit(self, assignment_id: int, n: int) -> None:
        """The next ``n`` claimed bytes of the assignment are written: they are done.

        A no-op if the assignment stopped running between claim and commit (failed
        by another thread): its claimed bytes were requeued with its
        remainder and will be written again by someone else.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        assignment = self._assignments.get(assignment_id)
        if assignment is None or n == 0:
            return
        if assignment.position + n > assignment.claimed:
            raise ValueError(f"assignment {assignment_id}: commit of {n} bytes beyond what was claimed")
        self._done.add(assignment.position, assignment.position + n)
        assignment.position += n
        self.sources.credit(assignment.source, n)

    def finished(self, assignment_id: int, now: float | None = None) -> bool:
        """The assignment's worker says it is complete. True if it is (the assignment is retired).

        A worker that stops short (a lying source, a bug) is failed with the
        reason "short" and False is returned. False also for an assignment that is
        not running any more (already failed or retired): old news.
        """
        assignment = self._assignments.get(assignment_id)
        if assignment is None:
            return False
        if assignment.position < assignment.end:
            self.failed(assignment_id, "short")
            return False
        del self._assignments[assignment_id]
        rate = assignment.rate(now)
        if rate is not None:
            self.sources.observe(assignment.source, rate)
        return True

    def failed(self, assignment_id: int, reason: str, *, discard: bool = False, count: bool = True) -> None:
        """Give up on an assignment: its unwritten remainder goes to the FRONT of the queue.

        The remainder is ``[position, end)`` (claimed but uncommitted bytes
        are unwritten), less what a racing rival covers. Committed bytes stay
        done, unless ``discard`` (a worker caught lying): then ``[start, end)``
        is requeued and its bytes leave ``done`` and its source's count. Counts
        one failure for the source unless ``count`` is False (the caller's own
        fault). A no-op for an assignment that is not running.
        """
        assignment = self._assignments.pop(assignment_id, None)
        if assignment is None:
            return
        end = assignment.end
        if assignment.rival is not None:  # its rival covers [rival.start, end) and goes on alone
            rival = self._assignments[assignment.rival]
            rival.rival = None
            end = rival.start if rival.start > assignment.start else assignment.position
        if discard and assignment.position > assignment.start:
            self._done.remove(assignment.start, assignment.position)
            self.sources.credit(assignment.source, assignment.start - assignment.position)
            assignment.position = assignment.start
        if assignment.position < end:
            self._queue.requeue(Range(assignment.position, end))
        if count:
            self.sources.strike(assignment.source, reason)

    def redo(self, start: int, end: int) -> None:
        """Bytes ``[start, end)`` are written but wrong (a piece failed its hash): they
        leave ``done`` and go to the FRONT of the queue, to be fetched again."""
        self._done.remove(start, end)
        self._queue.undone(Range(start, end))

    def forget(self, source: str, ranges: RangeSet) -> RangeSet:
        """Bytes ``source`` wrote in assignments that already finished turn out wrong (a
        LAN copy caught forging its piece hashes): what of ``ranges`` is done and not
        part of a running assignment leaves ``done`` and its source's count, and goes
        to the front of the queue. Returns what was taken back. Running assignments
        are the caller's to fail (with ``discard``), so nothing is queued twice.
        """
        gone = ranges.copy()
        for hole in self._done.missing(self.size):
            gone.remove(hole.start, hole.end)
        for assignment in self._assignments.values():
            gone.remove(assignment.start, assignment.end)
        for start, end in reversed(list(gone)):
            self._done.remove(start, end)
            self._queue.requeue(Range(start, end))
        self.sources.credit(source, -gone.total)
        return gone

    def exclude(self, source: str) -> None:
        """No more work for ``source``. Its running assignments are the caller's to fail."""
        self.sources.exclude(source)

    def excluded(self, source: str) -> bool:
        return self.sources.excluded(source)

    # -- state --------------------------------------------------------------------------------
    @property
    def done(self) -> RangeSet:
        """What is written (committed). The live set: ``copy()`` it to keep or change it."""
        return self._done

    @property
    def complete(self) -> bool:
        return self._done.covers(0, self.size)

    @property
    def remaining(self) -> int:
        return self.size - self._done.total

    @property
    def active_assignments(self) -> list[ActiveAssignment]:
        return [j.snapshot() for j in self._assignments.values()]

    @property
    def queue(self) -> list[Range]:
        """The pieces waiting for a worker, in the order they will be given out (built per call)."""
        return self._queue.pieces()

    def has_work(self, source: str | None = None) -> bool:
        """True if pieces are queued or a running assignment is big enough to split
        (with ``source``: pieces it holds, or an assignment it may split).

        Without a clock that is exactly "``assign`` gives a non-excluded source
        something"; with one, ``assign`` may still refuse a source too slow for
        a split to help.
        """
        held = self._holdings.get(source) if source is not None else None
        if held is None:
            return bool(self._queue) or any(j.end - j.claimed >= 2 * self.min_split
                                            for j in self._assignments.values())
        return self._queue.has_held(held) or any(
            j.end - j.claimed >= 2 * self.min_split and held.covers(j.claimed, j.end)
            for j in self._assignments.values())

    def bytes_by_source(self) -> dict[str, int]:
        """Bytes committed per source (less what ``failed(discard=True)`` took back)."""
        return self.sources.bytes()

    def failures(self, source: str) -> int:
        return len(self.sources.reasons(source))

    def failure_reasons(self, source: str) -> list[str]:
        return self.sources.reasons(source)

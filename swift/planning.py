"""Range arithmetic and the scheduler that hands byte ranges to workers. Pure.

No threads, no locks, no clocks, no I/O: the download engine holds one lock
around every call, and passes the time in (``now``) where speed matters. That
keeps every decision reproducible and testable with fake workers and a fake
clock. All ranges are half-open ``[start, end)`` byte offsets.

The life of a job, as the scheduler sees it::

    assign -> (claim, commit)* -> finished      all of [start, end) is written: retired
                               \\-> failed        [position, end) goes back to the queue

While a job runs, another worker's ``assign`` may *split* it: the job's
``end`` moves back to a point in what it has not claimed yet, and the far
part becomes a new job. Three offsets track a job, ``start <= position <=
claimed <= end``:

- ``claimed``: how far the worker's bytes have been accepted for writing
  (``claim`` hands out the offset to write at, under the caller's lock);
- ``position``: how far they are written (``commit``, after the caller's
  ``pwrite`` outside the lock);
- ``end``: where the job stops now; it only ever shrinks.

Splits never give away claimed bytes and a failure gives back everything
from ``position`` on, so at every moment the written bytes (``done``), the
queue and the running jobs' ``[position, end)`` cut ``[0, size)`` into
disjoint parts: no byte is lost and none is handed to two live jobs.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

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
    """A split moved running job ``job_id``'s end back to ``end``.

    The worker running that job must be told (a peer stops at ``end``); the
    bytes from ``end`` on are a new piece now.
    """

    job_id: int
    end: int


@dataclass(frozen=True)
class Piece:
    """What a worker is told to fetch: job ``job_id``, ``[start, end)`` as at assignment.

    ``shrink`` is set when the piece was split off a running job: that job
    now ends at ``shrink.end == start``, and its worker must be told. The
    new job's own end may later shrink too; ask ``Scheduler.end_of``.
    """

    job_id: int
    start: int
    end: int
    shrink: Shrink | None = None


@dataclass(frozen=True)
class ActiveJob:
    """A snapshot of one running job (``start <= position <= claimed <= end``)."""

    job_id: int
    peer: str
    start: int
    claimed: int
    position: int
    end: int


@dataclass
class _Job:
    job_id: int
    peer: str
    start: int
    claimed: int
    position: int
    end: int
    started: float | None  # the caller's clock at assignment, if it gave one

    def snapshot(self) -> ActiveJob:
        return ActiveJob(self.job_id, self.peer, self.start, self.claimed, self.position, self.end)


class Scheduler:
    """Hands byte ranges of a ``size``-byte file to workers; see the module docstring.

    ``done`` (what a resume record says is already written) is copied, so
    only its gaps are planned. ``min_split`` is the smallest piece a split
    may create: smaller ones cost a request for too little data.
    ``max_failures`` failures exclude a peer for the rest of the download.

    Optional clock: ``assign`` and ``finished`` accept ``now`` (seconds, any
    monotonic clock). With it, a split is placed so that the running job and
    the new one should end together, from the running job's measured speed
    and the new worker's peer's speed on its earlier jobs. Without it (or
    before there is anything to measure) a split halves the remainder, which
    is never far wrong: a fast worker that finishes its half early simply
    splits again.
    """

    def __init__(self, size: int, *, piece_size: int, min_split: int,
                 done: RangeSet | None = None, max_failures: int = 3) -> None:
        if size < 0 or piece_size <= 0 or min_split <= 0 or max_failures <= 0:
            raise ValueError("need size >= 0, and piece_size, min_split, max_failures > 0")
        self.size = size
        self.piece_size = piece_size
        self.min_split = min_split
        self.max_failures = max_failures
        self._done = done.copy() if done is not None else RangeSet()
        self._done.remove(size, max(size, self._done.end))  # nothing past the end of the file
        # The queue is planned lazily: failed remainders wait in ``_requeued``
        # (front first); the rest is every gap of ``done`` from ``_plan_at`` on,
        # cut into pieces only when handed out. So the queue costs nothing per
        # piece, whatever the file's size or the record's fragments.
        self._requeued: deque[Range] = deque()
        self._plan_at = 0
        self._jobs: dict[int, _Job] = {}
        self._next_id = 1  # never reused, so a stale worker's id never names a new job
        self._failures: dict[str, list[str]] = {}
        self._excluded: set[str] = set()
        self._bytes_by_peer: dict[str, int] = {}
        self._peer_rate: dict[str, float] = {}  # bytes/s of one job of that peer

    # -- handing out work ---------------------------------------------------------------------
    def assign(self, peer: str, now: float | None = None) -> Piece | None:
        """The next piece for an idle worker of ``peer``, or None.

        None if ``peer`` is excluded or there is nothing to give. A piece
        split off a running job says so in ``piece.shrink`` (the job and its
        new end), so the caller tells that job's worker without looking. The queue
        comes first (front to back; failed remainders are at its front). With
        the queue empty, a running job whose unclaimed remainder is at least
        ``2 * min_split`` is split: the running job keeps ``[claimed, mid)``,
        the new piece is the far part ``[mid, end)``. The job split is the one
        with the largest unclaimed remainder or, with a clock, the one that
        would otherwise finish last (it decides when the download ends); on a
        tie a job of another peer (its link, not ours, is the slow one), then
        the oldest job.
        """
        if peer in self._excluded:
            return None
        r = self._take_queued()
        if r is not None:
            return self._start(peer, r.start, r.end, now)
        victim = self._split_victim(peer, now)
        if victim is None:
            return None
        mid = self._split_point(victim, peer, now)
        if mid is None:
            return None
        old_end, victim.end = victim.end, mid
        return self._start(peer, mid, old_end, now, Shrink(victim.job_id, mid))

    def _take_queued(self) -> Range | None:
        if self._requeued:
            return self._requeued.popleft()
        r = self._planned_from(self._plan_at)
        if r is not None:
            self._plan_at = r.end
        return r

    def _planned_from(self, at: int) -> Range | None:
        """The piece planned at or after ``at``: the next gap of ``done``, at most a piece long.

        Everything from ``_plan_at`` on that is not done is unplanned: jobs
        and requeued remainders all lie below it, and only jobs commit.
        """
        gap = self._done.gap_from(at, self.size)
        return None if gap is None else Range(gap.start, min(gap.end, gap.start + self.piece_size))

    def _split_victim(self, peer: str, now: float | None) -> _Job | None:
        def urgency(job: _Job) -> tuple[float, int, bool, int]:
            remaining = job.end - job.claimed
            rate = self._job_rate(job, now) if now is not None else None
            seconds_left = remaining / rate if rate else math.inf
            return (seconds_left, remaining, job.peer != peer, -job.job_id)

        candidates = [j for j in self._jobs.values() if j.end - j.claimed >= 2 * self.min_split]
        return max(candidates, key=urgency, default=None)

    def _split_point(self, job: _Job, peer: str, now: float | None) -> int | None:
        """Where to cut ``job``, or None if cutting it would not help.

        Never within ``min_split`` of its claimed offset (bytes already on
        their way past the new end are wasted) nor of its end (a new request
        for less costs more than it saves). Halves, or with both speeds known
        cuts so that both parts should end together; then a split must
        help: a slow worker that would need longer for the (at least
        ``min_split``) far part than the running job needs for all of it
        gets nothing.
        """
        remaining = job.end - job.claimed
        theirs = self._job_rate(job, now) if now is not None else None
        ours = self._peer_rate.get(peer) if now is not None else None
        keep = remaining // 2
        if theirs and ours:
            keep = round(remaining * theirs / (theirs + ours))
        lo, hi = job.claimed + self.min_split, job.end - self.min_split
        mid = min(max(job.claimed + keep, lo), hi)
        down = mid - mid % ALIGN
        for aligned in sorted((down, down + ALIGN), key=lambda a: abs(a - mid)):
            if lo <= aligned <= hi:
                mid = aligned
                break
        if theirs and ours and (job.end - mid) / ours >= remaining / theirs:
            return None
        return mid

    def _job_rate(self, job: _Job, now: float | None) -> float | None:
        """The job's measured speed (bytes/s), else its peer's from earlier jobs, else None."""
        if now is not None and job.started is not None and now > job.started and job.claimed > job.start:
            return (job.claimed - job.start) / (now - job.started)
        return self._peer_rate.get(job.peer)

    def _start(self, peer: str, start: int, end: int, now: float | None,
               shrink: Shrink | None = None) -> Piece:
        job_id = self._next_id
        self._next_id += 1
        self._jobs[job_id] = _Job(job_id, peer, start, start, start, end, now)
        return Piece(job_id, start, end, shrink)

    # -- progress -----------------------------------------------------------------------------
    def end_of(self, job_id: int) -> int:
        """The job's current end (shrinks when it is split). KeyError if not running."""
        return self._jobs[job_id].end

    def job(self, job_id: int) -> ActiveJob:
        """A snapshot of a running job. KeyError if not running."""
        return self._jobs[job_id].snapshot()

    def is_job_active(self, job_id: int) -> bool:
        return job_id in self._jobs

    def claim(self, job_id: int, nbytes: int) -> tuple[int, int]:
        """Accept ``nbytes`` more contiguous bytes received for a job: ``(offset, n)``.

        Write the first ``n`` of them at ``offset``, then ``commit(job_id, n)``.
        ``n = min(nbytes, end - claimed)``: what lies beyond the job's current
        end (it was split away, or the sender sent too much) is dropped.
        KeyError for a job that is not running: a worker that was given up on
        (a frozen peer waking up) gets nothing written.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        job = self._jobs[job_id]
        n = min(nbytes, job.end - job.claimed)
        offset = job.claimed
        job.claimed += n
        return offset, n

    def commit(self, job_id: int, n: int) -> None:
        """The next ``n`` claimed bytes of the job are written: they are done.

        A no-op if the job stopped running between claim and commit (failed
        by another thread): its claimed bytes were requeued with its
        remainder and will be written again by someone else.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        job = self._jobs.get(job_id)
        if job is None or n == 0:
            return
        if job.position + n > job.claimed:
            raise ValueError(f"job {job_id}: commit of {n} bytes beyond what was claimed")
        self._done.add(job.position, job.position + n)
        job.position += n
        self._bytes_by_peer[job.peer] = self._bytes_by_peer.get(job.peer, 0) + n

    def finished(self, job_id: int, now: float | None = None) -> bool:
        """The job's worker says it is complete. True if it is (the job is retired).

        A worker that stops short (a lying peer, a bug) is failed with the
        reason "short" and False is returned. False also for a job that is
        not running any more (already failed or retired): old news.
        """
        job = self._jobs.get(job_id)
        if job is None:
            return False
        if job.position < job.end:
            self.failed(job_id, "short")
            return False
        del self._jobs[job_id]
        if now is not None and job.started is not None and now > job.started:
            rate = (job.end - job.start) / (now - job.started)
            old = self._peer_rate.get(job.peer)
            self._peer_rate[job.peer] = rate if old is None else (old + rate) / 2
        return True

    def failed(self, job_id: int, reason: str, *, discard: bool = False) -> None:
        """Give up on a job: its unwritten remainder goes to the FRONT of the queue.

        The remainder is ``[position, end)``: claimed but uncommitted bytes
        count as unwritten. Committed bytes stay done, unless ``discard``:
        for a worker caught lying, whose written bytes cannot be trusted, the
        whole ``[start, end)`` is requeued and its bytes leave ``done`` (and
        its peer's count). Counts one failure for the peer, which is excluded
        at ``max_failures``. A no-op for a job that is not running.
        """
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        if discard and job.position > job.start:
            self._done.remove(job.start, job.position)
            self._bytes_by_peer[job.peer] -= job.position - job.start
            job.position = job.start
        if job.position < job.end:
            self._requeued.appendleft(Range(job.position, job.end))
        reasons = self._failures.setdefault(job.peer, [])
        reasons.append(reason)
        if len(reasons) >= self.max_failures:
            self._excluded.add(job.peer)

    def exclude(self, peer: str) -> None:
        """No more work for ``peer``. Its running jobs are the caller's to fail."""
        self._excluded.add(peer)

    def excluded(self, peer: str) -> bool:
        return peer in self._excluded

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
    def active_jobs(self) -> list[ActiveJob]:
        return [j.snapshot() for j in self._jobs.values()]

    @property
    def queue(self) -> list[Range]:
        """The pieces waiting for a worker, in the order they will be given out.

        Built on each call (one entry per piece): for tests and diagnostics,
        not for a loop.
        """
        pieces = list(self._requeued)
        at = self._plan_at
        while (r := self._planned_from(at)) is not None:
            pieces.append(r)
            at = r.end
        return pieces

    def has_work(self) -> bool:
        """True if pieces are queued or a running job is big enough to split.

        Without a clock that is exactly "``assign`` gives a non-excluded peer
        something"; with one, ``assign`` may still refuse a peer too slow for
        a split to help.
        """
        return self._has_queued() or any(j.end - j.claimed >= 2 * self.min_split
                                        for j in self._jobs.values())

    def _has_queued(self) -> bool:
        return bool(self._requeued) or self._planned_from(self._plan_at) is not None

    def bytes_by_peer(self) -> dict[str, int]:
        """Bytes committed per peer (less what ``failed(discard=True)`` took back)."""
        return dict(self._bytes_by_peer)

    def failures(self, peer: str) -> int:
        return len(self._failures.get(peer, ()))

    def failure_reasons(self, peer: str) -> list[str]:
        return list(self._failures.get(peer, ()))

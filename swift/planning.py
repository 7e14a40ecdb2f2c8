"""Range arithmetic and the scheduler that hands byte ranges to workers. Pure.

No threads, no locks, no clocks, no I/O: the download engine holds a lock
around every call. All ranges are half-open ``[start, end)``.

The life of a job, as the scheduler sees it::

    assign -> claim/commit ... -> finished          (all bytes written)
                              \\-> failed            (remainder back to the queue)
    another worker's assign may split it: its end moves to the middle of
    what it has not claimed yet, and the far half becomes a new job.

``claimed`` is how far the worker's bytes have been accepted for writing;
``position`` how far they are written (committed). Splits never touch
claimed bytes, failures give back everything from ``position`` on, so no
byte is written twice and none is lost.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

ALIGN = 64 * 1024


@dataclass(frozen=True, order=True)
class Range:
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
    """A set of byte offsets kept as sorted, disjoint, coalesced ranges."""

    def __init__(self, ranges=()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for r in ranges:
            start, end = (r.start, r.end) if isinstance(r, Range) else r
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_left(self._ends, start)  # first range that ends at/after start
        j = bisect.bisect_right(self._starts, end)  # ranges starting at/before end touch us
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_right(self._ends, start)
        j = bisect.bisect_left(self._starts, end)
        if i >= j:
            return
        keep_s: list[int] = []
        keep_e: list[int] = []
        if self._starts[i] < start:
            keep_s.append(self._starts[i])
            keep_e.append(start)
        if self._ends[j - 1] > end:
            keep_s.append(end)
            keep_e.append(self._ends[j - 1])
        self._starts[i:j] = keep_s
        self._ends[i:j] = keep_e

    def __contains__(self, offset: int) -> bool:
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self._ends[i]

    def covers(self, start: int, end: int) -> bool:
        if start >= end:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def overlaps(self, start: int, end: int) -> bool:
        if start >= end:
            return False
        i = bisect.bisect_right(self._ends, start)
        return i < len(self._starts) and self._starts[i] < end

    @property
    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def ranges(self) -> list[Range]:
        return [Range(s, e) for s, e in zip(self._starts, self._ends)]

    def missing(self, size: int) -> list[Range]:
        gaps, at = [], 0
        for s, e in zip(self._starts, self._ends):
            if s >= size:
                break
            if s > at:
                gaps.append(Range(at, s))
            at = max(at, e)
        if at < size:
            gaps.append(Range(at, size))
        return gaps

    def to_json(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends)]

    @classmethod
    def from_json(cls, obj, size: int) -> "RangeSet":
        if not isinstance(obj, list):
            raise ValueError("ranges must be a list")
        out = cls()
        for item in obj:
            if (not isinstance(item, (list, tuple)) or len(item) != 2
                    or not all(type(x) is int for x in item)):
                raise ValueError(f"bad range entry {item!r}")
            start, end = item
            if not 0 <= start < end <= size:
                raise ValueError(f"range [{start}, {end}) outside [0, {size})")
            out.add(start, end)
        return out

    def copy(self) -> "RangeSet":
        other = RangeSet()
        other._starts, other._ends = list(self._starts), list(self._ends)
        return other

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self.to_json() == other.to_json()

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"RangeSet({self.to_json()})"


@dataclass(frozen=True)
class Piece:
    job_id: int
    start: int
    end: int


@dataclass
class ActiveJob:
    job_id: int
    peer: str
    start: int
    claimed: int
    position: int
    end: int
    started: float | None = None


def plan_piece_size(size: int, workers: int, *, min_piece: int = 1 << 20,
                    max_piece: int = 64 << 20) -> int:
    """About two pieces per worker, clamped and aligned to 64 KiB.

    Two per worker lets every worker start at once and leaves a second round
    for the fast ones; splitting takes care of the tail, so pieces need not be
    small. Fewer, larger pieces mean fewer range requests (each costs a round
    trip to the origin); the 64 MiB ceiling bounds what one failure re-queues.
    """
    if size <= 0:
        return min_piece
    piece = size // max(1, workers * 2)
    piece = max(min_piece, min(max_piece, piece))
    return max(ALIGN, (piece + ALIGN - 1) // ALIGN * ALIGN)


class Scheduler:
    """Hands pieces to workers; see the module docstring for the job life cycle."""

    def __init__(self, size: int, *, piece_size: int, min_split: int,
                 done: RangeSet | None = None, max_failures: int = 3) -> None:
        if size < 0 or piece_size <= 0 or min_split <= 0:
            raise ValueError("size must be >= 0, piece_size and min_split > 0")
        self.size, self.piece_size, self.min_split = size, piece_size, min_split
        self.max_failures = max_failures
        self._queue = []
        self._jobs = {}
        self._done = done.copy() if done is not None else RangeSet()
        self._done.remove(size, max(size, 1 << 62))
        self._failures = {}
        self._excluded = set()
        self._by_peer = {}
        self._next_id = 1
        self._rates: dict[str, float] = {}
        for gap in self._done.missing(size):
            at = gap.start
            while at < gap.end:
                end = min(gap.end, at + piece_size)
                self._queue.append(Range(at, end))
                at = end

    # -- giving out work ----------------------------------------------------------------
    def assign(self, peer: str, now: float | None = None) -> Piece | None:
        """The next piece for a worker of ``peer``, or None.

        With ``now`` (seconds, any monotonic clock) the scheduler knows how
        fast each job and peer goes, and splits so that the running job and
        the new one should finish together; without it, it splits in half.
        """
        if peer in self._excluded:
            return None
        if self._queue:
            r = self._queue.pop(0)
            return self._start(peer, r.start, r.end, now)
        plan = self._plan_split(peer, now)
        if plan is None:
            return None
        victim, mid = plan
        end = victim.end
        victim.end = mid
        return self._start(peer, mid, end, now)

    #: A job is only worth splitting if it would still run this long (seconds):
    #: below that, the new range request costs about what it saves.
    MIN_SPLIT_SECONDS = 0.5

    def _job_rate(self, job: ActiveJob, now: float | None) -> float | None:
        if now is not None and job.started is not None and now - job.started >= 0.5 \
                and job.claimed > job.start:
            return (job.claimed - job.start) / (now - job.started)
        return self._rates.get(job.peer)

    def _plan_split(self, peer: str, now: float | None) -> tuple[ActiveJob, int] | None:
        new_rate = self._rates.get(peer)
        best: tuple[float, ActiveJob, int] | None = None
        for job in self._jobs.values():
            remaining = job.end - job.claimed
            if remaining < self.min_split:
                continue
            rate = self._job_rate(job, now)
            if rate is None or new_rate is None or now is None:
                keep, score = remaining // 2, float(remaining)  # no clock: halves
                if keep < self.min_split:
                    continue
            else:
                rate = max(rate, 1.0)
                if remaining / rate < self.MIN_SPLIT_SECONDS:
                    continue
                keep = int(remaining * rate / (rate + new_rate))
                score = remaining / rate * 1e12  # rate-aware plans outrank halving
            if remaining - keep < self.min_split:
                continue
            mid = job.claimed + keep
            aligned = mid // ALIGN * ALIGN
            if aligned >= job.claimed and job.end - aligned >= self.min_split:
                mid = aligned
            if best is None or score > best[0]:
                best = (score, job, mid)
        return None if best is None else (best[1], best[2])

    def _start(self, peer: str, start: int, end: int, now: float | None = None) -> Piece:
        job_id = self._next_id
        self._next_id += 1
        self._jobs[job_id] = ActiveJob(job_id, peer, start, start, start, end, now)
        return Piece(job_id, start, end)

    # -- progress -------------------------------------------------------------------------
    def end_of(self, job_id: int) -> int:
        return self._jobs[job_id].end

    def is_job_active(self, job_id: int) -> bool:
        return job_id in self._jobs

    def claim(self, job_id: int, nbytes: int) -> tuple[int, int]:
        job = self._jobs[job_id]
        n = max(0, min(nbytes, job.end - job.claimed))
        offset = job.claimed
        job.claimed += n
        return offset, n

    def commit(self, job_id: int, n: int) -> None:
        job = self._jobs.get(job_id)
        if job is None or n <= 0:
            return
        if job.position + n > job.claimed:
            raise ValueError("commit beyond what was claimed")
        self._done.add(job.position, job.position + n)
        job.position += n
        self._by_peer[job.peer] = self._by_peer.get(job.peer, 0) + n

    def finished(self, job_id: int, now: float | None = None) -> bool:
        job = self._jobs.get(job_id)
        if job is None:
            return False
        if job.position >= job.end:
            del self._jobs[job_id]
            if now is not None and job.started is not None and now > job.started:
                rate = (job.end - job.start) / (now - job.started)
                old = self._rates.get(job.peer)
                self._rates[job.peer] = rate if old is None else (old + rate) / 2
            return True
        self.failed(job_id, "short")
        return False

    def failed(self, job_id: int, reason: str, *, discard: bool = False) -> None:
        """Give back the job's unwritten remainder; with ``discard``, its written bytes too.

        ``discard`` is for a worker caught lying (a wrong byte count): what it
        already wrote cannot be trusted, so that range counts as not done.
        """
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        if discard and job.position > job.start:
            self._done.remove(job.start, job.position)
            self._by_peer[job.peer] = self._by_peer.get(job.peer, 0) - (job.position - job.start)
            job.position = job.start
        if job.position < job.end:
            self._queue.insert(0, Range(job.position, job.end))
        self._failures[job.peer] = self._failures.get(job.peer, 0) + 1
        if self._failures[job.peer] >= self.max_failures:
            self._excluded.add(job.peer)

    def exclude(self, peer: str) -> None:
        self._excluded.add(peer)

    def excluded(self, peer: str) -> bool:
        return peer in self._excluded

    # -- state ------------------------------------------------------------------------------
    @property
    def done(self) -> RangeSet:
        return self._done

    @property
    def complete(self) -> bool:
        return self._done.covers(0, self.size) if self.size else True

    @property
    def remaining(self) -> int:
        return self.size - self._done.total

    @property
    def active_jobs(self) -> list[ActiveJob]:
        return [ActiveJob(**vars(j)) for j in self._jobs.values()]

    @property
    def queue(self) -> list[Range]:
        return list(self._queue)

    def has_work(self) -> bool:
        return bool(self._queue) or any(j.end - j.claimed >= 2 * self.min_split
                                        for j in self._jobs.values())

    def bytes_by_peer(self) -> dict[str, int]:
        return dict(self._by_peer)

    def failures(self, peer: str) -> int:
        return self._failures.get(peer, 0)

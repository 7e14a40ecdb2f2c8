"""The pure core of planning: RangeSet and the scheduler, with fake workers and a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from swift.planning import Range, RangeSet, Scheduler, plan_piece_size

MiB = 1 << 20


# -- RangeSet ---------------------------------------------------------------------------------
def test_rangeset_coalesces_and_removes():
    rs = RangeSet()
    rs.add(10, 20)
    rs.add(30, 40)
    rs.add(20, 30)
    assert rs.to_json() == [[10, 40]]
    rs.remove(15, 35)
    assert rs.to_json() == [[10, 15], [35, 40]]
    assert 14 in rs and 15 not in rs and 35 in rs
    assert rs.covers(35, 40) and not rs.covers(10, 16)
    assert rs.total == 10
    assert rs.missing(50) == [Range(0, 10), Range(15, 35), Range(40, 50)]


def test_rangeset_from_json_is_strict():
    assert RangeSet.from_json([[0, 5], [5, 9]], 10).to_json() == [[0, 9]]
    for bad in ([[0, 11]], [[5, 5]], [[-1, 3]], [[0, "5"]], [[0, 5, 6]], {"a": 1}, [[True, 3]]):
        with pytest.raises(ValueError):
            RangeSet.from_json(bad, 10)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 200), st.integers(0, 200)), max_size=60))
def test_rangeset_matches_a_plain_set(ops):
    rs, model = RangeSet(), set()
    for add, a, b in ops:
        lo, hi = min(a, b), max(a, b)
        if add:
            rs.add(lo, hi)
            model |= set(range(lo, hi))
        else:
            rs.remove(lo, hi)
            model -= set(range(lo, hi))
    assert rs.total == len(model)
    assert {i for r in rs.ranges() for i in range(r.start, r.end)} == model
    starts = [r.start for r in rs.ranges()]
    assert starts == sorted(starts)
    assert all(a.end < b.start for a, b in zip(rs.ranges(), rs.ranges()[1:]))  # coalesced


# -- scheduler, plain ---------------------------------------------------------------------------
def drain(s: Scheduler, job: int, n: int | None = None) -> None:
    offset, got = s.claim(job, n if n is not None else s.end_of(job))
    s.commit(job, got)


def test_pieces_in_order_and_complete():
    s = Scheduler(10 * MiB, piece_size=4 * MiB, min_split=MiB)
    pieces = [s.assign("a") for _ in range(3)]
    assert [(p.start, p.end) for p in pieces] == [(0, 4 * MiB), (4 * MiB, 8 * MiB), (8 * MiB, 10 * MiB)]
    for p in pieces:
        drain(s, p.job_id)
        assert s.finished(p.job_id)
    assert s.complete and s.remaining == 0


def test_failure_requeues_only_the_remainder_and_excludes_a_bad_peer():
    s = Scheduler(8 * MiB, piece_size=8 * MiB, min_split=MiB, max_failures=2)
    p = s.assign("bad")
    drain(s, p.job_id, 3 * MiB)
    s.failed(p.job_id, "reset")
    assert s.done.to_json() == [[0, 3 * MiB]]
    again = s.assign("bad")
    assert (again.start, again.end) == (3 * MiB, 8 * MiB)
    s.failed(again.job_id, "reset")
    assert s.excluded("bad") and s.assign("bad") is None
    good = s.assign("good")
    assert (good.start, good.end) == (3 * MiB, 8 * MiB)


def test_abandoned_job_writes_nothing():
    s = Scheduler(4 * MiB, piece_size=4 * MiB, min_split=MiB)
    p = s.assign("frozen")
    s.failed(p.job_id, "timeout")
    with pytest.raises(KeyError):
        s.claim(p.job_id, 100)  # the frozen peer wakes up: nothing it sends is written


def test_short_finish_counts_as_failure():
    s = Scheduler(4 * MiB, piece_size=4 * MiB, min_split=MiB)
    p = s.assign("liar")
    drain(s, p.job_id, MiB)
    assert not s.finished(p.job_id)
    assert s.failures("liar") == 1
    assert s.queue == [Range(MiB, 4 * MiB)]


def test_bytes_beyond_the_end_are_dropped():
    s = Scheduler(2 * MiB, piece_size=2 * MiB, min_split=MiB)
    p = s.assign("a")
    offset, n = s.claim(p.job_id, 3 * MiB)
    assert (offset, n) == (0, 2 * MiB)
    assert s.claim(p.job_id, 10) == (2 * MiB, 0)


def test_resume_plans_only_the_gaps():
    done = RangeSet([(0, 3 * MiB), (5 * MiB, 6 * MiB)])
    s = Scheduler(8 * MiB, piece_size=8 * MiB, min_split=MiB, done=done)
    assert s.queue == [Range(3 * MiB, 5 * MiB), Range(6 * MiB, 8 * MiB)]
    assert s.remaining == 4 * MiB


def test_split_halves_without_a_clock():
    s = Scheduler(8 * MiB, piece_size=8 * MiB, min_split=MiB)
    p = s.assign("a")
    drain(s, p.job_id, 2 * MiB)
    q = s.assign("b")
    assert (q.start, q.end) == (5 * MiB, 8 * MiB)
    assert s.end_of(p.job_id) == 5 * MiB
    assert s.claim(p.job_id, 4 * MiB) == (2 * MiB, 3 * MiB)  # stops at its new end


def test_split_never_below_min_split():
    s = Scheduler(3 * MiB, piece_size=3 * MiB, min_split=2 * MiB)
    s.assign("a")
    assert s.assign("b") is None


def test_rate_aware_split_gives_the_fast_worker_its_share():
    s = Scheduler(12 * MiB, piece_size=2 * MiB, min_split=256 << 10)
    # the fast peer has a history of 4 MiB/s per job
    fast = s.assign("fast", now=0.0)
    drain(s, fast.job_id)
    s.finished(fast.job_id, now=0.5)
    slow = s.assign("slow", now=0.5)  # 2 MiB at 0.4 MiB/s
    for p in [s.assign("fast", now=0.5) for _ in range(4)]:
        drain(s, p.job_id)
        s.finished(p.job_id, now=1.0)  # still 4 MiB/s
    drain(s, slow.job_id, int(0.8 * MiB))  # 2 s later, 0.8 MiB in
    piece = s.assign("fast", now=2.5)
    kept = s.end_of(slow.job_id) - (slow.start + int(0.8 * MiB))
    taken = piece.end - piece.start
    # both should finish together: kept / 0.4 MiB/s ~ taken / 4 MiB/s
    assert taken > 5 * kept


def test_plan_piece_size():
    assert plan_piece_size(256 * MiB, 16) == 8 * MiB
    assert plan_piece_size(MiB, 16) == MiB
    assert plan_piece_size(100 << 30, 4) == 64 * MiB
    assert plan_piece_size(10 * MiB + 1, 1) % (64 << 10) == 0


# -- a simulated download: one peer at a tenth of the others' speed ---------------------------------
def simulate(rates: dict[str, int], size: int, tick: float = 0.01, slots: int = 2):
    s = Scheduler(size, piece_size=plan_piece_size(size, len(rates) * slots),
                  min_split=256 << 10)
    workers = {(peer, i): None for peer in rates for i in range(slots)}
    written = RangeSet()
    now = 0.0
    while not s.complete:
        now += tick
        assert now < 1000, "simulation did not finish"
        for (peer, i), job in list(workers.items()):
            if job is None or not s.is_job_active(job):
                piece = s.assign(peer, now)
                workers[(peer, i)] = job = piece.job_id if piece else None
                if job is None:
                    continue
            offset, n = s.claim(job, int(rates[peer] / slots * tick))
            assert not written.overlaps(offset, offset + n), "a byte was written twice"
            written.add(offset, offset + n)
            s.commit(job, n)
            if s.claim(job, 0)[0] >= s.end_of(job):
                s.finished(job, now)
    return now, written


def test_slow_peer_does_not_hold_up_the_download():
    rates = {"local": 10 * MiB, "b": 10 * MiB, "c": 10 * MiB, "slow": MiB}
    size = 124 * MiB
    seconds, written = simulate(rates, size)
    ideal = size / sum(rates.values())
    assert written.total == size
    assert seconds <= ideal * 1.15, (seconds, ideal)


# -- invariants under random events ------------------------------------------------------------------
class SchedulerMachine(RuleBasedStateMachine):
    @initialize(size=st.integers(1, 64) .map(lambda k: k * 256 * 1024),
                piece=st.sampled_from([256 << 10, MiB, 3 * MiB]))
    def setup(self, size, piece):
        self.s = Scheduler(size, piece_size=piece, min_split=256 << 10, max_failures=3)
        self.jobs: list[int] = []
        self.written = RangeSet()
        self.now = 0.0

    @rule(peer=st.sampled_from(["a", "b", "c"]))
    def assign(self, peer):
        self.now += 0.1
        piece = self.s.assign(peer, self.now)
        if piece is not None:
            assert not self.s.excluded(peer)
            assert piece.end - piece.start >= 1
            self.jobs.append(piece.job_id)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), nbytes=st.integers(0, 2 * MiB))
    def receive(self, data, nbytes):
        job = data.draw(st.sampled_from(self.jobs))
        if not self.s.is_job_active(job):
            with pytest.raises(KeyError):
                self.s.claim(job, nbytes)
            return
        offset, n = self.s.claim(job, nbytes)
        assert not self.written.overlaps(offset, offset + n)
        self.written.add(offset, offset + n)
        self.s.commit(job, n)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def finish(self, data):
        job = data.draw(st.sampled_from(self.jobs))
        self.now += 0.1
        self.s.finished(job, self.now)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def fail(self, data):
        job = data.draw(st.sampled_from(self.jobs))
        before = self.s.done.total
        self.s.failed(job, "test")
        assert self.s.done.total == before  # written bytes stay written

    @invariant()
    def partition(self):
        if not hasattr(self, "s"):
            return
        s = self.s
        covered = s.done.copy()
        total = s.done.total
        for r in s.queue:
            assert not covered.overlaps(r.start, r.end)
            covered.add(r.start, r.end)
            total += r.end - r.start
        for j in s.active_jobs:
            assert j.position <= j.claimed <= j.end
            assert not covered.overlaps(j.position, j.end)
            covered.add(j.position, j.end)
            total += j.end - j.position
        assert total == s.size and covered.covers(0, s.size)
        assert s.done == self.written


SchedulerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestScheduler = SchedulerMachine.TestCase

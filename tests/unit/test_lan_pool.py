"""The LAN copies of one download (``engine.lan_copy.LanPool``), without a network: what
the origin sources are left, what a forger's bytes cost, and the spot-check draw."""

from __future__ import annotations

import random

from swift.engine.board import Board
from swift.engine.lan_copy import LanPool, PieceAssembler
from swift.engine.options import LOCAL, Options
from swift.engine.sharing import COPY_PATIENCE, LanHolding, copy_honoured
from swift.http import ProbeResult, Validator
from swift.membership import Peer
from swift.planning import RangeSet, Scheduler

MiB = 1 << 20
SIZE = 8 * MiB


class Part:
    """A part file in memory."""

    def __init__(self) -> None:
        self.data = bytearray(SIZE)

    def pwrite(self, offset: int, block) -> None:
        self.data[offset:offset + len(block)] = block


def pool_with(copies, *, fraction=None, clock=lambda: 0.0):
    board = Board(Scheduler(SIZE, piece_size=MiB, min_split=MiB), Part(), clock=lambda: 0.0)
    probe = ProbeResult(url="http://h/f", final_url="http://h/f", size=SIZE, ranges=True,
                        validator=Validator('"e"', None))
    pool = LanPool(board, copies, [LOCAL, "10.0.0.9:6000"], label="a" * 64, size=SIZE,
                   probe=probe, remote=None, opts=Options(spot_fraction=fraction),
                   notice=lambda text: None, rng=random.Random(7), clock=clock)
    pool.share_out()
    return board, pool


def copy_of(ranges, fetching=()):
    peer = Peer("10.0.0.2", 6000, "alpha", 4)
    held = RangeSet(ranges)
    return LanHolding(peer, held, {i: "h" * 64 for i in range(8)}, MiB, RangeSet(fetching))


def test_the_origin_sources_are_left_what_no_copy_holds_and_no_member_claims():
    board, pool = pool_with([copy_of([(0, 4 * MiB)], fetching=[(6 * MiB, 7 * MiB)])])
    for source in (LOCAL, "10.0.0.9:6000"):
        assert list(board._sched.holding(source)) == [(4 * MiB, 6 * MiB), (7 * MiB, SIZE)]
    assert list(board._sched.holding("copy@10.0.0.2:6000")) == [(0, 4 * MiB)]


def test_a_banned_copy_gives_the_origin_everything_back_and_its_bytes_are_fetched_again():
    board, pool = pool_with([copy_of([(0, 4 * MiB)])])
    piece = board.next_piece("copy@10.0.0.2:6000")
    assert pool.write("copy@10.0.0.2:6000", piece.assignment_id,
                      memoryview(bytes(piece.end - piece.start)), piece.start)
    board.finished(piece.assignment_id)
    assert board.done_total() == piece.end - piece.start
    pool.ban("copy@10.0.0.2:6000", "forged")
    assert board.done_total() == 0  # what it wrote is fetched again
    assert board._sched.holding(LOCAL) is None
    assert pool.write("copy@10.0.0.2:6000", piece.assignment_id, memoryview(b"x"), 0) is None


def test_a_stale_copy_holds_nothing_until_its_next_answer():
    board, pool = pool_with([copy_of([(0, 4 * MiB)])])
    pool.stale("copy@10.0.0.2:6000")
    assert board._sched.holding("copy@10.0.0.2:6000").total == 0
    assert board._sched.holding(LOCAL) is None  # the origin may fetch all of it meanwhile
    pool.update([copy_of([(0, 5 * MiB)])])
    assert board._sched.holding("copy@10.0.0.2:6000").total == 5 * MiB


def test_about_one_percent_of_the_pieces_are_drawn_for_spot_checks_and_none_with_zero():
    _, pool = pool_with([copy_of([(0, SIZE)])])
    assert sum(pool.needs_spot_check(i) for i in range(8)) == 1  # at least one
    _, none = pool_with([copy_of([(0, SIZE)])], fraction=0.0)
    assert not any(none.needs_spot_check(i) for i in range(8))
    _, every = pool_with([copy_of([(0, SIZE)])], fraction=1.0)
    assert all(every.needs_spot_check(i) for i in range(8))



def test_the_first_lan_byte_is_timed_at_the_first_checked_write_and_never_moved_later():
    now = [10.0]
    board, pool = pool_with([copy_of([(0, SIZE)])], clock=lambda: now[0])
    assert pool.first_write_after(9.0) is None  # nothing written yet
    first = board.next_piece("copy@10.0.0.2:6000")
    second = board.next_piece("copy@10.0.0.2:6000")
    now[0] = 10.25
    assert pool.write("copy@10.0.0.2:6000", first.assignment_id, memoryview(bytes(MiB)), first.start)
    now[0] = 11.0
    assert pool.write("copy@10.0.0.2:6000", second.assignment_id, memoryview(bytes(MiB)), second.start)
    assert pool.first_write_after(9.0) == 1.25


def test_a_report_carries_the_first_lan_byte_time_and_none_without_lan_bytes():
    from swift.engine.report import Report
    report = Report(url="http://h/f", path="f", size=SIZE, seconds=2.0, mode="parallel",
                    bytes_by_source={"copy@10.0.0.2:6000": SIZE}, first_lan_byte_s=0.125)
    assert report.as_dict()["first_lan_byte_s"] == 0.125
    plain = Report(url="http://h/f", path="f", size=SIZE, seconds=2.0, mode="parallel",
                   bytes_by_source={"local": SIZE})
    assert plain.as_dict()["first_lan_byte_s"] is None


def test_pieces_come_out_whole_and_in_order_however_the_frames_cut_them():
    size, piece = 10_000, 4096  # the last piece is short
    data = random.Random(3).randbytes(size - 4096)
    assembler = PieceAssembler(4096, piece, size)  # the job starts at the second piece
    cuts = [0, 1000, 1000, 5000, 5904]  # frames of 1000, 0, 4000 and 904 bytes
    out = []
    for a, b in zip(cuts, cuts[1:]):
        out += assembler.feed(bytearray(data[a:b]))
    assert [(at, len(whole)) for at, whole in out] == [(4096, 4096), (8192, size - 8192)]
    assert b"".join(whole for _, whole in out) == data
    assert assembler.feed(b"beyond the end") == []  # never a piece past the file


def test_a_member_claiming_the_whole_file_while_it_hands_out_a_trickle_is_not_waited_for():
    size = 256 * MiB

    class Discard:
        def pwrite(self, offset, block):
            pass

    board = Board(Scheduler(size, piece_size=2 * MiB, min_split=MiB), Discard(), clock=lambda: 0.0)
    probe = ProbeResult(url="http://h/f", final_url="http://h/f", size=size, ranges=True,
                        validator=Validator('"e"', None))
    peer = Peer("10.0.0.2", 6000, "alpha", 4)

    def answer(held_mib):
        return LanHolding(peer, RangeSet([(0, held_mib * MiB)]),
                          {i: "h" * 64 for i in range(held_mib)}, MiB,
                          RangeSet([(held_mib * MiB, size)]), "0" * 64)

    pool = LanPool(board, [answer(1)], [LOCAL], label="a" * 64, size=size, probe=probe,
                   remote=None, opts=Options(), notice=lambda text: None, rng=random.Random(7))
    pool.share_out()
    # first seen: its pace is unknown, yet its claim is far above a few assignments: ignored
    assert list(board._sched.holding(LOCAL)) == [(MiB, size)]
    # an honest start: it claims its first assignments only, which are left to it
    honest = LanHolding(peer, RangeSet(), {}, MiB, RangeSet([(0, 32 * MiB)]), "0" * 64)
    board2 = Board(Scheduler(size, piece_size=2 * MiB, min_split=MiB), Discard(), clock=lambda: 0.0)
    pool2 = LanPool(board2, [honest], [LOCAL], label="a" * 64, size=size, probe=probe,
                    remote=None, opts=Options(), notice=lambda text: None, rng=random.Random(7))
    pool2.share_out()
    assert list(board2._sched.holding(LOCAL)) == [(32 * MiB, size)]


def test_a_copy_that_delivers_a_trickle_or_stops_is_not_left_its_bytes_alone():
    assert copy_honoured(0, 0, 0.0, 0.0, 100.0)  # nothing left to take from it
    assert copy_honoured(SIZE, 0, 0.0, 0.0, COPY_PATIENCE / 2)  # its first pieces: pace unknown
    assert not copy_honoured(SIZE, 0, 0.0, 0.0, COPY_PATIENCE)  # no piece yet: stalled
    assert not copy_honoured(SIZE, 4 * MiB, 0.0, 4.0, 4.0 + COPY_PATIENCE)  # stopped since
    # a piece every 2.9 s (about 350 KiB/s) keeps what that pace delivers in 120 s, 41 MiB
    assert not copy_honoured(64 * MiB, 10 * MiB, 0.0, 29.0, 29.5)
    assert copy_honoured(40 * MiB, 10 * MiB, 0.0, 29.0, 29.5)
    assert copy_honoured(2 << 30, 100 * MiB, 0.0, 3.9, 4.0)  # 25 MiB/s: a 2 GiB file


def test_the_origin_sources_may_fetch_what_a_stalled_copy_holds_but_never_what_a_fast_one_does():
    now = [0.0]
    probe = ProbeResult(url="http://h/f", final_url="http://h/f", size=SIZE, ranges=True,
                        validator=Validator('"e"', None))
    source = "copy@10.0.0.2:6000"

    def pool_at_clock():
        board = Board(Scheduler(SIZE, piece_size=MiB, min_split=MiB), Part(), clock=lambda: now[0])
        pool = LanPool(board, [copy_of([(0, SIZE)])], [LOCAL], label="a" * 64, size=SIZE,
                       probe=probe, remote=None, opts=Options(), notice=lambda text: None,
                       rng=random.Random(7), clock=lambda: now[0])
        pool.share_out()
        return board, pool

    def deliver(board, pool):
        piece = board.next_piece(source)
        assert pool.write(source, piece.assignment_id, memoryview(bytes(piece.end - piece.start)),
                          piece.start)
        board.finished(piece.assignment_id)

    board, pool = pool_at_clock()
    assert board._sched.holding(LOCAL).total == 0  # its pace is not known yet: all left to it
    now[0] = 1.0
    deliver(board, pool)
    now[0] = 3.5  # no piece for 2.5 s: not a stall yet
    pool.update([copy_of([(0, SIZE)])])
    assert board._sched.holding(LOCAL).total == 0
    now[0] = 1.0 + COPY_PATIENCE  # none for 3 s: the origin may fetch (split, race) all of it
    pool.update([copy_of([(0, SIZE)])])
    assert board._sched.holding(LOCAL) is None

    now[0] = 10.0
    fast_board, fast = pool_at_clock()
    for _ in range(4):  # 4 MiB in 0.4 s: it keeps the other 4 MiB
        now[0] += 0.1
        deliver(fast_board, fast)
    fast.update([copy_of([(0, SIZE)])])
    assert fast_board._sched.holding(LOCAL).total == 0


def test_a_member_in_flight_that_offers_a_new_piece_after_a_pause_is_left_that_piece():
    now = [0.0]
    probe = ProbeResult(url="http://h/f", final_url="http://h/f", size=SIZE, ranges=True,
                        validator=Validator('"e"', None))
    board = Board(Scheduler(SIZE, piece_size=MiB, min_split=MiB), Part(), clock=lambda: now[0])
    pool = LanPool(board, [copy_of([(0, MiB)])], [LOCAL], label="a" * 64, size=SIZE,
                   probe=probe, remote=None, opts=Options(), notice=lambda text: None,
                   rng=random.Random(7), clock=lambda: now[0])
    pool.share_out()
    piece = board.next_piece("copy@10.0.0.2:6000")
    assert pool.write("copy@10.0.0.2:6000", piece.assignment_id, memoryview(bytes(MiB)), 0)
    board.finished(piece.assignment_id)
    now[0] = 10.0  # it fetches at its internet's pace: nothing new for 10 s, nothing owed
    pool.update([copy_of([(0, MiB)])])
    now[0] = 10.25  # then its second piece: this download has not waited for it at all
    pool.update([copy_of([(0, 2 * MiB)])])
    assert list(board._sched.holding(LOCAL)) == [(2 * MiB, SIZE)]


def test_a_checked_whole_piece_is_offered_under_its_digest_and_not_if_it_was_not_written():
    from swift.piecehash import PieceHasher
    board, pool = pool_with([copy_of([(0, 4 * MiB)])])
    seen = []
    pool._known, pool._dropped = (lambda i, d: seen.append(("known", i, d)),
                                  lambda s, e: seen.append(("dropped", s, e)))
    piece = board.next_piece("copy@10.0.0.2:6000")
    data = memoryview(bytes(MiB))
    assert pool.write_piece("copy@10.0.0.2:6000", piece.assignment_id, 0, "d" * 64, data, 0)
    assert seen == [("known", 0, "d" * 64)]
    board.failed(piece.assignment_id, "copy@10.0.0.2:6000", "test")  # the assignment is gone: the next write is refused
    seen.clear()
    assert not pool.write_piece("copy@10.0.0.2:6000", piece.assignment_id, 1, "e" * 64,
                                data, MiB)
    assert seen == [("known", 1, "e" * 64), ("dropped", MiB, 2 * MiB)]
    # and a hasher that was told a digest does not hash that piece's bytes again
    hasher = PieceHasher(4 * MiB)
    assert hasher.known(0, "d" * 64)
    assert hasher.feed(0, bytes(MiB)) == [] and hasher.digests[0] == "d" * 64

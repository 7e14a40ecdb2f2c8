"""Piece checks on the board: a piece is read back and hashed when its last byte is written;
a bad one leaves ``done``, is given out again, and who served it is named."""

from __future__ import annotations

import hashlib
import os

import pytest

from swift import storage
from swift.engine.board import Board
from swift.engine.piece_check import PieceCheck
from swift.piecehash import PieceHashes
from swift.planning import RangeSet, Scheduler

KiB = 1 << 10
PIECE = 64 * KiB
DATA = os.urandom(4 * PIECE)


def _hashes() -> PieceHashes:
    return PieceHashes("sha256", PIECE, len(DATA),
                       tuple(hashlib.sha256(DATA[i:i + PIECE]).hexdigest()
                             for i in range(0, len(DATA), PIECE)))


@pytest.fixture
def part(tmp_path):
    with storage.PartFile.open(tmp_path / "f.part", len(DATA)) as p:
        yield p


def _board(part, done=None):
    bad: list[tuple[int, set[str]]] = []
    sched = Scheduler(len(DATA), piece_size=2 * PIECE, min_split=len(DATA), done=done or RangeSet())
    board = Board(sched, part, clock=lambda: 0.0, pieces=PieceCheck(_hashes()),
                  on_bad_piece=lambda i, servers: bad.append((i, servers)))
    return board, bad


def test_good_pieces_are_checked_as_they_complete_and_the_download_then_ends(part):
    board, bad = _board(part)
    while (piece := board.next_piece("local")) is not None:
        board.write(piece.assignment_id, "local", DATA[piece.start:piece.end], via="http://a/f")
        assert board.finished(piece.assignment_id)
    assert board.complete() and board.pieces.all_good() and bad == []


def test_a_bad_piece_is_fetched_again_and_its_mirror_named_and_avoided(part):
    board, bad = _board(part)
    first = board.next_piece("local")  # pieces 0 and 1
    wrong = bytearray(DATA[first.start:first.end])
    wrong[PIECE + 5] ^= 0xFF  # one byte of piece 1
    board.write(first.assignment_id, "local", bytes(wrong), via="http://bad/f")
    board.finished(first.assignment_id)
    assert bad == [(1, {"http://bad/f"})] and board.pieces.bad == 1
    assert board.suspects(PIECE, 2 * PIECE) == {"http://bad/f"}
    again = board.next_piece("local")  # the bad piece goes first
    assert (again.start, again.end) == (PIECE, 2 * PIECE)
    board.write(again.assignment_id, "local", DATA[PIECE:2 * PIECE], via="http://good/f")
    board.finished(again.assignment_id)
    while (piece := board.next_piece("local")) is not None:
        board.write(piece.assignment_id, "local", DATA[piece.start:piece.end], via="http://good/f")
        board.finished(piece.assignment_id)
    assert board.complete() and board.pieces.all_good()
    part.sync()
    assert os.pread(os.open(part.path, os.O_RDONLY), len(DATA), 0) == DATA


def test_resumed_pieces_are_checked_before_any_fetch_and_bad_ones_fetched_again(part):
    part.pwrite(0, DATA[:PIECE])
    part.pwrite(PIECE, b"\0" * PIECE)  # an earlier run left a wrong piece 1
    board, bad = _board(part, done=RangeSet([(0, 2 * PIECE)]))
    board.check_resumed()
    assert bad == [(1, set())] and board.done_total() == PIECE
    assert board.next_piece("local").start == PIECE  # a gap again, planned from its start


def test_the_download_does_not_end_while_a_complete_piece_is_being_checked(part):
    board, _ = _board(part)
    board.workers_started(1)  # the worker checking the piece is alive
    check = board.pieces
    for piece in iter(lambda: board.next_piece("local"), None):
        with board.cond:  # write without the check running, as if another worker were hashing
            board._sched.claim(piece.assignment_id, piece.end - piece.start)
            board._sched.commit(piece.assignment_id, piece.end - piece.start)
            check.completed(board._sched.done, piece.start, piece.end - piece.start)
        board.finished(piece.assignment_id)
        if board._sched.complete:
            break
    assert board._sched.complete and check.pending
    assert not board.complete() and not board.settled(0.0)


def test_a_good_piece_whose_bytes_are_dropped_is_checked_again_when_rewritten(part):
    board, bad = _board(part)
    first = board.next_piece("h:1")
    board.write(first.assignment_id, "h:1", DATA[first.start:first.start + PIECE])  # piece 0, good
    assert 0 in board.pieces._good
    board.failed(first.assignment_id, "h:1", "caught lying", discard=True)
    assert 0 not in board.pieces._good and board.done_total() == 0
    again = board.next_piece("local")
    board.write(again.assignment_id, "local", b"\0" * PIECE)  # wrong bytes this time
    assert bad == [(0, {"local"})]


def test_a_bad_piece_from_a_helper_names_the_helper_and_the_mirror_its_job_started_at(part):
    board, bad = _board(part)
    piece = board.next_piece("h:1")
    board.write(piece.assignment_id, "h:1", b"\0" * PIECE, via=("h:1", "http://bad/f"))
    assert bad == [(0, {"h:1", "http://bad/f"})]


def test_a_bad_piece_is_dropped_from_sharings_hashes_never_offered_with_them(part):
    from swift.piecehash import PieceHasher
    hasher = PieceHasher(len(DATA), PIECE)
    sched = Scheduler(len(DATA), piece_size=2 * PIECE, min_split=len(DATA), done=RangeSet())
    board = Board(sched, part, clock=lambda: 0.0, pieces=PieceCheck(_hashes()),
                  written=hasher.feed, dropped=hasher.discard)
    first = board.next_piece("local")
    wrong = bytearray(DATA[first.start:first.end])
    wrong[PIECE + 5] ^= 0xFF
    board.write(first.assignment_id, "local", bytes(wrong), via="http://bad/f")
    board.finished(first.assignment_id)
    assert 1 not in hasher.digests and 1 in hasher.lost  # the bad bytes' hash is never offered
    while (piece := board.next_piece("local")) is not None:
        board.write(piece.assignment_id, "local", DATA[piece.start:piece.end], via="http://good/f")
        board.finished(piece.assignment_id)
    assert board.complete() and board.pieces.all_good()
    assert hasher.digests.get(0) == hashlib.sha256(DATA[:PIECE]).hexdigest()

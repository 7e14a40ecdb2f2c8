"""engine.sources.base: the one mapping of how a piece ended to the board's calls.

A real Scheduler and Board over a part file in a temporary directory, and a
source kind made for the test that ends each piece as it is told to, so each
outcome is checked once for every kind. No network.
"""

from __future__ import annotations

import threading

import pytest

from swift import storage
from swift.engine.board import Board
from swift.engine.report import DownloadError
from swift.engine.sources import (Changed, Done, Failed, Fatal, Lost, Refused, Source, Stopped)
from swift.errors import ErrorCode
from swift.planning import Range, RangeSet, Scheduler

MiB = 1 << 20
SIZE = 4 * MiB


class Scripted(Source):
    """A source whose pieces end as ``script`` says: a list of (bytes to send, outcome)."""

    def __init__(self, board, key, script, held=None):
        super().__init__(board, key)
        self.script = list(script)
        self.held = held
        self.pieces = []
        self.took = threading.Event()  # set once it has its first piece

    def holding(self):
        return self.held

    def run_piece(self, piece):
        self.pieces.append(Range(piece.start, piece.end))
        self.took.set()
        nbytes, outcome = self.script.pop(0)
        if nbytes:
            self.deliver(piece.assignment_id, b"s" * nbytes)
        return self.settle(piece.assignment_id, outcome)


@pytest.fixture
def board(tmp_path):
    with storage.PartFile.open(tmp_path / "f.part", SIZE) as part:
        sched = Scheduler(SIZE, piece_size=MiB, min_split=4 * MiB, max_failures=3)
        yield Board(sched, part, clock=lambda: 0.0)


def test_done_after_the_whole_piece_completes_it_and_the_source_goes_on(board):
    source = Scripted(board, "a", [(MiB, Done()), (0, Stopped())])
    source.run()
    assert board.done_total() == MiB and board.bytes_by_source() == {"a": MiB}
    assert source.pieces == [Range(0, MiB), Range(MiB, 2 * MiB)]


def test_done_short_of_the_end_fails_the_piece_with_the_kinds_reason_and_requeues_the_rest(board):
    source = Scripted(board, "a", [(1000, Done()), (0, Stopped())])
    source.short_reason = "the origin sent too few bytes"
    source.run()
    assert board.done_total() == 1000 and source.pieces[1] == Range(1000, MiB)
    assert board.last_failure == "a: the origin sent too few bytes"


def test_failed_requeues_the_remainder_and_keep_says_whether_the_source_goes_on(board):
    source = Scripted(board, "a", [(10, Failed("origin hiccup")), (0, Failed("again", keep=False))])
    source.run()
    assert len(source.pieces) == 2 and source.pieces[1].start == 10  # the remainder, first
    assert board.done_total() == 10 and board._sched.failures("a") == 2


def test_failed_without_blame_counts_no_failure_and_discard_takes_the_bytes_back(board):
    Scripted(board, "a", [(10, Failed("ours", discard=True, blame=False, keep=False))]).run()
    assert board.done_total() == 0 and board._sched.failures("a") == 0 and board.dropped == 10


def test_lost_fails_the_piece_unless_the_download_is_stopping(board):
    Scripted(board, "a", [(0, Lost("connection lost: reset"))]).run()
    assert board.last_failure == "a: connection lost: reset"
    board.stop.set()
    source = Scripted(board, "b", [(0, Lost("connection lost: closed"))])
    assert source.settle(999, Lost("connection lost: closed")) is False
    assert board.last_failure == "a: connection lost: reset"


def test_changed_stops_the_whole_download_with_file_changed(board):
    Scripted(board, "a", [(5, Changed("the ETag moved"))]).run()
    assert isinstance(board.error, DownloadError) and board.error.code is ErrorCode.FILE_CHANGED
    assert str(board.error) == "the ETag moved; nothing written after the change is kept"
    assert board.stop.is_set()


def test_refused_leaves_the_source_out_of_this_download_with_its_reason(board):
    notices = []
    board._notice = notices.append
    source = Scripted(board, "h:1", [(0, Refused("denied: 403", "the origin refuses it"))])
    source.run()
    assert board.has_no_work_for("h:1") and board.left_out == {"h:1": "the origin refuses it"}
    assert notices == ["helper h:1 left out: the origin refuses it"]
    assert board.done_total() == 0 and not board.stop.is_set()


def test_fatal_stops_the_download_with_the_error_as_given(board):
    error = DownloadError("no space left on the device", ErrorCode.STORAGE)
    Scripted(board, "a", [(0, Fatal(error))]).run()
    assert board.error is error and board.stop.is_set()


def test_a_source_that_holds_part_of_the_file_is_given_only_that_part(board):
    held = RangeSet([(3 * MiB, SIZE)])
    copy = Scripted(board, "copy", [(MiB, Done())], held=held)
    worker = threading.Thread(target=copy.run)
    worker.start()  # it takes its piece, then waits for work it holds until the download ends
    assert copy.took.wait(10)
    origin = Scripted(board, "origin", [(MiB, Done())] * 4)
    origin.run()
    worker.join(10)
    assert not worker.is_alive() and board.complete()
    assert copy.pieces == [Range(3 * MiB, SIZE)]
    assert Range(3 * MiB, SIZE) not in origin.pieces and len(origin.pieces) == 3

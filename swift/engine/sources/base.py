"""The one shape every source has: what it holds, a loop over pieces, one mapping of results.

A kind of source says only how it moves one piece (:meth:`Source.run_piece`)
and how that piece ended, as one of the outcomes below. What each outcome
does to the download is decided here, once, for every kind
(:meth:`Source.settle`):

===============  =========================================================  ==========
outcome          board calls                                                the worker
===============  =========================================================  ==========
(data)           ``write`` each block at its offset (:meth:`Source.deliver`)  goes on
:class:`Done`    ``finished``; if short, the scheduler has failed it, and   goes on
                 ``failed`` records ``short_reason``
:class:`Failed`  ``failed`` (the remainder is requeued; ``discard``: the     ``keep``
                 bytes too; ``blame``: counts against the source)
:class:`Lost`    ``failed`` unless the download is stopping                 stops
:class:`Changed` ``fail_all`` (``FILE_CHANGED``): nothing after it is kept   stops
:class:`Refused` ``exclude`` the source for this download, then ``failed``  stops
:class:`Fatal`   ``fail_all`` with the error (the disk, unusable ranges)    stops
:class:`Stopped` nothing: the download is over                              stops
===============  =========================================================  ==========
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ...errors import ErrorCode
from ...planning import Piece, RangeSet
from ..board import Board
from ..report import DownloadError


@dataclass(frozen=True)
class Done:
    """The source says it delivered the whole piece (the board checks that it did)."""


@dataclass(frozen=True)
class Failed:
    """The piece failed for ``reason``; ``keep``: the source may take the next piece."""

    reason: str
    discard: bool = False
    blame: bool = True
    keep: bool = True


@dataclass(frozen=True)
class Lost:
    """The source's link broke mid-piece (a closed connection, a protocol error)."""

    reason: str


@dataclass(frozen=True)
class Changed:
    """The file at the origin is no longer the one this download started with."""

    message: str


@dataclass(frozen=True)
class Refused:
    """The source cannot serve this download at all: leave it out, for ``why``."""

    reason: str
    why: str
    blame: bool = True


@dataclass(frozen=True)
class Fatal:
    """The whole download must stop with ``error`` (already in the user's words)."""

    error: BaseException


@dataclass(frozen=True)
class Stopped:
    """The download stopped while the piece ran: nothing to report."""


Outcome = Union[Done, Failed, Lost, Changed, Refused, Fatal, Stopped]


class Source:
    """One source of a download's bytes, run by one worker thread: ``run()`` until no work is left.

    ``key`` names it to the board and the scheduler (``"local"``, a peer's
    ``host:port``); every slot of one source shares the key. A subclass
    gives :meth:`run_piece` (and, when it has set-up to do per piece,
    :meth:`ready`); it may override :meth:`holding`.
    """

    #: what a piece said done before its end is called, in the notices. (Its
    #: remainder is requeued, its written bytes kept: a helper that lies about
    #: what it sent is caught before this, by ``fetchjob.RequesterJob``.)
    short_reason = "the source sent too few bytes"

    def __init__(self, board: Board, key: str):
        self.board = board
        self.key = key

    # -- what it holds ------------------------------------------------------------------------
    def holding(self) -> RangeSet | None:
        """The ranges of the file it can deliver now; None for all of it (an origin)."""
        return None

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        """Take pieces from the board until there is none for this source, or it must stop."""
        try:
            held = self.holding()
            if held is not None:  # an origin holds all of it, unless a policy said less
                self.board.hold(self.key, held)  # (what LAN copies leave it: ``LanPool``)
            while not self.board.stop.is_set() and not self.board.has_no_work_for(self.key):
                if not self.ready():
                    return
                piece = self.board.next_piece(self.key)
                if piece is None or not self.run_piece(piece):
                    return
        finally:
            self.close()

    def ready(self) -> bool:
        """Before each piece: set up what it needs (a connection); False to end the worker."""
        return True

    def run_piece(self, piece: Piece) -> bool:
        """Move one piece (its end may shrink meanwhile: ``board.end_of``); False to end the worker."""
        raise NotImplementedError

    def close(self) -> None:
        """The worker ends: release what it holds open."""

    # -- the one mapping of results to the board -----------------------------------------------
    def deliver(self, assignment_id: int, block) -> bool:
        """A block of the piece, in order; False once the piece is no longer this source's."""
        return self.board.write(assignment_id, self.key, block)

    def settle(self, assignment_id: int, outcome: Outcome) -> bool:
        """Tell the board how the piece ended; True if the worker (and its link) goes on."""
        board = self.board
        if isinstance(outcome, Done):
            if board.finished(assignment_id):
                self.delivered(assignment_id)
            else:
                board.failed(assignment_id, self.key, self.short_reason)
            return True
        if isinstance(outcome, Failed):
            board.failed(assignment_id, self.key, outcome.reason, discard=outcome.discard,
                         blame=outcome.blame)
            return outcome.keep
        if isinstance(outcome, Lost):
            if not board.stop.is_set():
                board.failed(assignment_id, self.key, outcome.reason)
            return False
        if isinstance(outcome, Changed):
            board.fail_all(DownloadError(f"{outcome.message}; nothing written after the change "
                                         f"is kept", ErrorCode.FILE_CHANGED))
            return False
        if isinstance(outcome, Refused):
            board.exclude(self.key, outcome.why)
            board.failed(assignment_id, self.key, outcome.reason, blame=outcome.blame)
            return False
        if isinstance(outcome, Fatal):
            board.fail_all(outcome.error)
            return False
        assert isinstance(outcome, Stopped), outcome
        return False

    def delivered(self, assignment_id: int) -> None:
        """A piece was completed and accepted (for a kind that logs who fetched what)."""

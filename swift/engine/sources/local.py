"""The local source: the origin over this machine's own link, one range request per piece."""

from __future__ import annotations

from ... import http
from ...errors import ErrorCode, FileChanged, StorageError, SwiftError
from ...planning import Piece
from ..board import Board
from ..options import LOCAL, LOCAL_CHUNK, Options
from ..report import DownloadError
from .base import Changed, Done, Failed, Fatal, Outcome, Source, Stopped


class LocalSource(Source):
    """One local slot: takes pieces from ``board`` until there are none; one session for all.

    ``remote`` is the download's one :class:`~swift.http.RemoteFile` (its
    current URL, cookies and range rules, shared by every local slot). It
    holds the whole file.
    """

    short_reason = "the origin sent too few bytes"

    def __init__(self, board: Board, probe: http.ProbeResult, remote: http.RemoteFile,
                 opts: Options, key: str = LOCAL):
        super().__init__(board, key)
        self.probe = probe
        self.remote = remote
        self.opts = opts
        self._session = remote.session(source_address=opts.source_address)
        # blocks go straight to the file, so they may be larger than a helper's data
        # frames; under --limit-rate they stay small, so the rate is kept in small steps
        self._chunk = LOCAL_CHUNK if opts.throttle is None else http.CHUNK_SIZE

    def run_piece(self, piece: Piece) -> bool:
        fetch = http.RangeFetch(self._session, self.remote.final_url, self.probe.size or 0,
                                self.probe.validator, policy=self.opts.retry, stop=self.board.stop,
                                encoding=self.probe.encoding, remote=self.remote,
                                timeout=self.opts.timeout, chunk_size=self._chunk)
        return self.settle(piece.assignment_id, self._fetch(fetch, piece))

    def _fetch(self, fetch: http.RangeFetch, piece: Piece) -> Outcome:
        """Run the range request; how it ended."""
        assignment = piece.assignment_id
        try:
            fetch.run(piece.start, lambda: self.board.end_of(assignment),
                      lambda block: self.deliver(assignment, block))
        except FileChanged as exc:
            return Changed(str(exc))
        except StorageError as exc:
            return Fatal(DownloadError.of(exc))
        except SwiftError as exc:  # the origin or the network, in the HTTP layer's words
            if exc.code is ErrorCode.RANGES_UNUSABLE:
                return Fatal(exc)  # the download goes on in one plain stream
            return Failed(str(exc))
        return Stopped() if self.board.stop.is_set() else Done()

    def close(self) -> None:
        self._session.close()


def run_local(board: Board, probe: http.ProbeResult, remote: http.RemoteFile, opts: Options,
              source: str = LOCAL) -> None:
    """One local slot, run to its end (what a worker thread calls)."""
    LocalSource(board, probe, remote, opts, source).run()

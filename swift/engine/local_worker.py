"""A local worker: fetches pieces over this machine's own link, one range request each."""

from __future__ import annotations

from .. import http
from ..errors import ErrorCode, FileChanged, StorageError, SwiftError
from .board import Board
from .options import LOCAL, LOCAL_CHUNK, Options
from .report import DownloadError


def run_local(board: Board, probe: http.ProbeResult, remote: http.RemoteFile, opts: Options,
              source: str = LOCAL) -> None:
    """Take pieces from ``board`` until there are none; one session for all of them.

    ``remote`` is the download's one :class:`~swift.http.RemoteFile` (its
    current URL, cookies and range rules, shared by every local worker).
    """
    session = remote.session(source_address=opts.source_address)
    chunk = LOCAL_CHUNK if opts.throttle is None else http.CHUNK_SIZE  # --limit-rate: smooth
    try:
        while (piece := board.next_piece(source)) is not None:
            fetch = http.RangeFetch(session, remote.final_url, probe.size or 0, probe.validator,
                                    policy=opts.retry, stop=board.stop, encoding=probe.encoding,
                                    remote=remote, timeout=opts.timeout, chunk_size=chunk)
            if not _fetch_one(board, fetch, piece.assignment_id, piece.start, source):
                return
    finally:
        session.close()


def _fetch_one(board: Board, fetch: http.RangeFetch, assignment: int, start: int, source: str) -> bool:
    """Run one assignment; False when the worker must stop (the download is over or failed)."""
    try:
        fetch.run(start, lambda: board.end_of(assignment),
                  lambda block: board.write(assignment, source, block))
    except FileChanged as exc:
        board.fail_all(DownloadError(f"{exc}; nothing written after the change is kept",
                                     ErrorCode.FILE_CHANGED))
        return False
    except StorageError as exc:
        board.fail_all(DownloadError.of(exc))
        return False
    except SwiftError as exc:  # the origin or the network, in the HTTP layer's words
        if exc.code is ErrorCode.RANGES_UNUSABLE:
            board.fail_all(exc)  # the download goes on in one plain stream
            return False
        board.failed(assignment, source, str(exc))
        return True
    if board.stop.is_set():
        return False
    if not board.finished(assignment):
        board.failed(assignment, source, "the origin sent too few bytes")
    return True

"""A local worker: fetches pieces over this machine's own link, one range request each."""

from __future__ import annotations

from .. import httpclient, storage
from ..sessions import make_session
from .board import Board
from .options import LOCAL, Options
from .report import DownloadError


def run_local(board: Board, probe: httpclient.ProbeResult, opts: Options,
              source: str = LOCAL) -> None:
    """Take pieces from ``board`` until there are none; one session for all of them."""
    session = make_session(source_address=opts.source_address, allow_private=True)
    try:
        while (piece := board.next_piece(source)) is not None:
            fetch = httpclient.RangeFetch(session, probe.final_url, probe.size or 0,
                                          probe.validator, policy=opts.retry, stop=board.stop,
                                          encoding=probe.encoding, timeout=opts.timeout)
            if not _fetch_one(board, fetch, piece.job_id, piece.start, source):
                return
    finally:
        session.close()


def _fetch_one(board: Board, fetch: httpclient.RangeFetch, job: int, start: int,
               source: str) -> bool:
    """Run one job; False when the worker must stop (the download is over or failed)."""
    try:
        fetch.run(start, lambda: board.end_of(job), lambda block: board.write(job, source, block))
    except httpclient.FileChanged as exc:
        board.fail_all(DownloadError(f"{exc}; nothing written after the change is kept"))
        return False
    except storage.StorageError as exc:
        board.fail_all(DownloadError(str(exc)))
        return False
    except httpclient.HttpError as exc:
        board.failed(job, source, str(exc))
        return True
    if board.stop.is_set():
        return False
    if not board.finished(job):
        board.failed(job, source, "the origin sent too few bytes")
    return True

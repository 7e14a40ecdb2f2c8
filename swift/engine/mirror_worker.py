"""A local worker over several mirrors: per assignment, the mirror the book chooses.

Like :mod:`.local_worker` (the same board, the same range contract per
answer), but each assignment goes to a mirror taken from the download's
:class:`~swift.mirrors.MirrorBook` (usable, with a free connection, fastest
first) and is given back when it ends. A mirror's fault costs that mirror,
never the download: it is struck or left out, and the assignment's remainder
goes back to the queue *without* counting against this machine, so another
mirror takes it. Only when no mirror is usable does the worker end.

Each mirror has its own probe (its own resolved URL and validator, checked on
every answer) and its own session per worker, so one mirror's keep-alive
connections never carry another's requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import requests

from .. import http
from ..errors import ErrorCode, FileChanged, StorageError, SwiftError
from ..mirrors import MirrorBook
from .board import Board
from .options import LOCAL, Options
from .report import DownloadError

__all__ = ["MirrorSources", "run_mirror_worker", "FINAL_CODES"]

#: An answer with one of these codes will not mend in the seconds a download
#: has: the mirror is left out at once (RFC 9110: 401/403/404/410 are refusals;
#: a 5xx has already been retried by the fetch's own budget).
FINAL_CODES = frozenset({ErrorCode.ACCESS_DENIED, ErrorCode.HTTP_STATUS, ErrorCode.SERVER_BUSY,
                         ErrorCode.RANGES_UNUSABLE, ErrorCode.ADDRESS_BLOCKED,
                         ErrorCode.TLS_UNTRUSTED, ErrorCode.TLS_FAILED, ErrorCode.DNS_FAILED,
                         ErrorCode.CONNECTION_REFUSED, ErrorCode.TOO_MANY_REDIRECTS,
                         ErrorCode.ENCODING_CHANGED})
#: Tries per request to a mirror (the first included): with other mirrors at
#: hand, a failing one is not waited for through the full backoff (0.5 + 1 s here).
MIRROR_ATTEMPTS = 3


@dataclass
class MirrorSources:
    """What every mirror worker of one download shares: the book, each mirror's probe, and
    how to tell the user (``notice``) that a mirror was left out."""

    book: MirrorBook
    probes: dict[str, http.ProbeResult]
    notice: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic

    def leave_out(self, url: str, why: str) -> None:
        if self.book.leave_out(url, why):
            self.notice(f"mirror {http.redact_url(url, strict=False)} left out: {why}")

    def struck(self, url: str, why: str | None) -> None:
        if why:
            self.notice(f"mirror {http.redact_url(url, strict=False)} left out: {why}")


def run_mirror_worker(board: Board, sources: MirrorSources, opts: Options, source: str = LOCAL) -> None:
    """Take assignments from ``board`` until there are none, each from one mirror."""
    sessions: dict[str, requests.Session] = {}
    retry = http.Retry(attempts=min(MIRROR_ATTEMPTS, opts.retry.attempts),
                       first_delay=opts.retry.first_delay, max_delay=opts.retry.max_delay)
    try:
        while (piece := board.next_piece(source)) is not None:
            got = sources.book.acquire(sources.clock(), avoid=board.suspects(piece.start, piece.end))
            if got is None:  # mirrors were left out: the others' connections are all in use
                board.failed(piece.assignment_id, source, "no mirror with a free connection", blame=False)
                return
            url, ticket = got
            probe = sources.probes[url]
            session = sessions.get(url)
            if session is None:
                session = sessions[url] = probe.remote.session(source_address=opts.source_address)
            fetch = http.RangeFetch(session, probe.remote.final_url, probe.size or 0, probe.validator,
                                    policy=retry, stop=board.stop, encoding=probe.encoding,
                                    remote=probe.remote, timeout=opts.timeout)
            if not _fetch_one(board, sources, fetch, piece.assignment_id, piece.start, url, ticket, source):
                return
    finally:
        for session in sessions.values():
            session.close()


def _fetch_one(board: Board, sources: MirrorSources, fetch: http.RangeFetch, assignment: int,
               start: int, url: str, ticket: int, source: str) -> bool:
    """Run one assignment from ``url``; False when the worker must stop."""
    book, clock = sources.book, sources.clock
    began = clock()
    written = 0
    ok = False

    def deliver(block) -> bool:
        nonlocal written
        kept = board.write(assignment, source, block, via=url)
        written += len(block)
        book.progress(url, ticket, len(block), clock())
        return kept

    try:
        fetch.run(start, lambda: board.end_of(assignment), deliver)
        ok = True
    except FileChanged as exc:
        sources.leave_out(url, f"{exc}")
        board.failed(assignment, source, str(exc), blame=False)
        return True
    except StorageError as exc:
        board.fail_all(DownloadError.of(exc))
        return False
    except SwiftError as exc:
        sources.struck(url, book.failed(url, str(exc), final=exc.code in FINAL_CODES))
        board.failed(assignment, source, f"{http.redact_url(url, strict=False)}: {exc}", blame=False)
        return True
    finally:
        book.release(url, ticket, nbytes=written, seconds=clock() - began, ok=ok)
    if board.stop.is_set():
        return False
    if not board.finished(assignment):
        sources.struck(url, book.failed(url, "the mirror sent too few bytes", final=False))
    return True

"""The mirror source: this machine's link to several mirrors, the book's choice per piece.

Like :class:`~.local.LocalSource` (the same board, the same range contract
per answer), but each piece goes to a mirror taken from the download's
:class:`~swift.mirrors.MirrorBook` (usable, with a free connection, fastest
first; not one that served a bad piece of this range while another is free)
and is given back when it ends. A mirror's fault costs that mirror, never the
download: it is struck or left out, and the piece's remainder goes back to the
queue *without* counting against this machine (``blame=False``), so another
mirror takes it. When no mirror has a free connection (mirrors were left out)
the slot ends; the others go on.

Each mirror has its own probe (its own resolved URL and validator, checked on
every answer) and its own session per slot, so one mirror's keep-alive
connections never carry another's requests. The request options (headers,
cookies, credentials) are the first URL's alone: a mirror is asked plainly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import requests

from ... import http
from ...errors import ErrorCode, FileChanged, StorageError, SwiftError
from ...mirrors import MirrorBook
from ...planning import Piece
from ..board import Board
from ..options import LOCAL, Options
from ..report import DownloadError
from .base import Done, Failed, Fatal, Outcome, Source, Stopped

__all__ = ["LockedBook", "MirrorSources", "MirrorSource", "FINAL_CODES", "MIRROR_ATTEMPTS"]

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


class LockedBook:
    """A :class:`~swift.mirrors.MirrorBook` behind one lock: every method call holds it
    (the book is pure and quick; no I/O happens under the lock)."""

    def __init__(self, book: MirrorBook):
        self._book = book
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        attr = getattr(self._book, name)
        if not callable(attr):
            return attr

        def locked(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)
        locked.__name__ = name
        return locked


@dataclass
class MirrorSources:
    """What every mirror slot of one download shares: the book (behind its lock), each
    usable mirror's probe, and how to tell the user (``notice``) that a mirror was left out."""

    book: LockedBook
    probes: dict[str, http.ProbeResult]
    notice: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._helper_jobs: dict[tuple[str, str], int] = {}  # (helper, mirror) -> jobs in flight

    def for_helpers(self, private: bool) -> list[str]:
        """The usable mirrors a helper may be sent: over a connection that is not private,
        only those without a secret of their own (credentials in the URL, cookies set)."""
        return [u for u in self.book.usable() if u in self.probes
                and (private or not self.probes[u].remote.secrets())]

    def take_for_helper(self, helper: str, *, private: bool = False) -> str | None:
        """The usable mirror a helper's next job starts at: the one with the fewest of *its*
        jobs in flight (each helper's link to each mirror is its own), so its slots spread
        evenly; None when no mirror may be sent to it. Give it back with :meth:`done_for_helper`."""
        usable = sorted(self.for_helpers(private))
        if not usable:
            return None
        with self._lock:
            url = min(usable, key=lambda u: self._helper_jobs.get((helper, u), 0))
            self._helper_jobs[(helper, url)] = self._helper_jobs.get((helper, url), 0) + 1
        return url

    def done_for_helper(self, helper: str, url: str) -> None:
        with self._lock:
            left = self._helper_jobs.get((helper, url), 0) - 1
            if left > 0:
                self._helper_jobs[(helper, url)] = left
            else:
                self._helper_jobs.pop((helper, url), None)

    def leave_out(self, url: str, why: str) -> None:
        if self.book.leave_out(url, why):
            self.notice(f"mirror {http.redact_url(url, strict=False)} left out: {why}")

    def struck(self, url: str, why: str | None) -> None:
        """Announce a mirror the book just left out (``why``), if it did."""
        if why:
            self.notice(f"mirror {http.redact_url(url, strict=False)} left out: {why}")


class MirrorSource(Source):
    """One slot of this machine's link over the download's mirrors."""

    short_reason = "the mirror sent too few bytes"

    def __init__(self, board: Board, mirrors: MirrorSources, opts: Options, key: str = LOCAL):
        super().__init__(board, key)
        self.mirrors = mirrors
        self.opts = opts
        self._sessions: dict[str, requests.Session] = {}
        self._retry = http.Retry(attempts=min(MIRROR_ATTEMPTS, opts.retry.attempts),
                                 first_delay=opts.retry.first_delay, max_delay=opts.retry.max_delay)
        self._url: str | None = None
        self._ticket = 0
        self._written = 0

    def run_piece(self, piece: Piece) -> bool:
        book, clock = self.mirrors.book, self.mirrors.clock
        got = book.acquire(clock(), avoid=self.board.suspects(piece.start, piece.end))
        if got is None:  # mirrors were left out: the others' connections are all in use
            return self.settle(piece.assignment_id, Failed("no mirror with a free connection",
                                                           blame=False, keep=False))
        self._url, self._ticket = got
        self._written = 0
        began = clock()
        outcome: Outcome = Stopped()
        try:
            outcome = self._fetch(piece)
        finally:
            book.release(self._url, self._ticket, nbytes=self._written, seconds=clock() - began,
                         ok=isinstance(outcome, Done))
        return self.settle(piece.assignment_id, outcome)

    def _fetch(self, piece: Piece) -> Outcome:
        url = self._url
        probe = self.mirrors.probes[url]
        session = self._sessions.get(url)
        if session is None:
            session = self._sessions[url] = probe.remote.session(source_address=self.opts.source_address)
        fetch = http.RangeFetch(session, probe.remote.final_url, probe.size or 0, probe.validator,
                                policy=self._retry, stop=self.board.stop, encoding=probe.encoding,
                                remote=probe.remote, timeout=self.opts.timeout)
        assignment = piece.assignment_id
        shown = http.redact_url(url, strict=False)
        try:
            fetch.run(piece.start, lambda: self.board.end_of(assignment),
                      lambda block: self.deliver(assignment, block))
        except FileChanged as exc:  # this mirror's copy changed: the others may still serve
            self.mirrors.leave_out(url, str(exc))
            return Failed(f"{shown}: {exc}", blame=False)
        except StorageError as exc:
            return Fatal(DownloadError.of(exc))
        except SwiftError as exc:
            self.mirrors.struck(url, self.mirrors.book.failed(url, str(exc),
                                                              final=exc.code in FINAL_CODES))
            return Failed(f"{shown}: {exc}", blame=False)
        return Stopped() if self.board.stop.is_set() else Done()

    def deliver(self, assignment_id: int, block) -> bool:
        """Write the block, naming the mirror that served it (for piece checks)."""
        kept = self.board.write(assignment_id, self.key, block, via=self._url)
        self._written += len(block)
        self.mirrors.book.progress(self._url, self._ticket, len(block), self.mirrors.clock())
        return kept

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()

"""The requester: one download, from probe to the renamed, checked file.

Data path (see README "How it works"):

1. Probe the URL once (size, range support, validator, final URL, name).
2. Plan pieces (``swift.planning.Scheduler``) and start workers: ``local``
   workers fetch ranges over this machine's own link; each peer gets as many
   workers as it has slots, each one a connection carrying fetch jobs. A
   worker that finishes asks for more, so fast peers do more; when the queue
   is empty an idle worker takes the far half of the largest range still in
   flight, and the peer running it is told to stop early (``Shrink``).
3. Every block that arrives is written at its offset in ``NAME.part`` at
   once (``os.pwrite``); there is no merge step.
4. A worker whose peer dies, hangs (no frame within ``peer_timeout``), or
   fails gives back only its unreceived remainder; a peer that fails
   ``max_failures`` times is left out for the rest of the download. A frozen
   peer that wakes up finds its connection closed and its assignment gone, so
   nothing it sends is written.
5. Every few seconds the written ranges are flushed (``fdatasync``) and then
   recorded in ``NAME.part.swift``; the record never claims a range that is
   not on disk. A later run of the same download resumes from it.
6. When every byte is there: size check, optional checksum, atomic rename.

With mirrors (``--mirror``, a Metalink's URLs, an origin's RFC 6249
``Link: rel=duplicate``), each mirror is probed and must agree on the length
(and, without a hash, the validator) before it serves a byte; this machine's
workers then take each assignment from the mirror the
:class:`~swift.mirrors.MirrorBook` chooses (:mod:`.engine.sources.mirror`).
With piece hashes, every piece is checked as it completes and a bad one is
fetched again from another mirror (:mod:`.engine.piece_check`).

:class:`Download` only composes the parts in :mod:`swift.engine` (target,
board, workers, record keeper, single stream, report); each owns one fact.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import content, http, metalink, planning, storage
from .engine import sharing, target, verify
from .engine.board import Board
from .engine.options import LOCAL, MAX_MIRROR_WORKERS, MAX_PEER_WORKERS, SMALL_FILE, Options
from .engine.piece_check import PieceCheck
from .engine.record_keeper import RecordKeeper
from .engine.report import ChecksumMismatch, DownloadError, MetalinkAnswer, Report, cancelled
from .engine.single_stream import SingleStream
from .engine.sources.local import LocalSource
from .engine.sources.mirror import LockedBook, MirrorSource, MirrorSources
from .checksums import parse_checksum
from .errors import ErrorCode, OriginError, SwiftError
from .mirrors import MirrorBook
from .units import human_bytes

if TYPE_CHECKING:  # the peer machinery loads only when there are peers (start-up)
    from .engine.lan_copy import LanPool
    from .membership import Peer

__all__ = ["Download", "DownloadError", "ChecksumMismatch", "MetalinkAnswer", "Options", "Report"]

log = logging.getLogger(__name__)

#: Seconds the supervisor waits between progress reports and record checks.
SUPERVISE_TICK = 0.25
#: Seconds between two looks at the stop flag while a helper thread probes.
CANCEL_POLL = 0.1
#: Seconds between two rounds of asking the peers for LAN copies while a download
#: runs: as often as a member publishes (``engine.sharing.PUBLISH_INTERVAL``); two
#: members that fetch one file at once fetch twice what they take in the time they
#: need to see each other's work, about two of these.
REFRESH_INTERVAL = 0.25
#: Most hashed pieces in one piece of a download that may share with other members:
#: a member's running assignments are what others leave to it (``held.fetching``),
#: so they are kept to a few seconds of work on a slow link; a range request per
#: 2 MiB costs a round trip, a few per cent of a slow link's time.
SHARED_PIECES = 2
#: Seconds the end of a download waits for its workers before leaving them behind
#: (one stuck on a frozen peer or a stalled origin ends within its own timeout).
WORKER_JOIN = 1.0


class Download:
    """One download. ``run()`` blocks until it is done; ``cancel()`` stops it."""

    def __init__(self, url: str, options: Options,
                 peers: list[Peer] | Callable[[threading.Event], list[Peer]] | None = None, *,
                 notice: Callable[[str], None] | None = None,
                 progress: Callable[[int, int | None], None] | None = None):
        """``peers``: the helpers, or a callable that gives them once the probe
        is done (``membership.PeerLookup.peers``: discovery is asked while
        the origin is probed); it is passed the download's stop event."""
        self.url = url
        self.opts = options
        self._peer_source = peers if callable(peers) else None
        self.peers = [] if callable(peers) else _unique(peers or [])
        self._notice_cb = notice or (lambda text: log.warning("%s", text))
        self._progress_cb = progress
        self.notices: list[str] = []
        self._stop = threading.Event()
        self._board: Board | None = None
        self._stream: SingleStream | None = None
        self._remote: http.RemoteFile | None = None
        self._answer: http.KeptAnswer | None = None  # the probe's open 200, for the plain stream
        self.size: int | None = None
        self._lan_piece = 0  # the hashed piece size of the LAN copies (0: none)
        self._spawned: list[threading.Thread] = []  # workers of LAN copies found later
        self.path: Path | None = None
        self.started = time.monotonic()
        self.state = "starting"
        self._mirrors: MirrorSources | None = None
        self._first_left_out: dict[str, str] = {}
        #: who gave ``opts.checksum`` when the user did not: the origin's header (a
        #: mismatch then names the server, and ``--no-mirrors`` ignores it)
        self._digest_from = ""

    # -- public --------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop from any thread (or a signal handler): every wait and loop ends within ~1 s.

        The record stays true: it is only ever saved after a flush.
        """
        self._stop.set()
        if self._board is not None:
            self._board.fail_all(cancelled(kept="the partial download is kept for resume"))
        if self._stream is not None:
            self._stream.abort()

    @property
    def plain_stream(self) -> bool:
        """True once it downloads in one plain stream (a server without usable byte ranges):
        what arrived then cannot be resumed."""
        return self._stream is not None

    @property
    def done_bytes(self) -> int:
        if self._board is not None:
            return self._board.done_total()
        return self._stream.received if self._stream is not None else 0

    def done_ranges(self) -> list[tuple[int, int]]:
        """The ``[start, end)`` byte ranges already written, sorted (a piece map's source)."""
        if self._board is not None:
            return list(self._board.done_copy())
        received = self._stream.received if self._stream is not None else 0
        return [(0, received)] if received else []

    def bytes_by_source(self) -> dict[str, int]:
        """Bytes each source delivered so far: ``local`` or a helper's ``HOST:PORT``."""
        if self._board is not None:
            return self._board.bytes_by_source()
        received = self._stream.received if self._stream is not None else 0
        return {LOCAL: received} if received else {}

    def contiguous_bytes(self) -> int:
        """Bytes from offset 0 with no gap already written to the part file (``-o -`` streams them)."""
        if self._board is not None:
            return self._board.contiguous_bytes()
        return self._stream.received if self._stream is not None else 0  # written in order

    def run(self) -> Report:
        try:
            report = self._run()
            self.state = "done"
            return report
        except DownloadError:
            self.state = "failed"
            raise
        except SwiftError as exc:  # the HTTP layer's or the disk's, in its own words and code
            self.state = "failed"
            raise DownloadError.of(exc) from exc
        finally:
            self._stop.set()
            if self._board is not None:
                self._board.close_all()
            if self._answer is not None:
                self._answer.close()

    def _notice(self, text: str) -> None:
        self.notices.append(text)
        self._notice_cb(text)

    # -- the whole download ----------------------------------------------------------------------
    def _run(self) -> Report:
        self._remote = http.RemoteFile(self.url, profile=self.opts.profile)
        probe = self._probe_first()
        self._answer = probe.answer  # closed by run() unless the plain stream took it
        if self.opts.follow_metalink and probe.content_type in (metalink.MEDIA_TYPE,
                                                                 "application/metalink+xml"):
            raise MetalinkAnswer(probe.final_url)
        named_by = probe  # the first URL names the file, whichever URL serves it
        probe = self._with_mirrors(probe)
        if self._peer_source is not None:
            self.peers = _unique(self._peer_source(self._stop))
        self.size = probe.size
        final = self.path = target.choose_path(named_by, self.opts)
        wanted = self.opts.file_name or target.file_name(named_by)
        if self.opts.output is None and final.name != wanted:  # as wget's NAME.1, but said
            self._notice(f"{wanted} is taken (by a file, or by another download's partial file): "
                         f"saving as {final.name}")
        storage.check_writable(final.parent)
        with storage.DownloadLock.acquire(final):  # one download per output path
            report = self._locked(probe, final)
        if self.path is not None:  # a later get of this URL may then say "already complete"
            storage.mark_origin(self.path, target.identity(self.url, probe))
        return report

    def _locked(self, probe: http.ProbeResult, final: Path) -> Report:
        control: storage.ControlFile = storage.NullControlFile()
        if probe.splittable:
            control = storage.ResumeFile(final, target.identity(self.url, probe))
        try:
            if probe.splittable:
                try:
                    return self._parallel(probe, final, control)
                except OriginError as exc:
                    if exc.code is not ErrorCode.RANGES_UNUSABLE:
                        raise
                    # the last step for a server whose ranges do not work (README
                    # "Misbehaving servers"): what the ranges wrote cannot be resumed
                    self._board = None
                    storage.part_path(final).unlink(missing_ok=True)
                    control.remove()
                    self._notice(f"{exc}: downloading in one plain stream")
                    return self._single(probe, final, quiet=True)
            return self._single(probe, final)
        except ChecksumMismatch:
            _keep_rejected(control, probe.size or 0, self.opts.checksum)
            raise

    def _probe(self, remote: http.RemoteFile | None = None, retry: http.Retry | None = None,
               keep_answer: bool = True) -> http.ProbeResult:
        """Probe on a helper thread, so that ``cancel()`` ends the wait at once.

        The probe's own retries and timeouts can take many seconds; an
        abandoned probe thread finishes (and closes its session) on its own.
        ``remote`` is the first URL's unless a mirror's is given.
        """
        outcome: list = []
        finished = threading.Event()
        remote = remote or self._remote

        def body() -> None:
            session = remote.session(source_address=self.opts.source_address)
            try:
                result = http.probe(session, remote, retry=retry or self.opts.retry,
                                    stop=self._stop, timeout=self.opts.timeout,
                                    keep_answer=keep_answer)
                if self._stop.is_set() and result.answer is not None:
                    result.answer.close()  # cancelled meanwhile: nobody will take it
                outcome.append(result)
            except BaseException as exc:  # handed to the waiting thread
                outcome.append(exc)
            finally:
                if session is not None:
                    session.close()
                finished.set()

        threading.Thread(target=body, name="probe", daemon=True).start()
        while not finished.wait(CANCEL_POLL):
            if self._stop.is_set():
                raise cancelled()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    # -- mirrors -------------------------------------------------------------------------------
    def _probe_first(self) -> http.ProbeResult:
        """Probe the first URL; with ``--mirror``/Metalink URLs, a first URL that fails
        (gone, refused, unreachable) hands its role to the next one, and is named."""
        while True:
            try:
                return self._probe()
            except SwiftError as exc:
                if not self.opts.mirrors or isinstance(exc, DownloadError):
                    raise
                self._first_left_out[http.redact_url(self.url, strict=False)] = str(exc)
                self._notice(f"{http.redact_url(self.url, strict=False)} left out: {exc}; "
                             f"trying the next URL")
                (self.url, _), rest = self.opts.mirrors[0], self.opts.mirrors[1:]
                self.opts = dataclasses.replace(self.opts, mirrors=rest)
                self._remote = http.RemoteFile(self.url)  # request options: the first URL's only

    def _with_mirrors(self, probe: http.ProbeResult) -> http.ProbeResult:
        """Probe the mirrors, admit those that agree, and return the probe to plan with.

        Without mirrors (or for a file that cannot be split), ``probe`` as it is.
        The origin's ``Repr-Digest``/``Digest`` becomes the checksum when the
        user gave none (``--no-mirrors`` ignores it, as it ignores its mirrors).
        """
        opts = self.opts
        if opts.header_mirrors and opts.checksum is None and probe.digest is not None:
            algo, digest = probe.digest
            self.opts = opts = dataclasses.replace(opts, checksum=f"{algo}:{digest}")
            self._digest_from = "the server's Repr-Digest/Digest header"
            self._notice(f"the server gives the file's {algo} digest: it is checked at the end")
        candidates = [(url, pri) for url, pri in opts.mirrors if url != self.url]
        if opts.header_mirrors:
            candidates += [(d.url, d.priority) for d in probe.duplicates
                           if all(d.url != url for url, _ in candidates) and d.url != self.url]
        if not candidates:
            if opts.expected_size is not None and probe.size != opts.expected_size:
                raise DownloadError(f"{http.redact_url(self.url, strict=False)} says the file has "
                                    f"{probe.size} bytes, the Metalink {opts.expected_size}; "
                                    f"nothing was downloaded", ErrorCode.FILE_CHANGED)
            return probe
        if not probe.splittable:
            self._notice("mirrors are not used: the first URL does not serve byte ranges")
            return probe
        book = LockedBook(MirrorBook([(self.url, 0)] + candidates, per_mirror=opts.per_mirror))
        probes = {self.url: probe}
        probes.update(self._probe_mirrors([url for url, _ in candidates], book))
        expected = opts.expected_size if opts.expected_size is not None else probe.size
        hashed = opts.pieces is not None or opts.checksum is not None
        for url in book.urls():
            got = probes.get(url)
            if got is None:
                continue
            if not got.splittable and got.size is not None:
                why = "it does not serve byte ranges"
                book.leave_out(url, why)
            elif got.encoding != probe.encoding:
                why = (f"it sends Content-Encoding {got.encoding or 'identity'!r}, the first URL "
                       f"{probe.encoding or 'identity'!r}")
                book.leave_out(url, why)
            elif (why := _other_digest(got, opts.checksum)) is not None:
                book.leave_out(url, why)
            else:
                same = _same_validator(probe.validator, got.validator)
                why = book.admit(url, size=got.size, expected_size=expected,
                                 same_validator=True if url == self.url else same, hashed=hashed)
            if why:
                self._notice(f"mirror {http.redact_url(url, strict=False)} left out: {why}")
        usable = book.usable()
        if not usable:
            raise DownloadError("no URL of the file can be used (" + "; ".join(
                f"{http.redact_url(u, strict=False)}: {w}" for u, w in book.left_out().items())
                + "); nothing was downloaded", ErrorCode.FILE_CHANGED)
        self._mirrors = MirrorSources(book, {u: probes[u] for u in usable}, self._notice)
        base = probe if self.url in usable else probes[next(u for u in book.urls() if u in usable)]
        if base is not probe and probe.answer is not None:
            probe.answer.close()
        self._notice(f"{len(usable)} of {len(book.urls())} URLs of the file are used as mirrors")
        return base

    def _probe_mirrors(self, urls: list[str], book: LockedBook) -> dict[str, http.ProbeResult]:
        """Probe every mirror at once (each its own thread); those that fail are left out."""
        results: dict[str, http.ProbeResult] = {}
        lock = threading.Lock()

        def one(url: str) -> None:
            try:
                remote = http.RemoteFile(url)  # no request options: they are the first URL's only
                got = self._probe(remote, http.Retry(attempts=2), keep_answer=False)
            except SwiftError as exc:
                if book.leave_out(url, str(exc)):
                    self._notice(f"mirror {http.redact_url(url, strict=False)} left out: {exc}")
                return
            with lock:
                results[url] = got

        threads = [threading.Thread(target=one, args=(url,), name="probe-mirror", daemon=True)
                   for url in urls]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(CANCEL_POLL)
                if self._stop.is_set():
                    raise cancelled()
        return results

    def _bad_piece(self, index: int, servers: set[str]) -> None:
        """A piece failed its hash: say so, name who served it, strike each mirror among them."""
        hashes = self.opts.pieces
        start, end = hashes.span(index) if hashes else (0, 0)
        names = ", ".join(sorted(http.redact_url(s, strict=False) if "://" in s else s
                                 for s in servers)) or "an earlier run"
        self._notice(f"piece {index} (bytes {start}-{end - 1}) failed its "
                     f"{hashes.algorithm if hashes else ''} hash: fetched again (served by {names})")
        if self._mirrors is None:
            return
        for server in servers:
            if server in self._mirrors.probes:
                self._mirrors.struck(server, self._mirrors.book.bad_piece(server, index))

    def _single(self, probe: http.ProbeResult, final: Path, quiet: bool = False) -> Report:
        why = ("the server does not support byte ranges" if probe.size is not None
               else "the server sends no length")
        if not quiet and probe.size != 0:  # an empty file needs no ranges: nothing to say
            self._notice(f"{why}: downloading in one plain stream")
        self._stream = SingleStream(self.url, probe, self._remote, final, self.opts,
                                    stop=self._stop, progress=self._progress_cb, notice=self._notice,
                                    answer=self._answer)
        self.state = "running"
        report = self._stream.run(self.started, self.notices)
        self.path = Path(report.path)
        return report

    # -- parallel download ---------------------------------------------------------------------
    def _parallel(self, probe: http.ProbeResult, final: Path,
                  control: storage.ResumeFile) -> Report:
        done = target.resume_point(control, probe, final, self.opts, self._notice)
        try:
            return self._ranges(probe, final, control, done)
        except ChecksumMismatch:
            if not done.total:
                raise
            # kept bytes took part: a whole-file digest cannot say which are wrong (verify.py)
            self._notice(f"the file does not match the checksum with the kept data: fetching "
                         f"all of it anew (without piece hashes a whole-file checksum cannot "
                         f"tell which bytes are wrong)")
            control.save(planning.RangeSet())
            return self._ranges(probe, final, control, planning.RangeSet())

    def _ranges(self, probe: http.ProbeResult, final: Path, control: storage.ResumeFile,
                done: planning.RangeSet) -> Report:
        """Fetch what ``done`` lacks into ``NAME.part``, check it, rename it."""
        part_file = storage.part_path(final)
        storage.check_free_space(final.parent, (probe.size or 0) - _allocated(part_file), part_file)
        self._keep_secrets(probe)
        shared = self._sharing(probe, part_file, final)
        try:
            return self._parallel_pass(probe, final, control, done, shared)
        except ChecksumMismatch:
            again = shared.pool.written_ranges() if shared.pool is not None else planning.RangeSet()
            if not again.total:
                shared.withdraw()  # these bytes are not the content their label names
                raise
            # the trusted digest caught what piece hashes and spot checks let through:
            # every byte a LAN copy gave is fetched again from the origin, once
            self._notice(f"checksum mismatch after {human_bytes(again.total)} from LAN copies: "
                         f"fetching those bytes again from the origin")
            redo = planning.RangeSet([(0, probe.size or 0)])
            for start, end in again:
                redo.remove(start, end)
                if shared.publisher is not None:
                    shared.publisher.dropped(start, end)
            shared.copies, shared.pool, shared.lan = [], None, False
            try:
                return self._parallel_pass(probe, final, control, redo, shared)
            except ChecksumMismatch:
                shared.withdraw()
                raise
        finally:
            if shared.links is not None:
                shared.links.close()  # (a refresher still asking drops its own connection)

    def _sharing(self, probe: http.ProbeResult, part_file: Path, final: Path) -> "_Sharing":
        """The download's label, its publisher and the LAN copies helpers hold (docs/sharing.md)."""
        shared = _Sharing()
        size = probe.size or 0
        if not self.opts.share or size == 0:
            return shared
        shared_as = sharing.identity_of(probe.url, probe, self.opts.checksum)
        if shared_as is None:
            log.info("not shared: neither a strong validator nor a SHA-256/512 digest names "
                     "this file")
            return shared
        label = content.label(*shared_as[:1], self.opts.secret, shared_as[1])
        private = content.private_reasons(self._remote.secrets() if self._remote else [],
                                          probe.cache_control)
        if self.opts.share_index is not None:
            shared.publisher = sharing.Publisher(self.opts.share_index, label, part_file, size,
                                                 private=private, name=final.name)
        shared.label = label
        shared.lan = not private and bool(self.peers) and size > SMALL_FILE
        return shared

    def _ask_peers(self, shared: "_Sharing", size: int) -> None:
        """What the peers hold of this download's label. Asked once this download is
        recorded in flight, so that of two members starting together at least the later
        sees the earlier (docs/sharing.md, "Members that fetch at once")."""
        shared.links = shared.links or sharing.QueryLinks(self.opts)
        shared.copies = sharing.ask_peers(
            self.peers, shared.label, size, self.opts, self._stop,
            own_holder=shared.publisher.holder if shared.publisher is not None else None,
            links=shared.links)

    def _parallel_pass(self, probe: http.ProbeResult, final: Path, control: storage.ResumeFile,
                       done: planning.RangeSet, shared: "_Sharing") -> Report:
        part_file = storage.part_path(final)
        with storage.PartFile.open(part_file, probe.size or 0) as part:
            self._lan_piece = shared.copies[0].piece_size if shared.copies else 0
            if shared.lan and not self._lan_piece:  # copies may turn up later
                self._lan_piece = sharing.piece_size_for(probe.size or 0)
            board = self._make_board(probe.size or 0, done, part, shared.publisher)
            keeper = RecordKeeper(board, part, control, self.opts.record_interval)
            board.check_resumed()  # a resumed piece is trusted only after its hash
            if shared.publisher is not None:
                shared.publisher.start(done)
                if shared.resumed is None or not shared.resumed.running:
                    # offered too: read back and hashed beside the workers (docs/sharing.md)
                    shared.resumed = shared.publisher.hash_resumed(part_file, board.done_copy(),
                                                                   self._stop)
            if shared.lan:
                self._ask_peers(shared, probe.size or 0)
            pool = shared.pool = self._lan_pool(board, probe, shared)
            self.state = "running"
            threads = self._start_workers(board, probe, pool)
            refresher = self._start_refresher(board, probe, shared) if pool is not None else None
            keeper.save()  # at once: a crash in the first seconds still resumes
            self._supervise(board, keeper, shared.publisher)
            self._stop_workers(board, threads + self._spawned)
            if refresher is not None:
                refresher.join(WORKER_JOIN)
            keeper.save()  # also on success: the rename below removes it
            if board.error is not None:
                raise board.error
            part.sync()
            if pool is not None and (liar := pool.final_check(part_file)) is not None:
                pool.ban(liar, "a LAN piece it gave differs from the origin's (final spot check)")
                raise ChecksumMismatch(f"a piece from the LAN copy of {liar} differs from the "
                                       f"origin's")
        self._check_size(part_file, probe.size or 0)
        if board.pieces is not None and not board.pieces.all_good():
            raise DownloadError(f"{part_file}: not every piece passed its hash; kept for resume",
                                ErrorCode.CHECKSUM_MISMATCH)
        verify.checksum(part_file, self.opts.checksum, self._stop, **self._digest_words())
        self.path = storage.finalize(part_file, final, overwrite=self.opts.overwrite)
        if shared.publisher is not None:
            if shared.resumed is not None:  # the resumed pieces' hashes, read back
                shared.resumed.wait(sharing.RESUMED_WAIT)
            shared.publisher.finished(self.path)
        return self._report(board, done.total, pool)

    def _digest_words(self) -> dict[str, str]:
        """How a checksum mismatch is told when the origin's header gave the digest."""
        if not self._digest_from:
            return {}
        return {"named_by": self._digest_from,
                "again": "the server contradicts its own digest; run again with --no-mirrors to "
                         "ignore it, or with --checksum giving the right sum"}

    def _lan_pool(self, board: Board, probe: http.ProbeResult, shared: "_Sharing") -> LanPool | None:
        if not shared.lan or (probe.size or 0) <= SMALL_FILE:
            return None
        from .engine.lan_copy import LanPool  # the peer machinery: only with helpers
        pool = LanPool(board, shared.copies, [LOCAL] + [p.key for p in self.peers],
                       label=shared.label, size=probe.size or 0, probe=probe,
                       remote=self._remote, opts=self.opts, notice=self._notice,
                       spawn=lambda name, body: self._spawn(board, name, body),
                       holder=shared.publisher.holder if shared.publisher is not None else None,
                       known=shared.publisher.known if shared.publisher is not None else None,
                       dropped=shared.publisher.dropped if shared.publisher is not None else None)
        pool.share_out()
        if copies := [c for c in shared.copies if c.ranges.total]:
            names = ", ".join(c.peer.name or c.peer.key for c in copies)
            held = sum(c.ranges.total for c in copies)
            log.info("LAN copies of this file: %s (%d bytes held)", names, held)
        return pool

    def _spawn(self, board: Board, name: str, body: Callable[[], None]) -> None:
        """Start a worker found after the start (a LAN copy a refresh turned up)."""
        if board.stop.is_set():
            return
        board.worker_added()
        thread = threading.Thread(target=_guarded, args=(board, body), name=name, daemon=True)
        self._spawned.append(thread)
        thread.start()

    def _start_refresher(self, board: Board, probe: http.ProbeResult,
                         shared: "_Sharing") -> threading.Thread:
        """Ask the peers again every ``REFRESH_INTERVAL`` while the download runs: copies in
        flight grow, members that start later appear, and what they fetch from the origin
        now is left to them (docs/sharing.md)."""
        own = shared.publisher.holder if shared.publisher is not None else None

        def body() -> None:
            while not board.stop.wait(REFRESH_INTERVAL) and not board.complete():
                answers = sharing.ask_peers(self.peers, shared.label, probe.size or 0, self.opts,
                                            board.stop, own_holder=own, links=shared.links)
                if shared.pool is not None and not board.stop.is_set():
                    shared.pool.update(answers)

        thread = threading.Thread(target=body, name="copy-refresh", daemon=True)
        thread.start()
        return thread

    def _make_board(self, size: int, done: planning.RangeSet, part: storage.PartFile,
                    publisher: "sharing.Publisher | None" = None) -> Board:
        small = size <= SMALL_FILE
        if small:
            self._notice(f"small file ({human_bytes(size)}): one request")
            self.peers = []
        workers = 1 if small else self.opts.local_slots + sum(self._slots(p) for p in self.peers)
        piece = size if small else (self.opts.piece_size or planning.plan_piece_size(size, workers))
        if not small and self._lan_piece and not self.opts.piece_size:
            # whole hashed pieces: a LAN copy then sends each piece once, not twice for two
            # assignments that share it
            piece = max(1, round(piece / self._lan_piece)) * self._lan_piece
            # and small: what runs is what another member leaves to us, what waits in the
            # queue it may take; big pieces would put the whole file in the first wave
            piece = min(piece, SHARED_PIECES * self._lan_piece)
        sched = planning.Scheduler(size, piece_size=max(1, piece),
                                   min_split=max(size, 1) if small else self.opts.min_split,
                                   done=done, max_failures=self.opts.max_failures,
                                   race_after=self.opts.race_after)
        pieces = None
        if self.opts.pieces is not None and self.opts.pieces.size == size:
            pieces = PieceCheck(self.opts.pieces)
        self._board = Board(sched, part, notice=self._notice, throttle=self.opts.throttle,
                            names={p.key: p.name for p in self.peers if p.name},
                            pieces=pieces, on_bad_piece=self._bad_piece,
                            written=publisher.written if publisher is not None else None,
                            dropped=publisher.dropped if publisher is not None else None)
        if self._stop.is_set():  # cancelled while probing
            self._board.fail_all(cancelled())
        return self._board

    def _keep_secrets(self, probe: http.ProbeResult) -> None:
        """Secrets (cookies, credentials) go to helpers only over a private connection
        (README "Misbehaving servers"); without a shared secret there is none: go alone."""
        secrets = self._remote.secrets() if self._remote is not None else []
        if secrets and self.peers and self.opts.secret is None:
            self._notice(f"this download carries secrets ({', '.join(secrets)}); without a "
                         f"private connection to helpers (--secret-file) it runs on this "
                         f"machine alone")
            self.peers = []

    def _slots(self, peer: Peer) -> int:
        share = max(1, MAX_PEER_WORKERS // max(1, len(self.peers)))
        return min(peer.slots, self.opts.peer_slots, share)

    def _start_workers(self, board: Board, probe: http.ProbeResult,
                       pool: LanPool | None = None) -> list[threading.Thread]:
        local = 1 if (probe.size or 0) <= SMALL_FILE else self.opts.local_slots
        remote = probe.remote or self._remote  # a mirror's, when the first URL was left out
        if self._mirrors is not None:
            usable = len(self._mirrors.book.usable())
            local = 1 if (probe.size or 0) <= SMALL_FILE else \
                min(self.opts.per_mirror * usable, MAX_MIRROR_WORKERS)
            mirrors = self._mirrors
            bodies = [(f"mirror-{i}", lambda: MirrorSource(board, mirrors, self.opts).run())
                      for i in range(local)]
        else:
            bodies = [(f"local-{i}", lambda: LocalSource(board, probe, remote, self.opts).run())
                      for i in range(local)]
        if self.peers:
            from .engine.sources.peer import PeerSource
        for peer in self.peers:
            for i in range(self._slots(peer)):
                source = PeerSource(board, probe, remote, peer, self.opts, mirrors=self._mirrors)
                bodies.append((f"peer-{peer.key}-{i}", source.run))
        if pool is not None:
            bodies += pool.workers()
        threads = [threading.Thread(target=_guarded, args=(board, body), name=name, daemon=True)
                   for name, body in bodies]
        board.workers_started(len(threads))
        for t in threads:
            t.start()
        return threads

    def _supervise(self, board: Board, keeper: RecordKeeper,
                   publisher: "sharing.Publisher | None" = None) -> None:
        next_publish = time.monotonic()
        while not board.settled(SUPERVISE_TICK):
            self._progress(board)
            keeper.tick()
            if self._mirrors is not None:
                for url, why in self._mirrors.book.judge(time.monotonic()):
                    self._notice(f"mirror {http.redact_url(url, strict=False)} left out: {why}")
            if publisher is not None and time.monotonic() >= next_publish:
                # other members may take these bytes now, and leave those being fetched to us
                publisher.publish(board.done_copy(), board.fetching(sharing.LAN_PREFIX))
                next_publish = time.monotonic() + sharing.PUBLISH_INTERVAL
        self._progress(board)

    def _progress(self, board: Board) -> None:
        if self._progress_cb:
            self._progress_cb(board.done_total(), board.size)

    def _stop_workers(self, board: Board, threads: list[threading.Thread]) -> None:
        """Stop every worker; wait for them at most ``WORKER_JOIN`` seconds in all.

        Workers see the stop at their next block; their results no longer
        matter, so the download does not wait on one stuck in a timeout.
        """
        board.stop.set()
        with board.cond:
            board.cond.notify_all()  # idle workers waiting for work: leave now
        board.close_all()
        deadline = time.monotonic() + WORKER_JOIN
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _check_size(self, part_file: Path, size: int) -> None:
        actual = os.path.getsize(part_file)
        if actual != size:
            raise DownloadError(f"{part_file} has {actual} bytes, expected {size}",
                                ErrorCode.SHORT_BODY, kept="kept for resume")

    def _report(self, board: Board, resumed: int, pool: LanPool | None = None) -> Report:
        return Report(url=self.url, path=str(self.path), size=board.size,
                      seconds=time.monotonic() - self.started, mode="parallel",
                      bytes_by_source=board.bytes_by_source(), resumed_bytes=resumed,
                      dropped_bytes=board.dropped, notices=list(self.notices),
                      left_out={**dict(board.left_out), **self._mirrors_left_out()},
                      mirrors=[{**m, "url": http.redact_url(m["url"], strict=False)}
                               for m in (self._mirrors.book.summary() if self._mirrors else [])],
                      bad_pieces=board.pieces.bad if board.pieces else 0,
                      spot_checks=pool.spot_checks if pool is not None else 0)

    def _mirrors_left_out(self) -> dict[str, str]:
        if self._mirrors is None:
            return dict(self._first_left_out)
        return {**self._first_left_out, **{http.redact_url(url, strict=False): why
                                           for url, why in self._mirrors.book.left_out().items()}}


def _other_digest(got: http.ProbeResult, checksum: str | None) -> str | None:
    """Why a mirror whose own ``Repr-Digest``/``Digest`` names other bytes than the file's
    checksum (same algorithm, another value) is not used; None when it agrees or says nothing."""
    try:
        algo, value = parse_checksum(checksum) if checksum else ("", "")
    except ValueError:
        return None
    if got.digest is None or got.digest[0] != algo or got.digest[1] == value:
        return None
    return f"its {algo} digest header names other bytes than the file's"


def _same_validator(first: http.Validator, other: http.Validator) -> bool | None:
    """Do two URLs' validators name the same version? Strong ETags if both give one, else
    Last-Modified if both give it; None when there is nothing to compare."""
    if first.etag and other.etag:
        return first.etag == other.etag
    if first.last_modified and other.last_modified:
        return first.last_modified == other.last_modified
    return None


class _Sharing:
    """What sharing adds to one download: its label, the publisher of what it writes
    (None: not offered), the LAN copies helpers hold, and their pool once running."""

    def __init__(self) -> None:
        self.label = ""
        self.publisher: sharing.Publisher | None = None
        self.copies: list[sharing.LanHolding] = []
        self.pool: LanPool | None = None
        #: LAN copies may be used (a label, helpers to ask, nothing private)
        self.lan = False
        #: the thread hashing the pieces resumed from an earlier run (None: nothing resumed)
        self.resumed: sharing.ResumedPieces | None = None
        #: the kept query connections to the peers (closed when the download ends)
        self.links: sharing.QueryLinks | None = None

    def withdraw(self) -> None:
        """The file failed its checksum: stop hashing it and stop offering it."""
        if self.resumed is not None:
            self.resumed.stop()
        if self.publisher is not None:
            self.publisher.withdraw()


def _guarded(board: Board, body: Callable[[], None]) -> None:
    """Run a worker; a bug in one must end the download clearly, not hang it."""
    try:
        body()
    except BaseException as exc:
        log.exception("worker failed")
        board.fail_internal(exc)
    finally:
        board.worker_ended()


def _allocated(path: Path) -> int:
    """Bytes the file already occupies on disk (0 if it does not exist)."""
    try:
        return os.stat(path).st_blocks * 512
    except (OSError, AttributeError):
        return 0


def _unique(peers: list[Peer]) -> list[Peer]:
    """One entry per ``host:port``, the first one given."""
    seen: dict[str, Peer] = {}
    for p in peers:
        seen.setdefault(p.key, p)
    return list(seen.values())


def _keep_rejected(control: storage.ControlFile, size: int, checksum: str | None) -> None:
    """A checksum mismatch: every byte is there but fails ``checksum``. Keep the data and
    record it as complete and rejected by that sum (one short line, whatever the file's
    size), so the next run checks it against another sum before fetching anything
    (``target.resume_point``); the null control file of a plain stream saves nothing."""
    try:
        control.save(planning.RangeSet([(0, size)]) if size else planning.RangeSet(), checksum)
    except storage.StorageError as exc:
        log.warning("%s", exc)

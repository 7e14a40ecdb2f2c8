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

:class:`Download` only composes the parts in :mod:`swift.engine` (target,
board, workers, record keeper, single stream, report); each owns one fact.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import http, planning, storage
from .engine import target, verify
from .engine.board import Board
from .engine.options import LOCAL, MAX_PEER_WORKERS, SMALL_FILE, Options
from .engine.record_keeper import RecordKeeper
from .engine.report import ChecksumMismatch, DownloadError, Report, cancelled
from .engine.single_stream import SingleStream
from .engine.sources.local import LocalSource
from .errors import ErrorCode, OriginError, SwiftError
from .units import human_bytes

if TYPE_CHECKING:  # the peer machinery loads only when there are peers (start-up)
    from .membership import Peer

__all__ = ["Download", "DownloadError", "ChecksumMismatch", "Options", "Report"]

log = logging.getLogger(__name__)

#: Seconds the supervisor waits between progress reports and record checks.
SUPERVISE_TICK = 0.25
#: Seconds between two looks at the stop flag while a helper thread probes.
CANCEL_POLL = 0.1
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
        self.path: Path | None = None
        self.started = time.monotonic()
        self.state = "starting"

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
        probe = self._probe()
        self._answer = probe.answer  # closed by run() unless the plain stream took it
        if self._peer_source is not None:
            self.peers = _unique(self._peer_source(self._stop))
        self.size = probe.size
        final = self.path = target.choose_path(probe, self.opts)
        wanted = target.file_name(probe)
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

    def _probe(self) -> http.ProbeResult:
        """Probe on a helper thread, so that ``cancel()`` ends the wait at once.

        The probe's own retries and timeouts can take many seconds; an
        abandoned probe thread finishes (and closes its session) on its own.
        """
        outcome: list = []
        finished = threading.Event()

        def body() -> None:
            session = self._remote.session(source_address=self.opts.source_address)
            try:
                result = http.probe(session, self._remote, retry=self.opts.retry,
                                    stop=self._stop, timeout=self.opts.timeout, keep_answer=True)
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
        with storage.PartFile.open(part_file, probe.size or 0) as part:
            board = self._make_board(probe.size or 0, done, part)
            keeper = RecordKeeper(board, part, control, self.opts.record_interval)
            self.state = "running"
            threads = self._start_workers(board, probe)
            keeper.save()  # at once: a crash in the first seconds still resumes
            self._supervise(board, keeper)
            self._stop_workers(board, threads)
            keeper.save()  # also on success: the rename below removes it
            if board.error is not None:
                raise board.error
            part.sync()
        self._check_size(part_file, probe.size or 0)
        verify.checksum(part_file, self.opts.checksum, self._stop)
        self.path = storage.finalize(part_file, final, overwrite=self.opts.overwrite)
        return self._report(board, done.total)

    def _make_board(self, size: int, done: planning.RangeSet, part: storage.PartFile) -> Board:
        small = size <= SMALL_FILE
        if small:
            self._notice(f"small file ({human_bytes(size)}): one request")
            self.peers = []
        workers = 1 if small else self.opts.local_slots + sum(self._slots(p) for p in self.peers)
        piece = size if small else (self.opts.piece_size or planning.plan_piece_size(size, workers))
        sched = planning.Scheduler(size, piece_size=max(1, piece),
                                   min_split=max(size, 1) if small else self.opts.min_split,
                                   done=done, max_failures=self.opts.max_failures,
                                   race_after=self.opts.race_after)
        self._board = Board(sched, part, notice=self._notice, throttle=self.opts.throttle,
                            names={p.key: p.name for p in self.peers if p.name})
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

    def _start_workers(self, board: Board, probe: http.ProbeResult) -> list[threading.Thread]:
        local = 1 if (probe.size or 0) <= SMALL_FILE else self.opts.local_slots
        remote = self._remote
        bodies = [(f"local-{i}", lambda: LocalSource(board, probe, remote, self.opts).run())
                  for i in range(local)]
        if self.peers:
            from .engine.sources.peer import PeerSource
        for peer in self.peers:
            for i in range(self._slots(peer)):
                source = PeerSource(board, probe, remote, peer, self.opts)
                bodies.append((f"peer-{peer.key}-{i}", source.run))
        threads = [threading.Thread(target=_guarded, args=(board, body), name=name, daemon=True)
                   for name, body in bodies]
        board.workers_started(len(threads))
        for t in threads:
            t.start()
        return threads

    def _supervise(self, board: Board, keeper: RecordKeeper) -> None:
        while not board.settled(SUPERVISE_TICK):
            self._progress(board)
            keeper.tick()
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

    def _report(self, board: Board, resumed: int) -> Report:
        return Report(url=self.url, path=str(self.path), size=board.size,
                      seconds=time.monotonic() - self.started, mode="parallel",
                      bytes_by_source=board.bytes_by_source(), resumed_bytes=resumed,
                      dropped_bytes=board.dropped, notices=list(self.notices),
                      left_out=dict(board.left_out))


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

"""A peer worker: one connection to one peer, carrying fetch jobs one after another.

The worker judges what the peer says: a peer that sends more than it was
ever asked for, or reports a length other than what it sent, or stops short
and calls it done, is lying about what it fetched; its bytes are dropped
(``discard``) and fetched elsewhere. A peer that fails ``max_failures``
times, or cannot be reached or authenticated, is left out.

A split of the running job reaches the peer as a ``Shrink`` sent by the
thread that split it (:meth:`Board.carry`); ``_send_lock`` keeps that
``Shrink`` from overtaking the job's ``Fetch``.
"""

from __future__ import annotations

import logging
import threading

from .. import httpclient, protocol, storage, wire
from ..membership import Peer
from ..planning import Piece
from .board import Board
from .options import MAX_CONNECT_FAILURES, Options
from .report import DownloadError

log = logging.getLogger(__name__)


class _Drop(Exception):
    """The connection can no longer be trusted or used: close it."""


class PeerWorker:
    """One slot on ``peer``: ``run()`` until no work is left for it."""

    def __init__(self, board: Board, probe: httpclient.ProbeResult, peer: Peer, opts: Options):
        self.board = board
        self.probe = probe
        self.peer = peer
        self.source = peer.key
        self.opts = opts
        self._conn: wire.Connection | None = None
        self._send_lock = threading.Lock()

    def run(self) -> None:
        try:
            failures = 0
            while not self.board.stop.is_set() and not self.board.has_no_work_for(self.source):
                if self._conn is None:
                    failures = self._connect(failures)
                    if failures < 0:
                        return
                    continue
                piece = self.board.next_piece(self.source)
                if piece is None:
                    return
                if not self._run_job(self._conn, piece):
                    self._drop()
        finally:
            self._drop()

    # -- the connection --------------------------------------------------------------------------
    def _connect(self, failures: int) -> int:
        """Connect; the count of failures in a row, or -1 when the worker must end."""
        try:
            conn = wire.client_connect(self.peer.host, self.peer.port, name=self.opts.name,
                                       secret=self.opts.secret,
                                       timeout=min(5.0, self.opts.peer_timeout), source_address=None)
        except wire.AuthError as exc:
            self.board.exclude(self.source, f"refused the handshake: {exc}")
            return -1
        except (OSError, TimeoutError, wire.ConnectionClosed, protocol.ProtocolError) as exc:
            failures += 1
            if failures >= MAX_CONNECT_FAILURES:
                self.board.exclude(self.source, f"unreachable: {exc}")
                return -1
            return -1 if self.board.stop.wait(0.5 * failures) else failures
        conn.timeout = self.opts.peer_timeout
        self._conn = conn
        self.board.add_closer(conn.close)
        return 0

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self.board.discard_closer(conn.close)
            conn.close()

    def _tell_shrink(self, conn: wire.Connection, job: int, end: int) -> None:
        try:
            with self._send_lock:
                conn.send(protocol.Shrink(job, end))
        except (OSError, wire.ConnectionClosed, TimeoutError):
            pass  # the worker will notice its connection is gone

    # -- one job -----------------------------------------------------------------------------------
    def _run_job(self, conn: wire.Connection, piece: Piece) -> bool:
        """Run one job on the peer; False when the connection must be dropped."""
        job = piece.job_id
        try:
            with self._send_lock:
                end = self.board.carry(job, lambda new_end: self._tell_shrink(conn, job, new_end))
                if end == 0:
                    return True  # already given up on (or split away entirely): nothing to do
                p = self.probe
                conn.send(protocol.Fetch(job, p.final_url, piece.start, end, p.size or 0,
                                         p.validator.etag, p.validator.last_modified,
                                         p.encoding or None))
            return self._receive(conn, piece)
        except _Drop:
            return False
        except storage.StorageError as exc:
            self.board.fail_all(DownloadError(str(exc)))
            return False
        except (wire.ConnectionClosed, OSError, protocol.ProtocolError) as exc:
            if not self.board.stop.is_set():
                self.board.failed(job, self.source, f"connection lost: {exc}")
            return False

    def _receive(self, conn: wire.Connection, piece: Piece) -> bool:
        """Frames until the job ends; True to keep the connection. _Drop to close it."""
        received = 0  # every byte the peer sent for this job, dropped ones included
        while True:
            frame = self._next_frame(conn, piece.job_id)
            if isinstance(frame, protocol.DataFrame):
                received += len(frame.payload)
                self._take_data(piece, received, frame.payload)
            elif isinstance(frame, protocol.Keepalive):
                continue
            elif isinstance(frame, protocol.Done):
                self._done(piece, received, frame.length)
                return True
            elif isinstance(frame, protocol.Error):
                return self._error(piece.job_id, frame)
            else:
                self.board.failed(piece.job_id, self.source, f"unexpected {type(frame).__name__}")
                raise _Drop()

    def _next_frame(self, conn: wire.Connection, job: int):
        try:
            return conn.recv(timeout=self.opts.peer_timeout)
        except TimeoutError:
            self.board.failed(job, self.source, f"no frame for {self.opts.peer_timeout:g} s; "
                                                f"reassigning its remainder")
            raise _Drop() from None

    def _take_data(self, piece: Piece, received: int, payload: bytes) -> None:
        if received > piece.end - piece.start:
            # more than it was ever asked for: nothing it sent can be trusted
            self.board.failed(piece.job_id, self.source, "the peer sent more bytes than asked",
                              discard=True)
            raise _Drop()
        if not self.board.write(piece.job_id, self.source, payload):
            raise _Drop()  # our job was abandoned meanwhile: resync by reconnecting

    def _done(self, piece: Piece, received: int, length: int) -> None:
        owed = self.board.end_of(piece.job_id) - piece.start
        if length != received or owed > received:
            # a peer that miscounts (or stops short and calls it done) is lying about
            # what it fetched: drop what it wrote, fetch it elsewhere
            self.board.failed(piece.job_id, self.source, f"the peer reported {length} bytes, "
                              f"sent {received}, owed {owed}", discard=True)
        elif not self.board.finished(piece.job_id):
            self.board.failed(piece.job_id, self.source, "the peer sent too few bytes", discard=True)
        else:  # -v: which machine fetched which range
            log.info("%s (%s) fetched bytes %d-%d", self.peer.name or self.source, self.source,
                     piece.start, piece.start + received - 1)

    def _error(self, job: int, frame: protocol.Error) -> bool:
        if frame.code == "changed":
            self.board.fail_all(DownloadError(f"{frame.message}; nothing written after "
                                              f"the change is kept"))
            raise _Drop()
        self.board.failed(job, self.source, f"{frame.code}: {frame.message}")
        return frame.code != "busy"

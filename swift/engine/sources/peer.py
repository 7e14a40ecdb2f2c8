"""The peer source: the origin over a helper's link, one connection carrying fetch jobs one after another.

The conversation itself (what a peer's frames mean, which lies it can tell)
is the sans-I/O :class:`swift.fetchjob.RequesterJob`; this module is its I/O
shell: it connects, sends, receives with a timeout, and turns the job's
events into the outcomes of :mod:`.base` (which make the board's calls). A peer caught lying (more bytes than asked,
a miscounted or short ``Done``) loses what it wrote (``discard``), and a
peer that fails ``max_failures`` times, or cannot be reached or
authenticated, is left out.

Secrets (cookies, credentials, ``Authorization``) go to a peer only over a
private connection (:attr:`wire.Connection.private`):
:meth:`RemoteFile.for_peer <swift.http.RemoteFile.for_peer>` decides what
the ``Fetch`` carries.

A split or a lost race reaches the peer as a ``Shrink`` sent by the thread
that caused it (:meth:`Board.carry`); ``_lock`` keeps that ``Shrink`` from
overtaking the job's ``Fetch`` and the job's state consistent between the
two threads.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ... import fetchjob, http, protocol, wire
from ...errors import StorageError
from ...fetchjob import Data, Finished, KeptAlive, RequesterJob
from ...http.url import split_credentials
from ...membership import Peer
from ...planning import Piece
from ..board import Board
from ..options import Options
from ..report import DownloadError
from . import link
from .mirror import MirrorSources
from .base import Changed, Done, Failed, Fatal, Lost, Outcome, Refused, Source

log = logging.getLogger(__name__)


class PeerSource(Source):
    """One slot on ``peer``: ``run()`` until no work is left for it. It holds the whole file
    (the helper fetches from the origin)."""

    short_reason = "the peer sent too few bytes"

    def __init__(self, board: Board, probe: http.ProbeResult, remote: http.RemoteFile, peer: Peer,
                 opts: Options, *, connect: Callable[..., wire.Connection] = wire.client_connect,
                 mirrors: "MirrorSources | None" = None):
        super().__init__(board, peer.key)
        self.mirrors = mirrors  # the download's usable mirrors, sent with each job
        self._mirror_taken: str | None = None  # the mirror the job in flight starts at
        self._connect_to = connect  # tests pass an in-memory connection
        self.probe = probe
        self.remote = remote
        self.peer = peer
        self.opts = opts
        self._conn: wire.Connection | None = None
        self._job: RequesterJob | None = None
        self._lock = threading.Lock()
        self._sent_url = probe.final_url  # the URL of the job in flight, as this machine knows it
        self._failures = 0  # connection attempts failed in a row

    @property
    def source(self) -> str:
        return self.key

    def ready(self) -> bool:
        """Connected (retrying with a growing pause); False when the peer is given up on."""
        while self._conn is None:
            self._failures = self._connect(self._failures)
            if self._failures < 0:
                return False
            if self.board.stop.is_set() or self.board.has_no_work_for(self.key):
                return False
        return True

    def run_piece(self, piece: Piece) -> bool:
        """Run the piece as one fetch job; a connection that cannot go on is dropped (the
        next piece reconnects), so the worker itself goes on."""
        try:
            if not self._run_job(self._conn, piece):
                self._drop()
        finally:
            if self._mirror_taken is not None and self.mirrors is not None:
                self.mirrors.done_for_helper(self.key, self._mirror_taken)
                self._mirror_taken = None
        return True

    def close(self) -> None:
        self._drop()

    # -- the connection --------------------------------------------------------------------------
    def _connect(self, failures: int) -> int:
        """Connect; the count of failures in a row, or -1 when the worker must end (the
        peer is left out when unreachable, or at once when it refuses the handshake)."""
        self._conn, failures = link.connect(
            self.board, self.opts, self._connect_to, self.peer, failures,
            unreachable=lambda why: self.board.exclude(self.source, why),
            refused=lambda why: self.board.exclude(self.source, why))
        return failures

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        link.hang_up(self.board, conn)

    def _tell_shrink(self, conn: wire.Connection, assignment_id: int, end: int) -> None:
        """From another thread: the assignment now ends at ``end``; tell the peer."""
        try:
            with self._lock:
                job = self._job
                msg = job.shrink(end) if job is not None and job.job_id == assignment_id else None
                if msg is not None:
                    conn.send(msg)
        except (OSError, wire.ConnectionClosed, TimeoutError):
            pass  # the worker will notice its connection is gone

    # -- one assignment, one fetch job ---------------------------------------------------------------
    def _run_job(self, conn: wire.Connection, piece: Piece) -> bool:
        """Run one assignment as a fetch job on the peer; False when the connection must be dropped.

        The fetch job's id on the wire is the assignment's id."""
        assignment_id = piece.assignment_id
        try:
            if not self._start(conn, piece):
                return True  # given up on (or split away entirely) before it was sent
            return self._receive(conn, assignment_id, self._job)
        except protocol.LocalProtocolError as exc:  # ours: the job cannot be encoded
            return self.settle(assignment_id, Refused(
                str(exc), f"this download's fetch job cannot be sent ({exc})", blame=False))
        except StorageError as exc:
            return self.settle(assignment_id, Fatal(DownloadError.of(exc)))
        except (wire.ConnectionClosed, OSError, protocol.ProtocolError) as exc:
            return self.settle(assignment_id, Lost(f"connection lost: {exc}"))

    def _start(self, conn: wire.Connection, piece: Piece) -> bool:
        """Send the fetch job's Fetch (False if the assignment is no longer running)."""
        assignment_id = piece.assignment_id
        with self._lock:
            end = self.board.carry(assignment_id,
                                   lambda new_end: self._tell_shrink(conn, assignment_id, new_end))
            if end == 0:
                return False
            p = self.probe
            url, headers = self.remote.for_peer(private=getattr(conn, "private", False))
            self._sent_url = self.remote.final_url  # the URL as this machine knows it
            first, others = self._mirror_order(assignment_id, getattr(conn, "private", False))
            if first is not None:  # a mirror first: the request options stay with the first URL
                p, url, headers = first, split_credentials(first.remote.final_url)[0], []
                self._sent_url = url
            self._job = RequesterJob(protocol.Fetch(
                assignment_id, url, piece.start, end, p.size or 0, p.validator.etag,
                p.validator.last_modified, p.encoding or None, headers, others))
            conn.send(self._job.request())
        return True

    def _mirror_order(self, assignment_id: int,
                      private: bool = False) -> tuple[http.ProbeResult | None, list[list[str]]]:
        """Which URL a job starts at, and the others as ``Fetch.mirrors``, in order.

        The job starts at the mirror with the fewest of this helper's jobs in
        flight (:meth:`MirrorSources.take_for_helper`), so a helper's slots
        spread over the mirrors; the others follow, rotated by assignment, for
        its node to fall to. Returns ``(None, others)`` when the job starts at
        the download's own URL (which alone carries the request options). A
        mirror with a secret of its own (credentials in its URL, cookies it
        set) goes to a helper only over a private connection, as the first
        URL's secrets do; and never with them, since a mirror is asked plainly.
        """
        if self.mirrors is None:
            return None, []
        first = self.mirrors.take_for_helper(self.key, private=private)
        if first is None:
            return None, []
        self._mirror_taken = first
        rest = sorted(u for u in self.mirrors.for_helpers(private) if u != first)
        if rest:
            k = assignment_id % len(rest)
            rest = rest[k:] + rest[:k]
        base = self.probe.url

        def entry(u: str) -> list[str]:
            p = self.mirrors.probes[u]
            bare = split_credentials(p.remote.final_url)[0]  # a mirror is asked plainly
            return [bare, p.validator.etag or "", p.validator.last_modified or ""]

        others = [entry(u) for u in rest][:protocol.MAX_MIRRORS]
        if first == base:
            return None, others
        return self.mirrors.probes[first], others

    def _receive(self, conn: wire.Connection, assignment_id: int, job: RequesterJob) -> bool:
        """Frames until the job ends; True to keep the connection for the next job."""
        while True:
            event = link.next_event(conn, job, self._lock, self.opts.peer_timeout)
            keep = self._handle(assignment_id, event)
            if keep is not None:
                return keep

    def deliver(self, assignment_id: int, block) -> bool:
        """Write the block; for piece checks, served by this helper and, with mirrors, the
        mirror its job started at (a node moves on only before a byte of the job was sent,
        so the bytes come from there unless that mirror failed at once)."""
        if self.mirrors is None or self._mirror_taken is None:
            return super().deliver(assignment_id, block)
        return self.board.write(assignment_id, self.key, block, via=(self.key, self._mirror_taken))

    def _handle(self, assignment_id: int, event: fetchjob.Event) -> bool | None:
        """Act on one event; None while the job goes on, else whether to keep the connection."""
        if isinstance(event, Data):
            # False: our assignment was abandoned meanwhile; resync by reconnecting
            return None if self.deliver(assignment_id, event.payload) else False
        if isinstance(event, KeptAlive):
            self.board.heard(assignment_id)
            return None
        return self.settle(assignment_id, self._outcome(event))

    def _outcome(self, event: fetchjob.Event) -> Outcome:
        """What a job's last event means for the download."""
        if isinstance(event, Finished):
            return Done()
        if isinstance(event, fetchjob.Failed):
            if event.code is protocol.FetchCode.DENIED:
                why = self._refused_only_here(event.reason)
                if why is not None:
                    return Refused(event.reason, why)
            return Failed(event.reason, discard=event.discard, keep=event.keep_connection)
        assert isinstance(event, fetchjob.Changed), event
        if self.mirrors is not None:  # one mirror's copy changed: the others (and the hashes) decide
            return Failed(f"a mirror's copy changed ({event.message})", blame=False)
        return Changed(event.message)

    def delivered(self, assignment_id: int) -> None:
        start = self._job.start if self._job is not None else 0  # -v: which machine fetched which range
        end = self._job.end if self._job is not None else start
        log.info("%s (%s) fetched bytes %d-%d", self.peer.name or self.source, self.source,
                 start, end - 1)

    def _refused_only_here(self, reason: str) -> str | None:
        """Why to leave the helper out for this download when the origin refused it what it
        gives this machine (a URL bound to this machine's address, a token only it holds;
        README "Misbehaving servers"); None when the URL merely expired for all."""
        if not self.remote.refused_only_for_peer(self._sent_url, size=self.probe.size,
                                                 source_address=self.opts.source_address):
            return None
        return f"the origin refuses it what it gives this machine ({reason})"

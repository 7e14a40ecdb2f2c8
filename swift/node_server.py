"""The node's job server: fetch one byte range from the origin for a peer.

A requester opens a connection per worker and sends ``Fetch`` jobs one after
another on it. For each job the node fetches the range with ``requests`` and
streams every block back as a data frame the moment it arrives: no
temporary file, so nothing to clean up and no store-then-send delay.

While the origin is slow (or the job waits for a free slot) a keep-alive
frame goes out every ``keepalive`` seconds, so the requester can tell a slow
origin from a dead peer. Between blocks the node reads what the requester
sent: a ``Shrink`` moves the job's end (its far part went to an idle
worker), and a closed connection means the requester is gone: the fetch
stops at once (a keep-alive that cannot be sent aborts even a read that is
blocked on a stalled origin).

The job's bookkeeping (what is still owed after a shrink, when a keep-alive
is due, Done or Error at the end) is ``swift.fetchjob.NodeJob``, pure; this
module is its I/O shell: the socket, the origin fetch and the two threads
(the job's and its keep-alive ticker).

A job may also be a ``FetchCopy``: bytes of content this machine holds (a
finished file, or a download still in flight), named by its label; and a
``Query`` asks what this machine holds of a label. Both are answered from
the node's content index (``swift.content_index``), handed to the service
when it is built. A copy is read with ``pread`` from the file the index
names, only while that file is still the one recorded; bytes of a download
in flight that are not written yet are waited for (``COPY_WAIT``), then the
job fails with ``gone`` and the requester fetches them elsewhere.

Fetch jobs from other machines go through a guarded session: unless the
node's owner allowed it with ``--allow-private``, a job whose URL (or any
redirect) reaches a loopback, private or otherwise non-public address is
refused (see ``swift.sessions``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import requests

from . import errors, fetchjob, http, protocol, server, wire
from .content_index import ContentIndex, Holding
from .piecehash import MIN_PIECE
from .errors import ErrorCode
from .protocol import FetchCode

log = logging.getLogger(__name__)

#: Seconds between keep-alive frames while the origin sends nothing (one frame
#: of a few bytes). Short, because a requester races the work of a job silent
#: for twice the longest gap this leaves (1.5 x the interval: the ticker looks
#: every half interval), ``engine.options.RACE_AFTER``; well below the
#: requesters' inactivity timeout (15 s by default).
KEEPALIVE_INTERVAL = 0.5
#: How long a job may wait for a free slot before the node answers "busy".
SLOT_WAIT = 60.0
#: Seconds a copy job waits for bytes of a download in flight that are not written
#: yet. A requester asks only for what this node offered, so a wait means the
#: holding went back (its download took bytes back) or changed: a short one
#: (several of the downloading side's publications, four a second) before ``gone``
#: sends the requester elsewhere, instead of stalling its workers.
COPY_WAIT = 2.0
#: Seconds between two looks at the index while a copy job waits for bytes.
COPY_POLL = 0.1
#: Bytes a copy job reads and sends at once: a quarter of a data frame.
COPY_BLOCK = 256 << 10
#: Files whose "same bytes" evidence (a sample of bytes sent, ETags proven to be
#: aliases, :mod:`swift.http.samefile`) a node keeps across jobs, least recently
#: used dropped first: one per download it helps, and a sample is 8 KiB.
SAME_FILES = 32


#: The code of the error frame for a failed fetch, by the HTTP layer's error code:
#: "refused" where this node will not fetch that (the address policy, a scheme or
#: URL it refuses); "denied" where the origin refuses this node (401/403/404/410,
#: an untrusted certificate), so the requester can tell a URL that only it may
#: fetch; "origin" for everything else.
_ERROR_CODES = {ErrorCode.ADDRESS_BLOCKED: FetchCode.REFUSED,
                ErrorCode.UNSUPPORTED_SCHEME: FetchCode.REFUSED,
                ErrorCode.BAD_URL: FetchCode.REFUSED, ErrorCode.ACCESS_DENIED: FetchCode.DENIED,
                ErrorCode.TLS_UNTRUSTED: FetchCode.DENIED}


class RequesterGone(Exception):
    """The requester closed the connection or stopped reading."""


class JobService:
    """Runs fetch jobs; at most ``slots`` at once on this node."""

    def __init__(self, *, name: str, slots: int,
                 session_factory: Callable[[], requests.Session],
                 policy: http.Retry = http.Retry(),
                 keepalive: float = KEEPALIVE_INTERVAL, slot_wait: float = SLOT_WAIT,
                 timeout: tuple[float, float] = http.DEFAULT_TIMEOUT,
                 index: ContentIndex | None = None,
                 throttle: Callable[[int], None] | None = None):
        self.name = name
        #: what this node offers to others (None: nothing)
        self.index = index
        self.slots = slots
        self.session_factory = session_factory
        self.policy = policy
        self.keepalive = keepalive
        self.slot_wait = slot_wait
        self.timeout = timeout
        #: Called with each block's size before it goes to the requester; may wait
        #: (the owner's ``--limit-rate`` for all jobs together). None: no limit.
        self.throttle = throttle
        self._slots = threading.BoundedSemaphore(slots)
        #: Copy jobs have slots of their own, as many: a slot rations this machine's internet
        #: link, a copy job uses its disk and the LAN instead. Sharing one pool, copies
        #: waited behind fetch jobs that last as long as the link is slow, and the members
        #: of four starting one file at once took each other's pieces only in a burst at the
        #: end (bench/sharing_lan.py, row 2: each 1.30-1.40x a single requester's time, then
        #: 1.18-1.23x).
        self._copy_slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.busy = 0  # fetch jobs running (a pong's ``busy``, against ``slots``)
        self._same: OrderedDict[tuple, http.SameFile] = OrderedDict()

    def same_file(self, fetch: protocol.Fetch, url: str) -> "http.SameFile":
        """What this node learnt, over earlier jobs, about which answers are of
        ``fetch``'s file (a sample of bytes it sent, proven ETag aliases): a job
        that meets another edge's ETag settles it by comparing bytes."""
        key = (url, fetch.size, fetch.etag, fetch.last_modified, fetch.encoding)
        with self._lock:
            same = self._same.get(key)
            if same is None:
                same = self._same[key] = http.SameFile(http.Validator(fetch.etag, fetch.last_modified))
                while len(self._same) > SAME_FILES:
                    self._same.popitem(last=False)
            self._same.move_to_end(key)
            return same

    # -- per connection -------------------------------------------------------------
    def serve_connection(self, srv: server.FramedServer, conn: wire.Connection) -> None:
        session: requests.Session | None = None
        try:
            while not srv.stopping.is_set():
                try:
                    msg = conn.recv()
                except TimeoutError:
                    return  # idle connection: close it
                except protocol.ProtocolError as exc:
                    wire.send_error(conn, exc.code, str(exc))
                    return
                if isinstance(msg, protocol.Ping):
                    conn.send(self._pong())
                elif isinstance(msg, protocol.Fetch):
                    if session is None:
                        session = self.session_factory()
                    if not self.run_job(conn, msg, session, srv.stopping):
                        return
                elif isinstance(msg, protocol.Query):
                    conn.send(self._held(msg.label))
                elif isinstance(msg, protocol.FetchCopy):
                    if not self.run_copy_job(conn, msg, srv.stopping):
                        return
                elif isinstance(msg, protocol.Shrink):
                    continue  # for a job that already ended: nothing to do
                else:
                    wire.send_error(conn, "unexpected",
                                    f"a node does not handle {type(msg).__name__} here")
                    return
        finally:
            if session is not None:
                # urllib3 closes the pools' idle origin sockets when the pools are freed,
                # which is now: no failed request leaves a response in a reference cycle
                # (swift.http.retry, "No reference cycles")
                session.close()

    # -- one job ----------------------------------------------------------------------
    def _pong(self) -> protocol.Pong:
        return protocol.Pong(self.name, self.slots, self.busy)

    def run_job(self, conn: wire.Connection, fetch: protocol.Fetch, session: requests.Session,
                stopping: threading.Event) -> bool:
        """Run one job; False when the connection is no longer usable."""
        try:
            url = http.normalize_url(fetch.url)
        except errors.SwiftError as exc:
            conn.send(protocol.Error(FetchCode.REFUSED, str(exc)))
            return True
        job = fetchjob.NodeJob(fetch, time.monotonic(), pong=self._pong,
                               keepalive_interval=self.keepalive)
        aborted = threading.Event()  # one stop for every attempt: an abort reaches the current one
        attempts = [http.RangeFetch(
            session, url, fetch.size, http.Validator(fetch.etag, fetch.last_modified),
            policy=self.policy, timeout=self.timeout, stop=aborted,
            encoding=http.content_coding(fetch.encoding), headers=fetch.headers,
            same=self.same_file(fetch, url))]
        attempts += self._mirror_attempts(fetch, session, aborted)
        fetch_range = _Current(attempts[0])
        running = _Running(self, conn, job, stopping, fetch_range)
        try:
            if not running.take_slot():
                return running.usable

            def deliver(block: bytes) -> bool:
                running.read_control()
                running.send(block)
                return not stopping.is_set()

            for i, attempt in enumerate(attempts):
                fetch_range.now = attempt
                try:
                    attempt.run(fetch.start, lambda: job.end, deliver)
                    break
                except errors.LinkError:
                    raise  # the requester's link, not the origin's: handled below
                except errors.SwiftError as exc:
                    if job.sent == 0 and i + 1 < len(attempts) and not stopping.is_set() \
                            and not aborted.is_set():
                        log.info("job %d: %s failed (%s); trying the next mirror", fetch.job_id,
                                 http.redact_url(attempt.url, strict=False), exc)
                        continue  # nothing of the job sent yet: the next URL starts it afresh
                    if isinstance(exc, errors.FileChanged):
                        conn.send(protocol.Error(FetchCode.CHANGED, str(exc)))
                        return True
                    code = _ERROR_CODES.get(exc.code, FetchCode.ORIGIN)
                    log.info("job %d (%s bytes %d-%d) failed: %s", fetch.job_id,
                             http.redact_url(attempt.url, strict=False), fetch.start, fetch.end - 1, exc)
                    conn.send(protocol.Error(code, str(exc)))
                    return True
            return running.finish()
        except _REQUESTER_GONE as exc:
            log.info("job %d: requester gone (%s); stopped fetching", fetch.job_id, exc)
            return False
        finally:
            running.close()

    def _mirror_attempts(self, fetch: protocol.Fetch, session: requests.Session,
                         aborted: threading.Event) -> list[http.RangeFetch]:
        """A range fetch per mirror the job names, in its order, each with that mirror's
        validator; the job's extra headers go to its first URL alone. A mirror whose URL
        cannot be used is skipped."""
        out = []
        for mirror_url, etag, modified in fetch.mirrors:
            try:
                url = http.normalize_url(mirror_url)
            except errors.SwiftError:
                continue
            out.append(http.RangeFetch(
                session, url, fetch.size, http.Validator(etag or None, modified or None),
                policy=self.policy, timeout=self.timeout, stop=aborted,
                encoding=http.content_coding(fetch.encoding)))
        return out

    # -- LAN copies -----------------------------------------------------------------------
    def _offered(self, label: str) -> Holding | None:
        return self.index.offered(label) if self.index is not None else None

    def _held(self, label: str) -> protocol.Held:
        """The answer to a query: what of ``label`` this node offers (nothing looks alike)."""
        holding = self._offered(label)
        now = time.time_ns()
        if holding is None or not holding.answers(now):
            return protocol.Held(label, 0, MIN_PIECE, [], [])
        ranges = holding.offered_ranges()[:protocol.MAX_HELD_RANGES]
        held = {i for start, end in ranges
                for i in range(start // holding.piece_size, -(-end // holding.piece_size))}
        fetching = list(holding.fetching_now(now))[:protocol.MAX_HELD_RANGES]
        return protocol.Held(label, holding.size, holding.piece_size, [list(r) for r in ranges],
                             [[i, holding.hashes[i]] for i in sorted(held)],
                             [list(r) for r in fetching], holding.holder or None)

    def run_copy_job(self, conn: wire.Connection, req: protocol.FetchCopy,
                     stopping: threading.Event) -> bool:
        """Serve one ``FetchCopy`` from this machine's copy; False when the connection is no
        longer usable. ``gone`` whenever the copy is not (or no longer) the one recorded."""
        holding = self._offered(req.label)
        if holding is None or holding.size != req.size:
            conn.send(protocol.Error(FetchCode.GONE, "this node does not offer that content"))
            return True
        try:
            fd = os.open(holding.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            conn.send(protocol.Error(FetchCode.GONE, "this node's copy is gone"))
            return True
        job = fetchjob.NodeJob(req, time.monotonic(), pong=self._pong,  # type: ignore[arg-type]
                               keepalive_interval=self.keepalive)
        running = _Running(self, conn, job, stopping, pool=self._copy_slots)
        try:
            if not holding.matches(os.fstat(fd)):
                conn.send(protocol.Error(FetchCode.GONE, "this node's copy changed"))
                return True
            if not running.take_slot():
                return running.usable
            while job.owed and not stopping.is_set():
                running.read_control()
                at = job.start + job.sent
                want = min(COPY_BLOCK, job.owed)
                holding = self._wait_for(req.label, holding, at, at + want, stopping)
                if holding is None or not holding.matches(os.fstat(fd)):
                    conn.send(protocol.Error(FetchCode.GONE, f"bytes {at}.. of this node's copy "
                                                             f"are not there (changed, or not "
                                                             f"written in time)"))
                    return True
                block = os.pread(fd, want, at)
                if len(block) != want:
                    conn.send(protocol.Error(FetchCode.GONE, "this node's copy is shorter"))
                    return True
                running.send(block)
            return running.finish()
        except _REQUESTER_GONE as exc:
            log.info("copy job %d: requester gone (%s)", req.job_id, exc)
            return False
        finally:
            os.close(fd)
            running.close()

    def _wait_for(self, label: str, holding: Holding, start: int, end: int,
                  stopping: threading.Event) -> Holding | None:
        """The holding once its done set covers ``[start, end)``; None if it stops being
        offered or the bytes do not come within ``COPY_WAIT``."""
        deadline = time.monotonic() + COPY_WAIT
        while not holding.done.covers(start, end):
            if time.monotonic() >= deadline or stopping.wait(COPY_POLL):
                return None
            fresh = self._offered(label)
            if fresh is None or fresh.inode != holding.inode:
                return None
            holding = fresh
        return holding

    def _acquire_slot(self, conn: wire.Connection, job: fetchjob.NodeJob, ticking: "_Ticking",
                      stopping: threading.Event,
                      pool: threading.BoundedSemaphore | None = None) -> bool:
        """A slot of ``pool`` (None: the fetch slots, counted in ``busy``) within ``slot_wait``."""
        deadline = time.monotonic() + self.slot_wait
        while time.monotonic() < deadline and not stopping.is_set():
            if ticking.gone.is_set():
                return False
            self._read_control(conn, job, ticking)
            if (pool or self._slots).acquire(timeout=0.5):
                if pool is None:
                    with self._lock:
                        self.busy += 1
                return True
        return False

    def _release_slot(self, pool: threading.BoundedSemaphore | None = None) -> None:
        if pool is not None:
            pool.release()
            return
        with self._lock:
            self.busy -= 1
        self._slots.release()

    def _read_control(self, conn: wire.Connection, job: fetchjob.NodeJob,
                      ticking: "_Ticking") -> None:
        """Handle what the requester sent meanwhile, without blocking."""
        while conn.readable(0):
            try:
                msg = conn.recv(timeout=5.0)
            except protocol.ProtocolError as exc:
                wire.send_error(conn, exc.code, str(exc))
                ticking.gone.set()
                raise RequesterGone(f"bad frame from the requester: {exc}") from exc
            except (wire.ConnectionClosed, TimeoutError) as exc:
                ticking.gone.set()
                raise RequesterGone(str(exc)) from exc
            try:
                answers = job.receive(msg)
            except protocol.RemoteProtocolError as exc:
                ticking.gone.set()
                raise RequesterGone(str(exc)) from exc
            for answer in answers:
                conn.send(answer)

    def _keepalive(self, conn: wire.Connection, job: fetchjob.NodeJob, ticking: "_Ticking",
                   fetch_range: "_Current | None") -> None:
        while not ticking.finished.wait(self.keepalive / 2):
            msg = job.keepalive(time.monotonic())
            if msg is None:
                continue
            try:
                conn.send(msg)
            except (OSError, TimeoutError, wire.ConnectionClosed):
                ticking.gone.set()
                if fetch_range is not None:
                    fetch_range.abort()  # unblock a read stalled on the origin
                return


#: What ends a job because the requester is gone: it said so (``RequesterGone``), closed
#: the connection, or stopped reading (a send failed or timed out).
_REQUESTER_GONE = (RequesterGone, wire.ConnectionClosed, OSError, TimeoutError)


class _Running:
    """What a fetch job and a copy job share while one runs: its keep-alive ticker (from
    construction to :meth:`close`), its slot (from :meth:`take_slot` to :meth:`close`)
    and the way its bytes go out.

    :meth:`close` stops the ticker, aborts the range fetch (if any), so that a read
    still blocked on the origin ends, and gives the slot back.
    """

    def __init__(self, service: JobService, conn: wire.Connection, job: fetchjob.NodeJob,
                 stopping: threading.Event, fetch_range: "_Current | None" = None,
                 pool: threading.BoundedSemaphore | None = None):
        self.service = service
        self.pool = pool  # the slots it takes (None: the fetch slots)
        self.conn = conn
        self.job = job
        self.stopping = stopping
        self.fetch_range = fetch_range
        self.ticking = _Ticking()
        self._slot = False
        self._ticker = threading.Thread(target=service._keepalive,
                                        args=(conn, job, self.ticking, fetch_range),
                                        name="keepalive", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self.ticking.finished.set()
        if self.fetch_range is not None:
            self.fetch_range.abort()
        self._ticker.join(self.service.keepalive * 2 + 1)
        if self._slot:
            self._slot = False
            self.service._release_slot(self.pool)

    @property
    def usable(self) -> bool:
        """Whether the connection may carry the next job (the requester is not gone)."""
        return not self.ticking.gone.is_set()

    def take_slot(self) -> bool:
        """Wait for a slot (``SLOT_WAIT``); without one, answer "busy" (unless the
        requester is gone) and return False."""
        self._slot = self.service._acquire_slot(self.conn, self.job, self.ticking, self.stopping,
                                                self.pool)
        if not self._slot and self.usable:
            what = "copy slots" if self.pool is not None else "slots"
            self.conn.send(protocol.Error(FetchCode.BUSY, f"all {what} of this node are busy"))
        return self._slot

    def read_control(self) -> None:
        self.service._read_control(self.conn, self.job, self.ticking)

    def send(self, block: bytes) -> None:
        """Send what of ``block`` (the job's next bytes) the job still owes, after the
        owner's ``--limit-rate`` (``JobService.throttle``)."""
        part = self.job.take(block, time.monotonic())
        if part:
            if self.service.throttle is not None:
                self.service.throttle(len(part))  # --limit-rate: what this node spends for others
            self.conn.send_data(part)

    def finish(self) -> bool:
        """End the job (``Done``, or the error of a short one); False when the connection
        is no longer usable (the requester is gone, the node stops)."""
        if self.ticking.gone.is_set() or self.stopping.is_set():
            return False
        self.conn.send(self.job.finish())
        return True


class _Current:
    """The range fetch a job runs now (its URL's, then a mirror's): what the keep-alive
    thread aborts when the requester is gone."""

    def __init__(self, first: http.RangeFetch):
        self.now = first

    def abort(self) -> None:
        self.now.abort()


class _Ticking:
    """The two flags a job shares with its keep-alive thread."""

    def __init__(self) -> None:
        self.gone = threading.Event()      # the requester is gone: stop
        self.finished = threading.Event()  # the job ended: the ticker stops


def make_server(host: str, port: int, *, name: str, secret: bytes | None, slots: int,
                session_factory: Callable[[], requests.Session], idle_timeout: float = 60.0,
                max_connections: int | None = None, state_dir: Path | None = None,
                index: ContentIndex | None = None,
                timeout: tuple[float, float] = http.DEFAULT_TIMEOUT,
                throttle: Callable[[int], None] | None = None) -> server.FramedServer:
    """The node's job server; with a ``secret`` it serves TLS only, with the node's own
    key from ``state_dir`` (default: ``identity.state_dir()``), made at first start.
    ``timeout`` and ``throttle`` are the :class:`JobService`'s, given here once (what a
    service needs is passed to its constructor, never set on it afterwards); ``index``:
    what it offers to others as LAN copies (None: nothing)."""
    service = JobService(name=name, slots=slots, session_factory=session_factory, index=index,
                         timeout=timeout, throttle=throttle)
    tls = wire.ServerTLS.load("node", state_dir) if secret else None
    srv = server.FramedServer(
        (host, port), name=name, secret=secret, tls=tls, idle_timeout=idle_timeout,
        # several requesters may each hold a connection per slot; beyond that
        # a connection costs a thread for nothing.
        max_connections=max_connections or max(64, slots * 16),
        serve_connection=service.serve_connection)
    srv.service = service  # type: ignore[attr-defined]
    return srv

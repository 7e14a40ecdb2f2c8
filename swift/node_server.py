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

Fetch jobs from other machines go through a guarded session: unless the
node's owner allowed it with ``--allow-private``, a job whose URL (or any
redirect) reaches a loopback, private or otherwise non-public address is
refused (see ``swift.sessions``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import requests

from . import errors, fetchjob, http, protocol, server, wire
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
                 throttle: Callable[[int], None] | None = None):
        self.name = name
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
        self._lock = threading.Lock()
        self.busy = 0
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
                elif isinstance(msg, protocol.Shrink):
                    continue  # for a job that already ended: nothing to do
                else:
                    wire.send_error(conn, "unexpected",
                                    f"a node does not handle {type(msg).__name__} here")
                    return
        finally:
            if session is not None:
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
        ticking = _Ticking()
        ticker = threading.Thread(target=self._keepalive, args=(conn, job, ticking, fetch_range),
                                  name="keepalive", daemon=True)
        ticker.start()
        got_slot = False
        try:
            got_slot = self._acquire_slot(conn, job, ticking, stopping)
            if not got_slot:
                if not ticking.gone.is_set():
                    conn.send(protocol.Error(FetchCode.BUSY, "all slots of this node are busy"))
                return not ticking.gone.is_set()
            sent = 0

            def deliver(block: bytes) -> bool:
                nonlocal sent
                self._read_control(conn, job, ticking)
                part = job.take(block, time.monotonic())
                if part:
                    if self.throttle is not None:
                        self.throttle(len(part))  # --limit-rate: what this node spends for others
                    conn.send_data(part)
                    sent += len(part)
                return not stopping.is_set()

            for i, attempt in enumerate(attempts):
                fetch_range.now = attempt
                try:
                    attempt.run(fetch.start, lambda: job.end, deliver)
                    break
                except errors.LinkError:
                    raise  # the requester's link, not the origin's: handled below
                except errors.SwiftError as exc:
                    if sent == 0 and i + 1 < len(attempts) and not stopping.is_set() \
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
            if ticking.gone.is_set() or stopping.is_set():
                return False
            conn.send(job.finish())
            return True
        except (RequesterGone, wire.ConnectionClosed, OSError, TimeoutError) as exc:
            log.info("job %d: requester gone (%s); stopped fetching", fetch.job_id, exc)
            return False
        finally:
            ticking.finished.set()
            fetch_range.abort()
            ticker.join(self.keepalive * 2 + 1)
            if got_slot:
                with self._lock:
                    self.busy -= 1
                self._slots.release()

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

    def _acquire_slot(self, conn: wire.Connection, job: fetchjob.NodeJob, ticking: "_Ticking",
                      stopping: threading.Event) -> bool:
        deadline = time.monotonic() + self.slot_wait
        while time.monotonic() < deadline and not stopping.is_set():
            if ticking.gone.is_set():
                return False
            self._read_control(conn, job, ticking)
            if self._slots.acquire(timeout=0.5):
                with self._lock:
                    self.busy += 1
                return True
        return False

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
                   fetch_range: "_Current") -> None:
        while not ticking.finished.wait(self.keepalive / 2):
            msg = job.keepalive(time.monotonic())
            if msg is None:
                continue
            try:
                conn.send(msg)
            except (OSError, TimeoutError, wire.ConnectionClosed):
                ticking.gone.set()
                fetch_range.abort()  # unblock a read stalled on the origin
                return


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
                timeout: tuple[float, float] = http.DEFAULT_TIMEOUT,
                throttle: Callable[[int], None] | None = None) -> server.FramedServer:
    """The node's job server; with a ``secret`` it serves TLS only, with the node's own
    key from ``state_dir`` (default: ``identity.state_dir()``), made at first start.
    ``timeout`` and ``throttle`` are the :class:`JobService`'s, given here once (what a
    service needs is passed to its constructor, never set on it afterwards)."""
    service = JobService(name=name, slots=slots, session_factory=session_factory,
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

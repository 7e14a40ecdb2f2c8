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

Fetch jobs from other machines go through a guarded session: unless the
node's owner allowed it with ``--allow-private``, a job whose URL (or any
redirect) reaches a loopback, private or otherwise non-public address is
refused (see ``swift.sessions``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import requests

from . import httpclient, protocol, server, wire

log = logging.getLogger(__name__)

#: Seconds between keep-alive frames while the origin sends nothing. Well
#: below the requesters' inactivity timeout (15 s by default).
KEEPALIVE_INTERVAL = 2.0
#: How long a job may wait for a free slot before the node answers "busy".
SLOT_WAIT = 60.0


class RequesterGone(Exception):
    """The requester closed the connection or stopped reading."""


class JobService:
    """Runs fetch jobs; at most ``slots`` at once on this node."""

    def __init__(self, *, name: str, slots: int,
                 session_factory: Callable[[], requests.Session],
                 policy: httpclient.RetryPolicy = httpclient.RetryPolicy(),
                 keepalive: float = KEEPALIVE_INTERVAL, slot_wait: float = SLOT_WAIT,
                 timeout: tuple[float, float] = httpclient.DEFAULT_TIMEOUT):
        self.name = name
        self.slots = slots
        self.session_factory = session_factory
        self.policy = policy
        self.keepalive = keepalive
        self.slot_wait = slot_wait
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.busy = 0
        self.jobs_done = 0
        self.bytes_sent = 0

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
                    conn.send(protocol.Pong(self.name, self.slots, self.busy))
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
    def run_job(self, conn: wire.Connection, job: protocol.Fetch, session: requests.Session,
                stopping: threading.Event) -> bool:
        """Run one job; False when the connection is no longer usable."""
        try:
            url = httpclient.check_url(job.url)
        except httpclient.HttpError as exc:
            conn.send(protocol.Error("refused", str(exc)))
            return True
        state = _JobState(job.end)
        fetch = httpclient.RangeFetch(
            session, url, job.size, httpclient.Validator(job.etag, job.last_modified),
            policy=self.policy, timeout=self.timeout, stop=threading.Event(),
            encoding=httpclient.content_coding(job.encoding))
        ticker = threading.Thread(target=self._keepalive, args=(conn, job, state, fetch),
                                  name="keepalive", daemon=True)
        ticker.start()
        got_slot = False
        try:
            got_slot = self._acquire_slot(conn, job, state, stopping)
            if not got_slot:
                if not state.gone.is_set():
                    conn.send(protocol.Error("busy", "all slots of this node are busy"))
                return not state.gone.is_set()

            def deliver(block: bytes) -> bool:
                self._read_control(conn, job, state)
                block = block[: max(0, state.end - (job.start + state.sent))]
                if block:
                    conn.send_data(block)
                    state.sent += len(block)
                    state.last_frame = time.monotonic()
                return not stopping.is_set()

            try:
                fetch.run(job.start, lambda: state.end, deliver)
            except httpclient.FileChanged as exc:
                conn.send(protocol.Error("changed", str(exc)))
                return True
            except httpclient.HttpError as exc:
                code = "refused" if "refusing to fetch" in str(exc) else "origin"
                log.info("job %d (%s bytes %d-%d) failed: %s", job.job_id, url,
                         job.start, job.end - 1, exc)
                conn.send(protocol.Error(code, str(exc)))
                return True
            if state.gone.is_set() or stopping.is_set():
                return False
            expected = state.end - job.start
            if state.sent != expected:
                conn.send(protocol.Error("origin", f"sent {state.sent} of {expected} bytes"))
                return True
            conn.send(protocol.Done(job.job_id, state.sent))
            with self._lock:
                self.jobs_done += 1
                self.bytes_sent += state.sent
            return True
        except (RequesterGone, wire.ConnectionClosed, OSError, TimeoutError) as exc:
            log.info("job %d: requester gone (%s); stopped fetching", job.job_id, exc)
            return False
        finally:
            state.finished.set()
            fetch.abort()
            ticker.join(self.keepalive * 2 + 1)
            if got_slot:
                with self._lock:
                    self.busy -= 1
                self._slots.release()

    def _acquire_slot(self, conn: wire.Connection, job: protocol.Fetch, state: "_JobState",
                      stopping: threading.Event) -> bool:
        deadline = time.monotonic() + self.slot_wait
        while time.monotonic() < deadline and not stopping.is_set():
            if state.gone.is_set():
                return False
            self._read_control(conn, job, state)
            if self._slots.acquire(timeout=0.5):
                with self._lock:
                    self.busy += 1
                return True
        return False

    def _read_control(self, conn: wire.Connection, job: protocol.Fetch, state: "_JobState") -> None:
        """Handle what the requester sent meanwhile, without blocking."""
        while conn.readable(0):
            try:
                msg = conn.recv(timeout=5.0)
            except protocol.ProtocolError as exc:
                wire.send_error(conn, exc.code, str(exc))
                state.gone.set()
                raise RequesterGone(f"bad frame from the requester: {exc}") from exc
            except (wire.ConnectionClosed, TimeoutError) as exc:
                state.gone.set()
                raise RequesterGone(str(exc)) from exc
            if isinstance(msg, protocol.Shrink) and msg.job_id == job.job_id:
                state.end = max(job.start + state.sent, min(state.end, msg.end))
            elif isinstance(msg, protocol.Ping):
                conn.send(protocol.Pong(self.name, self.slots, self.busy))
            else:
                state.gone.set()
                raise RequesterGone(f"unexpected {type(msg).__name__} during a job")

    def _keepalive(self, conn: wire.Connection, job: protocol.Fetch, state: "_JobState",
                   fetch: httpclient.RangeFetch) -> None:
        while not state.finished.wait(self.keepalive / 2):
            if time.monotonic() - state.last_frame < self.keepalive:
                continue
            try:
                conn.send(protocol.Keepalive(job.job_id))
                state.last_frame = time.monotonic()
            except (OSError, TimeoutError, wire.ConnectionClosed):
                state.gone.set()
                fetch.abort()  # unblock a read stalled on the origin
                return


class _JobState:
    def __init__(self, end: int):
        self.end = end
        self.sent = 0
        self.last_frame = time.monotonic()
        self.gone = threading.Event()
        self.finished = threading.Event()


def make_server(host: str, port: int, *, name: str, secret: bytes | None, slots: int,
                session_factory: Callable[[], requests.Session], idle_timeout: float = 60.0,
                max_connections: int | None = None) -> server.FramedServer:
    service = JobService(name=name, slots=slots, session_factory=session_factory)
    srv = server.FramedServer(
        (host, port), name=name, secret=secret, idle_timeout=idle_timeout,
        # several requesters may each hold a connection per slot; beyond that
        # a connection costs a thread for nothing.
        max_connections=max_connections or max(64, slots * 16),
        serve_connection=service.serve_connection)
    srv.service = service  # type: ignore[attr-defined]
    return srv

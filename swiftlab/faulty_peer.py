"""A misbehaving swift peer for the fault tests: it speaks the protocol, then lies.

It runs inside the test process (a ``swift.server.FramedServer`` on
loopback, so the handshake and framing are the real ones), registers with
discovery through ``swift.membership`` like any node, and answers every
``Fetch`` wrongly in one of the ways a broken or confused machine would.
The requester must catch each lie, give the job's range to someone else
and, after a few failures, leave the peer out.

What it sends matters for what the test can prove:

- where the requester is meant to throw the bytes away (a wrong count), the
  peer sends *garbage*, so a requester that kept them would produce a file
  whose sha256 is wrong;
- where the requester is meant to keep what arrived before the failure (an
  error frame, a crash), the peer sends *true* bytes read from the origin's
  own copy of the file, and counts them in ``true_bytes``: the requester
  should credit exactly those to this peer;
- ``wrong-content`` sends garbage with every count right. No byte count
  can catch that; only ``get --checksum`` can (see the README's security
  notes), so tests use that mode together with a checksum.

It never talks to the origin, so the origin's byte counters only show what
the honest machines fetched.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from swift import protocol, server, wire
from swift.membership import DiscoveryClient, Membership

log = logging.getLogger(__name__)

#: Bytes of true data sent before an error frame or a crash.
TRUE_PREFIX = 64 * 1024
#: Data frames the fake peer sends are at most this big (well inside MAX_DATA).
FRAME = 256 * 1024

#: How each mode answers a job for ``n`` bytes.
MODES = {
    "short": "n/2 garbage bytes, then Done(n/2): it stops early and says so",
    "short-claims-all": "n/2 garbage bytes, then Done(n): it stops early and claims it did not",
    "too-many": "n + 4096 garbage bytes, then Done(n + 4096)",
    "wrong-done": "exactly n garbage bytes, then Done(n - 1)",
    "error": "64 KiB of true bytes, then an Error frame (as if its origin failed)",
    "crash": "64 KiB of true bytes, then it closes the connection mid-job",
    "garbage": "bytes that are not a frame at all",
    "wrong-content": "exactly n garbage bytes and Done(n): every count right, the content wrong",
}


class FaultyPeer:
    """A fake node on loopback that answers every fetch job wrongly (see ``MODES``).

    ``mode`` may be a list: the peer then cycles through the modes, one job
    each. Use it as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, discovery: tuple[str, int], original: Path, mode: str | list[str], *,
                 slots: int = 2, name: str = "faulty", host: str = "127.0.0.1",
                 secret: bytes | None = None):
        modes = [mode] if isinstance(mode, str) else list(mode)
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ValueError(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
        self.modes = modes
        self.original = Path(original)
        self.slots = slots
        self.name = name
        self._lock = threading.Lock()
        self.jobs: list[tuple[str, int, int]] = []  # (mode, start, end) of every Fetch seen
        self.true_bytes = 0  # true bytes sent before a failure: the requester may keep these
        self.garbage_bytes = 0
        self.server = server.FramedServer((host, 0), name=name, secret=secret, idle_timeout=30.0,
                                          max_connections=64, serve_connection=self._serve)
        self.membership = Membership(DiscoveryClient(*discovery, name=name, secret=secret),
                                     host=host, port=self.server.port, name=name, slots=slots,
                                     interval=1.0)

    @property
    def key(self) -> str:
        return self.membership.me.key

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> "FaultyPeer":
        self.server.start()
        self.membership.start()
        return self

    def stop(self) -> None:
        """Unregister, close the listening socket and every connection, join the threads."""
        self.membership.stop(unregister=True)
        self.server.stop()

    def __enter__(self) -> "FaultyPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- serving ------------------------------------------------------------------------
    def _serve(self, srv: server.FramedServer, conn: wire.Connection) -> None:
        while not srv.stopping.is_set():
            try:
                msg = conn.recv()
            except TimeoutError:
                return
            if isinstance(msg, protocol.Shrink):
                continue  # it ignores shrinks: its answers are wrong anyway
            if not isinstance(msg, protocol.Fetch):
                return
            with self._lock:
                mode = self.modes[len(self.jobs) % len(self.modes)]
                self.jobs.append((mode, msg.start, msg.end))
            if not self._answer(conn, msg, mode):
                return

    def _answer(self, conn: wire.Connection, job: protocol.Fetch, mode: str) -> bool:
        """Answer one job in ``mode``; False when the connection is to be closed."""
        n = job.end - job.start
        if mode == "short":
            sent = self._send_garbage(conn, max(1, n // 2))
            conn.send(protocol.Done(job.job_id, sent))
        elif mode == "short-claims-all":
            self._send_garbage(conn, max(1, n // 2))
            conn.send(protocol.Done(job.job_id, n))
        elif mode == "too-many":
            sent = self._send_garbage(conn, n + 4096)
            conn.send(protocol.Done(job.job_id, sent))
        elif mode == "wrong-done":
            sent = self._send_garbage(conn, n)
            conn.send(protocol.Done(job.job_id, sent - 1))
        elif mode == "wrong-content":
            sent = self._send_garbage(conn, n)
            conn.send(protocol.Done(job.job_id, sent))
        elif mode == "error":
            self._send_true(conn, job.start, min(n, TRUE_PREFIX))
            conn.send(protocol.Error(protocol.FetchCode.ORIGIN,
                                     "made-up failure of this peer's origin link"))
        elif mode == "crash":
            self._send_true(conn, job.start, min(n, TRUE_PREFIX))
            return False
        elif mode == "garbage":
            conn.sock.sendall(b"\xff" * 64)  # version 255: not a frame of ours
            return False
        return True

    def _send_garbage(self, conn: wire.Connection, n: int) -> int:
        left = n
        while left:
            chunk = min(left, FRAME)
            conn.send_data(os.urandom(chunk))
            left -= chunk
            with self._lock:
                self.garbage_bytes += chunk
        return n

    def _send_true(self, conn: wire.Connection, start: int, n: int) -> None:
        with open(self.original, "rb") as f:
            data = os.pread(f.fileno(), n, start)
        conn.send_data(data)
        with self._lock:
            self.true_bytes += len(data)

"""One fetch job, as two sans-I/O state machines: the requester's side and the node's.

A requester asks a node for bytes ``[start, end)`` of a URL; the node streams
them back as data frames, in order, and ends with ``Done(length)`` or an
``Error``::

    requester                               node
      Fetch(job_id, url, start, end, ...) ->
                                          <-  data, data, Keepalive, data, ...
      Shrink(job_id, new_end)             ->  (optional, any time: the far part
                                               went to another worker)
                                          <-  Done(job_id, length) | Error(code, message)

Neither class touches a socket, a thread or a clock: frames go in, events
and messages come out, and the time, where it matters, is an argument
(``swift.wire`` / ``swift.node_server`` and the engine are the I/O shells;
tests/test_fetchjob.py runs whole jobs over an in-memory pair).

The rules the requester side enforces, because a peer may lie:

* A node that sends more bytes than the job ever asked for (the end *before*
  any shrink) is broken or hostile: nothing it sent for this job can be
  trusted (``Failed(discard=True)``).
* ``Done`` must count exactly the bytes received, and those must reach the
  job's current end (after shrinks): otherwise it miscounted or stopped
  short and called it done (``Failed(discard=True)``).
* ``Error(FetchCode.CHANGED)`` means the file changed at the origin: the whole
  download must stop (``Changed``), not just this job.

Requester API (what the engine drives, one ``RequesterJob`` per job)::

    job = RequesterJob(fetch)            # fetch: the protocol.Fetch to send
    conn.send(job.request())             # the Fetch message
    msg = job.shrink(new_end)            # the scheduler moved the end: send msg if not None
    event = job.receive(frame)           # each received frame (DataFrame or Message)
    event = job.timed_out(seconds)       # no frame within the inactivity timeout

    Data(offset, payload)  write payload at offset (the engine writes only the
                           part its scheduler still assigns to this job: a node
                           may send past a shrink it had not yet read)
    KeptAlive()            the node is alive, the origin slow
    Finished(length)       the job is complete and correct
    Failed(reason, discard, keep_connection)
                           the job failed; ``discard``: drop what this peer wrote
                           for it; ``keep_connection``: the connection may carry
                           the next job
    Changed(message)       the file changed at the origin: stop the download

After ``Finished``, ``Failed`` or ``Changed`` the job takes no more frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from . import protocol
from .protocol import DataFrame, FetchCode, LocalProtocolError, Message, RemoteProtocolError

__all__ = ["Changed", "Data", "Event", "Failed", "Finished", "KeptAlive", "NodeJob",
           "RequesterJob"]


# -- events (requester side) --------------------------------------------------------------------
@dataclass(frozen=True)
class Data:
    """``payload`` belongs at file offset ``offset``."""

    offset: int
    payload: bytes | bytearray | memoryview


@dataclass(frozen=True)
class KeptAlive:
    """A keep-alive: the node works, the origin is slow."""


@dataclass(frozen=True)
class Finished:
    """The node delivered the whole job: ``length`` bytes."""

    length: int


@dataclass(frozen=True)
class Failed:
    """The job failed for ``reason``; see the module docstring for the flags."""

    reason: str
    discard: bool = False
    keep_connection: bool = True
    #: the node's error code when the node reported the failure with one this
    #: version knows (``Error`` frame); None otherwise
    code: FetchCode | None = None


@dataclass(frozen=True)
class Changed:
    """The origin's file changed (the node saw another validator)."""

    message: str


Event = Union[Data, KeptAlive, Finished, Failed, Changed]


class RequesterJob:
    """The requester's side of one job: frames in, events out."""

    def __init__(self, fetch: protocol.Fetch):
        self.fetch = fetch
        self.job_id = fetch.job_id
        self.start = fetch.start
        #: the end first asked for: a node may never send beyond it
        self.assigned_end = fetch.end
        #: the end now (shrinks move it down, never below what was received)
        self.end = fetch.end
        self.received = 0
        self.over = False

    def request(self) -> protocol.Fetch:
        """The message that starts the job."""
        return self.fetch

    def shrink(self, end: int) -> protocol.Shrink | None:
        """The job now ends at ``end``; the Shrink to send, or None if nothing changes."""
        end = max(end, self.start + self.received)
        if self.over or end >= self.end:
            return None
        self.end = end
        return protocol.Shrink(self.job_id, end)

    def receive(self, frame: Message | DataFrame) -> Event:
        """The event one received frame means."""
        if self.over:
            raise LocalProtocolError("unexpected", f"job {self.job_id} is over")
        if isinstance(frame, DataFrame):
            offset = self.start + self.received
            self.received += len(frame.payload)
            if self.received > self.assigned_end - self.start:
                return self._over(Failed("the peer sent more bytes than asked", discard=True,
                                         keep_connection=False))
            return Data(offset, frame.payload)
        if isinstance(frame, protocol.Keepalive):
            return KeptAlive()
        if isinstance(frame, protocol.Done):
            owed = self.end - self.start
            if frame.length != self.received or self.received < owed:
                # a peer that miscounts (or stops short and calls it done) is lying
                # about what it fetched: drop what it wrote, fetch it elsewhere
                return self._over(Failed(f"the peer reported {frame.length} bytes, sent "
                                         f"{self.received}, owed {owed}", discard=True))
            return self._over(Finished(self.received))
        if isinstance(frame, protocol.Error):
            code = FetchCode.of(frame.code)
            if code is FetchCode.CHANGED:
                return self._over(Changed(frame.message))
            return self._over(Failed(f"{frame.code}: {frame.message}", code=code,
                                     keep_connection=code is not FetchCode.BUSY))
        return self._over(Failed(f"unexpected {type(frame).__name__}", keep_connection=False))

    def timed_out(self, seconds: float) -> Failed:
        """No frame came for ``seconds``: the peer is presumed dead."""
        return self._over(Failed(f"no frame for {seconds:g} s; reassigning its remainder",
                                 keep_connection=False))

    def _over(self, event):
        self.over = True
        return event


class NodeJob:
    """The node's side of one job: what it still owes, and what to answer.

    ``pong`` builds the answer to a Ping that arrives during the job.
    ``now`` arguments are seconds on any monotonic clock the caller reads.
    """

    def __init__(self, fetch: protocol.Fetch, now: float, *,
                 pong: Callable[[], protocol.Pong], keepalive_interval: float):
        self.fetch = fetch
        self.job_id = fetch.job_id
        self.start = fetch.start
        self.end = fetch.end
        self.sent = 0
        self.pong = pong
        self.keepalive_interval = keepalive_interval
        self.last_frame = now

    @property
    def owed(self) -> int:
        """Bytes still to send (0 once a shrink took away the rest)."""
        return max(0, self.end - (self.start + self.sent))

    def receive(self, msg: Message | DataFrame) -> list[Message]:
        """A message from the requester during the job; the answers to send.

        RemoteProtocolError for anything a requester may not send mid-job.
        """
        if isinstance(msg, protocol.Shrink):
            if msg.job_id == self.job_id:
                # never below what is already sent, never beyond the current end
                self.end = max(self.start + self.sent, min(self.end, msg.end))
            # else: a late shrink of an earlier job on this connection, crossed with its Done
            return []
        if isinstance(msg, protocol.Ping):
            return [self.pong()]
        raise RemoteProtocolError("unexpected", f"unexpected {type(msg).__name__} during a job")

    def take(self, block: bytes | bytearray | memoryview, now: float) -> memoryview:
        """The part of ``block`` (the origin's next bytes) to send; counted as sent."""
        part = memoryview(block)[:self.owed]
        if part:
            self.sent += len(part)
            self.last_frame = now
        return part

    def keepalive(self, now: float) -> protocol.Keepalive | None:
        """A Keepalive to send if nothing went out for ``keepalive_interval``."""
        if now - self.last_frame < self.keepalive_interval:
            return None
        self.last_frame = now
        return protocol.Keepalive(self.job_id)

    def finish(self) -> Message:
        """The last message: Done if every owed byte went out, else an Error."""
        expected = self.end - self.start
        if self.sent != expected:
            return protocol.Error(FetchCode.ORIGIN, f"sent {self.sent} of {expected} bytes")
        return protocol.Done(self.job_id, self.sent)

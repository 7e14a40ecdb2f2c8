"""The node's per-connection loop (``node_server.JobService.serve_connection``) with a
scripted connection: what it does when a requester's connection ends."""

from __future__ import annotations

import os
import threading

from swift import node_server, protocol
from swift.content_index import ContentIndex, Holding
from swift.planning import RangeSet


class ScriptedConnection:
    """Hands out ``frames`` one by one, then times out (an idle requester); keeps what is sent."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.sent = []

    def recv(self, timeout=None):
        if not self.frames:
            raise TimeoutError("idle")
        return self.frames.pop(0)

    def send(self, msg):
        self.sent.append(msg)


class Server:
    stopping = threading.Event()


class Session:
    closed = False

    def close(self):
        self.closed = True


def serve(monkeypatch, frames, run_job=None):
    collections = []
    monkeypatch.setattr(node_server.gc, "collect", lambda *a: collections.append(a))
    sessions = []

    def factory():
        sessions.append(Session())
        return sessions[-1]

    service = node_server.JobService(name="n", slots=1, session_factory=factory)
    if run_job is not None:
        monkeypatch.setattr(service, "run_job", run_job)
    conn = ScriptedConnection(frames)
    service.serve_connection(Server(), conn)
    return conn, collections, sessions


def test_a_connection_that_only_asked_what_the_node_holds_ends_without_a_full_collection(monkeypatch):
    label = "a" * 64
    conn, collections, sessions = serve(monkeypatch, [protocol.Query(label), protocol.Query(label)])
    assert [type(m) for m in conn.sent] == [protocol.Held, protocol.Held]
    assert collections == [] and sessions == []


def test_a_connection_that_fetched_from_the_origin_closes_its_session_and_collects_once(monkeypatch):
    fetch = protocol.Fetch(1, "http://origin.test/f", 0, 10, 10)
    conn, collections, sessions = serve(monkeypatch, [fetch, fetch], run_job=lambda *a: True)
    assert len(sessions) == 1 and sessions[0].closed
    assert len(collections) == 1  # its failed requests' origin sockets close now, once


class CopyConnection(ScriptedConnection):
    """A requester that only listens: it sends nothing while its copy job runs."""

    def __init__(self):
        super().__init__([])
        self.data = []

    def readable(self, timeout=0):
        return False

    def send_data(self, payload):
        self.data.append(bytes(payload))


def test_a_copy_is_served_while_every_fetch_slot_is_taken(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    f = tmp_path / "disk.iso"
    f.write_bytes(data)
    st = os.stat(f)
    label = "ab" * 32
    index = ContentIndex(tmp_path / "state")
    index.record(Holding(label=label, path=str(f), size=len(data), piece_size=len(data),
                         done=RangeSet([(0, len(data))]), hashes={0: "c" * 64},
                         inode=st.st_ino, mtime_ns=st.st_mtime_ns))
    service = node_server.JobService(name="n", slots=1, session_factory=Session, index=index,
                                     slot_wait=1.0)
    assert service._slots.acquire(blocking=False)  # a slow origin fetch holds the only slot
    conn = CopyConnection()
    assert service.run_copy_job(conn, protocol.FetchCopy(1, label, 0, len(data), len(data)),
                                threading.Event())
    assert b"".join(conn.data) == data
    assert isinstance(conn.sent[-1], protocol.Done) and service.busy == 0

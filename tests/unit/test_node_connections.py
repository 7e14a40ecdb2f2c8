"""The node's job service (``node_server.JobService``) with a scripted connection, no
socket: which slots a job waits for."""

from __future__ import annotations

import os
import threading

from swift import node_server, protocol
from swift.content_index import ContentIndex, Holding
from swift.planning import RangeSet


class ListeningConnection:
    """A requester that only listens while its copy job runs; keeps what is sent."""

    def __init__(self):
        self.sent = []
        self.data = []

    def readable(self, timeout=0):
        return False

    def send(self, msg):
        self.sent.append(msg)

    def send_data(self, payload):
        self.data.append(bytes(payload))


class Session:
    def close(self):
        pass


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
    conn = ListeningConnection()
    assert service.run_copy_job(conn, protocol.FetchCopy(1, label, 0, len(data), len(data)),
                                threading.Event())
    assert b"".join(conn.data) == data
    assert isinstance(conn.sent[-1], protocol.Done) and service.busy == 0

"""A helper gives its origin sockets back when a job's range request failed, with the
cycle collector off.

urllib3 closes a pool's idle keep-alive sockets only when the pool is freed
(``Session.close`` does not close them), and a failed request's response names
its pool: had the failure left the response in a reference cycle (an
exception, its traceback, a frame holding the exception), the helper would
keep the socket until the cycle collector happened to run, which in an idle
helper may be never. Here a job server runs in this process with the
collector off; after each fault and the requester's leaving, no socket of
this process may still reach the origin, and the collector finds no
requests or urllib3 object left over.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swift import node_server, protocol, sessions, wire
from swiftlab.cluster import wait_until
from swiftlab.origin import make_file

from tests.helpers import http_objects_in_cycles

KiB, MiB = 1 << 10, 1 << 20
SIZE = 2 * MiB

#: Each fault (one request meets it, the next is well served), and how the job ends.
FAULTS = {
    "reset mid-body": (dict(reset_after=16 * KiB), "done"),
    "503": (dict(fail=503), "done"),
    "short body": (dict(short_body=1000), "done"),
    "read stalls past the read timeout": (dict(stall_after=16 * KiB, stall_seconds=3.0), "done"),
    "404, given up on": (dict(fail=404), "denied"),
    "requester leaves mid-job": (dict(stall_after=16 * KiB, stall_seconds=30.0), "gone"),
}


def sockets_to(port: int) -> int:
    """This process's open TCP sockets whose far end is port ``port``."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/self/net") / table
        if path.exists():
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            continue
        count += link.startswith("socket:[") and link[8:-1] in inodes
    return count


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failed_range_request_leaves_no_origin_socket_open_without_the_collector(
        origin, origin_root, no_collector, fault):
    make_file(origin_root / "f.bin", SIZE, seed=3)
    settings, ending = FAULTS[fault]
    origin.configure(count=1, **settings)
    srv = node_server.make_server("127.0.0.1", 0, name="helper", secret=None, slots=2,
                                  session_factory=lambda: sessions.make_session(allow_private=True),
                                  timeout=(2.0, 0.5)).start()
    try:
        with wire.client_connect("127.0.0.1", srv.port, name="requester", secret=None,
                                 timeout=10) as conn:
            conn.send(protocol.Fetch(1, origin.url("/f.bin"), 0, SIZE, SIZE))
            got, last = 0, None
            while last is None:
                frame = conn.recv(timeout=30)
                if isinstance(frame, protocol.Done):
                    last = "done"
                elif isinstance(frame, protocol.Error):
                    last = frame.code
                elif isinstance(frame, protocol.DataFrame):
                    got += len(frame.payload)
                    if ending == "gone" and got >= 16 * KiB:
                        last = "gone"  # the requester leaves: the helper must notice and stop
        assert last == ending and (ending != "done" or got == SIZE), (last, got)
        assert not origin.config()["queued"].get("*"), "the fault met no request"
        wait_until(lambda: srv.service.busy == 0 and srv.open_connections() == 0, 15,
                   "the helper to end the requester's connection")
        assert sockets_to(origin.port) == 0, "an origin socket outlived the job"
        assert http_objects_in_cycles() == []
    finally:
        srv.stop()

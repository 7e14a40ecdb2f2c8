"""A download's queries go over one kept connection per peer, not a handshake each time."""

from __future__ import annotations

import threading

import requests

from swift import node_server, protocol
from swift.engine.options import Options
from swift.engine.sharing import QueryLinks, ask_peers
from swift.membership import Peer
from swiftlab.cluster import wait_until

LABEL = "ab" * 32


def test_queries_reuse_one_connection_per_peer_and_close_leaves_none_open():
    srv = node_server.make_server("127.0.0.1", 0, name="n", secret=None, slots=2,
                                  session_factory=requests.Session)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        peer = Peer("127.0.0.1", srv.server_address[1], "n")
        links = QueryLinks(Options())
        answer = links.query(peer, LABEL)
        assert isinstance(answer, protocol.Held) and answer.label == LABEL
        first = links._conns[peer.key]
        for _ in range(5):
            links.query(peer, LABEL)
            assert links._conns[peer.key] is first
        assert ask_peers([peer], LABEL, 1 << 30, Options(), threading.Event(), links=links) == []
        assert links._conns[peer.key] is first  # nothing held: no copy, the link kept
        wait_until(lambda: len(srv._open) == 1, 5, "the server holds one connection")
        links.close()
        wait_until(lambda: not srv._open, 5, "the server saw the connection close")
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)

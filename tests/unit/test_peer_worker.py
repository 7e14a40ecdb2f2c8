"""The peer worker against in-memory peers: each lie a peer can tell, and what it costs.

No sockets: ``ScriptedPeer`` stands in for a ``wire.Connection`` and answers
each ``Fetch`` from a script, so the requester's judgement of a peer is
tested frame by frame.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import pytest

from swift import http, protocol, storage, wire
from swift.engine.board import Board
from swift.engine.options import Options
from swift.engine.sources import PeerSource
from swift.membership import Peer
from swift.planning import Scheduler

MiB = 1 << 20
SIZE = 2 * MiB
DATA = bytes(range(256)) * (SIZE // 256)
PEER = Peer("127.0.0.1", 9, slots=1)


class ScriptedPeer:
    """An in-memory connection: records what is sent, answers each Fetch with ``script(fetch)``."""

    def __init__(self, script: Callable[[protocol.Fetch], list]):
        self.script = script
        self.sent: list = []
        self.frames: deque = deque()
        self.closed = False
        self.timeout = None

    def send(self, msg) -> None:
        if self.closed:
            raise wire.ConnectionClosed("closed")
        self.sent.append(msg)
        if isinstance(msg, protocol.Fetch):
            self.frames.extend(self.script(msg))

    def recv(self, timeout=None):
        if self.closed:
            raise wire.ConnectionClosed("closed")
        if not self.frames:
            raise TimeoutError
        return self.frames.popleft()

    def close(self) -> None:
        self.closed = True


def honest(fetch: protocol.Fetch) -> list:
    body = DATA[fetch.start:fetch.end]
    return [protocol.DataFrame(body[i:i + 65536]) for i in range(0, len(body), 65536)] + \
        [protocol.Done(fetch.job_id, len(body))]


def run(tmp_path, script, *, max_failures=1) -> tuple[Board, list[ScriptedPeer]]:
    """One peer worker until it has nothing left to do; the connections it opened."""
    probe = http.ProbeResult(url="http://127.0.0.1/f", final_url="http://127.0.0.1/f",
                             size=SIZE, ranges=True, validator=http.Validator('"e"', None))
    remote = http.RemoteFile(probe.url, final_url=probe.final_url)
    part = storage.PartFile.open(tmp_path / "f.part", SIZE)
    sched = Scheduler(SIZE, piece_size=MiB, min_split=MiB, max_failures=max_failures)
    board = Board(sched, part)
    conns: list[ScriptedPeer] = []

    def connect(*args, **kw):
        conns.append(ScriptedPeer(script))
        return conns[-1]

    PeerSource(board, probe, remote, PEER, Options(peer_timeout=0.01), connect=connect).run()
    part.close()
    return board, conns


def test_an_honest_peer_fetches_the_whole_file_on_one_connection(tmp_path):
    board, conns = run(tmp_path, honest)
    assert board.complete() and board.bytes_by_source() == {PEER.key: SIZE}
    assert (tmp_path / "f.part").read_bytes() == DATA
    assert len(conns) == 1
    fetches = [m for m in conns[0].sent if isinstance(m, protocol.Fetch)]
    assert [(f.start, f.end) for f in fetches] == [(0, MiB), (MiB, 2 * MiB)]


@pytest.mark.parametrize("lie,words", [
    (lambda f: honest(f)[:-1] + [protocol.DataFrame(b"x"), protocol.Done(f.job_id, f.end - f.start + 1)],
     "the peer sent more bytes than asked"),
    (lambda f: honest(f)[:-1] + [protocol.Done(f.job_id, f.end - f.start - 1)], "the peer reported"),
    (lambda f: honest(f)[:2] + [protocol.Done(f.job_id, 2 * 65536)], "owed"),
])
def test_a_lying_peer_loses_what_it_wrote_and_is_left_out(tmp_path, lie, words):
    board, conns = run(tmp_path, lie)
    assert board.done_total() == 0 and board.bytes_by_source() == {PEER.key: 0}
    assert words in board.last_failure
    assert board.has_no_work_for(PEER.key)  # excluded after max_failures (1)


def test_a_changed_file_stops_the_whole_download(tmp_path):
    board, _ = run(tmp_path, lambda f: [protocol.Error("changed", "the file changed on the server")])
    assert board.stop.is_set()
    assert "the file changed on the server; nothing written after the change is kept" in str(board.error)


def test_a_silent_peer_is_failed_and_its_connection_dropped(tmp_path):
    board, conns = run(tmp_path, lambda f: [])
    assert "no frame for 0.01 s" in board.last_failure
    assert conns and all(c.closed for c in conns)
    assert board.done_total() == 0


@pytest.mark.parametrize("private", [False, True])
def test_credentials_go_to_a_peer_only_over_a_private_connection(tmp_path, private):
    probe = http.ProbeResult(url="http://user:pw@127.0.0.1/f", final_url="http://user:pw@127.0.0.1/f",
                             size=SIZE, ranges=True, validator=http.Validator('"e"', None))
    remote = http.RemoteFile(probe.url, final_url=probe.final_url)
    board = Board(Scheduler(SIZE, piece_size=SIZE, min_split=SIZE), storage.PartFile.open(
        tmp_path / "f.part", SIZE))
    conn = ScriptedPeer(honest)
    conn.private = private
    PeerSource(board, probe, remote, PEER, Options(), connect=lambda *a, **k: conn).run()
    fetch = next(m for m in conn.sent if isinstance(m, protocol.Fetch))
    assert "pw" not in fetch.url and fetch.url == "http://127.0.0.1/f"
    authorization = [v for n, v in fetch.headers if n.lower() == "authorization"]
    assert bool(authorization) == private
    assert board.complete()


@pytest.mark.parametrize("only_here", [True, False])
def test_an_origin_that_denies_only_the_helper_leaves_it_out_and_one_denying_all_fails_the_piece(
        tmp_path, monkeypatch, only_here):
    monkeypatch.setattr(http.RemoteFile, "refused_only_for_peer", lambda self, *a, **k: only_here)
    denied = [protocol.Error(protocol.FetchCode.DENIED, "403 from the origin")]
    board, conns = run(tmp_path, lambda f: denied, max_failures=3)
    assert board.done_total() == 0 and "denied: 403 from the origin" in board.last_failure
    if only_here:  # left out at the first refusal, with the reason in the summary
        assert board.left_out == {PEER.key: "the origin refuses it what it gives this machine "
                                            "(denied: 403 from the origin)"}
        assert len(conns) == 1
    else:  # an expired URL: an ordinary failure, until max_failures leaves it out
        assert board.left_out == {PEER.key: "denied: 403 from the origin, on 3 of its ranges"}

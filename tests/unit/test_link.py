"""engine.sources.link: how a worker connects to a member and gives up on it, for both kinds
that have one (a helper's ``PeerSource``, a LAN copy's ``LanCopyWorker``). No network: the
connect function is the test's."""

from __future__ import annotations

import random

import pytest

from swift import http, protocol, wire
from swift.engine.board import Board
from swift.engine import lan_copy
from swift.engine.lan_copy import LanCopyWorker, LanPool
from swift.engine.options import LOCAL, MAX_CONNECT_FAILURES, Options
from swift.engine.sharing import LanHolding
from swift.engine.sources import PeerSource, link
from swift.membership import Peer
from swift.planning import RangeSet, Scheduler

MiB = 1 << 20
SIZE = 4 * MiB
PEER = Peer("127.0.0.1", 9, "alpha", 1)
PROBE = http.ProbeResult(url="http://127.0.0.1/f", final_url="http://127.0.0.1/f", size=SIZE,
                         ranges=True, validator=http.Validator('"e"', None))


class Conn:
    def __init__(self) -> None:
        self.closed = False
        self.timeout = None

    def close(self) -> None:
        self.closed = True


class Dialer:
    """A connect function that raises each of ``failures`` in turn, then connects."""

    def __init__(self, *failures: BaseException):
        self.failures = list(failures)
        self.calls: list[dict] = []
        self.made: list[Conn] = []

    def __call__(self, host, port, **kw):
        self.calls.append(dict(kw, host=host, port=port))
        if self.failures:
            raise self.failures.pop(0)
        self.made.append(Conn())
        return self.made[-1]


class Part:
    def pwrite(self, offset: int, block) -> None:
        pass


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(link, "PAUSE_STEP", 0.0)


def board() -> Board:
    return Board(Scheduler(SIZE, piece_size=MiB, min_split=MiB), Part(), clock=lambda: 0.0)


def peer_source(dialer: Dialer) -> PeerSource:
    return PeerSource(board(), PROBE, http.RemoteFile(PROBE.url, final_url=PROBE.final_url), PEER,
                      Options(peer_timeout=9.0), connect=dialer)


def lan_worker(dialer: Dialer) -> LanCopyWorker:
    copy = LanHolding(PEER, RangeSet([(0, SIZE)]), {i: "h" * 64 for i in range(4)}, MiB)
    pool = LanPool(board(), [copy], [LOCAL], label="a" * 64, size=SIZE, probe=PROBE, remote=None,
                   opts=Options(peer_timeout=9.0), notice=lambda text: None, rng=random.Random(1))
    return LanCopyWorker(pool, copy.source, connect=dialer)


@pytest.mark.parametrize("make", [peer_source, lan_worker])
def test_a_connection_made_has_the_peer_timeout_and_closes_with_the_download_or_the_worker(make):
    dialer = Dialer(ConnectionRefusedError("refused"))  # one failure is not yet giving up
    worker = make(dialer)
    assert worker.ready()
    assert len(dialer.calls) == 2 and dialer.calls[0]["timeout"] == link.CONNECT_TIMEOUT
    conn = dialer.made[0]
    assert conn.timeout == 9.0 and worker._failures == 0
    worker.board.close_all()  # a stopped download closes it
    assert conn.closed
    assert worker.ready() and worker._conn is conn  # still the worker's until it drops it
    worker._drop()
    worker.board.close_all()
    assert worker._conn is None and conn.closed


@pytest.mark.parametrize("failure", [ConnectionRefusedError("refused"), TimeoutError("slow"),
                                     wire.ConnectionClosed("closed")])
def test_an_unreachable_helper_is_left_out_after_the_failures_in_a_row(failure):
    dialer = Dialer(*[failure] * MAX_CONNECT_FAILURES)
    worker = peer_source(dialer)
    assert not worker.ready()
    assert len(dialer.calls) == MAX_CONNECT_FAILURES
    assert worker.board.has_no_work_for(PEER.key)
    assert worker.board.left_out[PEER.key].startswith("unreachable: ")


def test_a_helper_that_refuses_the_handshake_is_left_out_at_once():
    dialer = Dialer(wire.AuthError("not a member"))
    worker = peer_source(dialer)
    assert not worker.ready()
    assert len(dialer.calls) == 1
    assert worker.board.left_out[PEER.key] == "refused the handshake: not a member"


@pytest.mark.parametrize("failure", [ConnectionRefusedError("refused"), wire.AuthError("not a member")])
def test_an_unreachable_lan_copy_is_banned_through_its_pool_a_refusal_counting_as_a_failure(failure):
    dialer = Dialer(*[failure] * MAX_CONNECT_FAILURES)
    worker = lan_worker(dialer)
    assert not worker.ready()
    assert len(dialer.calls) == MAX_CONNECT_FAILURES
    assert worker.source in worker.pool._banned  # banned: what it wrote is taken back too
    assert worker.board.left_out[worker.source] == f"unreachable: {failure}"


@pytest.mark.parametrize("make", [peer_source, lan_worker])
def test_a_stop_during_the_pause_ends_the_worker_without_giving_the_member_up(make, monkeypatch):
    monkeypatch.setattr(link, "PAUSE_STEP", 60.0)  # the stop, set before, cuts it short
    dialer = Dialer(ConnectionRefusedError("refused"))
    worker = make(dialer)
    worker.board.stop.set()
    assert not worker.ready()
    assert len(dialer.calls) == 1 and not worker.board.left_out


def test_a_lan_copy_refused_as_busy_is_asked_again_and_never_left_out(monkeypatch):
    monkeypatch.setattr(lan_copy, "BUSY_PAUSE", 0.0)
    busy = protocol.RemoteProtocolError(protocol.FetchCode.BUSY, "too many connections")
    dialer = Dialer(*[busy] * (MAX_CONNECT_FAILURES + 1))
    worker = lan_worker(dialer)
    assert worker.ready()
    assert len(dialer.calls) == MAX_CONNECT_FAILURES + 2 and not worker.board.left_out


def test_a_helper_refusing_as_busy_counts_it_as_a_failure():
    busy = protocol.RemoteProtocolError(protocol.FetchCode.BUSY, "too many connections")
    worker = peer_source(Dialer(*[busy] * MAX_CONNECT_FAILURES))
    assert not worker.ready()
    assert worker.board.left_out[PEER.key].startswith("unreachable: ")

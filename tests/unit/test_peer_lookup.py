"""membership.PeerLookup: discovery asked beside the probe, answered once."""

from __future__ import annotations

import threading
import time

from swift import protocol
from swift.membership import DiscoveryError, Peer, PeerLookup


class FakeClient:
    """Answers ``list_peers`` with ``answer`` (a list, or an exception to raise)
    once ``release`` is set."""

    address = "127.0.0.1:5000"
    timeout = 5.0

    def __init__(self, answer, release: threading.Event | None = None):
        self.answer = answer
        self.release = release
        self.calls = 0
        self.asked = threading.Event()

    def list_peers(self):
        self.calls += 1
        self.asked.set()
        if self.release is not None:
            assert self.release.wait(10)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def test_the_answer_comes_back_once_and_says_nothing_when_there_are_peers():
    notes: list[str] = []
    client = FakeClient([protocol.PeerInfo("127.0.0.2", 6000, "attic", 4, 0.5)])
    lookup = PeerLookup(client, notes.append)
    assert lookup.peers() == [Peer("127.0.0.2", 6000, "attic", 4)]
    assert lookup.peers() == [Peer("127.0.0.2", 6000, "attic", 4)]
    lookup.close()
    assert client.calls == 1 and notes == []


def test_no_peers_and_an_unreachable_discovery_are_said_once():
    notes: list[str] = []
    lookup = PeerLookup(FakeClient([]), notes.append)
    assert lookup.peers() == [] and lookup.peers() == []
    assert notes == ["no peers known: downloading alone with several connections"]
    notes.clear()
    refused = DiscoveryError("discovery at 127.0.0.1:5000 is unreachable: [Errno 111] Connection refused")
    lookup = PeerLookup(FakeClient(refused), notes.append)
    assert lookup.peers() == []
    assert notes == [f"{refused}: downloading alone with several connections"]


def test_the_query_runs_while_the_caller_works():
    release = threading.Event()
    client = FakeClient([], release)
    lookup = PeerLookup(client, lambda text: None)
    # the query has started without waiting for peers() (the probe runs meanwhile)
    assert client.asked.wait(5), "the query never started"
    release.set()
    assert lookup.peers() == []


def test_a_stop_ends_the_wait_without_a_word():
    notes: list[str] = []
    release = threading.Event()
    lookup = PeerLookup(FakeClient([], release), notes.append)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert lookup.peers(stop) == []
    assert time.monotonic() - started < 1.0 and notes == []
    release.set()
    lookup.close()


def test_a_bug_in_the_query_is_a_reason_not_a_hang():
    notes: list[str] = []
    lookup = PeerLookup(FakeClient(ValueError("boom")), notes.append)
    assert lookup.peers() == []
    assert notes == ["asking discovery at 127.0.0.1:5000 failed: boom: downloading alone with several connections"]

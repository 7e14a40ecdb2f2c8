"""membership.Membership looks for its discovery again (by mDNS) when it stops answering:
fake discoveries, a fake browse and a fake clock; no sockets."""

from __future__ import annotations

from swift import protocol
from swift.addresses import format_hostport
from swift.membership import REDISCOVER_AFTER, REDISCOVER_EVERY, DiscoveryError, Membership


class FakeDiscoveries:
    """A client whose requests succeed only while its address is in ``alive``."""

    timeout = 5.0

    def __init__(self, host: str, port: int, alive: set[tuple[str, int]]):
        self.host, self.port = host, port
        self.alive = alive
        self.asked: list[tuple[str, int]] = []

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)

    def request(self, msg):
        self.asked.append((self.host, self.port))
        if (self.host, self.port) not in self.alive:
            raise DiscoveryError(f"discovery at {self.address} is unreachable: refused")
        return protocol.Ok(9.0)

    def list_peers(self):
        return self.request(protocol.ListPeers()) and []


class FakeBrowse:
    def __init__(self, answer):
        self.answer = answer
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def membership(client, rediscover, now, locate=None):
    return Membership(client, host="127.0.0.1", port=6000, name="n", slots=2,
                      rediscover=rediscover, locate=locate, clock=lambda: now[0])


def test_a_silent_discovery_is_looked_for_again_after_two_failed_beats_and_followed():
    alive = {("10.0.0.9", 5000)}
    client = FakeDiscoveries("127.0.0.1", 5000, alive)
    browse = FakeBrowse(("10.0.0.9", 5000))
    now = [100.0]
    m = membership(client, browse, now, locate={"10.0.0.9": "10.0.0.5"}.get)
    for _ in range(REDISCOVER_AFTER - 1):
        m._beat()
    assert browse.calls == 0 and not m.registered
    m._beat()
    assert browse.calls == 1
    assert (client.host, client.port) == ("10.0.0.9", 5000)
    assert m.registered  # registered with the new one at once, not a heartbeat later
    assert m.me.key == "10.0.0.5:6000"  # by the address that faces it, no longer loopback


def test_looks_are_spaced_and_a_working_discovery_is_never_replaced():
    client = FakeDiscoveries("127.0.0.1", 5000, set())
    browse = FakeBrowse(None)  # nothing of the pool answers
    now = [100.0]
    m = membership(client, browse, now)
    for _ in range(REDISCOVER_AFTER + 3):
        m._beat()
    assert browse.calls == 1
    now[0] += REDISCOVER_EVERY
    m._beat()
    assert browse.calls == 2
    client.alive.add(("127.0.0.1", 5000))  # back: beats succeed and nobody browses
    now[0] += 10 * REDISCOVER_EVERY
    for _ in range(5):
        m._beat()
    assert browse.calls == 2 and m.registered


def test_without_rediscover_or_when_it_fails_the_node_stays_where_it_was():
    client = FakeDiscoveries("127.0.0.1", 5000, set())
    now = [0.0]
    m = membership(client, None, now)
    for _ in range(5):
        m._beat()
    broken = FakeBrowse(RuntimeError("library bug"))
    m2 = membership(FakeDiscoveries("127.0.0.1", 5000, set()), broken, now)
    for _ in range(REDISCOVER_AFTER):
        m2._beat()
    assert broken.calls == 1 and (m2.client.host, m2.client.port) == ("127.0.0.1", 5000)
    assert (client.host, client.port) == ("127.0.0.1", 5000)

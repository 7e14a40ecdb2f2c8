"""The discovery registry: soft state with leases, on a fake clock."""

from swift.discovery_server import Registry


def keys(reg, now):
    return [(p.host, p.port) for p in reg.live(now)]


def test_register_renew_expire():
    reg = Registry(lease=9)
    reg.renew("127.0.0.1", 6001, "a", 4, now=0)
    reg.renew("127.0.0.1", 6002, "b", 2, now=1)
    assert keys(reg, 5) == [("127.0.0.1", 6001), ("127.0.0.1", 6002)]
    reg.renew("127.0.0.1", 6001, "a", 4, now=8)  # heartbeat renews
    assert keys(reg, 9.5) == [("127.0.0.1", 6001), ("127.0.0.1", 6002)]
    assert keys(reg, 10.0) == [("127.0.0.1", 6001)]
    assert keys(reg, 17.0) == []


def test_unknown_heartbeat_registers_and_remove():
    reg = Registry(lease=3)
    assert reg.renew("::1", 7000, "v6", 1, now=100)
    assert keys(reg, 101) == [("::1", 7000)]
    assert reg.remove("::1", 7000)
    assert not reg.remove("::1", 7000)
    assert keys(reg, 101) == []


def test_renew_updates_fields_and_age():
    reg = Registry(lease=9)
    reg.renew("127.0.0.1", 6001, "old", 1, now=0)
    reg.renew("127.0.0.1", 6001, "new", 8, now=2)
    (peer,) = reg.live(3)
    assert (peer.name, peer.slots, peer.age) == ("new", 8, 3)


def test_bounded():
    reg = Registry(lease=9, max_nodes=2)
    assert reg.renew("127.0.0.1", 1, "a", 1, now=0)
    assert reg.renew("127.0.0.1", 2, "b", 1, now=0)
    assert not reg.renew("127.0.0.1", 3, "c", 1, now=0)
    assert reg.renew("127.0.0.1", 1, "a", 1, now=1)  # known nodes still renew
    assert reg.renew("127.0.0.1", 3, "c", 1, now=9.5)  # room again once b expired

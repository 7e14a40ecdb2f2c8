"""The address policy of swift.sessions, pure: which addresses a node may fetch from, and what
a refusal says.
"""

from __future__ import annotations

import ipaddress

import pytest
import requests
from hypothesis import given, strategies as st

from swift.sessions import BlockedAddress, is_public_address, make_session
from tests.helpers import fake_resolver


@pytest.mark.parametrize("ip", [
    "127.0.0.1", "::1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
    "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:7f00:1::", "192.0.2.1",
    "::127.0.0.1", "fec0::1", "fd12:3456::1", "ff0e::1", "2001:db8::1", "198.18.0.1",
    "240.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:a9fe:a9fe::", "fe80::1%lo",
    "not an address", "", "127.1",
])
def test_non_public_addresses(ip):
    assert is_public_address(ip) is False


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"])
def test_public_addresses(ip):
    assert is_public_address(ip) is True


@given(st.ip_addresses(v=4))
def test_ipv4_in_ipv6_forms_follow_the_ipv4_address(v4):
    packed = v4.packed
    forms = [
        f"::ffff:{v4}",  # IPv4-mapped
        str(ipaddress.IPv6Address(bytes.fromhex("0064ff9b") + bytes(8) + packed)),  # NAT64
        str(ipaddress.IPv6Address(b"\x20\x02" + packed + bytes(10))),  # 6to4
    ]
    expected = is_public_address(str(v4))
    assert [is_public_address(form) for form in forms] == [expected] * 3


@given(st.text(max_size=60))
def test_policy_never_raises(text):
    assert is_public_address(text) in (True, False)


def test_refusal_message_names_host_and_address():
    assert str(BlockedAddress("10.1.2.3", "10.1.2.3")) == (
        "refusing to fetch from 10.1.2.3 (private address); "
        "start the node with --allow-private to allow it")
    exc = BlockedAddress("intranet.example", "::ffff:127.0.0.1")
    assert "intranet.example at ::ffff:127.0.0.1 (IPv4-mapped form of a loopback address)" in str(exc)
    assert isinstance(exc, requests.exceptions.ConnectionError)
    assert (exc.host, exc.address) == ("intranet.example", "::ffff:127.0.0.1")


@pytest.mark.parametrize("bad", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/"])
@pytest.mark.parametrize("allow_private", [False, True])
def test_other_schemes_are_refused_clearly(bad, allow_private):
    scheme = bad.split(":")[0]
    with make_session(allow_private=allow_private) as s:
        with pytest.raises(requests.exceptions.InvalidSchema,
                           match=rf"cannot fetch .*{scheme}: URLs are not supported, only http and https"):
            s.get(bad, timeout=5)


def test_unresolvable_name_is_a_connection_error_not_a_refusal(monkeypatch):
    fake_resolver(monkeypatch, {"nowhere.test": lambda: None})
    with make_session(allow_private=False) as s:
        with pytest.raises(requests.exceptions.ConnectionError) as info:
            s.get("http://nowhere.test/", timeout=5)
    assert not isinstance(info.value, BlockedAddress)

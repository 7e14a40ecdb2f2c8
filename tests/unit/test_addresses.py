"""swift.addresses: HOST:PORT written one way (IPv6 in brackets) and read strictly."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, strategies as st

from swift.addresses import format_hostport, parse_host, parse_hostport, parse_port


@pytest.mark.parametrize("host,port,text", [
    ("127.0.0.1", 5000, "127.0.0.1:5000"), ("::1", 6000, "[::1]:6000"),
    ("fe80::1%eth0", 7, "[fe80::1%eth0]:7"), ("example.org", 80, "example.org:80"),
])
def test_format_hostport_brackets_ipv6_only(host, port, text):
    assert format_hostport(host, port) == text


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:5000", ("127.0.0.1", 5000)), ("node-a", ("node-a", 5000)),
    ("node-a:7000", ("node-a", 7000)), ("[::1]:7000", ("::1", 7000)), ("[::1]", ("::1", 5000)),
    ("::1", ("::1", 5000)), ("  10.0.0.2:1 ", ("10.0.0.2", 1)), ("[fe80::1%eth0]:9", ("fe80::1%eth0", 9)),
])
def test_parse_hostport_accepts_what_users_type(text, expected):
    assert parse_hostport(text, 5000) == expected


@pytest.mark.parametrize("text,why", [
    ("127.0.0.1:abc", "not a port"), ("127.0.0.1:0", "out of range"), ("h:65536", "out of range"),
    ("h:-1", "not a port"), ("http://10.0.0.1:5000", "is a URL.*'10.0.0.1:5000'"),
    ("https://h/x", "is a URL"), ("h:5000/x", "path"), ("[::1", "missing"), ("[1.2.3.4]:5", "IPv6 addresses only"),
    ("[::1]x", "unexpected"), (":5000", "no host"), ("", "no host"), ("a b:5", "not a host"),
    ("[zz::1]:5", "not an IPv6"), ("h:", "not a port"),
])
def test_parse_hostport_refuses_with_a_reason(text, why):
    with pytest.raises(ValueError, match=why):
        parse_hostport(text, 5000)


def test_no_default_port_means_the_port_is_required():
    with pytest.raises(ValueError, match="no port"):
        parse_hostport("node-a", None)


def test_parse_port_allows_zero_for_listeners_only():
    assert parse_port("0") == 0
    with pytest.raises(ValueError):
        parse_port("0", allow_zero=False)
    for bad in ("-1", "99999", "x", "", "１２"):
        with pytest.raises(ValueError):
            parse_port(bad)


def test_parse_host_takes_no_port():
    assert parse_host("0.0.0.0") == "0.0.0.0"
    assert parse_host("::") == "::"
    assert parse_host("[::1]") == "::1"
    for bad in ("h:5", "http://h", ""):
        with pytest.raises(ValueError):
            parse_host(bad)


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.integers(1, 65535))
def test_what_is_formatted_parses_back(ip, port):
    host = str(ip)
    assert parse_hostport(format_hostport(host, port), None) == (host, port)


@given(st.text(max_size=30))
def test_parse_hostport_raises_only_value_error(text):
    try:
        host, port = parse_hostport(text, 5000)
    except ValueError:
        return
    assert 0 < port < 65536 and host
    if ":" in host:
        ipaddress.IPv6Address(host)

"""Security promises that need no process: the address policy table and safe file names from
any input.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings, strategies as st

from swift import names, sessions


@pytest.mark.parametrize("ip,public", [
    # IPv4
    ("127.0.0.1", False), ("127.255.255.254", False), ("10.0.0.1", False), ("10.255.255.255", False),
    ("172.16.0.1", False), ("172.31.255.255", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("100.127.255.254", False),
    ("0.0.0.0", False), ("0.1.2.3", False), ("224.0.0.1", False), ("239.255.255.250", False),
    ("240.0.0.1", False), ("255.255.255.255", False), ("192.0.2.1", False), ("198.51.100.7", False),
    ("203.0.113.9", False), ("198.18.0.1", False), ("192.0.0.8", False), ("192.88.99.1", False),
    ("8.8.8.8", True), ("1.1.1.1", True), ("172.32.0.1", True), ("100.128.0.1", True),
    ("11.0.0.1", True), ("169.253.255.255", True),
    # IPv6
    ("::1", False), ("::", False), ("fe80::1", False), ("fe80::1%lo", False), ("fc00::1", False),
    ("fd12:3456::1", False), ("ff02::1", False), ("fec0::1", False), ("2001:db8::1", False),
    ("100::1", False), ("2606:4700:4700::1111", True), ("2001:4860:4860::8888", True),
    # IPv4-mapped, -translated and -compatible
    ("::ffff:127.0.0.1", False), ("::ffff:7f00:1", False), ("::ffff:10.1.2.3", False),
    ("::ffff:169.254.169.254", False), ("::ffff:0:10.0.0.1", False), ("::ffff:0:127.0.0.1", False),
    ("::127.0.0.1", False), ("::10.0.0.1", False), ("::169.254.169.254", False),
    ("::ffff:8.8.8.8", True),
    # 6to4 and NAT64
    ("2002:7f00:1::", False), ("2002:a00:1::1", False), ("2002:a9fe:a9fe::1", False),
    ("2002:c0a8:101::1", False), ("64:ff9b::7f00:1", False), ("64:ff9b::a00:1", False),
    ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::10.0.0.1", False), ("64:ff9b:1::a00:1", False),
    ("64:ff9b::808:808", True),
    # not addresses at all
    ("", False), ("localhost", False), ("[::1]", False), ("127.1", False), ("0x7f000001", False),
    ("2130706433", False), ("not an ip", False),
])
def test_is_public_address(ip, public):
    assert sessions.is_public_address(ip) is public


def assert_safe_name(name: str) -> None:
    assert name and name not in (".", "..")
    assert not any(c in name for c in "/\\\x00")
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name), repr(name)
    assert "\u202e" not in name
    assert len(name.encode("utf-8")) <= 255
    assert not name.startswith((".", "-", " ")) and not name.endswith((".", " "))
    assert not name.lower().endswith(".part.swift")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.lists(st.sampled_from(["..", ".", "/", "\\", "\x00", "\n", "\u202e", "\u2215",
                                           "CON", "-", " ", "é", "a", ".part.swift", "x" * 100]),
                          max_size=12).map("".join)))
def test_safe_name_property(raw):
    name = names.safe_name(raw)
    assert_safe_name(name)
    joined = (Path("/downloads") / name)
    assert joined.parent == Path("/downloads") and os.path.normpath(joined) == str(joined)


LATIN1 = st.text(st.characters(max_codepoint=255, blacklist_characters="\r\n\x00"), max_size=120)


@settings(max_examples=600, deadline=None)
@given(st.one_of(
    LATIN1,
    LATIN1.map(lambda t: f'attachment; filename="{t}"'),
    LATIN1.map(lambda t: f"attachment; filename={t}"),
    st.text(max_size=120).map(lambda t: "attachment; filename*=UTF-8''" + quote(t, safe="")),
    st.tuples(LATIN1, st.text(max_size=60)).map(
        lambda p: f"inline; filename=\"{p[0]}\"; filename*=utf-8'en'{quote(p[1], safe='/')}"),
))
def test_any_content_disposition_gives_a_safe_name(header):
    name = names.choose_name("http://h/path/file.bin", None, header)
    assert_safe_name(name)

"""swift.rpc.policy: which requests reach the RPC (origin, host, content type, size)."""

from __future__ import annotations

from swift.rpc.policy import MAX_BODY, check_request, is_loopback_name, origin_allowed


def post(**headers) -> dict:
    base = {"host": "127.0.0.1:6800", "content-type": "application/json", "content-length": "10"}
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    return {k: v for k, v in base.items() if v is not None}


def refused(method: str, headers: dict, **kw):
    got = check_request(method, headers, listen_all=kw.pop("listen_all", False), **kw)
    return None if got is None else got.status


def test_a_same_origin_json_post_is_served():
    assert refused("POST", post(origin="http://127.0.0.1:6800")) is None
    assert refused("POST", post(origin=None)) is None  # a script (aria2p, curl): no Origin


def test_a_post_from_another_origin_is_refused():
    for origin in ("http://evil.example", "http://127.0.0.1:8000", "https://127.0.0.1:6800", "null",
                   "not a url"):
        assert refused("POST", post(origin=origin)) == 403, origin


def test_an_allowed_front_end_origin_is_served():
    allowed = {"http://127.0.0.1:8080", "chrome-extension://abcdef"}
    assert refused("POST", post(origin="http://127.0.0.1:8080", sec_fetch_site="same-site"),
                   allowed_origins=allowed) is None
    assert refused("POST", post(origin="chrome-extension://abcdef"), allowed_origins=allowed) is None


def test_cross_site_fetch_metadata_is_refused_even_without_origin():
    assert refused("POST", post(sec_fetch_site="cross-site")) == 403
    assert refused("GET", {"host": "localhost:6800", "sec-fetch-site": "same-site"}) == 403
    assert refused("GET", {"host": "localhost:6800", "sec-fetch-site": "none"}) is None


def test_content_types_a_form_can_send_are_refused():
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        assert refused("POST", post(content_type=kind)) == 415, kind
    for kind in ("application/json", "application/json; charset=utf-8", "application/json-rpc", None):
        assert refused("POST", post(content_type=kind)) is None, kind


def test_bodies_are_bounded_and_must_say_their_length():
    assert refused("POST", post(content_length=str(MAX_BODY + 1))) == 413
    assert refused("POST", post(content_length=None)) == 411
    assert refused("POST", post(content_length="-1")) == 411
    assert refused("POST", post(transfer_encoding="chunked")) == 411


def test_on_loopback_only_loopback_host_names_are_answered():
    for host in ("127.0.0.1:6800", "localhost:6800", "[::1]:6800", "127.8.9.10", "LOCALHOST"):
        assert refused("GET", {"host": host}) is None, host
    for host in ("evil.example:6800", "192.168.1.5:6800", "", "127.0.0.1.evil.example"):
        assert refused("GET", {"host": host}) in (400, 403), host
    assert refused("GET", {"host": "node.lan:6800"}, listen_all=True) is None


def test_a_rebound_name_is_refused_though_origin_and_host_agree():
    assert refused("POST", post(host="rebind.example:6800", origin="http://rebind.example:6800")) == 403


def test_origins_compare_without_default_ports_and_case():
    assert origin_allowed("HTTP://LocalHost:80", "localhost")
    assert origin_allowed("http://[::1]:6800", "[::1]:6800")
    assert not origin_allowed("http://localhost:6801", "localhost:6800")
    assert is_loopback_name("[::1]") and not is_loopback_name("10.0.0.1")

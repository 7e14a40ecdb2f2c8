"""Tests for swift.sessions: the address policy, source addresses, proxies.

Every server here is on loopback. To have an address the guarded session
*may* reach, tests patch ``sessions.is_public_address`` so that 127.0.0.2
counts as public and every other address does not. Host names other than
"localhost" and IP literals never reach a real resolver: ``fake_resolver``
answers them or fails them.
"""

from __future__ import annotations

import errno
import http.client
import http.server
import ipaddress
import socket
import threading
import time
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from swift import sessions
from swift.sessions import BlockedAddress, make_session
from tests.helpers import fake_resolver

BODY = bytes(range(256)) * 64  # 16 KiB
ALLOWED = "127.0.0.2"  # the one loopback address the patched policy calls public
SOURCE = "127.0.0.5"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# -- test servers ---------------------------------------------------------------------------------
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type, family: int = socket.AF_INET):
        self.address_family = family
        self.accepted: list[tuple[str, int]] = []  # client address of every TCP connection
        self.requests: list[tuple[str, str]] = []  # (client ip, request target) per request
        self.lock = threading.Lock()
        super().__init__(address, handler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def verify_request(self, request, client_address) -> bool:  # type: ignore[override]
        with self.lock:
            self.accepted.append(client_address[:2])
        return True

    def record(self, client: str, target: str) -> None:
        with self.lock:
            self.requests.append((client, target))

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class OriginHandler(http.server.BaseHTTPRequestHandler):
    """/data: BODY; /redirect?to=URL: 302 to URL. HTTP/1.1 with keep-alive."""

    protocol_version = "HTTP/1.1"
    timeout = 2  # an idle keep-alive connection ends, so server_close() cannot hang

    def do_GET(self) -> None:
        self.server.record(self.client_address[0], self.path)  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        if parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args) -> None:
        pass


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    """A forwarding proxy for absolute-URI GETs. It only ever connects to loopback:
    IP literals in 127/8 or ::1, or names in its own table; anything else gets 502."""

    protocol_version = "HTTP/1.1"
    timeout = 2

    def do_GET(self) -> None:
        self.server.record(self.client_address[0], self.path)  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        host = parts.hostname or ""
        target = self.server.names.get(host, host)  # type: ignore[attr-defined]
        try:
            loopback = ipaddress.ip_address(target).is_loopback
        except ValueError:
            loopback = False
        if parts.scheme != "http" or not loopback:
            self._reply(502, {}, b"this test proxy only reaches loopback")
            return
        upstream = http.client.HTTPConnection(target, parts.port or 80, timeout=5)
        try:
            upstream.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                             headers={"Host": parts.netloc})
            resp = upstream.getresponse()
            body = resp.read()
            headers = {k: v for k, v in resp.getheaders()
                       if k.lower() in ("location", "content-type")}
            self._reply(resp.status, headers, body)
        finally:
            upstream.close()

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[Callable[..., _Server]]:
    started: list[_Server] = []

    def start(host: str = "127.0.0.1", port: int = 0, handler: type = OriginHandler) -> _Server:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = _Server((host, port), handler, family)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def origin(servers) -> _Server:
    return servers("127.0.0.1")


@pytest.fixture
def allowed_origin(servers) -> _Server:
    return servers(ALLOWED)


@pytest.fixture
def twin_origins(servers) -> tuple[_Server, _Server]:
    """Origins on the same port at 127.0.0.2 (allowed) and 127.0.0.1 (refused)."""
    for _ in range(20):
        allowed = servers(ALLOWED)
        try:
            refused = servers("127.0.0.1", allowed.port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return allowed, refused
    pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
def proxy(servers) -> _Server:
    server = servers("127.0.0.1", handler=ProxyHandler)
    server.names = {}  # type: ignore[attr-defined]
    return server


@pytest.fixture
def origin_v6(servers) -> _Server:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        return servers("::1")
    except OSError:
        pytest.skip("cannot bind ::1")


@pytest.fixture
def policy(monkeypatch) -> None:
    """127.0.0.2 counts as public, every other address as not."""
    monkeypatch.setattr(sessions, "is_public_address", lambda ip: ip == ALLOWED)


@pytest.fixture
def use_proxy(monkeypatch, proxy):
    """HTTP_PROXY and HTTPS_PROXY point at the test proxy; NO_PROXY cleared."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    url = f"http://127.0.0.1:{proxy.port}"
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("HTTPS_PROXY", url)
    return proxy


def sequence(*ips: str) -> Callable[[], str]:
    """Answers ips in turn, then the last one forever."""
    it = iter(ips)
    last = [ips[-1]]

    def answer() -> str:
        return next(it, last[0])

    return answer


def url(server: _Server, path: str = "/data", host: str | None = None) -> str:
    host = host or server.server_address[0]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}{path}"


# -- guarded sessions, direct connections ---------------------------------------------------------
def test_guarded_session_refuses_loopback_literal(origin):
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match=r"refusing to fetch from 127\.0\.0\.1 "
                                                 r"\(loopback address\).*--allow-private") as info:
            s.get(url(origin), timeout=5)
    assert info.value.address == "127.0.0.1"
    assert info.value.request is not None
    assert origin.accepted == []  # refused before connecting: not even a TCP handshake


def test_guarded_session_refuses_ipv6_loopback(origin_v6):
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match=r"refusing to fetch from ::1 \(loopback"):
            s.get(url(origin_v6), timeout=5)
    with make_session(allow_private=True) as s:
        assert s.get(url(origin_v6), timeout=5).content == BODY
    assert len(origin_v6.accepted) == 1


def test_guarded_session_refuses_a_name_resolving_to_loopback(origin):
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match=r"refusing to fetch from localhost at "):
            s.get(url(origin, host="localhost"), timeout=5)
    assert origin.accepted == []


def test_guarded_session_refuses_https_to_loopback_before_connecting(origin):
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress):
            s.get(f"https://127.0.0.1:{origin.port}/data", timeout=5)
    assert origin.accepted == []


def test_guarded_session_fetches_an_allowed_address_like_plain_requests(policy, allowed_origin):
    """Streaming, keep-alive reuse and redirects all work through the check."""
    target = url(allowed_origin)
    with make_session(allow_private=False) as s:
        with s.get(target, stream=True, timeout=5) as resp:
            assert resp.status_code == 200
            assert b"".join(resp.iter_content(1000)) == BODY
        resp = s.get(url(allowed_origin, f"/redirect?to={target}"), timeout=5)
        assert resp.status_code == 200 and resp.content == BODY
        assert [r.status_code for r in resp.history] == [302]
    assert len(allowed_origin.requests) == 3
    assert len(allowed_origin.accepted) == 1  # one kept-alive connection served all three


def test_timeouts_still_apply(policy):
    """A server that accepts and never answers: the read timeout fires as usual."""
    with socket.create_server((ALLOWED, 0)) as silent, make_session(allow_private=False) as s:
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            s.get(f"http://{ALLOWED}:{silent.getsockname()[1]}/", timeout=(5, 0.3))
        assert time.monotonic() - started < 4


def test_redirect_from_an_allowed_origin_to_loopback_is_refused(policy, allowed_origin, origin):
    hop = url(allowed_origin, f"/redirect?to={url(origin)}")
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match=r"refusing to fetch from 127\.0\.0\.1 "):
            s.get(hop, timeout=5)
    assert len(allowed_origin.requests) == 1 and origin.accepted == []


def test_redirect_to_a_name_resolving_to_loopback_is_refused(policy, allowed_origin, origin):
    hop = url(allowed_origin, f"/redirect?to={url(origin, host='localhost')}")
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match="localhost"):
            s.get(hop, timeout=5)
    assert len(allowed_origin.requests) == 1 and origin.accepted == []


def test_redirect_to_a_file_url_is_refused(allowed_origin):
    with make_session(allow_private=True) as s:
        with pytest.raises(requests.exceptions.InvalidSchema, match="file: URLs are not supported"):
            s.get(url(allowed_origin, "/redirect?to=file:///etc/passwd"), timeout=5)


def test_connect_time_check_catches_a_changed_answer(monkeypatch, policy, twin_origins):
    """DNS rebinding at the last moment: the name first resolves to an allowed address,
    then every later look-up (whatever is asked) answers a refused one. The address
    actually connected to is checked, and nothing is sent to it."""
    allowed, refused = twin_origins
    answers = sequence(ALLOWED, "127.0.0.1")
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        ip = answers()  # first call: the allowed address; every call after it: loopback
        return real(ip, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match=r"rebind\.test at 127\.0\.0\.1") as info:
            s.get(f"http://rebind.test:{allowed.port}/data", timeout=5)
    assert info.value.address == "127.0.0.1"
    assert refused.requests == [] and allowed.requests == []


def test_each_new_connection_checks_the_name_again(monkeypatch, policy, twin_origins):
    """The name resolves to an allowed address for the first connection and to a refused
    one for the next: the second is refused, and no packet reaches the refused address."""
    allowed, refused = twin_origins
    asked = fake_resolver(monkeypatch, {"rebind.test": sequence(ALLOWED, "127.0.0.1")})
    target = f"http://rebind.test:{allowed.port}/data"
    with make_session(allow_private=False) as s:
        assert s.get(target, timeout=5).content == BODY
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match=r"rebind\.test at 127\.0\.0\.1"):
            s.get(target, timeout=5)
    assert asked.count("rebind.test") == 2  # one look-up per connection, no second one to race
    assert len(allowed.requests) == 1
    assert refused.accepted == []


def test_a_name_with_any_non_public_answer_is_refused(monkeypatch, policy, allowed_origin):
    real = socket.getaddrinfo

    def both(host, port, *args, **kwargs):
        if host == "mixed.test":
            return real(ALLOWED, port, *args, **kwargs) + real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", both)
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match="mixed.test at 127.0.0.1"):
            s.get(f"http://mixed.test:{allowed_origin.port}/data", timeout=5)
    assert allowed_origin.accepted == []


# -- allow_private and source addresses -----------------------------------------------------------
def test_allow_private_fetches_loopback(origin):
    with make_session(allow_private=True) as s:
        assert s.get(url(origin), timeout=5).content == BODY
        assert s.get(url(origin, host="localhost"), timeout=5).content == BODY


def test_source_address_binds_direct_connections(origin):
    with make_session(source_address=SOURCE) as s:
        assert s.get(url(origin), timeout=5).content == BODY
    assert origin.requests == [(SOURCE, "/data")]


def test_source_address_binds_guarded_connections(policy, allowed_origin):
    with make_session(source_address=SOURCE, allow_private=False) as s:
        assert s.get(url(allowed_origin), timeout=5).content == BODY
    assert allowed_origin.requests == [(SOURCE, "/data")]


def test_source_address_binds_https_connections(origin):
    """The plain-HTTP origin fails the TLS handshake, but it saw where it came from."""
    with make_session(source_address=SOURCE) as s:
        with pytest.raises(requests.exceptions.SSLError):
            s.get(f"https://127.0.0.1:{origin.port}/", timeout=5)
    assert wait_for(lambda: bool(origin.accepted))
    assert [client[0] for client in origin.accepted] == [SOURCE]


# -- behind a proxy -------------------------------------------------------------------------------
def test_proxy_address_is_no_reason_to_refuse(policy, use_proxy, allowed_origin):
    """The proxy is on 127.0.0.1, which the policy refuses; the target is allowed."""
    with make_session(allow_private=False) as s:
        assert s.get(url(allowed_origin), timeout=5).content == BODY
    assert use_proxy.requests == [("127.0.0.1", url(allowed_origin))]
    assert [path for _, path in allowed_origin.requests] == ["/data"]


def test_proxied_target_resolving_to_loopback_is_refused(use_proxy, origin):
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match="refusing to fetch from localhost at "):
            s.get(url(origin, host="localhost"), timeout=5)
        with pytest.raises(BlockedAddress, match=r"from 127\.0\.0\.1 \(loopback"):
            s.get(url(origin), timeout=5)
        with pytest.raises(BlockedAddress, match=r"from 10\.0\.0\.1 \(private address\)"):
            s.get("http://10.0.0.1/secret", timeout=5)  # refused before any connection
        with pytest.raises(BlockedAddress, match="localhost"):
            s.get(f"https://localhost:{origin.port}/", timeout=5)  # no CONNECT either
    assert use_proxy.accepted == [] and origin.accepted == []


def test_proxied_target_unknown_locally_is_left_to_the_proxy(monkeypatch, use_proxy, origin):
    asked = fake_resolver(monkeypatch, {"far.test": lambda: None})
    use_proxy.names["far.test"] = "127.0.0.1"
    with make_session(allow_private=False) as s:
        assert s.get(f"http://far.test:{origin.port}/data", timeout=5).content == BODY
    assert "far.test" in asked
    assert use_proxy.requests == [("127.0.0.1", f"http://far.test:{origin.port}/data")]
    assert origin.requests == [("127.0.0.1", "/data")]


def test_proxied_redirect_hops_are_checked(policy, use_proxy, allowed_origin, origin):
    hop = url(allowed_origin, f"/redirect?to={url(origin, host='localhost')}")
    with make_session(allow_private=False) as s:
        with pytest.raises(BlockedAddress, match="localhost"):
            s.get(hop, timeout=5)
    assert use_proxy.requests == [("127.0.0.1", hop)]  # the refused hop never reached it
    assert origin.accepted == []


def test_proxy_sees_the_source_address(monkeypatch, use_proxy, origin):
    fake_resolver(monkeypatch, {"far.test": lambda: None})
    use_proxy.names["far.test"] = "127.0.0.1"
    for allow_private in (True, False):
        with make_session(source_address=SOURCE, allow_private=allow_private) as s:
            assert s.get(f"http://far.test:{origin.port}/data", timeout=5).content == BODY
    assert [client for client, _ in use_proxy.requests] == [SOURCE, SOURCE]


def test_no_proxy_is_respected(monkeypatch, policy, use_proxy, allowed_origin, origin):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,near.test")
    fake_resolver(monkeypatch, {"near.test": lambda: ALLOWED})
    with make_session(allow_private=True) as s:
        assert s.get(url(origin), timeout=5).content == BODY  # direct
        assert s.get(url(allowed_origin), timeout=5).content == BODY  # proxied
    assert use_proxy.requests == [("127.0.0.1", url(allowed_origin))]
    assert origin.requests == [("127.0.0.1", "/data")]
    with make_session(allow_private=False) as s:
        # direct, so the connect-time check applies: allowed for near.test ...
        assert s.get(f"http://near.test:{allowed_origin.port}/data", timeout=5).content == BODY
        # ... and refuses the loopback address itself, rather than the proxy's check
        with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):
            s.get(url(origin), timeout=5)
    assert len(use_proxy.requests) == 1 and len(origin.requests) == 1

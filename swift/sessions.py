"""HTTP sessions for swift: which local address to leave from, which remote ones to reach.

A node fetches URLs on behalf of other machines. Without a policy it would
be an open proxy into its owner's network (a router's admin page, a cloud
metadata service, a printer). So the sessions that serve peers' fetch jobs
refuse any connection whose *actual* remote address is not public:

- the check runs inside urllib3 right after ``connect()``, on
  ``getpeername()``: a DNS answer that changes between a check and the use
  (DNS rebinding) cannot get around it, and every redirect hop, which opens
  its own connection, is checked too;
- behind an HTTP proxy configured by the node's owner (``HTTP_PROXY`` etc.),
  the node connects only to the proxy, whose address (often private on a
  campus) is no reason to refuse; instead the target host name is checked
  before the request: if it resolves locally, every address must be public;
  a name that does not resolve locally is left to the proxy.

The requester's own fetches for its own user are not restricted
(``allow_private=True``). ``source_address`` binds every outgoing
connection, to the origin or to a proxy, to one local address: a machine
with two uplinks runs one node per uplink.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
    "fc00::/7", "fec0::/10", "fe80::/10", "ff00::/8", "2001:db8::/32", "100::/64",
)]


class BlockedAddress(requests.exceptions.ConnectionError):
    """A fetch job tried to reach an address this node does not fetch from for peers."""


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    packed = addr.packed
    if packed[:12] == bytes(12) and addr != ipaddress.IPv6Address("::1") and int(addr) > 1:
        return ipaddress.IPv4Address(packed[12:])  # IPv4-compatible ::a.b.c.d
    if addr in ipaddress.ip_network("64:ff9b::/96") or addr in ipaddress.ip_network("64:ff9b:1::/48"):
        return ipaddress.IPv4Address(packed[12:])  # NAT64
    return None


def is_public_address(ip: str) -> bool:
    """True only for globally routable unicast addresses (IPv4-in-IPv6 forms unwrapped)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_ipv4(addr)
        if inner is not None:
            return is_public_address(str(inner))
    if (addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_multicast
            or addr.is_reserved or addr.is_unspecified or not addr.is_global):
        return False
    return not any(addr in net for net in _EXTRA_BLOCKED if net.version == addr.version)


def _refusal(host: str, ip: str) -> BlockedAddress:
    return BlockedAddress(f"refusing to fetch from {host} ({ip}, not a public address); "
                          f"start the node with --allow-private to allow it")


def check_host(host: str) -> None:
    """Proxy case: refuse a target that resolves locally to a non-public address."""
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        candidates = [host]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError):
            return  # unknown here: the proxy resolves it
        candidates = [info[4][0] for info in infos]
    for ip in candidates:
        if not is_public_address(ip):
            raise _refusal(host, ip)


class _GuardedMixin:
    """Refuses non-public targets before connecting, and checks again after.

    The first check keeps a refused job from sending even a SYN to a private
    address; the second, on the address actually connected to, closes the
    window in which a DNS answer could change between the two look-ups.
    """

    def _new_conn(self):  # type: ignore[no-untyped-def]
        host = getattr(self, "_dns_host", None) or getattr(self, "host", "")
        try:
            infos = socket.getaddrinfo(host, getattr(self, "port", None) or 80,
                                       type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            infos = []  # let the connect attempt report the resolution failure
        for info in infos:
            if not is_public_address(info[4][0]):
                raise _refusal(host, info[4][0])
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            ip = sock.getpeername()[0]
        except OSError:
            sock.close()
            raise
        if not is_public_address(ip):
            sock.close()
            raise _refusal(getattr(self, "host", "?"), ip)
        return sock


class GuardedHTTPConnection(_GuardedMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedMixin, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class SwiftAdapter(HTTPAdapter):
    def __init__(self, *, source_address: str | None, guarded: bool, pool_size: int):
        self.source_address = source_address
        self.guarded = guarded
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def _bind(self, kwargs: dict) -> dict:
        if self.source_address:
            kwargs["source_address"] = (self.source_address, 0)
        return kwargs

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        super().init_poolmanager(connections, maxsize, block, **self._bind(pool_kwargs))
        if self.guarded:
            self.poolmanager.pool_classes_by_scheme = {
                "http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}
            self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # connections to the proxy leave from our source address too, and are
        # not subject to the address check (the proxy is the owner's choice)
        return super().proxy_manager_for(proxy, **self._bind(proxy_kwargs))

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        scheme = urlsplit(request.url).scheme.lower()
        if scheme not in ("http", "https"):
            raise requests.exceptions.InvalidSchema(f"unsupported URL scheme {scheme!r}")
        if self.guarded and select_proxy(request.url, proxies or {}):
            check_host(urlsplit(request.url).hostname or "")
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                            proxies=proxies)


def make_session(*, source_address: str | None = None, allow_private: bool = True,
                 pool_size: int = 16) -> requests.Session:
    """A requests session with swift's address policy and source address."""
    session = requests.Session()
    adapter = SwiftAdapter(source_address=source_address, guarded=not allow_private,
                           pool_size=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "swift-downloader"
    return session

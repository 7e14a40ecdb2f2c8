"""HTTP sessions for swift: which local address to leave from, which remote ones to reach.

Every fetch swift makes goes through a session from :func:`make_session`.

Why an address policy
---------------------
A node fetches URLs on behalf of other machines on the LAN. Without a policy
it is an open proxy into its owner's network: a peer could ask it for a
router's admin page, a cloud metadata service (169.254.169.254), a printer,
or a service listening on the node's own loopback. So the sessions that serve
peers' fetch jobs (``allow_private=False``) only ever connect to *public*
addresses (:func:`is_public_address`). The requester's own fetches for its
own user, and nodes started with ``--allow-private``, use
``allow_private=True``: no address restrictions.

How the check is made (direct connections)
------------------------------------------
The check lives inside urllib3's connection object (``_new_conn``), the one
place every TCP connection is opened, so every redirect hop (requests opens a
new connection for a new host) is checked without any help from the caller:

1. the host name is resolved **once**; if any of its addresses is not public
   the fetch is refused (a name that mixes public and private answers is a
   classic rebinding trick, and the rule is the same as behind a proxy);
2. the connection is opened to exactly those checked addresses (urllib3's
   ``create_connection`` gets the IP literal, so the name is not resolved
   again);
   a DNS answer that changes between a check and the use (DNS rebinding)
   therefore has no window to act in, and a refused address never receives
   a single packet -- a refusal cannot be used to scan ports on the LAN;
3. right after ``connect()``, ``getpeername()`` is checked too: whatever the
   resolver or the socket layer did, the address actually connected to must
   be public, or the socket is closed before a byte is sent.

The refusal is raised inside urllib3 as an internal exception that is not an
``OSError``, so urllib3 neither wraps it nor retries it; the adapter turns it
into :class:`BlockedAddress`, a ``requests.exceptions.ConnectionError``, so
callers that catch requests' errors still see it, and callers that care can
catch it by type.

Behind an HTTP proxy
--------------------
When the node's owner configured a proxy (``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY``, ``NO_PROXY``, honoured by requests through ``trust_env``), the
node never connects to the origin: it connects to the proxy, whose address is
often private on a campus network and is the owner's own choice. So
connections to a proxy are not peer-checked; instead the adapter checks the
*target* host name before each request (and so before each redirect hop):
an IP literal must be public; a name that resolves locally must resolve only
to public addresses; a name that cannot be resolved locally is left for the
proxy to resolve (then the proxy's own policy applies). The proxy decision is
the adapter's own (``select_proxy`` on the same proxies requests hands to
``send``), so the check and the connection can never disagree about whether
a proxy is used.

Source address
--------------
A machine with two uplinks runs one node per uplink; ``source_address``
binds every outgoing connection -- plain, HTTPS, and connections to a
proxy -- to ``(source_address, 0)``, through urllib3's ``source_address``
connection argument (pool-manager keyword arguments for direct
connections, proxy-manager keyword arguments for proxied ones).

Schemes
-------
Only ``http`` and ``https`` URLs are fetched; anything else (``file:``,
``ftp:``, ``gopher:``...), also as a redirect target, fails with
``requests.exceptions.InvalidSchema`` and a message saying so.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import warnings
from socket import timeout as SocketTimeout
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, InsecureRequestWarning, LocationParseError,
                                NameResolutionError, NewConnectionError)
from urllib3.util import connection
from urllib3.util.connection import allowed_gai_family

__all__ = ["BlockedAddress", "address_kind", "is_public_address", "make_session"]

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("http", "https")

# Special-purpose ranges that are not reachable on the public internet (IANA
# special-purpose address registries), each with the word used in messages.
# Listed explicitly so the answer does not depend on which Python patch
# release's ``ipaddress`` tables are installed; ``is_global`` is the backstop.
_NON_PUBLIC: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = sorted(
    ((ipaddress.ip_network(net), kind) for net, kind in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "broadcast"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignment"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment-routing"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )),
    key=lambda item: -item[0].prefixlen,  # most specific first, for the best word
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address really leads to, for the forms where the OS,
    a NAT64 gateway or a 6to4 relay delivers the packets to that IPv4 address."""
    if addr.ipv4_mapped is not None:
        return "IPv4-mapped", addr.ipv4_mapped
    low32 = ipaddress.IPv4Address(addr.packed[12:])
    if addr in _IPV4_TRANSLATED:
        return "IPv4-translated", low32
    if addr in _IPV4_COMPATIBLE and int(addr) > 1:  # not :: or ::1, which are themselves
        return "IPv4-compatible", low32
    if addr in _NAT64_WELL_KNOWN:
        return "NAT64", low32
    if addr.sixtofour is not None:
        return "6to4", addr.sixtofour
    return None


def address_kind(ip: str) -> str | None:
    """None for a public address, else a short word for what it is ("loopback", "private",
    "6to4 form of a loopback", "malformed"...), used in refusal messages."""
    try:
        addr = ipaddress.ip_address(str(ip).split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return "malformed"
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            form, inner = embedded
            kind = address_kind(str(inner))
            return None if kind is None else f"{form} form of a {kind}"
    for net, kind in _NON_PUBLIC:
        if addr.version == net.version and addr in net:
            return kind
    if isinstance(addr, ipaddress.IPv6Address) and addr not in _GLOBAL_UNICAST_V6:
        return "reserved"
    if (not addr.is_global or addr.is_multicast or addr.is_private or addr.is_loopback
            or addr.is_link_local or addr.is_unspecified or addr.is_reserved):
        return "non-public"
    return None


def is_public_address(ip: str) -> bool:
    """True only for a globally routable unicast address.

    False for loopback, private, link-local, multicast, reserved, unspecified,
    shared (100.64/10), documentation, benchmarking, broadcast, site-local,
    unique-local, and for the IPv4-mapped, IPv4-compatible, IPv4-translated,
    NAT64 (64:ff9b::/96) and 6to4 forms of any of those (such forms of a
    public IPv4 address are public); False for anything that is not an
    address. Pure: no look-ups.
    """
    return address_kind(ip) is None


class BlockedAddress(requests.exceptions.ConnectionError):
    """A fetch that would reach an address this node does not fetch from for peers."""

    def __init__(self, host: str, address: str, **kwargs: Any):
        self.host = host
        self.address = address
        kind = address_kind(address) or "non-public"
        where = host if _same_address(host, address) else f"{host} at {address}"
        super().__init__(f"refusing to fetch from {where} ({kind} address); "
                         f"start the node with --allow-private to allow it", **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, whatever the constructor takes
        return (type(self), (self.host, self.address))


def _same_address(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False


class _Refused(Exception):
    """Raised inside urllib3 for a non-public peer.

    Deliberately not an ``OSError``: urllib3 would wrap one in ``ProtocolError``
    and count it against the retries; this one passes straight through urllib3
    (which closes the connection on the way) to the adapter, which raises
    :class:`BlockedAddress` with the request attached.
    """

    def __init__(self, host: str, address: str):
        super().__init__(host, address)
        self.host = host
        self.address = address


class _PeerCheckedConnectionMixin:
    """Connects only to public addresses, checked before and after ``connect()``."""

    _dns_host: str
    host: str
    port: int
    timeout: Any
    source_address: tuple[str, int] | None
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        try:
            infos = socket.getaddrinfo(name, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        except UnicodeError:
            raise LocationParseError(f"'{name}', label empty or too long") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if not is_public_address(address):
                log.debug("refusing %s: it resolves to %s", self.host, address)
                raise _Refused(self.host, address)
        error: Exception = NewConnectionError(self, f"{name} resolved to no address")  # type: ignore[arg-type]
        for address in addresses:
            # Connect to exactly the checked address: urllib3's create_connection gets
            # the literal, so no second look-up of the name can answer differently.
            # Otherwise this is urllib3's own _new_conn (same options, same errors).
            try:
                sock = connection.create_connection(
                    (address, self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except SocketTimeout as exc:
                error = ConnectTimeoutError(
                    self, f"Connection to {self.host} ({address}) timed out. "
                          f"(connect timeout={self.timeout})")
                error.__cause__ = exc
                continue
            except OSError as exc:
                error = NewConnectionError(  # type: ignore[arg-type]
                    self, f"Failed to establish a new connection to {address}: {exc}")
                error.__cause__ = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            self._check_peer(sock)
            return sock
        raise error

    def _check_peer(self, sock: socket.socket) -> None:
        try:
            peer = str(sock.getpeername()[0])
        except OSError as exc:
            sock.close()
            raise NewConnectionError(self, f"connection lost right after connect: {exc}") from exc  # type: ignore[arg-type]
        if not is_public_address(peer):
            sock.close()
            log.debug("refusing %s: connected to %s", self.host, peer)
            raise _Refused(self.host, peer)


class PeerCheckedHTTPConnection(_PeerCheckedConnectionMixin, HTTPConnection):
    pass


class PeerCheckedHTTPSConnection(_PeerCheckedConnectionMixin, HTTPSConnection):
    pass


class PeerCheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = PeerCheckedHTTPConnection


class PeerCheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = PeerCheckedHTTPSConnection


_PEER_CHECKED_POOLS = {"http": PeerCheckedHTTPConnectionPool, "https": PeerCheckedHTTPSConnectionPool}


def _check_proxied_target(host: str) -> None:
    """Proxy case: refuse a target whose IP literal, or any locally resolved address,
    is not public. A name that does not resolve here is left to the proxy."""
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = [host]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            log.debug("%s does not resolve locally (%s); the proxy resolves it", host, exc)
            return
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if not is_public_address(address):
            log.debug("refusing proxied fetch from %s: it resolves to %s", host, address)
            raise BlockedAddress(host, address)


class SwiftAdapter(HTTPAdapter):
    """``HTTPAdapter`` with a source address and, when guarded, the address policy."""

    __attrs__ = HTTPAdapter.__attrs__ + ["source_address", "guarded"]

    def __init__(self, *, source_address: str | None = None, guarded: bool = False,
                 pool_size: int = 16):
        # set before super().__init__, which calls init_poolmanager
        self.source_address = source_address
        self.guarded = guarded
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size)

    def _bind(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.source_address:
            kwargs["source_address"] = (self.source_address, 0)
        return kwargs

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **self._bind(pool_kwargs))
        if self.guarded:
            # direct connections only: proxy managers keep urllib3's own pools, so a
            # connection to the owner's proxy is never peer-checked
            self.poolmanager.pool_classes_by_scheme = _PEER_CHECKED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, **self._bind(proxy_kwargs))

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None,
             proxies: dict[str, str] | None = None) -> requests.Response:
        url = request.url or ""
        parts = urlsplit(url)
        if parts.scheme.lower() not in ALLOWED_SCHEMES:
            raise requests.exceptions.InvalidSchema(_scheme_message(url), request=request)
        if self.guarded and select_proxy(url, proxies or {}):
            try:
                _check_proxied_target(parts.hostname or "")
            except BlockedAddress as exc:
                exc.request = request
                raise
        try:
            return super().send(request, stream=stream, timeout=timeout, verify=verify,
                                cert=cert, proxies=proxies)
        except _Refused as refused:
            raise BlockedAddress(refused.host, refused.address, request=request) from None


def _scheme_message(url: str) -> str:
    scheme = url.split(":", 1)[0] if ":" in url else ""
    shown = url if len(url) <= 200 else url[:200] + "..."
    what = f"{scheme}: URLs are" if scheme else "URLs without a scheme are"
    return f"cannot fetch {shown!r}: {what} not supported, only http and https"


class _SwiftSession(requests.Session):
    def merge_environment_settings(self, url: str, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        # requests lets REQUESTS_CA_BUNDLE override a session's own CA file and even
        # verify=False; a --ca-certificate or --insecure the user gave must win.
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            settings["verify"] = self.verify
        return settings

    def get_adapter(self, url: str) -> Any:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in ALLOWED_SCHEMES:
            raise requests.exceptions.InvalidSchema(_scheme_message(url))
        return super().get_adapter(url)


def make_session(*, source_address: str | None = None, allow_private: bool = True,
                 pool_size: int = 16, profile: Any = None,
                 cookies: requests.cookies.RequestsCookieJar | None = None) -> requests.Session:
    """A ``requests.Session`` with swift's source address and address policy.

    ``source_address``: local address every outgoing connection (to an
    origin or to a proxy) is bound to; None lets the OS choose.
    ``allow_private=False``: connect only to public addresses (see the module
    docstring); a refusal raises :class:`BlockedAddress`.
    ``pool_size``: hosts kept in the pool cache, and keep-alive connections
    kept per host.
    ``profile``: a :class:`swift.http.profile.RequestProfile` (headers, CA file,
    --insecure) applied to every request; ``cookies``: the download's one
    cookie jar, shared by all its sessions (requests keeps cookies that
    answers set there, redirects included).
    Everything else is plain requests: streaming, redirects, timeouts,
    keep-alive, HTTPS verification, proxies from the environment.
    """
    session = _SwiftSession()
    adapter = SwiftAdapter(source_address=source_address, guarded=not allow_private,
                           pool_size=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "swift-downloader"
    if profile is not None:
        session.headers.update(profile.request_headers())
        session.verify = profile.verify
        if profile.verify is False:
            # the user chose --insecure and was warned once; not once per request
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
    if cookies is not None:
        session.cookies = cookies
    return session

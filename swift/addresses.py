"""``HOST:PORT`` as swift writes and reads it. Pure.

One spelling everywhere: an IPv6 address is written in brackets
(``[::1]:5000``, RFC 3986 section 3.2.2), so the last ``:`` always
separates the port; every other host (IPv4, a DNS name) as it is.
:func:`format_hostport` writes it; :func:`parse_hostport` reads what a user
types: ``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6
address. A URL (``http://HOST:5000``) is refused with a message that says
what to type instead: discovery speaks swift's own protocol, not HTTP.
Errors are ``ValueError`` with one line for the user.
"""

from __future__ import annotations

import ipaddress
import re

#: Ports a listener may be given: 0 asks the kernel for a free one.
MIN_LISTEN_PORT = 0
MAX_PORT = 65535
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A host name or IPv4 address: letters, digits, '-', '.', '_' (RFC 1123 plus
# the underscore some LANs use). Anything else is a typo, not a name to resolve.
_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$", re.ASCII)


def format_hostport(host: str, port: int) -> str:
    """``("::1", 5000)`` → ``[::1]:5000``; ``("10.0.0.2", 6000)`` → ``10.0.0.2:6000``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_port(text: str, *, allow_zero: bool = True) -> int:
    """A decimal port, 1-65535 (0 too when ``allow_zero``: "any free port"); ValueError otherwise."""
    raw = (text or "").strip()
    low = MIN_LISTEN_PORT if allow_zero else 1
    if not raw.isascii() or not raw.isdigit():
        raise ValueError(f"not a port number: {text!r} (expected {low} to {MAX_PORT})")
    port = int(raw)
    if not low <= port <= MAX_PORT:
        raise ValueError(f"port {port} is out of range ({low} to {MAX_PORT})")
    return port


def _check_host(host: str, whole: str) -> str:
    if not host:
        raise ValueError(f"no host in {whole!r} (expected HOST:PORT)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)  # a zone ("%eth0") is accepted too
            return host
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r} in {whole!r}") from None
    if not _HOST_NAME.match(host):
        raise ValueError(f"not a host name or address: {host!r} in {whole!r}")
    return host


def parse_host(text: str) -> str:
    """A host to listen on or to advertise: a name, an IPv4 or an IPv6 address (no port)."""
    whole = (text or "").strip()
    host = whole[1:-1] if whole.startswith("[") and whole.endswith("]") else whole
    if _SCHEME.match(host) or "/" in host:
        raise ValueError(f"{whole!r} is not a host; give a name or an address only")
    if ":" not in host or host.count(":") > 1:
        return _check_host(host, whole)
    raise ValueError(f"{whole!r} has a port; give the host only (the port has its own option)")


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address → ``(host, port)``.

    The host comes back without brackets. Without a port, ``default_port``
    is used (ValueError if it is None). The port must be 1-65535.
    """
    whole = (text or "").strip()
    if _SCHEME.match(whole):
        bare = _SCHEME.sub("", whole).split("/", 1)[0]
        raise ValueError(f"{whole!r} is a URL; give HOST:PORT without a scheme, e.g. {bare!r}")
    if "/" in whole:
        raise ValueError(f"{whole!r} has a path; give HOST:PORT only")
    if whole.startswith("["):
        host, bracket, rest = whole[1:].partition("]")
        if not bracket:
            raise ValueError(f"missing ']' in {whole!r} (expected [IPV6]:PORT)")
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {whole!r} (expected [IPV6]:PORT)")
        port_text = rest[1:] if rest else None
        if ":" not in host:
            raise ValueError(f"brackets are for IPv6 addresses only: {whole!r}")
    elif whole.count(":") == 1:
        host, port_text = whole.split(":")
    else:
        host, port_text = whole, None  # a name, an IPv4 address or a bare IPv6 address
    host = _check_host(host, whole)
    if port_text is None:
        if default_port is None:
            raise ValueError(f"no port in {whole!r} (expected HOST:PORT)")
        return host, default_port
    return host, parse_port(port_text, allow_zero=False)

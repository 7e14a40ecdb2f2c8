"""Library exceptions and HTTP statuses turned into swift's errors, by type, never by text.

``requests`` wraps ``urllib3``, which wraps ``socket`` and ``ssl``: a refused
connection arrives as ``requests.ConnectionError(MaxRetryError(reason=
NewConnectionError(...)))`` with the ``ConnectionRefusedError`` as the
``__cause__`` of the innermost one. :func:`translate` walks that chain
(``__cause__``, ``__context__``, ``reason``, ``args[0]``) and decides by the
first exception *type* it recognises, most specific first: an address-policy
refusal, a certificate that is not trusted, a name that does not resolve, a
refused connection, a timeout, a reset. The message is ours, in plain words,
naming the host (never the password) and, where one exists, the way out.

Pure: no I/O.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Iterator
from urllib.parse import urlsplit

import requests
import urllib3.exceptions as u3

from ..errors import ErrorCode, NetworkError, OriginError, SwiftError, UsageError
from ..sessions import BlockedAddress
from .headers import parse_retry_after
from .url import host_of, redact_url

__all__ = ["translate", "status_error", "causes"]

#: Statuses that may pass by themselves (RFC 9110 sections 15.5.9, 15.6;
#: RFC 6585 section 4 for 429): retried with backoff, honouring Retry-After.
BUSY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses a short-lived or guarded URL gives once it has expired: the URL
#: the original one redirected to may be resolved again.
DENIED_STATUSES = frozenset({401, 403, 404, 410})


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, outermost first, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        inner += [a for a in getattr(current, "args", ())[:1]]
        todo.extend(e for e in inner if isinstance(e, BaseException))


def status_error(status: int, reason: str, url: str, retry_after: str | None = None) -> OriginError:
    """The error for an answer whose status we cannot use."""
    text = f"the server answered {status}{' ' + reason if reason else ''} for {redact_url(url, strict=False)}"
    if status in BUSY_STATUSES:
        return OriginError(text, ErrorCode.SERVER_BUSY, status=status,
                           retry_after=parse_retry_after(retry_after))
    if status in DENIED_STATUSES:
        return OriginError(text, ErrorCode.ACCESS_DENIED, status=status)
    return OriginError(text, ErrorCode.HTTP_STATUS, status=status)


def translate(exc: BaseException, url: str) -> SwiftError | None:
    """The :class:`SwiftError` for ``exc`` met while fetching ``url``; None for an
    exception that is not about the network or HTTP (a bug: let it propagate)."""
    if isinstance(exc, SwiftError):
        return exc
    host = host_of(url)
    chain = list(causes(exc))
    for rule in _RULES:
        error = rule(chain, host, url)
        if error is not None:
            return error
    return None


def _find(chain: list[BaseException], *types: type) -> BaseException | None:
    for e in chain:
        if isinstance(e, types):
            return e
    return None


def _blocked(chain, host, url):
    e = _find(chain, BlockedAddress)
    return NetworkError(str(e), ErrorCode.ADDRESS_BLOCKED) if e is not None else None


def _certificate(chain, host, url):
    e = _find(chain, ssl.SSLCertVerificationError)
    if e is None:
        return None
    why = getattr(e, "verify_message", "") or "it cannot be verified"
    return NetworkError(
        f"the certificate of {host} is not trusted ({why}); if you trust this server, "
        f"give its certificate with --ca-certificate FILE, or skip the check with --insecure",
        ErrorCode.TLS_UNTRUSTED)


def _dns(chain, host, url):
    if _find(chain, socket.gaierror, u3.NameResolutionError) is None:
        return None
    return NetworkError(f"cannot resolve host name {host!r}", ErrorCode.DNS_FAILED)


def _scheme(chain, host, url):
    if _find(chain, requests.exceptions.InvalidSchema) is not None:
        return UsageError(f"unsupported URL scheme in {redact_url(url, strict=False)!r} "
                          f"(only http and https)", ErrorCode.UNSUPPORTED_SCHEME)
    if _find(chain, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
             u3.LocationParseError, u3.LocationValueError) is not None:
        return UsageError(f"malformed URL {redact_url(url, strict=False)!r}", ErrorCode.BAD_URL)
    return None


def _redirects(chain, host, url):
    if _find(chain, requests.exceptions.TooManyRedirects) is None:
        return None
    return OriginError(f"{host} redirected too many times (a redirect loop?)",
                       ErrorCode.TOO_MANY_REDIRECTS)


def _proxy(chain, host, url):
    if _find(chain, requests.exceptions.ProxyError, u3.ProxyError) is None:
        return None
    return NetworkError(f"the HTTP proxy failed while connecting to {host}", ErrorCode.PROXY_FAILED)


def _refused(chain, host, url):
    if _find(chain, ConnectionRefusedError) is None:
        return None
    # the port says which service refused: a typo in it is the usual cause
    return NetworkError(f"connection refused by {_host_port(url, host)}", ErrorCode.CONNECTION_REFUSED)


def _host_port(url: str, host: str) -> str:
    """``HOST:PORT`` of ``url`` (the scheme's port if none is written), IPv6 in brackets."""
    from ..addresses import format_hostport
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return host
    return format_hostport(host, port) if port else host


def _timeouts(chain, host, url):
    # urllib3 2's NewConnectionError subclasses ConnectTimeoutError (kept for old callers):
    # an unreachable network or an unassignable --source-address is not a timeout
    if any(isinstance(e, (requests.exceptions.ConnectTimeout, u3.ConnectTimeoutError))
           and not isinstance(e, u3.NewConnectionError) for e in chain):
        return NetworkError(f"timed out connecting to {host}", ErrorCode.CONNECT_TIMEOUT)
    if _find(chain, requests.exceptions.ReadTimeout, u3.ReadTimeoutError, socket.timeout,
             TimeoutError) is not None:
        return NetworkError(f"{host} stopped sending (read timed out)", ErrorCode.READ_TIMEOUT)
    return None


def _tls(chain, host, url):
    if _find(chain, ssl.SSLError, requests.exceptions.SSLError, u3.SSLError) is None:
        return None
    return NetworkError(f"the TLS handshake with {host} failed", ErrorCode.TLS_FAILED)


def _reset(chain, host, url):
    if _find(chain, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
             u3.ProtocolError, requests.exceptions.ChunkedEncodingError,
             u3.IncompleteRead) is None:
        return None
    return NetworkError(f"the connection to {host} broke off", ErrorCode.CONNECTION_RESET)


def _other_os_error(chain, host, url):
    # the first OSError with an errno: requests' and urllib3's wrappers are OSErrors without one
    e = next((e for e in chain if isinstance(e, OSError) and e.errno is not None), None)
    if e is not None and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL,
                                     errno.ENETDOWN, errno.EHOSTDOWN):
        return NetworkError(f"cannot connect to {host}: {e.strerror.lower()}", ErrorCode.NETWORK)
    if _find(chain, requests.exceptions.ConnectionError, u3.NewConnectionError,
             u3.HTTPError, OSError) is not None:
        return NetworkError(f"cannot connect to {host}", ErrorCode.NETWORK)
    return None


# most specific first: a refusal of the policy or of a certificate says more than "cannot connect"
_RULES = (_blocked, _certificate, _scheme, _redirects, _dns, _proxy, _refused, _timeouts, _tls,
          _reset, _other_os_error)

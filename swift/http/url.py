"""URLs as a user types them, made into URLs a server accepts; and URLs made safe to print.

Rules
-----
* What a browser would fix silently, we fix too (WHATWG URL Standard, "URL
  parsing"): leading and trailing spaces and C0 controls are dropped, tabs and
  newlines inside are removed, and characters not allowed in a URL (a space,
  ``"<>\\^`{|}``, anything non-ASCII) are percent-encoded as UTF-8 in the
  path, query and fragment (``my file.bin`` → ``my%20file.bin``). An existing
  ``%XX`` escape is kept as it is, so a correct URL comes out unchanged.
* A non-ASCII host name is written in IDNA (``bücher.example`` →
  ``xn--bcher-kva.example``); an IPv6 literal stays in brackets.
* Anything that cannot be fixed without guessing is refused with a message
  saying what is wrong *in the URL* (no scheme, an unsupported scheme, no
  host, a port that is not a number or out of range, an unclosed ``[``).
* Credentials (``user:password@``) are secrets: :func:`redact_url` is the
  only form of a URL that may be logged, shown or written to a report.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..errors import ErrorCode, UsageError

__all__ = ["normalize_url", "redact_url", "split_credentials", "host_of"]

#: Longest URL accepted. Signed URLs of object stores run to a few KiB;
#: 64 KiB is what the peer protocol carries.
MAX_URL_LENGTH = 64 * 1024

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# Characters kept as they are in each part: RFC 3986 reserved and unreserved
# characters, and "%" so that existing escapes survive.
_SAFE_PATH = "/;:@!$&'()*+,=-._~%"
_SAFE_QUERY = _SAFE_PATH + "?[]"
_SAFE_USERINFO = ";:&=+$,!*'()-._~%"
_TAB_NEWLINE = re.compile(r"[\t\n\r]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse(url: str, why: str, code: ErrorCode = ErrorCode.BAD_URL) -> UsageError:
    return UsageError(f"malformed URL {_shown(url)}: {why}", code)


def _shown(url: str) -> str:
    url = redact_url(url, strict=False)
    return repr(url if len(url) <= 200 else url[:200] + "...")


def normalize_url(text: str) -> str:
    """The http(s) URL ``text`` stands for, encoded as a server expects it.

    Raises :class:`~swift.errors.UsageError` (code ``BAD_URL`` or
    ``UNSUPPORTED_SCHEME``) with a message saying what is wrong.
    """
    url = _TAB_NEWLINE.sub("", text.strip(" \x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c"
                                           "\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19"
                                           "\x1a\x1b\x1c\x1d\x1e\x1f\t\n\r"))
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(url, f"longer than {MAX_URL_LENGTH} characters")
    m = _SCHEME.match(url)
    if not m:
        raise _refuse(url, "no scheme (expected http:// or https://)")
    scheme = m.group(1).lower()
    if scheme not in ("http", "https"):
        raise UsageError(f"unsupported URL scheme {m.group(1)!r} in {_shown(url)} "
                         f"(only http and https)", ErrorCode.UNSUPPORTED_SCHEME)
    if _CONTROL.search(url):
        raise _refuse(url, "it contains a control character")
    rest = url[m.end():]
    if not rest.startswith("//"):
        raise _refuse(url, f"expected {scheme}:// followed by a host name")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise _refuse(url, _split_problem(url, exc)) from None
    netloc = _netloc(url, parts.netloc)
    path = quote(parts.path, safe=_SAFE_PATH) or "/"
    query = quote(parts.query, safe=_SAFE_QUERY)
    fragment = quote(parts.fragment, safe=_SAFE_QUERY)
    return urlunsplit((scheme, netloc, path, query, fragment))


def _split_problem(url: str, exc: ValueError) -> str:
    authority = re.split(r"[/?#]", url.split("//", 1)[-1], maxsplit=1)[0]
    try:
        _netloc(url, authority)  # raises with the precise reason
    except UsageError as precise:
        return precise.message.split(": ", 1)[-1]
    return "the host part cannot be read"


def _netloc(url: str, netloc: str) -> str:
    userinfo, _, hostport = netloc.rpartition("@")
    host, port = _split_host_port(url, hostport)
    if not host:
        raise _refuse(url, "no host name")
    out = _host(url, host)
    if port is not None:
        out += f":{port}"
    if userinfo:
        out = quote(userinfo, safe=_SAFE_USERINFO) + "@" + out
    return out


def _split_host_port(url: str, hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _refuse(url, "the '[' of an IPv6 address is not closed")
        host, after = hostport[: end + 1], hostport[end + 1:]
        if after and not after.startswith(":"):
            raise _refuse(url, f"unexpected {after!r} after the IPv6 address")
        port_text = after[1:] if after else None
    elif ":" in hostport:
        host, port_text = hostport.rsplit(":", 1)
    else:
        host, port_text = hostport, None
    if port_text is None or port_text == "":
        return host, None
    if not port_text.isdigit() or not port_text.isascii():
        raise _refuse(url, f"the port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 < port < 65536:
        raise _refuse(url, f"the port {port} is out of range (1-65535)")
    return host, port


def _host(url: str, host: str) -> str:
    if host.startswith("["):
        inner = host[1:-1]
        address, _, zone = inner.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise _refuse(url, f"{inner!r} is not an IPv6 address") from None
        return f"[{address}{'%' + zone if zone else ''}]"
    if any(c in host for c in " <>\"{}|\\^`"):
        raise _refuse(url, f"the host name {host!r} contains characters a host name cannot have")
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _refuse(url, f"the host name {host!r} is not a valid international name") from None


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without ``user:password@``, user, password), the last two
    percent-encoded as in the URL (None when absent)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None, None
    user, colon, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, user, password if colon else None


#: Query parameters (lower case) whose values are an account's credential, not a
#: signature of one object: OAuth 2.0 bearer tokens in the URI query (RFC 6750
#: 2.3, ``access_token``), API keys, passwords. A signed URL (``X-Amz-Signature``,
#: ``sig``, ``token``, ...) names one object for a while and may be shared
#: (``content.SIGNING_PARAMETERS``); one of these opens an account.
SECRET_QUERY_PARAMETERS = frozenset({"access_token", "api_key", "apikey", "api-key",
                                     "password", "passwd", "pwd", "private_token"})


def secret_query_parameters(url: str) -> list[str]:
    """The names of ``url``'s query parameters that are credentials
    (:data:`SECRET_QUERY_PARAMETERS`), as written, in order."""
    query = url.split("#", 1)[0].partition("?")[2]
    names = [pair.split("=", 1)[0] for pair in query.split("&") if pair]
    return [n for n in names if unquote(n).strip().lower() in SECRET_QUERY_PARAMETERS]


def _redact_query(query: str) -> str:
    pairs = query.split("&")
    for i, pair in enumerate(pairs):
        name, eq, _ = pair.partition("=")
        if eq and unquote(name).strip().lower() in SECRET_QUERY_PARAMETERS:
            pairs[i] = f"{name}=***"
    return "&".join(pairs)


def redact_url(url: str, *, strict: bool = True) -> str:
    """``url`` with its password and the values of credential query parameters
    (:data:`SECRET_QUERY_PARAMETERS`) replaced by ``***``: the only form of a URL to print.

    With ``strict=False`` (for URLs that may not parse) a best effort by text.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        if strict:
            raise
        head, mark, rest = re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url).partition("?")
        return head + mark + _redact_query(rest) if mark else head
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = _redact_query(parts.query) if parts.query else parts.query
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def host_of(url: str) -> str:
    """The host of ``url`` for messages (no credentials, IPv6 without brackets)."""
    try:
        return urlsplit(url).hostname or "the server"
    except ValueError:
        return "the server"

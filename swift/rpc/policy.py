"""Which HTTP requests the RPC server refuses before any method runs. Pure: no I/O.

The threat (issue: "a web page on the internet must not be able to drive the
node through the user's browser"): any page the user visits can make the
browser send requests to ``http://127.0.0.1:6800``. The rules below close
each way it could:

* **Cross-site requests.** A browser names the page that sent a request in
  ``Origin`` (every POST, every WebSocket handshake). It must be this node's
  own origin, ``http://`` + the ``Host`` it was asked for, or one the user
  allowed (``--rpc-allow-origin``, for AriaNg served elsewhere or a browser
  extension); anything else, ``null`` included, is refused with 403.
  ``Sec-Fetch-Site``, where sent, must be ``same-origin`` or ``none`` (typed
  by the user) unless the origin is allowed.
* **Requests without a preflight.** A form, or a ``fetch`` in ``no-cors``
  mode, can POST only ``text/plain``, ``application/x-www-form-urlencoded`` or
  ``multipart/form-data`` without asking first: a POST must say JSON
  (``application/json``, or aria2's ``application/json-rpc`` and
  ``application/jsonrequest``) or say nothing (scripts like ``aria2p``, which
  a browser cannot be made to imitate without sending ``Origin``).
* **DNS rebinding.** A site can make its own name resolve to 127.0.0.1; its
  pages are then same-origin with the node under that name. Bound to loopback
  (the default), the server answers only to loopback names in ``Host``
  (``localhost``, ``127.0.0.1``, ``[::1]``); with ``--rpc-listen-all`` any
  name is taken, and the secret is what protects it.
* **Sizes.** A body is at most :data:`MAX_BODY` bytes and must say its length
  (no chunked bodies); a WebSocket message at most :data:`MAX_MESSAGE`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

__all__ = ["Refusal", "check_request", "origin_allowed", "JSON_TYPES", "MAX_BODY", "MAX_MESSAGE"]

#: Largest request body: aria2's ``--rpc-max-request-size`` default (2M); an
#: addUri with many headers is a few KiB.
MAX_BODY = 2 << 20
#: Largest WebSocket message, for the same reason.
MAX_MESSAGE = MAX_BODY
#: Content types a JSON-RPC POST may carry (aria2 takes the last two as well).
JSON_TYPES = frozenset({"application/json", "application/json-rpc", "application/jsonrequest"})
#: ``Sec-Fetch-Site`` values of requests a page on another site cannot make.
_OWN_SITE = frozenset({"same-origin", "none"})


@dataclass(frozen=True)
class Refusal:
    """An HTTP status and a one-line reason for the client."""
    status: int
    message: str


def _host_name(host: str) -> str:
    """``Host`` header → the bare host name (no port, no brackets), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_name(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (with or without a port)."""
    name = _host_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an Origin, lower case, with the default port left out."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme.lower())
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port and port != default else "")


def origin_allowed(origin: str, host: str, allowed: frozenset[str] | set[str] = frozenset()) -> bool:
    """Is ``origin`` this server's own (``http://`` + ``host``) or one of ``allowed``?"""
    mine = _origin_of(f"http://{host.strip()}")
    theirs = _origin_of(origin)
    if theirs is None:
        return False
    return theirs == mine or theirs in {_origin_of(a) for a in allowed}


def check_request(method: str, headers: Mapping[str, str], *, listen_all: bool,
                  allowed_origins: frozenset[str] | set[str] = frozenset()) -> Refusal | None:
    """The refusal for a request (``headers`` keyed in lower case), or None to serve it."""
    host = headers.get("host", "")
    if not host:
        return Refusal(400, "a Host header is required")
    if not listen_all and not is_loopback_name(host):
        return Refusal(403, f"this node answers RPC to loopback names only, not {host[:100]!r} "
                            f"(start it with --rpc-listen-all to reach it from other machines)")
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, host, allowed_origins):
        return Refusal(403, f"cross-site request refused: the page at {origin[:100]!r} is not this "
                            f"node (allow a front end's origin with --rpc-allow-origin)")
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _OWN_SITE and \
            not (origin is not None and origin_allowed(origin, "", allowed_origins)):
        return Refusal(403, "cross-site request refused (Sec-Fetch-Site: "
                            f"{site[:40]}); allow a front end's origin with --rpc-allow-origin")
    if method == "POST":
        kind = headers.get("content-type")
        if kind is not None and kind.split(";", 1)[0].strip().lower() not in JSON_TYPES:
            return Refusal(415, f"a JSON-RPC request is application/json, not {kind[:80]!r}")
        if "transfer-encoding" in headers:
            return Refusal(411, "send the body with a Content-Length (chunked bodies are not taken)")
        length = headers.get("content-length", "")
        if not length.strip().isdigit():
            return Refusal(411, "a POST needs a Content-Length")
        if int(length) > MAX_BODY:
            return Refusal(413, f"a body of {int(length)} bytes; at most {MAX_BODY}")
    return None

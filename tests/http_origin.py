"""A small scripted origin for the HTTP layer's tests: real servers' habits, one rule each.

The origin serves in-memory files with single-range support, a strong ETag
and Last-Modified, like a well-behaved server. A *rule* is a function
``rule(req) -> bool`` run before the answer: it may change how this request
is answered (``req.ignore_range = True``, ``req.etag = ...``, ``req.body = ...``)
or answer itself (``req.send(...)``) and return True. Each rule below plays
one behaviour met on real servers (the cases in the project's compatibility
suite); tests combine them per path.

Loopback only; ``Origin`` is a context manager that stops its thread.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import itertools
import re
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass
class File:
    body: bytes
    etag: str | None = None
    last_modified: str | None = None

    def __post_init__(self) -> None:
        if self.etag is None:
            self.etag = '"%s"' % hashlib.sha256(self.body).hexdigest()[:16]
        if self.last_modified is None:
            self.last_modified = email.utils.formatdate(1_700_000_000, usegmt=True)


@dataclass
class Request:
    """One request as the rules see it; rules may change the answer's parts."""

    handler: "_Handler"
    method: str
    path: str
    query: dict
    headers: object
    file: File | None
    count: int                      # requests of this path so far, this one included
    range_count: int                # range requests of this path so far
    ignore_range: bool = False
    etag: str | None = None
    last_modified: str | None = None
    extra: dict = field(default_factory=dict)
    drop: set = field(default_factory=set)
    cut_after: int | None = None    # reset the connection after this many body bytes
    cap: int | None = None          # a 206 encloses at most this many bytes (Content-Range says so)
    length_lie: int = 0             # added to a 206's Content-Length (the body is right; then close)

    @property
    def client(self) -> str:
        return self.handler.client_address[0]

    def send(self, status: int, body: bytes = b"", headers: dict | None = None) -> bool:
        h = {"Content-Length": str(len(body)), **(headers or {})}
        self.handler._head(status, h)
        if self.method != "HEAD":
            self.handler.wfile.write(body)
        self.handler.origin.log.append((self.path, status, self.client))
        return True


Rule = Callable[[Request], bool]


class Origin:
    """``with Origin(files, rules) as o: o.url("/f")``; ``o.log``: (path, status, client)."""

    def __init__(self, files: dict[str, File | bytes], rules: dict[str, list[Rule]] | None = None,
                 *, host: str = "127.0.0.1", tls: tuple[str, str] | None = None,
                 rate: int = 0):
        self.files = {p: f if isinstance(f, File) else File(f) for p, f in files.items()}
        self.rules = rules or {}
        self.rate = rate
        self.log: list[tuple[str, int, str]] = []
        self._counts: dict[str, int] = {}
        self._range_counts: dict[str, int] = {}
        self._lock = threading.Lock()
        cls = _Server6 if ":" in host else _Server
        self.server = cls((host, 0), _Handler)
        self.server.origin = self  # type: ignore[attr-defined]
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
            self.scheme = "https"
        self.host = host
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    def __enter__(self) -> "Origin":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def url(self, path: str, userinfo: str = "") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{userinfo + '@' if userinfo else ''}{host}:{self.port}{path}"

    def statuses(self, path: str | None = None) -> list[int]:
        return [s for p, s, _ in list(self.log) if path is None or p == path]

    def _count(self, path: str, ranged: bool) -> tuple[int, int]:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1
            if ranged:
                self._range_counts[path] = self._range_counts.get(path, 0) + 1
            return self._counts[path], self._range_counts.get(path, 0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up, or a reset we played on purpose: nothing to report


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-origin/1"
    sys_version = ""

    @property
    def origin(self) -> Origin:
        return self.server.origin  # type: ignore[attr-defined]

    def log_message(self, *args) -> None:
        pass

    def _head(self, status: int, headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if v is not None:
                self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        try:
            self._answer(method)
        except (BrokenPipeError, ConnectionResetError, _Reset):
            self.close_connection = True

    def _answer(self, method: str) -> None:
        origin = self.origin
        parts = urlsplit(self.path)
        path = unquote(parts.path, encoding="utf-8", errors="replace")
        count, range_count = origin._count(path, "Range" in self.headers)
        file = origin.files.get(path)
        req = Request(self, method, path, parse_qs(parts.query), self.headers, file, count, range_count,
                      etag=file.etag if file else None,
                      last_modified=file.last_modified if file else None)
        for rule in origin.rules.get(path, []) + origin.rules.get("*", []):
            if rule(req):
                return
        if req.file is None:
            req.send(404, b"not found\n")
            return
        self._send_file(req)

    def _send_file(self, req: Request) -> None:
        body = req.file.body
        size = len(body)
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "ETag": req.etag, "Last-Modified": req.last_modified, **req.extra}
        rng = None if req.ignore_range else self._range(size, req)
        if rng == "bad":
            headers.update({"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            for name in req.drop:
                headers.pop(name, None)
            self._head(416, headers)
            self.origin.log.append((req.path, 416, req.client))
            return
        if rng is None:
            status, first, last = 200, 0, size - 1
        else:
            status, (first, last) = 206, rng
            if req.cap is not None:
                last = min(last, first + req.cap - 1)
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(last - first + 1)
        if status == 206 and req.length_lie:
            headers["Content-Length"] = str(last - first + 1 + req.length_lie)
            headers["Connection"] = "close"
            self.close_connection = True
        for name in req.drop:
            headers.pop(name, None)
        self._head(status, headers)
        self.origin.log.append((req.path, status, req.client))
        if req.method == "HEAD":
            return
        self._write(body[first:last + 1], req.cut_after)

    def _range(self, size: int, req: Request):
        value = self.headers.get("Range")
        if not value:
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range.strip() not in (req.etag, req.last_modified):
            return None  # RFC 9110 section 13.1.5: another version: the whole file
        m = _RANGE.match(value)
        if not m or not m.group(1):
            return None
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else size - 1
        if first >= size or last < first:
            return "bad"
        return first, min(last, size - 1)

    def _write(self, data: bytes, cut_after: int | None) -> None:
        rate = self.origin.rate
        started = time.monotonic()
        sent = 0
        for i in range(0, len(data), 64 * 1024):
            block = data[i:i + 64 * 1024]
            if cut_after is not None and sent + len(block) > cut_after:
                self.wfile.write(block[: max(0, cut_after - sent)])
                self.wfile.flush()
                self._reset()
            self.wfile.write(block)
            sent += len(block)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        raise _Reset()


class _Reset(Exception):
    pass


# -- rules: one real-server habit each ------------------------------------------------------------------
def every_nth_range_ignored(n: int) -> Rule:
    """A load balancer where one backend in ``n`` ignores Range (200 + whole file)."""
    def rule(req: Request) -> bool:
        if "Range" in req.headers and req.range_count % n == 0 and req.range_count > 1:
            req.ignore_range = True
        return False
    return rule


def ranges_ignored(req: Request) -> bool:
    """A server that advertises ranges and ignores every Range header."""
    req.ignore_range = True
    return False


def ranges_only_for_the_first_request(req: Request) -> bool:
    """Honours the first range request of a path (the probe's), ignores every later one."""
    req.ignore_range = req.count > 1
    return False


def if_range_etag_gives_200(req: Request) -> bool:
    """A CDN that answers 200 whenever If-Range carries an entity-tag, even the current one."""
    value = (req.headers.get("If-Range") or "").strip()
    if value.startswith('"') or value.startswith("W/"):
        req.ignore_range = True
    return False


def weak_etag_only(req: Request) -> bool:
    """Only a weak ETag; an If-Range with it never matches (RFC 9110 section 13.1.5)."""
    req.etag = "W/" + (req.file.etag if req.file else '"x"')
    value = (req.headers.get("If-Range") or "").strip()
    if value.startswith('"') or value.startswith("W/"):
        req.ignore_range = True
    return False


def no_etag(req: Request) -> bool:
    req.etag = None
    return False


def unknown_total(req: Request) -> bool:
    """Range answers say ``bytes a-b/*``; a plain GET is chunked with no length."""
    if req.file is None:
        return False
    if "Range" in req.headers:
        m = _RANGE.match(req.headers["Range"])
        body = req.file.body
        first = int(m.group(1))
        last = min(int(m.group(2) or len(body) - 1), len(body) - 1)
        return req.send(206, body[first:last + 1], {"Content-Range": f"bytes {first}-{last}/*"})
    h = req.handler
    h._head(200, {"Transfer-Encoding": "chunked"})
    for i in range(0, len(req.file.body), 65536):
        block = req.file.body[i:i + 65536]
        h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
    h.wfile.write(b"0\r\n\r\n")
    req.handler.origin.log.append((req.path, 200, req.client))
    return True


def head_refused(req: Request) -> bool:
    return req.method == "HEAD" and req.send(405, b"no HEAD\n", {"Allow": "GET"})


def head_length_differs(req: Request) -> bool:
    if req.method != "HEAD" or req.file is None:
        return False
    req.handler._head(200, {"Content-Length": str(len(req.file.body) + 2)})
    return True


def signed_redirect(ttl: float, key: bytes = b"k", clock: Callable[[], float] = time.time) -> Rule:
    """``/x`` → 302 → ``/signed/x?exp=T&sig=...``, valid for ``ttl`` seconds of ``clock``
    (checked at the start of a request, like S3); afterwards 403."""
    def sign(path: str, exp: str) -> str:
        return hmac.new(key, f"{path}|{exp}".encode(), hashlib.sha256).hexdigest()[:16]

    def rule(req: Request) -> bool:
        if not req.path.startswith("/signed/"):
            exp = f"{clock() + ttl:.3f}"
            return req.send(302, headers={"Location": f"/signed{req.path}?exp={exp}&sig={sign(req.path, exp)}"})
        exp = req.query.get("exp", ["0"])[0]
        original = req.path[len("/signed"):]
        if req.query.get("sig", [""])[0] != sign(original, exp) or clock() > float(exp):
            return req.send(403, b"<Error>Request has expired</Error>")
        req.file = req.handler.origin.files.get(original)
        return False
    return rule


def address_bound_redirect(req: Request) -> bool:
    """``/x`` → 302 → ``/bound/x?ip=CLIENT``; only that address may fetch it."""
    if not req.path.startswith("/bound/"):
        return req.send(302, headers={"Location": f"/bound{req.path}?ip={req.client}"})
    if req.query.get("ip", [""])[0] != req.client:
        return req.send(403, b"issued to another address\n")
    req.file = req.handler.origin.files.get(req.path[len("/bound"):])
    return False


def cookie_on_redirect(req: Request) -> bool:
    """``/early/x`` sets a cookie on its 302 to ``/x``, which needs that cookie."""
    if req.path.startswith("/early/"):
        return req.send(302, headers={"Location": req.path[len("/early"):],
                                      "Set-Cookie": "dl=7f3a; Path=/; HttpOnly"})
    if "dl=7f3a" not in (req.headers.get("Cookie") or ""):
        return req.send(403, b"no session cookie\n")
    return False


def needs_cookie(name: str, value: str) -> Rule:
    def rule(req: Request) -> bool:
        if f"{name}={value}" not in (req.headers.get("Cookie") or ""):
            return req.send(403, b"no cookie\n")
        return False
    return rule


def browser_user_agent_only(req: Request) -> bool:
    if not (req.headers.get("User-Agent") or "").startswith("Mozilla/"):
        return req.send(403, b"Direct access is not allowed.\n")
    return False


def needs_header(name: str, value: str) -> Rule:
    def rule(req: Request) -> bool:
        if req.headers.get(name) != value:
            return req.send(403, f"needs {name}\n".encode())
        return False
    return rule


def basic_auth(user: str, password: str) -> Rule:
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def rule(req: Request) -> bool:
        if req.headers.get("Authorization") != want:
            return req.send(401, b"authentication required\n", {"WWW-Authenticate": 'Basic realm="f"'})
        return False
    return rule


def content_disposition(value: str) -> Rule:
    def rule(req: Request) -> bool:
        req.extra["Content-Disposition"] = value
        return False
    return rule


def content_encoding(coding: str) -> Rule:
    """Apache's ``AddEncoding x-gzip .gz``: every answer labelled, ranges in encoded bytes."""
    def rule(req: Request) -> bool:
        req.extra["Content-Encoding"] = coding
        return False
    return rule


def chunked_bodies(req: Request) -> bool:
    """Every 200/206 body chunked, no Content-Length; ranges still carry Content-Range."""
    if req.file is None or req.method == "HEAD":
        return False
    h = req.handler
    size = len(req.file.body)
    rng = None if req.ignore_range else h._range(size, req)
    if rng in (None, "bad"):
        status, (first, last), extra = 200, (0, size - 1), {}
    else:
        status, (first, last) = 206, rng
        extra = {"Content-Range": f"bytes {first}-{last}/{size}"}
    h._head(status, {"Transfer-Encoding": "chunked", "ETag": req.etag,
                     "Last-Modified": req.last_modified, **extra})
    data = req.file.body[first:last + 1]
    for i in range(0, len(data), 65536):
        block = data[i:i + 65536]
        h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
    h.wfile.write(b"0\r\n\r\n")
    h.origin.log.append((req.path, status, req.client))
    return True


def empty_416_without_content_range(req: Request) -> bool:
    """Apache's answer for a range of an empty file: 416 with no Content-Range."""
    if req.file is not None and not req.file.body and "Range" in req.headers:
        return req.send(416, b"")
    return False


def per_client_limit(limit: int) -> Rule:
    """At most ``limit`` requests at once per client address, else 503 + Retry-After: 1."""
    active: dict[str, int] = {}
    lock = threading.Lock()

    def rule(req: Request) -> bool:
        with lock:
            if active.get(req.client, 0) >= limit:
                busy = True
            else:
                busy = False
                active[req.client] = active.get(req.client, 0) + 1
        if busy:
            return req.send(503, b"too many\n", {"Retry-After": "1"})
        try:
            req.handler._send_file(req)
        finally:
            with lock:
                active[req.client] -= 1
        return True
    return rule


def past_end_416(req: Request) -> bool:
    """416 for a range whose last byte is past the end, instead of clamping it."""
    m = _RANGE.match(req.headers.get("Range") or "")
    if m and m.group(2) and req.file is not None and int(m.group(2)) >= len(req.file.body):
        return req.send(416, b"", {"Content-Range": f"bytes */{len(req.file.body)}"})
    return False


def reset_every_nth(n: int) -> Rule:
    """One answer in ``n`` is cut by a TCP reset after half its body."""
    counter = itertools.count(1)

    def rule(req: Request) -> bool:
        if req.file is not None and next(counter) % n == 0:
            req.cut_after = max(1, len(req.file.body) // 4)
        return False
    return rule


def replaced_after(nbytes_requests: int, new: File) -> Rule:
    """After ``nbytes_requests`` requests of the path, a new version of the file is served."""
    def rule(req: Request) -> bool:
        if req.count > nbytes_requests:
            req.file, req.etag, req.last_modified = new, new.etag, new.last_modified
        return False
    return rule


def etag_per_connection(edges: int = 2) -> Rule:
    """A CDN whose ``edges`` edges each give the same bytes their own strong ETag,
    one edge per connection in turn (Last-Modified and length agree); If-Range
    with another edge's ETag gets 200 and the whole file."""
    turn = itertools.count()

    def rule(req: Request) -> bool:
        h = req.handler
        if not hasattr(h, "edge"):
            h.edge = next(turn) % edges  # the handler lives as long as its connection
        if req.etag:
            req.etag = f'"edge{h.edge}-{req.etag.strip(chr(34))}"'
        return False
    return rule


def capped_ranges(cap: int) -> Rule:
    """Every 206 encloses at most ``cap`` bytes, whatever was asked, with a true Content-Range."""
    def rule(req: Request) -> bool:
        req.cap = cap
        return False
    return rule


def content_length_off_by(delta: int) -> Rule:
    """206 answers say a Content-Length ``delta`` off the range (the body is the range's
    bytes, then the connection closes); a plain GET is right."""
    def rule(req: Request) -> bool:
        req.length_lie = delta
        return False
    return rule


def multipart_ranges(parts: int = 2) -> Rule:
    """Each range is answered as ``multipart/byteranges``, split into ``parts`` parts."""
    def rule(req: Request) -> bool:
        if req.file is None or "Range" not in req.headers or req.method == "HEAD":
            return False
        body = req.file.body
        rng = req.handler._range(len(body), req)
        if rng in (None, "bad"):
            return False
        first, last = rng
        step = max(1, (last - first + 1 + parts - 1) // parts)
        out = b""
        for a in range(first, last + 1, step):
            b = min(last, a + step - 1)
            out += (f"--XB\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Range: bytes {a}-{b}/{len(body)}\r\n\r\n").encode() + body[a:b + 1] + b"\r\n"
        out += b"--XB--\r\n"
        return req.send(206, out, {"Content-Type": "multipart/byteranges; boundary=XB",
                                   "ETag": req.etag, "Last-Modified": req.last_modified})
    return rule


def no_content_range_on_206(req: Request) -> bool:
    req.drop.add("Content-Range") if "Range" in req.headers else None
    return False


def malformed_content_range(req: Request) -> bool:
    """``Content-Range: bytes=a-b/N`` (the request's syntax) on every answer."""
    if req.file is None or req.method == "HEAD":
        return False
    h = req.handler
    size = len(req.file.body)
    rng = h._range(size, req)
    first, last = (0, size - 1) if rng in (None, "bad") else rng
    status = 200 if rng in (None, "bad") else 206
    data = req.file.body[first:last + 1]
    h._head(status, {"Content-Length": str(len(data)), "Content-Range": f"bytes={first}-{last}/{size}",
                     "ETag": req.etag})
    h.wfile.write(data)
    h.origin.log.append((req.path, status, req.client))
    return True

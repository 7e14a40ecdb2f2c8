"""A local origin HTTP server: for swift's tests, its demo and its benchmark.

swift downloads from web servers it does not control, over links it does not
own. To test and measure it without the internet this module plays both: it
serves the files of one directory over HTTP/1.1 with what a real file host
offers, and imposes what a real internet link and a badly behaved host do.

What a real host offers:

- ``GET`` and ``HEAD``, keep-alive, single byte ranges (``bytes=a-b``,
  ``bytes=a-``, ``bytes=-n``; 416 when unsatisfiable; several ranges get the
  whole body, as many servers do), ``Accept-Ranges``, a strong ``ETag``,
  ``Last-Modified``, ``If-Range``, per-path ``Content-Disposition``.
- The ETag is built from the file's inode, size and mtime in nanoseconds
  (the inode plays the part of a version counter, and unlike one held in
  memory it also changes when something else replaces the file).
  :meth:`OriginServer.change` replaces a file *atomically* (new inode, new
  bytes, an mtime at least one second later) the way hosts publish a new
  version, so both validators change, and a response already under way
  keeps sending the old version's bytes from its open file descriptor. A
  client notices the change on its next request: ``If-Range`` no longer
  matches and it gets 200 with the whole new body instead of 206.

What a link imposes:

- A bandwidth cap per client IP: one token bucket shared by all of that
  IP's connections (how a per-machine uplink or a proxy quota behaves),
  with per-IP overrides; and separately a cap per connection (how many file
  hosts throttle). The buckets run in *debt*: a sender takes its chunk's
  tokens at once and sleeps until the debt is paid. That keeps the long-run
  rate exact (time is read from ``time.monotonic``; oversleeping is not
  lost, it refills the bucket) and serves the connections of one IP in
  turn, so they share the cap fairly.

What a bad host does, on cue: every switch of :class:`Behaviour` (ignore
ranges, omit the length, fail with a status, reset or stall after N bytes,
a short body, a lying ``Content-Range``, a bogus gzip encoding, changing
the file now or after N bytes, a redirect). Switches are set per path or for
every path ("*"). Permanent settings are the base layer; a setting limited
to the next ``count`` requests (and/or to one client IP, ``only_client``) is
queued over it, so a test scripts faults in order: each request takes the
first queued rule that applies to its client.

A stall sleeps on the server's stop event and checks that the client is
still there, so it never holds ``stop()`` or a thread hostage; ``stop()``
shuts every open connection down, which also frees handlers blocked on a
client that stopped reading, and joins them within a deadline. Past
``max_connections`` a connection is answered 503.

Counters: body bytes sent per client IP and per path, requests per client
IP and per path. A chunk is counted just before it is handed to the kernel
and corrected by what was not sent, so a client that has read the last byte
finds it counted, and an aborted transfer counts only what left.

Uncapped, well-behaved responses go out with ``os.sendfile`` in 4 MiB calls
(the origin is not what a loopback benchmark measures); capped ones use
``os.sendfile`` too, in chunks sized to the rate. Nothing reads a whole file
into memory.

Control over HTTP (the same keys as the Python methods):
``GET /_origin/stats``, ``POST /_origin/reset-stats``,
``GET /_origin/config``, ``POST /_origin/config`` (a JSON object: ``path``,
caps and switches), ``POST /_origin/clear`` (optional ``{"path": ...}``).

Command line (for an origin in its own process or network namespace)::

    python3 -m swiftlab.origin --root DIR [--host H] [--port P]
        [--host-rate 2M] [--conn-rate 1M] [--rate-for 127.0.0.3=200K]
        [--make NAME:SIZE ...] [--port-file F]
"""

from __future__ import annotations

import argparse
import array
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import random
import select
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

KiB = 1 << 10
MiB = 1 << 20

#: Bytes per ``os.sendfile`` call on the uncapped path: big enough that the
#: syscall cost vanishes, small enough that counters and stop() stay current.
SENDFILE_CHUNK = 4 * MiB
#: Smallest and largest chunk on a capped path (sized to about 20 ms of the rate).
MIN_CHUNK = 64 * KiB
MAX_CHUNK = 1 * MiB
#: make_file's unit of generation, and the spacing of its offset stamps.
BLOCK = 1 * MiB
STAMP_EVERY = 4 * KiB

CONTROL_PREFIX = "/_origin/"


# -- test files --------------------------------------------------------------------------------------
def _block_table(seed: int | str | bytes, index: int) -> bytes:
    """A byte permutation x -> (a*x + c) mod 256 (a odd) chosen by seed and block index."""
    digest = hashlib.blake2b(f"{seed!r}:{index}".encode(), digest_size=2).digest()
    a, c = digest[0] | 1, digest[1]
    return bytes((a * x + c) & 0xFF for x in range(256))


def make_file(path: Path | str, size: int, seed: int | str | bytes = 0) -> str:
    """Write ``size`` deterministic pseudo-random bytes to ``path``; return their sha256 hex.

    One random 1 MiB block (``random.Random(seed)``) is the raw material;
    block ``i`` is that block passed through a byte permutation chosen by
    ``(seed, i)``, and every 4 KiB carries a stamp of its absolute offset
    and the seed. So a block, or any 4 KiB-aligned piece, written at the
    wrong offset never hashes the same, and the whole runs at several
    hundred MB/s. The file is written beside ``path`` and renamed over it,
    so readers never see it half-written.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    path = Path(path)
    base = random.Random(seed).randbytes(BLOCK)
    seed_word = zlib.crc32(repr(seed).encode()) | (zlib.crc32(b"swift" + repr(seed).encode()) << 32)
    words_per_stamp = STAMP_EVERY // 8
    h = hashlib.sha256()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            written, index = 0, 0
            while written < size:
                block = bytearray(base.translate(_block_table(seed, index)))
                words = memoryview(block).cast("Q")
                offsets = array.array("Q", range(written, written + BLOCK, STAMP_EVERY))
                seeds = array.array("Q", [seed_word]) * len(offsets)
                if sys.byteorder == "big":  # the same bytes on every machine
                    offsets.byteswap()
                    seeds.byteswap()
                words[::words_per_stamp] = offsets
                words[1::words_per_stamp] = seeds
                words.release()
                n = min(BLOCK, size - written)
                view = memoryview(block)[:n]
                f.write(view)
                h.update(view)
                written += n
                index += 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return h.hexdigest()


# -- rate limiting ----------------------------------------------------------------------------------
class Stopping(Exception):
    """The server is shutting down: the response is abandoned."""


def default_burst(rate: float) -> float:
    """About 50 ms worth of the rate, at least 64 KiB."""
    return max(64.0 * KiB, rate * 0.05)


class TokenBucket:
    """A bandwidth cap in bytes/s, shared by every thread that takes from it.

    A taker takes its whole chunk at once, possibly driving the bucket into
    debt, and then sleeps until the debt it is part of is paid. Concurrent
    takers therefore queue in the order they asked and each waits its
    turn, which is fair; and since the balance is computed from the clock,
    not from sleeps, a late wake-up costs no bandwidth.
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = float(rate)
        self._fixed_burst = burst
        self._burst = float(burst) if burst is not None else default_burst(self._rate)
        self._tokens = self._burst
        self._stamp = clock()

    @property
    def rate(self) -> float:
        return self._rate

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def set_rate(self, rate: float) -> None:
        """Change the rate; a debt already run up is kept."""
        if rate <= 0:
            raise ValueError("rate must be > 0")
        with self._lock:
            self._refill()
            self._rate = float(rate)
            if self._fixed_burst is None:
                self._burst = default_burst(self._rate)
            self._tokens = min(self._tokens, self._burst)

    def reserve(self, n: int) -> float:
        """Take ``n`` tokens now; return the seconds to wait before sending them."""
        with self._lock:
            self._refill()
            self._tokens -= n
            return max(0.0, -self._tokens) / self._rate

    def take(self, n: int, stop: threading.Event) -> None:
        """Take ``n`` tokens and sleep off the debt; raise :class:`Stopping` if ``stop`` is set."""
        wait = self.reserve(n)
        if wait > 0 and stop.wait(wait):
            raise Stopping()


# -- misbehaviour --------------------------------------------------------------------------------------
@dataclass
class Behaviour:
    """How to answer one request. The defaults are a well-behaved file host.

    Byte counts are of this response's body; a reset or stall set at or past
    its end does not happen (``change`` at its end does, after the last byte).
    """

    ignore_ranges: bool = False          # 200 with the whole body to range requests
    omit_length: bool = False            # no Content-Length, no Accept-Ranges; close-delimited
    fail: int | None = None              # answer with this status instead
    retry_after: str | None = None       # ... and this Retry-After header
    reset_after: int | None = None       # send N body bytes, then reset the connection (RST)
    stall_after: int | None = None       # send N body bytes, then send nothing for stall_seconds
    stall_seconds: float = 3600.0        # (then carry on, if the client is still there)
    short_body: int | None = None        # send this many bytes fewer than promised, then close
    wrong_content_range: bool = False    # a Content-Range shifted by one byte
    gzip: bool = False                   # claim Content-Encoding: gzip (the bytes are not)
    change: bool | int | None = None     # True: a new file version before answering;
    #                                      N: after N body bytes of this response
    redirect: str | None = None          # answer with a redirect to this URL
    redirect_status: int = 302
    content_disposition: str | None = None
    cache_control: str | None = None     # a Cache-Control header (e.g. "private")


_BEHAVIOUR_FIELDS = {f.name: f for f in fields(Behaviour)}
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
    return value


def _check_setting(name: str, value: Any) -> Any:
    """Validate one switch; return its normalised value (None: back to the default)."""
    if name not in _BEHAVIOUR_FIELDS:
        raise ValueError(f"unknown origin setting: {name}")
    if value is None:
        return None
    if name in ("ignore_ranges", "omit_length", "wrong_content_range", "gzip"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name in ("reset_after", "stall_after", "short_body"):
        return _non_negative_int(name, value)
    if name == "fail":
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise ValueError(f"fail must be an HTTP status, not {value!r}")
        return value
    if name == "stall_seconds":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError("stall_seconds must be a number >= 0")
        return float(value)
    if name == "change":
        return value if isinstance(value, bool) else _non_negative_int(name, value)
    if name == "redirect_status":
        if value not in _REDIRECT_STATUSES:
            raise ValueError(f"redirect_status must be one of {sorted(_REDIRECT_STATUSES)}")
        return value
    # retry_after, redirect, content_disposition, cache_control: header values
    text = str(value)
    if any(ch in text for ch in "\r\n\0"):
        raise ValueError(f"{name} must be a single-line header value")
    return text


@dataclass
class _Rule:
    settings: dict[str, Any]
    count: int | None          # requests left; None: no limit
    only_client: str | None    # client IP it applies to; None: every client

    def applies_to(self, ip: str) -> bool:
        return self.only_client is None or self.only_client == ip


class RuleBook:
    """Misbehaviour per path: permanent settings, and queued on-cue rules over them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base: dict[str, dict[str, Any]] = {}
        self._queued: dict[str, list[_Rule]] = {}

    def set(self, path: str, settings: dict[str, Any], count: int | None = None,
            only_client: str | None = None) -> None:
        checked = {name: _check_setting(name, value) for name, value in settings.items()}
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError("count must be an integer >= 1")
        if not checked and count is None:
            raise ValueError("a rule for one client needs settings or a count")
        with self._lock:
            if count is None and only_client is None:
                base = self._base.setdefault(path, {})
                for name, value in checked.items():
                    if value is None or value is False:
                        base.pop(name, None)
                    else:
                        base[name] = value
                if not base:
                    del self._base[path]
            else:
                rule = _Rule({k: v for k, v in checked.items() if v is not None}, count, only_client)
                self._queued.setdefault(path, []).append(rule)

    def clear(self, path: str | None = None) -> None:
        with self._lock:
            if path is None:
                self._base.clear()
                self._queued.clear()
            else:
                self._base.pop(path, None)
                self._queued.pop(path, None)

    def take(self, paths: Iterable[str], ip: str) -> Behaviour:
        """The behaviour for one request to any of ``paths``; spends one use of each rule applied."""
        keys = ["*", *dict.fromkeys(p for p in paths if p != "*")]
        merged: dict[str, Any] = {}
        with self._lock:
            for key in keys:
                merged.update(self._base.get(key, {}))
            for key in keys:
                queue = self._queued.get(key)
                rule = next((r for r in queue if r.applies_to(ip)), None) if queue else None
                if rule is None:
                    continue
                merged.update(rule.settings)
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        queue.remove(rule)
                        if not queue:
                            del self._queued[key]
        return Behaviour(**merged)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "paths": {k: dict(v) for k, v in self._base.items()},
                "queued": {k: [asdict(r) for r in q] for k, q in self._queued.items()},
            }


# -- counters --------------------------------------------------------------------------------------------
@dataclass
class Stats:
    bytes_by_client: dict[str, int] = field(default_factory=dict)
    bytes_by_path: dict[str, int] = field(default_factory=dict)
    requests_by_client: dict[str, int] = field(default_factory=dict)
    requests_by_path: dict[str, int] = field(default_factory=dict)


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = Stats()

    def sent(self, ip: str, path: str, n: int) -> None:
        with self._lock:
            s = self._stats
            s.bytes_by_client[ip] = s.bytes_by_client.get(ip, 0) + n
            s.bytes_by_path[path] = s.bytes_by_path.get(path, 0) + n

    def request(self, ip: str, path: str) -> None:
        with self._lock:
            s = self._stats
            s.requests_by_client[ip] = s.requests_by_client.get(ip, 0) + 1
            s.requests_by_path[path] = s.requests_by_path.get(path, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(value) for name, value in vars(self._stats).items()}

    def reset(self) -> None:
        with self._lock:
            self._stats = Stats()


# -- ranges ------------------------------------------------------------------------------------------------
class RangeNotSatisfiable(Exception):
    """The Range header asks only for bytes beyond the end: answer 416."""


def _digits(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range of a ``size``-byte body as (start, end-exclusive).

    None means "ignore the header, send the whole body" (not bytes, several
    ranges, malformed); :class:`RangeNotSatisfiable` means 416.
    """
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    if first.strip() == "":
        n = _digits(last)
        if n is None:
            return None
        if n == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - n), size
    a = _digits(first)
    b = _digits(last) if last.strip() else None
    if a is None or (last.strip() and (b is None or b < a)):
        return None
    if a >= size:
        raise RangeNotSatisfiable()
    return a, size if b is None else min(b, size - 1) + 1


# -- request targets -------------------------------------------------------------------------------------
def _raw_path(target: str) -> str:
    """The path of a request target, without query or fragment (origin-form or absolute-form)."""
    if target.startswith("/"):
        return target.split("?", 1)[0].split("#", 1)[0]
    return urlsplit(target).path or "/"


def _decoded_path(raw: str) -> str | None:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        return None


def _client_key(ip: str) -> str:
    """Client IPs as counters and caps know them (an IPv4-mapped IPv6 address as IPv4)."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


# -- the HTTP server ---------------------------------------------------------------------------------------
class _HTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows its connections, so it can close and join them."""

    daemon_threads = True
    block_on_close = False      # stop() joins the handlers itself, with a deadline
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple, handler: type[BaseHTTPRequestHandler], origin: "OriginServer",
                 max_connections: int):
        self.address_family = _address_family(address[0])
        self.origin = origin
        self.max_connections = max_connections
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._refused: set[socket.socket] = set()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] in ("::", ""):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        # HTTPServer.server_bind would also look the address up with getfqdn(),
        # a reverse DNS query: slow without DNS, and no business of a test server.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: socket.socket, client_address: tuple) -> None:
        """One thread per connection. Past ``max_connections`` the thread only reads the
        request and answers 503 (a reply the client can read, unlike a bare close)."""
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name=f"origin-conn-{client_address[0]}", daemon=True)
        with self._conn_lock:
            if self.origin.stopping.is_set():
                thread = None
            else:
                if len(self._connections) - len(self._refused) >= self.max_connections:
                    self._refused.add(request)
                    log.debug("origin: %d connections open, refusing %s", self.max_connections, client_address)
                self._connections[request] = thread
        if thread is None:
            self.shutdown_request(request)
        else:
            thread.start()

    def process_request_thread(self, request: socket.socket, client_address: tuple) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._connections.pop(request, None)
                self._refused.discard(request)

    def is_refused(self, request: socket.socket) -> bool:
        with self._conn_lock:
            return request in self._refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("origin: error serving %s", client_address, exc_info=True)

    def open_connections(self) -> int:
        with self._conn_lock:
            return len(self._connections) - len(self._refused)

    def abort_connections(self) -> list[threading.Thread]:
        """Shut every open connection down (unblocking its handler); return the handlers."""
        with self._conn_lock:
            items = list(self._connections.items())
        for sock, _ in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return [thread for _, thread in items]


def _address_family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host.split("%")[0]).version == 6 else socket.AF_INET
    except ValueError:
        if host == "":
            return socket.AF_INET
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "swift-origin/1"
    sys_version = ""
    server: _HTTPServer
    timeout = 60.0                      # idle keep-alive and a client that stops reading

    _abort = False                      # close with RST instead of FIN
    _refuse = False                     # over max_connections: answer 503 and close
    _conn_bucket: TokenBucket | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("origin %s: " + format, self.client_address[0], *args)

    def setup(self) -> None:
        super().setup()
        self._refuse = self.server.is_refused(self.request)
        if self._refuse:
            self.connection.settimeout(min(self.timeout or 2.0, 2.0))

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self._refuse:  # over max_connections
            self.close_connection = True
            self._reply(503, b"too many connections\n", {"Retry-After": "1", "Connection": "close"},
                        head=self.command == "HEAD")
            return False
        return True

    def finish(self) -> None:
        super().finish()
        if self._abort:
            # rfile is closed now, so this really closes the descriptor, and with
            # SO_LINGER 0 the kernel sends RST. The server's own shutdown(SHUT_WR)
            # afterwards fails harmlessly on the closed socket.
            self.connection.close()

    @property
    def origin(self) -> "OriginServer":
        return self.server.origin

    @property
    def client_ip(self) -> str:
        return _client_key(self.client_address[0])

    # -- small responses --------------------------------------------------------------------------------
    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               head: bool = False, content_type: str = "text/plain; charset=utf-8") -> None:
        if status < 200 or status in (204, 304):
            body = b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._reply(status, json.dumps(obj).encode(), content_type="application/json")

    # -- control API ----------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MiB:
            self.close_connection = True
            return self._json(413 if length > MiB else 400, {"error": "bad Content-Length"})
        body = self.rfile.read(length) if length else b""
        path = _raw_path(self.path)
        try:
            options = json.loads(body or b"{}")
            if not isinstance(options, dict):
                raise ValueError("expected a JSON object")
            if path == CONTROL_PREFIX + "config":
                self.origin.configure(**options)
            elif path == CONTROL_PREFIX + "clear":
                self.origin.clear(**options)
            elif path == CONTROL_PREFIX + "reset-stats":
                self.origin.reset_stats()
            else:
                return self._json(404, {"error": "no such control endpoint"})
        except (ValueError, TypeError) as exc:
            return self._json(400, {"error": str(exc)})
        self._json(200, {"ok": True})

    def do_GET(self) -> None:  # noqa: N802
        path = _raw_path(self.path)
        if path == CONTROL_PREFIX + "stats":
            return self._json(200, self.origin.stats())
        if path == CONTROL_PREFIX + "config":
            return self._json(200, self.origin.config())
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    # -- files ------------------------------------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        origin = self.origin
        ip = self.client_ip
        raw = _raw_path(self.path)
        decoded = _decoded_path(raw)
        key = decoded if decoded is not None else raw
        origin.counters.request(ip, key)
        b = origin.rules.take([raw, key], ip)
        if b.redirect is not None:
            return self._reply(b.redirect_status, b"", {"Location": b.redirect}, head)
        if b.fail is not None:
            headers = {"Retry-After": b.retry_after} if b.retry_after is not None else {}
            return self._reply(b.fail, f"{b.fail} (the origin was told to fail)\n".encode(), headers, head)
        file = origin.resolve(decoded) if decoded is not None else None
        if file is None:
            return self._reply(404, b"not found\n", head=head)
        if b.change is True:
            origin.change(key)
        try:
            f = open(file, "rb")
        except OSError:
            return self._reply(404, b"not found\n", head=head)
        with f:
            self._serve_open_file(f.fileno(), key, ip, b, head)

    def _serve_open_file(self, fd: int, key: str, ip: str, b: Behaviour, head: bool) -> None:
        st = os.fstat(fd)
        size = st.st_size
        etag = f'"{st.st_ino:x}-{size:x}-{st.st_mtime_ns:x}"'
        last_modified = email.utils.formatdate(st.st_mtime_ns / 1e9, usegmt=True)
        common = {"ETag": etag, "Last-Modified": last_modified}
        if b.cache_control is not None:
            common["Cache-Control"] = b.cache_control
        start, end, status = 0, size, 200
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        use_range = range_header is not None and not b.ignore_ranges and not b.omit_length
        if use_range and if_range is not None and if_range.strip() not in (etag, last_modified):
            use_range = False  # the client holds another version: it gets this one whole
        if use_range:
            try:
                parsed = parse_range(range_header, size)
            except RangeNotSatisfiable:
                return self._reply(416, b"", {"Content-Range": f"bytes */{size}",
                                              "Accept-Ranges": "bytes", **common}, head)
            if parsed is not None:
                (start, end), status = parsed, 206

        self.send_response(status)
        if b.omit_length:
            self.send_header("Connection", "close")  # the end of the body is the end of the connection
            self.close_connection = True
        else:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
        if status == 206:
            shift = 0
            if b.wrong_content_range:
                shift = 1 if end < size or start == 0 else -1
            self.send_header("Content-Range", f"bytes {start + shift}-{end - 1 + shift}/{size}")
        for name, value in common.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        if b.gzip:
            self.send_header("Content-Encoding", "gzip")
        if b.content_disposition is not None:
            self.send_header("Content-Disposition", b.content_disposition)
        self.end_headers()
        if head:
            return
        try:
            self._send_body(fd, start, end, b, ip, key)
        except (Stopping, OSError) as exc:  # OSError: reset, broken pipe, send timeout
            log.debug("origin: %s %s from %s ended early: %r", self.command, key, ip, exc)
            self.close_connection = True

    def _send_body(self, fd: int, start: int, end: int, b: Behaviour, ip: str, key: str) -> None:
        """Send bytes [start, end) of ``fd``, applying caps and byte-triggered misbehaviour."""
        origin = self.origin
        stop_at = end - min(b.short_body or 0, end - start)
        change_at = b.change if b.change is not True and b.change is not False else None
        stall_at = b.stall_after
        offset = start
        while True:
            sent = offset - start
            if change_at is not None and sent >= change_at:
                change_at = None
                origin.change(key)  # the open descriptor keeps the old version's bytes
            if offset >= stop_at:
                break  # a reset or stall set past the end of this body does not happen
            if b.reset_after is not None and sent >= b.reset_after:
                return self._reset()
            if stall_at is not None and sent >= stall_at:
                stall_at = None
                self._stall(b.stall_seconds)
            if origin.stopping.is_set():
                raise Stopping()
            n = stop_at - offset
            for trigger in (b.reset_after, stall_at, change_at):
                if trigger is not None:
                    n = min(n, trigger - sent)
            buckets = [bkt for bkt in (origin.host_bucket(ip), self._connection_bucket()) if bkt]
            if buckets:
                n = min(n, max(MIN_CHUNK, min(MAX_CHUNK, int(min(x.rate for x in buckets) / 50))))
                for bucket in buckets:
                    bucket.take(n, origin.stopping)
            else:
                n = min(n, SENDFILE_CHUNK)
            self._sendfile(fd, offset, n, ip, key)
            offset += n
        if b.short_body:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_WR)

    def _connection_bucket(self) -> TokenBucket | None:
        rate = self.origin.conn_rate
        if not rate:
            return None
        if self._conn_bucket is None:
            self._conn_bucket = TokenBucket(rate)
        elif self._conn_bucket.rate != rate:
            self._conn_bucket.set_rate(rate)
        return self._conn_bucket

    def _sendfile(self, fd: int, offset: int, count: int, ip: str, key: str) -> None:
        """``os.sendfile`` exactly ``count`` bytes, counting them as they go."""
        sock = self.connection
        counters = self.origin.counters
        timeout = sock.gettimeout()
        while count > 0:
            counters.sent(ip, key, count)  # before: a client that has the bytes finds them counted
            try:
                n = os.sendfile(sock.fileno(), fd, offset, count)
            except BlockingIOError:
                n = -1
            except BaseException:
                counters.sent(ip, key, -count)
                raise
            if n < count:
                counters.sent(ip, key, max(n, 0) - count)
            if n == 0:
                raise OSError("the file ended early")
            if n < 0:  # the socket buffer is full (Python keeps timeout sockets non-blocking)
                self._wait_writable(timeout)
                continue
            offset += n
            count -= n

    def _wait_writable(self, timeout: float | None) -> None:
        poller = select.poll()
        poller.register(self.connection.fileno(), select.POLLOUT)
        if not poller.poll(None if timeout is None else timeout * 1000):
            raise TimeoutError("the client stopped reading")

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._abort = True
        self.close_connection = True

    def _stall(self, seconds: float) -> None:
        """Send nothing for ``seconds``; end early when the server stops or the client leaves."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.origin.stopping.wait(min(remaining, 0.25)):
                raise Stopping()
            if self._client_gone():
                raise ConnectionResetError("the client left during a stall")

    def _client_gone(self) -> bool:
        poller = select.poll()
        poller.register(self.connection.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLHUP | select.POLLERR):
            return True
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


# -- the origin --------------------------------------------------------------------------------------------
_UNSET: Any = object()


class OriginServer:
    """A local file host with counters, caps and misbehaviour switches; see the module docstring.

    ``host_rate`` caps each client IP (bytes/s, one bucket for all its
    connections), ``host_rates`` overrides that per IP, ``conn_rate`` caps
    each connection. None or 0: uncapped.
    """

    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = 0,
                 host_rate: float | None = None, conn_rate: float | None = None,
                 host_rates: dict[str, float] | None = None, *,
                 max_connections: int = 512, idle_timeout: float = 60.0):
        self.root = Path(root).resolve()
        self.host = host
        self.host_rate: float | None = host_rate or None
        self.conn_rate: float | None = conn_rate or None
        self.host_rates: dict[str, float] = {_client_key(k): float(v) for k, v in (host_rates or {}).items()}
        self.rules = RuleBook()
        self.counters = Counters()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._change_lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False
        handler = type("_OriginHandler", (_Handler,), {"timeout": idle_timeout})
        self._httpd = _HTTPServer((host, port), handler, self, max_connections)
        self.port: int = self._httpd.server_address[1]

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> "OriginServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="origin", daemon=True)
            self._thread.start()
            log.debug("origin serving %s on %s", self.root, self.url("/"))
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, abandon every response under way, join the threads (within ``timeout``)."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._httpd.server_close()
        for thread in self._httpd.abort_connections():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("origin: a connection thread did not end within %.1f s", timeout)

    def __enter__(self) -> "OriginServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def url(self, path: str = "/") -> str:
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{path if path.startswith('/') else '/' + path}"

    # -- configuration ------------------------------------------------------------------------------------
    def configure(self, path: str = "*", *, host_rate: float | None = _UNSET, conn_rate: float | None = _UNSET,
                  host_rates: dict[str, float] | None = _UNSET, count: int | None = None,
                  only_client: str | None = None, **behaviour: Any) -> None:
        """Set caps (for the whole server) and misbehaviour (for ``path``, or "*" for all).

        Switches without ``count``/``only_client`` change the path's
        permanent settings (a switch set to None or False is reset). With
        ``count`` they apply to the next ``count`` requests (from
        ``only_client`` if given), queued after earlier such rules.
        ``configure(path)`` with nothing else clears the path's switches.
        """
        for name in behaviour:
            if name not in _BEHAVIOUR_FIELDS:
                raise ValueError(f"unknown origin setting: {name}")
        rates = [(n, v) for n, v in (("host_rate", host_rate), ("conn_rate", conn_rate)) if v is not _UNSET]
        for name, value in rates:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a number of bytes/s >= 0, or null")
        if host_rates is not _UNSET and host_rates is not None:
            if not isinstance(host_rates, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in host_rates.values()):
                raise ValueError("host_rates must map client IPs to bytes/s > 0")
        if behaviour or count is not None or only_client is not None:
            self.rules.set(path, behaviour, count, _client_key(only_client) if only_client else None)
        elif not rates and host_rates is _UNSET:
            self.rules.clear(path)
        with self._lock:
            if host_rate is not _UNSET:
                self.host_rate = host_rate or None
            if conn_rate is not _UNSET:
                self.conn_rate = conn_rate or None
            if host_rates is not _UNSET:
                self.host_rates = {_client_key(k): float(v) for k, v in (host_rates or {}).items()}

    def clear(self, path: str | None = None) -> None:
        """Forget the misbehaviour switches of ``path``, or of every path (caps stay)."""
        self.rules.clear(path)

    def config(self) -> dict[str, Any]:
        with self._lock:
            caps = {"host_rate": self.host_rate, "conn_rate": self.conn_rate, "host_rates": dict(self.host_rates)}
        return {**caps, **self.rules.snapshot()}

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters: ``bytes_by_client``, ``bytes_by_path``, ``requests_by_client``, ``requests_by_path``.

        Paths are percent-decoded URL paths; file requests only (not ``/_origin/``).
        """
        return self.counters.snapshot()

    def reset_stats(self) -> None:
        self.counters.reset()

    def connections(self) -> int:
        """How many client connections are open (each has a thread)."""
        return self._httpd.open_connections()

    # -- files ---------------------------------------------------------------------------------------------
    def resolve(self, url_path: str) -> Path | None:
        """The file a decoded URL path names inside ``root``, or None (missing, or outside root)."""
        parts = [p for p in url_path.split("/") if p]
        if not parts or any(p in (".", "..") or "\0" in p for p in parts):
            return None
        try:
            resolved = self.root.joinpath(*parts).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        if not resolved.is_relative_to(self.root) or not resolved.is_file():
            return None
        return resolved

    def change(self, url_path: str) -> None:
        """Publish a new version of a file: new bytes, same size, new ETag and Last-Modified.

        The file is replaced atomically (see :func:`make_file`); its mtime is
        set at least a whole second past the old one, so ``Last-Modified``
        (one-second resolution) changes too.
        """
        file = self.resolve(url_path)
        if file is None:
            raise FileNotFoundError(url_path)
        with self._change_lock:
            version = self._versions.get(url_path, 0) + 1
            self._versions[url_path] = version
            old = file.stat()
            make_file(file, old.st_size, seed=f"changed:{url_path}:{version}:{old.st_mtime_ns}")
            mtime_ns = max(time.time_ns(), (old.st_mtime_ns // 1_000_000_000 + 1) * 1_000_000_000)
            os.utime(file, ns=(mtime_ns, mtime_ns))
        log.debug("origin: %s is now version %d", url_path, version)

    # -- used by the handler ----------------------------------------------------------------------------
    def host_bucket(self, ip: str) -> TokenBucket | None:
        with self._lock:
            rate = self.host_rates.get(ip, self.host_rate)
            if not rate:
                return None
            bucket = self._buckets.get(ip)
            if bucket is None:
                bucket = self._buckets[ip] = TokenBucket(rate)
            elif bucket.rate != rate:
                bucket.set_rate(rate)
            return bucket


# -- command line -------------------------------------------------------------------------------------------
_UNITS = {"k": KiB, "m": MiB, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``256M``, ``1G``, ``64KiB``, ``1.5m``, ``1000`` -> bytes (binary units)."""
    t = text.strip().lower()
    for suffix in ("ib", "b"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
            break
    try:
        if t and t[-1] in _UNITS:
            return int(float(t[:-1]) * _UNITS[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def _rate_for(text: str) -> tuple[str, int]:
    ip, eq, rate = text.rpartition("=")
    if not eq or not ip:
        raise argparse.ArgumentTypeError(f"expected IP=RATE, not {text!r}")
    return ip, parse_size(rate)


def main(argv: list[str] | None = None) -> int:
    # started by swiftlab.cluster with SIGINT/SIGTERM held back: hear them again
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    p = argparse.ArgumentParser(prog="python3 -m swiftlab.origin", description="a local origin HTTP server")
    p.add_argument("--root", required=True, help="directory to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument("--host-rate", type=parse_size, help="cap per client IP, bytes/s (suffixes K, M, G)")
    p.add_argument("--conn-rate", type=parse_size, help="cap per connection, bytes/s")
    p.add_argument("--rate-for", type=_rate_for, action="append", default=[], metavar="IP=RATE",
                   help="a different cap for one client IP (repeatable)")
    p.add_argument("--make", action="append", default=[], metavar="NAME:SIZE",
                   help="generate a test file in the root first (repeatable)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    for spec in args.make:
        name, colon, size = spec.rpartition(":")
        if not colon or not name:
            p.error(f"--make expects NAME:SIZE, not {spec!r}")
        digest = make_file(root / name, parse_size(size), seed=zlib.crc32(name.encode()))
        print(f"made {name} sha256 {digest}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = OriginServer(root, args.host, args.port, host_rate=args.host_rate, conn_rate=args.conn_rate,
                          host_rates=dict(args.rate_for)).start()
    try:
        if args.port_file:
            tmp = Path(args.port_file + ".tmp")
            tmp.write_text(f"{server.port}\n")
            os.replace(tmp, args.port_file)
        print(f"origin listening on {server.url('/')}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

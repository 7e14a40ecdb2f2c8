"""A local origin HTTP server: for swift's tests, its demo and its benchmark.

It serves the files of one directory over HTTP/1.1 with what a real file
host offers (single byte ranges, ``If-Range``, a strong ETag,
``Last-Modified``, keep-alive) and what a real internet link imposes:

- a bandwidth cap per client IP, one token bucket shared by all of that
  IP's connections (how a per-machine uplink or proxy quota behaves), and
  separately a cap per connection (how many file hosts throttle);
- counters of body bytes sent per client IP and per path, so tests can
  show how much was fetched twice;
- switches to misbehave on cue, per path, optionally for the next N
  requests only: ignore ranges, omit the length, fail with a status, reset
  or stall after N bytes, send a short body, lie in ``Content-Range``,
  claim gzip, change the file (now or after N bytes), redirect.

Uncapped, well-behaved requests go out with ``os.sendfile`` so the origin
is not what a loopback benchmark measures. Control over HTTP:
``GET /_origin/stats``, ``POST /_origin/reset-stats``, ``POST /_origin/config``
(a JSON object with the same keys as :meth:`OriginServer.configure`).
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
SENDFILE_CHUNK = 4 << 20
BLOCK = 1 << 20


# -- test files --------------------------------------------------------------------------------
def make_file(path: Path | str, size: int, seed: int = 0) -> str:
    """Write ``size`` deterministic pseudo-random bytes; return their sha256.

    Each 1 MiB block starts with its own index, so a block written at the
    wrong offset never hashes the same.
    """
    path = Path(path)
    base = bytearray(random.Random(seed).randbytes(BLOCK))
    h = hashlib.sha256()
    tmp = path.with_name(path.name + ".tmp-make")
    with open(tmp, "wb") as f:
        written, index = 0, 0
        while written < size:
            base[:16] = struct.pack(">QQ", seed, index)
            block = memoryview(base)[: min(BLOCK, size - written)]
            f.write(block)
            h.update(block)
            written += len(block)
            index += 1
    os.replace(tmp, path)
    return h.hexdigest()


# -- rate limiting ----------------------------------------------------------------------------
class Stopping(Exception):
    """The server is shutting down."""


class TokenBucket:
    """Bytes per second, shared by every caller; callers go into debt and wait it off.

    Debt rather than waiting for tokens keeps the long-run rate exact and
    serves concurrent connections roughly in turn.
    """

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = float(rate)
        self.burst = burst if burst is not None else max(CHUNK, self.rate * 0.05)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int, stop: threading.Event) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            deficit = -self.tokens
        if deficit > 0 and stop.wait(deficit / self.rate):
            raise Stopping()


# -- misbehaviour -----------------------------------------------------------------------------
@dataclass
class Behaviour:
    ignore_ranges: bool = False
    omit_length: bool = False
    fail: int | None = None
    retry_after: str | None = None
    reset_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 3600.0
    short_body: int | None = None       # send this many bytes fewer than promised
    wrong_content_range: bool = False
    gzip: bool = False
    change: bool | int | None = None    # True: before this request; int: after N body bytes
    redirect: str | None = None
    redirect_status: int = 302
    content_disposition: str | None = None
    count: int | None = None            # applies to the next N requests, then expires
    only_client: str | None = None      # applies only to requests from this client IP

    def merged(self, other: "Behaviour") -> "Behaviour":
        out = Behaviour()
        for f in fields(Behaviour):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(out, f.name, theirs if theirs != f.default else mine)
        return out


_BEHAVIOUR_KEYS = {f.name for f in fields(Behaviour)}


@dataclass
class Stats:
    bytes_by_client: dict[str, int] = field(default_factory=dict)
    bytes_by_path: dict[str, int] = field(default_factory=dict)
    requests_by_client: dict[str, int] = field(default_factory=dict)


# -- the server --------------------------------------------------------------------------------
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, origin: "OriginServer"):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.origin = origin
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.origin._lock:
            self.origin._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.origin._lock:
            self.origin._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        log.debug("origin: error serving %s", client_address, exc_info=True)


class OriginServer:
    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = 0, *,
                 host_rate: float | None = None, conn_rate: float | None = None,
                 host_rates: dict[str, float] | None = None):
        self.root = Path(root).resolve()
        self.host = host
        self.host_rate = host_rate
        self.conn_rate = conn_rate
        self.host_rates = dict(host_rates or {})
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._buckets: dict[str, TokenBucket] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self._versions: dict[str, int] = {}
        self._stats = Stats()
        self.stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler, self)
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> "OriginServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="origin", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout)
        self._httpd.server_close()
        with self._lock:
            sockets = list(self._open)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "OriginServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path if path.startswith('/') else '/' + path}"

    # -- configuration ----------------------------------------------------------------------
    def configure(self, path: str = "*", *, host_rate: float | None | bool = False,
                  conn_rate: float | None | bool = False, host_rates: dict | None = None,
                  **behaviour) -> None:
        """Set caps (global) and misbehaviour (for ``path``, or every path with "*")."""
        unknown = set(behaviour) - _BEHAVIOUR_KEYS
        if unknown:
            raise ValueError(f"unknown origin settings: {', '.join(sorted(unknown))}")
        with self._lock:
            if host_rate is not False:
                self.host_rate = host_rate or None
                self._buckets.clear()
            if conn_rate is not False:
                self.conn_rate = conn_rate or None
            if host_rates is not None:
                self.host_rates = {k: float(v) for k, v in host_rates.items()}
                self._buckets.clear()
            if behaviour:
                self._behaviours[path] = Behaviour(**behaviour)
            elif host_rate is False and conn_rate is False and host_rates is None:
                self._behaviours.pop(path, None)  # configure(path) alone clears it

    def clear(self) -> None:
        with self._lock:
            self._behaviours.clear()

    def stats(self) -> dict:
        with self._lock:
            return json.loads(json.dumps(vars(self._stats)))

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = Stats()

    # -- used by the handler ------------------------------------------------------------------
    def behaviour_for(self, path: str, ip: str | None = None) -> Behaviour:
        with self._lock:
            result = Behaviour()
            for key in ("*", path):
                b = self._behaviours.get(key)
                if b is None or (b.only_client is not None and b.only_client != ip):
                    continue
                result = result.merged(b)
                if b.count is not None:
                    b.count -= 1
                    if b.count <= 0:
                        del self._behaviours[key]
            return result

    def bucket_for(self, ip: str) -> TokenBucket | None:
        with self._lock:
            rate = self.host_rates.get(ip, self.host_rate)
            if not rate:
                return None
            bucket = self._buckets.get(ip)
            if bucket is None or bucket.rate != rate:
                bucket = self._buckets[ip] = TokenBucket(rate)
            return bucket

    def count(self, ip: str, path: str, n: int) -> None:
        with self._lock:
            s = self._stats
            s.bytes_by_client[ip] = s.bytes_by_client.get(ip, 0) + n
            s.bytes_by_path[path] = s.bytes_by_path.get(path, 0) + n

    def count_request(self, ip: str) -> None:
        with self._lock:
            s = self._stats
            s.requests_by_client[ip] = s.requests_by_client.get(ip, 0) + 1

    def change_file(self, path: str, file: Path) -> None:
        """A new version of the file: new bytes, new mtime, so a new ETag."""
        with self._lock:
            version = self._versions.get(path, 0) + 1
            self._versions[path] = version
        size = file.stat().st_size
        make_file(file, size, seed=random.Random(f"{path}:{version}").randrange(1 << 30))
        st = file.stat()
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000 * version))

    def resolve(self, url_path: str) -> Path | None:
        rel = unquote(url_path, errors="strict") if "%" in url_path else url_path
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        candidate = self.root.joinpath(*parts) if parts else self.root
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            return None
        if self.root not in resolved.parents or not resolved.is_file():
            return None
        return resolved


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 60

    def log_message(self, fmt, *args):  # quiet: use logging at debug level
        log.debug("origin %s: " + fmt, self.client_address[0], *args)

    # -- control API ----------------------------------------------------------------------
    def _json(self, status: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        origin = self.server.origin
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20)) if length else b""
        path = urlsplit(self.path).path
        try:
            if path == "/_origin/config":
                origin.configure(**json.loads(body or b"{}"))
                return self._json(200, {"ok": True})
            if path == "/_origin/reset-stats":
                origin.reset_stats()
                return self._json(200, {"ok": True})
        except (ValueError, TypeError) as exc:
            return self._json(400, {"error": str(exc)})
        self._json(404, {"error": "not found"})

    def do_HEAD(self):  # noqa: N802
        self._serve(head=True)

    def do_GET(self):  # noqa: N802
        if urlsplit(self.path).path == "/_origin/stats":
            return self._json(200, self.server.origin.stats())
        self._serve(head=False)

    # -- files ------------------------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        origin = self.server.origin
        ip = self.client_address[0]
        origin.count_request(ip)
        url_path = urlsplit(self.path).path
        b = origin.behaviour_for(url_path, ip)
        if b.redirect:
            self.send_response(b.redirect_status)
            self.send_header("Location", b.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if b.fail:
            self.send_response(b.fail)
            if b.retry_after is not None:
                self.send_header("Retry-After", str(b.retry_after))
            body = f"{b.fail} (origin told to fail)\n".encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        file = origin.resolve(url_path)
        if file is None:
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        if b.change is True:
            origin.change_file(url_path, file)
        with open(file, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = f'"{size:x}-{st.st_mtime_ns:x}"'
            last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            start, end, status = 0, size, 200
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if rng and not b.ignore_ranges and not b.omit_length and \
                    (if_range is None or if_range in (etag, last_modified)):
                parsed = _parse_range(rng, size)
                if parsed == "unsatisfiable":
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parsed is not None:
                    start, end = parsed
                    status = 206
            self.send_response(status)
            if not b.omit_length:
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.send_header("Content-Type", "application/octet-stream")
            if status == 206:
                shift = 1 if b.wrong_content_range else 0
                self.send_header("Content-Range", f"bytes {start + shift}-{end - 1 + shift}/{size}")
            if b.gzip:
                self.send_header("Content-Encoding", "gzip")
            if b.content_disposition:
                self.send_header("Content-Disposition", b.content_disposition)
            self.end_headers()
            if head:
                return
            try:
                self._body(f, file, url_path, ip, start, end, b)
            except (Stopping, BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
                self.close_connection = True

    def _body(self, f, file: Path, url_path: str, ip: str, start: int, end: int, b: Behaviour) -> None:
        origin = self.server.origin
        host_bucket = origin.bucket_for(ip)
        conn_bucket = TokenBucket(origin.conn_rate) if origin.conn_rate else None
        stop_at = end - b.short_body if b.short_body else end
        change_after = b.change if type(b.change) is int else None  # True means "before"
        plain = (host_bucket is None and conn_bucket is None and b.reset_after is None
                 and b.stall_after is None and change_after is None)
        self.wfile.flush()
        sock = self.connection
        offset, sent = start, 0
        if plain:
            while offset < stop_at:
                # Counted before sending, corrected after: a client that has read
                # the last byte must find it in the counters already.
                want = min(SENDFILE_CHUNK, stop_at - offset)
                origin.count(ip, url_path, want)
                n = 0
                try:
                    # socket.sendfile copes with the socket's timeout (non-blocking) mode
                    n = sock.sendfile(f, offset, want)
                finally:
                    if n != want:
                        origin.count(ip, url_path, n - want)
                if n == 0:
                    break
                offset += n
        else:
            changed = False
            while offset < stop_at:
                if origin.stopping.is_set():
                    raise Stopping()
                n = min(CHUNK, stop_at - offset)
                for limit in (b.reset_after, b.stall_after):
                    if limit is not None and sent < limit:
                        n = min(n, limit - sent)
                if b.reset_after is not None and sent >= b.reset_after:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    raise ConnectionResetError("origin told to reset")
                if b.stall_after is not None and sent >= b.stall_after:
                    origin.stopping.wait(b.stall_seconds)
                    raise Stopping()
                if host_bucket:
                    host_bucket.take(n, origin.stopping)
                if conn_bucket:
                    conn_bucket.take(n, origin.stopping)
                data = os.pread(f.fileno(), n, offset)
                if not data:
                    break
                origin.count(ip, url_path, len(data))  # before: see the sendfile path
                try:
                    sock.sendall(data)
                except OSError:
                    origin.count(ip, url_path, -len(data))  # not sent after all (roughly)
                    raise
                offset += len(data)
                sent += len(data)
                if change_after is not None and not changed and sent >= change_after:
                    origin.change_file(url_path, file)  # the open file keeps the old bytes
                    changed = True
        if b.short_body:
            self.close_connection = True
            sock.shutdown(socket.SHUT_WR)


def _parse_range(value: str, size: int):
    """A single ``bytes=`` range → (start, end); "unsatisfiable"; None to ignore."""
    value = value.strip()
    if not value.lower().startswith("bytes=") or "," in value:
        return None
    spec = value[6:].strip()
    first, sep, last = spec.partition("-")
    if not sep:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return max(0, size - n), size
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a >= size:
        return "unsatisfiable"
    if a < 0 or b < a:
        return None
    return a, min(b, size - 1) + 1


# -- command line --------------------------------------------------------------------------------
def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b").rstrip("i")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m swift.origin", description="local origin HTTP server")
    p.add_argument("--root", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host-rate", type=_size, help="cap per client IP, bytes/s (suffixes K, M, G)")
    p.add_argument("--conn-rate", type=_size, help="cap per connection, bytes/s")
    p.add_argument("--make", action="append", default=[], metavar="NAME:SIZE",
                   help="generate a test file first (repeatable)")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    for spec in args.make:
        name, _, size = spec.rpartition(":")
        digest = make_file(root / name, _size(size), seed=len(name))
        print(f"made {name} sha256 {digest}", flush=True)
    server = OriginServer(root, args.host, args.port, host_rate=args.host_rate,
                          conn_rate=args.conn_rate).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(server.port))
        os.replace(tmp, args.port_file)
    print(f"origin listening on {server.url('/')}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

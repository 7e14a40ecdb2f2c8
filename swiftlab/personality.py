"""A generative origin: one HTTP/1.1 server whose *personality* is drawn from independent axes.

The server cases and ``tests/http_origin.py`` replay behaviours one at a
time. Real servers combine them: a CDN with an ETag per edge may also cap its
range answers and redirect to signed URLs that expire. A :class:`Personality`
is one point in that space, an independent choice on each axis below; the
tests draw them with hypothesis (``tests/live/test_personalities.py``) and
``bench/personalities.py`` draws thousands.

Axes (each value is one habit of real servers; docs/http.md gives the rules
swift applies to each):

==============  =====================================================================
``ranges``      ``exact`` 206; ``capped`` (each 206 encloses at most ``cap`` bytes, with
                a true Content-Range); ``ignored-some`` (every ``every``-th range
                request gets 200 and the whole file); ``ignored-all``;
                ``if-range-200`` (200 whenever If-Range carries an ETag);
                ``416-bare`` (416 without Content-Range where one is unsatisfiable);
                ``multipart`` (206 as ``multipart/byteranges`` with one part)
``lengths``     ``right``; ``short-by-one`` / ``over-by-one`` (a 206's Content-Length
                one off its range, the body right, then close); ``missing`` (no
                Content-Length, the body ends at close); ``chunked``
``validators``  ``strong`` ETag and Last-Modified; ``weak`` ETag; ``per-connection``
                (a strong ETag per CDN edge, edges taking connections in turn);
                ``last-modified`` only; ``none``
``redirects``   ``none``; ``mirrors`` (each request to ``/f`` is sent to one of three
                mirrors in turn); ``signed`` (to a signed URL that expires ``ttl``
                seconds after it was issued, then answers 403)
``failures``    ``none``; ``resets`` (every ``every``-th answer is reset a third into
                its body); ``stalls`` (stops sending a third in, for ``stall``
                seconds, then closes); ``busy`` (every ``every``-th request gets 503
                or 429 with Retry-After: 1); ``early-close`` (closes cleanly half way)
``coding``      ``identity``; ``gzip`` (the stored bytes are gzip, sent with
                ``Content-Encoding: gzip`` whatever the request accepts)
==============  =====================================================================

What a plain GET returns (:attr:`Personality.body`) is the right file:
for ``gzip`` the encoded bytes, as curl and aria2c save them.

One combination is left out: ``early-close`` with ``missing`` lengths. A body
that ends at the close cannot be told from one cut short (RFC 9112 section
6.3): no client can know, and a plain GET returns a truncated file.

Loopback only; :class:`PersonalityOrigin` is a context manager that stops its
threads (a stall waits on the server's stop event).
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import hmac
import itertools
import random
import re
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["AXES", "Personality", "PersonalityOrigin", "SIZES"]

AXES: dict[str, tuple[str, ...]] = {
    "ranges": ("exact", "capped", "ignored-some", "ignored-all", "if-range-200", "416-bare",
               "multipart"),
    "lengths": ("right", "short-by-one", "over-by-one", "missing", "chunked"),
    "validators": ("strong", "weak", "per-connection", "last-modified", "none"),
    "redirects": ("none", "mirrors", "signed"),
    "failures": ("none", "resets", "stalls", "busy", "early-close"),
    "coding": ("identity", "gzip"),
}
#: Sizes worth a draw each: empty, one byte, under and over swift's one-request
#: threshold (1 MiB) and a few pieces' worth.
SIZES = (0, 1, 4095, 200_000, (1 << 20) + 1, 3 * (1 << 20) + 12_345)
LAST_MODIFIED = email.utils.formatdate(1_700_000_000, usegmt=True)
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")
_KEY = b"personality"
MIRRORS = 3


@dataclass(frozen=True)
class Personality:
    """One server: a value on each axis, the knobs those values use, and the file."""

    ranges: str = "exact"
    lengths: str = "right"
    validators: str = "strong"
    redirects: str = "none"
    failures: str = "none"
    coding: str = "identity"
    size: int = 200_000
    #: bytes per capped 206
    cap: int = 256 * 1024
    #: the period of periodic habits (ignored ranges, failures)
    every: int = 3
    #: seconds a signed URL stays valid
    ttl: float = 2.0
    #: seconds a stalled answer stops sending before it closes
    stall: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        for axis, values in AXES.items():
            if getattr(self, axis) not in values:
                raise ValueError(f"{axis} must be one of {values}, not {getattr(self, axis)!r}")
        if self.failures == "early-close" and self.lengths == "missing":
            raise ValueError("early-close with missing lengths cannot be told from a whole body")

    @classmethod
    def draw(cls, rng: random.Random) -> "Personality":
        """A personality drawn uniformly on each axis (the excluded pair drawn again)."""
        while True:
            try:
                return cls(**{axis: rng.choice(values) for axis, values in AXES.items()},
                           size=rng.choice(SIZES), cap=rng.choice((64 * 1024, 256 * 1024, 1 << 20)),
                           every=rng.randint(2, 5), ttl=rng.choice((1.0, 2.0, 5.0)),
                           seed=rng.randrange(1 << 30))
            except ValueError:
                continue

    @property
    def content(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)

    @property
    def body(self) -> bytes:
        """What a plain GET returns: the file exactly as served (gzip stays gzip)."""
        data = self.content
        return gzip.compress(data, mtime=0) if self.coding == "gzip" else data

    def describe(self) -> str:
        """One line: the axes' values and the knobs that matter for them."""
        knobs = [f"size={self.size}"]
        if self.ranges == "capped":
            knobs.append(f"cap={self.cap}")
        if self.ranges == "ignored-some" or self.failures not in ("none",):
            knobs.append(f"every={self.every}")
        if self.redirects == "signed":
            knobs.append(f"ttl={self.ttl:g}")
        axes = " ".join(f"{axis}={getattr(self, axis)}" for axis in AXES)
        return f"{axes} {' '.join(knobs)}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    framing: str = "length"        # length | close | chunked
    fail: str = "none"             # none | reset | stall | close


class PersonalityOrigin:
    """``with PersonalityOrigin(p) as o: o.url()``; ``o.log`` lists (path, status, client)."""

    def __init__(self, personality: Personality, host: str = "127.0.0.1"):
        self.p = personality
        self.body = personality.body
        self.log: list[tuple[str, int, str]] = []
        self.stopping = threading.Event()
        self._count = itertools.count(1)
        self._edges = itertools.count()
        self._mirror = itertools.count()
        self._lock = threading.Lock()
        self._tag = hashlib.sha256(self.body).hexdigest()[:16]
        self.server = _Server((host, 0), _Handler)
        self.server.origin = self  # type: ignore[attr-defined]
        self.host, self.port = host, self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> "PersonalityOrigin":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def url(self, path: str = "/f") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def next_count(self) -> int:
        with self._lock:
            return next(self._count)

    # -- the answer, decided before a byte is sent -------------------------------------------
    def answer(self, method: str, target: str, headers, edge: int, count: int) -> _Answer:
        p = self.p
        parts = urlsplit(target)
        path = parts.path
        if p.failures == "busy" and count % p.every == 0:
            status = 503 if count % 2 else 429
            return _Answer(status, {"Retry-After": "1", "Content-Length": "5"}, b"busy\n")
        if path == "/f" and p.redirects == "mirrors":
            return _redirect(f"/m{next(self._mirror) % MIRRORS}/f")
        if path == "/f" and p.redirects == "signed":
            exp = f"{time.time() + p.ttl:.3f}"
            return _redirect(f"/s/f?exp={exp}&sig={_sign(exp)}")
        if path == "/s/f" and p.redirects == "signed":
            query = parse_qs(parts.query)
            exp, sig = query.get("exp", [""])[0], query.get("sig", [""])[0]
            if not hmac.compare_digest(sig, _sign(exp)) or float(exp or 0) < time.time():
                return _Answer(403, {"Content-Length": "8"}, b"expired\n")
        elif not (path == "/f" and p.redirects == "none"
                  or p.redirects == "mirrors" and re.fullmatch(r"/m\d/f", path)):
            return _Answer(404, {"Content-Length": "10"}, b"not found\n")
        return self._file(headers, edge, count)

    def _validators(self, edge: int) -> dict[str, str]:
        v = self.p.validators
        etag = {"strong": f'"{self._tag}"', "weak": f'W/"{self._tag}"',
                "per-connection": f'"edge{edge}-{self._tag}"'}.get(v)
        out = {}
        if etag:
            out["ETag"] = etag
        if v != "none":
            out["Last-Modified"] = LAST_MODIFIED
        return out

    def _file(self, headers, edge: int, count: int) -> _Answer:
        p, body = self.p, self.body
        size = len(body)
        common = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                  **self._validators(edge)}
        if p.coding == "gzip":
            common["Content-Encoding"] = "gzip"
        span = self._span(headers, common, size, count)
        if span == "unsatisfiable":
            extra = {} if p.ranges == "416-bare" else {"Content-Range": f"bytes */{size}"}
            return _Answer(416, {**common, **extra, "Content-Length": "0"})
        if span is None:
            answer = _Answer(200, dict(common), body)
        else:
            first, last = span
            if p.ranges == "capped":
                last = min(last, first + p.cap - 1)
            part = body[first:last + 1]
            content_range = f"bytes {first}-{last}/{size}"
            if p.ranges == "multipart":
                boundary = f"swiftlab{count}"
                part = (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                        f"Content-Range: {content_range}\r\n\r\n").encode() + part + \
                    f"\r\n--{boundary}--\r\n".encode()
                answer = _Answer(206, {**common, "Content-Type":
                                       f"multipart/byteranges; boundary={boundary}"}, part)
            else:
                answer = _Answer(206, {**common, "Content-Range": content_range}, part)
        self._frame(answer)
        if p.failures in ("resets", "stalls", "early-close") and count % p.every == 0 and answer.body:
            answer.fail = {"resets": "reset", "stalls": "stall", "early-close": "close"}[p.failures]
        return answer

    def _span(self, headers, common: dict, size: int, count: int):
        """(first, last) for a 206, None for a 200, "unsatisfiable" for a 416."""
        p = self.p
        m = _RANGE.match(headers.get("Range") or "")
        if not m or not (m.group(1) or m.group(2)):
            return None
        if p.ranges == "ignored-all" or p.ranges == "ignored-some" and count % p.every == 0:
            return None
        if_range = headers.get("If-Range")
        if if_range is not None:
            if p.ranges == "if-range-200" and if_range.strip().startswith(('"', "W/")):
                return None
            if not _if_range_matches(if_range.strip(), common):
                return None  # RFC 9110 section 13.1.5: another version: the whole file
        if m.group(1):
            first = int(m.group(1))
            last = int(m.group(2)) if m.group(2) else size - 1
            if first >= size or last < first:
                return "unsatisfiable"
        else:
            n = int(m.group(2))
            if n == 0 or size == 0:
                return "unsatisfiable"
            first, last = max(0, size - n), size - 1
        return first, min(last, size - 1)

    def _frame(self, answer: _Answer) -> None:
        p = self.p
        n = len(answer.body)
        if p.lengths == "chunked":
            answer.framing = "chunked"
            answer.headers["Transfer-Encoding"] = "chunked"
        elif p.lengths == "missing":
            answer.framing = "close"
            answer.headers["Connection"] = "close"
        else:
            lie = {"short-by-one": -1, "over-by-one": 1}.get(p.lengths, 0) if answer.status == 206 else 0
            answer.headers["Content-Length"] = str(n + lie)
            if lie:
                answer.framing = "close"
                answer.headers["Connection"] = "close"


def _if_range_matches(value: str, validators: dict) -> bool:
    if value.startswith("W/"):
        return False
    if value.startswith('"'):
        etag = validators.get("ETag", "")
        return not etag.startswith("W/") and value == etag
    return value == validators.get("Last-Modified")


def _redirect(location: str) -> _Answer:
    return _Answer(302, {"Location": location, "Content-Length": "0"})


def _sign(exp: str) -> str:
    return hmac.new(_KEY, exp.encode(), hashlib.sha256).hexdigest()[:20]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up, or a failure played on purpose


class _Reset(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "personality/1"
    sys_version = ""

    def log_message(self, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        origin: PersonalityOrigin = self.server.origin  # type: ignore[attr-defined]
        with origin._lock:
            self.edge = next(origin._edges) % 2  # one CDN edge per connection

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        origin: PersonalityOrigin = self.server.origin  # type: ignore[attr-defined]
        count = origin.next_count()
        answer = origin.answer(method, self.path, self.headers, self.edge, count)
        origin.log.append((urlsplit(self.path).path, answer.status, self.client_address[0]))
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if method == "GET" and answer.status != 304:
                self._body(answer, origin.stopping)
        except (BrokenPipeError, ConnectionResetError, _Reset):
            self.close_connection = True
            return
        if answer.framing == "close" or answer.fail != "none":
            self.close_connection = True

    def _body(self, answer: _Answer, stopping: threading.Event) -> None:
        data = answer.body
        cut = {"reset": len(data) // 3, "stall": len(data) // 3, "close": len(data) // 2}.get(answer.fail)
        sent = 0
        for i in range(0, len(data), 64 * 1024):
            block = data[i:i + 64 * 1024]
            if cut is not None and sent + len(block) > cut:
                self._write(block[: cut - sent], answer.framing)
                self.wfile.flush()
                if answer.fail == "stall":
                    stopping.wait(self.server.origin.p.stall)  # type: ignore[attr-defined]
                if answer.fail == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                raise _Reset()
            self._write(block, answer.framing)
            sent += len(block)
        if answer.framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, block: bytes, framing: str) -> None:
        if not block:
            return
        if framing == "chunked":
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        else:
            self.wfile.write(block)


# -- the property: the right file, or one clear line and no file ------------------------------------
#: What a user must never see in the last line: library internals.
INTERNALS = re.compile(r"Traceback|HTTPS?ConnectionPool|Max retries exceeded|Caused by|urllib3|"
                       r"requests\.exceptions|ProtocolError|IncompleteRead|SSLError\(|"
                       r"NewConnectionError|object at 0x")


@dataclass(frozen=True)
class Verdict:
    """How one run ended: ``right`` (the file is :attr:`Personality.body`), ``refused``
    (non-zero, one clear line, no file), ``wrong`` (a file with other bytes, or a
    refusal that left one), ``unclear`` (a traceback or library text), or ``hang``."""

    outcome: str
    detail: str = ""

    @property
    def acceptable(self) -> bool:
        return self.outcome in ("right", "refused")


def judge(code: int | None, output: str, saved, body: bytes) -> Verdict:
    """The verdict on one run: ``code`` None for a run killed at its deadline;
    ``saved`` the final path (a :class:`pathlib.Path`)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if code is None:
        return Verdict("hang", last)
    if "Traceback" in output or INTERNALS.search(last):
        return Verdict("unclear", last)
    if code == 0:
        if not saved.exists():
            return Verdict("wrong", "exit 0 and no file")
        got = saved.read_bytes()
        if got != body:
            return Verdict("wrong", f"{len(got)} bytes, {len(body)} expected")
        return Verdict("right")
    if saved.exists():
        return Verdict("wrong", f"exit {code} and a file at the final name: {last}")
    if not last.startswith("error: "):
        return Verdict("unclear", last)
    return Verdict("refused", last)


def refusal_kind(line: str) -> str:
    """A refusal's kind: its line without numbers, URLs and quoted values."""
    text = re.sub(r"https?://\S+", "URL", line.removeprefix("error: "))
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\d+", "N", text)
    return text.split(";")[0].strip()[:120]

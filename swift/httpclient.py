"""The HTTP side of swift: probing a URL and fetching one byte range.

Everything here works on a ``requests.Session`` handed in by the caller (see
``swift.sessions``: it decides the source address and which addresses may be
reached), so the same code serves the requester's own fetches and the fetch
jobs a node runs for its peers.

Every byte is checked against the HTTP contract before anyone writes it:
a range request must come back as ``206`` with exactly the asked-for
``Content-Range``, an identity encoding, the same validator as the probe and
exactly the promised number of bytes. Content codings are never decoded:
the file on disk is the representation exactly as the server sends it (a
``.tar.gz`` served with ``Content-Encoding: gzip`` stays a ``.tar.gz``, as
curl and aria2c save it). Byte ranges count in that encoded representation
(RFC 9110 section 14.1.2), so a range answer is accepted only with the same
content coding the probe saw: a server that compresses each answer on the fly
would otherwise hand us bytes of another representation. A ``200`` answer to an ``If-Range``
request, a new ETag or a new total size all mean the file changed on the
server, which no retry can mend (:class:`FileChanged`). Transient trouble
(503, 429, a reset connection, a stalled read) is retried a bounded number of
times with backoff, honouring ``Retry-After``, resuming from the first byte
not yet delivered.
"""

from __future__ import annotations

import email.utils
import logging
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlsplit

import requests

from . import names

log = logging.getLogger(__name__)

#: Largest read from a response body. Reads use read1 (what has arrived, up
#: to this much), so the size barely matters for CPU: 64 KiB, 256 KiB and
#: 1 MiB all cost about 0.8 CPU s per GiB on loopback (measured, 1 GiB
#: file). 256 KiB keeps a block well inside one 1 MiB data frame.
CHUNK_SIZE = 256 * 1024

#: (connect, read) timeouts. A read that stalls for this long counts as a
#: transient failure and is retried from the first missing byte.
DEFAULT_TIMEOUT = (10.0, 15.0)

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_IDENTITY = {"", "identity"}


def content_coding(value: str | None) -> str:
    """The normalised ``Content-Encoding`` of an answer: "" for identity."""
    coding = ",".join(part.strip().lower() for part in (value or "").split(",") if part.strip())
    return "" if coding in _IDENTITY else coding


class HttpError(Exception):
    """A download failed for a reason worth one clear line to the user."""


class RetryableError(HttpError):
    """Transient trouble at the origin; ``retry_after`` is its advice, if any."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class FileChanged(HttpError):
    """The file on the server is no longer the one the download started with."""

    def __init__(self, detail: str = ""):
        msg = "the file changed on the server"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class BadResponse(HttpError):
    """The origin broke the HTTP range contract (wrong status, length, encoding)."""


@dataclass(frozen=True)
class Validator:
    """What identifies one version of the file: a strong ETag, else Last-Modified."""

    etag: str | None = None
    last_modified: str | None = None

    def if_range(self) -> str | None:
        return self.etag or self.last_modified


@dataclass(frozen=True)
class ProbeResult:
    url: str
    final_url: str
    size: int | None
    ranges: bool
    validator: Validator
    filename: str
    #: The content coding the server applied ("" for identity), lower-cased.
    #: Never decoded: it is part of the bytes saved.
    encoding: str = ""

    @property
    def encoded(self) -> bool:
        return self.encoding != ""

    @property
    def splittable(self) -> bool:
        return self.ranges and self.size is not None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff; Retry-After wins if larger."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.first_delay * (2 ** attempt), self.max_delay)
        if retry_after is not None:
            return min(max(backoff, retry_after), self.max_delay)
        return backoff


def check_url(url: str) -> str:
    """Refuse anything but a well-formed http(s) URL, with a clear message."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise HttpError(f"malformed URL {url!r}: {exc}") from None
    if not parts.scheme:
        raise HttpError(f"malformed URL {url!r}: no scheme (expected http:// or https://)")
    if parts.scheme.lower() not in ("http", "https"):
        raise HttpError(f"unsupported URL scheme {parts.scheme!r} in {url!r} (only http and https)")
    if not parts.hostname:
        raise HttpError(f"malformed URL {url!r}: no host name")
    if any(c in url for c in "\r\n\t ") or (port is not None and not 0 < port < 65536):
        raise HttpError(f"malformed URL {url!r}")
    return url


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/size`` → (a, b + 1, size); None when absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return first, last + 1, total


def _strong_etag(value: str | None) -> str | None:
    if not value or value.strip().startswith("W/"):
        return None
    return value.strip()


def describe_exception(exc: BaseException, url: str) -> str:
    """One human line for a requests/socket exception."""
    host = urlsplit(url).hostname or url
    text = str(exc)
    if isinstance(exc, HttpError):
        return text
    if isinstance(exc, requests.exceptions.InvalidSchema):
        return f"unsupported URL scheme in {url!r} (only http and https)"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return f"malformed URL {url!r}"
    if isinstance(exc, requests.exceptions.ProxyError):
        return f"the HTTP proxy failed for {host}: {text}"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error talking to {host}: {text}"
    if isinstance(exc, (requests.exceptions.ConnectTimeout,)):
        return f"timed out connecting to {host}"
    if isinstance(exc, (requests.exceptions.ReadTimeout, socket.timeout, TimeoutError)):
        return f"{host} stopped sending (read timed out)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        lowered = text.lower()
        if "name or service not known" in lowered or "nodename nor servname" in lowered \
                or "failed to resolve" in lowered or "getaddrinfo failed" in lowered \
                or "temporary failure in name resolution" in lowered or "no address associated" in lowered:
            return f"cannot resolve host name {host!r}"
        if "refused" in lowered:
            return f"connection refused by {host}"
        if "refusing to fetch" in lowered:
            # the address policy's own message is already one clear line
            m = re.search(r"refusing to fetch.*?to allow it", text)
            return m.group(0) if m else text
        if "reset" in lowered or "aborted" in lowered or "broken pipe" in lowered:
            return f"connection to {host} was reset"
        return f"cannot connect to {host}: {text}"
    return f"{type(exc).__name__}: {text}"


def _status_error(resp: requests.Response, url: str) -> HttpError:
    reason = resp.reason or ""
    msg = f"the server answered {resp.status_code} {reason} for {url}".replace("  ", " ")
    if resp.status_code in _RETRY_STATUS:
        return RetryableError(msg, parse_retry_after(resp.headers.get("Retry-After")))
    return HttpError(msg)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, RetryableError):
        return True
    if isinstance(exc, (FileChanged, BadResponse)):
        return False
    if isinstance(exc, HttpError):
        return False
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError, ConnectionError,
                        socket.timeout, TimeoutError)):
        # a refused connection or a DNS failure will not mend itself quickly,
        # and neither will a policy refusal: fail fast on those.
        text = str(exc).lower()
        permanent = ("refusing to fetch", "name or service not known", "failed to resolve",
                     "temporary failure in name resolution", "refused")
        return not any(p in text for p in permanent)
    try:
        import urllib3.exceptions as u3  # requests depends on urllib3
        if isinstance(exc, (u3.ProtocolError, u3.ReadTimeoutError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


T = TypeVar("T")


def with_retries(action: Callable[[], T], *, policy: RetryPolicy, what: str,
                 stop: threading.Event | None = None,
                 sleep: Callable[[float], object] | None = None) -> T:
    """Run ``action``; retry transient failures with backoff, then give up clearly."""
    wait = sleep or (stop.wait if stop is not None else time.sleep)
    attempt = 0
    while True:
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - classified below
            if not _transient(exc) or attempt + 1 >= policy.attempts:
                if isinstance(exc, HttpError):
                    raise
                raise HttpError(describe_exception(exc, what)) from exc
            delay = policy.delay(attempt, getattr(exc, "retry_after", None))
            log.info("%s: %s; retrying in %.1f s", what, describe_exception(exc, what), delay)
            attempt += 1
            wait(delay)
            if stop is not None and stop.is_set():
                raise HttpError(f"{what}: cancelled") from exc


def probe(session: requests.Session, url: str, *, timeout=DEFAULT_TIMEOUT,
          policy: RetryPolicy = RetryPolicy()) -> ProbeResult:
    """Ask the origin once for size, range support, validator, final URL and name.

    The probe is a GET for the first byte (``Range: bytes=0-0``) rather than a
    HEAD: many servers answer HEAD differently from GET, and the answer to a
    real range request is the only proof that ranges work.
    """
    url = check_url(url)

    def attempt() -> ProbeResult:
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code not in (200, 206, 416):
                raise _status_error(resp, url)
            final_url = resp.url or url
            encoding = content_coding(resp.headers.get("Content-Encoding"))
            validator = Validator(_strong_etag(resp.headers.get("ETag")),
                                  resp.headers.get("Last-Modified"))
            filename = names.choose_name(url, final_url, resp.headers.get("Content-Disposition"))
            size: int | None = None
            ranges = False
            if resp.status_code == 206:
                parsed = parse_content_range(resp.headers.get("Content-Range"))
                if parsed and parsed[0] == 0 and parsed[2] is not None:
                    size, ranges = parsed[2], True
            elif resp.status_code == 416:
                m = re.match(r"^\s*bytes\s+\*/(\d+)\s*$", resp.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == 0:
                    size, ranges = 0, True
                else:
                    raise HttpError(f"the server refused a range request for {url} (416)")
            else:
                length = resp.headers.get("Content-Length")
                if length and length.isdigit():
                    size = int(length)  # the length of the encoded body, which is what we save
            return ProbeResult(url=url, final_url=final_url, size=size, ranges=ranges,
                               validator=validator, filename=filename, encoding=encoding)

    return with_retries(attempt, policy=policy, what=url)


def open_range(session: requests.Session, url: str, start: int, end: int, *,
               size: int, validator: Validator, timeout=DEFAULT_TIMEOUT,
               encoding: str = "") -> requests.Response:
    """Start fetching [start, end); return the streaming response once it is proven right.

    ``encoding`` is the content coding the probe saw ("" for identity); the
    answer must carry the same one (see the module docstring)."""
    headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
    if validator.if_range():
        headers["If-Range"] = validator.if_range()  # type: ignore[assignment]
    resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    try:
        check_range_response(resp, start, end, size=size, validator=validator, encoding=encoding)
    except BaseException:
        resp.close()
        raise
    return resp


def check_range_response(resp: requests.Response, start: int, end: int, *,
                         size: int, validator: Validator, encoding: str = "") -> None:
    """Raise unless ``resp`` is exactly the 206 for [start, end) of the same file."""
    if resp.status_code == 200:
        # A 200 to If-Range means "the file changed" - unless the answer still
        # carries our validator, in which case the server merely ignored the
        # range this time: not written, fetched again (elsewhere).
        etag = _strong_etag(resp.headers.get("ETag"))
        same = (validator.etag is not None and etag == validator.etag) or (
            validator.etag is None and validator.last_modified is not None
            and resp.headers.get("Last-Modified") == validator.last_modified)
        if validator.if_range() and not same:
            raise FileChanged("the server answered 200 to an If-Range request")
        raise BadResponse(f"the server ignored the range request (200) for bytes {start}-{end - 1}")
    if resp.status_code != 206:
        raise _status_error(resp, resp.url)
    got = content_coding(resp.headers.get("Content-Encoding"))
    if got != encoding:
        raise BadResponse(f"the server sent Content-Encoding {got or 'identity'!r} for a range, "
                          f"{encoding or 'identity'!r} at first")
    etag = _strong_etag(resp.headers.get("ETag"))
    if validator.etag and etag and etag != validator.etag:
        raise FileChanged(f"ETag {validator.etag} became {etag}")
    if not validator.etag and validator.last_modified:
        lm = resp.headers.get("Last-Modified")
        if lm and lm != validator.last_modified:
            raise FileChanged("Last-Modified changed")
    parsed = parse_content_range(resp.headers.get("Content-Range"))
    if parsed is None:
        raise BadResponse(f"missing or malformed Content-Range for bytes {start}-{end - 1}")
    first, stop, total = parsed
    if total is not None and total != size:
        raise FileChanged(f"size {size} became {total}")
    if (first, stop) != (start, end):
        raise BadResponse(f"asked for bytes {start}-{end - 1}, got Content-Range "
                          f"{resp.headers.get('Content-Range')!r}")
    length = resp.headers.get("Content-Length")
    if length is not None and (not length.isdigit() or int(length) != end - start):
        raise BadResponse(f"Content-Length {length} does not match bytes {start}-{end - 1}")


def iter_body(resp: requests.Response, expected: int | None,
              chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield the raw body; raise if it ends before ``expected`` bytes.

    Reads the undecoded stream: a content coding is part of the bytes saved
    (see the module docstring). Never yields past ``expected``.
    """
    got = 0
    raw = resp.raw
    # read1 hands over what has arrived (up to want) instead of waiting for a
    # full block: a slow origin's bytes reach the requester at once.
    read = getattr(raw, "read1", None) or raw.read
    while expected is None or got < expected:
        want = chunk_size if expected is None else min(chunk_size, expected - got)
        try:
            block = read(want, decode_content=False)
        except Exception as exc:  # urllib3 wraps socket errors in its own types
            raise RetryableError(f"reading the response failed: {describe_exception(exc, resp.url)}") from exc
        if not block:
            break
        got += len(block)
        yield block
    if expected is not None and got < expected:
        raise RetryableError(f"the server closed the connection after {got} of {expected} bytes")


class _DeliveryFailed(Exception):
    """Carries an exception raised by the receiving side out of the retry loop."""


@dataclass
class RangeFetch:
    """Fetch one range with retries, resuming at the first undelivered byte.

    ``get_end`` is consulted between blocks: the range may shrink while it
    runs (the scheduler gave its far part to an idle worker). ``deliver``
    receives each block; it may return False to stop early (the requester is
    gone, the job was cancelled). Returns the number of bytes delivered.
    """

    session: requests.Session
    url: str
    size: int
    validator: Validator
    policy: RetryPolicy = RetryPolicy()
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    chunk_size: int = CHUNK_SIZE
    stop: threading.Event | None = None
    encoding: str = ""

    def __post_init__(self) -> None:
        self._current: requests.Response | None = None

    def abort(self) -> None:
        """Stop from another thread, also when blocked reading a stalled origin."""
        if self.stop is None:
            self.stop = threading.Event()
        self.stop.set()
        resp = self._current
        if resp is not None:
            try:
                resp.close()
            except Exception:  # noqa: BLE001 - best effort from a foreign thread
                pass

    def run(self, start: int, get_end: Callable[[], int],
            deliver: Callable[[bytes], bool]) -> int:
        if self.stop is None:
            self.stop = threading.Event()
        position = start
        attempt = 0
        while position < get_end():
            if self.stop.is_set():
                break
            progressed = False
            try:
                end = get_end()
                resp = open_range(self.session, self.url, position, end, size=self.size,
                                  validator=self.validator, timeout=self.timeout,
                                  encoding=self.encoding)
                self._current = resp
                with resp:
                    for block in iter_body(resp, end - position, self.chunk_size):
                        limit = get_end()
                        if position + len(block) > limit:
                            block = block[: max(0, limit - position)]
                        if block:
                            position += len(block)
                            progressed = True
                            try:
                                keep_going = deliver(block)
                            except Exception as exc:  # the receiving side failed, not HTTP
                                raise _DeliveryFailed() from exc
                            if keep_going is False:
                                return position - start
                        if position >= get_end() or self.stop.is_set():
                            return position - start
            except _DeliveryFailed as wrapped:
                raise wrapped.__cause__  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - classified by _transient
                if self.stop.is_set():
                    break
                if progressed:
                    attempt = 0  # made headway: the budget is for consecutive failures
                if not _transient(exc) or attempt + 1 >= self.policy.attempts:
                    if isinstance(exc, HttpError):
                        raise
                    raise HttpError(describe_exception(exc, self.url)) from exc
                delay = self.policy.delay(attempt, getattr(exc, "retry_after", None))
                log.info("range %d-%d: %s; retrying in %.1f s", position, get_end() - 1,
                         describe_exception(exc, self.url), delay)
                attempt += 1
                if self.stop.wait(delay):
                    break
            finally:
                self._current = None
        return position - start

"""The whole file as one plain stream, for servers whose ranges cannot be used.

:func:`open_stream` sends a plain GET (no ``Range``) and yields the raw,
undecoded body in blocks. Opening is retried through the one retry loop. A
connection that breaks mid-body is opened again and the bytes already
delivered are read past (not handed on twice) -- but only when the new answer
is provably the same file: the same length and content coding, and the
validator the first one reported (a strong ETag or a Last-Modified), or, when
it reports another (a CDN edge's own ETag with the same Last-Modified, or
another date where there is no ETag), its first bytes equal to those
already handed on (up to :data:`~swift.http.samefile.SAMPLE_SIZE`; they are
read past anyway). Without a validator the break is an error, since the two
halves might be of two versions.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Iterator, Mapping

import requests

from ..errors import Cancelled, ErrorCode, FileChanged, OriginError, SwiftError
from .body import CHUNK_SIZE, DEFAULT_TIMEOUT, iter_body
from .failures import status_error
from .headers import Validator, content_coding
from .profile import RESERVED_HEADERS
from .retry import Retry, call_with_retry
from .samefile import SAMPLE_SIZE
from .remote import RemoteFile

__all__ = ["PlainStream", "open_stream"]


class PlainStream:
    """An iterable of the body's raw blocks; ``size`` is the length the server
    announced (None for chunked answers). Close it, or use it in ``with``."""

    def __init__(self, session: requests.Session, remote: RemoteFile, *, retry: Retry,
                 stop: threading.Event | None, timeout: Any, chunk_size: int,
                 headers: Mapping[str, str] | None, answer: requests.Response | None = None):
        self.session = session
        self.remote = remote
        self.retry = retry
        self.stop = stop
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.headers = {name: value for name, value in (headers or {}).items()
                        if name.lower() not in RESERVED_HEADERS}
        self.size: int | None = None
        self.validator = Validator()
        self.encoding = ""
        self.delivered = 0
        self._head = bytearray()  # the first bytes handed on (a sample to compare with)
        self._check = b""  # what the current answer's first bytes must be (empty: no check)
        self._skip = 0  # bytes of the current answer already delivered from an earlier one
        self._resp: requests.Response | None = None
        if answer is not None:  # the probe's own 200, body unread: no second request
            try:
                self._take(answer, first=True)
            except BaseException:
                answer.close()
                raise
            self._resp = answer
        else:
            self._resp = self._open(first=True)

    def __enter__(self) -> "PlainStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            resp.close()

    def abort(self) -> None:
        """Make a read blocked on the stream return now, from any thread or a signal handler.

        ``shutdown`` wakes a blocked ``recv`` at once; closing alone does not (in
        another thread the read goes on; in a signal handler the interrupted
        read is retried on a socket the response still holds open).
        """
        if self.stop is not None:
            self.stop.set()
        resp = self._resp
        if resp is None:
            return
        sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed
        try:
            resp.close()
        except Exception:  # noqa: BLE001 - best effort from a foreign thread
            pass

    def __iter__(self) -> Iterator[bytes]:
        retry = self.retry
        while True:
            resp = self._resp
            assert resp is not None, "the stream is closed"
            skip = self._skip
            seen = 0  # bytes of this answer so far
            try:
                for block in iter_body(resp, self.size, self.chunk_size):
                    if seen < len(self._check):
                        self._compare(seen, block)
                    seen += len(block)
                    if skip:
                        cut = min(skip, len(block))
                        skip -= cut
                        block = block[cut:]
                        if not block:
                            continue
                    if len(self._head) < SAMPLE_SIZE:
                        self._head += block[: SAMPLE_SIZE - len(self._head)]
                    self.delivered += len(block)
                    retry = retry.reset()
                    yield block
                return
            except SwiftError as error:
                if not self._resumable():
                    raise
                retry = retry.increment(error)
                if (self.stop or threading.Event()).wait(retry.delay(error)):
                    raise Cancelled("cancelled") from error
                self.close()
                self._resp = self._open(first=False)

    # -- opening ---------------------------------------------------------------------------------
    def _open(self, *, first: bool) -> requests.Response:
        url = self.remote.final_url
        headers = dict(self.headers)
        headers["Accept-Encoding"] = "identity"

        def attempt() -> requests.Response:
            nonlocal url
            resp = self.session.get(url, headers=headers, stream=True, timeout=self.timeout)
            try:
                if resp.status_code != 200:
                    error = status_error(resp.status_code, resp.reason or "", url,
                                         resp.headers.get("Retry-After"))
                    if error.code is ErrorCode.ACCESS_DENIED:
                        # a signed URL that expired (the ranges before may have used it up):
                        # resolved again from the original URL, as a range fetch does
                        new = self.remote.refresh(self.session, url, size=None, timeout=self.timeout)
                        if new is not None and new != url:
                            url = new
                            raise OriginError(f"{error}; resolved the URL again",
                                              ErrorCode.SERVER_BUSY, status=resp.status_code)
                    raise error
                self._take(resp, first)
            except BaseException:
                resp.close()
                # this frame is in the error's traceback: holding the error (or the response,
                # and through it its connection pool) here would make a reference cycle
                error = resp = None  # noqa: F841
                raise
            return resp

        resp = call_with_retry(attempt, self.retry, url=url, stop=self.stop)
        self._skip = 0 if first else self.delivered
        return resp

    def _take(self, resp: requests.Response, first: bool) -> None:
        length = resp.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        validator = Validator.of(resp.headers)
        encoding = content_coding(resp.headers.get("Content-Encoding"))
        self._check = b""
        if first or not self.delivered:  # nothing handed on yet: this answer is the first
            self.size, self.validator, self.encoding = size, validator, encoding
            return
        if size != self.size or encoding != self.encoding:
            raise FileChanged("the answer to a new request differs from the first")
        if validator != self.validator:
            old = self.validator
            if old.etag and old.last_modified and validator.last_modified and \
                    validator.last_modified != old.last_modified:
                raise FileChanged("the answer to a new request reports another ETag and "
                                  "another Last-Modified than the first")
            # another edge's validator for the same bytes, or another file: the first
            # bytes of the new answer, read past anyway, are compared with those handed on
            self._check = bytes(self._head)

    def _compare(self, at: int, block: bytes) -> None:
        """The new answer's bytes from ``at`` must be those handed on from the first."""
        want = self._check[at:at + len(block)]
        if bytes(block[:len(want)]) != want:
            raise FileChanged(f"the answer to a new request reports other validators and its "
                              f"bytes at offset {at} differ from those written")

    def _resumable(self) -> bool:
        return bool(self.validator.etag or self.validator.last_modified)


def open_stream(session: requests.Session, remote: RemoteFile | str, *, retry: Retry | None = None,
                stop: threading.Event | None = None, timeout: Any = DEFAULT_TIMEOUT,
                chunk_size: int = CHUNK_SIZE, headers: Mapping[str, str] | None = None,
                answer: requests.Response | None = None) -> PlainStream:
    """Open the plain stream of ``remote`` (a :class:`RemoteFile` or a resolved URL).

    ``answer``: an open ``200`` answer to go on with (the probe's, see
    :class:`~swift.http.probe.KeptAnswer`) instead of a new request; later
    reconnects make their own.

    Raises :class:`~swift.errors.SwiftError` if it cannot be opened (after
    retries). Iterating may raise it too: ``SHORT_BODY`` when the server ends
    the body early and it cannot be resumed, :class:`FileChanged` when a
    resumed answer is another file.
    """
    if isinstance(remote, str):
        remote = RemoteFile(remote, final_url=remote, jar=session.cookies)
    return PlainStream(session, remote, retry=retry or Retry(), stop=stop, timeout=timeout,
                       chunk_size=chunk_size, headers=headers, answer=answer)


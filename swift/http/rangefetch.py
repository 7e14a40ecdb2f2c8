"""Fetching one byte range, checked before a byte is handed on, resumed after failures.

Every answer is checked against the range contract
(:func:`swift.http.headers.check_range_answer`) before its body is read, and
every block is handed to ``deliver`` as it arrives. On failure the fetch
resumes at the first byte not yet delivered, through the one retry loop
(:func:`swift.http.retry.call_with_retry`), so a budget of failures *in a
row* applies, reset by progress.

Deviating answers that are still usable, in steps:

1. a ``200`` with the whole file (a backend that ignored ``Range``): closed at
   its headers, nothing written, tried again (another connection may reach
   another backend);
2. ``200`` answers to ranges sent with ``If-Range`` that carry our own
   validators: after :data:`swift.http.remote.IF_RANGE_STRIKES` of them the
   download's ranges go without ``If-Range``, each ``206`` still checked
   against the validators the server reports and the total size;
3. if ranges keep coming back as ``200`` until the retry budget is spent:
   ``RANGES_UNUSABLE``, on which the engine falls back to one plain stream.

A ``206`` that encloses less than was asked (a server that caps its
answers), or starts a little before the first byte asked (ranges coalesced),
or comes as ``multipart/byteranges`` (:mod:`swift.http.multipart`), is read
for what it holds, and the rest is asked for again (RFC 9110 section
15.3.7). One whose ``Content-Length`` and ``Content-Range`` disagree is never
read; repeated, the download's ranges are given up for one plain GET
(:data:`swift.http.remote.LENGTH_STRIKES`).

Validators that differ on an answer are never enough to say "the file changed
on the server" (:class:`~swift.errors.FileChanged`): the fetch asks again for
a sample of bytes already written (:mod:`swift.http.samefile`) and carries on
if they agree (the validator was another edge's), or says "changed" if they
differ; a size that differs is enough on its own.

A resolved URL that answers 401/403/404/410 after it had worked is resolved
again through the download's :class:`~swift.http.remote.RemoteFile`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import requests

from ..errors import ErrorCode, FileChanged, OriginError, SwiftError
from .body import CHUNK_SIZE, DEFAULT_TIMEOUT, iter_body
from .failures import status_error
from .headers import Validator, ValidatorMismatch, check_range_answer, parse_content_range
from .multipart import Part, boundary_of, iter_parts
from .samefile import SameFile
from .retry import Passthrough, Retry, call_with_retry
from .profile import RESERVED_HEADERS
from .remote import RemoteFile

__all__ = ["RangeFetch"]

log = logging.getLogger(__name__)

#: Sample requests to settle one answer with other validators. Each may reach
#: another edge; three reach both of two edges that alternate per connection,
#: and a CDN of many edges settles over the download's later answers.
PROOF_TRIES = 3


@dataclass
class RangeFetch:
    """Fetch one range with retries, resuming at the first undelivered byte.

    ``url`` is the resolved URL (or give ``remote``, the download's shared
    :class:`RemoteFile`, and ``url`` is only its starting point). ``headers`` are
    extra request headers sent on every range request (the download's
    profile; for a helper ``protocol.Fetch.headers``, [name, value] pairs); they
    cannot replace ``Range``, ``If-Range``, ``Accept-Encoding`` or framing headers. ``encoding`` is the content
    coding the probe saw ("" for identity); every answer must carry the same.
    """

    session: requests.Session
    url: str
    size: int
    validator: Validator
    policy: Retry = field(default_factory=Retry)
    timeout: Any = DEFAULT_TIMEOUT
    chunk_size: int = CHUNK_SIZE
    stop: threading.Event | None = None
    encoding: str = ""
    headers: Mapping[str, str] | Iterable[Sequence[str]] | None = None
    remote: RemoteFile | None = None
    #: what proves an answer with other validators is of the same file; default:
    #: the one of ``remote`` (shared by the download's workers)
    same: SameFile | None = None

    def __post_init__(self) -> None:
        self._current: requests.Response | None = None
        if self.remote is None:
            self.remote = RemoteFile(self.url, final_url=self.url, jar=self.session.cookies)
        if self.same is None:
            self.same = self.remote.same_file(self.validator)
        if self.stop is None:
            self.stop = threading.Event()

    def abort(self) -> None:
        """Stop from another thread, also when blocked reading a stalled origin."""
        assert self.stop is not None
        self.stop.set()
        resp = self._current
        if resp is not None:
            try:
                resp.close()
            except Exception:  # noqa: BLE001 - best effort from a foreign thread
                pass

    def run(self, start: int, get_end: Callable[[], int], deliver: Callable[[bytes], bool]) -> int:
        """Fetch from ``start`` to ``get_end()`` (consulted between blocks: the range may
        shrink while it runs), handing each block to ``deliver``, which may return
        False to stop early. Returns the number of bytes delivered; raises
        :class:`~swift.errors.SwiftError` (not :class:`~swift.errors.Cancelled`:
        a stop just returns) or whatever ``deliver`` raised."""
        state = _Progress(start)
        same = self.same
        assert same is not None

        def take(block: bytes) -> bool:
            """Hand on a block at ``state.position``; False when the fetch is to stop."""
            limit = get_end()
            if state.position + len(block) > limit:
                block = block[: max(0, limit - state.position)]
            if block:
                offset = state.position
                state.advance(len(block))
                try:
                    keep_going = deliver(block)
                except Exception as exc:  # the receiving side's failure, not HTTP's
                    raise Passthrough() from exc
                same.wrote(offset, block)
                if keep_going is False:
                    return False
            return state.position < get_end() and not self.stop.is_set()  # type: ignore[union-attr]

        def attempt() -> None:
            while True:  # one request per answer; a capped answer leaves a rest
                end = get_end()
                if state.position >= end:
                    return
                resp, first, last = self._open(state.position, end)
                self._current = resp
                try:
                    with resp:
                        boundary = boundary_of(resp.headers)
                        if boundary is not None:
                            if not self._read_parts(resp, boundary, state, take):
                                return
                            continue
                        skip = state.position - first  # bytes enclosed before those asked for
                        for block in iter_body(resp, min(last, end) - first, self.chunk_size):
                            if skip:
                                cut = min(skip, len(block))
                                skip -= cut
                                block = block[cut:]
                            if not take(block):
                                return
                        same.finish()
                finally:
                    self._current = None

        try:
            call_with_retry(attempt, self.policy, url=self.remote.final_url,  # type: ignore[union-attr]
                            stop=self.stop, on_error=self._second_look, progressed=state.progressed)
        except OriginError as error:
            if error.code is ErrorCode.RANGE_IGNORED:
                raise OriginError(f"the server ignored {self.policy.attempts} range requests in a "
                                  f"row (it sent the whole file each time); ranges are unusable "
                                  f"here", ErrorCode.RANGES_UNUSABLE, status=200) from error
            raise
        except SwiftError as error:
            if error.code is ErrorCode.CANCELLED:
                return state.position - start
            raise
        return state.position - start

    # -- one request ---------------------------------------------------------------------------
    def _open(self, start: int, end: int) -> tuple[requests.Response, int, int]:
        """Send the range request; return the response once its headers are proven
        right, with the span ``[first, last)`` it encloses (``first <= start < last``)."""
        remote = self.remote
        assert remote is not None
        url = remote.final_url
        if remote.may_refresh_later(url):  # it expired, and resolving it again met a busy server
            url = remote.refresh(self.session, url, size=self.size, timeout=self.timeout) or url
        for turn in range(2):  # the second time with a refreshed URL
            if_range = remote.if_range(self.validator)
            headers = range_headers(self.headers, start, end, if_range)
            resp = self.session.get(url, headers=headers, stream=True, timeout=self.timeout)
            try:
                if resp.status_code not in (200, 206):
                    error = status_error(resp.status_code, resp.reason or "", url,
                                         resp.headers.get("Retry-After"))
                    if error.code is ErrorCode.ACCESS_DENIED and turn == 0:
                        new = remote.refresh(self.session, url, size=self.size, timeout=self.timeout)
                        if new is not None and new != url:
                            resp.close()
                            url = new
                            continue
                        if remote.may_refresh_later(url):  # resolving again met a busy server
                            raise OriginError(f"{error}; resolving the URL again failed for now",
                                              ErrorCode.SERVER_BUSY, status=resp.status_code)
                    raise error
                try:
                    first, last = check_range_answer(
                        resp.status_code, resp.headers, start, end, size=self.size,
                        validator=self.validator, encoding=self.encoding,
                        if_range_sent=bool(if_range), aliases=self.same.aliases)  # type: ignore[union-attr]
                except OriginError as error:
                    if error.code is ErrorCode.RANGE_IGNORED and if_range:
                        remote.if_range_ignored()
                    raise
            except BaseException:
                resp.close()
                # this frame is in the exception's traceback: holding the error here would
                # make a cycle, and with it keep the response (and its connection pool,
                # with the pool's idle sockets) until the collector runs
                error = resp = None  # noqa: F841
                raise
            remote.worked(url)
            return resp, first, last
        raise AssertionError("unreachable")  # pragma: no cover

    def _sample_bytes(self, resp: requests.Response, offset: int, n: int) -> bytes | None:
        """The ``n`` bytes at ``offset`` a 206 holds (a single part or multipart/byteranges);
        None when it holds other bytes. FileChanged for another total size."""
        boundary = boundary_of(resp.headers)
        if boundary is None:
            parsed = parse_content_range(resp.headers.get("Content-Range"))
            if parsed is not None and parsed[2] is not None and parsed[2] != self.size:
                raise FileChanged(f"size {self.size} became {parsed[2]}")
            if parsed is None or parsed[:2] != (offset, offset + n):
                return None
            return b"".join(iter_body(resp, n, self.chunk_size, gather=0))
        got, wanted = bytearray(), False
        for item in iter_parts(iter_body(resp, None, self.chunk_size, gather=0), boundary):
            if isinstance(item, Part):
                if item.total is not None and item.total != self.size:
                    raise FileChanged(f"size {self.size} became {item.total}")
                wanted = (item.first, item.end) == (offset, offset + n)
            elif wanted:
                got += item
        return bytes(got) if len(got) == n else None

    def _read_parts(self, resp: requests.Response, boundary: bytes, state: "_Progress",
                    take: Callable[[bytes], bool]) -> bool:
        """Hand on what a multipart/byteranges answer holds from ``state.position`` on;
        False when the fetch is to stop. Parts before or past the position are
        read past; an answer that brought nothing new is a mismatch."""
        before = state.position
        part = None
        skip = 0
        for item in iter_parts(iter_body(resp, None, self.chunk_size), boundary):
            if isinstance(item, Part):
                if item.total is not None and item.total != self.size:
                    raise FileChanged(f"size {self.size} became {item.total}")
                part = item if item.first <= state.position < item.end else None
                skip = state.position - item.first if part is not None else 0
                continue
            if part is None:
                continue
            block = item[skip:] if skip else item
            skip = max(0, skip - len(item))
            if block and not take(block):
                return False
        assert self.same is not None
        self.same.finish()
        if state.position == before:
            raise OriginError(f"a multipart/byteranges answer held none of bytes "
                              f"{before}-{self.size - 1}", ErrorCode.RANGE_MISMATCH, status=206)
        return True

    def _second_look(self, error: SwiftError) -> SwiftError | None:
        """An answer we cannot use as it is: decide what it means before the retry.

        Lengths that disagree, repeated, give the ranges up (a plain GET follows).
        Validators that differ: compare bytes already written before calling the
        file changed (:mod:`swift.http.samefile`)."""
        if error.code is ErrorCode.LENGTHS_DISAGREE:
            assert self.remote is not None
            if self.remote.lengths_disagreed():
                return OriginError(f"{error}, again: the server's range answers cannot be "
                                   f"trusted", ErrorCode.RANGES_UNUSABLE, status=206)
            return None
        if not isinstance(error, ValidatorMismatch):
            return None
        same = self.same
        assert same is not None
        for tried in range(PROOF_TRIES + 1):
            if same.accepts(error.seen):
                log.info("%s; the same bytes under another validator (a CDN edge's): going on", error)
                return OriginError(f"{error}; its bytes are the file's", ErrorCode.RANGE_MISMATCH)
            if tried == PROOF_TRIES or same.sample() is None:
                break
            self._compare_sample(same)  # an answer that settles nothing (a 503): try again
        if same.sample() is None:
            return OriginError(f"{error}; nothing written yet to compare its bytes with",
                               ErrorCode.RANGE_MISMATCH)
        return None  # could not settle it: the mismatch stays a transient fault

    def _compare_sample(self, same: SameFile) -> bool:
        """Ask for the sample's bytes again (no If-Range); raise FileChanged if they
        differ or the size does. False when there is no sample or no usable answer."""
        sample = same.sample()
        remote = self.remote
        if sample is None or remote is None:
            return False
        offset, data = sample
        headers = range_headers(self.headers, offset, offset + len(data), None)
        try:
            with self.session.get(remote.final_url, headers=headers, stream=True,
                                  timeout=self.timeout) as resp:
                if resp.status_code == 200:
                    length = resp.headers.get("Content-Length")
                    if length and length.isdigit() and int(length) != self.size and not self.encoding:
                        raise FileChanged(f"size {self.size} became {length}")
                    return False  # the whole file again: not worth reading for a sample
                if resp.status_code != 206:
                    return False
                got = self._sample_bytes(resp, offset, len(data))
                if got is None:
                    return False
                seen = Validator.of(resp.headers)
        except FileChanged:
            raise
        except (requests.exceptions.RequestException, OSError, SwiftError):
            return False  # no answer to judge by: the mismatch stays unsettled
        verdict = same.prove(seen, offset, got)
        if verdict is False:
            what = _what_changed(self.validator, seen) if self.validator.differs(seen) else \
                "same validators"
            raise FileChanged(f"{what}, and the bytes at offset {offset} differ from those written")
        return verdict is True


def range_headers(extra: Mapping[str, str] | Iterable[Sequence[str]] | None, start: int, end: int,
                  if_range: str | None) -> dict[str, str]:
    """The headers of a request for bytes [start, end): ``extra`` (a mapping, or
    [name, value] pairs as ``protocol.Fetch.headers`` carries them) without any
    header swift sets itself, then ``Range``, ``Accept-Encoding: identity`` and
    ``If-Range`` (when given)."""
    pairs = extra.items() if isinstance(extra, Mapping) else (extra or ())
    headers = {name: value for name, value in pairs if name.lower() not in RESERVED_HEADERS}
    headers.update({"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"})
    if if_range:
        headers["If-Range"] = if_range
    return headers


class _Progress:
    """Where a fetch is, and whether it moved since the last question."""

    def __init__(self, start: int):
        self.position = start
        self._moved = False

    def advance(self, n: int) -> None:
        self.position += n
        self._moved = True

    def progressed(self) -> bool:
        moved, self._moved = self._moved, False
        return moved


def _what_changed(old: Validator, new: Validator) -> str:
    if old.etag:
        return f"ETag {old.etag} became {new.etag}"
    return f"Last-Modified {old.last_modified} became {new.last_modified}"

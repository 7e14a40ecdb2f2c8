"""Asking the origin once what the file is: size, range support, validators, final URL.

The probe is a GET for the first byte (``Range: bytes=0-0``) rather than a
HEAD: many servers answer HEAD differently from GET (405, another length),
and the answer to a real range request is the only proof that ranges work.

What each answer means:

=====================================  =============================================
``206`` with ``bytes 0-0/N``           N bytes, ranges work
``206`` as ``multipart/byteranges``    as its first part's ``Content-Range`` says
``206`` without a usable total         ranges cannot be planned: one plain stream
``200``                                ranges ignored: one plain stream
``416`` with ``bytes */0``             an empty file (RFC 9110 section 15.5.17)
``416`` otherwise                      unknown: one plain stream says what is there
                                       (an empty file whose server omits the
                                       ``Content-Range``)
anything else                          an error (retried if it may pass)
=====================================  =============================================

The probe also keeps what the answer says about other copies of the file
(RFC 6249 ``Link: rel=duplicate`` mirrors, a ``Repr-Digest``/``Digest`` of
the whole file, see :mod:`.mirrors`) and its ``Content-Type`` (a Metalink
document is followed, not saved); using them is the engine's choice.

The probe does not choose the file name: it returns the final URL and the
raw ``Content-Disposition`` value; the engine asks :mod:`swift.names`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

import requests

from ..errors import SwiftError
from .body import DEFAULT_TIMEOUT, iter_body
from .failures import status_error
from .headers import Validator, content_coding, parse_content_range, parse_unsatisfied_range
from .mirrors import Duplicate, described_by, duplicates, origin_digest
from .multipart import Part, boundary_of, iter_parts
from .retry import Retry, call_with_retry
from .remote import RemoteFile

__all__ = ["KeptAnswer", "ProbeResult", "probe"]


class KeptAnswer:
    """A probe's ``200`` answer with its body unread, for the plain stream to go on
    with: a server without ranges is asked once, not twice (it may generate the
    file anew for each request, or take seconds to start). Whoever holds it
    either :meth:`take` s it or :meth:`close` s it; both are safe to repeat."""

    def __init__(self, resp: requests.Response):
        self._resp: requests.Response | None = resp
        self._lock = threading.Lock()

    def take(self) -> requests.Response | None:
        """The answer, once; None after that (or after :meth:`close`)."""
        with self._lock:
            resp, self._resp = self._resp, None
        return resp

    def close(self) -> None:
        resp = self.take()
        if resp is not None:
            resp.close()


@dataclass(frozen=True)
class ProbeResult:
    """What the probe learnt. ``size`` is None when the server does not say;
    ``encoding`` is the content coding applied ("" for identity), never decoded."""

    url: str
    final_url: str
    size: int | None
    ranges: bool
    validator: Validator
    content_disposition: str | None = None
    encoding: str = ""
    #: The answer's ``Cache-Control`` (``private``/``no-store`` content is never shared)
    cache_control: str | None = None
    #: The download's shared :class:`RemoteFile` the probe resolved (its current
    #: URL, cookie jar and request profile), for every later request of it.
    remote: RemoteFile | None = field(default=None, compare=False, repr=False)
    #: With ``keep_answer``: the ``200`` answer itself, its body unread (see :class:`KeptAnswer`).
    answer: KeptAnswer | None = field(default=None, compare=False, repr=False)
    #: RFC 6249 mirrors the answer names (``Link: rel=duplicate``), best first.
    duplicates: tuple[Duplicate, ...] = ()
    #: The whole file's digest the answer carries, ``(hashlib name, hex)`` (RFC 9530 / 3230).
    digest: tuple[str, str] | None = None
    #: The answer's media type, lower-case, without parameters ("" when absent).
    content_type: str = ""
    #: A Metalink document the answer points at (``Link: rel=describedby``), if any.
    metalink_url: str | None = None

    @property
    def encoded(self) -> bool:
        return self.encoding != ""

    @property
    def splittable(self) -> bool:
        return self.ranges and self.size is not None


def probe(session: requests.Session, remote: RemoteFile | str, *, timeout: Any = DEFAULT_TIMEOUT,
          retry: Retry | None = None, stop: threading.Event | None = None,
          policy: Retry | None = None, keep_answer: bool = False) -> ProbeResult:
    """Probe ``remote`` (a :class:`RemoteFile`, or a URL: then a RemoteFile on the session's jar).

    Raises :class:`~swift.errors.SwiftError` subclasses: ``UsageError`` for a
    malformed URL, ``NetworkError``, ``OriginError`` for an unusable answer.
    ``policy`` is the old name of ``retry``. With ``keep_answer``, a ``200``
    (the server sent the whole file) stays open as ``result.answer``: the
    caller takes it for the plain stream, or closes it.
    """
    if isinstance(remote, str):
        remote = RemoteFile(remote, jar=session.cookies)
    retry = retry or policy or Retry()
    url = remote.url

    def attempt() -> ProbeResult:
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
        try:
            result = _read_probe(resp, url)
        except BaseException:
            resp.close()
            raise
        if keep_answer and resp.status_code == 200:
            return replace(result, answer=KeptAnswer(resp))
        resp.close()
        return result

    result = call_with_retry(attempt, retry, url=url, stop=stop)
    remote.resolved(result.final_url)
    return replace(result, remote=remote)


def _read_probe(resp: requests.Response, url: str) -> ProbeResult:
    status = resp.status_code
    if status not in (200, 206, 416):
        raise status_error(status, resp.reason or "", resp.url or url,
                           resp.headers.get("Retry-After"))
    size: int | None = None
    ranges = False
    if status == 206:
        parsed = parse_content_range(resp.headers.get("Content-Range"))
        if parsed is None and boundary_of(resp.headers) is not None:
            parsed = _first_part(resp)
        if parsed and parsed[0] == 0 and parsed[2] is not None:
            size, ranges = parsed[2], True
    elif status == 416:
        if parse_unsatisfied_range(resp.headers.get("Content-Range")) == 0:
            size, ranges = 0, True
    else:
        length = resp.headers.get("Content-Length")
        if length and length.isdigit():
            size = int(length)  # the length of the encoded body, which is what we save
    final_url = resp.url or url
    link = resp.headers.get("Link")
    return ProbeResult(url=url, final_url=final_url, size=size, ranges=ranges,
                       validator=Validator.of(resp.headers),
                       content_disposition=resp.headers.get("Content-Disposition"),
                       encoding=content_coding(resp.headers.get("Content-Encoding")),
                       duplicates=tuple(duplicates(link, final_url)),
                       digest=origin_digest(resp.headers),
                       content_type=(resp.headers.get("Content-Type") or "").split(";", 1)[0]
                       .strip().lower()[:100],
                       metalink_url=described_by(link, final_url),
                       cache_control=resp.headers.get("Cache-Control"))


def _first_part(resp: requests.Response) -> tuple[int, int, int | None] | None:
    """The span of a multipart/byteranges probe answer's first part (its body is
    the one byte asked for and a few headers: reading stops at the first part
    header, and the preamble before it is bounded); None if it cannot be read."""
    boundary = boundary_of(resp.headers)
    try:
        for item in iter_parts(iter_body(resp, None, gather=0),
                               boundary or b""):
            if isinstance(item, Part):
                return item.first, item.end, item.total
    except SwiftError:
        return None
    return None

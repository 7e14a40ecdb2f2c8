"""Asking the origin once what the file is: size, range support, validators, final URL.

The probe is a GET for the first byte (``Range: bytes=0-0``) rather than a
HEAD: many servers answer HEAD differently from GET (405, another length),
and the answer to a real range request is the only proof that ranges work.

What each answer means:

=====================================  =============================================
``206`` with ``bytes 0-0/N``           N bytes, ranges work
``206`` without a usable total         ranges cannot be planned: one plain stream
``200``                                ranges ignored: one plain stream
``416`` with ``bytes */0``             an empty file (RFC 9110 section 15.5.17)
``416`` otherwise                      unknown: one plain stream says what is there
                                       (an empty file whose server omits the
                                       ``Content-Range``, issue 8 item 5)
anything else                          an error (retried if it may pass)
=====================================  =============================================

The probe does not choose the file name: it returns the final URL and the
raw ``Content-Disposition`` value; the engine asks :mod:`swift.names`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import requests

from .body import DEFAULT_TIMEOUT
from .failures import status_error
from .headers import Validator, content_coding, parse_content_range, parse_unsatisfied_range
from .retry import Retry, call_with_retry
from .remote import RemoteFile

__all__ = ["ProbeResult", "probe"]


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

    @property
    def encoded(self) -> bool:
        return self.encoding != ""

    @property
    def splittable(self) -> bool:
        return self.ranges and self.size is not None

    @property
    def filename(self) -> str:
        """Deprecated: the engine chooses names (``names.choose_name``); kept until it does."""
        from .. import names
        return names.choose_name(self.url, self.final_url, self.content_disposition)


def probe(session: requests.Session, remote: RemoteFile | str, *, timeout: Any = DEFAULT_TIMEOUT,
          retry: Retry | None = None, stop: threading.Event | None = None,
          policy: Retry | None = None) -> ProbeResult:
    """Probe ``remote`` (a :class:`RemoteFile`, or a URL: then a RemoteFile on the session's jar).

    Raises :class:`~swift.errors.SwiftError` subclasses: ``UsageError`` for a
    malformed URL, ``NetworkError``, ``OriginError`` for an unusable answer.
    ``policy`` is the old name of ``retry``.
    """
    if isinstance(remote, str):
        remote = RemoteFile(remote, jar=session.cookies)
    retry = retry or policy or Retry()
    url = remote.url

    def attempt() -> ProbeResult:
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            return _read_probe(resp, url)

    result = call_with_retry(attempt, retry, url=url, stop=stop)
    remote.resolved(result.final_url)
    return result


def _read_probe(resp: requests.Response, url: str) -> ProbeResult:
    status = resp.status_code
    if status not in (200, 206, 416):
        raise status_error(status, resp.reason or "", resp.url or url,
                           resp.headers.get("Retry-After"))
    size: int | None = None
    ranges = False
    if status == 206:
        parsed = parse_content_range(resp.headers.get("Content-Range"))
        if parsed and parsed[0] == 0 and parsed[2] is not None:
            size, ranges = parsed[2], True
    elif status == 416:
        if parse_unsatisfied_range(resp.headers.get("Content-Range")) == 0:
            size, ranges = 0, True
    else:
        length = resp.headers.get("Content-Length")
        if length and length.isdigit():
            size = int(length)  # the length of the encoded body, which is what we save
    return ProbeResult(url=url, final_url=resp.url or url, size=size, ranges=ranges,
                       validator=Validator.of(resp.headers),
                       content_disposition=resp.headers.get("Content-Disposition"),
                       encoding=content_coding(resp.headers.get("Content-Encoding")))

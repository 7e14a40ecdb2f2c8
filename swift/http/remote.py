"""The one shared object per download that knows where the file is *now*.

A :class:`RemoteFile` holds the URL the user gave, the URL it currently resolves
to (after redirects), the download's cookie jar and request profile, and what
the server has taught us about ranges. Every local range worker of a download
uses the same RemoteFile; each helper makes its own for the URL it is sent.

Rules
-----
* **Re-resolve an expired redirect**. Signed URLs of object
  stores and release pages (``/file`` → 302 → ``/signed/file?expires=...``)
  stop working after a while; a guarded URL may start to answer 401, 403, 404
  or 410. When the resolved URL answers so *after it had worked*, the
  original URL is resolved again (a fresh redirect) and the work goes on.
  Only one worker resolves at a time (a lock); a worker that failed on a URL
  somebody already replaced just takes the new one. A URL that never worked
  since the last refresh is not refreshed again (the answer that resolved it
  counts: a signed URL that expires faster than a busy server lets us use it
  is resolved again), and one request is refreshed at most once, so a URL
  that is simply forbidden fails instead of looping.
* **One cookie jar per download.** Cookies that any answer sets (a redirect's
  too) are kept and sent with every later request of the download.
* **If-Range, then validators**. Some CDNs answer 200 with
  the whole file whenever ``If-Range`` carries an ETag, yet honour plain
  ranges. After :data:`IF_RANGE_STRIKES` such answers that still carry the
  probe's validators, ranges are sent without ``If-Range``; every 206 is then
  checked against the validators the server reports and the total size in
  ``Content-Range`` (see :mod:`swift.http.headers`). Likewise once the
  server is seen to give the same bytes several ETags (one per edge,
  :mod:`swift.http.samefile`).
* **Lengths that disagree** (docs/http.md). A 206 whose ``Content-Length`` is
  not its ``Content-Range``'s span is never read; after
  :data:`LENGTH_STRIKES` of them in the download its ranges are given up
  (``RANGES_UNUSABLE``), and the engine goes on with one plain GET, which such
  servers answer right.
"""

from __future__ import annotations

import base64
import logging
import threading
from typing import Any
from urllib.parse import unquote

import requests

from .. import sessions
from .body import DEFAULT_TIMEOUT
from .headers import Validator, parse_content_range
from .profile import RequestProfile
from .samefile import SameFile
from .url import normalize_url, redact_url, secret_query_parameters, split_credentials

__all__ = ["RemoteFile", "IF_RANGE_STRIKES", "LENGTH_STRIKES"]

log = logging.getLogger(__name__)

#: 200 answers (with our own validators) to ranges sent with If-Range, counted
#: over the whole download, before ranges go without If-Range. Two, so that one
#: backend's one-off slip does not change the download's rules, while a CDN
#: that always does it costs two wasted requests (each closed at its headers).
IF_RANGE_STRIKES = 2
#: 206 answers whose Content-Length and Content-Range disagree, counted over the
#: whole download, before its ranges are given up for one plain GET. Two, so a
#: single garbled answer costs one retry, while a server that always does it
#: (it has a bug in its range code, not in its plain GET) costs two requests.
LENGTH_STRIKES = 2


class RemoteFile:
    """Where one download's file is: original URL, current URL, cookies, range rules."""

    def __init__(self, url: str, *, profile: RequestProfile | None = None,
                 final_url: str | None = None, jar: requests.cookies.RequestsCookieJar | None = None):
        self.url = normalize_url(url)
        self.profile = profile or RequestProfile()
        self.jar = jar if jar is not None else requests.cookies.RequestsCookieJar()
        if jar is None:
            self.profile.load_into(self.jar)
        self._lock = threading.Lock()
        self._final = final_url or self.url
        self._worked = final_url is not None
        self._if_range_strikes = 0
        self._length_strikes = 0
        self._pending = False  # the last refresh met a fault that may pass
        self._same: SameFile | None = None
        self.refreshes = 0
        self._verdict_lock = threading.Lock()
        self._verdicts: dict[str, bool] = {}  # URL → refused only for helpers? (decided once)

    def __repr__(self) -> str:
        return f"RemoteFile({redact_url(self.url)!r} -> {redact_url(self.final_url)!r})"

    # -- sessions ------------------------------------------------------------------------------
    def session(self, *, source_address: str | None = None, allow_private: bool = True,
                pool_size: int = 16) -> requests.Session:
        """A session for this download: its profile, and its one cookie jar."""
        return sessions.make_session(source_address=source_address, allow_private=allow_private,
                                     pool_size=pool_size, profile=self.profile, cookies=self.jar)

    # -- where the file is ---------------------------------------------------------------------
    @property
    def final_url(self) -> str:
        with self._lock:
            return self._final

    def resolved(self, final_url: str) -> None:
        """The probe (or a refresh) reached the file at ``final_url``."""
        with self._lock:
            self._final = final_url
            self._worked = True

    def worked(self, url: str) -> None:
        """An answer from ``url`` was good: it may be refreshed once it expires."""
        with self._lock:
            if url == self._final:
                self._worked = True

    def works(self, url: str) -> bool:
        """True when ``url`` is the current URL and an answer from it was good: a
        helper refused there is refused for itself, not because the URL expired."""
        with self._lock:
            return url == self._final and self._worked

    def refused_only_for_peer(self, url: str, *, size: int | None,
                              source_address: str | None = None, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        """A helper was refused (401/403/404/410, an untrusted certificate) at ``url``.

        True when the refusal is the helper's own: ``url`` works
        here and resolving the original URL again gives the same one (a URL bound
        to this machine's address, a token or a CA only this machine has). False
        when ``url`` is no longer current or has expired for everyone (then a new
        one is resolved, and later jobs carry it)."""
        with self._verdict_lock:  # a helper's other slots wait for the first one's answer
            if url in self._verdicts:
                return self._verdicts[url]
            if not self.works(url):
                return False
            with self.session(source_address=source_address) as session:
                fresh = self.refresh(session, url, size=size, timeout=timeout)
            if fresh is None and self.may_refresh_later(url):
                return False  # undecided (the server was busy): ask again next time
            self._verdicts[url] = verdict = fresh is None or fresh == url
            return verdict

    def refresh(self, session: requests.Session, failed_url: str, *, size: int | None,
                timeout: Any) -> str | None:
        """A URL to use instead of ``failed_url`` (which answered 401/403/404/410), or
        None when there is none: the original URL does not redirect anywhere new,
        or ``failed_url`` never worked since it was resolved. When resolving again
        failed on a fault that may pass (a 503, a reset), :meth:`may_refresh_later`
        says so and a later refresh tries again."""
        with self._lock:
            if failed_url != self._final:
                return self._final  # another worker has refreshed it already
            if not self._worked or self._final == self.url:
                return None
            self._worked = False
            new, transient = self._resolve(session, size=size, timeout=timeout)
            self._pending = transient and new is None
            if new is None:
                self._worked = transient  # a fault that may pass: the next refresh tries again
                return None
            self._final = new
            self._worked = True  # the new URL has just answered a range request well
            self.refreshes += 1
            log.info("%s answered as expired; resolved %s again", redact_url(failed_url),
                     redact_url(self.url))
            return new

    def may_refresh_later(self, url: str) -> bool:
        """True when ``url`` is current and a refresh of it may still bring a new URL
        (the last attempt met a fault that may pass)."""
        with self._lock:
            return url == self._final and self._pending

    def _resolve(self, session: requests.Session, *, size: int | None,
                 timeout: Any) -> tuple[str | None, bool]:
        """(the URL the original one leads to now, or None; whether a None may pass)."""
        from .failures import BUSY_STATUSES
        headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
        try:
            with session.get(self.url, headers=headers, stream=True, timeout=timeout) as resp:
                if resp.status_code not in (200, 206):
                    return None, resp.status_code in BUSY_STATUSES
                if resp.status_code == 206 and size is not None:
                    parsed = parse_content_range(resp.headers.get("Content-Range"))
                    if parsed is not None and parsed[2] is not None and parsed[2] != size:
                        return None, False  # the range check on the new URL will say why
                return resp.url or self.url, False
        except (requests.exceptions.RequestException, OSError) as exc:
            log.info("resolving %s again failed: %s", redact_url(self.url), type(exc).__name__)
            return None, True

    # -- helpers -------------------------------------------------------------------------------
    def secrets(self) -> list[str]:
        """What in this download is a secret, in words (empty: nothing): the
        profile's, credentials in the URL, and cookies the server set."""
        found = self.profile.secrets(self.url) or []
        if not any("URL" in f for f in found) and split_credentials(self.final_url)[1] is not None:
            found.append("credentials in the URL")
        if not any("query" in f for f in found) and (
                names := secret_query_parameters(self.final_url)):
            found.append(f"a credential in the URL's query ({', '.join(names)})")
        if len(self.jar) > len(self.profile.cookies):
            found.append("cookies the server set")
        return found

    def for_peer(self, *, private: bool) -> tuple[str, list[list[str]]]:
        """(URL, headers) for a helper's fetch job (``protocol.Fetch.url`` and
        ``.headers``): the current URL without ``user:password@``, and the profile's
        headers; over a private connection also the secrets (the download's cookies
        for the URL, the credentials as an ``Authorization`` header)."""
        url = self.final_url
        bare, user, password = split_credentials(url)
        cookie = authorization = None
        if private:
            # requests files cookies that answers set under the host as it appears in
            # the request URL, user:password@ included: look them up as it would
            cookie = _cookie_header(self.jar, url) or _cookie_header(self.jar, bare)
            if user is not None:
                authorization = _basic(unquote(user), unquote(password or ""))
        return bare, self.profile.peer_headers(private=private, cookie_header=cookie,
                                               authorization=authorization)

    # -- range rules ---------------------------------------------------------------------------
    def same_file(self, validator: Validator) -> SameFile:
        """The download's one :class:`SameFile` (its sample and proven aliases)."""
        with self._lock:
            if self._same is None or self._same.validator != validator:
                self._same = SameFile(validator)
            return self._same

    def if_range(self, validator: Validator) -> str | None:
        """The ``If-Range`` value to send now (None once the server showed it cannot
        take one, or that its validators differ per edge)."""
        with self._lock:
            if self._if_range_strikes >= IF_RANGE_STRIKES:
                return None
            if self._same is not None and self._same.per_edge:
                return None
        return validator.if_range()

    def lengths_disagreed(self) -> bool:
        """A 206 said two lengths; True once that has happened :data:`LENGTH_STRIKES` times."""
        with self._lock:
            self._length_strikes += 1
            return self._length_strikes >= LENGTH_STRIKES

    def if_range_ignored(self) -> None:
        """A range sent with If-Range got 200 with our own validators."""
        with self._lock:
            self._if_range_strikes += 1
            switched = self._if_range_strikes == IF_RANGE_STRIKES
        if switched:
            log.info("%s answers 200 to ranges sent with If-Range; sending ranges without it and "
                     "checking the validators of every answer", redact_url(self.url))

    @property
    def uses_if_range(self) -> bool:
        with self._lock:
            return self._if_range_strikes < IF_RANGE_STRIKES


def _cookie_header(jar: requests.cookies.RequestsCookieJar, url: str) -> str | None:
    request = requests.Request("GET", url).prepare()
    return requests.cookies.get_cookie_header(jar, request) or None


def _basic(user: str, password: str) -> str:
    """HTTP Basic credentials as requests sends them for ``user:password@`` (RFC 7617)."""
    token = base64.b64encode(f"{user}:{password}".encode("latin-1", "replace")).decode("ascii")
    return f"Basic {token}"

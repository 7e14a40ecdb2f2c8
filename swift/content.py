"""What a file *is*, apart from where it was fetched. Pure.

Two values, kept apart on purpose:

- :class:`ContentIdentity`: the bytes themselves, as the origin vouched for
  them when they were fetched: their length, their content coding, and a
  strong validator (a strong ``ETag``, else ``Last-Modified``), or a trusted
  digest (:func:`identity_digest`: the SHA-256 or SHA-512 the download checks
  the whole file against, from ``--checksum``, a Metalink or the origin's
  RFC 9530 ``Repr-Digest``), which then is the identity on its own. Never a
  URL: two URLs may serve one file, and one URL serves another file after a
  change.
- :class:`Provenance`: the URLs those bytes were fetched from (as typed, then
  after redirects). It says where to ask the origin again, never what the
  bytes are.

A resume record and the finished file's mark (``storage.FileIdentity``) hold
both, because a resume must be of the same URL *and* the same content. A
LAN copy is shared under the content identity alone, and only when it is
shareable (see :attr:`ContentIdentity.shareable` and docs/sources.md): a
weak ETag or no validator at all says nothing about the bytes.

Sharing (docs/sharing.md)
-------------------------
* **The key shared under.** A LAN copy is used only under the same identity
  *and*, unless a trusted digest names the bytes, the same URL as typed,
  normalised (:func:`url_key`): scheme and host lower-cased, default port,
  credentials and fragment dropped, and the query parameters that only sign
  or expire a URL left out (``X-Amz-Signature``, ``X-Amz-Expires``,
  ``Expires``, ``Signature``, ``Key-Pair-Id``, ``token``, ...:
  ``SIGNING_PARAMETERS``), so two members holding differently signed links
  to one object match. The URL is kept in the key because a size and a
  ``Last-Modified`` alone may be shared by two different files; leaving a
  signing parameter out cannot make two different files match, since the
  length, coding and strong validator must match too.
* **Label.** Members ask by :func:`label`: HMAC-SHA-256 of that key under
  the pool's secret, so no URL crosses the LAN. Without a secret the key is
  the public ``OPEN_POOL_KEY``: anyone who knows (or guesses) a URL, its
  length and validator can compute its label (README, "Sharing: the threat
  model").
* **Which digests name content.** Only SHA-256 and SHA-512
  (:data:`IDENTITY_DIGESTS`), and only the one the whole file is checked
  against at the end: a label is then a promise the download keeps. MD5 and
  SHA-1 are still checked where given, but two different files can be made
  to share one (a chosen-prefix collision), so under them the identity stays
  the URL and validator. Two members that check different algorithms (one a
  ``--checksum sha256:``, the other a Metalink's SHA-512) do not find each
  other's copies.
* **Private content** (:func:`private_reasons`) is never offered:
  credentials in the URL, an ``Authorization`` header, cookies, a secret
  ``--header``, or an answer marked ``Cache-Control: private``/``no-store``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .checksums import parse_checksum

__all__ = ["ContentIdentity", "IDENTITY_DIGESTS", "OPEN_POOL_KEY", "Provenance",
           "SIGNING_PARAMETERS", "identity_digest", "label", "private_reasons", "url_key"]

#: The digests that may be a content identity on their own (hashlib names): collision
#: resistant ones only (see "Which digests name content" above).
IDENTITY_DIGESTS = ("sha256", "sha512")


@dataclass(frozen=True)
class ContentIdentity:
    """The bytes of one version of one file (see the module docstring).

    ``size`` in bytes; ``coding`` the content coding of the stored bytes
    ("" for identity, as ``http.content_coding`` gives it); ``etag`` a
    *strong* ETag (``http.strong_etag``: a weak one is None here);
    ``last_modified`` the ``Last-Modified`` value; ``digest`` a trusted
    ``ALGO:HEX`` (lower case). With a digest, the digest and size alone
    identify the content: validators then say nothing more.
    """

    size: int
    coding: str = ""
    etag: str | None = None
    last_modified: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"a size is 0 or more bytes, not {self.size}")
        if self.etag is not None and self.etag.startswith("W/"):
            raise ValueError("a weak ETag does not identify content")

    @classmethod
    def of(cls, size: int, coding: str, etag: str | None, last_modified: str | None,
           digest: str | None = None) -> "ContentIdentity":
        """From an origin's answer (already checked: ``etag`` strong or None); a
        digest is kept in lower case."""
        return cls(size, coding, etag, last_modified, digest.strip().lower() if digest else None)

    @property
    def validator(self) -> str | None:
        """The strong validator: the ETag, else Last-Modified, else None."""
        return self.etag or self.last_modified

    @property
    def shareable(self) -> bool:
        """True if two members holding this identity surely hold the same bytes:
        a trusted digest, or a strong validator. (Privacy decides the rest.)"""
        return self.digest is not None or self.validator is not None

    def canonical(self) -> bytes:
        """One byte string per identity, the same on every member (for an HMAC label).

        With a digest: the size and the digest only, so copies fetched with and
        without a validator still match. Without: size, coding and validators.
        """
        if self.digest is not None:
            fields: dict = {"size": self.size, "digest": self.digest}
        else:
            fields = {"size": self.size, "coding": self.coding, "etag": self.etag,
                      "last_modified": self.last_modified}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def same_content(self, other: "ContentIdentity") -> bool:
        """True if ``other`` names these bytes: the same digest when both have one,
        else the same size, coding and validators (and a validator at all)."""
        if self.size != other.size:
            return False
        if self.digest is not None and other.digest is not None:
            return self.digest == other.digest
        return (self.validator is not None and self.coding == other.coding
                and (self.etag, self.last_modified) == (other.etag, other.last_modified))


@dataclass(frozen=True)
class Provenance:
    """Where the bytes were fetched from: the URL as given, then the URL after redirects."""

    url: str
    final_url: str

    @property
    def urls(self) -> frozenset[str]:
        return frozenset((self.url, self.final_url))


#: Query parameters (compared without case) that sign, date or expire a URL rather
#: than name an object: AWS S3 SigV2/SigV4 (``X-Amz-*``, ``AWSAccessKeyId``,
#: ``Signature``, ``Expires``), CloudFront (``Key-Pair-Id``, ``Policy``), Google
#: Cloud Storage (``X-Goog-*``, ``GoogleAccessId``), Azure SAS (``sig``, ``se``,
#: ``st``, ``sp``, ``sv``, ``sr``, ``spr``, ``skoid`` ...), and the generic
#: ``token``/``expires``/``signature`` of CDNs.
SIGNING_PARAMETERS = frozenset({
    "signature", "expires", "key-pair-id", "policy", "awsaccesskeyid", "token", "x-amz-security-token",
    "googleaccessid", "sig", "se", "st", "sp", "sv", "sr", "spr", "si", "skoid", "sktid", "skt",
    "ske", "sks", "skv", "sdd", "access_token", "auth", "verify", "hmac", "hdnts", "exp",
})
#: Parameter name prefixes that mark a signing parameter.
SIGNING_PREFIXES = ("x-amz-", "x-goog-", "x-ms-")
#: The label key of a pool without a secret: public, so a label there hides the
#: identity only from someone who cannot guess it (see the module docstring).
OPEN_POOL_KEY = b"swift open pool: no secret"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Response cache directives that forbid keeping the answer for others (RFC 9111 5.2.2).
_PRIVATE_DIRECTIVES = ("private", "no-store")


def identity_digest(checksum: str | None) -> str | None:
    """``checksum`` (``ALGO:HEX`` as ``--checksum`` takes it, any case, ``sha-256:`` too) as
    the lower-case ``sha256:HEX`` or ``sha512:HEX`` a :class:`ContentIdentity` holds; None
    for no checksum, an unreadable one, or another algorithm (:data:`IDENTITY_DIGESTS`)."""
    if not checksum:
        return None
    try:
        algo, value = parse_checksum(checksum)
    except ValueError:
        return None
    return f"{algo}:{value}" if algo in IDENTITY_DIGESTS else None


def url_key(url: str) -> str:
    """``url`` without what only signs, expires or authenticates it (see the module docstring).

    ``url`` is an http(s) URL as ``http.normalize_url`` gives it; ValueError if
    it has no host.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"a URL without a host has no identity: {url[:80]!r}")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    kept = [pair for pair in parts.query.split("&") if pair and not _signing(pair)]
    return urlunsplit((scheme, netloc, parts.path or "/", "&".join(kept), ""))


def _signing(pair: str) -> bool:
    name = pair.split("=", 1)[0].lower()
    return name in SIGNING_PARAMETERS or name.startswith(SIGNING_PREFIXES)


def label(identity: ContentIdentity, secret: bytes | None, url: str = "") -> str:
    """The opaque name members ask by: HMAC-SHA-256 (64 lowercase hex) under the pool's
    secret (``OPEN_POOL_KEY`` without one) of the identity and, unless a trusted digest
    names the bytes, the URL's :func:`url_key` ``url`` (see "Sharing" above)."""
    key = secret if secret else OPEN_POOL_KEY
    body = identity.canonical()
    if identity.digest is None:
        body += b"\x00" + url.encode("utf-8", "surrogateescape")
    return hmac.new(key, b"swift-content\x00" + body, hashlib.sha256).hexdigest()


def private_reasons(secrets: list[str], cache_control: str | None) -> list[str]:
    """Why content may not be offered, in words (empty: it may be).

    ``secrets``: what the download carries that is secret, as
    ``http.RemoteFile.secrets()`` names it (credentials, ``Authorization``,
    cookies, a secret ``--header``); ``cache_control``: the answer's
    ``Cache-Control`` value.
    """
    reasons = list(secrets)
    directives = {part.split("=", 1)[0].strip().lower()
                  for part in (cache_control or "").split(",") if part.strip()}
    reasons += [f"the server marked it Cache-Control: {d}" for d in _PRIVATE_DIRECTIVES
                if d in directives]
    return reasons

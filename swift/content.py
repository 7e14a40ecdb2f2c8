"""What content *is*, for sharing it on the LAN: its identity, its label, and whether it is private.

Pure: no I/O, no clock. docs/sharing.md describes the design; the rules:

* **Identity.** Two downloads are the same content when the origin's answer
  says so now, never by name alone. Without a trusted digest the identity is
  the URL as typed, normalised (``url_key``), *and* the answer's length,
  content coding and strong validator (a strong ETag, else Last-Modified).
  No validator (or only a weak ETag, which ``http.Validator`` already drops)
  means no identity, so no sharing: nothing would tell a stale copy from the
  current file. With a trusted digest (``--checksum``, a metalink, an RFC 9530
  ``Repr-Digest``) the identity is the digest and the length: the bytes
  themselves, whatever URL served them.
* **URL normalisation** (``url_key``): scheme and host lower-cased, default
  port, credentials and fragment dropped, and the query parameters that only
  sign or expire a URL left out (``X-Amz-Signature``, ``X-Amz-Expires``,
  ``Expires``, ``Signature``, ``Key-Pair-Id``, ``token``, ...:
  ``SIGNING_PARAMETERS``), so two members holding differently signed links
  to one object match. The rest of the query keeps its order and spelling.
  Leaving a parameter out can never make two *different* files match: the
  identity also needs the same length, coding and strong validator, which
  two versions of a file do not share.
* **Label.** Members ask each other by ``label(identity, secret)``:
  HMAC-SHA-256 of the identity's canonical bytes under the pool's secret, so
  no URL crosses the LAN and a member who does not know the identity cannot
  tell what a label stands for. Without a secret the key is the fixed
  ``OPEN_POOL_KEY``: anyone on the LAN who knows (or guesses) a URL, its
  length and validator can compute its label and ask who holds it (README,
  "Sharing: the threat model").
* **Private content** (``private_reasons``) is never offered: credentials in
  the URL, an ``Authorization`` header, cookies, a secret ``--header``, or an
  answer marked ``Cache-Control: private`` or ``no-store``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ContentIdentity", "OPEN_POOL_KEY", "SIGNING_PARAMETERS", "label", "private_reasons",
           "url_key"]

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


@dataclass(frozen=True)
class ContentIdentity:
    """One version of one file's bytes: ``canonical()`` is what a label is made of.

    Either ``digest`` (``"sha256:<hex>"``, a trusted digest) and ``size``, or
    ``url`` (a ``url_key``), ``size``, ``coding`` ("" for identity) and at least
    one of ``etag`` (strong) and ``last_modified``.
    """

    size: int
    url: str = ""
    coding: str = ""
    etag: str | None = None
    last_modified: str | None = None
    digest: str | None = None

    @classmethod
    def of(cls, url: str, size: int | None, coding: str, etag: str | None,
           last_modified: str | None, digest: str | None = None) -> "ContentIdentity | None":
        """The identity of an answer, or None when it has none (no length, or no strong
        validator and no trusted digest: such content is never shared)."""
        if size is None:
            return None
        if digest:
            return cls(size=size, digest=digest.lower())
        if not etag and not last_modified:
            return None
        try:
            key = url_key(url)
        except ValueError:
            return None
        return cls(size=size, url=key, coding=coding, etag=etag or None,
                   last_modified=None if etag else last_modified)

    def canonical(self) -> bytes:
        """Unambiguous bytes for the label: a JSON list, its order fixed."""
        if self.digest:
            fields = ["digest", self.digest, self.size]
        else:
            fields = ["origin", self.url, self.size, self.coding, self.etag, self.last_modified]
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def label(identity: ContentIdentity, secret: bytes | None) -> str:
    """The opaque name members ask by: HMAC-SHA-256 of the identity (64 lowercase hex)."""
    key = secret if secret else OPEN_POOL_KEY
    return hmac.new(key, b"swift-content\x00" + identity.canonical(), hashlib.sha256).hexdigest()


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

"""What a file *is*, apart from where it was fetched. Pure.

Two values, kept apart on purpose:

- :class:`ContentIdentity`: the bytes themselves, as the origin vouched for
  them when they were fetched: their length, their content coding, and a
  strong validator (a strong ``ETag``, else ``Last-Modified``), or a trusted
  digest (``--checksum``; later a Metalink or an RFC 9530 ``Repr-Digest``),
  which then is the identity on its own. Never a URL: two URLs may serve one
  file, and one URL serves another file after a change.
- :class:`Provenance`: the URLs those bytes were fetched from (as typed, then
  after redirects). It says where to ask the origin again, never what the
  bytes are.

A resume record and the finished file's mark (``storage.FileIdentity``) hold
both, because a resume must be of the same URL *and* the same content. A
LAN copy is shared under the content identity alone, and only when it is
shareable (see :attr:`ContentIdentity.shareable` and docs/sources.md): a
weak ETag or no validator at all says nothing about the bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["ContentIdentity", "Provenance"]


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

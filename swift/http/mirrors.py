"""What an origin's answer says about mirrors and the file's digest (RFC 6249, RFC 9530, RFC 3230).

Pure: header values in, values out; no I/O.

* ``Link: <http://mirror/f.iso>; rel=duplicate; pri=1`` (RFC 6249 section 3)
  names another URL of the *same* file; a lower ``pri`` is preferred, no
  ``pri`` ranks last. Several Link headers arrive joined by ``,`` (requests
  joins repeated headers), so the value is split outside ``<...>`` and quotes.
  Relative references are resolved against the answer's URL; only http and
  https URLs are kept. ``rel=describedby`` with ``type=application/metalink4+xml``
  (section 4) points at a Metalink document: :func:`described_by`.
* ``Repr-Digest: sha-256=:BASE64:`` (RFC 9530 section 3) is the digest of the
  whole representation, whatever range the answer carries, so the probe's
  ``206`` for one byte carries the whole file's digest. The older ``Digest:
  SHA-256=BASE64`` (RFC 3230, as MirrorBrain sends it) means the same.
  ``Content-Digest`` is the digest of this answer's bytes only and is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urljoin, urlsplit

from ..checksums import algorithm_of, hex_of_base64, strongest

__all__ = ["Duplicate", "duplicates", "described_by", "origin_digest"]

#: Most duplicates taken from one answer: a hostile origin could list thousands.
MAX_DUPLICATES = 32
#: RFC 6249 section 3.4: a duplicate without ``pri`` ranks after every one with it.
NO_PRIORITY = 999999


@dataclass(frozen=True)
class Duplicate:
    """One mirror an origin names: its absolute URL and priority (lower first)."""

    url: str
    priority: int = NO_PRIORITY


def _link_values(value: str) -> list[tuple[str, dict[str, str]]]:
    """``<uri>; a=b; c="d", <uri2>; ...`` → [(uri, {param: value})]; unreadable parts skipped."""
    out: list[tuple[str, dict[str, str]]] = []
    i, n = 0, len(value)
    while i < n:
        start = value.find("<", i)
        if start < 0:
            break
        end = value.find(">", start)
        if end < 0:
            break
        uri = value[start + 1:end].strip()
        params: dict[str, str] = {}
        j = end + 1
        while j < n and value[j] != ",":
            if value[j] != ";":
                j += 1
                continue
            j += 1
            k = j
            while k < n and value[k] not in "=;,":
                k += 1
            name = value[j:k].strip().lower()
            raw = ""
            if k < n and value[k] == "=":
                k += 1
                while k < n and value[k] in " \t":
                    k += 1
                if k < n and value[k] == '"':
                    close = value.find('"', k + 1)
                    close = n if close < 0 else close
                    raw = value[k + 1:close]
                    k = close + 1
                else:
                    m = k
                    while m < n and value[m] not in ";,":
                        m += 1
                    raw = value[k:m].strip()
                    k = m
            if name and name not in params:
                params[name] = raw
            j = k
        out.append((uri, params))
        i = j + 1
    return out


def _absolute(uri: str, base: str) -> str | None:
    try:
        url = urljoin(base, uri)
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def duplicates(link: str | None, base: str) -> list[Duplicate]:
    """The ``rel=duplicate`` URLs of a ``Link`` value, resolved against ``base``, best first.

    At most :data:`MAX_DUPLICATES`; ``base`` itself and repeats are left out.
    """
    found: list[Duplicate] = []
    for uri, params in _link_values(link or ""):
        if "duplicate" not in params.get("rel", "").lower().split():
            continue
        url = _absolute(uri, base)
        if url is None or url == base or any(d.url == url for d in found):
            continue
        pri = params.get("pri", "")
        priority = int(pri) if pri.isdigit() and pri.isascii() and len(pri) <= 6 else NO_PRIORITY
        found.append(Duplicate(url, max(1, priority)))
        if len(found) >= MAX_DUPLICATES:
            break
    return sorted(found, key=lambda d: d.priority)


def described_by(link: str | None, base: str) -> str | None:
    """The URL of a Metalink document a ``Link: <...>; rel=describedby;
    type="application/metalink4+xml"`` names (RFC 6249 section 4), or None."""
    for uri, params in _link_values(link or ""):
        if ("describedby" in params.get("rel", "").lower().split()
                and params.get("type", "").lower() == "application/metalink4+xml"):
            return _absolute(uri, base)
    return None


def _repr_digest(value: str) -> dict[str, str]:
    """RFC 9530: ``sha-256=:BASE64:, sha-512=:BASE64:`` (a structured-field dictionary)."""
    found: dict[str, str] = {}
    for member in value.split(","):
        name, sep, raw = member.partition("=")
        algo = algorithm_of(name)
        raw = raw.strip().split(";", 1)[0].strip()
        if not sep or algo is None or len(raw) < 2 or raw[0] != ":" or raw[-1] != ":":
            continue
        try:
            found.setdefault(algo, hex_of_base64(algo, raw[1:-1]))
        except ValueError:
            continue
    return found


def _legacy_digest(value: str) -> dict[str, str]:
    """RFC 3230: ``SHA-256=BASE64, MD5=BASE64`` (base64 may itself end in ``=``)."""
    found: dict[str, str] = {}
    for member in value.split(","):
        name, sep, raw = member.partition("=")
        algo = algorithm_of(name)
        if not sep or algo is None:
            continue
        try:
            found.setdefault(algo, hex_of_base64(algo, raw))
        except ValueError:
            continue
    return found


def origin_digest(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The strongest whole-file digest an answer carries, ``(hashlib name, hex)``, or None.

    ``Repr-Digest`` (RFC 9530) is preferred over ``Digest`` (RFC 3230); a
    malformed member is skipped, never guessed at.
    """
    modern = _repr_digest(headers.get("Repr-Digest") or "")
    if modern:
        return strongest(modern)
    return strongest(_legacy_digest(headers.get("Digest") or ""))

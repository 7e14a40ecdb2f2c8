"""What an HTTP answer's headers say, and whether a range answer keeps the contract.

Pure: status codes and header mappings in, values or errors out; no I/O, so
every rule here is tested without a server. docs/http.md lists the rules with
their RFC sections.

The range contract (RFC 9110 sections 14.1.2, 14.4, 13.1.5, 15.3.7)
------------------------------------------------------------------
A ``206`` answer to a request for bytes ``[start, end)`` is used if its
``Content-Range`` names a span ``[a, b)`` of the total size the probe saw that
encloses ``start`` (``a <= start < b``, and ``start - a`` at most
:data:`MAX_LEAD`): RFC 9110 section 15.3.7 lets a server send less than was
asked (a server that caps each answer), or more (ranges it coalesced), and
says the client MUST read ``Content-Range`` to see what it got. The caller
reads from ``start`` to ``min(b, end)`` and asks again for the rest.
A ``multipart/byteranges`` 206 is checked here for its coding and validators;
each of its parts names its own span (:mod:`swift.http.multipart`).
Its ``Content-Length`` (if any) must be ``b - a``: a server whose two
lengths disagree is lying about one of them, and neither is trusted
(``LENGTHS_DISAGREE``; the body is never read). Its content coding must be the
one the probe saw (ranges count in the encoded bytes), and its validators
(the ``ETag``, else the ``Last-Modified`` the server reports on that answer)
the probe's, or one the download proved to name the same bytes (``aliases``).

What is *unambiguous* evidence that the file changed (:class:`FileChanged`):
another total size in ``Content-Range`` (or in the ``Content-Length`` of a
``200`` answer). Validators that differ are only *suspicious*
(:class:`ValidatorMismatch`): a CDN's edges may each give the same bytes their
own ETag, so the caller compares bytes before it calls the file changed
(:mod:`swift.http.samefile`).
A ``200`` with the probe's validators is a server that ignored the range
this time (``RANGE_IGNORED``): retried, and never written.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Mapping

from ..errors import ErrorCode, FileChanged, OriginError

__all__ = ["Validator", "content_coding", "parse_content_range", "parse_retry_after",
           "strong_etag", "check_range_answer", "ValidatorMismatch", "MAX_LEAD"]

#: Most bytes a 206 may enclose *before* the first byte asked for (a server that
#: coalesced ranges, or rounds starts down to a block): they are read and
#: dropped. 1 MiB costs at most a few milliseconds on a fast link; a server
#: that always starts at byte 0 would cost a read of the whole file per piece,
#: so past this the answer is a mismatch (and, repeated, a plain stream).
MAX_LEAD = 1 << 20

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
_IDENTITY = {"", "identity"}


@dataclass(frozen=True)
class Validator:
    """What identifies one version of the file: a strong ETag, else Last-Modified."""

    etag: str | None = None
    last_modified: str | None = None

    def if_range(self) -> str | None:
        """The ``If-Range`` value for this version (RFC 9110 section 13.1.5)."""
        return self.etag or self.last_modified

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> "Validator":
        """The validators an answer reports (a weak ETag does not count)."""
        return cls(strong_etag(headers.get("ETag")), headers.get("Last-Modified"))

    def differs(self, other: "Validator", aliases: frozenset[str] = frozenset()) -> bool:
        """True when ``other`` names another version: the strong ETags differ (and
        ``other``'s is none of ``aliases``, validators proven to name the same bytes),
        or, without an ETag on our side, the Last-Modified dates differ (and are not
        an alias). A validator ``other`` does not report is no evidence either way."""
        if self.etag:
            return other.etag is not None and other.etag != self.etag and other.etag not in aliases
        if self.last_modified:
            return (other.last_modified is not None and other.last_modified != self.last_modified
                    and other.last_modified not in aliases)
        return False


class ValidatorMismatch(OriginError):
    """An answer carries other validators than the probe saw: check again before
    saying the file changed (see the module docstring)."""

    default_code = ErrorCode.RANGE_MISMATCH

    def __init__(self, message: str, seen: Validator):
        super().__init__(message, ErrorCode.RANGE_MISMATCH)
        self.seen = seen


def content_coding(value: str | None) -> str:
    """The normalised ``Content-Encoding`` of an answer: "" for identity."""
    coding = ",".join(part.strip().lower() for part in (value or "").split(",") if part.strip())
    return "" if coding in _IDENTITY else coding


def strong_etag(value: str | None) -> str | None:
    """The ETag if it is strong; None for a weak one (``W/"..."``) or none."""
    if not value or value.strip().startswith("W/"):
        return None
    return value.strip()


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/size`` → (a, b + 1, size or None for ``*``); None when absent or malformed."""
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


def parse_unsatisfied_range(value: str | None) -> int | None:
    """The size in a 416 answer's ``Content-Range: bytes */size``; None without one."""
    m = _UNSATISFIED.match(value or "")
    return int(m.group(1)) if m else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date;
    RFC 9110 section 10.2.3); None when absent or unreadable."""
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


def check_range_answer(status: int, headers: Mapping[str, str], start: int, end: int, *,
                       size: int, validator: Validator, encoding: str = "",
                       if_range_sent: bool = False,
                       aliases: frozenset[str] = frozenset()) -> tuple[int, int]:
    """Return ``(a, b)``, the span ``[a, b)`` a usable 206 encloses (``a <= start < b``;
    ``b`` may be below or above ``end``), if the answer is a 206 for bytes of the
    same file that includes ``start``; raise otherwise (see the module docstring
    for what each error means).

    ``aliases``: other strong ETags proven to name the same bytes.
    Status errors other than 200 are left to the caller (it knows the URL).
    """
    span = f"bytes {start}-{end - 1}"
    seen = Validator.of(headers)
    if status == 200:
        length = headers.get("Content-Length")
        coded = content_coding(headers.get("Content-Encoding")) != encoding
        if length is not None and length.isdigit() and int(length) != size and not coded:
            raise FileChanged(f"size {size} became {length}")
        if validator.differs(seen, aliases):
            raise ValidatorMismatch(f"the server answered 200 with other validators to a range "
                                    f"request for {span}", seen)
        why = " with If-Range" if if_range_sent else ""
        raise OriginError(f"the server ignored the range request{why} (200) for {span}",
                          ErrorCode.RANGE_IGNORED, status=200)
    if status != 206:
        raise ValueError(f"not a range answer: {status}")
    parsed = parse_content_range(headers.get("Content-Range"))
    if parsed is not None and parsed[2] is not None and parsed[2] != size:
        raise FileChanged(f"size {size} became {parsed[2]}")
    got = content_coding(headers.get("Content-Encoding"))
    if got != encoding:
        raise OriginError(f"the server sent Content-Encoding {got or 'identity'!r} for a range, "
                          f"{encoding or 'identity'!r} at first", ErrorCode.ENCODING_CHANGED,
                          status=206)
    if validator.differs(seen, aliases):
        raise ValidatorMismatch(f"the validators changed on the answer for {span}", seen)
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type == "multipart/byteranges":
        return start, end  # each part names its own span (swift.http.multipart)
    if parsed is None:
        raise OriginError(f"missing or malformed Content-Range for {span}",
                          ErrorCode.RANGE_MISMATCH, status=206)
    first, last, _ = parsed
    if not first <= start < last or start - first > MAX_LEAD:
        raise OriginError(f"asked for {span}, got Content-Range "
                          f"{headers.get('Content-Range')!r}", ErrorCode.RANGE_MISMATCH, status=206)
    length = headers.get("Content-Length")
    if length is not None and (not length.strip().isdigit() or int(length) != last - first):
        raise OriginError(f"Content-Length {length.strip()} does not match Content-Range "
                          f"bytes {first}-{last - 1}", ErrorCode.LENGTHS_DISAGREE, status=206)
    return first, last

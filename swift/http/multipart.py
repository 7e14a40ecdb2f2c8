"""Reading a ``multipart/byteranges`` body as it streams (RFC 9110 section 14.6).

A server may answer a range request with ``206`` and a ``multipart/byteranges``
body: parts separated by a boundary, each with its own ``Content-Range``
header. RFC 9110 asks servers not to do that for a single range, yet some do
(with one part, or with the range split into parts); section 14.6 says what
such a body is, and a client can read it. The reader here is pure: it takes
the body's blocks (any sizes) and yields, per part, a :class:`Part` with the
span the part's ``Content-Range`` names, then that part's bytes in blocks.
Each part's length comes from its ``Content-Range``; a part without one, a
boundary where the length says bytes are, or a body that ends inside a part
raises an ``OriginError`` (``RANGE_MISMATCH``, retried as any bad answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from ..errors import ErrorCode, OriginError
from .headers import parse_content_range

__all__ = ["Part", "boundary_of", "iter_parts"]

_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]{1,70})"|([^;\s]{1,70}))', re.IGNORECASE)
#: Longest a part's header block may be: a few short headers, never a body.
MAX_PART_HEADERS = 8 * 1024


@dataclass(frozen=True)
class Part:
    """A part begins: it holds bytes ``[first, end)`` of a file of ``total`` bytes (None: ``*``)."""

    first: int
    end: int
    total: int | None


def boundary_of(headers: Mapping[str, str]) -> bytes | None:
    """The boundary of a ``multipart/byteranges`` answer; None for any other body."""
    content_type = headers.get("Content-Type") or ""
    if content_type.split(";")[0].strip().lower() != "multipart/byteranges":
        return None
    m = _BOUNDARY.search(content_type)
    if not m:
        raise _bad("a multipart/byteranges answer without a boundary")
    return (m.group(1) or m.group(2)).encode("latin-1")


def iter_parts(blocks: Iterable[bytes], boundary: bytes) -> Iterator[Part | bytes]:
    """Yield a :class:`Part`, then its bytes (non-empty blocks), for each part in turn."""
    delimiter = b"--" + boundary
    buf = bytearray()
    source = iter(blocks)

    def more() -> bool:
        block = next(source, None)
        if block is None:
            return False
        buf.extend(block)
        return True

    # the preamble, up to the first delimiter
    while (at := buf.find(delimiter)) < 0:
        if len(buf) > MAX_PART_HEADERS or not more():
            raise _bad("a multipart/byteranges body without its boundary")
    del buf[:at + len(delimiter)]
    while True:
        while len(buf) < 2:
            if not more():
                raise _bad("a multipart/byteranges body that ends inside a delimiter")
        if buf[:2] == b"--":
            return  # the close delimiter: the epilogue is ignored
        while (at := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_PART_HEADERS or not more():
                raise _bad("a multipart/byteranges part without its headers")
        part = _part(bytes(buf[:at]))
        del buf[:at + 4]
        yield part
        owed = part.end - part.first
        while owed:
            if not buf and not more():
                raise _bad("a multipart/byteranges body that ends inside a part")
            take = bytes(buf[:owed])
            del buf[:len(take)]
            owed -= len(take)
            yield take
        while len(buf) < 2 + len(delimiter):
            if not more():
                raise _bad("a multipart/byteranges part longer than its Content-Range")
        if bytes(buf[:2 + len(delimiter)]) != b"\r\n" + delimiter:
            raise _bad("a multipart/byteranges part longer than its Content-Range")
        del buf[:2 + len(delimiter)]


def _part(head: bytes) -> Part:
    content_range = None
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-range":
            content_range = value.strip()
    parsed = parse_content_range(content_range)
    if parsed is None:
        raise _bad(f"a multipart/byteranges part with Content-Range {content_range!r}")
    return Part(*parsed)


def _bad(what: str) -> OriginError:
    return OriginError(what, ErrorCode.RANGE_MISMATCH, status=206)

"""Piece hashes: a file cut into pieces of one length, each with a trusted digest.

Pure: bytes in, a verdict out. A :class:`PieceHashes` is the trusted identity
of a file's content piece by piece (a Metalink ``<pieces>`` element, RFC 5854
section 4.2.9); any source of bytes (a mirror, a helper, a LAN copy) is
checked against it, so a bad piece costs that piece, not the file.

Rules
-----
* Piece ``i`` is bytes ``[i * length, min((i + 1) * length, size))``; the last
  piece may be shorter. The number of digests is exactly ``ceil(size / length)``
  (one for an empty file is refused: it has no pieces, so no digests).
* A piece is checked only whole: :meth:`PieceHashes.check` is given all of its
  bytes. Which pieces a written range completes is :meth:`pieces_within`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .checksums import ALGORITHMS

__all__ = ["PieceHashes"]

#: Most pieces one file may have. A 4 MiB Metalink document holds at most
#: about 50,000 SHA-256 digests anyway; a bound here keeps a caller that
#: builds PieceHashes from elsewhere (a peer's message) as small.
MAX_TRUSTED_PIECES = 1 << 20


@dataclass(frozen=True)
class PieceHashes:
    """``algorithm`` (hashlib name), piece ``length`` in bytes, file ``size`` in bytes,
    and one lower-case hex digest per piece."""

    algorithm: str
    length: int
    size: int
    digests: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown piece hash {self.algorithm!r} (one of {', '.join(ALGORITHMS)})")
        if self.length < 1:
            raise ValueError(f"piece length must be at least 1 byte, not {self.length}")
        if self.size < 1:
            raise ValueError("piece hashes need a file of at least 1 byte")
        count = -(-self.size // self.length)
        if count > MAX_TRUSTED_PIECES:
            raise ValueError(f"{count} pieces are more than {MAX_TRUSTED_PIECES}")
        if len(self.digests) != count:
            raise ValueError(f"{self.size} bytes in pieces of {self.length} are {count} pieces, "
                             f"but {len(self.digests)} piece hashes are given")
        width = hashlib.new(self.algorithm).digest_size * 2
        for i, digest in enumerate(self.digests):
            if len(digest) != width or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"piece hash {i} is not {width} lower-case hex digits")

    @property
    def count(self) -> int:
        return len(self.digests)

    def span(self, index: int) -> tuple[int, int]:
        """Piece ``index`` as ``[start, end)``; IndexError outside the file."""
        if not 0 <= index < self.count:
            raise IndexError(f"no piece {index} (0-{self.count - 1})")
        start = index * self.length
        return start, min(start + self.length, self.size)

    def touching(self, start: int, end: int) -> range:
        """The pieces that share at least one byte with ``[start, end)``."""
        if end <= start:
            return range(0)
        return range(max(0, start // self.length), min(self.count, -(-end // self.length)))

    def pieces_within(self, start: int, end: int) -> range:
        """The pieces wholly inside ``[start, end)``."""
        first = -(-start // self.length)
        last = self.count if end >= self.size else end // self.length
        return range(first, max(first, last))

    def check(self, index: int, data: bytes | memoryview) -> bool:
        """True if ``data`` is all of piece ``index`` and hashes to its digest."""
        start, end = self.span(index)
        if len(data) != end - start:
            return False
        return hashlib.new(self.algorithm, data).hexdigest() == self.digests[index]

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

Computing them while the bytes arrive (LAN sharing)
---------------------------------------------------
A member that fetches bytes from the origin hashes them as they are written
(:class:`PieceHasher`), so a later LAN copy of the file comes with a SHA-256
for every piece and the requester checks each piece before it writes it
(docs/sharing.md). The file is never read a second time to hash it.

The pieces are the file cut at multiples of ``piece_size`` (the last one may
be shorter). ``piece_size_for(size)`` picks it from the size alone, so two
members agree without asking: a power of two, at least ``MIN_PIECE``, and
large enough that a file has at most ``MAX_PIECES`` pieces (the hashes of
every piece must fit one control frame, ``protocol.MAX_CONTROL``).

How blocks that arrive out of order are hashed
----------------------------------------------
SHA-256 is sequential, and the engine writes a block wherever its worker's
range lies: inside one piece the blocks of two workers (after a split, or a
race) may arrive in any order. ``PieceHasher`` keeps, per piece, the hash of
its *contiguous prefix* and feeds it every block that extends the prefix; a
block that lands beyond the prefix waits in a pending buffer and is fed when
the gap before it closes. The pending bytes are bounded (``max_pending`` in
all): a piece whose pending bytes would pass the bound is *given up* (its
prefix and pending blocks dropped, the piece marked lost), so memory never
grows with the file. A lost piece has no hash and is never offered to others
(its bytes are still written and checked as before; only sharing loses it).
The engine assigns whole ranges from their start, so a piece's blocks come
mostly in order and a split leaves one gap per split: a few MiB of pending
bytes cover the common case.

Bytes written and then dropped (a peer caught lying: ``discard``) make every
piece they touch lost as well: its hash would cover bytes that are gone.

Rules the tests hold it to (tests/unit/test_piecehash.py): the digest of a
completed piece equals ``hashlib.sha256`` of its bytes, whatever the order
and split of the blocks; a byte given twice at one offset (a race) is
hashed once; no more than ``max_pending`` bytes are ever held.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .checksums import ALGORITHMS

__all__ = ["MAX_PIECES", "MIN_PIECE", "PieceHasher", "PieceHashes", "piece_digest", "piece_range",
           "piece_size_for", "pieces_within"]

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


# -- computing piece hashes while bytes arrive (LAN sharing) ------------------------------
#: The smallest hashed piece: 1 MiB. Smaller pieces cost a hash and a list entry
#: each and gain nothing: a bad piece is fetched again elsewhere, and 1 MiB on a
#: LAN takes about 10 ms.
MIN_PIECE = 1 << 20
#: The most pieces a file is cut into: their hashes (64 hex characters each)
#: take 256 KiB, half of a control frame (``protocol.MAX_CONTROL``), the rest
#: left for the ranges held. A 4 GiB file has 1 MiB pieces; beyond, they double.
MAX_PIECES = 4096
#: Bytes of out-of-order blocks a hasher may hold, all pieces together: 8 MiB
#: covers the gaps of a few splits inside pieces at once.
MAX_PENDING = 8 << 20


def piece_size_for(size: int) -> int:
    """The hashed piece size for a file of ``size`` bytes (see the module docstring)."""
    if size < 0:
        raise ValueError(f"a file size cannot be negative: {size}")
    piece = MIN_PIECE
    while -(-size // piece) > MAX_PIECES:
        piece *= 2
    return piece


def piece_range(index: int, size: int, piece_size: int) -> tuple[int, int]:
    """Bytes ``[start, end)`` of piece ``index`` of a ``size``-byte file."""
    start = index * piece_size
    if not 0 <= start < size:
        raise ValueError(f"piece {index} is outside a file of {size} bytes")
    return start, min(size, start + piece_size)


def pieces_within(ranges, size: int, piece_size: int) -> list[int]:
    """The indexes of the pieces lying wholly inside ``ranges`` (``(start, end)`` pairs)."""
    out: list[int] = []
    for start, end in ranges:
        first = -(-start // piece_size)
        index = first
        while index * piece_size < end:
            p_start, p_end = index * piece_size, min(size, (index + 1) * piece_size)
            if p_end > end or p_start >= size:
                break
            out.append(index)
            index += 1
    return out


def piece_digest(data: bytes | bytearray | memoryview) -> str:
    """The SHA-256 of one piece's bytes, lowercase hex (as the wire carries it)."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Piece:
    """One piece in progress: the hash of its contiguous prefix and what waits beyond it."""

    start: int
    end: int
    hashed: int = 0  # bytes of the prefix already fed to ``sha``
    sha: object = field(default_factory=hashlib.sha256)
    pending: dict[int, bytes] = field(default_factory=dict)  # absolute offset -> block


class PieceHasher:
    """Hashes the pieces of one ``size``-byte file from blocks at offsets.

    ``feed(offset, block)`` returns the pieces it completed as ``(index,
    hex digest)`` pairs; ``digests`` holds every completed one; ``lost`` the
    pieces given up (see the module docstring). Not thread-safe: the caller
    feeds under its own lock (the engine's board does).
    """

    def __init__(self, size: int, piece_size: int | None = None, *,
                 max_pending: int = MAX_PENDING) -> None:
        self.size = size
        self.piece_size = piece_size or piece_size_for(size)
        self.count = -(-size // self.piece_size)
        self.max_pending = max_pending
        self.digests: dict[int, str] = {}
        self.lost: set[int] = set()
        self._open: dict[int, _Piece] = {}
        self._pending_bytes = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of out-of-order blocks held now (never above ``max_pending``)."""
        return self._pending_bytes

    def feed(self, offset: int, block: bytes | bytearray | memoryview) -> list[tuple[int, str]]:
        """Take the bytes ``block`` written at ``offset``; the pieces completed by them."""
        view = memoryview(block).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise ValueError(f"bytes {offset}..{offset + len(view)} lie outside a file of "
                             f"{self.size} bytes")
        done: list[tuple[int, str]] = []
        pos = 0
        while pos < len(view):
            at = offset + pos
            index = at // self.piece_size
            p_end = min(self.size, (index + 1) * self.piece_size)
            take = min(len(view) - pos, p_end - at)
            digest = self._feed_piece(index, at, view[pos:pos + take])
            if digest is not None:
                done.append((index, digest))
            pos += take
        return done

    def settled(self, index: int) -> bool:
        """True once piece ``index`` has its digest or was given up: nothing more to feed it."""
        return index in self.digests or index in self.lost

    def known(self, index: int, digest: str) -> bool:
        """Piece ``index``'s digest computed elsewhere, from all of its bytes at once (a
        piece resumed from an earlier run, read back whole). Recorded unless the piece is
        settled or bytes of it were fed here (those then decide); True if recorded."""
        if not 0 <= index < self.count:
            raise ValueError(f"no piece {index} in a file of {self.count} pieces")
        if self.settled(index) or index in self._open:
            return False
        self.digests[index] = digest
        return True

    def discard(self, start: int, end: int) -> None:
        """Bytes ``[start, end)`` written earlier are dropped: every piece they touch is lost."""
        if start >= end:
            return
        for index in range(start // self.piece_size, -(-end // self.piece_size)):
            self._lose(index)
            self.digests.pop(index, None)

    # -- one piece ------------------------------------------------------------------------------
    def _feed_piece(self, index: int, at: int, data: memoryview) -> str | None:
        if index in self.digests or index in self.lost:
            return None  # already complete (a raced duplicate), or given up
        piece = self._open.get(index)
        if piece is None:
            start = index * self.piece_size
            piece = self._open[index] = _Piece(start, min(self.size, start + self.piece_size))
        prefix_end = piece.start + piece.hashed
        if at + len(data) <= prefix_end:
            return None  # bytes hashed already (a race delivered them twice)
        if at > prefix_end:
            if at in piece.pending and len(piece.pending[at]) >= len(data):
                return None
            if self._pending_bytes + len(data) > self.max_pending:
                self._lose(index)
                return None
            old = piece.pending.get(at)
            self._pending_bytes += len(data) - (len(old) if old is not None else 0)
            piece.pending[at] = bytes(data)
            return None
        self._extend(piece, data[prefix_end - at:])
        self._drain(piece)
        if piece.start + piece.hashed < piece.end:
            return None
        digest = piece.sha.hexdigest()  # type: ignore[attr-defined]
        del self._open[index]
        self.digests[index] = digest
        return digest

    def _extend(self, piece: _Piece, data: memoryview | bytes) -> None:
        piece.sha.update(data)  # type: ignore[attr-defined]
        piece.hashed += len(data)

    def _drain(self, piece: _Piece) -> None:
        """Feed the pending blocks the grown prefix now reaches, in offset order."""
        while piece.pending:
            prefix_end = piece.start + piece.hashed
            reachable = [at for at in piece.pending if at <= prefix_end]
            if not reachable:
                return
            for at in sorted(reachable):
                block = piece.pending.pop(at)
                self._pending_bytes -= len(block)
                prefix_end = piece.start + piece.hashed
                if at + len(block) > prefix_end >= at:
                    self._extend(piece, memoryview(block)[prefix_end - at:])

    def _lose(self, index: int) -> None:
        piece = self._open.pop(index, None)
        if piece is not None:
            self._pending_bytes -= sum(len(b) for b in piece.pending.values())
        self.lost.add(index)

"""Per-piece SHA-256 of a file, computed while its bytes arrive: pure, no I/O.

A member that fetches bytes from the origin hashes them as they are written,
so a later LAN copy of the file comes with a SHA-256 for every piece and the
requester checks each piece before it writes it (docs/sharing.md). The file
is never read a second time to hash it.

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

__all__ = ["MAX_PIECES", "MIN_PIECE", "PieceHasher", "piece_digest", "piece_range",
           "piece_size_for", "pieces_within"]

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

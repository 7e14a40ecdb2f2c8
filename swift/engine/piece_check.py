"""Which pieces of a download are checked against their hashes, and who served each one.

Pure bookkeeping; the :class:`~swift.engine.board.Board` calls it under its
lock and does the reading and hashing outside it.

How a piece is checked: **read back from the part file** once its last byte
is written, before the download may end. Not hashed as it arrives, because a
piece's bytes do not arrive in order through one worker: the scheduler
splits assignments, races a silent one, and a resumed download holds pieces
written by an earlier run; reading back what is on disk checks exactly the
bytes the file will hold, whoever wrote them. The cost is one read of bytes
that are still in the page cache.

The resume record may claim a piece before it is checked (it says what is
*written*); a resumed download therefore checks every whole piece it holds
before it fetches anything (:meth:`PieceCheck.resumed`), so no piece is
trusted without its hash.
"""

from __future__ import annotations

from ..piecehash import PieceHashes
from ..planning import RangeSet

__all__ = ["PieceCheck"]


class PieceCheck:
    """The state of every piece: unchecked, being checked, or good; and its servers."""

    def __init__(self, hashes: PieceHashes):
        self.hashes = hashes
        self._good: set[int] = set()
        self._checking: set[int] = set()
        self._served: dict[int, set[str]] = {}
        self._suspects: dict[int, set[str]] = {}  # who served a piece that failed
        self.bad = 0  # pieces that failed their hash so far

    @property
    def pending(self) -> bool:
        """True while a complete piece is being checked (the download may not end yet)."""
        return bool(self._checking)

    def served(self, offset: int, n: int, via: str | tuple[str, ...]) -> None:
        """``via`` (a mirror, a helper, or a helper and the mirror it used) wrote
        bytes ``[offset, offset + n)``."""
        labels = (via,) if isinstance(via, str) else via
        for index in self.hashes.touching(offset, offset + n):
            self._served.setdefault(index, set()).update(labels)

    def servers(self, index: int) -> set[str]:
        return set(self._served.get(index, ()))

    def suspects(self, start: int, end: int) -> set[str]:
        """Who served pieces in ``[start, end)`` that failed: to avoid when fetching them again."""
        out: set[str] = set()
        for index in self.hashes.touching(start, end):
            out |= self._suspects.get(index, set())
        return out

    def completed(self, done: RangeSet, offset: int, n: int) -> list[int]:
        """Pieces touching ``[offset, offset + n)`` that ``done`` now covers and that are
        neither good nor being checked: they are now being checked (the caller checks them)."""
        ready = []
        for index in self.hashes.touching(offset, offset + n):
            if index in self._good or index in self._checking:
                continue
            if done.covers(*self.hashes.span(index)):
                self._checking.add(index)
                ready.append(index)
        return ready

    def resumed(self, done: RangeSet) -> list[int]:
        """Every whole piece ``done`` holds at the start: all are now being checked."""
        ready = []
        for start, end in done:
            for index in self.hashes.pieces_within(start, end):
                if index not in self._good and index not in self._checking:
                    self._checking.add(index)
                    ready.append(index)
        return ready

    def verdict(self, index: int, good: bool) -> set[str]:
        """Record a check's result; for a bad piece, returns who served it (now suspects)."""
        self._checking.discard(index)
        if good:
            self._good.add(index)
            return set()
        self.bad += 1
        servers = self._served.pop(index, set())
        self._suspects.setdefault(index, set()).update(servers)
        return servers

    def forget(self, start: int, end: int) -> None:
        """Bytes ``[start, end)`` were dropped (a lying helper's): every piece they touch
        is unchecked again, and is checked anew when its bytes are written again."""
        for index in self.hashes.touching(start, end):
            self._good.discard(index)
            self._served.pop(index, None)

    def all_good(self) -> bool:
        return len(self._good) == self.hashes.count

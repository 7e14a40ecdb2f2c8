"""The record keeper: flush the written data, then record it, every few seconds.

Order is the rule (see :mod:`swift.storage`): ``NAME.part`` is flushed
*before* the record that claims its ranges is saved, so a crash at any
moment leaves a record that claims nothing that is not on disk. The set of
done ranges is copied under the board's lock, before the flush, so it never
names bytes written after the flush began.

Between saves it only *starts* the disk's writing of what was written
(:meth:`swift.storage.PartFile.start_writeback`), without waiting and
without recording anything: a fast download then meets a short flush at its
end instead of one for the whole file.
"""

from __future__ import annotations

import time
from typing import Callable

from .. import storage
from .board import Board
from .options import WRITEBACK_INTERVAL
from .report import DownloadError


class RecordKeeper:
    """Saves ``board``'s done ranges through ``control`` every ``interval`` seconds,
    and starts the disk's writeback of ``part`` every ``writeback`` seconds between
    (None: never)."""

    def __init__(self, board: Board, part: storage.PartFile, control: storage.ControlFile,
                 interval: float, clock: Callable[[], float] = time.monotonic,
                 writeback: float | None = WRITEBACK_INTERVAL):
        self._board = board
        self._part = part
        self._control = control
        self._interval = interval
        self._clock = clock
        self._writeback = writeback
        now = clock()
        self._next = now + interval
        self._next_writeback = None if writeback is None else now + writeback

    def tick(self) -> None:
        """Save if the interval has passed since the last save; else start the
        writeback if its interval has passed."""
        now = self._clock()
        if now >= self._next:
            self.save()
        elif self._next_writeback is not None and now >= self._next_writeback:
            self._part.start_writeback()  # best effort: errors show at the next save's flush
            self._next_writeback = now + self._writeback  # type: ignore[operator]

    def save(self) -> None:
        """Flush, then save now; a failure stops the download with the disk's words."""
        snapshot = self._board.done_copy()
        try:
            self._part.sync()  # the record must never claim bytes that are not on disk
            self._control.save(snapshot)
        except storage.StorageError as exc:
            self._board.fail_all(DownloadError.of(exc))
        self._next = self._clock() + self._interval

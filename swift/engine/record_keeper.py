"""The record keeper: flush the written data, then record it, every few seconds.

Order is the rule (see :mod:`swift.storage`): ``NAME.part`` is flushed
*before* the record that claims its ranges is saved, so a crash at any
moment leaves a record that claims nothing that is not on disk. The set of
done ranges is copied under the board's lock, before the flush, so it never
names bytes written after the flush began.
"""

from __future__ import annotations

import time
from typing import Callable

from .. import storage
from .board import Board
from .report import DownloadError


class RecordKeeper:
    """Saves ``board``'s done ranges through ``control`` every ``interval`` seconds."""

    def __init__(self, board: Board, part: storage.PartFile, control: storage.ControlFile,
                 interval: float, clock: Callable[[], float] = time.monotonic):
        self._board = board
        self._part = part
        self._control = control
        self._interval = interval
        self._clock = clock
        self._next = clock() + interval

    def tick(self) -> None:
        """Save if the interval has passed since the last save."""
        if self._clock() >= self._next:
            self.save()

    def save(self) -> None:
        """Flush, then save now; a failure stops the download with the disk's words."""
        snapshot = self._board.done_copy()
        try:
            self._part.sync()  # the record must never claim bytes that are not on disk
            self._control.save(snapshot)
        except storage.StorageError as exc:
            self._board.fail_all(DownloadError(str(exc)))
        except OSError as exc:
            self._board.fail_all(DownloadError(
                f"cannot write the resume record {self._control.path}: {exc}"))
        self._next = self._clock() + self._interval

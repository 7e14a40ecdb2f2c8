"""``--limit-rate``: a token bucket, shared by every thread of one download or of
one node's fetch jobs (the job server's bytes for others).

Pure at its core (:meth:`RateLimit.charge` takes the time as an argument);
:meth:`RateLimit.take` is the waiting shell the workers call per block.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimit:
    """A token bucket shared by every thread of one download, or of one node's fetch jobs.

    ``charge(nbytes, now)`` is the pure part (time is an argument): it takes
    the bytes out of the bucket, which may go into debt, and returns the
    seconds the caller must wait before going on, so the long-run rate is
    ``rate`` bytes/s and at most ``burst`` bytes go out at once. ``take``
    waits that long on an event that :meth:`close` sets, so a cancelled
    download is never held up by its limit.
    """

    #: Burst, in seconds of the rate: a quarter second smooths scheduling
    #: jitter without letting a visible spike through.
    BURST_SECONDS = 0.25

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("a rate limit must be more than 0 bytes/s")
        self.rate = float(rate)
        self.burst = max(1.0, self.rate * self.BURST_SECONDS)
        self._clock = clock
        self._tokens = self.burst
        self._last: float | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def charge(self, nbytes: int, now: float) -> float:
        """Take ``nbytes``; the seconds to wait before they may go (0.0 if none)."""
        with self._lock:
            if self._last is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= nbytes
            return -self._tokens / self.rate if self._tokens < 0 else 0.0

    def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may go (at once after :meth:`close`)."""
        delay = self.charge(nbytes, self._clock())
        if delay > 0:
            self._closed.wait(delay)

    def close(self) -> None:
        """Let every waiter go on at once, now and later (the download is stopping)."""
        self._closed.set()

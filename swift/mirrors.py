"""Mirrors of one file: which may serve, which to use next, which are left out and why.

Pure: no sockets, no threads, no clock of its own (``now`` is an argument).
One :class:`MirrorBook` per download on each machine; the engine guards it
with one lock (:class:`swift.engine.sources.mirror.MirrorSources`), as the
board guards the scheduler.

A mirror is a URL, not a machine (aria2's view): every machine's workers
choose among the usable mirrors, per assignment.

Rules
-----
* **Agree first.** A mirror serves no byte before it agreed on the file's
  length (the Metalink ``<size>``, else the first URL's), and, when no hash
  (whole-file or pieces) can prove the content, on the validator: the same
  strong ETag, else the same Last-Modified, as the first URL
  (:meth:`MirrorBook.admit`). Disagreeing is a reason, said once.
* **Choose by measured rate, within a connection limit.** At most
  ``per_mirror`` connections per mirror on this machine (aria2's
  ``--max-connection-per-server``). A mirror not measured yet is tried first
  (best priority first), so every mirror gets measured; then the fastest
  per connection (:meth:`MirrorBook.acquire`).
* **Leave out, with a reason.** A 401/403/404/410 or a 5xx after its
  retries, :data:`MAX_STRIKES` other failures in a row, :data:`MAX_BAD_PIECES`
  pieces that failed their hash, or a rate :data:`SLOW_FACTOR` times below the
  best once both are measured (:meth:`MirrorBook.judge`). The last usable
  mirror is never left out for slowness, only for faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["Mirror", "MirrorBook", "PER_MIRROR", "SLOW_FACTOR", "MAX_BAD_PIECES"]

#: Connections per mirror per machine (aria2's ``--max-connection-per-server``
#: allows 1-16; most public mirrors ask for few, and MirrorBrain's own guides
#: suggest 4 as the polite upper bound). Beyond the link's fill it adds nothing.
PER_MIRROR = 4
#: A mirror this many times slower per connection than the best one, both
#: measured over :data:`JUDGE_BYTES`, is left out: its assignments would be
#: the last to end, and the scheduler's splits only partly make up for them.
SLOW_FACTOR = 8.0
#: Bytes a mirror must have delivered (or the best one, for a mirror that
#: delivered nothing while it was asked) before its rate is judged: one
#: default piece, so a TCP slow start is not taken for slowness.
JUDGE_BYTES = 1 << 20
#: Seconds a mirror may hold a connection without delivering a byte while
#: another delivers JUDGE_BYTES before it counts as stalled.
STALL_AFTER = 10.0
#: Failures in a row (resets, timeouts after the fetch's own retries) before
#: a mirror is left out; a success clears them.
MAX_STRIKES = 2
#: Pieces that failed their hash before a mirror is left out: one may be a
#: bit flip on the way, two are a mirror that serves other bytes.
MAX_BAD_PIECES = 2


@dataclass
class Mirror:
    """One URL of the file and what this machine learnt about it."""

    url: str
    priority: int = 999999
    order: int = 0
    admitted: bool = False
    left_out: str | None = None
    active: int = 0
    bytes: int = 0
    seconds: float = 0.0
    strikes: int = 0
    bad_pieces: int = 0
    waiting_since: dict[int, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.admitted and self.left_out is None

    @property
    def rate(self) -> float | None:
        """Bytes per second per connection, once measured over :data:`JUDGE_BYTES`."""
        if self.bytes < JUDGE_BYTES or self.seconds <= 0:
            return None
        return self.bytes / self.seconds


class MirrorBook:
    """The mirrors of one download on one machine (not thread-safe: its owner locks)."""

    def __init__(self, urls: Iterable[tuple[str, int]] | Iterable[str], *, per_mirror: int = PER_MIRROR,
                 slow_factor: float = SLOW_FACTOR, stall_after: float = STALL_AFTER):
        if per_mirror < 1:
            raise ValueError("per_mirror must be at least 1")
        self._mirrors: dict[str, Mirror] = {}
        self.per_mirror = per_mirror
        self.slow_factor = slow_factor
        self.stall_after = stall_after
        self._tickets = 0
        for i, item in enumerate(urls):
            url, priority = (item, 999999) if isinstance(item, str) else item
            self._mirrors.setdefault(url, Mirror(url, priority, i))

    # -- reading ---------------------------------------------------------------------------
    def urls(self) -> list[str]:
        """Every mirror's URL in the order given."""
        return [m.url for m in sorted(self._mirrors.values(), key=lambda m: m.order)]

    def usable(self) -> list[str]:
        """The usable mirrors, fastest measured first, then by priority and order."""
        return [m.url for m in self._ranked(self._mirrors.values()) if m.usable]

    def left_out(self) -> dict[str, str]:
        """``{url: why}`` for each mirror left out (for the summary and ``--report``)."""
        return {m.url: m.left_out for m in self._mirrors.values() if m.left_out is not None}

    def bytes_by_mirror(self) -> dict[str, int]:
        return {m.url: m.bytes for m in self._mirrors.values() if m.bytes}

    def summary(self) -> list[dict]:
        """One entry per mirror for ``--report``: url, state, bytes, rate, reason."""
        return [{"url": m.url, "used": m.usable, "bytes": m.bytes,
                 "rate": round(m.rate) if m.rate else None, "left_out": m.left_out,
                 "bad_pieces": m.bad_pieces}
                for m in sorted(self._mirrors.values(), key=lambda m: m.order)]

    # -- agreement ---------------------------------------------------------------------------
    def admit(self, url: str, *, size: int | None, expected_size: int | None,
              same_validator: bool | None, hashed: bool) -> str | None:
        """Admit ``url`` if it agrees; else leave it out. Returns the reason, or None.

        ``same_validator`` is None when either side has no validator to compare.
        ``hashed``: a whole-file or piece hash proves the content, so the
        validator is not needed.
        """
        why = None
        if size is None:
            why = "it does not say the file's length"
        elif expected_size is not None and size != expected_size:
            why = f"it says the file has {size} bytes, not {expected_size}"
        elif not hashed and same_validator is not True:
            why = ("its validator (ETag, Last-Modified) differs from the first URL's, and no hash "
                   "proves it is the same file" if same_validator is False else
                   "it gives no validator to compare, and no hash proves it is the same file")
        mirror = self._mirrors[url]
        if why is None:
            mirror.admitted = True
        elif mirror.left_out is None:
            mirror.left_out = why
        return why

    def leave_out(self, url: str, why: str) -> bool:
        """Leave ``url`` out; True the first time (announce it then)."""
        mirror = self._mirrors[url]
        if mirror.left_out is not None:
            return False
        mirror.left_out = why
        return True

    # -- use --------------------------------------------------------------------------------
    @staticmethod
    def _ranked(mirrors: Iterable[Mirror]) -> list[Mirror]:
        # unmeasured first (they must be measured), best priority; then fastest
        return sorted(mirrors, key=lambda m: (m.rate is not None, -(m.rate or 0.0), m.priority, m.order))

    def acquire(self, now: float, avoid: Iterable[str] = ()) -> tuple[str, int] | None:
        """A usable mirror with a free connection, and a ticket for :meth:`release`; None if none.

        Mirrors in ``avoid`` (those that served a piece that failed its hash)
        are taken only when no other one is free.
        """
        avoid = set(avoid)
        free = [m for m in self._mirrors.values() if m.usable and m.active < self.per_mirror]
        if not free:
            return None
        preferred = [m for m in free if m.url not in avoid] or free
        mirror = self._ranked(preferred)[0]
        mirror.active += 1
        self._tickets += 1
        mirror.waiting_since[self._tickets] = now
        return mirror.url, self._tickets

    def progress(self, url: str, ticket: int, nbytes: int, now: float) -> None:
        """``nbytes`` arrived on a ticket's connection: it is not stalled."""
        mirror = self._mirrors[url]
        if ticket in mirror.waiting_since:
            mirror.waiting_since[ticket] = now

    def release(self, url: str, ticket: int, *, nbytes: int, seconds: float, ok: bool) -> None:
        """A connection's assignment ended: ``nbytes`` in ``seconds``; ``ok`` clears the strikes."""
        mirror = self._mirrors[url]
        mirror.active = max(0, mirror.active - 1)
        mirror.waiting_since.pop(ticket, None)
        mirror.bytes += nbytes
        mirror.seconds += max(0.0, seconds)
        if ok:
            mirror.strikes = 0

    def failed(self, url: str, why: str, *, final: bool) -> str | None:
        """A fault of the mirror's; ``final`` (an access refusal, a 5xx after retries) leaves it
        out at once, others after :data:`MAX_STRIKES` in a row. Returns the reason if it is now left out."""
        mirror = self._mirrors[url]
        mirror.strikes += 1
        if mirror.left_out is None and (final or mirror.strikes >= MAX_STRIKES):
            mirror.left_out = why if final else f"{why} ({mirror.strikes} failures in a row)"
            return mirror.left_out
        return None

    def bad_piece(self, url: str, index: int) -> str | None:
        """``url`` served (part of) piece ``index``, which failed its hash. Returns the reason
        if the mirror is now left out (after :data:`MAX_BAD_PIECES`)."""
        mirror = self._mirrors[url]
        mirror.bad_pieces += 1
        if mirror.left_out is None and mirror.bad_pieces >= MAX_BAD_PIECES:
            mirror.left_out = f"{mirror.bad_pieces} pieces failed their hash (the last: piece {index})"
            return mirror.left_out
        return None

    def judge(self, now: float) -> list[tuple[str, str]]:
        """Leave out mirrors much slower than the best, or stalled; ``[(url, why)]`` newly left out.

        Never the last usable mirror, and never before the best one is measured.
        """
        out: list[tuple[str, str]] = []
        usable = [m for m in self._mirrors.values() if m.usable]
        rates = [m.rate for m in usable if m.rate is not None]
        if not rates:
            return out
        best = max(rates)
        for mirror in usable:
            if sum(1 for m in usable if m.left_out is None) <= 1:
                break
            if mirror.rate is not None and mirror.rate * self.slow_factor < best:
                mirror.left_out = (f"{mirror.rate / 1e6:.2f} MB/s per connection, more than "
                                   f"{self.slow_factor:g} times slower than the best "
                                   f"({best / 1e6:.2f} MB/s)")
            elif mirror.waiting_since and \
                    now - min(mirror.waiting_since.values()) >= self.stall_after:
                mirror.left_out = (f"stalled: no data for {self.stall_after:g} s while "
                                   f"others delivered")
            else:
                continue
            out.append((mirror.url, mirror.left_out))
        return out

"""Telling "the file changed" from "another edge of the CDN named it differently".

A CDN's edges (or a load balancer's backends) may each compute their own
strong ETag for the same bytes, so an answer whose ETag is not the probe's,
while its length (and ``Last-Modified``, when given) agree, is no proof that
the file changed. A :class:`SameFile` keeps what settles it:

* a **sample**: :data:`SAMPLE_SIZE` bytes at a known offset, copied from an
  answer whose validators were the probe's (or an alias), that is, bytes
  already written to the file;
* the **aliases**: other strong ETags (or, for a file without one, other
  ``Last-Modified`` dates) whose answers gave exactly the sample's bytes at the
  sample's offset.

Rules (docs/http.md, "One file, several ETags"):

* An answer with an ETag that is neither the probe's nor an alias is never
  written. The fetch asks for the sample's range again (without ``If-Range``);
  every answer that brings the sample's bytes makes its ETag an alias (unless
  its ``Last-Modified`` differs from the probe's too: then nothing is
  settled), and one that brings *other* bytes at that offset, for the same
  total size, proves the file changed (:class:`~swift.errors.FileChanged`).
* Without a sample yet (nothing written) nothing can be proved either way: the
  mismatch stays a transient fault, retried within the tries.
* Once an alias is known the server's ETags are per edge, and an ``If-Range``
  with one edge's ETag makes another edge send the whole file: ranges go
  without ``If-Range`` (each answer's validators are still checked).

Thread-safe: every local worker of a download shares one (on its
:class:`~swift.http.remote.RemoteFile`); a helper keeps one per file it
fetches for others.
"""

from __future__ import annotations

import threading

from .headers import Validator

__all__ = ["SameFile", "SAMPLE_SIZE"]

#: Bytes compared to prove two ETags name the same bytes. A sample answer is one
#: small request (8 KiB is one or two TCP segments' worth of round trips); a
#: changed file of the same length and date that keeps these 8 KiB at this
#: offset identical is not told apart, which is why the sample is taken from
#: the first bytes actually written, not from a header region such as byte 0.
SAMPLE_SIZE = 8 * 1024


class SameFile:
    """What the download knows about which answers are of its file."""

    def __init__(self, validator: Validator):
        self.validator = validator
        self._lock = threading.Lock()
        self._aliases: frozenset[str] = frozenset()
        self._sample: tuple[int, bytes] | None = None
        self._pending = bytearray()
        self._pending_at = -1

    @property
    def aliases(self) -> frozenset[str]:
        """Validators other than the probe's proven to name the same bytes (strong
        ETags; Last-Modified dates when the probe saw no ETag)."""
        with self._lock:
            return self._aliases

    @property
    def per_edge(self) -> bool:
        """True once the server gave the same bytes two ETags (If-Range is useless)."""
        with self._lock:
            return bool(self._aliases)

    def sample(self) -> tuple[int, bytes] | None:
        """``(offset, bytes)`` of a written sample, or None before one is complete."""
        with self._lock:
            return self._sample

    def wrote(self, offset: int, block: bytes | memoryview) -> None:
        """``block`` (from an accepted answer) is the file's bytes at ``offset``; the
        first :data:`SAMPLE_SIZE` contiguous bytes become the sample (a file smaller
        than that: all of it, see :meth:`finish`)."""
        with self._lock:
            if self._sample is not None:
                return
            if self._pending_at < 0 or offset != self._pending_at + len(self._pending):
                self._pending, self._pending_at = bytearray(), offset
            self._pending += bytes(block[: SAMPLE_SIZE - len(self._pending)])
            if len(self._pending) >= SAMPLE_SIZE:
                self._sample = (self._pending_at, bytes(self._pending))

    def finish(self) -> None:
        """A body ended: a shorter run of bytes is a sample too (small files, short ranges)."""
        with self._lock:
            if self._sample is None and self._pending:
                self._sample = (self._pending_at, bytes(self._pending))

    def prove(self, seen: Validator, offset: int, data: bytes) -> bool | None:
        """An answer reporting ``seen`` gave ``data`` at ``offset`` (the sample's range):
        True if they are the sample's bytes (its validator becomes an alias), False if
        they differ (the file changed), None when it says nothing (no sample, or
        another range)."""
        with self._lock:
            if self._sample is None or self._sample[0] != offset:
                return None
            if data != self._sample[1]:
                return False
            if self.validator.etag and _dates_differ(self.validator, seen):
                return None  # the same sample, yet another ETag *and* another date: not enough
            key = seen.etag if self.validator.etag else seen.last_modified
            if key and key != self.validator.if_range():
                self._aliases = self._aliases | {key}
            return True

    def accepts(self, seen: Validator) -> bool:
        """True when an answer reporting ``seen`` is of this file as far as validators tell."""
        return not self.validator.differs(seen, self.aliases)


def _dates_differ(a: Validator, b: Validator) -> bool:
    return bool(a.last_modified and b.last_modified and a.last_modified != b.last_modified)

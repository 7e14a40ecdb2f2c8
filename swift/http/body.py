"""Reading an answer's body as served: raw blocks, never decoded, never past the end.

Content codings are never decoded: the file on disk is the representation
exactly as the server sends it (a ``.tar.gz`` served with
``Content-Encoding: gzip`` stays a ``.tar.gz``, as curl and aria2c save it).
Byte ranges count in that encoded representation (RFC 9110 section 14.1.2).
"""

from __future__ import annotations

import time
from typing import Iterator

import requests

from ..errors import ErrorCode, NetworkError, OriginError, SwiftError
from .failures import translate
from .timeouts import DEFAULT_TIMEOUT
from .url import host_of

__all__ = ["CHUNK_SIZE", "DEFAULT_TIMEOUT", "iter_body"]

#: Largest read from a response body. Reads use read1 (what has arrived, up
#: to this much), so the size barely matters for CPU: 64 KiB, 256 KiB and
#: 1 MiB all cost about 0.8 CPU s per GiB on loopback (measured, 1 GiB
#: file). 256 KiB keeps a block well inside one 1 MiB data frame.
CHUNK_SIZE = 256 * 1024
#: A read that brought less than this is *small*: the link is slower than the
#: reader, and each block costs a read, a data frame to the requester, a
#: ``recv`` and a ``pwrite`` there, whatever its size.
SMALL_READ = 64 * 1024
#: Longest wait, in seconds, to let bytes gather after a small read before
#: reading again (interrupt coalescing, as network cards do it). The wait is
#: what the body's measured rate needs to bring :data:`SMALL_READ` more (or
#: the rest of the body, if less), up to this. At 24 Mbit/s per host, four
#: connections each, reads of what had arrived averaged 4-7 KiB, and the
#: machines spent 17-34 CPU s per GiB on blocks. A fast link never waits (its
#: reads are large), and what gathers stays within a read of 64 KiB, far
#: below what the kernel buffers for a connection.
GATHER = 0.050
#: Seconds into a body before reads gather: a new connection's first reads
#: are small because TCP's window is (slow start), not because the link is
#: slow, and waiting then made a 3 MiB download on a fast link 50-100 ms
#: slower (measured, bench/netns_perf.py row 5).
GATHER_AFTER = 0.25



def iter_body(resp: requests.Response, expected: int | None,
              chunk_size: int = CHUNK_SIZE, gather: float = GATHER) -> Iterator[bytes]:
    """Yield the raw body; raise ``SHORT_BODY`` if it ends before ``expected`` bytes.

    Never yields past ``expected``. A failed read raises a
    :class:`~swift.errors.NetworkError` (a reset, a stalled read). After a
    read of less than :data:`SMALL_READ` (from :data:`GATHER_AFTER` seconds
    into the body on), waits up to ``gather`` seconds before the next one
    (see :data:`GATHER`); 0 reads at once. It stops waiting for
    the rest of the body when a wait gathered no more than the read before
    it, and never waits in a chunked body.
    """
    got = 0
    raw = resp.raw
    # read1 hands over what has arrived (up to want) instead of waiting for a
    # full block: a slow origin's bytes reach the requester at once.
    read = getattr(raw, "read1", None) or raw.read
    # A chunked body's read1 ends at each chunk's end: waiting cannot make its
    # reads larger, and a server of 1-byte chunks would be slowed to a crawl.
    gathering = gather > 0 and not getattr(raw, "chunked", False)
    baseline = 0  # the size of the last small read that followed no wait
    after_wait = False
    started = time.monotonic()
    gather_from = started + GATHER_AFTER
    while expected is None or got < expected:
        want = chunk_size if expected is None else min(chunk_size, expected - got)
        try:
            block = read(want, decode_content=False)
        except SwiftError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failed read is a transfer failure
            raise (translate(exc, resp.url) or NetworkError(
                f"reading from {host_of(resp.url)} failed", ErrorCode.CONNECTION_RESET)) from exc
        if not block:
            break
        got += len(block)
        yield block
        waited, small = after_wait, len(block) < SMALL_READ and len(block) < want
        after_wait = False
        now = time.monotonic()
        if gathering and small and now >= gather_from:
            if not waited:
                baseline = len(block)
            elif len(block) <= baseline:
                gathering = False  # a wait gathered nothing more: stop waiting
                continue
            rate = got / (now - started)  # bytes/s of this body so far
            ahead = SMALL_READ if expected is None else min(SMALL_READ, expected - got)
            time.sleep(min(gather, ahead / rate))
            after_wait = True
    if expected is not None and got < expected:
        raise OriginError(f"the server closed the connection after {got} of {expected} bytes",
                          ErrorCode.SHORT_BODY)

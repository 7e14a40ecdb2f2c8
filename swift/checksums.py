"""File checksums: ``ALGO:HEX`` strings as users give them, and hashing a file."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

ALGORITHMS = ("md5", "sha1", "sha256", "sha512")


def parse_checksum(text: str) -> tuple[str, str]:
    """``sha256:HEX`` → (algorithm, hex); ValueError with a clear message."""
    algo, sep, digest = text.partition(":")
    algo = algo.strip().lower()
    digest = digest.strip().lower()
    if not sep or algo not in ALGORITHMS:
        raise ValueError(f"checksum must be ALGO:HEX with ALGO one of {', '.join(ALGORITHMS)}")
    expected_len = hashlib.new(algo).digest_size * 2
    if len(digest) != expected_len or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"a {algo} checksum is {expected_len} hex digits")
    return algo, digest


#: Bytes read and hashed between two looks at the stop flag: 1 MiB takes a
#: few milliseconds to hash, so a stop request is noticed at once.
BLOCK = 1 << 20


class DigestStopped(Exception):
    """Hashing was stopped (``stop`` was set) before the end of the file."""


def file_digest(path: Path | str, algo: str = "sha256",
                stop: threading.Event | None = None) -> str:
    """Hex digest of a whole file, read in :data:`BLOCK` blocks.

    DigestStopped as soon as ``stop`` is set: a large file takes minutes,
    and a stop request (Ctrl-C, SIGTERM) must not wait for them.
    """
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            if stop is not None and stop.is_set():
                raise DigestStopped(f"stopped while computing the {algo} checksum of {path}")
            h.update(block)
    return h.hexdigest()

"""File checksums: ``ALGO:HEX`` strings as users give them, hash names as documents
and headers spell them, and hashing a file."""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only a type here: hashing takes a stop flag, it does not make threads
    import threading

ALGORITHMS = ("md5", "sha1", "sha256", "sha512")

#: The hash names of the IANA "Hash Function Textual Names" registry (used by
#: Metalink, RFC 5854 section 4.2.7, and by ``Repr-Digest``, RFC 9530), and
#: RFC 3230's older ``Digest`` names (``SHA-256``, ``SHA``, ``MD5``), mapped to
#: hashlib's. Lower-cased before look-up.
NAMES = {
    "sha-512": "sha512", "sha-256": "sha256", "sha-1": "sha1", "sha": "sha1", "md5": "md5",
    "sha512": "sha512", "sha256": "sha256", "sha1": "sha1",
}

#: Strongest first: where a document or a server gives several digests, the
#: first one here that it gives is the one checked. MD5 and SHA-1 are broken
#: against a chosen-prefix attacker, so they count only where nothing better is given.
STRENGTH = ("sha512", "sha256", "sha1", "md5")


def algorithm_of(name: str) -> str | None:
    """hashlib's name for a registry or RFC 3230 hash name (``SHA-256`` → ``sha256``); None if unknown."""
    return NAMES.get(name.strip().lower())


def strongest(digests: dict[str, str]) -> tuple[str, str] | None:
    """The strongest (algorithm, hex) of ``{hashlib name: hex}``, by :data:`STRENGTH`; None if empty."""
    for algo in STRENGTH:
        if algo in digests:
            return algo, digests[algo]
    return None


def checked_hex(algo: str, text: str) -> str:
    """``text`` as lower-case hex if it is a whole ``algo`` digest; ValueError otherwise."""
    digest = text.strip().lower()
    expected_len = hashlib.new(algo).digest_size * 2
    if len(digest) != expected_len or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"a {algo} digest is {expected_len} hex digits")
    return digest


def hex_of_base64(algo: str, text: str) -> str:
    """A base64 digest (as HTTP headers carry them) as hex; ValueError unless it is a whole ``algo`` digest."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not base64: {text[:40]!r}") from None
    if len(raw) != hashlib.new(algo).digest_size:
        raise ValueError(f"a {algo} digest is {hashlib.new(algo).digest_size} bytes, not {len(raw)}")
    return raw.hex()


def parse_checksum(text: str) -> tuple[str, str]:
    """``sha256:HEX`` → (algorithm, hex); ValueError with a clear message."""
    algo, sep, digest = text.partition(":")
    algo = algo.strip().lower()
    digest = digest.strip().lower()
    algo = NAMES.get(algo, algo)  # sha-256:HEX as Metalink spells it
    if not sep or algo not in ALGORITHMS:
        raise ValueError(f"checksum must be ALGO:HEX with ALGO one of {', '.join(ALGORITHMS)}")
    try:
        return algo, checked_hex(algo, digest)
    except ValueError:
        raise ValueError(f"a {algo} checksum is {hashlib.new(algo).digest_size * 2} hex digits") from None


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

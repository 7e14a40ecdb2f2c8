"""The last check before the rename: the checksum the user gave, if any.

A mismatch keeps the data and its record, marked with the sum it failed
(``ResumeRecord.rejected``), so a mistyped ``--checksum`` costs no refetch:
the next run with another sum checks the kept data first
(``target.resume_point``). Without piece hashes a whole-file digest cannot
say which bytes are wrong, so "fetched again only where it fails" means the
whole file when it fails: once in that run (``Download``), never piecemeal.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..checksums import DigestStopped, file_digest, parse_checksum
from ..errors import ErrorCode
from .report import ChecksumMismatch, DownloadError, cancelled


#: What a mismatch of ranged data says about the next run (see the module docstring).
AGAIN = ("run again with the right --checksum: the kept data is checked against it first "
         "(the same checksum fetches it anew)")


def same_checksum(a: str | None, b: str | None) -> bool:
    """True if ``a`` and ``b`` name one digest (``SHA256:AB..`` is ``sha256:ab..``)."""
    if a is None or b is None:
        return a is b
    return parse_checksum(a) == parse_checksum(b)


def checksum(path: Path, expected_text: str | None, stop: threading.Event | None = None, *,
             again: str = AGAIN, named_by: str = "") -> None:
    """ChecksumMismatch unless ``path`` has the ``ALGO:HEX`` digest (nothing to do without one).

    ``again`` tells the user how to fetch the file anew; ``named_by`` says who gave the
    digest when it was not the user (``the server's Repr-Digest``), so a mismatch names
    the side that contradicts itself. DownloadError when ``stop`` is set first (checked
    every MiB).
    """
    if not expected_text:
        return
    algo, expected = parse_checksum(expected_text)
    try:
        actual = file_digest(path, algo, stop)
    except DigestStopped:
        raise cancelled(f"stopped while checking the {algo} checksum of {path}") from None
    except OSError as exc:
        raise DownloadError(f"cannot read {path} to check its checksum "
                            f"({exc.strerror or exc}); it is kept", ErrorCode.STORAGE) from None
    if actual != expected:
        said = f"{named_by} says {expected}, its bytes hash to" if named_by else \
            f"expected {expected}, got"
        raise ChecksumMismatch(f"{algo} checksum mismatch: {said} {actual}",
                               kept=f"the data is kept at {path}; {again}")

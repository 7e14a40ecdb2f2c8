"""The last check before the rename: the checksum the user gave, if any."""

from __future__ import annotations

import threading
from pathlib import Path

from ..checksums import DigestStopped, file_digest, parse_checksum
from ..errors import ErrorCode
from .report import ChecksumMismatch, DownloadError, cancelled


def checksum(path: Path, expected_text: str | None, stop: threading.Event | None = None, *,
             again: str = "the same command fetches it anew") -> None:
    """ChecksumMismatch unless ``path`` has the ``ALGO:HEX`` digest (nothing to do without one).

    ``again`` tells the user how to fetch the file anew. DownloadError when
    ``stop`` is set first (checked every MiB).
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
        raise ChecksumMismatch(f"{algo} checksum mismatch: expected {expected}, got {actual}",
                               kept=f"the data is kept at {path}; {again}")

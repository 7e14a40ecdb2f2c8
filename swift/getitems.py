"""What one ``get`` downloads: files, each with its URLs, hashes and name.

``get URL --mirror URL2`` is one file from several URLs (the first names it);
``get -M FILE.meta4`` (and a URL that answers with a Metalink document, as
aria2's ``--follow-metalink`` does) is every file of the document, each
from its own URLs. Both become :class:`GetItem` values, which the front ends
(``node.py get`` and the prompt) turn into downloads.

Reading a document is bounded (:data:`swift.metalink.MAX_DOCUMENT`): a file
or an answer is read up to one byte past the bound, so a larger one is
refused without reading it whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import metalink
from .errors import ErrorCode, UsageError
from .piecehash import PieceHashes

__all__ = ["GetItem", "items_of", "read_metalink_file", "fetch_metalink", "place_of"]


@dataclass(frozen=True)
class GetItem:
    """One file to get: its first URL, other URLs ``(url, priority)``, and what a Metalink says."""

    url: str
    mirrors: tuple[tuple[str, int], ...] = ()
    checksum: str | None = None
    size: int | None = None
    pieces: PieceHashes | None = None
    #: a Metalink's safe relative name (``dir/file.iso``), or None to take the probed one
    name: str | None = None

    def options(self) -> dict[str, Any]:
        """The :class:`swift.download.Options` fields this item sets (the caller adds the rest)."""
        out: dict[str, Any] = {"mirrors": self.mirrors}
        if self.size is not None:
            out["expected_size"] = self.size
        if self.pieces is not None:
            out["pieces"] = self.pieces
        if self.name is not None:
            out["file_name"] = self.name.rsplit("/", 1)[-1]
        return out


def items_of(doc: metalink.Metalink) -> list[GetItem]:
    """One item per file of a parsed Metalink, in document order."""
    items = []
    for f in doc.files:
        first, rest = f.urls[0], f.urls[1:]
        items.append(GetItem(first.url, tuple((u.url, u.priority) for u in rest), f.checksum,
                             f.size, f.pieces, f.name))
    return items


def read_metalink_file(path: Path | str) -> metalink.Metalink:
    """Read and parse a local ``.meta4``; UsageError (one line) if unreadable or refused."""
    try:
        with open(path, "rb") as f:
            data = f.read(metalink.MAX_DOCUMENT + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the Metalink file {path}: {exc.strerror or exc}",
                         ErrorCode.BAD_METALINK) from None
    return metalink.parse(data, str(path))


def fetch_metalink(session, url: str, *, timeout: Any, where: str) -> metalink.Metalink:
    """GET a Metalink document from ``url`` with ``session`` (its address rules apply), bounded.

    ``where`` names it in messages (a redacted URL). UsageError for a refused
    document, the HTTP layer's SwiftError for a failed request.
    """
    from .http.failures import status_error
    resp = session.get(url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"})
    with resp:
        if resp.status_code != 200:
            raise status_error(resp.status_code, resp.reason or "", resp.url or url,
                               resp.headers.get("Retry-After"))
        chunks, total = [], 0
        for chunk in resp.iter_content(64 << 10):
            chunks.append(chunk)
            total += len(chunk)
            if total > metalink.MAX_DOCUMENT:
                break
    return metalink.parse(b"".join(chunks), where)


def place_of(item: GetItem, directory: Path) -> Path:
    """The directory an item's file goes in: ``directory``, or the subdirectory a Metalink
    name gives (created part by part). UsageError if a part is a symbolic link or a file:
    nothing is ever created or written outside ``directory``."""
    if item.name is None or "/" not in item.name:
        return directory
    sub = directory
    for part in item.name.split("/")[:-1]:
        sub = sub / part
        if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
            raise UsageError(f"{item.name}: {sub} is a symbolic link or not a directory; "
                             f"nothing was downloaded", ErrorCode.BAD_METALINK)
        try:
            sub.mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {sub} for {item.name}: {exc.strerror or exc}",
                             ErrorCode.BAD_METALINK) from None
    return sub


def already_complete(item: GetItem, directory: Path) -> Path | None:
    """The file a Metalink item names, if it is already in ``directory`` and complete:
    no partial download of it under way, the Metalink's size, and its whole-file hash
    (the document's hash is the proof; without one, None: it is fetched again)."""
    from .checksums import file_digest, parse_checksum
    from .storage import record_path
    if item.name is None or item.checksum is None:
        return None
    path = directory / item.name.rsplit("/", 1)[-1]
    if not path.is_file() or record_path(path).exists():
        return None
    if item.size is not None and path.stat().st_size != item.size:
        return None
    algo, digest = parse_checksum(item.checksum)
    return path if file_digest(path, algo) == digest else None

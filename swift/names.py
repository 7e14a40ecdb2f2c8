"""Safe file names from what remote servers say. Pure.

A name from a URL or a ``Content-Disposition`` header is remote input: it is
reduced to one safe base name inside the download directory (no ``..``, no
separators, no absolute paths, no control characters, not empty, not over
255 bytes). A name the local user gives with ``-o`` never comes here.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, unquote_to_bytes, urlsplit

#: 255 bytes is the usual file-name limit; the resume record adds
#: ".part.swift" (11 bytes) to the name, and it must fit too.
MAX_NAME_BYTES = 255 - len(".part.swift")
DEFAULT_NAME = "download"
# Characters that act as, or look like, path separators on some system.
_SEPARATORS = "/\\\u2215\u2044\u29f8\uff0f\uff3c\u2216\ufe68"
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
             *(f"lpt{i}" for i in range(1, 10))}
_FORBIDDEN = set('<>:"|?*')


def _param(value: str, key: str) -> str | None:
    """The value of ``key`` in a header's ``;``-separated parameters (quotes handled)."""
    pattern = re.compile(r'(?:^|;)\s*' + re.escape(key) +
                         r'\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.IGNORECASE)
    m = pattern.search(value)
    if not m:
        return None
    raw = m.group(1).strip()
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def filename_from_content_disposition(value: str | None) -> str | None:
    """The file name a Content-Disposition header proposes (unsanitised), if any."""
    if not value:
        return None
    extended = _param(value, "filename*")
    if extended:
        m = re.match(r"^([A-Za-z0-9_\-]+)'[^']*'(.*)$", extended.strip().strip('"'))
        if m:
            charset = m.group(1).lower()
            if charset in ("utf-8", "iso-8859-1", "latin-1", "us-ascii"):
                try:
                    return unquote_to_bytes(m.group(2)).decode(
                        "latin-1" if charset != "utf-8" else "utf-8", errors="replace")
                except LookupError:  # pragma: no cover - charsets above all exist
                    pass
    plain = _param(value, "filename")
    return plain if plain else None


def filename_from_url(url: str | None) -> str | None:
    """The last path segment of a URL, percent-decoded; None when there is none."""
    if not url:
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    segment = path.rsplit("/", 1)[-1]
    name = unquote(segment, encoding="utf-8", errors="replace")
    return name or None


def _truncate_utf8(name: str, limit: int) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and 0 < len(ext.encode("utf-8")) <= 16 and stem:
        room = limit - len(ext.encode("utf-8")) - 1
        return _truncate_utf8(stem, room) + "." + ext
    out = name.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
    return out


def safe_name(raw: str | None, default: str = DEFAULT_NAME) -> str:
    """One safe base name for a file inside the download directory."""
    if not raw:
        return default
    text = unicodedata.normalize("NFC", str(raw))
    for sep in _SEPARATORS:
        text = text.replace(sep, "/")
    text = text.rsplit("/", 1)[-1]  # a base name only
    cleaned = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn") or ch in _FORBIDDEN:
            cleaned.append("_" if ch not in "\r\n\t\x00" and cat != "Cf" else "")
        else:
            cleaned.append(ch)
    text = "".join(cleaned).strip(" .")
    text = text.lstrip("-") or text
    if not text or set(text) <= {"."}:
        return default
    if text.split(".")[0].lower() in _RESERVED:
        text = "_" + text
    text = _truncate_utf8(text, MAX_NAME_BYTES).strip(" ")
    return text or default


def choose_name(url: str, final_url: str | None, content_disposition: str | None) -> str:
    """Content-Disposition's name, else the final URL's, else the original URL's, made safe."""
    for candidate in (filename_from_content_disposition(content_disposition),
                      filename_from_url(final_url), filename_from_url(url)):
        if candidate and safe_name(candidate, default="") :
            return safe_name(candidate)
    return DEFAULT_NAME


def numbered(name: str, n: int) -> str:
    """``name (n).ext``; ``archive.tar.gz`` becomes ``archive (n).tar.gz``."""
    if n == 0:
        return name
    m = re.match(r"^(.+?)((?:\.tar)?\.[A-Za-z0-9]{1,8})?$", name)
    stem, ext = (m.group(1), m.group(2) or "") if m else (name, "")
    return _truncate_utf8(f"{stem} ({n}){ext}", MAX_NAME_BYTES)


def _default_taken(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".part").exists()


def free_path(directory: Path, name: str, *, taken: Callable[[Path], bool] | None = None,
              limit: int = 10000) -> Path:
    """``directory/name`` if free, else the first free ``name (n).ext``."""
    is_taken = taken or _default_taken
    directory = Path(directory)
    for n in range(limit):
        candidate = directory / numbered(name, n)
        if not is_taken(candidate):
            return candidate
    raise FileExistsError(f"no free name for {name!r} in {os.fspath(directory)}")

"""Metalink 4 documents (RFC 5854): which files, from which URLs, with which hashes.

Pure: bytes in, a :class:`Metalink` or one :class:`~swift.errors.UsageError`
(code ``BAD_METALINK``) out. A Metalink document is untrusted input, whoever
serves it, so:

* its size is checked *before* parsing (:data:`MAX_DOCUMENT`);
* it is parsed with ``defusedxml`` refusing every DTD, hence every entity
  (billion laughs, quadratic blow-up) and every external reference (a
  ``SYSTEM "file:///etc/passwd"`` entity, an external DTD);
* only the RFC 5854 namespace is read (aria2's older 3.0 format is refused
  with a line that says so);
* only ``http`` and ``https`` URLs are kept; others (``file:``, ``ftp:``,
  torrents in ``<metaurl>``) are dropped with a note, and a file with none left
  is an error;
* a file's name may name subdirectories (``dir/file.iso``, section 4.1.2.1),
  but every part is made safe by :func:`swift.names.safe_name`, and a name
  with an absolute path, a ``..`` part, or a part that does not survive
  intact is refused: nothing is ever written outside the download directory;
* hashes are kept only in the algorithms swift checks (``sha-512``,
  ``sha-256``, ``sha-1``, ``md5``), as validated hex; ``<pieces>`` become a
  :class:`~swift.piecehash.PieceHashes` (the strongest given), which needs the
  file's ``<size>``.

Each error is one line: what is wrong, in which file, and that nothing was downloaded.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit

import defusedxml
import defusedxml.ElementTree as SafeET

from .checksums import STRENGTH, algorithm_of, checked_hex, strongest
from .errors import ErrorCode, UsageError
from .names import safe_name
from .piecehash import PieceHashes

__all__ = ["MAX_DOCUMENT", "NAMESPACE", "MEDIA_TYPE", "Metalink", "MetalinkFile", "MirrorURL",
           "parse", "looks_like_metalink"]

#: Largest document read, in bytes. A Metalink for one 4 GiB ISO with 1 MiB
#: SHA-256 pieces and a hundred mirrors is about 330 KiB; 4 MiB leaves room for
#: many files and still bounds the memory a hostile server can make us spend.
MAX_DOCUMENT = 4 << 20
#: RFC 5854 section 4: the one namespace of Metalink 4.
NAMESPACE = "urn:ietf:params:xml:ns:metalink"
#: aria2's and older tools' Metalink 3.0 namespace: refused by name.
NAMESPACE_V3 = "http://www.metalinker.org/"
#: RFC 5854 section 7: the media type a server labels a Metalink 4 document with.
MEDIA_TYPE = "application/metalink4+xml"
#: Most files one document may list: each becomes a download in a row.
MAX_FILES = 1000
#: Most URLs kept per file: more mirrors than connections a machine opens
#: add nothing but probes.
MAX_URLS = 100
#: RFC 5854 section 4.2.17: a URL without a priority ranks last.
LOWEST_PRIORITY = 999999

_SCHEMES = ("http", "https")
_N = "{%s}" % NAMESPACE
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class MirrorURL:
    """One URL of a file: lower ``priority`` is preferred (1 first); ``location`` an ISO 3166 code or ""."""

    url: str
    priority: int = LOWEST_PRIORITY
    location: str = ""


@dataclass(frozen=True)
class MetalinkFile:
    """One ``<file>``: a safe relative ``name`` (``/`` between parts), its URLs best first,
    ``size`` in bytes if given, whole-file ``hashes`` ``{hashlib name: hex}``, and piece hashes."""

    name: str
    urls: tuple[MirrorURL, ...]
    size: int | None = None
    hashes: tuple[tuple[str, str], ...] = ()
    pieces: PieceHashes | None = None

    @property
    def checksum(self) -> str | None:
        """The strongest whole-file hash as ``ALGO:HEX`` (``--checksum``'s form), or None."""
        best = strongest(dict(self.hashes))
        return f"{best[0]}:{best[1]}" if best else None


@dataclass(frozen=True)
class Metalink:
    """A parsed document: its files in document order, and notes for the user
    (what was left out and why), one line each."""

    files: tuple[MetalinkFile, ...]
    notes: tuple[str, ...] = ()


def looks_like_metalink(url: str, content_type: str | None) -> bool:
    """True for an answer labelled ``application/metalink4+xml`` (or the 3.0
    ``application/metalink+xml``, refused later with a clear line) or a URL
    path ending in ``.meta4`` / ``.metalink``: aria2's ``--follow-metalink`` rule."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in (MEDIA_TYPE, "application/metalink+xml"):
        return True
    try:
        path = urlsplit(url).path.lower()
    except ValueError:
        return False
    return path.endswith((".meta4", ".metalink"))


def _refuse(what: str, where: str) -> UsageError:
    return UsageError(f"refusing the Metalink document {where}: {what}; nothing was downloaded",
                      ErrorCode.BAD_METALINK)


def parse(data: bytes, where: str = "") -> Metalink:
    """Parse a Metalink 4 document. ``where`` names it in messages (a path or URL).

    Raises UsageError (``BAD_METALINK``), one line, for a document that is too
    large, not well-formed XML, carries a DTD or entities, is not Metalink 4,
    or lists a file that cannot be downloaded safely.
    """
    where = where or "given"
    if len(data) > MAX_DOCUMENT:
        raise _refuse(f"it is larger than {MAX_DOCUMENT >> 20} MiB", where)
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise _refuse("it carries a DTD (entities and external references are not allowed)",
                      where) from None
    except defusedxml.EntitiesForbidden:
        raise _refuse("it declares entities (not allowed)", where) from None
    except defusedxml.DefusedXmlException:
        raise _refuse("it refers to external resources (not allowed)", where) from None
    except ET.ParseError as exc:
        raise _refuse(f"it is not well-formed XML ({exc})", where) from None
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise _refuse(f"it cannot be read as XML ({type(exc).__name__})", where) from None
    if root.tag == "{%s}metalink" % NAMESPACE_V3:
        raise _refuse("it is Metalink 3.0; only Metalink 4 (RFC 5854, .meta4) is read", where)
    if root.tag != _N + "metalink":
        raise _refuse(f"it is not a Metalink 4 document (RFC 5854): its root is {_tag(root)}", where)
    notes: list[str] = []
    files: list[MetalinkFile] = []
    seen: set[str] = set()
    for element in root.findall(_N + "file"):
        if len(files) >= MAX_FILES:
            raise _refuse(f"it lists more than {MAX_FILES} files", where)
        item = _file(element, where, notes)
        if item.name.lower() in seen:
            raise _refuse(f"it lists the file {item.name!r} twice", where)
        seen.add(item.name.lower())
        files.append(item)
    if not files:
        raise _refuse("it lists no file", where)
    return Metalink(tuple(files), tuple(notes))


def _tag(element: ET.Element) -> str:
    return repr(element.tag if len(element.tag) <= 80 else element.tag[:80] + "...")


def safe_relative_name(raw: str | None, where: str) -> str:
    """A ``<file name>`` as a safe relative path (parts joined by ``/``); UsageError otherwise."""
    text = (raw or "").strip()
    shown = repr(text[:80])
    if not text:
        raise _refuse("a file has no name", where)
    if text.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(text):
        raise _refuse(f"the file name {shown} is an absolute path", where)
    parts = re.split(r"[/\\]", text)
    if any(part in ("..", ".", "") for part in parts):
        raise _refuse(f"the file name {shown} leaves its directory or has an empty part", where)
    safe = [safe_name(part, default="") for part in parts]
    if any(s != part for s, part in zip(safe, parts)):
        raise _refuse(f"the file name {shown} is not a safe name (it would be saved as "
                      f"{'/'.join(s or '_' for s in safe)!r})", where)
    return "/".join(safe)


def _file(element: ET.Element, where: str, notes: list[str]) -> MetalinkFile:
    name = safe_relative_name(element.get("name"), where)
    size = _size(element, name, where)
    urls = _urls(element, name, where, notes)
    hashes = _hashes(element, name, where, notes)
    pieces = _pieces(element, name, size, where, notes)
    return MetalinkFile(name=name, urls=urls, size=size, hashes=hashes, pieces=pieces)


def _size(element: ET.Element, name: str, where: str) -> int | None:
    node = element.find(_N + "size")
    if node is None:
        return None
    text = (node.text or "").strip()
    if not text.isdigit() or not text.isascii() or len(text) > 20:
        raise _refuse(f"the size of {name!r} is not a whole number of bytes", where)
    return int(text)


def _urls(element: ET.Element, name: str, where: str, notes: list[str]) -> tuple[MirrorURL, ...]:
    kept: list[MirrorURL] = []
    dropped: list[str] = []
    for node in element.findall(_N + "url"):
        url = (node.text or "").strip()
        try:
            parts = urlsplit(url)
            scheme_ok = parts.scheme.lower() in _SCHEMES and bool(parts.hostname)
        except ValueError:
            scheme_ok = False
        if not scheme_ok:
            dropped.append((url.split(":", 1)[0] + ":" if ":" in url else "not a URL")[:20])
            continue
        if any(m.url == url for m in kept):
            continue
        kept.append(MirrorURL(url, _priority(node.get("priority"), name, where),
                              (node.get("location") or "").strip()[:8]))
    if element.find(_N + "metaurl") is not None:
        dropped.append("metaurl")
    if dropped:
        notes.append(f"{name}: left out {len(dropped)} URL(s) swift does not fetch "
                     f"({', '.join(sorted(set(dropped)))}); only http and https are used")
    if not kept:
        raise _refuse(f"no http or https URL is given for {name!r}", where)
    kept.sort(key=lambda m: m.priority)  # stable: document order within a priority
    if len(kept) > MAX_URLS:
        notes.append(f"{name}: using the first {MAX_URLS} of {len(kept)} URLs")
        kept = kept[:MAX_URLS]
    return tuple(kept)


def _priority(text: str | None, name: str, where: str) -> int:
    if text is None:
        return LOWEST_PRIORITY
    text = text.strip()
    if not text.isdigit() or not text.isascii() or not 1 <= int(text[:7]) <= LOWEST_PRIORITY:
        raise _refuse(f"a URL of {name!r} has priority {text[:20]!r} (1-{LOWEST_PRIORITY})", where)
    return int(text)


def _hashes(element: ET.Element, name: str, where: str,
            notes: list[str]) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    unknown: set[str] = set()
    for node in element.findall(_N + "hash"):
        kind = (node.get("type") or "").strip()
        algo = algorithm_of(kind)
        if algo is None:
            unknown.add(kind[:20] or "no type")
            continue
        try:
            digest = checked_hex(algo, node.text or "")
        except ValueError as exc:
            raise _refuse(f"the {kind} hash of {name!r} is malformed ({exc})", where) from None
        if found.setdefault(algo, digest) != digest:
            raise _refuse(f"{name!r} has two different {kind} hashes", where)
    if unknown and not found:
        notes.append(f"{name}: no hash swift can check (given: {', '.join(sorted(unknown))})")
    return tuple((algo, found[algo]) for algo in STRENGTH if algo in found)


def _pieces(element: ET.Element, name: str, size: int | None, where: str,
            notes: list[str]) -> PieceHashes | None:
    offers: dict[str, ET.Element] = {}
    for node in element.findall(_N + "pieces"):
        algo = algorithm_of(node.get("type") or "")
        if algo is not None:
            offers.setdefault(algo, node)
    best = next((algo for algo in STRENGTH if algo in offers), None)
    if best is None:
        return None
    if size is None or size == 0:
        notes.append(f"{name}: piece hashes are not used ({'no size is given' if size is None else 'the file is empty'})")
        return None
    node = offers[best]
    length_text = (node.get("length") or "").strip()
    if not length_text.isdigit() or not length_text.isascii() or len(length_text) > 20 \
            or int(length_text) < 1:
        raise _refuse(f"the piece length of {name!r} is not a positive number of bytes", where)
    try:
        digests = tuple(checked_hex(best, h.text or "") for h in node.findall(_N + "hash"))
        return PieceHashes(best, int(length_text), size, digests)
    except ValueError as exc:
        raise _refuse(f"the piece hashes of {name!r} do not fit ({exc})", where) from None

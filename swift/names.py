"""Safe file names from what remote servers say. Pure (``free_path`` only asks a
``taken`` callback, which by default looks at the file system).

A name taken from a URL or a ``Content-Disposition`` header is remote input,
and a hostile server controls it completely. It is therefore reduced to *one
base name* that, joined to the download directory, stays inside it:

* only the part after the last ``/`` or ``\\`` is kept (``../../etc/passwd``
  becomes ``passwd``); characters that merely *look* like a slash
  (U+2215, U+FF0F, ...) are replaced by ``_`` so a listing cannot be spoofed;
* control characters (C0, C1, DEL), Unicode line/paragraph separators, bidi
  overrides and invisible characters are removed (``\\u202egnp.exe`` would
  otherwise display as ``exe.png``); lone surrogates (from undecodable bytes)
  become ``_`` because they cannot be written as UTF-8;
* characters Windows refuses (``<>:"|?*``) become ``_``, so a download can be
  copied to a USB stick or a share later; Windows device names (``CON``,
  ``nul.txt``) get a ``_`` prefix;
* leading dots and spaces and trailing dots and spaces are stripped (no hidden
  files, no ``.`` or ``..``), a leading ``-`` becomes ``_`` (a name is never
  mistaken for a command-line option);
* the result is at most :data:`MAX_NAME_BYTES` UTF-8 bytes (255 minus the
  ``.part.swift`` suffix of the resume record, which must fit too), cut in the
  stem so the extension survives;
* a name ending in ``.part.swift`` is changed, so a server cannot make us
  create a file that another download would later take for its resume record;
* nothing left means the default name (``download``).

A name the local user gives (``-o``) never comes through here; where it goes is
:func:`output_path`'s one rule.

Whether a name is free is decided here too, by one rule (:func:`is_taken`):
the final name, its ``.part`` and its ``.part.swift`` must all be absent.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Callable, Collection
from urllib.parse import unquote, unquote_to_bytes, urlsplit

#: The usual file-name limit is 255 bytes; the resume record appends
#: ``.part.swift`` (11 bytes) to the final name and must fit as well.
MAX_NAME_BYTES = 255 - len(".part.swift")
DEFAULT_NAME = "download"
#: The name for a URL that names a directory (``http://host/``, ``.../dir/``):
#: a server answers it with its index page, and wget and aria2c save that as
#: ``index.html``.
INDEX_NAME = "index.html"

# Characters that are, or look like, path separators. The real ones split
# the name; the look-alikes are replaced.
_REAL_SEPARATORS = ("/", "\\")
_LOOKALIKE_SEPARATORS = frozenset(
    "\u2044"   # FRACTION SLASH
    "\u2215"   # DIVISION SLASH
    "\u2216"   # SET MINUS
    "\u2571"   # BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
    "\u2572"   # BOX DRAWINGS LIGHT DIAGONAL UPPER LEFT TO LOWER RIGHT
    "\u27cb"   # MATHEMATICAL RISING DIAGONAL
    "\u27cd"   # MATHEMATICAL FALLING DIAGONAL
    "\u29f5"   # REVERSE SOLIDUS OPERATOR
    "\u29f8"   # BIG SOLIDUS
    "\u29f9"   # BIG REVERSE SOLIDUS
    "\ufe68"   # SMALL REVERSE SOLIDUS
    "\uff0f"   # FULLWIDTH SOLIDUS
    "\uff3c"   # FULLWIDTH REVERSE SOLIDUS
)
# Invalid in Windows file names (besides the separators and controls).
_WINDOWS_INVALID = frozenset('<>:"|?*')
# Format characters (category Cf) that are needed to spell some languages
# correctly; every other format character (bidi overrides, BOM, zero-width
# space, ...) is removed.
_KEEP_FORMAT = frozenset("\u200c\u200d")  # ZERO WIDTH NON-JOINER, ZERO WIDTH JOINER
_WINDOWS_RESERVED = frozenset({
    "con", "prn", "aux", "nul", "conin$", "conout$", "clock$",
    *(f"com{c}" for c in "0123456789\u00b9\u00b2\u00b3"),
    *(f"lpt{c}" for c in "0123456789\u00b9\u00b2\u00b3"),
})
# The extension kept when a name is shortened or numbered: one short suffix,
# with ".tar" in front of it kept too (archive.tar.gz -> archive (1).tar.gz).
_EXTENSION = re.compile(r"(?:\.tar)?\.\w{1,16}$", re.IGNORECASE)
_RECORD_LIKE = re.compile(r"\.part\.swift$", re.IGNORECASE)


# -- Content-Disposition ---------------------------------------------------------------

def _parameters(value: str) -> dict[str, str]:
    """The ``name=value`` parameters of a header value, names lower-cased.

    Tolerant of odd spacing and case, of a missing disposition type, of
    unterminated quotes. Quoted strings are unescaped; a ``;`` inside quotes
    does not end the value. The first occurrence of a name wins.
    """
    params: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        # a parameter name runs up to "=" or ";"
        j = i
        while j < n and value[j] not in "=;":
            j += 1
        name = "".join(value[i:j].split()).lower()
        if j >= n or value[j] == ";":
            i = j + 1  # a bare token such as the disposition type: no value
            continue
        j += 1  # past "="
        while j < n and value[j] in " \t":
            j += 1
        if j < n and value[j] == '"':
            j += 1
            chars = []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(value[j])
                j += 1
            raw = "".join(chars)
            # skip anything between the closing quote and the next ";"
            while j < n and value[j] != ";":
                j += 1
        else:
            k = j
            while k < n and value[k] != ";":
                k += 1
            raw = value[j:k].strip()
            j = k
        if name and name not in params:
            params[name] = raw
        i = j + 1
    return params


_EXT_VALUE = re.compile(r"^\s*([A-Za-z0-9!#$%&+^_`{}~-]+)'([^']*)'(.*)$", re.DOTALL)
_EXT_CHARSETS = {
    "utf-8": "utf-8", "utf8": "utf-8",
    "iso-8859-1": "latin-1", "iso8859-1": "latin-1", "iso_8859-1": "latin-1",
    "latin1": "latin-1", "latin-1": "latin-1",
    "us-ascii": "ascii", "ascii": "ascii",
}


def _decode_ext_value(raw: str) -> str | None:
    """Decode an RFC 5987 ``charset'language'percent-encoded`` value."""
    m = _EXT_VALUE.match(raw)
    if not m:
        return None
    codec = _EXT_CHARSETS.get(m.group(1).lower())
    if codec is None:
        return None
    try:
        data = unquote_to_bytes(m.group(3).strip())
    except (TypeError, ValueError):  # pragma: no cover - unquote_to_bytes is lenient
        return None
    return data.decode(codec, errors="replace") or None


def _undo_latin1_mojibake(text: str) -> str:
    """Raw UTF-8 in a header arrives as Latin-1 text (that is how HTTP headers
    are decoded); recover it when it is valid UTF-8, as browsers do."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def filename_from_content_disposition(value: str | None) -> str | None:
    """The file name a ``Content-Disposition`` header proposes, unsanitised, or None.

    ``filename*`` (RFC 6266 / RFC 5987; UTF-8, ISO-8859-1 or US-ASCII, with an
    optional language tag) is preferred over ``filename``; if it is malformed
    or in another charset, ``filename`` is used instead.
    """
    if not value:
        return None
    params = _parameters(value)
    extended = params.get("filename*")
    if extended:
        decoded = _decode_ext_value(extended)
        if decoded:
            return decoded
    plain = params.get("filename")
    return _undo_latin1_mojibake(plain) if plain else None


def filename_from_url(url: str | None) -> str | None:
    """The last path segment of ``url``, percent-decoded (UTF-8, errors
    replaced), ignoring query and fragment; None when there is none."""
    if not url:
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    segment = path.rsplit("/", 1)[-1]
    return unquote(segment, encoding="utf-8", errors="replace") or None


# -- making a name safe ------------------------------------------------------------------

def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` UTF-8 bytes."""
    if limit <= 0:
        return ""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def split_extension(name: str) -> tuple[str, str]:
    """``("archive", ".tar.gz")``, ``("notes", ".txt")``, ``("README", "")``."""
    m = _EXTENSION.search(name)
    if m and m.start() > 0:
        return name[:m.start()], name[m.start():]
    return name, ""


def _fit(stem: str, tail: str, limit: int) -> str:
    """``stem + tail`` in at most ``limit`` bytes, shortening only the stem
    (or, when even the tail alone does not fit, cutting the whole)."""
    room = limit - _utf8_len(tail)
    if room >= 1:
        cut = _rstrip_dots_and_space(_cut_utf8(stem, room))
        if cut:
            return cut + tail
    return _rstrip_dots_and_space(_cut_utf8(stem + tail, limit))


def _rstrip_dots_and_space(text: str) -> str:
    end = len(text)
    while end and (text[end - 1] == "." or text[end - 1].isspace()):
        end -= 1
    return text[:end]


def _clean_chars(text: str) -> str:
    out = []
    for ch in text:
        if ch in _LOOKALIKE_SEPARATORS or ch in _WINDOWS_INVALID:
            out.append("_")
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp"):
            continue  # C0, C1, DEL, line and paragraph separators
        if category == "Cf" and ch not in _KEEP_FORMAT:
            continue  # bidi overrides, BOM, zero-width space, ...
        if category == "Cs":
            out.append("_")  # a lone surrogate cannot be written as UTF-8
            continue
        out.append(ch)
    return "".join(out)


def _strip_ends(text: str) -> str:
    """No dots or whitespace at either end; a leading "-" becomes "_"."""
    start, end = 0, len(text)
    while start < end and (text[start] == "." or text[start].isspace()):
        start += 1
    while end > start and (text[end - 1] == "." or text[end - 1].isspace()):
        end -= 1
    text = text[start:end]
    if text.startswith("-"):
        text = "_" + text[1:]
    return text


def safe_name(raw: str | None, default: str = DEFAULT_NAME) -> str:
    """One safe base name for a file inside the download directory.

    Always returns a name that is not empty, not ``.`` or ``..``, contains no
    separator or control character, and is at most :data:`MAX_NAME_BYTES`
    UTF-8 bytes, unless the caller passes an unsafe ``default`` (returned as
    is when nothing of ``raw`` survives; ``""`` is useful to detect that).
    """
    if raw is None:
        return default
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", errors="replace")
    text = unicodedata.normalize("NFC", str(raw))
    for sep in _REAL_SEPARATORS:
        text = text.rpartition(sep)[2]  # the base name only
    text = _strip_ends(_clean_chars(text))
    if _utf8_len(text) > MAX_NAME_BYTES - 1:  # keep a byte for a "_" prefix below
        stem, ext = split_extension(text)
        text = _strip_ends(_fit(stem, ext, MAX_NAME_BYTES - 1))
    if not text:
        return default
    # "x.part.swift" -> "x.part_swift" (same length)
    text = _RECORD_LIKE.sub(lambda m: m.group(0)[:-6] + "_" + m.group(0)[-5:], text)
    if text.split(".", 1)[0].rstrip(" ").lower() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def choose_name(url: str, final_url: str | None, content_disposition: str | None) -> str:
    """Content-Disposition's name, else the final URL's, else the original
    URL's, made safe; :data:`INDEX_NAME` for a URL that names a directory,
    else :data:`DEFAULT_NAME` when none gives a usable name."""
    for candidate in (filename_from_content_disposition(content_disposition),
                      filename_from_url(final_url), filename_from_url(url)):
        name = safe_name(candidate, default="")
        if name:
            return name
    return INDEX_NAME if _names_a_directory(final_url or url) else DEFAULT_NAME


def _names_a_directory(url: str) -> bool:
    """True if ``url``'s path is empty or ends with ``/``."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return False
    return path == "" or path.endswith("/")


# -- free names ------------------------------------------------------------------------------

def numbered(name: str, n: int) -> str:
    """``name`` for n == 0, else ``stem (n).ext`` (``archive.tar.gz`` becomes
    ``archive (n).tar.gz``), shortened in the stem to stay within
    :data:`MAX_NAME_BYTES` so that every n gives a different name."""
    if n == 0:
        return name
    stem, ext = split_extension(name)
    return _fit(stem, f" ({n}){ext}", MAX_NAME_BYTES)


#: The companions of a final name: its partial data and its resume record
#: (the same suffixes as ``storage.PART_SUFFIX`` / ``storage.RECORD_SUFFIX``;
#: storage imports this module, not the other way round).
COMPANION_SUFFIXES = (".part", ".part.swift")


def companions(path: Path) -> tuple[Path, Path, Path]:
    """``NAME``, ``NAME.part`` and ``NAME.part.swift``: the three paths one download may use."""
    path = Path(path)
    return (path, *(path.with_name(path.name + suffix) for suffix in COMPANION_SUFFIXES))


def is_taken(path: Path, *, ignore: Collection[Path] = ()) -> bool:
    """The one rule for "is this name taken": the file, its ``.part`` or its
    ``.part.swift`` exists (as anything, a dangling symbolic link included),
    other than the paths in ``ignore`` (a download's own part and record)."""
    return any(os.path.lexists(p) for p in companions(path) if p not in ignore)


def free_path(directory: Path, name: str, *, taken: Callable[[Path], bool] | None = None,
              ignore: Collection[Path] = (), ours: Callable[[Path], bool] | None = None,
              limit: int = 10000) -> Path:
    """``directory/name`` if it is free, else the first free ``name (n).ext``.

    By default :func:`is_taken` decides (``ignore`` passed on to it); a name
    for which ``ours(path)`` is true is free whatever is there (a partial
    download of the same URL, to be resumed). ``taken(path)``, if given,
    replaces the rule entirely. ``name`` must be a base name (ValueError
    otherwise). Raises FileExistsError after ``limit`` tries.
    """
    if not name or name in (".", "..") or any(sep in name for sep in _REAL_SEPARATORS) or "\x00" in name:
        raise ValueError(f"not a base name: {name!r}")
    def rule(candidate: Path) -> bool:
        if taken is not None:
            return taken(candidate)
        if ours is not None and ours(candidate):
            return False
        return is_taken(candidate, ignore=ignore)

    directory = Path(directory)
    for n in range(limit):
        candidate = directory / numbered(name, n)
        if not rule(candidate):
            return candidate
    raise FileExistsError(f"no free name for {name!r} in {os.fspath(directory)} "
                          f"after {limit} tries")


def output_path(directory: Path, given: Path, *, confined: bool = True) -> Path:
    """Where ``-o GIVEN`` writes with ``-d DIRECTORY``: as aria2c's ``-d DIR -o NAME``,
    ``DIR/NAME``; an absolute ``GIVEN`` (or one starting with ``~``) is used as given
    (curl has no ``-d``: its ``-o`` is a path). ``confined``: a relative ``GIVEN`` must
    stay inside ``DIRECTORY``, so a ``..`` part is refused (ValueError saying what to
    give instead), as a remote name is kept inside it (:func:`safe_name`); unconfined
    (``-d`` left at ``.``), ``-o ../x`` goes where it says, as in curl.
    """
    path = Path(given).expanduser()
    if path.is_absolute():
        return path
    if confined and ".." in path.parts:
        raise ValueError(f"-o {os.fspath(given)} climbs out of the download directory "
                         f"{os.fspath(directory)} ('..'): give a path inside it, or an absolute path")
    return Path(directory).expanduser() / path

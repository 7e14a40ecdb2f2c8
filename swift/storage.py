"""The output file and its resume record: thin I/O with clear errors.

Layout, for a download whose final name is ``NAME``:

* ``NAME.part`` — the data, written at offsets as blocks arrive
  (:meth:`PartFile.pwrite`; ``os.pwrite`` is safe from many threads at
  different offsets). It is never truncated on open, so a resume keeps it.
  With a known size the space is reserved up front (``fallocate``): a full
  disk shows in the first second, not after an hour of downloading.
* ``NAME.part.swift`` — the :class:`ResumeRecord`: URL, size, validator and
  the ranges already on disk, as JSON. It is replaced atomically (temporary
  file in the same directory, fsync, rename, fsync of the directory), so a
  crash leaves the old record or the new one, never half of one. The engine
  must flush the data (:meth:`PartFile.sync`) *before* saving a record, so a
  record never claims bytes that are not on disk.
* ``NAME.part.swift.lock`` — exists while a download of ``NAME`` runs and
  holds its pid under an exclusive ``flock`` (:class:`DownloadLock`): one
  download per output path; a second one is refused before it touches
  anything.
* :func:`finalize` gives the complete part its final name and never
  overwrites an existing file unless asked to.

Every failure becomes a :class:`StorageError` whose message names the path and
the cause in plain words, and says what happens to the partial download.

The libc calls ``fallocate`` and ``renameat2`` are used through ``ctypes``
where they exist (Linux), because the standard library lacks them:
``os.posix_fallocate`` silently *emulates* preallocation by writing one byte
per block on file systems without ``fallocate`` (NFS, some FUSE), which can
take minutes for a large file, and ``renameat2(RENAME_NOREPLACE)`` is the only
rename that refuses atomically to replace an existing file. Without them the
code falls back to ``ftruncate`` (a sparse file) and to hard link + unlink
(or, where hard links are not supported either, a checked rename).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import errors
from .content import ContentIdentity, Provenance
from .names import free_path
from .planning import RangeSet
from .units import human_bytes

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
RECORD_SUFFIX = ".part.swift"
RECORD_VERSION = 1
#: Written into every record so that a foreign JSON file is never taken for one.
RECORD_FORMAT = "swift-resume-record"
#: A record larger than this is not ours (a record holds a few ranges).
MAX_RECORD_BYTES = 16 << 20
#: Ranges encoded at a time when a record is saved: bounds the text held at once.
RANGES_PER_CHUNK = 4096
#: Largest file offset the kernel accepts (off_t).
MAX_FILE_SIZE = (1 << 63) - 1

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error (the disk may be failing)",
    errno.EFBIG: "file too large for this file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "is a directory",
    errno.ELOOP: "is a symbolic link (refusing to write through it)",
    errno.EXDEV: "on another file system",
}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_UNSUPPORTED = tuple(e for e in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL,
                                 errno.ENOTTY) if e is not None)


#: The one disk error (``errors.StorageError``), named here where it is raised.
StorageError = errors.StorageError


def _error(exc: OSError, doing: str, path: Path, *, kept: bool) -> StorageError:
    """``<cause> while <doing> <path>; <what now>``.

    ``kept``: whether a partial download is left on disk for a resume.
    """
    code = exc.errno or 0
    cause = _CAUSES.get(code) or exc.strerror or str(exc)
    text = f"{cause} while {doing} {path}"
    if code in _NO_SPACE:
        text += ("; the partial download is kept — free some space and run the same command "
                 "again to resume" if kept else "; free some space and try again")
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        text += ("; the partial download is kept — fix the permissions (or choose another "
                 "directory) and run the same command again to resume" if kept
                 else "; fix the permissions or choose another directory")
    elif kept:
        text += "; the partial download is kept for a resume"
    return StorageError(text, path=path, errno=code or None)


# -- paths ---------------------------------------------------------------------------------

def part_path(final: Path) -> Path:
    """``NAME`` -> ``NAME.part``."""
    final = Path(final)
    return final.with_name(final.name + PART_SUFFIX)


def record_path(final: Path) -> Path:
    """``NAME`` -> ``NAME.part.swift`` (the argument is the *final* path).

    A name cannot tell whether it is a final name or a part (a file may
    really be called ``x.part``), so this takes the final name only; for a
    part path use :func:`record_path_of_part`.
    """
    final = Path(final)
    return final.with_name(final.name + RECORD_SUFFIX)


def record_path_of_part(part: Path) -> Path:
    """``NAME.part`` -> ``NAME.part.swift``."""
    part = Path(part)
    return part.with_name(part.name + RECORD_SUFFIX[len(PART_SUFFIX):])


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort (not every system
    can open or sync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(directory: Path) -> None:
    """Raise StorageError unless files can be created in ``directory``.

    ``os.access`` answers quickly with the usual reason, but root passes it
    whatever the permission bits say, so the final word is an attempt to
    create (and remove) a temporary file there.
    """
    directory = Path(directory)
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise StorageError(f"directory {directory} does not exist", path=directory,
                           errno=errno.ENOENT) from None
    except OSError as exc:
        raise StorageError(f"directory {directory} cannot be used ("
                           f"{_CAUSES.get(exc.errno or 0, exc.strerror)})",
                           path=directory, errno=exc.errno) from None
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"{directory} is not a directory", path=directory, errno=errno.ENOTDIR)
    if not os.access(directory, os.W_OK | os.X_OK):
        code = errno.EACCES
        try:
            if os.statvfs(directory).f_flag & os.ST_RDONLY:
                code = errno.EROFS
        except (OSError, AttributeError):
            pass
        raise StorageError(f"directory {directory} is not writable ({_CAUSES[code]})",
                           path=directory, errno=code)
    try:
        fd, name = tempfile.mkstemp(prefix=".swift-check-", dir=directory)
    except OSError as exc:
        raise StorageError(f"directory {directory} is not writable ("
                           f"{_CAUSES.get(exc.errno or 0, exc.strerror)})",
                           path=directory, errno=exc.errno) from None
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:  # pragma: no cover - we just created it
        log.warning("could not remove the probe file %s", name)


def check_free_space(directory: Path, needed: int, what: Path) -> None:
    """StorageError unless ``directory``'s file system has ``needed`` bytes free for ``what``.

    Checked up front whenever the size is known, so a full disk shows in the
    first second, not after an hour (``fallocate`` checks again where it
    exists; a plain stream has only this). Best effort: a file system that
    cannot say is not refused.
    """
    try:
        st = os.statvfs(directory)
    except OSError:
        return
    available = st.f_bavail * st.f_frsize
    if needed > available:
        raise StorageError(f"{_CAUSES[errno.ENOSPC]} for {what} ({human_bytes(needed)} needed, "
                           f"{human_bytes(available)} free); free some space and try again",
                           path=what, errno=errno.ENOSPC)


# -- libc helpers (Linux), looked up once ------------------------------------------------------

class _Libc:
    def __init__(self) -> None:
        self.fallocate = None
        self.renameat2 = None
        self.sync_file_range = None
        if not sys.platform.startswith("linux"):
            return
        try:
            lib = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover - a Linux process always has libc
            return
        fn = getattr(lib, "fallocate64", None) or getattr(lib, "fallocate", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            self.fallocate = fn
        fn = getattr(lib, "renameat2", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
            self.renameat2 = fn
        fn = getattr(lib, "sync_file_range", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int
            self.sync_file_range = fn


_libc = _Libc()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_SYNC_FILE_RANGE_WRITE = 2


def _preallocate(fd: int, size: int) -> bool:
    """Reserve ``size`` bytes for ``fd`` without touching existing data.

    True if space was reserved, False if the file system cannot do it (the
    caller then extends the file sparsely). Raises OSError (ENOSPC, ...).
    """
    if _libc.fallocate is not None:
        while True:
            if _libc.fallocate(fd, 0, 0, size) == 0:
                return True
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            if code in _UNSUPPORTED:
                return False
            raise OSError(code, os.strerror(code))
    if hasattr(os, "posix_fallocate"):  # pragma: no cover - non-Linux systems
        try:
            os.posix_fallocate(fd, 0, size)
            return True
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                return False
            raise
    return False  # pragma: no cover


# -- the part file ---------------------------------------------------------------------------------

class PartFile:
    """``NAME.part``: opened without truncation, written at offsets.

    Many threads may call :meth:`pwrite` at once (at different offsets).
    :meth:`close` waits for writes in progress and makes later writes fail
    with StorageError, so a write can never land in another file that
    happens to reuse the closed descriptor's number.
    """

    def __init__(self, path: Path, fd: int, size: int | None, *, resumable: bool = True):
        self.path = Path(path)
        self.size = size
        #: False for a download that cannot resume (a plain stream): its part is
        #: removed on failure, so no message may say it is kept.
        self.resumable = resumable
        self._fd = fd
        self._cond = threading.Condition()
        self._busy = 0  # writes and syncs in progress

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @classmethod
    def open(cls, path: Path, size: int | None, *, preallocate: bool = True,
             resumable: bool = True) -> "PartFile":
        """Create ``path`` or open it as it is (never truncating data below ``size``).

        With a known ``size`` the file is made exactly that long: space is
        reserved with ``fallocate`` when ``preallocate`` (falling back to a
        sparse ``ftruncate`` where unsupported), else extended sparsely; a
        longer file is cut to ``size``. If the space cannot be reserved,
        StorageError; the existing data stays, and a file this call created
        is removed again.
        """
        path = Path(path)
        if size is not None and not 0 <= size <= MAX_FILE_SIZE:
            raise ValueError(f"bad size {size!r}")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        created = True
        try:
            try:
                fd = os.open(path, flags | os.O_EXCL, 0o644)
            except FileExistsError:
                created = False
                fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o644)
        except OSError as exc:
            raise _error(exc, "opening", path, kept=not created) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StorageError(f"{path} is not a regular file; refusing to write into it",
                                   path=path)
            if not created and hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            if size is not None:
                cls._conform(fd, path, st.st_size, size, preallocate=preallocate, created=created)
        except BaseException:
            os.close(fd)
            if created:  # nothing of ours was in it: leave no empty husk behind
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise
        return cls(path, fd, size, resumable=resumable)

    @staticmethod
    def _conform(fd: int, path: Path, current: int, size: int, *, preallocate: bool,
                 created: bool) -> None:
        try:
            if current > size:
                os.ftruncate(fd, size)
                return
            if preallocate and size > 0:
                try:
                    if _preallocate(fd, size):
                        return
                except OSError as exc:
                    if exc.errno in _NO_SPACE:
                        try:
                            free = os.fstatvfs(fd)
                            available = free.f_bavail * free.f_frsize
                        except OSError:  # pragma: no cover
                            available = None
                        # give back what a partial reservation took; data below
                        # the old length is untouched
                        try:
                            if os.fstat(fd).st_size > current:
                                os.ftruncate(fd, current)
                        except OSError:  # pragma: no cover
                            pass
                        need = f"{human_bytes(size)} needed" + (
                            f", {human_bytes(available)} free" if available is not None else "")
                        raise StorageError(
                            f"{_CAUSES[exc.errno]} for {path} ({need})"
                            + ("; free some space and try again" if created else
                               "; the partial download is kept — free some space and run "
                               "the same command again to resume"),
                            path=path, errno=exc.errno) from None
                    raise
            if current < size:
                os.ftruncate(fd, size)
        except OSError as exc:
            raise _error(exc, f"making room for {human_bytes(size)} in", path, kept=not created) from None

    def _enter(self) -> int:
        with self._cond:
            if self._fd < 0:
                raise StorageError(f"{self.path} was already closed (download stopped)",
                                   path=self.path, errno=errno.EBADF)
            self._busy += 1
            return self._fd

    def _leave(self) -> None:
        with self._cond:
            self._busy -= 1
            if self._busy == 0:
                self._cond.notify_all()

    def pwrite(self, offset: int, data) -> None:
        """Write all of ``data`` (bytes-like) at ``offset``; StorageError on failure."""
        view = memoryview(data).cast("B")
        if offset < 0 or (self.size is not None and offset + len(view) > self.size):
            raise ValueError(f"write of {len(view)} bytes at {offset} outside "
                             f"[0, {self.size}) in {self.path}")
        if not view:
            return
        fd = self._enter()
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                if n <= 0:  # pragma: no cover - the kernel reports an error instead
                    raise OSError(errno.EIO, "short write")
                view = view[n:]
                offset += n
        except OSError as exc:
            raise _error(exc, "writing", self.path, kept=self.resumable) from None
        finally:
            self._leave()

    def pread(self, offset: int, n: int) -> bytes:
        """Read back ``n`` bytes at ``offset`` (a piece to check against its hash); StorageError on failure."""
        fd = self._enter()
        try:
            parts = []
            while n > 0:
                chunk = os.pread(fd, n, offset)
                if not chunk:
                    break  # past the end: the caller's check sees a short piece
                parts.append(chunk)
                offset += len(chunk)
                n -= len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise _error(exc, "reading", self.path, kept=self.resumable) from None
        finally:
            self._leave()

    def start_writeback(self) -> bool:
        """Start writing the data written so far to the disk, without waiting for it.

        Best effort (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, Linux): it
        proves nothing, so no record may rely on it; a failure shows at the
        next :meth:`sync`. What it buys: the disk works while the download
        runs, so the :meth:`sync` before the record and the rename finds
        little left to write. False where it is not available or failed.
        """
        if _libc.sync_file_range is None:
            return False
        try:
            fd = self._enter()
        except StorageError:
            return False
        try:
            return _libc.sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) == 0
        finally:
            self._leave()

    def sync(self) -> None:
        """Flush the written data to the disk (before a resume record claims it)."""
        fd = self._enter()
        try:
            (getattr(os, "fdatasync", None) or os.fsync)(fd)
        except OSError as exc:
            raise _error(exc, "flushing", self.path, kept=self.resumable) from None
        finally:
            self._leave()

    def close(self) -> None:
        """Close once writes in progress are done; later writes raise StorageError."""
        with self._cond:
            if self._fd < 0:
                return
            fd, self._fd = self._fd, -1
            while self._busy:
                self._cond.wait()
        os.close(fd)

    def __enter__(self) -> "PartFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close must not leak the descriptor
        try:
            if getattr(self, "_fd", -1) >= 0 and not getattr(self, "_busy", 0):
                os.close(self._fd)
                self._fd = -1
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


# -- the resume record ----------------------------------------------------------------------

@dataclass
class ResumeRecord:
    """What a resume needs to know: which file (URL, size, validator) and
    which ranges of ``NAME.part`` are already written.

    ``done`` is a :class:`~swift.planning.RangeSet`; a list of ``(start,
    end)`` pairs is accepted and checked on construction.

    Ranges are validated once, here, by :meth:`RangeSet.from_json
    <swift.planning.RangeSet.from_json>`, with one rule: pairs of ints,
    ``0 <= start < end <= size``, in increasing order and not overlapping.
    Why refuse rather than merge: every record we write comes from
    ``RangeSet.to_json``, which cannot produce anything else, so a record
    with overlapping or unsorted ranges was damaged or edited; guessing what
    it meant could mark missing bytes as done, and starting over is always
    correct.
    """

    version: int
    url: str
    final_url: str
    size: int
    etag: str | None
    last_modified: str | None
    done: RangeSet = field(default_factory=RangeSet)
    #: the ``ALGO:HEX`` the complete data failed, if it did: a later run checks
    #: the kept data against another sum before fetching anything
    rejected: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.done, RangeSet):
            if type(self.size) is not int or not 0 <= self.size <= MAX_FILE_SIZE:
                raise ValueError(f"bad size {self.size!r}")
            self.done = RangeSet.from_json(list(self.done), self.size)
        elif self.done.end > self.size:
            raise ValueError(f"ranges reach past the end of the file ({self.size} bytes)")

    def to_json(self) -> dict:
        """The JSON object saved (ValueError if a field is out of range)."""
        return {**self.to_json_head(), "done": self.done.to_json()}

    def _encoded(self, head: dict) -> Iterator[bytes]:
        """The JSON text of :meth:`to_json`, in chunks of :data:`RANGES_PER_CHUNK` ranges.

        A fragmented record is rewritten every second: encoding it in one
        piece would build a list per range first (about 140 bytes each).
        ``head`` is :meth:`to_json_head`.
        """
        yield json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"done":['
        pairs = iter(self.done)
        first = True
        while batch := list(itertools.islice(pairs, RANGES_PER_CHUNK)):
            text = ",".join(f"[{a},{b}]" for a, b in batch)
            yield (text if first else "," + text).encode()
            first = False
        yield b"]}"

    def to_json_head(self) -> dict:
        """Every field of :meth:`to_json` but ``done`` (ValueError if one is out of range)."""
        _validate_fields(self.version, self.url, self.final_url, self.size, self.etag,
                         self.last_modified)
        if self.rejected is not None and not isinstance(self.rejected, str):
            raise ValueError("rejected must be text or null")
        head = {"format": RECORD_FORMAT, "version": self.version, "url": self.url,
                "final_url": self.final_url, "size": self.size, "etag": self.etag,
                "last_modified": self.last_modified}
        return {**head, "rejected": self.rejected} if self.rejected else head

    @classmethod
    def from_json(cls, obj) -> "ResumeRecord":
        """A record from its JSON object; ValueError if it is not a valid one."""
        if not isinstance(obj, dict) or obj.get("format") != RECORD_FORMAT:
            raise ValueError("not a swift resume record")
        try:
            fields = [obj[k] for k in ("version", "url", "final_url", "size", "etag",
                                       "last_modified", "done")]
        except KeyError as exc:
            raise ValueError(f"missing field {exc.args[0]}") from None
        version, url, final_url, size, etag, last_modified, done = fields
        _validate_fields(version, url, final_url, size, etag, last_modified)
        rejected = obj.get("rejected")
        if rejected is not None and not isinstance(rejected, str):
            raise ValueError("rejected must be text or null")
        return cls(version, url, final_url, size, etag, last_modified,
                   RangeSet.from_json(done, size), rejected)

    def save(self, path: Path) -> None:
        """Replace the record at ``path`` atomically: a crash leaves the old
        record or this one, and no temporary file is left behind.

        StorageError on failure (the previous record, if any, stays)."""
        path = Path(path)
        chunks = self._encoded(self.to_json_head())  # ValueError here, before any file exists
        tmp: str | None = None
        try:
            # a short temporary name: the record's own name may be near the limit
            fd, tmp = tempfile.mkstemp(prefix=".swift-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise _error(exc, "saving the resume record", path, kept=True) from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        _fsync_directory(path.parent)

    @classmethod
    def load(cls, path: Path) -> "ResumeRecord | None":
        """The record at ``path``, or None.

        None, silently, when there is no record; None with a logged warning
        when the file is not a usable record (unreadable, not a regular
        file, larger than :data:`MAX_RECORD_BYTES`, not JSON, a foreign or
        newer format, fields out of range). It never raises for a bad file:
        a record is only a shortcut, and without one the download starts
        over, which is always correct.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            return _ignored(path, _CAUSES.get(exc.errno or 0, exc.strerror))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return _ignored(path, "not a regular file")
            chunks, total = [], 0
            while total <= MAX_RECORD_BYTES:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > MAX_RECORD_BYTES:
                return _ignored(path, f"larger than {human_bytes(MAX_RECORD_BYTES)}")
        except OSError as exc:
            return _ignored(path, _CAUSES.get(exc.errno or 0, exc.strerror))
        finally:
            os.close(fd)
        try:
            obj = json.loads(b"".join(chunks).decode("utf-8"))
            return cls.from_json(obj)
        except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nesting
            log.warning("ignoring the damaged resume record %s: %s", path,
                        str(exc)[:200] or type(exc).__name__)
            return None


# -- the control file: the record, or nothing --------------------------------------------------

@dataclass(frozen=True)
class FileIdentity:
    """Which file a record is about: what must match for a resume.

    Two things at once, each with its own value: the content
    (:class:`swift.content.ContentIdentity`, :attr:`content`) and where it
    was fetched from (:class:`swift.content.Provenance`, :attr:`provenance`).
    A resume needs both to match; sharing needs only the content. The
    record stores the fields below (not ``encoding``), as it always has.
    """

    url: str
    final_url: str
    size: int
    etag: str | None
    last_modified: str | None
    encoding: str = ""  # the content coding of the stored bytes ("" for identity)

    @classmethod
    def of(cls, content: ContentIdentity, provenance: Provenance) -> "FileIdentity":
        return cls(provenance.url, provenance.final_url, content.size, content.etag,
                   content.last_modified, content.coding)

    @property
    def content(self) -> ContentIdentity:
        return ContentIdentity(self.size, self.encoding, self.etag, self.last_modified)

    @property
    def provenance(self) -> Provenance:
        return Provenance(self.url, self.final_url)


#: The extended attribute a finished file carries: which download made it, so
#: that a later ``get`` tells "already complete" from "another file of that
#: name" (two URLs ending in ``data.bin``, or a file the server has replaced
#: by one of the same size). A hash of the URL, never the URL itself (it may
#: hold a token), and the server's size and validators when it was fetched.
#: A file system without user attributes keeps none: such a file is never
#: taken for complete without a ``--checksum``.
ORIGIN_XATTR = "user.swift.origin"


def _origin_value(identity: FileIdentity) -> dict:
    return {"url_sha256": hashlib.sha256(identity.url.encode("utf-8", "surrogateescape")).hexdigest(),
            "size": identity.size, "etag": identity.etag, "last_modified": identity.last_modified}


def mark_origin(path: Path, identity: FileIdentity) -> bool:
    """Label a finished file with where it came from (:data:`ORIGIN_XATTR`);
    False if the file system cannot (nothing else depends on it)."""
    try:
        os.setxattr(path, ORIGIN_XATTR, json.dumps(_origin_value(identity)).encode())
        return True
    except (OSError, AttributeError):  # no user attributes here (or no xattr support at all)
        return False


def same_origin(path: Path, identity: FileIdentity) -> bool:
    """True if ``path`` was finished by a download of this URL, with the size and
    validators the server reports now (see :data:`ORIGIN_XATTR`)."""
    try:
        raw = os.getxattr(path, ORIGIN_XATTR)
        return json.loads(raw.decode()) == _origin_value(identity)
    except (OSError, AttributeError, ValueError, UnicodeDecodeError):
        return False


class ControlFile:
    """Where a download keeps what it has written (aria2's ``BtProgressInfoFile``).

    Two kinds: :class:`ResumeFile` (``NAME.part.swift``) for downloads that
    can resume, :class:`NullControlFile` for those that cannot (a plain
    stream), so callers never check for None.
    """

    path: Path | None = None

    def load(self) -> ResumeRecord | None:
        """The record of an earlier run of this URL, or None (see :meth:`ResumeRecord.load`)."""
        raise NotImplementedError

    def save(self, done: RangeSet, rejected: str | None = None) -> None:
        """Record ``done`` as written (and ``rejected``, the ``ALGO:HEX`` the complete
        data failed, if it did). Flush the data first. StorageError on failure."""
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def remove(self) -> None:
        """Remove the record if there is one; never raises for a missing file."""
        raise NotImplementedError


class ResumeFile(ControlFile):
    """``NAME.part.swift`` for one file identity; see the module docstring."""

    def __init__(self, final: Path, identity: FileIdentity):
        self.path = record_path(final)
        self.identity = identity

    def load(self) -> ResumeRecord | None:
        record = ResumeRecord.load(self.path)
        return record if record is not None and record.url == self.identity.url else None

    def save(self, done: RangeSet, rejected: str | None = None) -> None:
        """Record ``done``; ``rejected``: the checksum the complete data failed."""
        i = self.identity
        ResumeRecord(RECORD_VERSION, i.url, i.final_url, i.size, i.etag, i.last_modified,
                     done, rejected).save(self.path)

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _error(exc, "removing the resume record", self.path, kept=True) from None


class NullControlFile(ControlFile):
    """No record: for downloads that cannot resume. Saves nothing, loads nothing."""

    def load(self) -> ResumeRecord | None:
        return None

    def save(self, done: RangeSet, rejected: str | None = None) -> None:
        pass

    def exists(self) -> bool:
        return False

    def remove(self) -> None:
        pass


def _validate_fields(version, url, final_url, size, etag, last_modified) -> None:
    if type(version) is not int or version != RECORD_VERSION:
        raise ValueError(f"unsupported record version {version!r}")
    if not isinstance(url, str) or not isinstance(final_url, str):
        raise ValueError("url and final_url must be text")
    if type(size) is not int or not 0 <= size <= MAX_FILE_SIZE:
        raise ValueError(f"bad size {size!r}")
    for name, value in (("etag", etag), ("last_modified", last_modified)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be text or null")


# -- one download per output path ----------------------------------------------------------------

LOCK_SUFFIX = ".part.swift.lock"


class Busy(StorageError):
    """Another process holds the download lock of this output path."""


def lock_path(final: Path) -> Path:
    """``NAME`` -> ``NAME.part.swift.lock``; a hashed hidden name where that is too long.

    A separate file rather than ``NAME.part`` itself: the part is removed
    and created again (``--restart``, a changed file, a failed plain
    stream), and a lock on a removed file guards nothing.
    """
    final = Path(final)
    name = final.name + LOCK_SUFFIX
    if len(os.fsencode(name)) > 255:
        name = ".swift-" + hashlib.sha256(os.fsencode(final.name)).hexdigest()[:32] + ".lock"
    return final.with_name(name)


class DownloadLock:
    """An exclusive ``flock`` on :func:`lock_path`, held for the life of a download.

    ``flock`` (not ``lockf``) because its lock belongs to the open file, so
    two downloads in one process (the prompt) exclude each other too; the
    kernel drops it when the process dies, however it dies. The file holds
    the holder's pid, for the message a second process gives. Release
    removes the file while still holding the lock; an acquirer that locked a
    file already removed (its inode no longer at the path) tries again.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, final: Path) -> "DownloadLock":
        """Lock ``final``'s download; Busy (naming the holder's pid) if another holds it."""
        path = lock_path(final)
        for _ in range(10):
            fd = cls._open(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise Busy(f"{final} is being downloaded by another swift process"
                           f" (pid {holder or 'unknown'}); wait for it to finish, or stop it",
                           path=final) from None
            except OSError as exc:
                os.close(fd)
                raise _error(exc, "locking", path, kept=False) from None
            if _same_file(fd, path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return cls(path, fd)
            os.close(fd)  # locked a file its holder had just removed: take the new one
        raise StorageError(f"could not lock {path}: it keeps being replaced", path=path)

    @staticmethod
    def _open(path: Path) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            return os.open(path, flags, 0o644)
        except OSError as exc:
            raise _error(exc, "creating the lock file", path, kept=False) from None

    def release(self) -> None:
        """Remove the lock file, then drop the lock (idempotent)."""
        if self._fd < 0:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "DownloadLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# -- the final rename -------------------------------------------------------------------------

def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists (never replaced).

    Atomic ``renameat2(RENAME_NOREPLACE)`` where the kernel and file system
    have it; else hard link + unlink (``link`` fails if the name exists; a
    crash in between leaves both names for the same data); else, where hard
    links are unsupported too (FAT, some network file systems), a rename
    after a check — the one case with a race: a file created by another
    program between the check and the rename would be replaced.
    """
    if _renameat2_noreplace(src, dst):
        return
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV) + _UNSUPPORTED:
            raise
    else:
        os.unlink(src)
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst))
    os.rename(src, dst)


def _renameat2_noreplace(src: Path, dst: Path) -> bool:
    """True if renamed; False if unsupported here; FileExistsError/OSError otherwise."""
    fn = _libc.renameat2
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), os.fspath(dst))


def finalize(part: Path, final: Path, *, overwrite: bool) -> Path:
    """Give the complete ``part`` its final name and remove its resume record.

    With ``overwrite`` an existing ``final`` is replaced (atomically, by
    ``os.replace``). Without it an existing file is never overwritten: if
    ``final`` exists the part takes the first free ``NAME (n).ext`` instead
    (see :func:`_rename_noreplace` for how). Returns the path used.
    StorageError on failure; the part and its record then stay.
    """
    part, final = Path(part), Path(final)
    record = record_path_of_part(part)
    try:
        st = os.lstat(part)
    except OSError as exc:
        raise _error(exc, "finishing", part, kept=False) from None
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{part} is not a regular file; not renaming it", path=part)
    target = final
    try:
        if overwrite:
            if os.path.isdir(final) and not os.path.islink(final):
                raise StorageError(f"{final} is a directory; not replacing it", path=final,
                                   errno=errno.EISDIR)
            os.replace(part, final)
        else:
            mine = {part, record}
            for _ in range(100):
                try:
                    _rename_noreplace(part, target)
                    break
                except FileExistsError:
                    target = free_path(final.parent, final.name, ignore=mine)
            else:  # pragma: no cover - 100 names appearing while we look
                raise StorageError(f"could not find a free name for {final}", path=final)
    except FileExistsError as exc:  # free_path gave up
        raise StorageError(f"{exc}; the finished download stays in {part}", path=final) from None
    except OSError as exc:
        raise _error(exc, f"renaming {part} to", target, kept=True) from None
    _fsync_directory(target.parent)
    try:
        os.unlink(record)
    except FileNotFoundError:
        pass
    except OSError as exc:  # the download is complete; a stale record is harmless
        log.warning("could not remove the resume record %s: %s", record, exc)
    return target


def _ignored(path: Path, why: str) -> None:
    """Say why the record at ``path`` is not used (a resume then starts over); None."""
    log.warning("ignoring the resume record %s: %s", path, why)
    return None

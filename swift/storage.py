"""The output file and its resume record: thin I/O with clear errors.

``NAME.part`` is written at offsets as blocks arrive (``os.pwrite`` is safe
from many threads at different offsets). Beside it, ``NAME.part.swift``
records the URL, size, validator and the ranges written so far; it is
replaced atomically (write a temporary file, fsync, rename) and the engine
flushes the data before it writes the record, so the record never claims
a range that is not on disk. When the download is complete the part is
renamed to ``NAME`` without ever overwriting an existing file (unless the
user asked for it).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .names import free_path

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
RECORD_SUFFIX = ".part.swift"
RECORD_VERSION = 1
MAX_RECORD = 16 << 20

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
    errno.EFBIG: "the file is too large for this file system",
}


class StorageError(Exception):
    """A disk problem, in words that name the path and the cause."""


def describe(exc: OSError, action: str, path: Path, keep_note: bool = True) -> StorageError:
    cause = _CAUSES.get(exc.errno or 0, exc.strerror or str(exc))
    note = ("; the partial download is kept: free space (or fix the directory) and run the "
            "same command again to resume") if keep_note else ""
    return StorageError(f"{action} {path}: {cause}{note}")


def part_path(final: Path) -> Path:
    final = Path(final)
    return final.with_name(final.name + PART_SUFFIX)


def record_path(final: Path) -> Path:
    final = Path(final)
    return final.with_name(final.name + RECORD_SUFFIX)


def check_writable(directory: Path) -> None:
    """Raise StorageError unless a file can really be created in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StorageError(f"download directory {directory} does not exist")
    try:
        fd, name = tempfile.mkstemp(prefix=".swift-check-", dir=directory)
    except OSError as exc:
        raise describe(exc, "cannot create files in", directory, keep_note=False) from None
    os.close(fd)
    os.unlink(name)


class PartFile:
    """``NAME.part``: opened without truncation, written at offsets."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: Path, size: int | None, *, preallocate: bool = True) -> "PartFile":
        path = Path(path)
        created = not path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise describe(exc, "cannot open", path) from None
        part = cls(path, fd)
        if size is not None:
            try:
                current = os.fstat(fd).st_size
                if current > size:
                    os.ftruncate(fd, size)
                elif preallocate and size > 0:
                    try:
                        # reserve the space now: a full disk shows at the start,
                        # not hours later
                        os.posix_fallocate(fd, 0, size)
                    except OSError as exc:
                        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                            os.ftruncate(fd, size)
                        else:
                            raise
                elif current < size:
                    os.ftruncate(fd, size)
            except OSError as exc:
                part.close()
                if created:  # nothing of ours was in it: leave no empty husk behind
                    path.unlink(missing_ok=True)
                raise describe(exc, f"cannot reserve {size} bytes for", path) from None
        return part

    def pwrite(self, offset: int, data) -> None:
        view = memoryview(data).cast("B")
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                if n <= 0:  # pragma: no cover - the kernel reports errors instead
                    raise OSError(errno.EIO, "short write")
                view = view[n:]
                offset += n
        except OSError as exc:
            raise describe(exc, "cannot write", self.path) from None

    def sync(self) -> None:
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise describe(exc, "cannot flush", self.path) from None

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> "PartFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class ResumeRecord:
    version: int
    url: str
    final_url: str
    size: int
    etag: str | None
    last_modified: str | None
    done: list[tuple[int, int]] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path = Path(path)
        data = json.dumps(asdict(self), separators=(",", ":")).encode()
        tmp = None
        try:
            # a short temporary name: the record's own name may be near the limit
            fd, tmp = tempfile.mkstemp(prefix=".swift-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise describe(exc, "cannot write the resume record", path) from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    @classmethod
    def load(cls, path: Path) -> "ResumeRecord | None":
        """The record at ``path``; None if there is none or it is not usable (logged)."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_RECORD:
                log.warning("ignoring resume record %s: too large", path)
                return None
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable resume record %s: %s", path, exc)
            return None
        try:
            return cls._from_obj(obj)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring damaged resume record %s: %s", path, exc)
            return None

    @classmethod
    def _from_obj(cls, obj) -> "ResumeRecord":
        if not isinstance(obj, dict) or obj.get("version") != RECORD_VERSION:
            raise ValueError("not a swift resume record of this version")
        size = obj["size"]
        if type(size) is not int or size < 0:
            raise ValueError("bad size")
        done = []
        for item in obj["done"]:
            start, end = item
            if type(start) is not int or type(end) is not int or not 0 <= start < end <= size:
                raise ValueError(f"bad range {item!r}")
            done.append((start, end))
        for key in ("url", "final_url"):
            if not isinstance(obj[key], str):
                raise ValueError(f"bad {key}")
        for key in ("etag", "last_modified"):
            if obj[key] is not None and not isinstance(obj[key], str):
                raise ValueError(f"bad {key}")
        return cls(RECORD_VERSION, obj["url"], obj["final_url"], size, obj["etag"],
                   obj["last_modified"], done)


def finalize(part: Path, final: Path, *, overwrite: bool) -> Path:
    """Give the completed part its final name; never clobber a file unless ``overwrite``.

    Without ``overwrite`` the rename is a hard link plus unlink: ``link``
    fails if the name exists, so a file that appeared meanwhile is never
    replaced; the part then takes the next free name instead.
    """
    part, final = Path(part), Path(final)
    record = part.with_name(part.name + ".swift")  # NAME.part.swift
    try:
        if overwrite:
            os.replace(part, final)
        else:
            target = final
            for _ in range(100):
                try:
                    os.link(part, target)
                    break
                except OSError as exc:
                    if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) and not target.exists():
                        os.rename(part, target)  # no hard links here: checked rename
                        part = target
                        break
                    if exc.errno != errno.EEXIST:
                        raise
                    target = free_path(final.parent, final.name,
                                       taken=lambda p: p.exists() or p == part)
            else:  # pragma: no cover
                raise StorageError(f"no free name for {final}")
            if part != target:
                os.unlink(part)
            final = target
    except OSError as exc:
        raise describe(exc, "cannot rename the finished download to", final) from None
    try:
        os.unlink(record)
    except FileNotFoundError:
        pass
    return final

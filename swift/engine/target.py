"""Where the file goes, and what of an earlier run may be kept.

Owns three decisions, all made once before any byte is fetched:

- whether there is anything to fetch at all (:func:`already_complete`);

- the output path: ``-o`` as given (a directory gets the file's name in
  it), else the file's name in the directory, numbered ``NAME (n).ext``
  when taken — except by a partial download of this same URL, which is ours
  to resume;
- resume or not: a record of this URL for the same size and validator, with
  its ``NAME.part``, is resumed; a changed file or a damaged record starts
  over; a ``NAME.part`` that is not ours is never touched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from .. import http, names, storage
from ..checksums import file_digest, parse_checksum
from ..content import ContentIdentity, Provenance
from ..errors import ErrorCode
from ..planning import RangeSet
from .options import Options
from ..units import human_bytes
from .report import DownloadError
from .verify import same_checksum

log = logging.getLogger(__name__)

#: A record with more ranges than this is fragmented: its ranges shorter than
#: a split (what a request costs, ``Options.min_split``) are forgotten and
#: fetched again with the gaps around them, which saves a request each and
#: keeps the done set small. Below it every range is kept.
FRAGMENTED = 1024


def file_name(probe: http.ProbeResult) -> str:
    """The name to save under (Content-Disposition, else the final URL's, else the
    URL's), already made safe."""
    return names.choose_name(probe.url, probe.final_url, probe.content_disposition)


def content_identity(probe: http.ProbeResult, checksum: str | None = None) -> ContentIdentity:
    """The content the probe saw (size, coding, strong validator), and the trusted
    ``ALGO:HEX`` digest if the user gave one; never the URL."""
    v = probe.validator
    return ContentIdentity.of(probe.size or 0, probe.encoding, v.etag, v.last_modified, checksum)


def identity(url: str, probe: http.ProbeResult) -> storage.FileIdentity:
    """What a resume record must match: this URL, and the file as the probe saw it."""
    return storage.FileIdentity.of(content_identity(probe), Provenance(url, probe.final_url))


def already_complete(url: str, *, output: Path | None, directory: Path, checksum: str | None,
                     probe: Callable[[], http.ProbeResult]) -> Path | None:
    """The file a download of ``url`` would write, if it is already there and complete; else None.

    As ``wget -c`` does: asked only when a file of that name exists (the
    ``output`` path, or the name the URL gives, in ``directory``); then
    ``probe()`` (one probe of the server, made only then) says its size and
    name. Complete means: no partial download of it is under way (no
    ``NAME.part.swift``), the same size as the server's, and the proof that it
    is this file: the ``checksum`` (``ALGO:HEX``) if one is given, else the
    mark a finished swift download of this URL left on it
    (:func:`storage.mark_origin` with :func:`identity`) naming the validators
    the server reports now. Size alone is no proof: another URL's
    ``data.bin``, or a file the server replaced by one of the same size,
    would pass (then the download runs and saves under a free name).
    Whatever ``probe()`` raises (a SwiftError: the download would fail the
    same way) goes on up.
    """
    to_file = output is not None and not output.is_dir()
    candidate = output if to_file else \
        (output or directory) / names.safe_name(names.filename_from_url(url))
    if not candidate.is_file():
        return None
    answer = probe()
    path = candidate if to_file else candidate.with_name(file_name(answer))
    if (answer.size is None or not path.is_file() or path.stat().st_size != answer.size
            or storage.record_path(path).exists()):
        return None
    if checksum:
        algo, digest = parse_checksum(checksum)
        return path if file_digest(path, algo) == digest else None
    return path if storage.same_origin(path, identity(url, answer)) else None


def choose_path(probe: http.ProbeResult, opts: Options) -> Path:
    """The final path; DownloadError if ``-o`` names an existing file without ``--force``.

    ``opts.file_name`` (a Metalink's name, already safe) wins over the probed name.
    """
    name = opts.file_name or file_name(probe)
    if opts.output is not None:
        path = Path(opts.output).expanduser()
        if path.is_dir():
            path = path / name
        if path.exists() and not opts.force:
            raise DownloadError(f"{path} already exists; use --force to overwrite it",
                                ErrorCode.STORAGE)
        return path
    directory = Path(opts.directory).expanduser()
    if opts.force:
        return directory / name

    # names.is_taken is the one rule; a partial download of this same URL is ours to resume
    return names.free_path(directory, name,
                           ours=lambda candidate: _record_of(probe.url, candidate) is not None)


def _record_of(url: str, final: Path) -> storage.ResumeRecord | None:
    record = storage.ResumeRecord.load(storage.record_path(final))
    return record if record is not None and record.url == url else None


def resume_point(control: storage.ResumeFile, probe: http.ProbeResult, final: Path,
                 opts: Options, notice: Callable[[str], None]) -> RangeSet:
    """What ``NAME.part`` already holds of this file; an empty set to start over.

    Removes the part and its record when they are ours but unusable (the
    file changed, ``--restart``); refuses (DownloadError) a part that is not.
    """
    part = storage.part_path(final)
    if opts.restart:
        if part.exists() or control.exists():
            notice(f"--restart: discarding the partial download {part}")
        _discard(part, control)
        return RangeSet()
    record = control.load()
    if record is None:
        if part.exists():
            # not ours to resume, and maybe not ours at all: never delete it
            raise DownloadError(f"{part} exists but is not a partial download of this URL; "
                                f"remove it, use --restart, or choose another output path",
                                ErrorCode.STORAGE)
        return RangeSet()
    v = probe.validator
    if (record.size, record.etag, record.last_modified) != (probe.size, v.etag, v.last_modified) \
            or not part.exists():
        notice("the file changed on the server since the partial download "
               "(size or ETag/Last-Modified differ): starting over")
        _discard(part, control)
        return RangeSet()
    done = record.done
    if record.rejected is not None:  # complete data that failed a checksum (verify.py)
        return _after_mismatch(record, part, control, opts, notice)
    if len(done) > FRAGMENTED:
        fragments = len(done)
        forgotten = done.drop_shorter_than(opts.min_split)
        notice(f"the resume record holds {fragments} fragments: the {human_bytes(forgotten)} "
               f"in pieces under {human_bytes(opts.min_split)} are fetched again")
    if done.total:
        notice(f"resuming: {human_bytes(done.total)} of {human_bytes(probe.size or 0)} "
               f"already in {part}")
    return done


def _after_mismatch(record: storage.ResumeRecord, part: Path, control: storage.ControlFile,
                    opts: Options, notice: Callable[[str], None]) -> RangeSet:
    """Data kept after a checksum mismatch (its validator already matched the server's):
    checked against a new sum before anything is fetched; fetched anew when no sum,
    or the same one, is given (:func:`swift.engine.verify.same_checksum`)."""
    if opts.checksum is None or same_checksum(opts.checksum, record.rejected):
        why = "the same checksum" if opts.checksum else "no checksum now"
        notice(f"the data kept in {part} failed {record.rejected.partition(':')[0].lower()} "
               f"before ({why}): fetching it anew")
        _discard(part, control)
        return RangeSet()
    notice(f"checking the {human_bytes(record.done.total)} kept in {part} against the new "
           f"checksum before fetching anything")
    return record.done


def _discard(part: Path, control: storage.ControlFile) -> None:
    try:
        part.unlink()
    except FileNotFoundError:
        pass
    control.remove()

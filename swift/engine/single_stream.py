"""The plain-stream fallback: one GET, written front to back, for servers
without byte ranges or without a length.

Nothing of it can be resumed by a later run (its control file is the null
one): a partial ``NAME.part`` is removed on failure, and the message says
so; a ``NAME.part`` found at the start is not ours to append to. With a
known size, free space is checked before the first byte. The HTTP layer's
:func:`~swift.http.open_stream` reads the raw, undecoded body and may
reopen a broken connection itself when the server proves it is the same
file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from .. import http, storage
from ..errors import ErrorCode, FileChanged, SwiftError
from ..units import human_bytes
from .options import LOCAL, Options
from .report import ChecksumMismatch, DownloadError, Report, cancelled
from . import verify


class SingleStream:
    """Downloads ``probe``'s URL to ``final`` in one plain stream."""

    def __init__(self, url: str, probe: http.ProbeResult, remote: http.RemoteFile, final: Path,
                 opts: Options, *, stop: threading.Event,
                 progress: Callable[[int, int | None], None] | None = None,
                 notice: Callable[[str], None] | None = None,
                 answer: http.KeptAnswer | None = None):
        self.url = url
        self.probe = probe
        self.remote = remote
        self.final = final
        self.part = storage.part_path(final)
        self.opts = opts
        self.stop = stop
        self._progress = progress
        self._notice = notice or (lambda text: None)
        self._answer = answer  # the probe's open 200: the first stream goes on with it
        self._stream: http.PlainStream | None = None
        self.received = 0

    def abort(self) -> None:
        """Stop from another thread (or a signal handler), also when blocked reading."""
        self.stop.set()
        if self._stream is not None:
            self._stream.abort()

    def run(self, started: float, notices: list[str]) -> Report:
        self._check_part()
        if self.probe.size is not None:
            storage.check_free_space(self.final.parent, self.probe.size, self.part)
        session = self.remote.session(source_address=self.opts.source_address)
        try:
            self._fetch(session)
            path = self._finish()
        except ChecksumMismatch:
            raise  # the data stays for a look; the message says how to fetch it anew
        except Exception as exc:  # noqa: BLE001 - one clear line for the user
            raise self._failed(exc) from exc
        except BaseException:
            _unlink(self.part)
            raise
        finally:
            session.close()
        return Report(url=self.url, path=str(path), size=self.received,
                      seconds=time.monotonic() - started, mode="single",
                      bytes_by_source={LOCAL: self.received}, notices=list(notices))

    def _failed(self, exc: Exception) -> DownloadError:
        """The error in one line, saying what became of the partial download."""
        if self.stop.is_set():
            error = cancelled()
        elif isinstance(exc, SwiftError):
            error = DownloadError.of(exc)
        else:  # a bug: say so rather than guess
            error = DownloadError(f"internal error: {type(exc).__name__}: {exc}",
                                  ErrorCode.LOCAL_PROTOCOL)
        if _unlink(self.part):
            error = DownloadError(f"{error}; the partial download was removed: without byte "
                                  f"ranges it cannot be resumed", error.code)
        return error

    def _check_part(self) -> None:
        _unlink(storage.record_path(self.final))  # no ranges: nothing to resume from
        if self.part.exists():
            if not self.opts.restart:
                # a plain stream cannot resume, and a part without our record may not be ours
                raise DownloadError(f"{self.part} already exists; remove it, use --restart, or "
                                    f"choose another output path", ErrorCode.STORAGE)
            _unlink(self.part)

    def _fetch(self, session) -> None:
        """The stream, from byte 0 again when it breaks and the server cannot prove that
        a new answer is the same file (as wget does without ranges): ``--tries`` in all,
        counted over whole restarts, so a server that always breaks ends."""
        retry = self.opts.retry
        while True:
            opened = False
            try:
                first = self._answer.take() if self._answer is not None else None
                self._stream = http.open_stream(session, self.remote, retry=self.opts.retry,
                                                stop=self.stop, timeout=self.opts.timeout, answer=first)
                opened = True  # opening has its own retries: a failure there is final
                self._write(self._stream)
                return
            except FileChanged:
                raise
            except SwiftError as error:
                if not opened or self.stop.is_set():
                    raise
                retry = retry.increment(error)  # raises once the tries are spent
                self._notice(f"{error} after {human_bytes(self.received)}, and without byte ranges "
                             f"the server cannot go on from there: starting over "
                             f"(try {retry.failures + 1} of {retry.attempts})")
                if self.stop.wait(retry.delay(error)):
                    raise cancelled() from error
                _unlink(self.part)
                self.received = 0
                if self._progress:
                    self._progress(0, self.probe.size)

    def _write(self, stream: http.PlainStream) -> None:
        with stream as blocks, \
                storage.PartFile.open(self.part, None, preallocate=False, resumable=False) as out:
            for block in blocks:
                if self.stop.is_set():
                    raise cancelled()
                if self.opts.throttle is not None:
                    self.opts.throttle(len(block))
                out.pwrite(self.received, block)
                self.received += len(block)
                if self._progress:
                    self._progress(self.received, self.probe.size)
            if self.stop.is_set():  # a stop that ended the stream early is no success
                raise cancelled()
            out.sync()
        if self.probe.size is not None and self.received != self.probe.size:
            raise DownloadError(f"the server sent {self.received} of {self.probe.size} bytes",
                                ErrorCode.SHORT_BODY)

    def _finish(self) -> Path:
        verify.checksum(self.part, self.opts.checksum, self.stop,
                        again="run the same command with --restart to fetch it anew")
        return storage.finalize(self.part, self.final, overwrite=self.opts.overwrite)


def _unlink(path: Path) -> bool:
    """Remove ``path``; True if it was there."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False

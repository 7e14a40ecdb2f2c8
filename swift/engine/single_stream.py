"""The plain-stream fallback: one GET, written front to back, for servers
without byte ranges or without a length.

Nothing of it can be resumed (the control file is the null one): a
partial ``NAME.part`` is removed on failure, and the message says so; a
``NAME.part`` found at the start is not ours to append to. With a known
size, free space is checked before the first byte.

:func:`open_plain_stream`, :func:`raw_blocks` and :func:`interrupt` are the only places that
reach below the public HTTP API (a private status helper, urllib3's raw
stream): switching to the HTTP layer's own plain-stream call is one edit.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from .. import httpclient, storage
from ..sessions import make_session
from .options import LOCAL, Options
from .report import ChecksumMismatch, DownloadError, Report
from . import verify


def open_plain_stream(session, probe: httpclient.ProbeResult, policy: httpclient.RetryPolicy,
                      stop: threading.Event, timeout=httpclient.DEFAULT_TIMEOUT):
    """The streaming response to a plain GET (status 200), with retries."""
    def attempt():
        resp = session.get(probe.final_url, stream=True, timeout=timeout,
                           headers={"Accept-Encoding": "identity"})
        if resp.status_code != 200:
            resp.close()
            raise httpclient._status_error(resp, probe.final_url)
        return resp
    return httpclient.with_retries(attempt, policy=policy, what=probe.final_url, stop=stop)


def raw_blocks(resp) -> Iterator[bytes]:
    """The body as served, never decoded: the file is the representation as sent."""
    return resp.raw.stream(httpclient.CHUNK_SIZE, decode_content=False)


def interrupt(resp) -> None:
    """Make a read blocked on ``resp`` return now, from any thread or a signal handler.

    ``shutdown`` wakes a blocked ``recv`` at once; closing alone does not (in
    another thread the read goes on; in a signal handler the interrupted
    read is retried on a socket the response still holds open).
    """
    sock = getattr(getattr(resp.raw, "_connection", None), "sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed
    try:
        resp.close()
    except Exception:  # noqa: BLE001 - best effort from a foreign thread
        pass


class SingleStream:
    """Downloads ``probe``'s URL to ``final`` in one plain stream."""

    def __init__(self, url: str, probe: httpclient.ProbeResult, final: Path, opts: Options, *,
                 stop: threading.Event, progress: Callable[[int, int | None], None] | None = None):
        self.url = url
        self.probe = probe
        self.final = final
        self.part = storage.part_path(final)
        self.opts = opts
        self.stop = stop
        self._progress = progress
        self._resp = None
        self.received = 0

    def run(self, started: float, notices: list[str]) -> Report:
        self._check_part()
        if self.probe.size is not None:
            storage.check_free_space(self.final.parent, self.probe.size, self.part)
        session = make_session(source_address=self.opts.source_address, allow_private=True)
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
            text = "cancelled"
        elif isinstance(exc, (DownloadError, storage.StorageError, httpclient.HttpError)):
            text = str(exc)
        else:
            text = httpclient.describe_exception(exc, self.url)
        if _unlink(self.part):
            text += "; the partial download was removed: without byte ranges it cannot be resumed"
        return DownloadError(text)

    def _check_part(self) -> None:
        _unlink(storage.record_path(self.final))  # no ranges: nothing to resume from
        if self.part.exists():
            if not self.opts.restart:
                # a plain stream cannot resume, and a part without our record may not be ours
                raise DownloadError(f"{self.part} already exists; remove it, use --restart, or "
                                    f"choose another output path")
            _unlink(self.part)

    def abort(self) -> None:
        """Stop from another thread, also when blocked reading a stalled origin."""
        self.stop.set()
        if self._resp is not None:
            interrupt(self._resp)

    def _fetch(self, session) -> None:
        with open_plain_stream(session, self.probe, self.opts.retry, self.stop,
                               self.opts.timeout) as resp, \
                storage.PartFile.open(self.part, None, preallocate=False, resumable=False) as out:
            self._resp = resp
            if self.stop.is_set():  # cancelled while the request was on its way
                raise DownloadError("cancelled")
            for block in raw_blocks(resp):
                if self.stop.is_set():
                    raise DownloadError("cancelled")
                if self.opts.throttle is not None:
                    self.opts.throttle(len(block))
                out.pwrite(self.received, block)
                self.received += len(block)
                if self._progress:
                    self._progress(self.received, self.probe.size)
            out.sync()
        if self.probe.size is not None and self.received != self.probe.size:
            raise DownloadError(f"the server sent {self.received} of {self.probe.size} bytes")

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

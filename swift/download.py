"""The requester: one download, from probe to the renamed, checked file.

Data path (see README "How it works"):

1. Probe the URL once (size, range support, validator, final URL, name).
2. Plan pieces (``swift.planning.Scheduler``) and start workers: ``local``
   workers fetch ranges over this machine's own link; each peer gets as many
   workers as it has slots, each one a connection carrying fetch jobs. A
   worker that finishes asks for more, so fast peers do more; when the queue
   is empty an idle worker takes the far half of the largest range still in
   flight, and the peer running it is told to stop early (``Shrink``).
3. Every block that arrives is written at its offset in ``NAME.part`` at
   once (``os.pwrite``); there is no merge step.
4. A worker whose peer dies, hangs (no frame within ``peer_timeout``), or
   fails gives back only its unreceived remainder; a peer that fails
   ``max_failures`` times is left out for the rest of the download. A frozen
   peer that wakes up finds its connection closed and its job gone, so
   nothing it sends is written.
5. Every few seconds the written ranges are flushed (``fdatasync``) and then
   recorded in ``NAME.part.swift``; the record never claims a range that is
   not on disk. A later run of the same download resumes from it.
6. When every byte is there: size check, optional checksum, atomic rename.

The scheduler is pure and is only touched under ``self._cond``; all I/O
(sockets, disk) happens outside that lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import httpclient, names, planning, protocol, storage, wire
from .checksums import file_digest, parse_checksum
from .membership import Peer
from .sessions import make_session

log = logging.getLogger(__name__)

LOCAL = "local"
#: Files smaller than this are fetched with one request: splitting them would
#: cost more round trips than it saves.
SMALL_FILE = 1 << 20
#: Smallest piece an idle worker may split off a running one: a new range
#: request costs a round trip to the origin, so tiny splits do not pay. The
#: scheduler also refuses splits of jobs that would end within half a second.
MIN_SPLIT = 256 << 10
#: Seconds between flushing data and rewriting the resume record: a crash
#: costs at most this much transfer time again.
RECORD_INTERVAL = 1.0
#: A peer that cannot be reached this many times in a row is left out.
MAX_CONNECT_FAILURES = 2


class DownloadError(Exception):
    """The download failed; the message is one line for the user."""


class ChecksumMismatch(DownloadError):
    """The finished file does not match the checksum the user gave; it stays at NAME.part."""


@dataclass
class Options:
    directory: Path = Path(".")
    output: Path | None = None
    force: bool = False
    restart: bool = False
    checksum: str | None = None
    local_slots: int = 4
    peer_slots: int = 4
    peer_timeout: float = 15.0
    piece_size: int | None = None
    min_split: int = MIN_SPLIT
    source_address: str | None = None
    secret: bytes | None = None
    name: str = "requester"
    record_interval: float = RECORD_INTERVAL
    max_failures: int = 3
    retry: httpclient.RetryPolicy = field(default_factory=httpclient.RetryPolicy)


@dataclass
class Report:
    url: str
    path: str
    size: int
    seconds: float
    mode: str
    bytes_by_source: dict[str, int]
    resumed_bytes: int = 0
    dropped_bytes: int = 0
    notices: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return (self.size - self.resumed_bytes) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        by = ", ".join(f"{src} {human_bytes(n)}" for src, n in
                       sorted(self.bytes_by_source.items(), key=lambda kv: -kv[1]))
        resumed = f", {human_bytes(self.resumed_bytes)} resumed" if self.resumed_bytes else ""
        return (f"done: {self.path}  {human_bytes(self.size)} in {self.seconds:.1f} s "
                f"({human_bytes(self.rate)}/s){resumed}; by machine: {by or 'none'}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rate"] = self.rate
        return d


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@dataclass
class _Job:
    source: str
    start: int
    sent_end: int
    assigned_end: int
    conn: wire.Connection | None = None
    received: int = 0  # every byte a peer sent for this job, dropped ones included


class Download:
    """One download. ``run()`` blocks until it is done; ``cancel()`` stops it."""

    def __init__(self, url: str, options: Options, peers: list[Peer] | None = None, *,
                 notice: Callable[[str], None] | None = None,
                 progress: Callable[[int, int | None], None] | None = None):
        self.url = url
        self.opts = options
        self.peers = _unique(peers or [])
        self._notice_cb = notice or (lambda text: log.warning("%s", text))
        self._progress_cb = progress
        self.notices: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._jobs: dict[int, _Job] = {}
        self._conns: set[wire.Connection] = set()
        self._bytes_by_source: dict[str, int] = {}
        self._dropped = 0
        self._sched: planning.Scheduler | None = None
        self._part: storage.PartFile | None = None
        self._live_workers = 0
        self.size: int | None = None
        self.path: Path | None = None
        self.received = 0
        self.started = time.monotonic()
        self.state = "starting"
        self._last_failure: str | None = None
        self._notice_later: list[str] = []
        self._announced: set[str] = set()

    # -- public --------------------------------------------------------------------------
    def cancel(self) -> None:
        self._fail_all(DownloadError("cancelled"))

    @property
    def done_bytes(self) -> int:
        with self._cond:
            if self._sched is not None:
                return self._sched.done.total
            return self.received

    def contiguous_bytes(self) -> int:
        """Bytes from offset 0 with no gap already written to the part file (``-o -`` streams them)."""
        with self._cond:
            if self._sched is None:
                return self.received  # the plain stream writes in order
            ranges = self._sched.done.ranges()
        return ranges[0].end if ranges and ranges[0].start == 0 else 0

    def run(self) -> Report:
        try:
            report = self._run()
            self.state = "done"
            return report
        except DownloadError:
            self.state = "failed"
            raise
        except (httpclient.HttpError, storage.StorageError) as exc:
            self.state = "failed"
            raise DownloadError(str(exc)) from exc
        finally:
            self._stop.set()
            self._close_conns()

    # -- notices -------------------------------------------------------------------------
    def _notice(self, text: str) -> None:
        self.notices.append(text)
        self._notice_cb(text)

    # -- the whole download ------------------------------------------------------------------
    def _run(self) -> Report:
        opts = self.opts
        session = make_session(source_address=opts.source_address, allow_private=True)
        try:
            probe = httpclient.probe(session, self.url, policy=opts.retry)
        finally:
            session.close()
        self.size = probe.size
        final = self._choose_path(probe)
        self.path = final
        storage.check_writable(final.parent)
        if not probe.splittable:
            why = ("the server does not support byte ranges" if probe.size is not None
                   else "the server sends no length")
            self._notice(f"{why}: downloading in one plain stream")
            return self._single_stream(probe, final)
        return self._parallel(probe, final)

    def _choose_path(self, probe: httpclient.ProbeResult) -> Path:
        opts = self.opts
        if opts.output is not None:
            path = Path(opts.output).expanduser()
            if path.is_dir():
                path = path / probe.filename
            if path.exists() and not opts.force:
                raise DownloadError(f"{path} already exists; use --force to overwrite it")
            return path
        directory = Path(opts.directory).expanduser()
        if opts.force:
            return directory / probe.filename

        def taken(candidate: Path) -> bool:
            # a partial download of this same URL is ours to resume
            if self._record_for(candidate) is not None:
                return False
            return (candidate.exists() or storage.part_path(candidate).exists()
                    or storage.record_path(candidate).exists())

        return names.free_path(directory, probe.filename, taken=taken)

    def _record_for(self, final: Path) -> storage.ResumeRecord | None:
        try:
            record = storage.ResumeRecord.load(storage.record_path(final))
        except storage.StorageError as exc:
            log.warning("%s", exc)
            return None
        if record is not None and record.url == self.url:
            return record
        return None

    def _load_resume(self, probe: httpclient.ProbeResult, final: Path) -> planning.RangeSet:
        part, rec_path = storage.part_path(final), storage.record_path(final)
        record = self._record_for(final)
        if self.opts.restart:
            if part.exists() or rec_path.exists():
                self._notice(f"--restart: discarding the partial download {part}")
            _unlink(part)
            _unlink(rec_path)
            return planning.RangeSet()
        if record is None:
            if part.exists():
                # not ours to resume, and maybe not ours at all: never delete it
                raise DownloadError(f"{part} exists but is not a partial download of this URL; "
                                    f"remove it, use --restart, or choose another output path")
            return planning.RangeSet()
        v = probe.validator
        if (record.size, record.etag, record.last_modified) != (probe.size, v.etag, v.last_modified) \
                or not part.exists():
            self._notice("the file changed on the server since the partial download "
                         "(size or ETag/Last-Modified differ): starting over")
            _unlink(part)
            _unlink(rec_path)
            return planning.RangeSet()
        try:
            done = planning.RangeSet.from_json([list(r) for r in record.done], probe.size or 0)
        except ValueError as exc:
            self._notice(f"the resume record {rec_path} is damaged ({exc}): starting over")
            _unlink(part)
            return planning.RangeSet()
        if done.total:
            self._notice(f"resuming: {human_bytes(done.total)} of {human_bytes(probe.size or 0)} "
                         f"already in {part}")
        return done

    # -- parallel download -----------------------------------------------------------------
    def _parallel(self, probe: httpclient.ProbeResult, final: Path) -> Report:
        opts = self.opts
        size = probe.size or 0
        done = self._load_resume(probe, final)
        resumed = done.total
        part_file = storage.part_path(final)
        self._part = storage.PartFile.open(part_file, size)
        try:
            peers = [p for p in self.peers]
            small = size <= SMALL_FILE
            if small:
                self._notice(f"small file ({human_bytes(size)}): one request")
                peers = []
            workers = 1 if small else opts.local_slots + sum(min(p.slots, opts.peer_slots) for p in peers)
            piece = size if small else (opts.piece_size or planning.plan_piece_size(size, workers))
            with self._cond:
                self._sched = planning.Scheduler(size, piece_size=max(1, piece),
                                                 min_split=opts.min_split if not small else max(size, 1),
                                                 done=done, max_failures=opts.max_failures)
            self.state = "running"
            threads = self._start_workers(probe, peers, 1 if small else opts.local_slots)
            self._supervise(probe, final, threads)
            self._save_record(probe, final)  # also on success: the rename below removes it
            if self._error is not None:
                raise self._error
            self._part.sync()
        finally:
            self._part.close()
        actual = os.path.getsize(part_file)
        if actual != size:
            raise DownloadError(f"{part_file} has {actual} bytes, expected {size}; kept for resume")
        try:
            self._verify_checksum(part_file)
        except ChecksumMismatch:
            # Every byte is "done" but something is wrong: keep the data where it
            # is, but record nothing as done, so the same command fetches it anew.
            # (The record is written directly: its size is one line, whatever the
            # file's size.)
            try:
                self._record(probe, []).save(storage.record_path(final))
            except storage.StorageError as exc:
                log.warning("%s", exc)
            raise
        path = storage.finalize(part_file, final, overwrite=opts.force or opts.output is not None)
        self.path = path
        return self._report(path, size, "parallel", resumed)

    def _start_workers(self, probe: httpclient.ProbeResult, peers: list[Peer],
                       local_slots: int) -> list[threading.Thread]:
        threads = []
        for i in range(local_slots):
            threads.append(threading.Thread(target=self._worker, args=(self._local_worker, probe, LOCAL),
                                            name=f"local-{i}", daemon=True))
        for peer in peers:
            for i in range(min(peer.slots, self.opts.peer_slots)):
                threads.append(threading.Thread(target=self._worker,
                                                args=(self._peer_worker, probe, peer),
                                                name=f"peer-{peer.key}-{i}", daemon=True))
        with self._cond:
            self._live_workers = len(threads)
        for t in threads:
            t.start()
        return threads

    def _worker(self, body, probe, source) -> None:
        try:
            body(probe, source)
        except BaseException as exc:  # a bug in a worker must end the download clearly
            log.exception("worker failed")
            self._fail_all(DownloadError(f"internal error in a worker: {exc}"))
        finally:
            with self._cond:
                self._live_workers -= 1
                self._cond.notify_all()

    def _supervise(self, probe: httpclient.ProbeResult, final: Path,
                   threads: list[threading.Thread]) -> None:
        sched = self._sched
        assert sched is not None
        self._save_record(probe, final)  # at once: a crash in the first seconds still resumes
        next_record = time.monotonic() + self.opts.record_interval
        while True:
            with self._cond:
                if sched.complete or self._error is not None:
                    break
                if self._live_workers == 0:
                    self._error = DownloadError(
                        f"every source failed ({self._last_failure or 'no worker left'}); "
                        f"the partial download is kept for resume")
                    break
                self._cond.wait(0.25)
                total = sched.done.total
            if self._progress_cb:
                self._progress_cb(total, sched.size)
            if time.monotonic() >= next_record:
                self._save_record(probe, final)
                next_record = time.monotonic() + self.opts.record_interval
        if self._progress_cb:
            self._progress_cb(sched.done.total, sched.size)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()  # idle workers waiting for work: leave now
        self._close_conns()
        # Workers see the stop at their next block; one stuck connecting to a
        # frozen peer or reading a stalled origin ends within its own timeout.
        # Their results no longer matter, so the download does not wait on them.
        deadline = time.monotonic() + 1.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _save_record(self, probe: httpclient.ProbeResult, final: Path) -> None:
        if self._sched is None or self._part is None:
            return
        with self._cond:
            snapshot = self._sched.done.copy()
        try:
            self._part.sync()  # the record must never claim bytes that are not on disk
            self._record(probe, [(a, b) for a, b in snapshot.to_json()]).save(
                storage.record_path(final))
        except storage.StorageError as exc:
            self._fail_all(DownloadError(str(exc)))
        except OSError as exc:
            self._fail_all(DownloadError(f"cannot write the resume record beside {final}: {exc}"))

    def _record(self, probe: httpclient.ProbeResult, done: list[tuple[int, int]]) -> storage.ResumeRecord:
        return storage.ResumeRecord(
            version=1, url=self.url, final_url=probe.final_url, size=probe.size or 0,
            etag=probe.validator.etag, last_modified=probe.validator.last_modified, done=done)

    # -- scheduler access (all under the condition) ----------------------------------------------
    def _next_piece(self, source: str) -> planning.Piece | None:
        shrinks: list[tuple[wire.Connection, int, int]] = []
        with self._cond:
            sched = self._sched
            assert sched is not None
            while True:
                if self._stop.is_set() or sched.complete or sched.excluded(source):
                    return None
                piece = sched.assign(source, time.monotonic())
                if piece is not None:
                    end = sched.end_of(piece.job_id)
                    self._jobs[piece.job_id] = _Job(source, piece.start, end, end)
                    for job_id, job in self._jobs.items():
                        if job_id != piece.job_id and sched.is_job_active(job_id):
                            end = sched.end_of(job_id)
                            if end < job.sent_end:
                                job.sent_end = end
                                if job.conn is not None:
                                    shrinks.append((job.conn, job_id, end))
                    break
                self._cond.wait(0.5)
        for conn, job_id, end in shrinks:
            try:
                conn.send(protocol.Shrink(job_id, end))
            except (OSError, wire.ConnectionClosed, TimeoutError):
                pass  # that worker will notice its connection is gone
        return piece

    def _end_of(self, job_id: int) -> int:
        with self._cond:
            assert self._sched is not None
            return self._sched.end_of(job_id) if self._sched.is_job_active(job_id) else 0

    def _write(self, job_id: int, source: str, block) -> bool:
        """Write a received block at its offset; False once the job is no longer ours."""
        with self._cond:
            assert self._sched is not None
            try:
                offset, n = self._sched.claim(job_id, len(block))
            except KeyError:
                self._dropped += len(block)
                return False
            self._dropped += len(block) - n
        if n:
            assert self._part is not None
            self._part.pwrite(offset, memoryview(block)[:n])
        with self._cond:
            self._sched.commit(job_id, n)
            self._bytes_by_source[source] = self._bytes_by_source.get(source, 0) + n
        return True

    def _finished(self, job_id: int) -> bool:
        with self._cond:
            assert self._sched is not None
            self._jobs.pop(job_id, None)
            ok = (self._sched.finished(job_id, time.monotonic())
                  if self._sched.is_job_active(job_id) else True)
            self._cond.notify_all()
            return ok

    def _failed(self, job_id: int, source: str, reason: str, *, discard: bool = False) -> None:
        log.info("%s: %s", source, reason)
        with self._cond:
            assert self._sched is not None
            self._jobs.pop(job_id, None)
            self._last_failure = f"{source}: {reason}"
            if self._sched.is_job_active(job_id):
                if discard:
                    before = self._sched.bytes_by_peer().get(source, 0)
                    self._sched.failed(job_id, reason, discard=True)
                    lost = before - self._sched.bytes_by_peer().get(source, 0)
                    self._bytes_by_source[source] = self._bytes_by_source.get(source, 0) - lost
                    self._dropped += lost
                else:
                    self._sched.failed(job_id, reason)
                if self._sched.excluded(source) and source != LOCAL and source not in self._announced:
                    self._announced.add(source)  # once per peer, not once per slot
                    self._notice_later.append(f"peer {source} left out after repeated failures ({reason})")
            self._cond.notify_all()
        self._flush_notices()

    def _flush_notices(self) -> None:
        with self._cond:
            pending, self._notice_later = self._notice_later, []
        for text in pending:
            self._notice(text)

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._stop.set()
            self._cond.notify_all()
        self._close_conns()

    def _close_conns(self) -> None:
        with self._cond:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            conn.close()

    # -- local worker ------------------------------------------------------------------------
    def _local_worker(self, probe: httpclient.ProbeResult, source: str) -> None:
        session = make_session(source_address=self.opts.source_address, allow_private=True)
        try:
            while True:
                piece = self._next_piece(source)
                if piece is None:
                    return
                fetch = httpclient.RangeFetch(session, probe.final_url, probe.size or 0,
                                              probe.validator, policy=self.opts.retry, stop=self._stop,
                                              encoding=probe.encoding)
                job = piece.job_id
                try:
                    fetch.run(piece.start, lambda: self._end_of(job),
                              lambda block: self._write(job, source, block))
                except httpclient.FileChanged as exc:
                    self._fail_all(DownloadError(f"{exc}; nothing written after the change is kept"))
                    return
                except storage.StorageError as exc:
                    self._fail_all(DownloadError(str(exc)))
                    return
                except httpclient.HttpError as exc:
                    self._failed(job, source, str(exc))
                    continue
                if self._stop.is_set():
                    return
                if not self._finished(job):
                    self._failed(job, source, "the origin sent too few bytes")
        finally:
            session.close()

    # -- peer worker ---------------------------------------------------------------------------
    def _peer_worker(self, probe: httpclient.ProbeResult, peer: Peer) -> None:
        conn: wire.Connection | None = None
        connect_failures = 0
        try:
            while not self._stop.is_set():
                with self._cond:
                    assert self._sched is not None
                    if self._sched.complete or self._sched.excluded(peer.key):
                        return
                if conn is None:
                    try:
                        conn = wire.client_connect(peer.host, peer.port, name=self.opts.name,
                                                   secret=self.opts.secret,
                                                   timeout=min(5.0, self.opts.peer_timeout),
                                                   source_address=None)
                    except wire.AuthError as exc:
                        self._exclude(peer, f"refused the handshake: {exc}")
                        return
                    except (OSError, TimeoutError, wire.ConnectionClosed, protocol.ProtocolError) as exc:
                        connect_failures += 1
                        if connect_failures >= MAX_CONNECT_FAILURES:
                            self._exclude(peer, f"unreachable: {exc}")
                            return
                        if self._stop.wait(0.5 * connect_failures):
                            return
                        continue
                    connect_failures = 0
                    conn.timeout = self.opts.peer_timeout
                    with self._cond:
                        self._conns.add(conn)
                piece = self._next_piece(peer.key)
                if piece is None:
                    return
                if not self._run_remote(conn, peer, probe, piece):
                    self._drop_conn(conn)
                    conn = None
        finally:
            if conn is not None:
                self._drop_conn(conn)

    def _drop_conn(self, conn: wire.Connection) -> None:
        with self._cond:
            self._conns.discard(conn)
        conn.close()

    def _exclude(self, peer: Peer, why: str) -> None:
        with self._cond:
            assert self._sched is not None
            self._sched.exclude(peer.key)
            self._cond.notify_all()
            first = peer.key not in self._announced
            self._announced.add(peer.key)
        if first:
            self._notice(f"peer {peer.key} left out: {why}")

    def _run_remote(self, conn: wire.Connection, peer: Peer, probe: httpclient.ProbeResult,
                    piece: planning.Piece) -> bool:
        """Run one job on a peer; False when the connection must be dropped."""
        job = piece.job_id
        source = peer.key
        with self._cond:
            state = self._jobs.get(job)
            if state is None:
                return True
            state.conn = conn
        end = self._end_of(job)
        try:
            conn.send(protocol.Fetch(job, probe.final_url, piece.start, end, probe.size or 0,
                                     probe.validator.etag, probe.validator.last_modified,
                                     probe.encoding or None))
            while True:
                try:
                    frame = conn.recv(timeout=self.opts.peer_timeout)
                except TimeoutError:
                    self._failed(job, source, f"no frame for {self.opts.peer_timeout:g} s; "
                                              f"reassigning its remainder")
                    return False
                if isinstance(frame, protocol.DataFrame):
                    state.received += len(frame.payload)
                    if state.received > state.assigned_end - state.start:
                        # more than it was ever asked for: nothing it sent can be trusted
                        self._failed(job, source, "the peer sent more bytes than asked", discard=True)
                        return False
                    if not self._write(job, source, frame.payload):
                        return False  # our job was abandoned meanwhile: resync by reconnecting
                elif isinstance(frame, protocol.Keepalive):
                    continue
                elif isinstance(frame, protocol.Done):
                    if frame.length != state.received or self._end_of(job) > state.start + state.received:
                        # a peer that miscounts (or stops short and calls it done) is lying
                        # about what it fetched: drop what it wrote, fetch it elsewhere
                        self._failed(job, source, f"the peer reported {frame.length} bytes, sent "
                                                  f"{state.received}, owed {self._end_of(job) - state.start}",
                                     discard=True)
                        return True
                    if not self._finished(job):
                        self._failed(job, source, "the peer sent too few bytes", discard=True)
                    return True
                elif isinstance(frame, protocol.Error):
                    if frame.code == "changed":
                        self._fail_all(DownloadError(f"{frame.message}; nothing written after "
                                                     f"the change is kept"))
                        return False
                    self._failed(job, source, f"{frame.code}: {frame.message}")
                    return frame.code != "busy"
                else:
                    self._failed(job, source, f"unexpected {type(frame).__name__}")
                    return False
        except storage.StorageError as exc:
            self._fail_all(DownloadError(str(exc)))
            return False
        except (wire.ConnectionClosed, OSError, protocol.ProtocolError) as exc:
            if not self._stop.is_set():
                self._failed(job, source, f"connection lost: {exc}")
            return False

    # -- single stream fallback -----------------------------------------------------------------
    def _single_stream(self, probe: httpclient.ProbeResult, final: Path) -> Report:
        part = storage.part_path(final)
        _unlink(storage.record_path(final))  # no ranges: nothing to resume from
        if part.exists():
            if not self.opts.restart:
                # a plain stream cannot resume, and a part without our record may not be ours
                raise DownloadError(f"{part} already exists; remove it, use --restart, or choose "
                                    f"another output path")
            _unlink(part)
        session = make_session(source_address=self.opts.source_address, allow_private=True)
        self.state = "running"
        keep = False
        try:
            with self._open_stream(session, probe) as resp, \
                    storage.PartFile.open(part, None, preallocate=False) as out:
                offset = 0
                # never decoded: the file is the representation as served
                for block in resp.raw.stream(httpclient.CHUNK_SIZE, decode_content=False):
                    if self._stop.is_set():
                        raise self._error or DownloadError("cancelled")
                    out.pwrite(offset, block)
                    offset += len(block)
                    self.received = offset
                    self._bytes_by_source[LOCAL] = offset
                    if self._progress_cb:
                        self._progress_cb(offset, probe.size)
                out.sync()
            if probe.size is not None and offset != probe.size:
                raise DownloadError(f"the server sent {offset} of {probe.size} bytes")
            self._verify_checksum(part)
            path = storage.finalize(part, final, overwrite=self.opts.force or self.opts.output is not None)
            keep = True
            self.path = path
            return self._report(path, offset, "single", 0)
        except ChecksumMismatch:
            keep = True
            raise
        except (DownloadError, storage.StorageError):
            raise
        except httpclient.HttpError as exc:
            raise DownloadError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - one clear line for the user
            raise DownloadError(httpclient.describe_exception(exc, self.url)) from exc
        finally:
            session.close()
            if not keep:
                # without range support there is nothing to resume from
                _unlink(part)

    def _open_stream(self, session, probe: httpclient.ProbeResult):
        def attempt():
            resp = session.get(probe.final_url, stream=True, timeout=httpclient.DEFAULT_TIMEOUT,
                               headers={"Accept-Encoding": "identity"})
            if resp.status_code != 200:
                resp.close()
                raise httpclient._status_error(resp, probe.final_url)
            return resp
        return httpclient.with_retries(attempt, policy=self.opts.retry, what=probe.final_url,
                                       stop=self._stop)

    # -- end -----------------------------------------------------------------------------------
    def _verify_checksum(self, path: Path) -> None:
        if not self.opts.checksum:
            return
        algo, expected = parse_checksum(self.opts.checksum)
        actual = file_digest(path, algo)
        if actual != expected:
            raise ChecksumMismatch(f"{algo} checksum mismatch: expected {expected}, got {actual}; "
                                   f"the data is kept at {path}; the same command fetches it anew")

    def _report(self, path: Path, size: int, mode: str, resumed: int) -> Report:
        return Report(url=self.url, path=str(path), size=size,
                      seconds=time.monotonic() - self.started, mode=mode,
                      bytes_by_source=dict(self._bytes_by_source), resumed_bytes=resumed,
                      dropped_bytes=self._dropped, notices=list(self.notices))


def _unique(peers: list[Peer]) -> list[Peer]:
    seen: dict[str, Peer] = {}
    for p in peers:
        seen.setdefault(p.key, p)
    return list(seen.values())


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass

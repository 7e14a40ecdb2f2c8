"""A running node: its job server, its membership in discovery, its downloads.

``NodeApp`` owns every long-lived piece of a node and stops them in order:
first it cancels its downloads, then unregisters from discovery (so peers
stop sending jobs), then closes its server and every connection; the whole
stop keeps to a deadline, so a SIGTERM ends the node within two seconds
even when discovery does not answer.

The front ends (the prompt, ``--serve-only``) use only the public API
below: ``start_download`` / ``downloads`` / ``download`` and a :class:`DownloadEntry`'s
``status()``, ``cancel()``, ``wait()``; ``peers()``; ``name``, ``key``,
``port``, ``directory``; ``notice`` and ``say``, which they may replace to put the
node's notes and the lines about downloads started elsewhere (over the RPC) on
their own screen. They never touch the membership, the config or a
``Download``'s internals.

Each download runs on its own thread, and everything slow for it happens
there, asking discovery for peers included: starting a download returns at
once, whether discovery is up or not. Every message about a download (its start,
its notices, its end) is emitted from that thread in order, so a download's
error never appears before its "started" line.

This module also holds what the one-shot ``get`` and the prompt's ``get``
share: the ``get`` options (:func:`add_get_arguments`, one parser builder for
both) and the summary line (:func:`summary`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import download, identity, local_nodes, storage
from .content_index import ContentIndex
from .addresses import format_hostport
from .engine.rate_limit import RateLimit
from .errors import ErrorCode
from .http.profile import RequestProfile
from .http.url import redact_url
from .http import DEFAULT_TIMEOUT
from .units import human_bytes, human_rate

if TYPE_CHECKING:  # a get loads this module for its summary: the server side loads in NodeApp
    from .membership import Peer

log = logging.getLogger(__name__)

#: Seconds a whole stop (cancel downloads, unregister, close) may take: a
#: SIGTERM must end the process within two seconds, and the engine
#: notices a cancel within about one.
STOP_DEADLINE = 1.5
# -- the summary line --------------------------------------------------------------------
def summary(report: download.Report, names: dict[str, str] | None = None,
            checksum: str | None = None) -> str:
    """``done: PATH  SIZE in S s (RATE); by machine: NAME SIZE, ...[; ALGO checksum verified]``.

    After a resume: ``done: PATH  SIZE (X resumed); this run: Y in S s (RATE); ...``:
    the rate is always this run's bytes over this run's time, and the line
    says which bytes those are. ``names`` maps a source key (``HOST:PORT``)
    to the helper's ``--name``; ``local`` is this machine. ``checksum`` is
    the ``ALGO:HEX`` the file passed (a report exists only for a file that
    passed it). Units from :mod:`swift.units` only.
    """
    names = names or {}
    def shown(src: str) -> str:
        if src.startswith(download.Report.LAN_PREFIX):  # a LAN copy: the member, said so
            key = src[len(download.Report.LAN_PREFIX):]
            return f"{names.get(key) or key} (LAN copy)"
        return names.get(src) or src

    by = ", ".join(f"{shown(src)} {human_bytes(n)}" for src, n in
                   sorted(report.bytes_by_source.items(), key=lambda kv: (-kv[1], kv[0])))
    verified = f"; {checksum.partition(':')[0].strip().lower()} checksum verified" if checksum else ""
    left = "".join(f"; left out: {shown(src)} ({why})"
                   for src, why in sorted(getattr(report, "left_out", {}).items()))
    mirrors = [m for m in getattr(report, "mirrors", []) if m.get("bytes")]
    by_mirror = ("; by mirror: " + ", ".join(f"{m['url']} {human_bytes(m['bytes'])}" for m in mirrors)
                 if mirrors else "")
    bad = getattr(report, "bad_pieces", 0)
    refetched = f"; {bad} bad piece(s) fetched again" if bad else ""
    lan = report.lan_bytes if hasattr(report, "lan_bytes") else {}
    shared = ""
    if lan:  # LAN sharing: say what the internet was spared
        copies = ", ".join(f"{names.get(key) or key} {human_bytes(n)}"
                           for key, n in sorted(lan.items(), key=lambda kv: -kv[1]))
        shared = (f"; from LAN copies {human_bytes(sum(lan.values()))} ({copies}), "
                  f"from the internet {human_bytes(report.internet_bytes)}")
    this_run = f"in {report.seconds:.1f} s ({human_rate(report.rate)})"
    if report.resumed_bytes:
        fetched = human_bytes(report.size - report.resumed_bytes)
        amount = (f"{human_bytes(report.size)} ({human_bytes(report.resumed_bytes)} resumed); "
                  f"this run: {fetched} {this_run}")
    else:
        amount = f"{human_bytes(report.size)} {this_run}"
    return (f"done: {report.path}  {amount}; by machine: {by or 'none'}{shared}{by_mirror}"
            f"{refetched}{verified}{left}")


def alone_note(left_out: list[str]) -> str:
    """The note of a download started here without helpers.

    ``left_out``: the names of live nodes passed over as this machine's own
    (``swift.local_nodes``); without them there was nobody to ask.
    """
    if not left_out:
        return "no peers known: downloading alone with several connections"
    one = len(left_out) == 1
    return (f"no helpers: {', '.join(left_out)} {'runs' if one else 'run'} on this machine and "
            f"{'shares' if one else 'share'} its link; downloading alone with several connections")


def peer_names(peers: list[Peer]) -> dict[str, str]:
    """Source key → the name a helper gave itself (``--name``), for :func:`summary`."""
    return {p.key: p.name for p in peers if p.name}


# -- the node ----------------------------------------------------------------------------
@dataclass
class NodeConfig:
    discovery: tuple[str, int]
    host: str = "0.0.0.0"
    port: int = 6000
    advertise: str | None = None
    name: str | None = None
    slots: int = 4
    directory: Path = Path(".")
    secret: bytes | None = None
    allow_private: bool = False
    source_address: str | None = None
    peer_timeout: float = 15.0
    #: bytes/s: what the job server spends for others (one bucket for all jobs),
    #: and each download started here, as a whole. None: no limit.
    limit_rate: int | None = None
    #: (connect, read) seconds for requests to origins: this node's downloads and its jobs.
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    heartbeat: float = 3.0
    download_options: dict = field(default_factory=dict)
    #: where discovery is now, asked when it stops answering (swift.mdns.Rediscovery); None: never
    rediscover: Callable[[], tuple[str, int] | None] | None = None
    #: offer what this node holds to other members as LAN copies (``--no-share``: False)
    share: bool = True


def advertised_host(bind_host: str, discovery_host: str) -> str:
    """The address peers should use to reach us: never a wildcard.

    For a wildcard bind, the local address of a route towards discovery is
    the one the LAN can reach (a UDP ``connect`` picks it; nothing is sent).
    """
    if bind_host not in ("", "0.0.0.0", "::"):
        return bind_host
    family = socket.AF_INET6 if ":" in discovery_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((discovery_host, 9))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class AlreadyDownloading(Exception):
    """The same URL is already being downloaded to the same place; ``entry`` is that download."""

    def __init__(self, entry: "DownloadEntry"):
        paused = f" (paused: resume {entry.number})" if entry.paused else ""
        super().__init__(f"already downloading as [{entry.number}]{paused}")
        self.entry = entry


@dataclass(frozen=True)
class DownloadStatus:
    """A snapshot of one download for display. ``rate`` counts this run's bytes only."""
    state: str          # "starting", "running", "paused", "done", "failed", "cancelled"
    done: int           # bytes on disk, resumed ones included
    size: int | None
    rate: float         # bytes/s fetched by this run (resumed bytes excluded)
    summary: str | None  # the summary line once done
    error: str | None
    #: bytes this run fetched (resumed ones excluded): 0 until its first progress report,
    #: and from 0 again in each run after a resume (a speed is measured on this, never ``done``)
    fetched: int = 0


@dataclass(frozen=True)
class DownloadDetail:
    """What a live view shows of one download beyond its status (the web page, aria2's fields).

    ``ranges``: the ``[start, end)`` byte ranges written so far, sorted;
    ``by_source``: bytes each source delivered (``local``, or a helper's
    ``HOST:PORT``); ``names``: a helper's ``--name`` by its key; ``path``:
    the file it writes once known; ``directory``: where it goes.
    """
    ranges: list[tuple[int, int]]
    by_source: dict[str, int]
    names: dict[str, str]
    path: Path | None
    directory: Path


# Events a download reports to its front end. Each run emits STARTED, then any
# NOTICE lines, then ENDED (the summary, or "error: ..."), or PAUSED /
# CANCELLED when the user stopped it; RESUMED starts a new run.
STARTED, NOTICE, ENDED, PAUSED, CANCELLED, RESUMED = (
    "started", "notice", "ended", "paused", "cancelled", "resumed")


def event_line(number: int, kind: str, text: str) -> str | None:
    """The front end's line for one event of download ``number``, its number first:
    ``[3] started URL``, ``[3] note: ...``, ``[3] paused; ...``, ``[3] done: ...`` (None:
    an event kind no line is said for). The prompt and ``--serve-only`` say the same lines,
    whoever started the download (the prompt, or a client over the RPC)."""
    if kind in (STARTED, RESUMED):
        return f"[{number}] {kind} {text}"
    if kind == NOTICE:
        return f"[{number}] note: {text}"
    if kind in (PAUSED, CANCELLED):
        return f"[{number}] {kind}; {text}"
    if kind == ENDED:
        return f"[{number}] {text}"
    return None


class DownloadEntry:
    """One download started from the node's front end; each run on its own thread.

    ``pause()`` and ``cancel()`` both stop the running ``Download`` and keep
    the partial file and its record (the engine's promise); ``resume()``
    starts a new run of the same URL to the same place, which resumes from
    that record. A paused or cancelled entry differs only in what it says.
    """

    def __init__(self, app: "NodeApp", number: int, url: str, output: Path | None,
                 overrides: dict, no_peers: bool,
                 on_event: Callable[["DownloadEntry", str, str], None] | None):
        self.number = number
        self.url = url
        self.output = output
        self._app = app
        self._overrides = overrides
        self._no_peers = no_peers
        self._leaving = False  # cancelled as the node stops: no `resume N` after that
        # a download without a front end of its own (the RPC's) is said by the node's (app.say)
        self._on_event = on_event or app.download_event
        #: bytes/s for this download alone (aria2's ``max-download-limit``), beside the node's
        self.limit_rate: int | None = overrides.pop("limit_rate", None)
        self._lock = threading.Lock()
        self._download: download.Download | None = None
        self._limit: RateLimit | None = None
        self._stopped_as: str | None = None   # PAUSED or CANCELLED, while stopping or stopped
        self._first_done: int | None = None
        self._started = time.monotonic()
        self._names: dict[str, str] = {}
        self.report: download.Report | None = None
        self.error: str | None = None
        #: why it failed, for callers that branch on it (None: no error, or a bug's)
        self.error_code: ErrorCode | None = None
        self._ended = threading.Event()  # set when the current run has ended
        self._thread = self._new_thread(first=True)

    # -- public ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return not self._ended.is_set()

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._stopped_as == PAUSED

    @property
    def place(self) -> Path:
        """Where it goes: the output path if one was given, else the download directory."""
        return self.output if self.output is not None else self.directory

    @property
    def profile(self) -> "RequestProfile | None":
        """The headers, cookies and TLS trust it was started with (None: the defaults)."""
        return self._overrides.get("profile")

    @property
    def directory(self) -> Path:
        """The directory it saves into (the node's, unless it was started with its own)."""
        return self._overrides.get("directory", self._app.directory)

    @property
    def path(self) -> Path | None:
        """The file it writes (known once the server said its name)."""
        with self._lock:
            dl = self._download
        return dl.path if dl is not None else None

    @property
    def keeps_partial(self) -> bool:
        """Whether a stop now keeps what arrived for a resume: not for a plain stream, whose
        server cannot resume (see :meth:`_kept`)."""
        with self._lock:
            dl = self._download
        return dl is None or not dl.plain_stream

    def cancel(self, *, leaving: bool = False) -> bool:
        """Stop it; the partial download stays for a later resume. False if it was not running.

        ``leaving``: the node stops too, so what it says about resuming names
        what works after a restart (the same get), not ``resume N``."""
        self._leaving = self._leaving or leaving
        return self._stop(CANCELLED)

    def pause(self) -> bool:
        """Stop it until :meth:`resume`; False if it was not running."""
        return self._stop(PAUSED)

    def resume(self, stopping_wait: float = 3.0) -> bool:
        """Run a paused or cancelled entry again, from its partial file; False if it cannot be.

        Right after ``pause``, the run may still be stopping (the engine ends
        within about a second): wait up to ``stopping_wait`` seconds for it.
        """
        with self._lock:
            stopping = self._stopped_as is not None and not self._ended.is_set()
            ended = self._ended
        if stopping:
            ended.wait(stopping_wait)
        with self._lock:
            if not self._ended.is_set() or self._stopped_as is None:
                return False
            self._stopped_as, self.error, self.error_code, self._download = None, None, None, None
            self._first_done = None
            self._ended = threading.Event()
            self._thread = self._new_thread(first=False)
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """True once the current run has ended (within ``timeout`` seconds)."""
        # an Event, not Thread.join(): a join interrupted by Ctrl-C can mark a
        # running thread as stopped (CPython gh-90882)
        return self._ended.wait(timeout)

    def status(self) -> DownloadStatus:
        with self._lock:
            dl, stopped, base, since = self._download, self._stopped_as, self._first_done, self._started
        if self.report is not None:
            return DownloadStatus("done", self.report.size, self.report.size, self.report.rate,
                             summary(self.report, self._names, self._overrides.get("checksum")), None)
        done = 0 if self._nothing_kept(dl) else dl.done_bytes if dl else 0
        size = dl.size if dl else None
        if stopped is not None and not self.running:
            return DownloadStatus(stopped, done, size, 0.0, None, None)
        if self.error is not None:
            return DownloadStatus("failed", done, size, 0.0, None, self.error)
        if dl is None:
            return DownloadStatus("starting", 0, None, 0.0, None, None)
        fetched = max(0, done - base) if base is not None else 0
        rate = fetched / max(1e-3, time.monotonic() - since) if base is not None else 0.0
        return DownloadStatus(dl.state, done, size, rate, None, None, fetched)

    def detail(self) -> DownloadDetail:
        """Its pieces and sources now (see :class:`DownloadDetail`)."""
        with self._lock:
            dl = self._download
        if self.report is not None:
            return DownloadDetail([(0, self.report.size)] if self.report.size else [],
                                  dict(self.report.bytes_by_source), dict(self._names),
                                  Path(self.report.path), self.directory)
        if dl is None:
            return DownloadDetail([], {}, dict(self._names), None, self.directory)
        ranges = [] if self._nothing_kept(dl) else dl.done_ranges()  # the piece map: what is kept
        return DownloadDetail(ranges, dl.bytes_by_source(), dict(self._names), dl.path,
                              self.directory)

    def _nothing_kept(self, dl: download.Download | None) -> bool:
        """Whether a run that ended left no partial file: a plain stream removes what it had
        when it stops or fails (its server cannot resume, see :meth:`_kept`), so its bytes and
        piece map must not be shown as kept. A running download keeps what it wrote."""
        if self.running or self.report is not None or dl is None:
            return False
        return dl.path is None or not storage.part_path(dl.path).exists()

    # -- the download's thread --------------------------------------------------------
    def _new_thread(self, first: bool) -> threading.Thread:
        return threading.Thread(target=self._body, args=(first,), name=f"download-{self.number}",
                                daemon=True)

    def _stop(self, how: str) -> bool:
        with self._lock:
            if self._ended.is_set():
                return False
            self._stopped_as = how
            dl = self._download
        if self._limit is not None:
            self._limit.close()  # a download waiting on its rate limit stops at once
        if dl is not None:
            dl.cancel()
        return True

    def _emit(self, kind: str, text: str) -> None:
        for listener in [self._on_event, *self._app.listeners()]:
            try:
                listener(self, kind, text)
            except Exception:  # a front end's bug must not kill the download
                log.exception("reporting on download %d", self.number)

    def _progress(self, done: int, size: int | None) -> None:
        """The engine's progress callback: the first call marks where this run began."""
        with self._lock:
            if self._first_done is None:
                self._first_done, self._started = done, time.monotonic()

    def _body(self, first: bool) -> None:
        self._emit(STARTED if first else RESUMED, redact_url(self.url, strict=False))
        try:
            peers: list[Peer] = []
            if not self._no_peers:
                peers, warning = self._app.peers()
                if warning:
                    self._emit(NOTICE, warning)
                if not peers:
                    self._emit(NOTICE, alone_note(self._app.left_out()))
            self._names = peer_names(peers)
            overrides = self._overrides if first else {**self._overrides, "restart": False}
            limit = self._app.rate_limit(self.limit_rate)
            if limit is not None:
                overrides = {**overrides, "throttle": limit.take}
            with self._lock:
                self._limit = limit
            dl = download.Download(self.url, self._app.download_options(self.output, overrides),
                                   peers, notice=lambda text: self._emit(NOTICE, text),
                                   progress=self._progress)
            with self._lock:
                self._download = dl
                stopped = self._stopped_as
            if stopped:
                raise download.DownloadError("cancelled")
            self.report = dl.run()
        except download.DownloadError as exc:
            self.error, self.error_code = str(exc), exc.code
        except Exception as exc:  # a bug must not take the node down
            log.exception("download %d failed", self.number)
            self.error = f"internal error: {exc}"
        with self._lock:
            stopped = self._stopped_as
        try:
            if self.report is not None:
                self._emit(ENDED, summary(self.report, self._names, self._overrides.get("checksum")))
            elif stopped is not None:
                self._emit(stopped, self._kept())
            else:
                self._emit(ENDED, f"error: {self.error}")
        finally:
            self._ended.set()

    def _kept(self) -> str:
        """What a stop left on disk, truthfully, and what will take it up: ``resume N``
        while the prompt runs; once the node leaves, the same get after a restart."""
        final = self.path
        again = "the same get, after a restart," if self._leaving else f"resume {self.number}"
        if final is not None:
            part, record = storage.part_path(final), storage.record_path(final)
            if part.exists() and record.exists():
                return f"the partial download is kept in {part} ({again} goes on)"
            if part.exists():
                return f"{part} is kept, but without a resume record ({again} starts over)"
        with self._lock:
            dl = self._download
        if dl is not None and dl.done_bytes > 0:  # a plain stream: its partial file is removed
            return (f"what had arrived is removed: this server cannot resume a download "
                    f"(no byte ranges) ({again} starts over)")
        return f"nothing was written yet ({again} starts it)"

    def _start(self) -> None:
        self._thread.start()


class NodeApp:
    """``notice(text)``: the node's own notes (a discovery that went away); ``say(line)``:
    the lines about downloads started without an ``on_event`` of their own (over the
    RPC), :func:`event_line`'s. A front end may replace either while it runs."""

    def __init__(self, config: NodeConfig, *, notice: Callable[[str], None] | None = None,
                 say: Callable[[str], None] | None = None):
        from . import node_server
        from .membership import DiscoveryClient, Membership
        from .sessions import make_session
        self._config = config
        self.notice = notice or (lambda text: log.warning("%s", text))
        self.say = say or (lambda line: log.info("%s", line))
        self._serving_limit = RateLimit(config.limit_rate) if config.limit_rate else None
        #: what this node offers as LAN copies: its own downloads and those of every
        #: ``get`` run with the same state directory (``--no-share``: nothing)
        self.index = ContentIndex(identity.state_dir(), enabled=config.share)
        self.server = node_server.make_server(
            config.host, config.port, name=config.name or "node", secret=config.secret,
            slots=config.slots,
            session_factory=lambda: make_session(source_address=config.source_address,
                                                 allow_private=config.allow_private),
            index=self.index, timeout=config.timeout,
            throttle=self._serving_limit.take if self._serving_limit is not None else None)
        self.port = self.server.port
        host = config.advertise or advertised_host(config.host, config.discovery[0])
        self.name = config.name or format_hostport(socket.gethostname(), self.port)
        self.server.name = self.name
        self.server.service.name = self.name  # type: ignore[attr-defined]
        self._membership = Membership(
            DiscoveryClient(*config.discovery, name=self.name, secret=config.secret),
            host=host, port=self.port, name=self.name, slots=config.slots,
            interval=config.heartbeat, rediscover=config.rediscover,
            # a node whose address faced its old discovery faces the new one (rediscover)
            locate=None if config.advertise else (lambda toward: advertised_host(config.host, toward)))
        self._entries: list[DownloadEntry] = []
        self._listeners: list[Callable[[DownloadEntry, str, str], None]] = []
        self._lock = threading.Lock()
        self._mark: Path | None = None

    @property
    def key(self) -> str:
        """``HOST:PORT`` peers reach this node at."""
        return self._membership.me.key

    @property
    def directory(self) -> Path:
        return self._config.directory

    @property
    def limit_rate(self) -> int | None:
        """``--limit-rate`` in bytes/s (None: no limit)."""
        return self._config.limit_rate

    def start(self) -> "NodeApp":
        self.server.start()
        self._membership.start()
        # a get on this machine must not take this node for a helper (swift.local_nodes)
        self._mark = local_nodes.mark_running(self._membership.me.host, self.port)
        return self

    def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Cancel every download, unregister, close: all within ``deadline`` seconds.

        What has not finished by then (an unregister that discovery does not
        answer) is left to its daemon thread; discovery forgets the node when
        its lease runs out.
        """
        end = time.monotonic() + deadline
        local_nodes.clear_mark(self._mark)
        if self._serving_limit is not None:
            self._serving_limit.close()  # jobs waiting on the limit go on to see the stop
        running = [j for j in self.downloads() if j.running]
        for entry in running:
            entry.cancel(leaving=True)
        for entry in running:
            entry.wait(max(0.0, end - time.monotonic()))

        def close() -> None:
            self._membership.stop(unregister=True)
            self.server.stop(timeout=max(0.1, end - time.monotonic()))

        closed = threading.Event()

        def close_then_say() -> None:
            try:
                close()
            finally:
                closed.set()

        threading.Thread(target=close_then_say, name="node-stop", daemon=True).start()
        closed.wait(max(0.0, end - time.monotonic()))

    # -- peers -------------------------------------------------------------------------
    def peers(self, *, include_self: bool = False) -> tuple[list[Peer], str | None]:
        """The live nodes (fresh from discovery, else the last known, with a warning).

        Without ``include_self``: the helpers for a download started here, so
        neither this node nor another node of this machine (``swift.local_nodes``:
        they share this machine's link)."""
        peers, warning = self._membership.peers()
        if include_self:
            return peers, warning
        mine = local_nodes.this_machine(peers) | {self.key}
        return [p for p in peers if p.key not in mine], warning

    def left_out(self) -> list[str]:
        """The last known nodes that :meth:`peers` passes over as this machine's, by name."""
        known = [p for p in self._membership.known_peers() if p.key != self.key]
        mine = local_nodes.this_machine(known)
        return sorted(p.name or p.key for p in known if p.key in mine)

    # -- downloads ---------------------------------------------------------------------
    def download_options(self, output: Path | None, overrides: dict) -> download.Options:
        c = self._config
        base = dict(directory=c.directory, output=output, local_slots=c.slots,
                    peer_timeout=c.peer_timeout, source_address=c.source_address,
                    secret=c.secret, name=self.name, timeout=c.timeout,
                    share_index=self.index if c.share else None)
        return download.Options(**{**base, **c.download_options, **overrides})

    def rate_limit(self, own: int | None = None) -> "RateLimit | None":
        """A new bucket for one download started here: ``--limit-rate``, or the download's
        ``own`` limit (bytes/s) if lower; None when neither is set."""
        rates = [r for r in (self._config.limit_rate, own) if r]
        return RateLimit(min(rates)) if rates else None

    def start_download(self, url: str, output: Path | None = None, *, no_peers: bool = False,
                       on_event: Callable[[DownloadEntry, str, str], None] | None = None,
                       before_start: Callable[[DownloadEntry], None] | None = None,
                       **overrides) -> DownloadEntry:
        """Start downloading ``url`` on a new thread and return at once.

        ``on_event(entry, kind, text)`` is called from the download's thread with
        ``STARTED`` (the URL), then any ``NOTICE`` lines, then ``ENDED`` (the
        summary line, or ``error: ...``). Raises :class:`AlreadyDownloading`
        when the same URL is running (or paused) to the same place. ``overrides``
        are :class:`download.Options` fields (``directory`` included), and
        ``limit_rate``: bytes/s for this download alone.
        ``before_start(entry)`` runs on the caller's thread before the download's.
        """
        with self._lock:
            place = output if output is not None else overrides.get("directory", self.directory)
            for other in self._entries:
                if other.url == url and other.place == place and (other.running or other.paused):
                    raise AlreadyDownloading(other)
            entry = DownloadEntry(self, len(self._entries) + 1, url, output, overrides, no_peers, on_event)
            self._entries.append(entry)
        if before_start:
            before_start(entry)
        entry._start()
        return entry

    def download_event(self, entry: DownloadEntry, kind: str, text: str) -> None:
        """The line of a download's event for a download started without ``on_event``."""
        line = event_line(entry.number, kind, text)
        if line is not None:
            self.say(line)

    # -- listeners ---------------------------------------------------------------------
    def add_listener(self, listener: Callable[[DownloadEntry, str, str], None]) -> None:
        """Call ``listener(entry, kind, text)`` for every download's events (as ``on_event``
        of :meth:`start_download` is called), from the download's thread; a listener
        must return quickly and its exceptions are logged, never raised into the download."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[DownloadEntry, str, str], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def listeners(self) -> list[Callable[[DownloadEntry, str, str], None]]:
        with self._lock:
            return list(self._listeners)

    def downloads(self) -> list[DownloadEntry]:
        with self._lock:
            return list(self._entries)

    def download(self, number: int) -> DownloadEntry | None:
        with self._lock:
            return self._entries[number - 1] if 0 < number <= len(self._entries) else None

"""aria2's RPC methods over a swift node: the names, fields and values front ends expect.

The rules of the mapping (aria2's manual, "RPC interface", and what AriaNg,
browser extensions and ``aria2p`` read):

* A download's GID is its number on the node as 16 hex digits (``[3]`` at
  the prompt is ``0000000000000003``), so the prompt and a front end name the
  same download the same way. A GID that is not 16 hex digits, or names no
  download, fails with aria2's words (``GID ... is not found``).
* Statuses: a running download is ``active``, a paused one ``paused``, a
  finished one ``complete``, a failed one ``error``, a removed one (aria2's
  ``remove``; swift's ``cancel``) ``removed``. swift starts every download at
  once, so none is ever ``waiting``; ``tellWaiting`` lists the paused ones, as
  aria2's does.
* Numbers are decimal strings (``"1048576"``), booleans the strings ``"true"``
  and ``"false"``, as aria2 sends them. Speeds are measured here, over the
  last :data:`RATE_WINDOW` seconds (time is an argument: ``clock``), on the bytes
  the current run fetched: bytes a resume found on disk are never counted as fetched now.
* The piece map (``bitfield``, ``numPieces``, ``pieceLength``) is drawn from the
  byte ranges written so far: a piece's bit is set once all of it is on disk.
* Paths (``dir``, ``files[].path``) are absolute, as aria2 gives them, also when the
  node's ``-d`` is relative (its default, ``.``).
* Nothing shown holds a secret: URLs go through
  :func:`swift.http.url.redact_url`, and the values of the headers
  :func:`swift.http.profile.is_secret_header` names become ``<secret>``.
* What swift does not do (BitTorrent, Metalink, queue positions, a session
  file, shutting the node down over RPC) fails with a message saying so
  (:data:`UNSUPPORTED`), never silently.

:class:`Aria2` holds no socket and starts no thread: it calls the node's API
(``NodeApp``: ``start_download``, ``downloads``, ``download``, ``peers``) and the
download entries' ``status``/``detail``/``pause``/``resume``/``cancel``.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..checksums import parse_checksum
from ..errors import ErrorCode, SwiftError
from ..http.profile import RequestProfile, is_secret_header
from ..http.url import normalize_url, redact_url
from ..units import parse_rate
from .jsonrpc import INVALID_PARAMS, RpcError

__all__ = ["Aria2", "gid_of", "number_of", "bitfield", "aria2_status", "piece_length",
           "notification_for", "UNSUPPORTED"]

#: Seconds of samples a speed is measured over: long enough to smooth the
#: bursts of 256 KiB frames, short enough that a stalled download reads 0 soon.
RATE_WINDOW = 2.0
#: The piece map's unit: 256 KiB, a helper's data frame, so the map fills in as
#: blocks arrive (aria2's own default, 1 MiB, would show a piece only once four
#: frames of it landed; front ends take any length) ...
PIECE_LENGTH = 256 << 10
#: ... doubled until a file has at most this many pieces: a bitfield of 4096
#: pieces is 1 KiB of hex per status, and a page draws it as one row of pixels.
MAX_PIECES = 4096

#: aria2 methods swift answers with a reason instead of a result.
UNSUPPORTED = {
    "aria2.addTorrent": "swift downloads http and https URLs, not BitTorrent",
    "aria2.addMetalink": "swift does not read Metalink files; give the URL to aria2.addUri",
    "aria2.changePosition": "swift starts every download at once: there is no queue to reorder",
    "aria2.changeUri": "a download has one URL in swift; remove it and add the other URL",
    "aria2.changeGlobalOption": "swift's global options are its command-line options",
    "aria2.getServers": "swift reports its sources with aria2.getPeers",
    "aria2.saveSession": "swift keeps each download's resume record beside its file; there is no session file",
    "aria2.shutdown": "a node is stopped where it runs (Ctrl-C, SIGTERM), not over RPC",
    "aria2.forceShutdown": "a node is stopped where it runs (Ctrl-C, SIGTERM), not over RPC",
}

#: addUri options swift takes, and what it does with them.
OPTIONS = ("dir", "out", "header", "user-agent", "referer", "checksum", "max-download-limit",
           "allow-overwrite")
#: addUri options front ends send that tune what swift decides by itself (how many
#: connections, how big a split): accepted and left to swift.
TUNING = frozenset({"split", "max-connection-per-server", "min-split-size", "continue",
                    "auto-file-renaming", "piece-length", "max-tries", "retry-wait",
                    "timeout", "connect-timeout", "lowest-speed-limit", "file-allocation",
                    "always-resume", "remote-time", "max-resume-failure-tries"})

#: Seconds the pool's list of helpers is kept before discovery is asked again: a page
#: polls every second or two, and discovery's own heartbeat is 3 s (NodeConfig.heartbeat).
POOL_TTL = 3.0

_ACTIVE, _PAUSED, _COMPLETE, _ERROR, _REMOVED = "active", "paused", "complete", "error", "removed"

#: aria2's exit codes (its manual, "EXIT STATUS") for swift's error codes; the rest is 1.
_ERROR_CODES = {
    ErrorCode.CONNECT_TIMEOUT: "2", ErrorCode.READ_TIMEOUT: "2",
    ErrorCode.ACCESS_DENIED: "3", ErrorCode.DNS_FAILED: "19",
    ErrorCode.CONNECTION_REFUSED: "6", ErrorCode.CONNECTION_RESET: "6", ErrorCode.NETWORK: "6",
    ErrorCode.STORAGE: "16", ErrorCode.CHECKSUM_MISMATCH: "32", ErrorCode.RANGE_IGNORED: "8",
    ErrorCode.BAD_URL: "28", ErrorCode.UNSUPPORTED_SCHEME: "28",
}


# -- pure helpers --------------------------------------------------------------------------
def gid_of(number: int) -> str:
    """A download's GID: its number as 16 hex digits."""
    return f"{number:016x}"


def number_of(gid: Any) -> int:
    """The number a GID names; RpcError unless it is 16 hex digits (aria2's GID)."""
    if not isinstance(gid, str) or len(gid) != 16 or any(c not in "0123456789abcdefABCDEF" for c in gid):
        raise RpcError(f"Invalid GID {str(gid)[:40]!r}: a GID is 16 hex digits")
    return int(gid, 16)


def aria2_status(state: str, *, removed: bool = False) -> str:
    """swift's download state → aria2's ``status``."""
    if removed or state == "cancelled":
        return _REMOVED
    return {"done": _COMPLETE, "failed": _ERROR, "paused": _PAUSED}.get(state, _ACTIVE)


def notification_for(kind: str, succeeded: bool) -> str | None:
    """The aria2 notification for a download's event (``swift.nodeapp`` kinds), or None."""
    return {"started": "aria2.onDownloadStart", "resumed": "aria2.onDownloadStart",
            "paused": "aria2.onDownloadPause", "cancelled": "aria2.onDownloadStop",
            "ended": "aria2.onDownloadComplete" if succeeded else "aria2.onDownloadError"}.get(kind)


def piece_length(size: int) -> int:
    """:data:`PIECE_LENGTH`, doubled until ``size`` has at most :data:`MAX_PIECES` pieces."""
    length = PIECE_LENGTH
    while size > length * MAX_PIECES:
        length *= 2
    return length


def bitfield(ranges: list[tuple[int, int]], size: int, length: int) -> str:
    """aria2's ``bitfield``: hex, piece 0 in the high bit of the first byte; a bit is set
    when all of its piece lies in ``ranges`` (sorted, disjoint ``[start, end)``)."""
    if size <= 0:
        return ""
    pieces = -(-size // length)
    bits = bytearray(-(-pieces // 8))
    i = 0
    for start, end in ranges:
        first = -(-start // length)  # the first piece starting at or after ``start``
        i = max(i, first)
        while i < pieces and min((i + 1) * length, size) <= end:
            bits[i // 8] |= 0x80 >> (i % 8)
            i += 1
    return bits.hex()


def aria2_checksum(text: str) -> str:
    """aria2's ``sha-256=HEX`` → swift's ``sha256:HEX``; RpcError saying what is wrong."""
    algo, sep, digest = str(text).partition("=")
    swift_form = f"{algo.strip().lower().replace('-', '')}:{digest.strip()}"
    try:
        if not sep:
            raise ValueError("checksum is TYPE=DIGEST (sha-256=..., sha-1=..., md5=...)")
        parse_checksum(swift_form)
    except ValueError as exc:
        raise RpcError(f"bad checksum option: {exc}") from None
    return swift_form


class RateMeter:
    """Bytes/s of several counters over the last :data:`RATE_WINDOW` seconds (time is an argument)."""

    def __init__(self) -> None:
        self._samples: dict[Any, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def rate(self, key: Any, total: int, now: float) -> float:
        """Bytes/s of counter ``key`` now at ``total``. A counter that went back (a new run
        after a resume counts from 0 again) starts over: its old samples would make the
        bytes of the earlier run look fetched now, or hide this run's."""
        with self._lock:
            samples = self._samples.setdefault(key, deque())
            if samples and total < samples[-1][1]:
                samples.clear()
            samples.append((now, total))
            while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
                samples.popleft()
            (t0, b0), (t1, b1) = samples[0], samples[-1]
            return max(0.0, (b1 - b0) / (t1 - t0)) if t1 - t0 > 0 else 0.0


def _str(n: float | int | None) -> str:
    return str(int(n or 0))


def _absolute(path: Path | str) -> str:
    """A path as aria2 gives it in ``dir`` and ``files[].path``: absolute, from the node's
    working directory when it is relative (``-d`` left at ``.``); symbolic links are kept
    as they are (``os.path.abspath``, not ``realpath``). ``""`` stays ``""`` (no file yet)."""
    return os.path.abspath(path) if str(path) else ""


def _redacted_header(line: str) -> str:
    name, _, _value = line.partition(":")
    return f"{name}: <secret>" if is_secret_header(name) else line


# -- the methods ---------------------------------------------------------------------------
class Aria2:
    """aria2's methods (:meth:`methods`) over ``node`` (a ``NodeApp``).

    ``clock`` gives the seconds speeds are measured with. ``notify(method,
    params)`` is called for every download event that aria2 would notify
    (:func:`notification_for`), from the download's thread; :meth:`attach`
    hooks it to the node's listeners and :meth:`detach` unhooks it.
    """

    def __init__(self, node: Any, *, clock: Callable[[], float] = time.monotonic,
                 notify: Callable[[str, list], None] | None = None):
        self.node = node
        self._clock = clock
        self._notify = notify
        self._meter = RateMeter()
        self._removed: set[int] = set()    # removed while paused (no run to cancel)
        self._forgotten: set[int] = set()  # removeDownloadResult
        self._lock = threading.Lock()
        self._session = secrets.token_hex(20)
        self._pool: tuple[float, list, str | None] | None = None  # (when, peers, warning)

    # -- notifications -----------------------------------------------------------------
    def attach(self) -> None:
        self.node.add_listener(self._on_event)

    def detach(self) -> None:
        self.node.remove_listener(self._on_event)

    def _on_event(self, entry: Any, kind: str, text: str) -> None:
        method = notification_for(kind, entry.report is not None)
        if method is not None and self._notify is not None:
            self._notify(method, [{"gid": gid_of(entry.number)}])

    # -- the table ---------------------------------------------------------------------
    def methods(self) -> dict[str, Callable[[list], Any]]:
        m = {
            "addUri": self.add_uri, "tellStatus": self.tell_status, "tellActive": self.tell_active,
            "tellWaiting": self.tell_waiting, "tellStopped": self.tell_stopped,
            "pause": self.pause, "forcePause": self.pause, "pauseAll": self.pause_all,
            "forcePauseAll": self.pause_all, "unpause": self.unpause, "unpauseAll": self.unpause_all,
            "remove": self.remove, "forceRemove": self.remove,
            "removeDownloadResult": self.remove_download_result,
            "purgeDownloadResult": self.purge_download_result,
            "getGlobalStat": self.get_global_stat, "getVersion": self.get_version,
            "getSessionInfo": self.get_session_info, "getOption": self.get_option,
            "changeOption": self.change_option, "getGlobalOption": self.get_global_option,
            "getFiles": self.get_files, "getUris": self.get_uris, "getPeers": self.get_peers,
        }
        table: dict[str, Callable[[list], Any]] = {f"aria2.{k}": v for k, v in m.items()}
        table["swift.getPool"] = self.get_pool
        return table

    # -- finding downloads -------------------------------------------------------------
    def _entry(self, gid: Any) -> Any:
        number = number_of(gid)
        entry = self.node.download(number)
        with self._lock:
            forgotten = number in self._forgotten
        if entry is None or forgotten:
            raise RpcError(f"GID {gid} is not found")
        return entry

    def _status_name(self, entry: Any, state: str | None = None) -> str:
        with self._lock:
            removed = entry.number in self._removed
        return aria2_status(state or entry.status().state, removed=removed)

    def _listed(self) -> list[tuple[Any, str]]:
        with self._lock:
            forgotten = set(self._forgotten)
        return [(entry, self._status_name(entry)) for entry in self.node.downloads()
                if entry.number not in forgotten]

    # -- adding ------------------------------------------------------------------------
    def add_uri(self, params: list) -> str:
        """``aria2.addUri(uris[, options[, position]])`` → the new download's GID."""
        if not params or not isinstance(params[0], list) or not params[0] \
                or not all(isinstance(u, str) for u in params[0]):
            raise RpcError("aria2.addUri takes a non-empty array of URIs first", INVALID_PARAMS)
        uris = list(dict.fromkeys(params[0]))
        if len(uris) > 1:
            raise RpcError("swift takes one URI per download (it splits the file among the "
                           "machines itself); add each file with its own aria2.addUri")
        options = params[1] if len(params) > 1 else {}
        if not isinstance(options, dict):
            raise RpcError("aria2.addUri's options must be an object", INVALID_PARAMS)
        try:
            url = normalize_url(uris[0])
        except SwiftError as exc:
            raise RpcError(str(exc)) from None
        output, overrides = self._options(options)
        from ..nodeapp import AlreadyDownloading  # the node app loads only with a node
        try:
            entry = self.node.start_download(url, output, **overrides)
        except AlreadyDownloading as exc:
            raise RpcError(f"{redact_url(url, strict=False)}: {exc} (GID {gid_of(exc.entry.number)})") \
                from None
        return gid_of(entry.number)

    def _options(self, options: dict) -> tuple[Path | None, dict]:
        """addUri's options → (output path, ``start_download`` keyword arguments)."""
        for key, value in options.items():
            if key not in OPTIONS and key not in TUNING:
                raise RpcError(f"swift does not support the option {str(key)[:60]!r} "
                               f"(it takes {', '.join(OPTIONS)})")
        overrides: dict = {}
        directory = self.node.directory
        if "dir" in options:
            given = Path(str(options["dir"])).expanduser()
            directory = given if given.is_absolute() else self.node.directory / given
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RpcError(f"cannot create the directory {directory}: {exc.strerror or exc}") \
                    from None
            overrides["directory"] = directory
        output = None
        if "out" in options:
            out = str(options["out"])
            if not out or "/" in out or "\\" in out or out in (".", "..") or "\0" in out:
                raise RpcError(f"out must be a file name, not a path: {out[:100]!r}")
            output = directory / out
        headers = options.get("header", [])
        headers = [headers] if isinstance(headers, str) else headers
        if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
            raise RpcError("header must be a string or an array of \"Name: value\" strings")
        if headers or "user-agent" in options or "referer" in options:
            try:
                overrides["profile"] = RequestProfile.build(
                    headers=headers, user_agent=options.get("user-agent"),
                    referer=options.get("referer"))
            except SwiftError as exc:
                raise RpcError(str(exc)) from None
        if options.get("checksum"):
            overrides["checksum"] = aria2_checksum(options["checksum"])
        limit = str(options.get("max-download-limit", "0")).strip()
        if limit not in ("", "0"):
            try:
                overrides["limit_rate"] = parse_rate(limit)
            except ValueError as exc:
                raise RpcError(f"bad max-download-limit: {exc}") from None
        if str(options.get("allow-overwrite", "false")).lower() == "true":
            overrides["force"] = True
        return output, overrides

    # -- status ------------------------------------------------------------------------
    def status(self, entry: Any, keys: list | None = None) -> dict:
        """aria2's status struct of one download (only ``keys`` if given)."""
        st = entry.status()
        detail = entry.detail()
        size = st.size or 0
        now = self._clock()
        state = self._status_name(entry, st.state)
        # this run's bytes: a resumed download's earlier bytes are not fetched now
        rate = self._meter.rate(entry.number, st.fetched, now) if state == _ACTIVE else 0.0
        length = piece_length(size)
        connections = sum(1 for n in detail.by_source.values() if n) if state == _ACTIVE else 0
        out = {
            "gid": gid_of(entry.number), "status": state,
            "totalLength": _str(size), "completedLength": _str(st.done),
            "uploadLength": "0", "downloadSpeed": _str(rate), "uploadSpeed": "0",
            "pieceLength": _str(length), "numPieces": _str(-(-size // length) if size else 0),
            "bitfield": bitfield(detail.ranges, size, length),
            "connections": _str(connections), "dir": _absolute(detail.directory),
            "files": self._files(entry, st, detail),
            "errorCode": "0", "errorMessage": "",
        }
        if state == _ERROR:
            out["errorCode"] = _ERROR_CODES.get(getattr(entry, "error_code", None), "1")
            out["errorMessage"] = st.error or "failed"
        if keys:
            wanted = {k for k in keys if isinstance(k, str)}
            out = {k: v for k, v in out.items() if k in wanted}
        return out

    def _files(self, entry: Any, st: Any, detail: Any) -> list[dict]:
        path = detail.path or entry.output or ""
        return [{"index": "1", "path": _absolute(path), "length": _str(st.size),
                 "completedLength": _str(st.done), "selected": "true",
                 "uris": [{"uri": redact_url(entry.url, strict=False), "status": "used"}]}]

    @staticmethod
    def _keys(params: list, at: int) -> list | None:
        if len(params) > at:
            if not isinstance(params[at], list):
                raise RpcError("keys must be an array of field names", INVALID_PARAMS)
            return params[at]
        return None

    def tell_status(self, params: list) -> dict:
        if not params:
            raise RpcError("aria2.tellStatus takes a GID", INVALID_PARAMS)
        return self.status(self._entry(params[0]), self._keys(params, 1))

    def tell_active(self, params: list) -> list[dict]:
        keys = self._keys(params, 0)
        return [self.status(entry, keys) for entry, state in self._listed() if state == _ACTIVE]

    def _page(self, params: list, states: tuple[str, ...], name: str) -> list[dict]:
        if len(params) < 2 or not all(isinstance(p, int) and not isinstance(p, bool)
                                      for p in params[:2]) or params[1] < 0:
            raise RpcError(f"aria2.{name} takes an offset and a count (integers)", INVALID_PARAMS)
        offset, num = params[0], params[1]
        keys = self._keys(params, 2)
        entries = [entry for entry, state in self._listed() if state in states]
        if offset < 0:  # aria2: from the end, in reverse order
            entries.reverse()
            offset = -offset - 1
        return [self.status(entry, keys) for entry in entries[offset:offset + num]]

    def tell_waiting(self, params: list) -> list[dict]:
        return self._page(params, (_PAUSED,), "tellWaiting")

    def tell_stopped(self, params: list) -> list[dict]:
        return self._page(params, (_COMPLETE, _ERROR, _REMOVED), "tellStopped")

    # -- control -----------------------------------------------------------------------
    def _gid_param(self, params: list, name: str) -> Any:
        if not params:
            raise RpcError(f"aria2.{name} takes a GID", INVALID_PARAMS)
        return self._entry(params[0])

    def pause(self, params: list) -> str:
        entry = self._gid_param(params, "pause")
        if self._status_name(entry) != _ACTIVE or not entry.pause():
            raise RpcError(f"GID {gid_of(entry.number)} cannot be paused now")
        return gid_of(entry.number)

    def pause_all(self, params: list) -> str:
        for entry, state in self._listed():
            if state == _ACTIVE:
                entry.pause()
        return "OK"

    def unpause(self, params: list) -> str:
        entry = self._gid_param(params, "unpause")
        if self._status_name(entry) != _PAUSED or not entry.resume():
            raise RpcError(f"GID {gid_of(entry.number)} cannot be unpaused now")
        return gid_of(entry.number)

    def unpause_all(self, params: list) -> str:
        for entry, state in self._listed():
            if state == _PAUSED:
                entry.resume()
        return "OK"

    def remove(self, params: list) -> str:
        """Stop a download for good (swift's cancel: its partial file stays for a later get)."""
        entry = self._gid_param(params, "remove")
        state = self._status_name(entry)
        if state in (_COMPLETE, _ERROR, _REMOVED):
            raise RpcError(f"GID {gid_of(entry.number)} cannot be removed now: it is {state}")
        if state == _PAUSED or not entry.cancel():
            with self._lock:
                self._removed.add(entry.number)
        return gid_of(entry.number)

    def remove_download_result(self, params: list) -> str:
        entry = self._gid_param(params, "removeDownloadResult")
        if self._status_name(entry) not in (_COMPLETE, _ERROR, _REMOVED) or entry.running:
            raise RpcError(f"Could not remove download result of GID#{gid_of(entry.number)}: "
                           f"it has not stopped")
        with self._lock:
            self._forgotten.add(entry.number)
        return "OK"

    def purge_download_result(self, params: list) -> str:
        for entry, state in self._listed():
            if state in (_COMPLETE, _ERROR, _REMOVED) and not entry.running:
                with self._lock:
                    self._forgotten.add(entry.number)
        return "OK"

    # -- about the node ----------------------------------------------------------------
    def get_global_stat(self, params: list) -> dict:
        listed = self._listed()
        now = self._clock()
        speed = 0.0
        for entry, state in listed:
            if state == _ACTIVE:
                speed += self._meter.rate(entry.number, entry.status().fetched, now)
        count = {s: sum(1 for _, state in listed if state == s) for s in
                 (_ACTIVE, _PAUSED, _COMPLETE, _ERROR, _REMOVED)}
        stopped = count[_COMPLETE] + count[_ERROR] + count[_REMOVED]
        return {"downloadSpeed": _str(speed), "uploadSpeed": "0", "numActive": _str(count[_ACTIVE]),
                "numWaiting": _str(count[_PAUSED]), "numStopped": _str(stopped),
                "numStoppedTotal": _str(stopped)}

    def get_version(self, params: list) -> dict:
        return {"version": __version__, "enabledFeatures": ["HTTPS", "Message Digest"],
                "swift": __version__}

    def get_session_info(self, params: list) -> dict:
        return {"sessionId": self._session}

    def get_option(self, params: list) -> dict:
        entry = self._gid_param(params, "getOption")
        out = {"dir": _absolute(entry.directory)}
        if entry.output is not None:
            out["out"] = Path(entry.output).name
        if getattr(entry, "limit_rate", None):
            out["max-download-limit"] = _str(entry.limit_rate)
        profile = getattr(entry, "profile", None)
        if profile is not None and profile.headers:
            out["header"] = [_redacted_header(f"{n}: {v}") for n, v in profile.headers]
        return out

    def change_option(self, params: list) -> str:
        entry = self._gid_param(params, "changeOption")
        options = params[1] if len(params) > 1 else {}
        if not isinstance(options, dict):
            raise RpcError("aria2.changeOption takes a GID and an object of options", INVALID_PARAMS)
        if options:
            raise RpcError(f"swift cannot change the options of GID {gid_of(entry.number)} "
                           f"({', '.join(sorted(map(str, options)))[:100]}): remove it and add it "
                           f"again with them (it resumes from what it has)")
        return "OK"

    def get_global_option(self, params: list) -> dict:
        limit = getattr(self.node, "limit_rate", None)
        return {"dir": _absolute(self.node.directory), "max-overall-download-limit": _str(limit),
                "max-download-limit": "0", "max-concurrent-downloads": "0"}

    def get_files(self, params: list) -> list[dict]:
        entry = self._gid_param(params, "getFiles")
        return self._files(entry, entry.status(), entry.detail())

    def get_uris(self, params: list) -> list[dict]:
        entry = self._gid_param(params, "getUris")
        return [{"uri": redact_url(entry.url, strict=False), "status": "used"}]

    def get_peers(self, params: list) -> list[dict]:
        """The sources of a download: this machine (``local``) and each helper, with the bytes
        each delivered (``completedLength``, a swift field) and its speed."""
        entry = self._gid_param(params, "getPeers")
        detail = entry.detail()
        now = self._clock()
        active = self._status_name(entry) == _ACTIVE
        out = []
        for key, n in sorted(detail.by_source.items(), key=lambda kv: (-kv[1], kv[0])):
            host, _, port = key.rpartition(":") if key != "local" else ("", "", "")
            rate = self._meter.rate((entry.number, key), n, now) if active else 0.0
            out.append({"peerId": key, "ip": host.strip("[]"), "port": port,
                        "name": detail.names.get(key) or (self.node.name if key == "local" else key),
                        "local": "true" if key == "local" else "false",
                        "bitfield": "", "amChoking": "false", "peerChoking": "false",
                        "downloadSpeed": _str(rate), "uploadSpeed": "0", "seeder": "true",
                        "completedLength": _str(n)})
        return out

    def get_pool(self, params: list) -> dict:
        """swift's own: this node and the live helpers discovery knows (the page's pool)."""
        now = self._clock()
        with self._lock:
            cached = self._pool
        if cached is None or now - cached[0] >= POOL_TTL:
            cached = (now, *self.node.peers())
            with self._lock:
                self._pool = cached
        _, peers, warning = cached
        return {"name": self.node.name, "key": self.node.key,
                "peers": [{"name": p.name or p.key, "key": p.key, "slots": _str(p.slots)}
                          for p in peers],
                "warning": warning or ""}

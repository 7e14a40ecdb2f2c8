"""What the user asked of one download, and the engine's reasoned tunables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..http import DEFAULT_TIMEOUT, RequestProfile, Retry
from ..mirrors import PER_MIRROR
from ..piecehash import PieceHashes

#: The source name of this machine's own workers (peers are named ``host:port``).
LOCAL = "local"
#: Largest read from the origin by a local worker (its blocks go straight to the
#: file, never into a data frame, so they need not fit one as a helper's do,
#: :data:`swift.http.body.CHUNK_SIZE`). Each block costs about 30 us of Python
#: (read, claim, write, commit, under the board's lock) besides its copies: on
#: an uncapped loopback link a 1 GiB ``get --no-peers`` took 1.03 CPU s with
#: 256 KiB reads, 0.88 with 1 MiB, 1.19 with 4 MiB (a block no longer fits
#: the CPU's cache; medians of 5, bench/uncapped.py's set-up). Four workers
#: hold at most 4 MiB of blocks. Under ``--limit-rate`` reads stay at the
#: helpers' size, so that the rate is kept in small steps.
LOCAL_CHUNK = 1 << 20
#: Files smaller than this are fetched with one request: splitting them would
#: cost more round trips than it saves.
SMALL_FILE = 1 << 20
#: Smallest piece an idle worker may split off a running one while speeds are
#: unknown: a new range request costs a round trip to the origin, so tiny
#: splits do not pay. Once speeds are measured the scheduler judges a split in
#: time instead (planning.split_point), down to 64 KiB.
MIN_SPLIT = 256 << 10
#: Seconds between flushing data and rewriting the resume record: a crash
#: costs at most this much transfer time again.
RECORD_INTERVAL = 1.0
#: Seconds between two starts of the disk's writeback of ``NAME.part`` between
#: records (the supervisor looks every 0.25 s, so: at each look). The kernel
#: starts writing dirty data only when gigabytes are dirty or 30 s have
#: passed, so without it the flush before the first record, and the one
#: before the rename, wrote everything received so far while the download
#: waited. On this machine's disk (about 370 MB/s) writing 1 GiB at full
#: speed and then flushing took 2.5-3.2 s; starting the writeback every
#: 0.25 s, 1.9-2.6 s.
WRITEBACK_INTERVAL = 0.25
#: Seconds without a sign of life from an assignment, while others progress, before an
#: idle worker races its unreceived remainder: twice the longest silence of a
#: healthy node (it sends a keep-alive when 0.5 s passed without a frame and
#: looks every 0.25 s, node_server.KEEPALIVE_INTERVAL), so a peer that is
#: frozen or cut off is raced 1.5 s after it went quiet instead of a whole
#: peer timeout later. A race of an assignment that was only slow costs one request
#: and the bytes in flight: the first side to deliver keeps the range.
RACE_AFTER = 1.5
#: Most peer workers one download runs, however many peers there are (each peer
#: then gets ``max(1, 128 // peers)`` of its slots). Each worker holds at most
#: one data frame (256 KiB as nodes send them) and a thread: 128 of them stay
#: well inside the requester's 100 MiB, and 64 peers are already more than one
#: LAN link needs.
MAX_PEER_WORKERS = 128
#: A peer that cannot be reached this many times in a row is left out.
MAX_CONNECT_FAILURES = 2
#: Most local workers over mirrors: ``per_mirror`` per usable mirror, up to
#: this. One machine's link is full long before (aria2 caps ``-x`` at 16 for
#: the same reason), and each worker is a thread and a connection.
MAX_MIRROR_WORKERS = 16


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
    race_after: float | None = RACE_AFTER
    retry: Retry = field(default_factory=Retry)
    #: extra headers, cookies, TLS trust for every request of the download (and,
    #: over private connections only, its secrets for the helpers)
    profile: RequestProfile | None = None
    #: (connect, read) seconds for every request to the origin (probe, ranges, plain stream).
    timeout: Any = DEFAULT_TIMEOUT
    #: Called with each block's size before it is written, from the thread that
    #: received it; may wait (``--limit-rate``: the whole download's rate).
    throttle: Callable[[int], None] | None = None
    #: Other URLs of the same file (``--mirror``, a Metalink's), best first, as
    #: ``(url, priority)``; the request options (headers, cookies, credentials)
    #: go to the first URL only, never to a mirror.
    mirrors: tuple[tuple[str, int], ...] = ()
    #: Use the mirrors and the digest the origin's answer names (RFC 6249
    #: ``Link: rel=duplicate``, ``Repr-Digest``/``Digest``); ``--no-mirrors`` turns it off.
    header_mirrors: bool = True
    #: Connections per mirror on this machine (aria2's ``--max-connection-per-server``).
    per_mirror: int = PER_MIRROR
    #: The file's length as a Metalink gives it: every URL must say the same.
    expected_size: int | None = None
    #: Piece hashes (a Metalink's ``<pieces>``): each piece is checked as it completes.
    pieces: PieceHashes | None = None
    #: The name a Metalink gives the file (a safe base name), instead of the probed one.
    file_name: str | None = None
    #: An answer labelled as a Metalink document ends the download with
    #: :class:`~swift.engine.report.MetalinkAnswer` (nothing saved): aria2's ``--follow-metalink``.
    follow_metalink: bool = False
    #: use LAN copies other members hold, and offer this download's bytes to them
    #: (``--no-share``: False; see docs/sharing.md)
    share: bool = True
    #: where this machine records what it offers (``swift.content_index.ContentIndex``);
    #: None: this download is offered to nobody
    share_index: Any = None
    #: the share of LAN pieces also fetched from the origin to compare (None: the
    #: default, ``engine.lan_copy.SPOT_FRACTION``; the hidden ``--spot-check``)
    spot_fraction: float | None = None

    @property
    def overwrite(self) -> bool:
        """May the finished file replace an existing one? (``--force``, or an explicit ``-o``.)"""
        return self.force or self.output is not None

"""What the user asked of one download, and the engine's reasoned tunables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import httpclient

#: The source name of this machine's own workers (peers are named ``host:port``).
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
    #: (connect, read) seconds for every request to the origin (probe, ranges, plain stream).
    timeout: Any = httpclient.DEFAULT_TIMEOUT
    #: Called with each block's size before it is written, from the thread that
    #: received it; may wait (``--limit-rate``: the whole download's rate).
    throttle: Callable[[int], None] | None = None

    @property
    def overwrite(self) -> bool:
        """May the finished file replace an existing one? (``--force``, or an explicit ``-o``.)"""
        return self.force or self.output is not None

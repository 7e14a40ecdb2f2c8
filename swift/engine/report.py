"""How a download ends: a :class:`Report`, or a one-line :class:`DownloadError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ErrorCode, SwiftError
from ..http.url import redact_url


class DownloadError(SwiftError):
    """The download failed; the message is one line for the user.

    ``code`` says why, for callers that branch on it: the cause's code when
    the engine passes one on (``STORAGE``, ``FILE_CHANGED``, an origin's
    or the network's), ``CANCELLED`` for a stop request, ``CHECKSUM_MISMATCH``.

    ``kept``, when given, is the clause that says what of the download stays
    on disk and how to go on ("the partial download is kept for resume");
    the line is ``reason; kept``. A front end that removes the data anyway
    (``-o -``) replaces that clause, never by searching the text.
    """

    default_code = ErrorCode.NETWORK

    def __init__(self, message: str, code: ErrorCode | None = None, *, kept: str | None = None):
        super().__init__(f"{message}; {kept}" if kept else message, code)
        self.reason = message
        self.kept = kept

    @classmethod
    def of(cls, error: BaseException) -> "DownloadError":
        """The same line and code as a SwiftError ``error`` (NETWORK for anything else)."""
        return cls(str(error), getattr(error, "code", None))


class ChecksumMismatch(DownloadError):
    """The finished file does not match the checksum the user gave; it stays at NAME.part."""

    default_code = ErrorCode.CHECKSUM_MISMATCH


class MetalinkAnswer(DownloadError):
    """The URL answered with a Metalink document (``Options.follow_metalink``): nothing was
    saved; the caller downloads the files it lists instead (``url``: the document's)."""

    default_code = ErrorCode.BAD_METALINK

    def __init__(self, url: str):
        super().__init__("the URL is a Metalink document")
        self.url = url


def cancelled(detail: str = "", *, kept: str | None = None) -> DownloadError:
    """The error a stop request ends a download with; ``detail`` says where it
    stopped, ``kept`` what is kept (see :class:`DownloadError`)."""
    return DownloadError(f"cancelled{'; ' + detail if detail else ''}", ErrorCode.CANCELLED,
                         kept=kept)


@dataclass
class Report:
    """The end-of-download record; ``bytes_by_source`` keys are ``local`` or ``host:port``."""

    url: str
    path: str
    size: int
    seconds: float
    mode: str  # "parallel" or "single"
    bytes_by_source: dict[str, int]
    resumed_bytes: int = 0
    dropped_bytes: int = 0
    notices: list[str] = field(default_factory=list)
    #: helpers left out of this download, and why (``host:port`` → reason)
    left_out: dict[str, str] = field(default_factory=dict)
    #: the mirrors of the file: url, used, bytes, rate (bytes/s per connection), left_out, bad_pieces
    mirrors: list[dict] = field(default_factory=list)
    #: pieces that failed their hash and were fetched again
    bad_pieces: int = 0

    #: pieces from LAN copies that this machine also fetched from the origin to compare
    spot_checks: int = 0
    #: seconds from the download's start (before its probe) to the first byte a LAN copy
    #: wrote, that is its first whole piece checked against its SHA-256; None: no LAN byte
    first_lan_byte_s: float | None = None

    #: ``bytes_by_source`` keys of LAN copies start with this (``engine.sharing.LAN_PREFIX``)
    LAN_PREFIX = "copy@"

    @property
    def lan_bytes(self) -> dict[str, int]:
        """Bytes from LAN copies, by member (``HOST:PORT``)."""
        return {src[len(self.LAN_PREFIX):]: n for src, n in self.bytes_by_source.items()
                if src.startswith(self.LAN_PREFIX) and n > 0}

    @property
    def internet_bytes(self) -> int:
        """Bytes fetched from the origin this run (by this machine or its helpers)."""
        return sum(n for src, n in self.bytes_by_source.items()
                   if not src.startswith(self.LAN_PREFIX))

    @property
    def rate(self) -> float:
        """Bytes per second fetched by this run (resumed bytes not counted)."""
        return (self.size - self.resumed_bytes) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["url"] = redact_url(self.url, strict=False)  # never a password in a report
        d["rate"] = self.rate
        d["lan_bytes"] = self.lan_bytes
        d["internet_bytes"] = self.internet_bytes
        return d

"""swift's one error hierarchy: every failure worth telling a user carries a code.

Rules
-----
* A caller branches on the **type** and the :class:`ErrorCode`, never on the
  message text. The message is for the user only: one line in plain words,
  naming what failed and, where there is one, what to do next. No library
  text (``HTTPSConnectionPool(...)``, ``Max retries exceeded``) and no secret
  (a password in a URL, a cookie) is ever put into a message.
* The subclass says *who broke what* (the idea of h11's ``LocalProtocolError``
  vs ``RemoteProtocolError``, and of aria2's ``error_code``):

  ============================  ==================================================
  :class:`UsageError`           the user's input (a malformed URL, a bad option)
  :class:`NetworkError`         the path to a server (DNS, refused, reset, TLS)
  :class:`OriginError`          the origin's answer (a status, a broken range)
  :class:`FileChanged`          the origin serves another file now (an OriginError)
  :class:`PeerError`            a helper on the LAN
  :class:`LinkError`            the link to another swift process; one of:
  :class:`ConnectionClosed`     the other side closed or reset it (or we did)
  :class:`AuthError`            the other side is not a member of the pool
  :class:`DiscoveryError`       discovery could not be reached or refused us
  :class:`LocalProtocolError`   our own side broke the peer protocol (a bug here)
  :class:`RemoteProtocolError`  the other side broke the peer protocol
  :class:`StorageError`         the local disk or file system
  :class:`Cancelled`            the user or the download stopped the work
  ============================  ==================================================

* Whether an error is worth retrying is decided in one place,
  :class:`swift.http.retry.Retry`, from the code (see :data:`TRANSIENT`).

Pure: no I/O.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorCode", "TRANSIENT", "SwiftError", "UsageError", "NetworkError", "OriginError",
           "FileChanged", "PeerError", "LinkError", "ConnectionClosed", "AuthError",
           "DiscoveryError", "LocalProtocolError", "RemoteProtocolError", "StorageError",
           "Cancelled"]


class ErrorCode(enum.Enum):
    """What went wrong, as a value a caller can branch on."""

    # the user's input
    BAD_URL = "bad-url"
    UNSUPPORTED_SCHEME = "unsupported-scheme"
    BAD_OPTION = "bad-option"
    BAD_METALINK = "bad-metalink"          # a Metalink document we refuse (malformed, hostile)
    # the path to a server
    DNS_FAILED = "dns-failed"
    CONNECTION_REFUSED = "connection-refused"
    CONNECT_TIMEOUT = "connect-timeout"
    READ_TIMEOUT = "read-timeout"
    CONNECTION_RESET = "connection-reset"
    NETWORK = "network"
    PROXY_FAILED = "proxy-failed"
    TLS_UNTRUSTED = "tls-untrusted"
    TLS_FAILED = "tls-failed"
    ADDRESS_BLOCKED = "address-blocked"
    TOO_MANY_REDIRECTS = "too-many-redirects"
    # the origin's answer
    SERVER_BUSY = "server-busy"            # 408, 429, 5xx: may pass
    ACCESS_DENIED = "access-denied"        # 401, 403, 404, 410 (for a URL that may expire)
    HTTP_STATUS = "http-status"            # any other status we cannot use
    RANGE_IGNORED = "range-ignored"        # 200 (the whole file) to a range request
    RANGE_MISMATCH = "range-mismatch"      # wrong Content-Range or Content-Length
    LENGTHS_DISAGREE = "lengths-disagree"  # a 206's Content-Length is not its Content-Range's span
    ENCODING_CHANGED = "encoding-changed"  # another content coding than at first
    SHORT_BODY = "short-body"              # the answer ended early
    RANGES_UNUSABLE = "ranges-unusable"    # ranges keep failing: use one plain stream
    FILE_CHANGED = "file-changed"
    # helpers, protocol, disk, control
    PEER_FAILED = "peer-failed"
    CONNECTION_CLOSED = "connection-closed"  # a link to a peer or discovery
    AUTH_FAILED = "auth-failed"              # the other side is not a member (or we are not)
    DISCOVERY_FAILED = "discovery-failed"
    LOCAL_PROTOCOL = "local-protocol"
    REMOTE_PROTOCOL = "remote-protocol"
    STORAGE = "storage"
    CHECKSUM_MISMATCH = "checksum-mismatch"
    CANCELLED = "cancelled"


#: Codes that describe trouble that may pass by itself: worth another try
#: (with backoff) on a new connection. A refused connection, a name that does
#: not resolve, an untrusted certificate or a policy refusal will not mend in
#: seconds, so they fail at once.
TRANSIENT = frozenset({
    ErrorCode.CONNECT_TIMEOUT, ErrorCode.READ_TIMEOUT, ErrorCode.CONNECTION_RESET,
    ErrorCode.NETWORK, ErrorCode.SERVER_BUSY, ErrorCode.RANGE_IGNORED, ErrorCode.SHORT_BODY,
    ErrorCode.RANGE_MISMATCH, ErrorCode.ENCODING_CHANGED, ErrorCode.PROXY_FAILED,
    ErrorCode.LENGTHS_DISAGREE,
})


class SwiftError(Exception):
    """Base of every error swift reports; ``str(error)`` is one line for the user."""

    #: the code used when a subclass is raised without one
    default_code = ErrorCode.NETWORK

    def __init__(self, message: str, code: ErrorCode | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT

    def __reduce__(self):  # picklable whatever a subclass's constructor takes
        return (_rebuild, (type(self), self.message, self.code, dict(self.__dict__)))


def _rebuild(cls, message, code, state):
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class UsageError(SwiftError):
    """The user's input cannot be used (a malformed URL, a bad option value)."""

    default_code = ErrorCode.BAD_OPTION


class NetworkError(SwiftError):
    """A server could not be reached, or the connection to it broke."""

    default_code = ErrorCode.NETWORK


class OriginError(SwiftError):
    """The origin answered, but not with what we asked for.

    ``status`` is the HTTP status (None when the fault is not a status),
    ``retry_after`` the server's advice in seconds (``Retry-After``), if any.
    """

    default_code = ErrorCode.HTTP_STATUS

    def __init__(self, message: str, code: ErrorCode | None = None, *,
                 status: int | None = None, retry_after: float | None = None):
        super().__init__(message, code)
        self.status = status
        self.retry_after = retry_after


class FileChanged(OriginError):
    """The file on the server is no longer the one the download started with.

    Raised only on unambiguous evidence (another total size, or validators
    that differ and a re-check confirms): no retry can mend it, and nothing
    received after the change may be written.
    """

    default_code = ErrorCode.FILE_CHANGED

    def __init__(self, detail: str = "", code: ErrorCode | None = None, **kwargs):
        message = "the file changed on the server"
        super().__init__(f"{message} ({detail})" if detail else message, code, **kwargs)


class PeerError(SwiftError):
    """A helper on the LAN failed, lied, or could not do the job."""

    default_code = ErrorCode.PEER_FAILED


class LinkError(SwiftError):
    """The link to another swift process (a peer, discovery) failed.

    The base a caller catches to mean "that connection is of no more use";
    the subclass says how. Never a fault of the origin or of the disk.
    """

    default_code = ErrorCode.CONNECTION_CLOSED


class ConnectionClosed(LinkError):
    """The other side closed the connection (or reset it), or it was closed here."""

    default_code = ErrorCode.CONNECTION_CLOSED


class AuthError(LinkError):
    """The other side is not a member (or not who it claims to be)."""

    default_code = ErrorCode.AUTH_FAILED


class DiscoveryError(LinkError):
    """Discovery could not be reached or refused the request."""

    default_code = ErrorCode.DISCOVERY_FAILED


class LocalProtocolError(SwiftError):
    """Our own side broke the peer protocol: a bug here, never the peer's fault."""

    default_code = ErrorCode.LOCAL_PROTOCOL


class RemoteProtocolError(SwiftError):
    """The other side sent something the peer protocol does not allow."""

    default_code = ErrorCode.REMOTE_PROTOCOL


class StorageError(SwiftError):
    """The local disk or file system failed (full, read-only, not ours).

    The message names the path and the cause; ``path`` is the file or
    directory concerned, ``errno`` the operating system's error number when
    there was one (``swift.storage`` builds them from an ``OSError``).
    """

    default_code = ErrorCode.STORAGE

    def __init__(self, message: str, code: ErrorCode | None = None, *, path=None,
                 errno: int | None = None):
        super().__init__(message, code)
        self.path = path
        self.errno = errno


class Cancelled(SwiftError):
    """The work was stopped on purpose (Ctrl-C, the download ended, a shrink)."""

    default_code = ErrorCode.CANCELLED

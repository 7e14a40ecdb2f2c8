"""swift's wire protocol, as pure functions: bytes in, messages out.

Every frame is a 6-byte header and a payload::

    +---------+------+-----------------+----------------------+
    | version | kind | length (u32 BE) | payload (length)     |
    +---------+------+-----------------+----------------------+

``kind`` 1 is a control frame: a UTF-8 JSON object with a ``"type"`` key,
at most ``MAX_CONTROL`` bytes. ``kind`` 2 is a data frame: raw file bytes,
at most ``MAX_DATA``. The header is checked before any payload is buffered,
so a hostile length costs nothing.

Why JSON and not a binary layout for control frames: they are rare (a few
per job), easy to read in a packet capture, and the standard library parses
them without ever evaluating anything. Why a separate binary data kind: the
hot path must not base64 or copy megabytes through a JSON parser.

Decoding is strict. Each message is a frozen dataclass whose fields carry
their own check (type, range, length, allowed characters) in the field
metadata; the same checks run when encoding, so a message this module
encodes always decodes on the other side, and a bug shows up here as a
``LocalProtocolError`` rather than as a refusal from the peer; only what a
peer sent raises ``RemoteProtocolError`` (h11's split: the error type says
who broke the rules).
Unknown keys are ignored for forward compatibility. Nothing received is
ever evaluated or unpickled. No sockets here: ``swift.wire`` is the I/O
shell, and ``FrameDecoder`` is the one frame parser it uses (so the fuzz
tests drive the production code). See docs/protocol.md for the message
catalogue.

The limits are at least HTTP's in practice: a URL may be 64 KiB long (long
signed URLs are common), request headers 64 KiB in all, and validators may
hold obs-text bytes 0x80-0xFF (RFC 9110 section 5.5), which ``requests``
hands us as Latin-1 characters.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from . import errors

PROTOCOL_VERSION = 1
KIND_CONTROL = 1
KIND_DATA = 2
HEADER = struct.Struct(">BBI")
HEADER_SIZE = HEADER.size
#: A control frame holds at most this many bytes. It must fit the largest
#: ``fetch``: a ``MAX_URL`` URL plus ``MAX_HEADERS`` of headers, each
#: character worst-case encoded (``"`` escaped as two bytes, non-ASCII as up
#: to four bytes of UTF-8): 4 * 64 Ki + 2 * 64 Ki + list overhead < 512 KiB
#: (tests/test_protocol.py builds that worst case). At most one partial frame
#: is buffered per connection, so this costs no more memory than a data frame.
MAX_CONTROL = 512 * 1024
MAX_DATA = 1024 * 1024
#: URLs up to 64 KiB characters: beyond what browsers and servers accept
#: (commonly 8-64 KiB), so whatever HTTP carries in practice fits.
MAX_URL = 64 * 1024
#: Extra request headers of a fetch: at most this many characters of names
#: and values in all (HTTP servers commonly accept 8-64 KiB of headers) ...
MAX_HEADERS = 64 * 1024
#: ... in at most this many [name, value] pairs.
MAX_HEADER_COUNT = 256
#: Other URLs of the file a fetch may name (its mirrors, tried in order):
#: more than one machine's connections could use, fewer than a Metalink may list ...
MAX_MIRRORS = 16
#: ... in at most this many characters of URLs and validators in all (a
#: mirror's URL is rarely over 200 characters); this keeps the largest fetch
#: within MAX_CONTROL (4 * 8 Ki more in the worst case above).
MAX_MIRROR_CHARS = 8 * 1024
MAX_NAME = 255
MAX_MESSAGE = 2048
MAX_PEERS = 1024
MAX_SLOTS = 64
MAX_OFFSET = 1 << 62  # far beyond any file, far below JSON/double trouble
NONCE_HEX = 64        # 32 random bytes, hex; an HMAC-SHA256 proof has the same length

ERROR_CODES = ("bad-version", "unknown-kind", "too-large", "truncated", "bad-utf8", "bad-json",
               "unknown-type", "bad-field")


class ProtocolError(Exception):
    """A message or frame that breaks the protocol; ``code`` is a short machine-readable word.

    Catch this base to handle both; raise one of the two subclasses, which
    say who broke the rules.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {str(self)!r})"


class LocalProtocolError(ProtocolError, errors.LocalProtocolError):
    """Something *we* were about to send breaks the rules: our bug or our input, never the peer's.

    Also an ``errors.LocalProtocolError``, so the one error hierarchy catches it;
    ``code`` stays the wire's word ("bad-field"), the hierarchy's code is
    ``ErrorCode.LOCAL_PROTOCOL`` (``default_code``).
    """


class RemoteProtocolError(ProtocolError, errors.RemoteProtocolError):
    """What the peer sent breaks the rules: the peer is broken or hostile.

    Also an ``errors.RemoteProtocolError`` (``ErrorCode.REMOTE_PROTOCOL``).
    """


# -- field checks -------------------------------------------------------------------------------
class Check:
    """Validates (and normalises) one decoded JSON value; raises ProtocolError."""

    def __call__(self, name: str, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _bad(name: str, why: str) -> ProtocolError:
    return RemoteProtocolError("bad-field", f"field {name!r} {why}")


@dataclass(frozen=True)
class Int(Check):
    low: int = 0
    high: int = MAX_OFFSET

    def __call__(self, name: str, value: Any) -> int:
        if type(value) is not int:  # bool and float are not integers here
            raise _bad(name, f"must be an integer, not {_json_type(value)}")
        if not self.low <= value <= self.high:
            raise _bad(name, f"must be in {self.low}..{self.high}")
        return value


@dataclass(frozen=True)
class Float(Check):
    low: float = 0.0
    high: float = 1e9

    def __call__(self, name: str, value: Any) -> float:
        if type(value) not in (int, float):
            raise _bad(name, f"must be a number, not {_json_type(value)}")
        if not self.low <= value <= self.high:  # also false for NaN
            raise _bad(name, f"must be in {self.low:g}..{self.high:g}")
        return float(value)


# C0, DEL and C1 (U+0080-U+009F, among them the 8-bit CSI that terminals obey)
_CONTROL_CHARS = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
#: lowercase ASCII hex and nothing else: one C-level match per string (a ``held`` answer
#: carries up to 4096 piece hashes, checked on both sides four times a second)
_LOWER_HEX = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True)
class Text(Check):
    """A string of bounded length, without control characters or lone surrogates.

    Control characters are refused because these strings end up in log lines
    and HTTP headers (``If-Range``), where a CR/LF would be an injection.
    """

    max_len: int = MAX_NAME
    min_len: int = 0
    hex_only: bool = False

    def __call__(self, name: str, value: Any) -> str:
        if type(value) is not str:
            raise _bad(name, f"must be a string, not {_json_type(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise _bad(name, f"must be {self.min_len}..{self.max_len} characters long")
        if self.hex_only:
            if _LOWER_HEX.fullmatch(value) is None:
                raise _bad(name, "must be lowercase hex")
        elif not _CONTROL_CHARS.isdisjoint(value):
            raise _bad(name, "contains a control character")
        elif not _encodable(value):
            raise _bad(name, "contains a lone surrogate")
        return value


#: RFC 9110 section 5.5: a field value is visible ASCII, space, tab and obs-text (0x80-0xFF)
_FIELD_VALUE_CHARS = frozenset(map(chr, [0x09, *range(0x20, 0x7F), *range(0x80, 0x100)]))
#: RFC 9110 section 5.6.2: a token (a header name)
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class FieldValue(Check):
    """An HTTP field value as ``requests`` gives it: Latin-1 characters, no CR/LF/NUL.

    C1 bytes (0x80-0x9F) are legal obs-text in HTTP, so they pass here;
    whoever logs such a value must ``repr`` it.
    """

    max_len: int = 1024
    min_len: int = 0

    def __call__(self, name: str, value: Any) -> str:
        if type(value) is not str:
            raise _bad(name, f"must be a string, not {_json_type(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise _bad(name, f"must be {self.min_len}..{self.max_len} characters long")
        if not _FIELD_VALUE_CHARS.issuperset(value):
            raise _bad(name, "holds a character not allowed in an HTTP field value")
        return value


@dataclass(frozen=True)
class HeaderList(Check):
    """``[[name, value], ...]``: names are tokens, values field values, sizes bounded."""

    max_count: int = MAX_HEADER_COUNT
    max_chars: int = MAX_HEADERS

    def __call__(self, name: str, value: Any) -> list[list[str]]:
        if type(value) is not list:
            raise _bad(name, f"must be a list, not {_json_type(value)}")
        if len(value) > self.max_count:
            raise _bad(name, f"must hold at most {self.max_count} entries")
        out, total = [], 0
        for i, pair in enumerate(value):
            where = f"{name}[{i}]"
            if type(pair) not in (list, tuple) or len(pair) != 2:
                raise _bad(where, "must be a [name, value] pair")
            key, val = pair
            if type(key) is not str or not key or not _TOKEN_CHARS.issuperset(key):
                raise _bad(where, "must have an HTTP token as its name")
            FieldValue(self.max_chars)(where, val)
            total += len(key) + len(val)
            out.append([key, val])
        if total > self.max_chars:
            raise _bad(name, f"must hold at most {self.max_chars} characters in all")
        return out


@dataclass(frozen=True)
class MirrorList(Check):
    """``[[url, etag, last_modified], ...]``: other URLs of the file with their own
    validators ("" for none); at most MAX_MIRRORS entries and MAX_MIRROR_CHARS characters."""

    def __call__(self, name: str, value: Any) -> list[list[str]]:
        if type(value) is not list:
            raise _bad(name, f"must be a list, not {_json_type(value)}")
        if len(value) > MAX_MIRRORS:
            raise _bad(name, f"must hold at most {MAX_MIRRORS} entries")
        out, total = [], 0
        for i, entry in enumerate(value):
            where = f"{name}[{i}]"
            if type(entry) not in (list, tuple) or len(entry) != 3:
                raise _bad(where, "must be a [url, etag, last_modified] triple")
            url = Text(MAX_MIRROR_CHARS, min_len=1)(where, entry[0])
            if not url.lower().startswith(("http://", "https://")):
                raise _bad(where, "must be an http or https URL")
            etag = FieldValue(1024)(where, entry[1])
            modified = FieldValue(1024)(where, entry[2])
            total += len(url) + len(etag) + len(modified)
            out.append([url, etag, modified])
        if total > MAX_MIRROR_CHARS:
            raise _bad(name, f"must hold at most {MAX_MIRROR_CHARS} characters in all")
        return out


@dataclass(frozen=True)
class FreeText(Check):
    """Human text (error messages): any string; sanitised by the message itself."""

    def __call__(self, name: str, value: Any) -> str:
        if type(value) is not str:
            raise _bad(name, f"must be a string, not {_json_type(value)}")
        return value


@dataclass(frozen=True)
class Optional(Check):
    """``null`` or what ``inner`` accepts. The key itself must still be present."""

    inner: Check

    def __call__(self, name: str, value: Any) -> Any:
        return None if value is None else self.inner(name, value)


@dataclass(frozen=True)
class ListOf(Check):
    cls: type
    max_len: int

    def __call__(self, name: str, value: Any) -> list:
        if type(value) is not list:
            raise _bad(name, f"must be a list, not {_json_type(value)}")
        if len(value) > self.max_len:
            raise _bad(name, f"must hold at most {self.max_len} entries")
        return [_from_dict(self.cls, item, f"{name}[{i}]") for i, item in enumerate(value)]


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value), "something else")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checked(check: Check, *, may_be_absent: bool = False, **kw: Any) -> Any:
    """A dataclass field carrying its wire check in its metadata.

    ``may_be_absent``: a field added after a message was first defined (it
    must have a default) may be missing on the wire and then takes its default.
    """
    return field(metadata={"check": check, "may_be_absent": may_be_absent}, **kw)


OFFSET = Int()
PORT = Int(1, 65535)
SLOTS = Int(1, MAX_SLOTS)
HOST = Text(MAX_NAME, min_len=1)
NAME = Text(MAX_NAME)
HEX = Text(NONCE_HEX, min_len=NONCE_HEX, hex_only=True)
VALIDATOR = Optional(FieldValue(1024))


# -- messages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """Base of every control message; ``TYPE`` is its ``"type"`` on the wire."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class DataFrame:
    """A block of file data (a ``bytes``, ``bytearray`` or ``memoryview``)."""

    payload: bytes


@dataclass(frozen=True)
class Frame:
    """One undecoded frame, as ``FrameDecoder`` yields it."""

    kind: int
    payload: bytes


@dataclass(frozen=True)
class Hello(Message):
    """Client → server, first frame. ``nonce`` is present iff the client has a secret."""

    TYPE: ClassVar[str] = "hello"
    version: int = checked(Int(0, 255))
    name: str = checked(NAME)
    nonce: str | None = checked(Optional(HEX), default=None)


@dataclass(frozen=True)
class Welcome(Message):
    """Server → client. ``nonce``/``proof`` are present iff the server has a secret."""

    TYPE: ClassVar[str] = "welcome"
    version: int = checked(Int(0, 255))
    name: str = checked(NAME)
    nonce: str | None = checked(Optional(HEX), default=None)
    proof: str | None = checked(Optional(HEX), default=None)


@dataclass(frozen=True)
class Auth(Message):
    """Client → server: the client's proof of the shared secret."""

    TYPE: ClassVar[str] = "auth"
    proof: str = checked(HEX)


@dataclass(frozen=True)
class Ready(Message):
    """Server → client: the client's proof is accepted."""

    TYPE: ClassVar[str] = "ready"


@dataclass(frozen=True)
class Error(Message):
    """Either side: a refusal or a failed job.

    ``message`` is human text from a possibly hostile peer, so it is made safe
    on construction: control characters become spaces, anything that is not
    valid Unicode becomes U+FFFD, and it is cut at ``MAX_MESSAGE`` characters.
    Logging an ``Error`` can therefore never forge log lines.
    """

    TYPE: ClassVar[str] = "error"
    code: str = checked(Text(64, min_len=1))
    message: str = checked(FreeText())

    def __post_init__(self) -> None:
        if isinstance(self.code, FetchCode):  # the wire carries the word itself
            object.__setattr__(self, "code", self.code.value)
        object.__setattr__(self, "message", _sanitise(str(self.message)))


class FetchCode(enum.StrEnum):
    """Why a fetch job failed (or a connection was refused): an ``Error``'s ``code``.

    The requester branches on these, never on the message. A peer may send
    any word; :meth:`of` gives None for one it does not know.
    """

    #: the file at the origin changed (a 200 to If-Range, another ETag or size)
    CHANGED = "changed"
    #: the origin failed after bounded retries, or sent too few bytes
    ORIGIN = "origin"
    #: the node will not fetch this URL (a private address, another scheme)
    REFUSED = "refused"
    #: the origin refused the node (401, 403, 404, 410, an untrusted certificate)
    DENIED = "denied"
    #: no free slot in time, or too many open connections
    BUSY = "busy"
    #: (``fetch_copy``) the node no longer offers that content or those bytes
    GONE = "gone"

    @classmethod
    def of(cls, word: str) -> "FetchCode | None":
        """The code a received word names, or None for a word this version does not know."""
        try:
            return cls(word)
        except ValueError:
            return None


def _sanitise(text: str) -> str:
    text = text[:MAX_MESSAGE]
    if _CONTROL_CHARS.isdisjoint(text) and _encodable(text):
        return text
    return "".join(" " if c in _CONTROL_CHARS else "\ufffd" if "\ud800" <= c <= "\udfff" else c
                   for c in text)


@dataclass(frozen=True)
class Register(Message):
    """Node → discovery: I am alive at host:port with this many job slots."""

    TYPE: ClassVar[str] = "register"
    host: str = checked(HOST)
    port: int = checked(PORT)
    name: str = checked(NAME)
    slots: int = checked(SLOTS)


@dataclass(frozen=True)
class Heartbeat(Message):
    """Node → discovery: renew my lease (registers an unknown node)."""

    TYPE: ClassVar[str] = "heartbeat"
    host: str = checked(HOST)
    port: int = checked(PORT)
    name: str = checked(NAME)
    slots: int = checked(SLOTS)


@dataclass(frozen=True)
class Unregister(Message):
    TYPE: ClassVar[str] = "unregister"
    host: str = checked(HOST)
    port: int = checked(PORT)


@dataclass(frozen=True)
class ListPeers(Message):
    TYPE: ClassVar[str] = "list_peers"


@dataclass(frozen=True)
class Ok(Message):
    """Discovery → node: done; ``lease`` (seconds) answers register/heartbeat."""

    TYPE: ClassVar[str] = "ok"
    lease: float | None = checked(Optional(Float()), default=None)


@dataclass(frozen=True)
class PeerInfo:
    """One live node, nested in ``Peers``; ``age`` is seconds since it registered."""

    host: str = checked(HOST)
    port: int = checked(PORT)
    name: str = checked(NAME)
    slots: int = checked(SLOTS)
    age: float = checked(Float())


@dataclass(frozen=True)
class Peers(Message):
    TYPE: ClassVar[str] = "peers"
    peers: list[PeerInfo] = checked(ListOf(PeerInfo, MAX_PEERS), default_factory=list)


@dataclass(frozen=True)
class Fetch(Message):
    """Requester → node: fetch bytes [start, end) of ``url`` (``size`` bytes in all)."""

    TYPE: ClassVar[str] = "fetch"
    job_id: int = checked(OFFSET)
    url: str = checked(Text(MAX_URL, min_len=1))
    start: int = checked(OFFSET)
    end: int = checked(OFFSET)
    size: int = checked(OFFSET)
    etag: str | None = checked(VALIDATOR, default=None)
    last_modified: str | None = checked(VALIDATOR, default=None)
    #: the content coding the requester's probe saw (None: identity); the
    #: node's answers must carry the same one, and it is never decoded
    encoding: str | None = checked(Optional(Text(MAX_NAME, min_len=1)), default=None)
    #: extra request headers for the origin, ``[[name, value], ...]`` (cookies,
    #: authorization): a requester sends secret ones only over a private connection
    headers: list[list[str]] = checked(HeaderList(), may_be_absent=True, default_factory=list)
    #: other URLs of the same file, ``[[url, etag, last_modified], ...]`` ("" for no
    #: validator): the node tries them in this order when ``url`` fails before a byte
    #: of the job arrived, with the same checks and address rules, and without ``headers``
    mirrors: list[list[str]] = checked(MirrorList(), may_be_absent=True, default_factory=list)


@dataclass(frozen=True)
class Shrink(Message):
    """Requester → node: job ``job_id`` now ends at ``end`` (exclusive)."""

    TYPE: ClassVar[str] = "shrink"
    job_id: int = checked(OFFSET)
    end: int = checked(OFFSET)


@dataclass(frozen=True)
class Keepalive(Message):
    """Node → requester: still working on ``job_id``, the origin is slow."""

    TYPE: ClassVar[str] = "keepalive"
    job_id: int = checked(OFFSET)


@dataclass(frozen=True)
class Done(Message):
    """Node → requester: job finished after ``length`` data bytes."""

    TYPE: ClassVar[str] = "done"
    job_id: int = checked(OFFSET)
    length: int = checked(OFFSET)


# -- sharing: LAN copies, asked for by label (docs/sharing.md) ----------------------------------
#: A label: HMAC-SHA-256 of a content identity, 64 lowercase hex (``swift.content.label``).
LABEL = HEX
#: Most ``[start, end]`` ranges a ``held`` answer lists; a holding with more
#: gaps offers its first ones (the rest is fetched elsewhere).
MAX_HELD_RANGES = 1024
#: Most piece hashes a ``held`` answer lists: ``swift.piecehash.MAX_PIECES``.
MAX_PIECE_HASHES = 4096
#: Hashed pieces are 1 MiB (``piecehash.MIN_PIECE``) or a power of two above.
MIN_PIECE_SIZE = 1 << 20


@dataclass(frozen=True)
class RangeList(Check):
    """``[[start, end], ...]``: sorted, disjoint, non-empty ranges of offsets."""

    max_count: int = MAX_HELD_RANGES

    def __call__(self, name: str, value: Any) -> list[list[int]]:
        if type(value) is not list:
            raise _bad(name, f"must be a list, not {_json_type(value)}")
        if len(value) > self.max_count:
            raise _bad(name, f"must hold at most {self.max_count} entries")
        out, previous = [], -1
        for i, pair in enumerate(value):
            where = f"{name}[{i}]"
            if type(pair) not in (list, tuple) or len(pair) != 2:
                raise _bad(where, "must be a [start, end] pair")
            start, end = OFFSET(where, pair[0]), OFFSET(where, pair[1])
            if not (previous < start < end or previous < 0 <= start < end):
                raise _bad(where, "must be a non-empty range after (not touching) the one before")
            previous = end
            out.append([start, end])
        return out


@dataclass(frozen=True)
class PieceHashes(Check):
    """``[[index, sha256_hex], ...]``: piece indexes increasing, hashes 64 lowercase hex."""

    max_count: int = MAX_PIECE_HASHES

    def __call__(self, name: str, value: Any) -> list[list]:
        if type(value) is not list:
            raise _bad(name, f"must be a list, not {_json_type(value)}")
        if len(value) > self.max_count:
            raise _bad(name, f"must hold at most {self.max_count} entries")
        out, previous = [], -1
        for i, pair in enumerate(value):
            where = f"{name}[{i}]"
            if type(pair) not in (list, tuple) or len(pair) != 2:
                raise _bad(where, "must be an [index, hash] pair")
            index = OFFSET(where, pair[0])
            if index <= previous:
                raise _bad(where, "must name a piece after the one before it")
            previous = index
            out.append([index, HEX(where, pair[1])])
        return out


@dataclass(frozen=True)
class Query(Message):
    """Requester → node: what do you hold of the content with this label?"""

    TYPE: ClassVar[str] = "query"
    label: str = checked(LABEL)


@dataclass(frozen=True)
class Held(Message):
    """Node → requester: the answer to ``Query``.

    ``ranges`` are the bytes the node offers (empty: none), each made of whole
    hashed pieces of ``piece_size`` bytes; ``hashes`` the SHA-256 of every
    piece inside them, by piece index. ``size`` is the content's length.
    """

    TYPE: ClassVar[str] = "held"
    label: str = checked(LABEL)
    size: int = checked(OFFSET)
    piece_size: int = checked(Int(MIN_PIECE_SIZE, MAX_OFFSET))
    ranges: list[list[int]] = checked(RangeList(), default_factory=list)
    hashes: list[list] = checked(PieceHashes(), default_factory=list)
    #: bytes the node's download is fetching from the origin right now (in flight
    #: only): a requester leaves them to it and takes them once they are held
    fetching: list[list[int]] = checked(RangeList(), may_be_absent=True, default_factory=list)
    #: a random name of this holding, so a requester never takes its own download,
    #: published on its machine, for a copy (None: no holding)
    holder: str | None = checked(Optional(HEX), may_be_absent=True, default=None)


@dataclass(frozen=True)
class FetchCopy(Message):
    """Requester → node: send bytes [start, end) of the content ``label`` from your copy.

    Answered like ``fetch``: data frames, keep-alives, ``done`` or ``error``,
    with ``shrink`` as there. ``size`` is the content's length as the
    requester's probe saw it; a node whose copy has another size refuses.
    """

    TYPE: ClassVar[str] = "fetch_copy"
    job_id: int = checked(OFFSET)
    label: str = checked(LABEL)
    start: int = checked(OFFSET)
    end: int = checked(OFFSET)
    size: int = checked(OFFSET)


@dataclass(frozen=True)
class Ping(Message):
    TYPE: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Pong(Message):
    """Answer to ``Ping``; discovery answers with ``slots`` 0."""

    TYPE: ClassVar[str] = "pong"
    name: str = checked(NAME)
    slots: int = checked(Int(0, MAX_SLOTS))
    busy: int = checked(Int(0, 1 << 20))


MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (Hello, Welcome, Auth, Ready, Error, Register, Heartbeat, Unregister,
                              ListPeers, Ok, Peers, Fetch, Shrink, Keepalive, Done, Ping, Pong,
                              Query, Held, FetchCopy)
}


def _check_relations(msg: Any) -> None:
    """Checks that span fields."""
    if isinstance(msg, (Fetch, FetchCopy)) and not msg.start < msg.end <= msg.size:
        raise RemoteProtocolError("bad-field", f"{msg.TYPE} range {msg.start}..{msg.end} of "
                                               f"{msg.size} bytes breaks 0 <= start < end <= size")
    if isinstance(msg, Held):
        pieces = -(-msg.size // msg.piece_size)
        if (msg.ranges and msg.ranges[-1][1] > msg.size) or \
                (msg.fetching and msg.fetching[-1][1] > msg.size):
            raise RemoteProtocolError("bad-field", f"held ranges reach past the size {msg.size}")
        if msg.hashes and msg.hashes[-1][0] >= pieces:
            raise RemoteProtocolError("bad-field", f"held hash of piece {msg.hashes[-1][0]} of "
                                                   f"a {pieces}-piece file")


def _from_dict(cls: type, obj: Any, where: str) -> Any:
    if type(obj) is not dict:
        raise RemoteProtocolError("bad-field", f"{where} must be an object, not {_json_type(obj)}")
    values = {}
    for f in fields(cls):
        if f.name not in obj:
            if f.metadata["may_be_absent"]:
                continue
            raise RemoteProtocolError("bad-field", f"field {f.name!r} is missing from {where}")
        values[f.name] = f.metadata["check"](f.name, obj[f.name])
    instance = cls(**values)
    _check_relations(instance)
    return instance


def _to_json_value(value: Any) -> Any:
    if isinstance(value, list):
        return [to_dict(item) if is_dataclass(item) else list(item) for item in value]
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON object for a message (with ``"type"``) or a nested record."""
    out: dict[str, Any] = {"type": obj.TYPE} if isinstance(obj, Message) else {}
    for f in fields(obj):
        out[f.name] = _to_json_value(getattr(obj, f.name))
    return out


# -- encoding -----------------------------------------------------------------------------------
def encode_message(msg: Message) -> bytes:
    """A whole control frame for ``msg``.

    Runs the receiver's checks first, so LocalProtocolError (never a remote
    one) if a field is out of bounds or the frame would be too large.
    """
    obj = to_dict(msg)
    try:
        _from_dict(type(msg), obj, msg.TYPE)
        payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False).encode("utf-8")
    except ProtocolError as exc:
        raise LocalProtocolError(exc.code, f"cannot send {msg.TYPE}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a value JSON cannot carry: our bug
        raise LocalProtocolError("bad-field", f"cannot send {msg.TYPE}: {exc}") from None
    if len(payload) > MAX_CONTROL:
        raise LocalProtocolError("too-large", f"{msg.TYPE} message of {len(payload)} bytes exceeds "
                                         f"{MAX_CONTROL}")
    return HEADER.pack(PROTOCOL_VERSION, KIND_CONTROL, len(payload)) + payload


def encode_data_header(length: int) -> bytes:
    """The header of a data frame carrying ``length`` bytes."""
    if not 0 <= length <= MAX_DATA:
        raise LocalProtocolError("too-large", f"data frame of {length} bytes exceeds {MAX_DATA}")
    return HEADER.pack(PROTOCOL_VERSION, KIND_DATA, length)


def encode_data(payload: bytes | bytearray | memoryview) -> bytes:
    """A whole data frame (header and a copy of the payload)."""
    return encode_data_header(len(payload)) + bytes(payload)


# -- decoding -----------------------------------------------------------------------------------
def check_header(header: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Validate a 6-byte header; returns (kind, length). Nothing else is read first."""
    version, kind, length = HEADER.unpack(header)
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError("bad-version", f"unsupported protocol version {version} "
                                           f"(this side speaks {PROTOCOL_VERSION})")
    if kind == KIND_CONTROL:
        limit = MAX_CONTROL
    elif kind == KIND_DATA:
        limit = MAX_DATA
    else:
        raise RemoteProtocolError("unknown-kind", f"unknown frame kind {kind}")
    if length > limit:
        raise RemoteProtocolError("too-large", f"{'control' if kind == KIND_CONTROL else 'data'} frame "
                                         f"of {length} bytes exceeds {limit}")
    return kind, length


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_message(payload: bytes | bytearray | memoryview) -> Message:
    """The message in a control frame's payload; ProtocolError unless it is exactly right."""
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("bad-utf8", "control frame is not valid UTF-8") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise RemoteProtocolError("bad-json", "control frame is not valid JSON") from None
    if type(obj) is not dict:
        raise RemoteProtocolError("bad-json", f"control frame must be a JSON object, not {_json_type(obj)}")
    kind = obj.get("type")
    if type(kind) is not str:
        raise RemoteProtocolError("bad-field", "control frame lacks a string 'type'")
    cls = MESSAGES.get(kind)
    if cls is None:
        shown = _sanitise(kind[:40])
        raise RemoteProtocolError("unknown-type", f"unknown message type {shown!r}")
    return _from_dict(cls, obj, kind)


def parse_frame(frame: Frame) -> Message | DataFrame:
    """A decoded frame: a ``DataFrame`` or a checked message."""
    if frame.kind == KIND_DATA:
        return DataFrame(frame.payload)
    return decode_message(frame.payload)


class FrameDecoder:
    """Incremental frame parser, sans I/O: bytes in any split in, whole frames out.

    Two ways to give it bytes, both driving the one state machine:

    * ``feed(data)`` copies ``data`` in and returns the frames it completed
      (what the fuzz tests and the in-memory tests use);
    * ``buffer()`` returns a writable view where the next bytes belong, the
      caller reads into it (``sock.recv_into(decoder.buffer())``), then
      ``advance(n)`` returns the frame those ``n`` bytes completed, or None
      (what ``swift.wire`` uses: a data frame's payload is received straight
      into its own buffer, with no copy).

    Each header is checked the moment its sixth byte arrives, before any of
    its payload is kept, and at most one partial frame is buffered (so at
    most ``MAX_DATA`` bytes). A frame's payload is a ``bytearray`` nobody
    else holds. After an error the decoder stays broken: the stream has lost
    its framing and every later call raises again.
    """

    def __init__(self) -> None:
        self._header = bytearray(HEADER_SIZE)
        self._header_got = 0
        self._kind = 0
        self._payload: bytearray | None = None  # None while the header is incomplete
        self._payload_got = 0
        self._error: RemoteProtocolError | None = None

    def buffer(self) -> memoryview:
        """Where the next received bytes go: never empty; fill a prefix, then ``advance``."""
        if self._error is not None:
            raise self._error
        if self._payload is None:
            return memoryview(self._header)[self._header_got:]
        return memoryview(self._payload)[self._payload_got:]

    def advance(self, n: int) -> Frame | None:
        """``n`` bytes were written at the start of ``buffer()``; the frame they end, if any."""
        if self._error is not None:
            raise self._error
        if self._payload is None:
            self._header_got += n
            if self._header_got < HEADER_SIZE:
                return None
            try:
                self._kind, length = check_header(self._header)
            except RemoteProtocolError as exc:
                self._error = exc
                raise
            self._payload, self._payload_got = bytearray(length), 0
        else:
            self._payload_got += n
        if self._payload_got < len(self._payload):
            return None
        frame = Frame(self._kind, self._payload)
        self._header_got, self._payload, self._payload_got = 0, None, 0
        return frame

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Take ``data`` (any split of the stream); the frames it completed, in order."""
        view = memoryview(data).cast("B")
        frames: list[Frame] = []
        pos = 0
        while pos < len(view):
            target = self.buffer()
            take = min(len(target), len(view) - pos)
            target[:take] = view[pos:pos + take]
            pos += take
            frame = self.advance(take)
            if frame is not None:
                frames.append(frame)
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (header included)."""
        if self._payload is None:
            return self._header_got
        return HEADER_SIZE + self._payload_got

    def eof(self) -> None:
        """The stream ended: fine between frames, ``truncated`` inside one."""
        if self._error is not None:
            raise self._error
        if self.pending:
            self._error = RemoteProtocolError("truncated", f"stream ended inside a frame "
                                                           f"({self.pending} bytes of it received)")
            raise self._error

"""swift's wire protocol, as pure functions: bytes in, messages out.

Every frame is a 6-byte header and a payload::

    +---------+------+----------------+----------------------+
    | version | kind | length (u32 BE)| payload (length)     |
    +---------+------+----------------+----------------------+

``kind`` 1 is a control frame: a UTF-8 JSON object with a ``"type"`` key,
at most ``MAX_CONTROL`` bytes. ``kind`` 2 is a data frame: raw file bytes,
at most ``MAX_DATA``. The header is checked before any payload is buffered,
so a hostile length costs nothing. Decoding is strict (exact field types,
bounded strings and lists) and nothing received is ever evaluated or
unpickled. No sockets here: ``swift.wire`` is the I/O shell.
See docs/protocol.md for the message catalogue.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

PROTOCOL_VERSION = 1
KIND_CONTROL = 1
KIND_DATA = 2
HEADER = struct.Struct(">BBI")
HEADER_SIZE = HEADER.size
MAX_CONTROL = 64 * 1024
MAX_DATA = 1024 * 1024
MAX_URL = 8192
MAX_NAME = 255
MAX_PEERS = 1024
MAX_OFFSET = 1 << 62


class ProtocolError(Exception):
    """Input that breaks the protocol; ``code`` is a short machine-readable word."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Frame:
    kind: int
    payload: bytes


@dataclass(frozen=True)
class DataFrame:
    payload: bytes


# -- messages -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    version: int
    name: str
    nonce: str | None = None


@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    version: int
    name: str
    nonce: str | None = None
    proof: str | None = None


@dataclass(frozen=True)
class Auth(Message):
    TYPE: ClassVar[str] = "auth"
    proof: str


@dataclass(frozen=True)
class Ready(Message):
    TYPE: ClassVar[str] = "ready"


@dataclass(frozen=True)
class Error(Message):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str


@dataclass(frozen=True)
class Register(Message):
    TYPE: ClassVar[str] = "register"
    host: str
    port: int
    name: str
    slots: int


@dataclass(frozen=True)
class Heartbeat(Message):
    TYPE: ClassVar[str] = "heartbeat"
    host: str
    port: int
    name: str
    slots: int


@dataclass(frozen=True)
class Unregister(Message):
    TYPE: ClassVar[str] = "unregister"
    host: str
    port: int


@dataclass(frozen=True)
class ListPeers(Message):
    TYPE: ClassVar[str] = "list_peers"


@dataclass(frozen=True)
class Ok(Message):
    TYPE: ClassVar[str] = "ok"
    lease: float | None = None


@dataclass(frozen=True)
class PeerInfo:
    host: str
    port: int
    name: str
    slots: int
    age: float


@dataclass(frozen=True)
class Peers(Message):
    TYPE: ClassVar[str] = "peers"
    peers: list[PeerInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Fetch(Message):
    TYPE: ClassVar[str] = "fetch"
    job_id: int
    url: str
    start: int
    end: int
    size: int
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Shrink(Message):
    TYPE: ClassVar[str] = "shrink"
    job_id: int
    end: int


@dataclass(frozen=True)
class Keepalive(Message):
    TYPE: ClassVar[str] = "keepalive"
    job_id: int


@dataclass(frozen=True)
class Done(Message):
    TYPE: ClassVar[str] = "done"
    job_id: int
    length: int


@dataclass(frozen=True)
class Ping(Message):
    TYPE: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Pong(Message):
    TYPE: ClassVar[str] = "pong"
    name: str
    slots: int
    busy: int


MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (Hello, Welcome, Auth, Ready, Error, Register, Heartbeat, Unregister,
                              ListPeers, Ok, Peers, Fetch, Shrink, Keepalive, Done, Ping, Pong)
}

# Field rules: (kind, optional, bound). kind: "int", "float", "str", "peers".
_STR_BOUNDS = {"url": MAX_URL, "message": 1024, "etag": 1024, "last_modified": 128,
               "nonce": 64, "proof": 64}
_INT_BOUNDS = {"port": (1, 65535), "slots": (0, 64), "version": (0, 255), "busy": (0, 1 << 16)}


def _field_kind(cls: type, name: str) -> tuple[str, bool]:
    annotation = {f.name: f.type for f in fields(cls)}[name]
    text = str(annotation)
    optional = "None" in text
    for kind in ("list[PeerInfo]", "int", "float", "str"):
        if text.startswith(kind):
            return ("peers" if kind.startswith("list") else kind), optional
    raise AssertionError(f"unsupported field type {text}")  # pragma: no cover


def _check_int(name: str, value: Any) -> int:
    if type(value) is not int:
        raise ProtocolError("bad-field", f"field {name!r} must be an integer")
    low, high = _INT_BOUNDS.get(name, (0, MAX_OFFSET))
    if not low <= value <= high:
        raise ProtocolError("bad-field", f"field {name!r} out of range ({value})")
    return value


def _check_float(name: str, value: Any) -> float:
    if type(value) not in (int, float) or value != value or value in (float("inf"), float("-inf")):
        raise ProtocolError("bad-field", f"field {name!r} must be a number")
    if value < 0 or value > 1e9:
        raise ProtocolError("bad-field", f"field {name!r} out of range")
    return float(value)


def _check_str(name: str, value: Any) -> str:
    if type(value) is not str:
        raise ProtocolError("bad-field", f"field {name!r} must be a string")
    if len(value) > _STR_BOUNDS.get(name, MAX_NAME):
        raise ProtocolError("bad-field", f"field {name!r} is too long")
    return value


def _check_peer(value: Any) -> PeerInfo:
    if type(value) is not dict:
        raise ProtocolError("bad-field", "a peer must be an object")
    try:
        return PeerInfo(host=_check_str("host", value["host"]), port=_check_int("port", value["port"]),
                        name=_check_str("name", value["name"]), slots=_check_int("slots", value["slots"]),
                        age=_check_float("age", value["age"]))
    except KeyError as exc:
        raise ProtocolError("bad-field", f"a peer lacks field {exc.args[0]!r}") from None


def _validate(msg: Message) -> Message:
    if isinstance(msg, Fetch):
        if not msg.start < msg.end <= msg.size:
            raise ProtocolError("bad-field", f"bad range {msg.start}-{msg.end} of {msg.size}")
    return msg


# -- encoding --------------------------------------------------------------------------------
def to_dict(msg: Message) -> dict:
    d: dict[str, Any] = {"type": msg.TYPE}
    for f in fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, list):
            value = [vars(p).copy() for p in value]
        d[f.name] = value
    return d


def encode_message(msg: Message) -> bytes:
    payload = json.dumps(to_dict(msg), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(payload) > MAX_CONTROL:
        raise ProtocolError("too-large", f"{msg.TYPE} message exceeds {MAX_CONTROL} bytes")
    return HEADER.pack(PROTOCOL_VERSION, KIND_CONTROL, len(payload)) + payload


def encode_data_header(length: int) -> bytes:
    if not 0 <= length <= MAX_DATA:
        raise ProtocolError("too-large", f"data frame of {length} bytes exceeds {MAX_DATA}")
    return HEADER.pack(PROTOCOL_VERSION, KIND_DATA, length)


def encode_data(payload: bytes) -> bytes:
    return encode_data_header(len(payload)) + bytes(payload)


# -- decoding --------------------------------------------------------------------------------
def check_header(header: bytes) -> tuple[int, int]:
    """Validate a 6-byte header; returns (kind, length)."""
    version, kind, length = HEADER.unpack(header)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("bad-version", f"unsupported protocol version {version} "
                                           f"(this side speaks {PROTOCOL_VERSION})")
    if kind == KIND_CONTROL:
        if length > MAX_CONTROL:
            raise ProtocolError("too-large", f"control frame of {length} bytes exceeds {MAX_CONTROL}")
    elif kind == KIND_DATA:
        if length > MAX_DATA:
            raise ProtocolError("too-large", f"data frame of {length} bytes exceeds {MAX_DATA}")
    else:
        raise ProtocolError("unknown-kind", f"unknown frame kind {kind}")
    return kind, length


def decode_message(payload: bytes) -> Message:
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad-utf8", "control frame is not valid UTF-8") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ProtocolError("bad-json", "control frame is not valid JSON") from None
    if type(obj) is not dict:
        raise ProtocolError("bad-json", "control frame must be a JSON object")
    kind = obj.get("type")
    if type(kind) is not str:
        raise ProtocolError("bad-field", "control frame lacks a string 'type'")
    cls = MESSAGES.get(kind)
    if cls is None:
        raise ProtocolError("unknown-type", f"unknown message type {kind[:40]!r}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        ftype, optional = _field_kind(cls, f.name)
        if f.name not in obj:
            if optional:
                values[f.name] = None
                continue
            raise ProtocolError("bad-field", f"field {f.name!r} is missing from {kind}")
        value = obj[f.name]
        if value is None and optional:
            values[f.name] = None
        elif ftype == "int":
            values[f.name] = _check_int(f.name, value)
        elif ftype == "float":
            values[f.name] = _check_float(f.name, value)
        elif ftype == "str":
            values[f.name] = _check_str(f.name, value)
        else:
            if type(value) is not list or len(value) > MAX_PEERS:
                raise ProtocolError("bad-field", "field 'peers' must be a list of at most "
                                                 f"{MAX_PEERS} peers")
            values[f.name] = [_check_peer(p) for p in value]
    return _validate(cls(**values))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_frame(frame: Frame) -> Message | DataFrame:
    if frame.kind == KIND_DATA:
        return DataFrame(frame.payload)
    return decode_message(frame.payload)


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole frames; memory stays bounded."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: tuple[int, int] | None = None

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._need is None:
                if len(self._buf) < HEADER_SIZE:
                    return frames
                self._need = check_header(bytes(self._buf[:HEADER_SIZE]))
                del self._buf[:HEADER_SIZE]
            kind, length = self._need
            if len(self._buf) < length:
                return frames
            frames.append(Frame(kind, bytes(self._buf[:length])))
            del self._buf[:length]
            self._need = None

    @property
    def pending(self) -> int:
        return len(self._buf) + (HEADER_SIZE if self._need else 0)

    def eof(self) -> None:
        if self._buf or self._need is not None:
            raise ProtocolError("truncated", "connection closed in the middle of a frame")

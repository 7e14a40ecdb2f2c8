"""Fuzzing the frame codec (``swift.protocol``): nothing a peer sends may raise anything
but ``ProtocolError``, and everything swift itself sends must decode to what was sent.

Why this matters: every byte that reaches ``FrameDecoder`` / ``decode_message``
comes from a machine on the LAN that may be hostile (without a shared secret,
from anyone). An exception other than ``ProtocolError`` escapes the servers'
"bad frame → error frame, close" path; a frame that swift encodes but cannot
decode (or decodes differently) breaks interoperability between honest nodes.

Pure and fast: no processes, no sockets (the same promise over a real
connection, ``wire.Connection.recv``, is fuzzed in tests/live/test_wire.py). The whole file runs in well under 20 s with thousands of examples.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st

from swift import protocol
from swift.protocol import (MAX_CONTROL, MAX_DATA, MAX_OFFSET, DataFrame, FrameDecoder, Message,
                            ProtocolError)
from tests.helpers import examples


def fuzz(thorough: int) -> settings:
    """Many examples (``thorough`` with SWIFT_FUZZ_SCALE=1, a quarter by default: see
    tests/helpers.py), no per-example deadline (the machine is shared), no health check
    complaining that large generated frames are slow to build."""
    return settings(max_examples=examples(thorough), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def frame(kind: int, payload: bytes, version: int = protocol.PROTOCOL_VERSION) -> bytes:
    return struct.pack(">BBI", version, kind, len(payload)) + payload


def control(obj) -> bytes:
    return frame(protocol.KIND_CONTROL, json.dumps(obj).encode())


# -- strategies: every message type, with valid field values ------------------------------------
# Conservative valid values, as docs/protocol.md describes them: strings without
# control characters or lone surrogates (both refused on the wire, see the named
# cases below), hosts not empty, nonces and proofs 64 lowercase hex digits.
CLEAN = st.characters(blacklist_categories=("Cc", "Cs"))
#: HTTP field values as requests gives them: Latin-1 without C0 controls (tab aside) or DEL
FIELD = st.characters(min_codepoint=0x09, max_codepoint=0xFF).filter(
    lambda c: c == "\t" or (c >= " " and c != "\x7f"))
TOKEN = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                min_size=1, max_size=40)


def text(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(CLEAN, min_size=min_size, max_size=limit)


hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
offsets = st.integers(0, MAX_OFFSET)
ports = st.integers(1, 65535)
slots = st.integers(1, 64)
versions = st.integers(0, 255)
ages = st.floats(0, 1e9, allow_nan=False, allow_infinity=False)
hosts = text(255, min_size=1)
peer_infos = st.builds(protocol.PeerInfo, host=hosts, port=ports, name=text(255), slots=slots,
                       age=ages)


@st.composite
def fetches(draw) -> protocol.Fetch:
    size = draw(st.integers(1, MAX_OFFSET))
    end = draw(st.integers(1, size))
    start = draw(st.integers(0, end - 1))
    return protocol.Fetch(draw(offsets), draw(text(protocol.MAX_URL, min_size=1)), start, end, size,
                          draw(st.none() | st.text(FIELD, max_size=1024)),
                          draw(st.none() | st.text(FIELD, max_size=128)),
                          draw(st.none() | text(40, min_size=1)),
                          draw(st.lists(st.tuples(TOKEN, st.text(FIELD, max_size=200)).map(list),
                                        max_size=8)))


@st.composite
def helds(draw) -> protocol.Held:
    """A ``held`` answer: sorted, non-touching ranges inside the size, hashes by piece index."""
    piece = draw(st.sampled_from([1 << 20, 1 << 21, 1 << 30]))
    size = draw(st.integers(0, 1 << 40))
    cuts = sorted(draw(st.sets(st.integers(0, size), max_size=12))) if size else []
    ranges = [[a, b] for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
    ranges = [r for i, r in enumerate(ranges) if i == 0 or ranges[i - 1][1] < r[0]]
    pieces = -(-size // piece)
    indexes = sorted(draw(st.sets(st.integers(0, max(0, pieces - 1)), max_size=20))) if pieces else []
    cuts = sorted(draw(st.sets(st.integers(0, size), max_size=6))) if size else []
    fetching = [[a, b] for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
    fetching = [r for i, r in enumerate(fetching) if i == 0 or fetching[i - 1][1] < r[0]]
    return protocol.Held(draw(hexes), size, piece, ranges, [[i, draw(hexes)] for i in indexes],
                         fetching, draw(st.none() | hexes))


@st.composite
def fetch_copies(draw) -> protocol.FetchCopy:
    size = draw(st.integers(1, MAX_OFFSET))
    end = draw(st.integers(1, size))
    return protocol.FetchCopy(draw(offsets), draw(hexes), draw(st.integers(0, end - 1)), end, size)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(protocol.Hello, version=versions, name=text(255), nonce=st.none() | hexes),
    st.builds(protocol.Welcome, version=versions, name=text(255), nonce=st.none() | hexes,
              proof=st.none() | hexes),
    st.builds(protocol.Auth, proof=hexes),
    st.just(protocol.Ready()),
    # any message text: hostile text is made safe when the Error is built
    st.builds(protocol.Error, code=text(64, min_size=1), message=st.text(max_size=300)),
    st.builds(protocol.Register, host=hosts, port=ports, name=text(255), slots=slots),
    st.builds(protocol.Heartbeat, host=hosts, port=ports, name=text(255), slots=slots),
    st.builds(protocol.Unregister, host=hosts, port=ports),
    st.just(protocol.ListPeers()),
    st.builds(protocol.Ok, lease=st.none() | ages),
    st.builds(protocol.Peers, peers=st.lists(peer_infos, max_size=40)),
    fetches(),
    st.builds(protocol.Shrink, job_id=offsets, end=offsets),
    st.builds(protocol.Keepalive, job_id=offsets),
    st.builds(protocol.Done, job_id=offsets, length=offsets),
    st.just(protocol.Ping()),
    st.builds(protocol.Pong, name=text(255), slots=st.integers(0, 64), busy=st.integers(0, 1 << 16)),
    st.builds(protocol.Query, label=hexes),
    helds(),
    fetch_copies(),
)

#: What goes on the wire: control messages and data frames, interleaved.
items = st.one_of(messages, st.binary(max_size=2048).map(DataFrame))


def encode(item) -> bytes:
    if isinstance(item, DataFrame):
        return protocol.encode_data(item.payload)
    return protocol.encode_message(item)


def decode_all(data: bytes) -> list:
    """Everything a receiver would do with ``data``: frames, then messages, then EOF."""
    dec = FrameDecoder()
    out = [protocol.parse_frame(f) for f in dec.feed(data)]
    dec.eof()
    return out


# -- round trips ---------------------------------------------------------------------------------
@fuzz(1000)
@given(messages)
def test_every_message_round_trips(msg):
    try:
        raw = protocol.encode_message(msg)
    except ProtocolError as exc:
        # only a message whose JSON really exceeds the limit may be refused
        assert exc.code == "too-large"
        assert len(json.dumps(protocol.to_dict(msg), ensure_ascii=False,
                              separators=(",", ":")).encode()) > MAX_CONTROL
        return
    version, kind, length = struct.unpack(">BBI", raw[:6])
    assert (version, kind, length) == (protocol.PROTOCOL_VERSION, protocol.KIND_CONTROL, len(raw) - 6)
    assert length <= MAX_CONTROL
    (back,) = decode_all(raw)
    assert back == msg and type(back) is type(msg)


@fuzz(400)
@given(st.lists(items, min_size=1, max_size=8), st.lists(st.integers(0, 1 << 20), max_size=12))
def test_a_stream_cut_anywhere_decodes_the_same(sequence, cuts):
    """TCP delivers bytes in arbitrary pieces; the decoder must not care where the cuts fall."""
    chunks = []
    for item in sequence:
        try:
            chunks.append(encode(item))
        except ProtocolError:
            return  # too large to send at all (checked in the round-trip test)
    data = b"".join(chunks)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    dec = FrameDecoder()
    frames = []
    for a, b in zip(points, points[1:]):
        frames += dec.feed(data[a:b])
        assert dec.pending <= max(len(c) for c in chunks)  # never more than one frame buffered
    dec.eof()
    got = [protocol.parse_frame(f) for f in frames]
    assert len(got) == len(sequence)
    for want, have in zip(sequence, got):
        if isinstance(want, DataFrame):
            assert isinstance(have, DataFrame) and bytes(have.payload) == want.payload
        else:
            assert have == want


@fuzz(300)
@given(items, st.data())
def test_a_stream_that_stops_inside_a_frame_is_truncated(item, data):
    try:
        raw = encode(item)
    except ProtocolError:
        return
    stop = data.draw(st.integers(1, len(raw) - 1))
    dec = FrameDecoder()
    assert dec.feed(raw[:stop]) == []
    with pytest.raises(ProtocolError) as exc:
        dec.eof()
    assert exc.value.code == "truncated"


# -- hostile input: only ever ProtocolError --------------------------------------------------------
@fuzz(3000)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_protocol_error(data):
    try:
        accepted = decode_all(data)
    except ProtocolError as exc:
        assert exc.code in protocol.ERROR_CODES
    else:  # whatever was accepted can be sent on again, unchanged
        for item in accepted:
            if not isinstance(item, DataFrame):
                assert protocol.decode_message(protocol.encode_message(item)[protocol.HEADER_SIZE:]) == item
    try:
        protocol.decode_message(data)
    except ProtocolError:
        pass


@fuzz(1500)
@given(st.binary(min_size=6, max_size=300))
def test_random_payload_behind_a_valid_header(payload):
    """Past the header check: arbitrary bytes as a control payload."""
    try:
        decode_all(frame(protocol.KIND_CONTROL, payload))
    except ProtocolError:
        pass


@st.composite
def mutated_streams(draw) -> tuple[bytes, bool]:
    sequence = draw(st.lists(items, min_size=1, max_size=4))
    try:
        data = bytearray(b"".join(encode(i) for i in sequence))
    except ProtocolError:
        data = bytearray(protocol.encode_message(protocol.Ping()))
    original = bytes(data)
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "length", "head"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "length" and len(data) >= 6:
            data[2:6] = struct.pack(">I", draw(st.sampled_from(
                [0, 1, MAX_CONTROL, MAX_CONTROL + 1, MAX_DATA, MAX_DATA + 1, 2**31, 2**32 - 1])
                | st.integers(0, 2**32 - 1)))
        elif op == "head" and len(data) >= 2:
            data[draw(st.integers(0, 1))] = draw(st.integers(0, 255))
    return bytes(data), bytes(data) != original


@fuzz(1500)
@given(mutated_streams(), st.integers(1, 64))
def test_mutated_frames_only_raise_protocol_error(stream, step):
    data, _ = stream
    dec = FrameDecoder()
    try:
        frames = []
        for i in range(0, len(data), step):
            frames += dec.feed(data[i:i + step])
        for f in frames:
            out = protocol.parse_frame(f)
            assert isinstance(out, (Message, DataFrame))
        dec.eof()
    except ProtocolError as exc:
        assert exc.code and str(exc)


# -- arbitrary JSON objects: strict field checks -------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=4)
#: Values at and around every bound the protocol has, plus the classic type confusions.
EDGE_VALUES = [0, 1, -1, 63, 64, 65, 255, 256, 65535, 65536, 1 << 20, (1 << 20) + 1, MAX_OFFSET,
               MAX_OFFSET + 1, 2**63, 1e9, 1e9 + 1, -0.0, 0.5, 1.0, True, False, None, "", "a",
               "0" * 64, "f" * 64, "F" * 64, "g" * 64, "0" * 63, "h" * 255, "h" * 256, "a\nb",
               "a\x00b", "\u202e", "é" * 10, "http://127.0.0.1/x", "h" * protocol.MAX_URL,
               "h" * (protocol.MAX_URL + 1), [], {}, [1], {"a": 1}]
FIELD_NAMES = sorted({name for cls in protocol.MESSAGES.values()
                      for name in cls.__dataclass_fields__} | {"host", "port", "name", "slots", "age"})
field_values = st.sampled_from(EDGE_VALUES) | json_values


@st.composite
def json_messages(draw) -> dict:
    known = draw(st.integers(0, 9)) > 0
    kind = draw(st.sampled_from(sorted(protocol.MESSAGES)) if known else st.text(max_size=12))
    obj = {"type": kind}
    cls = protocol.MESSAGES.get(kind)
    names = list(cls.__dataclass_fields__) if cls else []
    # mostly the type's own fields (so some objects pass and the checks on success run)
    for name in names:
        if draw(st.integers(0, 9)):
            obj[name] = draw(field_values)
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=3)):
        obj[name] = draw(field_values)
    if "peers" in obj and draw(st.booleans()):
        obj["peers"] = draw(st.lists(st.fixed_dictionaries(
            {k: field_values for k in ("host", "port", "name", "slots", "age")}), max_size=3))
    return obj


def assert_in_bounds(msg: Message) -> None:
    """A decoded message honours every bound the codec promises."""
    for name, value in vars(msg).items():
        if isinstance(value, bool):
            raise AssertionError(f"{name} decoded as a boolean")
        if isinstance(value, int):
            assert 0 <= value <= MAX_OFFSET, (name, value)
        elif isinstance(value, float):
            assert math.isfinite(value) and 0 <= value <= 1e9
        elif isinstance(value, str):
            assert len(value) <= protocol.MAX_URL
        elif isinstance(value, list) and isinstance(msg, protocol.Held):
            assert len(value) <= protocol.MAX_PIECE_HASHES
        elif isinstance(value, list):
            assert len(value) <= protocol.MAX_PEERS
            for peer in value:
                assert isinstance(peer, protocol.PeerInfo)
                assert 1 <= peer.port <= 65535 and 0 <= peer.slots <= 64
    if isinstance(msg, (protocol.Fetch, protocol.FetchCopy)):
        assert 0 <= msg.start < msg.end <= msg.size
    if isinstance(msg, protocol.Held):
        ends = [e for r in msg.ranges for e in r]
        assert ends == sorted(ends) and len(set(ends)) == len(ends) and all(e <= msg.size for e in ends)
        assert all(len(h) == 64 for _, h in msg.hashes)


@fuzz(1200)
@given(json_messages())
def test_arbitrary_json_objects_are_checked_field_by_field(obj):
    payload = json.dumps(obj).encode()
    assume(len(payload) <= MAX_CONTROL)
    try:
        msg = protocol.decode_message(payload)
    except ProtocolError as exc:
        event(f"refused: {exc.code}")
        return
    event("accepted")
    assert type(msg) is protocol.MESSAGES[obj["type"]]
    assert_in_bounds(msg)
    # what was accepted can be passed on (discovery re-sends what nodes registered)
    again = protocol.decode_message(protocol.encode_message(msg)[protocol.HEADER_SIZE:])
    assert again == msg


# -- boundaries and named hostile inputs --------------------------------------------------------------
def fetch_obj(**kw) -> dict:
    obj = {"type": "fetch", "job_id": 1, "url": "http://h/x", "start": 0, "end": 10, "size": 10,
           "etag": None, "last_modified": None, "encoding": None}
    obj.update(kw)
    return obj


def held_obj(**kw) -> dict:
    obj = {"type": "held", "label": "a" * 64, "size": 4 << 20, "piece_size": 1 << 20,
           "ranges": [[0, 1 << 20]], "hashes": [[0, "b" * 64]]}
    obj.update(kw)
    return obj


HOSTILE_PAYLOADS = {
    "held ranges overlapping": (json.dumps(held_obj(ranges=[[0, 10], [5, 20]])).encode(), "bad-field"),
    "held ranges touching": (json.dumps(held_obj(ranges=[[0, 10], [10, 20]])).encode(), "bad-field"),
    "held range past the size": (json.dumps(held_obj(ranges=[[0, 5 << 20]])).encode(), "bad-field"),
    "held hash of a piece past the end": (json.dumps(held_obj(hashes=[[4, "b" * 64]])).encode(), "bad-field"),
    "held fetching past the size": (json.dumps(held_obj(fetching=[[0, 5 << 20]])).encode(), "bad-field"),
    "held holder not hex": (json.dumps(held_obj(holder="x" * 64)).encode(), "bad-field"),
    "held hash not hex": (json.dumps(held_obj(hashes=[[0, "B" * 64]])).encode(), "bad-field"),
    "held hashes out of order": (json.dumps(held_obj(hashes=[[1, "b" * 64], [0, "b" * 64]])).encode(), "bad-field"),
    "held piece size below 1 MiB": (json.dumps(held_obj(piece_size=4096)).encode(), "bad-field"),
    "held too many ranges": (json.dumps(held_obj(size=1 << 40, hashes=[], ranges=[[2 * i, 2 * i + 1] for i in range(1025)])).encode(), "bad-field"),
    "query label too short": (json.dumps({"type": "query", "label": "ab"}).encode(), "bad-field"),
    "fetch_copy beyond the file": (json.dumps({"type": "fetch_copy", "job_id": 1, "label": "a" * 64, "start": 0, "end": 11, "size": 10}).encode(), "bad-field"),

    "empty payload": (b"", "bad-json"),
    "invalid utf-8": (b'{"type":"\xff\xfe"}', "bad-utf8"),
    "overlong utf-8 slash": (b'{"type":"ping","x":"\xc0\xaf"}', "bad-utf8"),
    "invalid json": (b'{"type":', "bad-json"),
    "byte order mark": ('\ufeff{"type":"ping"}'.encode(), "bad-json"),
    "json array": (b"[1,2,3]", "bad-json"),
    "json string": (b'"ping"', "bad-json"),
    "json number": (b"42", "bad-json"),
    "json null": (b"null", "bad-json"),
    "NaN": (b'{"type":"ok","lease":NaN}', "bad-json"),
    "Infinity": (b'{"type":"ok","lease":Infinity}', "bad-json"),
    "float overflow to inf": (b'{"type":"ok","lease":1e400}', "bad-field"),
    "deep nesting": (b'{"type":"ping","x":' + b"[" * 30000 + b"]" * 30000 + b"}", "bad-json"),
    "no type": (b'{"job_id":1}', "bad-field"),
    "type not a string": (b'{"type":7}', "bad-field"),
    "unknown type": (b'{"type":"format_disk"}', "unknown-type"),
    "missing field": (json.dumps({"type": "done", "job_id": 1}).encode(), "bad-field"),
    "null for a required field": (json.dumps({"type": "done", "job_id": 1, "length": None}).encode(), "bad-field"),
    "boolean as integer": (json.dumps({"type": "keepalive", "job_id": True}).encode(), "bad-field"),
    "float as integer": (json.dumps({"type": "keepalive", "job_id": 1.0}).encode(), "bad-field"),
    "string as integer": (json.dumps({"type": "keepalive", "job_id": "1"}).encode(), "bad-field"),
    "negative job id": (json.dumps({"type": "keepalive", "job_id": -1}).encode(), "bad-field"),
    "offset beyond 2**62": (json.dumps({"type": "keepalive", "job_id": 2**62 + 1}).encode(), "bad-field"),
    "4000-digit integer": (b'{"type":"keepalive","job_id":' + b"9" * 4000 + b"}", "bad-field"),
    "5000-digit integer": (b'{"type":"keepalive","job_id":' + b"9" * 5000 + b"}", "bad-json"),
    "port 0": (json.dumps({"type": "unregister", "host": "h", "port": 0}).encode(), "bad-field"),
    "port 65536": (json.dumps({"type": "unregister", "host": "h", "port": 65536}).encode(), "bad-field"),
    "slots 65": (json.dumps({"type": "register", "host": "h", "port": 1, "name": "n", "slots": 65}).encode(), "bad-field"),
    "negative lease": (json.dumps({"type": "ok", "lease": -1}).encode(), "bad-field"),
    "name too long": (json.dumps({"type": "pong", "name": "n" * 256, "slots": 1, "busy": 0}).encode(), "bad-field"),
    "url too long": (json.dumps(fetch_obj(url="h" * (protocol.MAX_URL + 1))).encode(), "bad-field"),
    "inverted range": (json.dumps(fetch_obj(start=5, end=1)).encode(), "bad-field"),
    "empty range": (json.dumps(fetch_obj(start=5, end=5)).encode(), "bad-field"),
    "range beyond the file": (json.dumps(fetch_obj(end=11)).encode(), "bad-field"),
    "negative start": (json.dumps(fetch_obj(start=-1)).encode(), "bad-field"),
    "peers not a list": (json.dumps({"type": "peers", "peers": {"a": 1}}).encode(), "bad-field"),
    "peer not an object": (json.dumps({"type": "peers", "peers": [1]}).encode(), "bad-field"),
    "peer lacks a field": (json.dumps({"type": "peers", "peers": [{"host": "h"}]}).encode(), "bad-field"),
    "too many peers": (json.dumps({"type": "peers", "peers": [
        {"host": "", "port": 1, "name": "", "slots": 0, "age": 0}] * (protocol.MAX_PEERS + 1)}).encode(),
        "bad-field"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PAYLOADS))
def test_named_hostile_payloads(name):
    payload, code = HOSTILE_PAYLOADS[name]
    assert len(payload) <= MAX_CONTROL, "keep the case inside the frame limit"
    with pytest.raises(ProtocolError) as exc:
        decode_all(frame(protocol.KIND_CONTROL, payload))
    assert exc.value.code == code, str(exc.value)


def test_bounds_are_inclusive_and_exact():
    ok = [
        {"type": "pong", "name": "n" * protocol.MAX_NAME, "slots": 64, "busy": 1 << 16},
        fetch_obj(url="h" * protocol.MAX_URL, start=0, end=MAX_OFFSET, size=MAX_OFFSET),
        {"type": "unregister", "host": "h", "port": 65535},
        {"type": "ok", "lease": 1e9},
        {"type": "keepalive", "job_id": MAX_OFFSET},
        # keys a receiver does not know are ignored (forward compatibility)
        {"type": "ping", "future_field": {"nested": [1, 2]}},
    ]
    for obj in ok:
        msg = protocol.decode_message(json.dumps(obj).encode())
        assert msg.TYPE == obj["type"]


@pytest.mark.parametrize("version,kind,length,code", [
    (0, 1, 2, "bad-version"), (2, 1, 2, "bad-version"), (255, 1, 2, "bad-version"),
    (1, 0, 2, "unknown-kind"), (1, 3, 2, "unknown-kind"), (1, 255, 2, "unknown-kind"),
    (1, 1, MAX_CONTROL + 1, "too-large"), (1, 1, 2**32 - 1, "too-large"),
    (1, 2, MAX_DATA + 1, "too-large"), (1, 2, 2**32 - 1, "too-large"),
])
def test_bad_headers_are_refused_before_any_payload(version, kind, length, code):
    """The decoder refuses on the 6 header bytes alone: a hostile length costs nothing."""
    dec = FrameDecoder()
    with pytest.raises(ProtocolError) as exc:
        dec.feed(struct.pack(">BBI", version, kind, length))
    assert exc.value.code == code


def test_largest_allowed_frames_pass():
    assert protocol.check_header(struct.pack(">BBI", 1, 1, MAX_CONTROL)) == (1, MAX_CONTROL)
    assert protocol.check_header(struct.pack(">BBI", 1, 2, MAX_DATA)) == (2, MAX_DATA)
    big = bytes(range(256)) * (MAX_DATA // 256)
    (back,) = decode_all(protocol.encode_data(big))
    assert bytes(back.payload) == big
    with pytest.raises(ProtocolError):
        protocol.encode_data(big + b"x")
    crowd = protocol.Peers([protocol.PeerInfo("h" * 255, 1, "n" * 255, 1, 0.0)] * protocol.MAX_PEERS)
    with pytest.raises(ProtocolError) as exc:
        protocol.encode_message(crowd)
    assert exc.value.code == "too-large"


@pytest.mark.parametrize("payload", [
    b'{"type":"register","host":"127.0.0.1","port":9,"name":"\\ud800evil","slots":1}',
    b'{"type":"hello","version":1,"name":"\\udfff","nonce":null}',
    b'{"type":"error","code":"x","message":"\\udc80"}',
])
def test_lone_surrogates_are_refused_or_can_be_sent_on(payload):
    """What a receiver accepts it must be able to re-send (discovery re-sends registered
    names in every peer list): a lone surrogate must be a ProtocolError at decode time."""
    try:
        msg = protocol.decode_message(payload)
    except ProtocolError:
        return
    protocol.encode_message(msg)  # must not raise UnicodeEncodeError


@pytest.mark.parametrize("char", ["\u0085", "\u009b", "\u009d"])
def test_c1_control_characters_are_refused_in_names(char):
    payload = json.dumps({"type": "register", "host": "127.0.0.1", "port": 9,
                          "name": f"evil{char}[2J", "slots": 1}).encode()
    with pytest.raises(ProtocolError) as exc:
        protocol.decode_message(payload)
    assert exc.value.code == "bad-field"

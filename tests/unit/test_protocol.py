"""The pure codec: named round trips and every error code (no sockets here).

Generated input (round trips, cut streams, random and mutated bytes, arbitrary
JSON objects) is in test_protocol_fuzz.py.
"""

from __future__ import annotations

import json
import struct

import pytest

from swift import auth, protocol
from swift.protocol import (DataFrame, Frame, FrameDecoder, ProtocolError, decode_message,
                            encode_data, encode_data_header, encode_message, parse_frame)

NONCE = "0123456789abcdef" * 4


def frame(kind: int, payload: bytes, version: int = protocol.PROTOCOL_VERSION) -> bytes:
    return struct.pack(">BBI", version, kind, len(payload)) + payload


def control(obj) -> bytes:
    return json.dumps(obj).encode()


def decode_error(payload: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as exc:
        decode_message(payload)
    return exc.value


EXAMPLES = [
    protocol.Hello(1, "alice", None), protocol.Hello(1, "bob", NONCE),
    protocol.Welcome(1, "srv", None, None), protocol.Welcome(1, "srv", NONCE, NONCE[::-1]),
    protocol.Auth(NONCE), protocol.Ready(), protocol.Error("busy", "all slots are busy"),
    protocol.Register("127.0.0.1", 8000, "n1", 4), protocol.Heartbeat("::1", 65535, "n2", 64),
    protocol.Unregister("localhost", 1), protocol.ListPeers(), protocol.Ok(9.0), protocol.Ok(None),
    protocol.Peers([]), protocol.Peers([protocol.PeerInfo("127.0.0.2", 9, "p", 1, 0.25),
                                        protocol.PeerInfo("::1", 10, "q", 2, 3.0)]),
    protocol.Fetch(7, "http://127.0.0.1:8/f.bin", 0, 10, 10, '"etag"', None),
    protocol.Fetch(8, "https://localhost/x?y=1", 5, 6, 1 << 40, None, "Tue, 01 Jan 2030 00:00:00 GMT"),
    protocol.Shrink(7, 5), protocol.Keepalive(7), protocol.Done(7, 10), protocol.Ping(),
    protocol.Pong("discovery", 0, 3), protocol.Pong("node", 4, 4),
    protocol.Query(NONCE),
    protocol.Held(NONCE, 5 << 20, 1 << 20, [[0, 2 << 20], [3 << 20, 5 << 20]],
                  [[0, NONCE], [1, NONCE], [3, NONCE], [4, NONCE]]),
    protocol.Held(NONCE, 0, 1 << 20, [], []),
    protocol.Held(NONCE, 5 << 20, 1 << 20, [[0, 1 << 20]], [[0, NONCE]], [[1 << 20, 3 << 20]], NONCE),
    protocol.FetchCopy(9, NONCE, 1 << 20, 2 << 20, 5 << 20),
]


def test_the_largest_held_answer_fits_a_control_frame():
    """Every piece of a file hashed (4096) and the most ranges: still one frame."""
    size = 4096 << 20
    ranges = [[i * 2 << 20, (i * 2 + 1) << 20] for i in range(1024)]
    held = protocol.Held("f" * 64, size, 1 << 20, ranges, [[i, "f" * 64] for i in range(4096)],
                         [[a + (1 << 19), a + (3 << 19)] for a, _ in ranges], "f" * 64)
    assert decode_message(encode_message(held)[6:]) == held


# -- round trips ----------------------------------------------------------------------------------
def test_every_message_type_has_an_example():
    assert {type(m) for m in EXAMPLES} == set(protocol.MESSAGES.values())


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    raw = encode_message(msg)
    version, kind, length = struct.unpack(">BBI", raw[:6])
    assert (version, kind, length) == (protocol.PROTOCOL_VERSION, protocol.KIND_CONTROL, len(raw) - 6)
    obj = json.loads(raw[6:])
    assert obj["type"] == msg.TYPE
    assert decode_message(raw[6:]) == msg
    frames = FrameDecoder().feed(raw)
    assert frames == [Frame(protocol.KIND_CONTROL, raw[6:])]
    assert parse_frame(frames[0]) == msg


def test_field_names_on_the_wire():
    assert json.loads(encode_message(EXAMPLES[15])[6:]) == {
        "type": "fetch", "job_id": 7, "url": "http://127.0.0.1:8/f.bin", "start": 0, "end": 10,
        "size": 10, "etag": '"etag"', "last_modified": None, "encoding": None, "headers": [],
        "mirrors": []}
    assert json.loads(encode_message(protocol.Peers([protocol.PeerInfo("h", 1, "n", 2, 0.5)]))[6:]) \
        == {"type": "peers", "peers": [{"host": "h", "port": 1, "name": "n", "slots": 2, "age": 0.5}]}


def test_data_frames():
    raw = encode_data(b"abc")
    assert raw == encode_data_header(3) + b"abc"
    assert FrameDecoder().feed(raw) == [Frame(protocol.KIND_DATA, b"abc")]
    assert parse_frame(Frame(protocol.KIND_DATA, b"abc")) == DataFrame(b"abc")
    assert FrameDecoder().feed(encode_data(b"")) == [Frame(protocol.KIND_DATA, b"")]
    assert len(encode_data(memoryview(bytes(protocol.MAX_DATA)))) == protocol.MAX_DATA + 6


def test_unknown_keys_are_ignored_and_ints_fit_float_fields():
    assert decode_message(b'{"type":"keepalive","job_id":3,"future":[1,{"x":2}]}') == \
        protocol.Keepalive(3)
    assert decode_message(b'{"type":"ok","lease":9}') == protocol.Ok(9.0)


# -- every error code -----------------------------------------------------------------------------
@pytest.mark.parametrize("raw,code", [
    (frame(1, b'{"type":"ping"}', version=0), "bad-version"),
    (frame(1, b'{"type":"ping"}', version=2), "bad-version"),
    (frame(0, b""), "unknown-kind"),
    (frame(3, b"x"), "unknown-kind"),
    (struct.pack(">BBI", 1, 1, protocol.MAX_CONTROL + 1), "too-large"),
    (struct.pack(">BBI", 1, 2, protocol.MAX_DATA + 1), "too-large"),
    (struct.pack(">BBI", 1, 2, 0xFFFFFFFF), "too-large"),
])
def test_bad_headers_fail_before_any_payload(raw, code):
    dec = FrameDecoder()
    with pytest.raises(ProtocolError) as exc:
        dec.feed(raw[:6])  # the header alone is enough to refuse
    assert exc.value.code == code
    with pytest.raises(ProtocolError):
        dec.feed(encode_message(protocol.Ping()))  # the stream stays refused
    with pytest.raises(ProtocolError) as exc:
        protocol.check_header(raw[:6])
    assert exc.value.code == code


def test_largest_frames_pass_the_header_check():
    assert protocol.check_header(struct.pack(">BBI", 1, 1, protocol.MAX_CONTROL)) == (1, protocol.MAX_CONTROL)
    assert protocol.check_header(struct.pack(">BBI", 1, 2, protocol.MAX_DATA)) == (2, protocol.MAX_DATA)


def test_truncated():
    raw = encode_message(protocol.Done(1, 2))
    for cut in (1, 5, 6, len(raw) - 1):
        dec = FrameDecoder()
        assert dec.feed(raw[:cut]) == []
        assert dec.pending == cut
        with pytest.raises(ProtocolError) as exc:
            dec.eof()
        assert exc.value.code == "truncated"
    dec = FrameDecoder()
    dec.feed(raw)
    dec.eof()  # between frames: fine


@pytest.mark.parametrize("payload,code", [
    (b'{"type":"\xff\xfe"}', "bad-utf8"),
    (b'{"type":"ping"}\xc3', "bad-utf8"),
    (b'{"type":', "bad-json"),
    (b"", "bad-json"),
    (b"[1,2,3]", "bad-json"),
    (b'"ping"', "bad-json"),
    (b'{"type":"ok","lease":NaN}', "bad-json"),
    (b'{"type":"ok","lease":Infinity}', "bad-json"),
    (b"[" * 50000 + b"]" * 50000, "bad-json"),
    (b'{"type":"done","job_id":1,"length":' + b"9" * 5000 + b"}", "bad-json"),
    (b'{"type":"format_disk"}', "unknown-type"),
    (b'{"type":"Ping"}', "unknown-type"),
    (b'{"kind":"ping"}', "bad-field"),
    (b'{"type":7}', "bad-field"),
])
def test_bad_control_payloads(payload, code):
    assert decode_error(payload).code == code


BAD_FIELDS = {
    "missing field": {"type": "done", "job_id": 1},
    "missing optional key": {"type": "hello", "version": 1, "name": "x"},
    "bool as int": {"type": "shrink", "job_id": True, "end": 1},
    "float as int": {"type": "shrink", "job_id": 1.0, "end": 1},
    "string as int": {"type": "shrink", "job_id": "1", "end": 1},
    "negative job": {"type": "keepalive", "job_id": -1},
    "huge offset": {"type": "done", "job_id": 1, "length": 1 << 63},
    "null for required": {"type": "keepalive", "job_id": None},
    "port zero": {"type": "unregister", "host": "h", "port": 0},
    "port too big": {"type": "unregister", "host": "h", "port": 65536},
    "empty host": {"type": "unregister", "host": "", "port": 1},
    "slots zero": {"type": "register", "host": "h", "port": 1, "name": "n", "slots": 0},
    "slots 65": {"type": "heartbeat", "host": "h", "port": 1, "name": "n", "slots": 65},
    "long name": {"type": "pong", "name": "n" * 256, "slots": 1, "busy": 0},
    "newline in name": {"type": "pong", "name": "a\nb", "slots": 1, "busy": 0},
    "lone surrogate": {"type": "pong", "name": "\ud800", "slots": 1, "busy": 0},
    "negative busy": {"type": "pong", "name": "n", "slots": 1, "busy": -1},
    "bool as float": {"type": "ok", "lease": True},
    "negative lease": {"type": "ok", "lease": -1},
    "inverted range": {"type": "fetch", "job_id": 1, "url": "http://h/", "start": 5, "end": 1,
                       "size": 10, "etag": None, "last_modified": None},
    "empty range": {"type": "fetch", "job_id": 1, "url": "http://h/", "start": 5, "end": 5,
                    "size": 10, "etag": None, "last_modified": None},
    "range beyond size": {"type": "fetch", "job_id": 1, "url": "http://h/", "start": 0, "end": 11,
                          "size": 10, "etag": None, "last_modified": None},
    "long url": {"type": "fetch", "job_id": 1, "url": "http://h/" + "a" * 8192, "start": 0,
                 "end": 1, "size": 1, "etag": None, "last_modified": None},
    "header injection in etag": {"type": "fetch", "job_id": 1, "url": "http://h/", "start": 0,
                                 "end": 1, "size": 1, "etag": '"a"\r\nX-Evil: 1',
                                 "last_modified": None},
    "short nonce": {"type": "hello", "version": 1, "name": "x", "nonce": "abc"},
    "uppercase nonce": {"type": "hello", "version": 1, "name": "x", "nonce": NONCE.upper()},
    "proof not hex": {"type": "auth", "proof": "g" * 64},
    "peers not a list": {"type": "peers", "peers": {"host": "h"}},
    "too many peers": {"type": "peers", "peers": [
        {"host": "h", "port": 1, "name": "", "slots": 1, "age": 0}] * (protocol.MAX_PEERS + 1)},
    "peer not an object": {"type": "peers", "peers": [1]},
    "peer lacks a field": {"type": "peers", "peers": [{"host": "h", "port": 1, "name": "n",
                                                      "slots": 1}]},
    "error code empty": {"type": "error", "code": "", "message": "m"},
    "error message not text": {"type": "error", "code": "c", "message": 5},
}


@pytest.mark.parametrize("name", sorted(BAD_FIELDS))
def test_bad_fields(name):
    err = decode_error(control(BAD_FIELDS[name]))
    assert err.code == "bad-field", err
    assert str(err)  # a human message too


def test_at_the_limits_is_fine():
    assert decode_message(control({"type": "fetch", "job_id": protocol.MAX_OFFSET,
                                   "url": "u" * protocol.MAX_URL, "start": 0, "end": 1, "size": 1,
                                   "etag": None, "last_modified": None, "encoding": None})).job_id == protocol.MAX_OFFSET
    assert decode_message(control({"type": "pong", "name": "n" * 255, "slots": 64, "busy": 0}))
    assert len(decode_message(control({"type": "peers", "peers": [
        {"host": "h", "port": 65535, "name": "", "slots": 64, "age": 0}] * protocol.MAX_PEERS})).peers) \
        == protocol.MAX_PEERS


def test_encoding_checks_what_decoding_checks():
    for msg in (protocol.Register("h", 0, "n", 1), protocol.Fetch(1, "http://h/", 3, 3, 9),
                protocol.Shrink(True, 1), protocol.Pong("n", 65, 0), protocol.Auth("x"),
                protocol.Hello(1, "n" * 256), protocol.Ok(float("nan"))):
        with pytest.raises(ProtocolError) as exc:
            encode_message(msg)
        assert exc.value.code == "bad-field", msg
    peers = [protocol.PeerInfo("h" * 255, 1, "n" * 255, 1, 0.0)] * protocol.MAX_PEERS
    with pytest.raises(ProtocolError) as exc:
        encode_message(protocol.Peers(peers))
    assert exc.value.code == "too-large"
    with pytest.raises(ProtocolError) as exc:
        encode_data_header(protocol.MAX_DATA + 1)
    assert exc.value.code == "too-large"


def test_error_text_is_made_safe():
    err = protocol.Error("origin", "line one\r\nFAKE LOG LINE \x1b[31m \ud800 " + "x" * 5000)
    assert "\n" not in err.message and "\r" not in err.message and "\x1b" not in err.message
    assert "\ufffd" in err.message and len(err.message) == protocol.MAX_MESSAGE
    assert decode_message(encode_message(err)[6:]) == err
    received = decode_message(control({"type": "error", "code": "c", "message": "a\nb"}))
    assert received.message == "a b"
    assert protocol.Error("c", ValueError("boom")).message == "boom"


def test_unknown_type_text_is_made_safe():
    err = decode_error(control({"type": "evil\nline" + "x" * 100}))
    assert err.code == "unknown-type" and "\n" not in str(err) and len(str(err)) < 100


def test_decoder_memory_stays_bounded():
    dec = FrameDecoder()
    header = encode_data_header(protocol.MAX_DATA)
    assert dec.feed(header) == []
    chunk = bytes(64 * 1024)
    for _ in range(protocol.MAX_DATA // len(chunk) - 1):
        assert dec.feed(chunk) == []
        assert dec.pending <= protocol.MAX_DATA + protocol.HEADER_SIZE
    frames = dec.feed(chunk + encode_message(protocol.Ping()) + b"\x01")
    assert [f.kind for f in frames] == [protocol.KIND_DATA, protocol.KIND_CONTROL]
    assert len(frames[0].payload) == protocol.MAX_DATA and dec.pending == 1


def test_a_bad_header_after_good_frames_is_refused_at_once():
    dec = FrameDecoder()
    good = encode_message(protocol.Ping())
    with pytest.raises(ProtocolError) as exc:
        dec.feed(good + struct.pack(">BBI", 1, 2, 1 << 31) + b"x" * 10)
    assert exc.value.code == "too-large"


def test_nonces_are_what_the_protocol_accepts():
    nonce = auth.new_nonce()
    assert len(nonce) == protocol.NONCE_HEX and set(nonce) <= set("0123456789abcdef")
    assert decode_message(encode_message(protocol.Hello(1, "n", nonce))[6:]).nonce == nonce
    proof = auth.server_proof(b"s", nonce, auth.new_nonce(), bytes(32))
    assert decode_message(encode_message(protocol.Auth(proof))[6:]).proof == proof


@pytest.mark.parametrize("bad", ["A" * 64, "g" * 64, "\u0661" * 64, "a" * 63 + "\n", "a" * 63 + " "])
def test_a_hex_field_takes_only_lowercase_ascii_hex_digits(bad):
    assert protocol.HEX("label", "0123456789abcdef" * 4) == "0123456789abcdef" * 4
    with pytest.raises(ProtocolError, match="lowercase hex|characters long"):
        protocol.HEX("label", bad)


# -- limits at least HTTP's; who broke the rules ------------------------------------------------
def test_the_worst_fetch_with_a_64_KiB_url_and_64_KiB_of_headers_fits_one_control_frame():
    # each character at its most expensive: 4 bytes of UTF-8 in the URL, an escaped quote or a
    # 2-byte Latin-1 character in header values, the most pairs allowed
    url = "\U0001F600" * protocol.MAX_URL
    per_pair = protocol.MAX_HEADERS // protocol.MAX_HEADER_COUNT
    headers = [["X", '"' * (per_pair // 2 - 1) + "\xff" * (per_pair // 2)]] * protocol.MAX_HEADER_COUNT
    msg = protocol.Fetch(1, url, 0, 1, 1, "\xff" * 1024, '"' * 1024, "x" * 255, headers)
    raw = encode_message(msg)
    assert len(raw) - 6 <= protocol.MAX_CONTROL and decode_message(raw[6:]) == msg
    assert protocol.MAX_URL >= 64 * 1024 and protocol.MAX_HEADERS >= 16 * 1024


def test_validators_and_header_values_may_hold_obs_text():
    etag = '"caf\xe9\x85\xa0"'  # requests hands obs-text bytes over as Latin-1 characters
    msg = protocol.Fetch(1, "http://h/x", 0, 1, 1, etag, "Tue,\t01 Dec 2026 \x9b", None,
                         [["Cookie", "a=\x80\xff; b=2"]])
    assert decode_message(encode_message(msg)[6:]) == msg


@pytest.mark.parametrize("headers", [
    [["Cookie", "a\r\nX-Evil: 1"]], [["Cookie", "a\0"]], [["Bad Name", "v"]], [["", "v"]],
    [["Na:me", "v"]], [["X", "\u0100"]], [["X"]], [["X", "v", "w"]], ["X: v"],
    [["X", "v"]] * (protocol.MAX_HEADER_COUNT + 1),
    [["X", "v" * (protocol.MAX_HEADERS // 2)], ["Y", "v" * (protocol.MAX_HEADERS // 2)]],
])
def test_bad_headers_are_refused_locally_and_remotely(headers):
    msg = protocol.Fetch(1, "http://h/x", 0, 1, 1, None, None, None, headers)
    with pytest.raises(protocol.LocalProtocolError) as exc:
        encode_message(msg)
    assert exc.value.code == "bad-field"
    obj = protocol.to_dict(protocol.Fetch(1, "http://h/x", 0, 1, 1))
    obj["headers"] = headers
    with pytest.raises(protocol.RemoteProtocolError) as exc:
        decode_message(json.dumps(obj).encode())
    assert exc.value.code == "bad-field"


def test_headers_may_be_absent_on_the_wire_and_default_to_none():
    obj = protocol.to_dict(protocol.Fetch(1, "http://h/x", 0, 1, 1))
    del obj["headers"]
    assert decode_message(json.dumps(obj).encode()).headers == []


def test_an_encoding_error_is_ours_and_a_decoding_error_the_peers():
    with pytest.raises(protocol.LocalProtocolError):
        encode_message(protocol.Fetch(1, "x" * (protocol.MAX_URL + 1), 0, 1, 1))
    with pytest.raises(protocol.LocalProtocolError):
        encode_message(protocol.Fetch(1, "http://h/", 0, 1, 1, "\r\n"))
    with pytest.raises(protocol.LocalProtocolError):
        encode_data_header(protocol.MAX_DATA + 1)
    for payload in (b"{", b'{"type":"nope"}', b'{"type":"shrink","job_id":-1,"end":0}'):
        with pytest.raises(protocol.RemoteProtocolError):
            decode_message(payload)
    with pytest.raises(protocol.RemoteProtocolError):
        FrameDecoder().feed(frame(9, b""))


def test_the_decoder_receives_in_place_through_buffer_and_advance():
    raw = encode_data(b"abcdef") + encode_message(protocol.Ping())
    dec = FrameDecoder()
    frames, pos = [], 0
    while pos < len(raw):
        target = dec.buffer()
        n = min(len(target), 4)  # a socket that returns at most 4 bytes per read
        target[:n] = raw[pos:pos + n]
        pos += n
        got = dec.advance(n)
        if got is not None:
            frames.append(got)
    assert frames == [Frame(protocol.KIND_DATA, b"abcdef"), Frame(protocol.KIND_CONTROL,
                                                                  encode_message(protocol.Ping())[6:])]
    assert dec.pending == 0


def test_a_fetch_carries_its_mirrors_with_their_own_validators_and_bad_ones_are_refused():
    mirrors = [["http://127.0.0.2/f", '"e2"', ""], ["https://127.0.0.3/f", "", "Tue, 01 Dec 2026 00:00:00 GMT"]]
    msg = protocol.Fetch(1, "http://127.0.0.1/f", 0, 10, 10, '"e1"', None, None, [], mirrors)
    assert protocol.decode_message(protocol.encode_message(msg)[6:]).mirrors == mirrors
    old = protocol.decode_message(protocol.encode_message(protocol.Fetch(1, "http://h/", 0, 1, 1))[6:])
    assert old.mirrors == []
    for bad, words in (([["file:///etc/passwd", "", ""]], "http or https"),
                       ([["http://h/x", "a\r\nInjected: 1", ""]], r"mirrors\[0\]"),
                       ([["http://h/x", ""]], "triple"),
                       ([[f"http://h/{i}", "", ""] for i in range(17)], "at most 16"),
                       ([["http://h/" + "x" * 5000, "", ""]] * 2, "characters in all")):
        with pytest.raises(protocol.ProtocolError, match=words):
            protocol.encode_message(protocol.Fetch(1, "http://h/", 0, 1, 1, None, None, None, [], bad))

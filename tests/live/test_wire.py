"""Frames over real sockets: handshakes, timeouts, EOF, concurrency, throughput (loopback only)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from swift import auth, protocol, wire
from swift.protocol import DataFrame, Message, ProtocolError

SECRET = b"correct horse battery staple"
OTHER = b"incorrect horse battery staple"
MiB = 1 << 20


# -- helpers ----------------------------------------------------------------------------------------
def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    return client, server


PAIRS = {"socketpair": socket.socketpair, "tcp": tcp_pair}


@pytest.fixture(params=sorted(PAIRS))
def pair(request):
    a, b = PAIRS[request.param]()
    ca, cb = wire.Connection(a, timeout=5), wire.Connection(b, timeout=5)
    yield ca, cb
    ca.close()
    cb.close()


class Background:
    """Run ``fn`` in a thread; ``result()`` joins it and returns its value or its exception."""

    def __init__(self, fn, *args, **kw):
        self.value = self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kw):
        try:
            self.value = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def result(self, timeout: float = 10):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background thread did not finish"
        return self.value, self.error


@pytest.fixture(scope="session")
def server_tls(tmp_path_factory):
    """A member's TLS identity, made in a directory of its own (never the real state directory)."""
    return wire.ServerTLS.load("node", tmp_path_factory.mktemp("state"))


def serve_once(secret, tls=None, *, listener=None):
    """Accept one connection, handshake, answer one Ping; returns (port, Background)."""
    listener = listener or socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run():
        try:
            sock, _ = listener.accept()
        finally:
            listener.close()
        conn, hello = wire.accept(sock, name="srv", secret=secret, tls=tls, timeout=5)
        with conn:
            if isinstance(conn.recv(), protocol.Ping):
                conn.send(protocol.Pong("srv", 1, 0))
            return hello

    return port, Background(run)


def tls_pair(client_sock, server_sock, server_tls):
    """TLS over two connected sockets: (client Connection, server Connection)."""
    srv = Background(wire.start_tls_server, server_sock, server_tls, timeout=5)
    client = wire.start_tls_client(client_sock, timeout=5)
    server, error = srv.result()
    assert error is None, error
    return client, server


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for s in (SECRET, OTHER):
            assert s.decode() not in text and s.hex() not in text


# -- handshake --------------------------------------------------------------------------------------
@pytest.mark.parametrize("client,server", [(None, None), (SECRET, SECRET)])
def test_handshake_succeeds(client, server, server_tls):
    port, srv = serve_once(server, server_tls)
    with wire.client_connect("127.0.0.1", port, name="cli", secret=client, timeout=5) as conn:
        assert conn.peer == f"127.0.0.1:{port}"
        assert conn.private == (client is not None)
        conn.send(protocol.Ping())
        assert conn.recv() == protocol.Pong("srv", 1, 0)
    hello, error = srv.result()
    assert error is None and hello.name == "cli" and (hello.nonce is None) == (client is None)


@pytest.mark.parametrize("client,server,client_says,server_says", [
    (None, SECRET, "requires the shared secret", "did not offer the shared secret"),
    (SECRET, None, "does not know the shared secret", "requires a shared secret and this server has none"),
    (OTHER, SECRET, "failed to prove", "refused us"),
    (SECRET, OTHER, "failed to prove", "refused us"),
])
def test_handshake_refusals_are_clear_on_both_ends(client, server, client_says, server_says,
                                                  server_tls):
    port, srv = serve_once(server, server_tls)
    with pytest.raises(wire.AuthError, match=client_says) as exc:
        wire.client_connect("127.0.0.1", port, name="cli", secret=client, timeout=5)
    _, error = srv.result()
    assert isinstance(error, wire.AuthError), error
    assert server_says in str(error) and "secret" in str(error)
    assert_no_secret(str(exc.value), repr(exc.value), str(error), repr(error))


def test_a_client_without_the_secret_hears_why_when_the_server_has_one(server_tls):
    port, srv = serve_once(SECRET, server_tls)
    with pytest.raises(wire.AuthError) as exc:
        wire.client_connect("127.0.0.1", port, name="cli", secret=None, timeout=5)
    assert "--secret-file" in str(exc.value)
    srv.result()


def relay(a: socket.socket, b: socket.socket, log: bytearray) -> list[threading.Thread]:
    """Copy bytes both ways between a and b, recording them, until either side closes."""
    def copy(src, dst):
        try:
            while chunk := src.recv(65536):
                log.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    threads = [threading.Thread(target=copy, args=(a, b), daemon=True),
               threading.Thread(target=copy, args=(b, a), daemon=True)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.parametrize("client", [SECRET, OTHER])
def test_the_secret_never_crosses_the_wire(client, server_tls):
    """Over socketpairs with a recording relay in the middle: every byte is seen."""
    c_near, c_far = socket.socketpair()
    s_far, s_near = socket.socketpair()
    seen = bytearray()
    threads = relay(c_far, s_far, seen)
    client_conn, server_conn = tls_pair(c_near, s_near, server_tls)
    srv = Background(wire.server_handshake, server_conn, name="srv", secret=SECRET)
    try:
        wire.client_handshake(client_conn, name="cli", secret=client)
        assert client == SECRET
    except wire.AuthError:
        assert client == OTHER
    hello, error = srv.result()
    assert (error is None) == (client == SECRET)
    for conn in (client_conn, server_conn):
        conn.close()
    for t in threads:
        t.join(5)
    for s in (c_far, s_far):
        s.close()
    assert b"hello" not in seen and b"welcome" not in seen  # all of it inside TLS
    assert SECRET not in seen and SECRET.hex().encode() not in seen and OTHER not in seen


def raw_server(answer):
    """A listener whose single connection gets ``answer(sock)``; returns (port, Background)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run():
        try:
            sock, _ = listener.accept()
        finally:
            listener.close()
        with sock:
            return answer(sock)

    return listener.getsockname()[1], Background(run)


def test_client_refuses_another_protocol_version():
    def answer(sock):
        conn = wire.Connection(sock, timeout=5)
        conn.recv()
        conn.send(protocol.Welcome(2, "future", None, None))
        return conn.recv()

    port, srv = raw_server(answer)
    with pytest.raises(ProtocolError) as exc:
        wire.client_connect("127.0.0.1", port, name="cli", secret=None, timeout=5)
    assert exc.value.code == "bad-version"
    reply, _ = srv.result()
    assert isinstance(reply, protocol.Error) and reply.code == "bad-version"


@pytest.mark.parametrize("first,code", [
    (protocol.encode_message(protocol.Hello(2, "future", None)), "bad-version"),
    (protocol.encode_message(protocol.Ping()), "unexpected"),
    (protocol.encode_data(b"data"), "unexpected"),
    (struct.pack(">BBI", 9, 1, 2) + b"{}", "bad-version"),
    (struct.pack(">BBI", 1, 1, 5) + b"nope!", "bad-json"),
    (struct.pack(">BBI", 1, 1, 1 << 30), "too-large"),
])
def test_server_refuses_a_bad_start_and_says_why(first, code):
    a, b = socket.socketpair()
    with a, wire.Connection(b, timeout=5) as conn:
        a.sendall(first)
        with pytest.raises(ProtocolError) as exc:
            wire.server_handshake(conn, name="srv", secret=None)
        assert exc.value.code == code
        reply = wire.Connection(a, timeout=5).recv()
        assert isinstance(reply, protocol.Error) and reply.code == code


def test_server_refuses_a_wrong_client_proof(server_tls):
    client, server = tls_pair(*socket.socketpair(), server_tls)
    with client, server:
        srv = Background(wire.server_handshake, server, name="srv", secret=SECRET)
        client.send(protocol.Hello(1, "liar", auth.new_nonce()))
        welcome = client.recv()
        assert isinstance(welcome, protocol.Welcome) and re.fullmatch("[0-9a-f]{64}", welcome.proof)
        client.send(protocol.Auth("0" * 64))
        reply = client.recv()
        assert isinstance(reply, protocol.Error) and reply.code == "auth-failed"
        _, error = srv.result()
        assert isinstance(error, wire.AuthError) and "failed to prove" in str(error)
        assert_no_secret(reply.message, str(error))


def test_server_refuses_a_replayed_proof(server_tls):
    """A proof recorded from one handshake is worthless in the next (fresh server nonce)."""
    nonce_c = auth.new_nonce()
    proofs = []
    for attempt in range(2):
        client, server = tls_pair(*socket.socketpair(), server_tls)
        with client, server:
            srv = Background(wire.server_handshake, server, name="srv", secret=SECRET)
            client.send(protocol.Hello(1, "replayer", nonce_c))
            welcome = client.recv()
            proofs.append(auth.client_proof(SECRET, nonce_c, welcome.nonce, client.binding))
            client.send(protocol.Auth(proofs[0]))
            reply = client.recv()
            _, error = srv.result()
            if attempt == 0:
                assert reply == protocol.Ready() and error is None
            else:
                assert isinstance(reply, protocol.Error) and isinstance(error, wire.AuthError)
    assert proofs[0] != proofs[1]


def test_server_names_the_busy_refusal():
    def answer(sock):
        conn = wire.Connection(sock, timeout=5)
        conn.recv()
        conn.send(protocol.Error("busy", "too many open connections"))

    port, srv = raw_server(answer)
    with pytest.raises(ProtocolError, match="too many open connections") as exc:
        wire.client_connect("127.0.0.1", port, name="cli", secret=None, timeout=5)
    assert exc.value.code == "busy"
    srv.result()


def test_handshake_timeout_and_refused_connection():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers
    port = listener.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="handshake"):
        wire.client_connect("127.0.0.1", port, name="cli", secret=None, timeout=0.3)
    assert time.monotonic() - start < 3
    listener.close()
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        wire.client_connect("127.0.0.1", port, name="cli", secret=None, timeout=5)


def test_ipv6_loopback():
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port, srv = serve_once(None, listener=listener)
    with wire.client_connect("::1", port, name="six", secret=None, timeout=5,
                             source_address="::1") as conn:
        assert conn.peer == f"[::1]:{port}"
        conn.send(protocol.Ping())
        assert isinstance(conn.recv(), protocol.Pong)
    assert srv.result()[1] is None


def test_source_address():
    port, srv = serve_once(None)
    with wire.client_connect("127.0.0.1", port, name="src", secret=None, timeout=5,
                             source_address="127.0.0.1") as conn:
        assert conn.sock.getsockname()[0] == "127.0.0.1"
        conn.send(protocol.Ping())
        assert isinstance(conn.recv(), protocol.Pong)
    srv.result()


# -- receiving ----------------------------------------------------------------------------------------
def test_frames_of_every_kind_arrive_whole(pair):
    ca, cb = pair
    msgs = [protocol.Fetch(1, "http://127.0.0.1/x", 0, 10, 10, None, None), protocol.Keepalive(1),
            protocol.Done(1, 10)]

    def send():
        for msg in msgs:
            cb.send(msg)
        cb.send_data(b"")  # nothing at all
        cb.send_data(memoryview(b"0123456789")[2:5])
        cb.send_data(bytearray(b"z" * (protocol.MAX_DATA + 3)))  # two frames

    sender = Background(send)
    assert [ca.recv() for _ in msgs] == msgs
    assert ca.recv() == DataFrame(b"234")
    assert ca.recv() == DataFrame(b"z" * protocol.MAX_DATA)
    assert ca.recv() == DataFrame(b"zzz")
    assert sender.result() == (None, None)
    assert not ca.readable(0)


def test_timeouts_never_lose_a_frame(pair):
    ca, cb = pair
    ca.timeout = 0.1
    with pytest.raises(TimeoutError):
        ca.recv()  # the connection's default
    with pytest.raises(TimeoutError):
        ca.recv(timeout=0)
    raw = protocol.encode_data(b"x" * 1000) + protocol.encode_message(protocol.Keepalive(4))
    # inside the header, at its end, inside the payload, inside and at the end of the next header
    for cut in (3, 6, 500, 1008, 1012):
        cb.sock.sendall(raw[:cut])
        frames = []
        with pytest.raises(TimeoutError):
            while True:
                frames.append(ca.recv(timeout=0.05))
        cb.sock.sendall(raw[cut:])
        frames.append(ca.recv())
        if len(frames) < 2:
            frames.append(ca.recv())
        assert frames == [DataFrame(b"x" * 1000), protocol.Keepalive(4)]


def test_a_slow_trickle_does_not_hold_a_reader_forever(pair):
    ca, cb = pair
    raw = protocol.encode_data(b"y" * 100)
    cb.sock.sendall(raw[:50])
    ready = threading.Event()

    def trickle():
        for i in range(50, len(raw)):
            if ready.wait(0.01):
                return
            cb.sock.sendall(raw[i:i + 1])

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="inside a frame"):
        ca.recv(timeout=0.2)  # bytes keep coming, but no whole frame within the deadline
    assert time.monotonic() - start < 2
    ready.set()
    t.join(5)


def test_eof_between_frames_is_connection_closed(pair):
    ca, cb = pair
    cb.send(protocol.Ping())
    cb.close()
    assert ca.readable(1)
    assert ca.recv() == protocol.Ping()
    with pytest.raises(wire.ConnectionClosed):
        ca.recv()
    with pytest.raises(wire.ConnectionClosed):
        ca.recv()


def test_eof_inside_a_frame_is_truncated(pair):
    ca, cb = pair
    cb.sock.sendall(protocol.encode_data(b"abc")[:-1])
    cb.close()
    for _ in range(2):  # and stays so
        with pytest.raises(ProtocolError) as exc:
            ca.recv()
        assert exc.value.code == "truncated"


def test_bad_header_poisons_the_stream(pair):
    ca, cb = pair
    cb.sock.sendall(struct.pack(">BBI", 1, 2, protocol.MAX_DATA + 1) + protocol.encode_message(
        protocol.Ping()))
    for _ in range(2):
        with pytest.raises(ProtocolError) as exc:
            ca.recv()
        assert exc.value.code == "too-large"
    assert ca.readable(0)


def test_bad_control_payload_keeps_the_stream_in_step(pair):
    ca, cb = pair
    cb.sock.sendall(struct.pack(">BBI", 1, 1, 2) + b"[]" + protocol.encode_message(protocol.Ping()))
    with pytest.raises(ProtocolError) as exc:
        ca.recv()
    assert exc.value.code == "bad-json"
    assert ca.recv() == protocol.Ping()


def test_reset_is_connection_closed():
    a, b = tcp_pair()
    ca = wire.Connection(a, timeout=5)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.close()  # RST
    with pytest.raises(wire.ConnectionClosed):
        ca.recv()
    with pytest.raises(wire.ConnectionClosed):
        for _ in range(100):
            ca.send(protocol.Ping())
    ca.close()


def test_readable(pair):
    ca, cb = pair
    assert not ca.readable(0)
    assert not ca.readable(0.05)
    cb.send(protocol.Shrink(3, 10))
    assert ca.readable(5)
    assert ca.recv(timeout=0) == protocol.Shrink(3, 10)
    assert not ca.readable(0)
    ca.close()
    assert ca.readable(0)


def test_close_is_idempotent_and_wakes_a_reader(pair):
    ca, cb = pair
    reader = Background(ca.recv, timeout=30)
    start = time.monotonic()
    while reader.thread.is_alive() and time.monotonic() - start < 5:
        ca.close()
        ca.close()
        reader.thread.join(0.05)
    _, error = reader.result()
    assert isinstance(error, wire.ConnectionClosed), error
    with pytest.raises(wire.ConnectionClosed):
        ca.send(protocol.Ping())
    with pytest.raises(wire.ConnectionClosed):
        ca.recv()
    wire.send_error(ca, "x", "never raises")
    with pytest.raises(wire.ConnectionClosed):
        cb.recv()  # the other side sees the close


def test_sending_to_a_closed_peer_is_connection_closed(pair):
    ca, cb = pair
    cb.close()
    deadline = time.monotonic() + 5
    with pytest.raises(wire.ConnectionClosed):
        while time.monotonic() < deadline:  # the first sends may still be buffered
            ca.send_data(bytes(64 * 1024))


def test_a_stalled_send_times_out_and_never_leaves_half_a_frame(pair):
    ca, cb = pair
    cb.timeout = 0.2
    block = bytes(range(256)) * 4096  # 1 MiB, nobody reading: the buffers fill up
    sent = 0
    with pytest.raises(TimeoutError, match="took over"):
        for _ in range(1000):
            cb.send_data(block)
            sent += 1
    with pytest.raises((wire.ConnectionClosed, TimeoutError)):
        cb.send(protocol.Done(1, sent))
    cb.close()
    received = 0
    with pytest.raises((wire.ConnectionClosed, ProtocolError)) as exc:
        while True:
            frame = ca.recv(timeout=5)
            assert frame == DataFrame(block)  # whole frames only, never a spliced one
            received += 1
    assert received >= sent
    if isinstance(exc.value, ProtocolError):
        assert exc.value.code == "truncated"


def test_concurrent_senders_never_interleave(pair):
    ca, cb = pair
    block = bytes(range(256)) * 1024
    senders = [threading.Thread(target=lambda: [cb.send_data(block) for _ in range(40)]),
               threading.Thread(target=lambda: [cb.send_data(memoryview(block)) for _ in range(40)]),
               threading.Thread(target=lambda: [cb.send(protocol.Keepalive(i)) for i in range(300)]),
               threading.Thread(target=lambda: [cb.send(protocol.Pong("n", 1, i)) for i in range(300)])]
    for t in senders:
        t.start()
    data, keepalives, pongs = 0, [], []
    while data < 80 or len(keepalives) < 300 or len(pongs) < 300:
        frame = ca.recv()
        if isinstance(frame, DataFrame):
            assert frame.payload == block
            data += 1
        elif isinstance(frame, protocol.Keepalive):
            keepalives.append(frame.job_id)
        else:
            pongs.append(frame.busy)
    for t in senders:
        t.join(5)
    assert keepalives == list(range(300)) and pongs == list(range(300))
    assert not ca.readable(0)


def test_throughput_sanity():
    """64 MiB through one TCP pair: every byte arrives in order (the rate is only logged)."""
    a, b = tcp_pair()
    rng = hashlib.sha256(b"seed").digest() * (MiB // 32)
    total = 64 * MiB
    with wire.Connection(a, timeout=10) as ca, wire.Connection(b, timeout=10) as cb:
        def send():
            for i in range(total // MiB):
                cb.send_data(memoryview(rng)[i % 7:] if i % 2 else rng)
            cb.send(protocol.Done(0, total))

        sender = Background(send)
        digest, expected, got = hashlib.sha256(), hashlib.sha256(), 0
        start = time.perf_counter()
        while not isinstance(frame := ca.recv(), protocol.Done):
            digest.update(frame.payload)
            got += len(frame.payload)
        elapsed = time.perf_counter() - start
        assert sender.result()[1] is None
    for i in range(total // MiB):
        expected.update(memoryview(rng)[i % 7:] if i % 2 else rng)
    assert digest.digest() == expected.digest() and frame.length == total
    logging.getLogger(__name__).info("wire throughput: %.2f GB/s", got / elapsed / 1e9)


# -- hostile bytes at the receiving shell ------------------------------------------------------------
#: Honest frames to start from: every mutation of them is what a broken or hostile peer may send.
HONEST = [protocol.encode_message(m) for m in (
    protocol.Hello(protocol.PROTOCOL_VERSION, "n", None), protocol.Ping(), protocol.ListPeers(),
    protocol.Fetch(1, "http://h/x", 0, 10, 10, '"e"', None), protocol.Done(2, 5),
    protocol.Peers([protocol.PeerInfo("h", 1, "n", 2, 0.5)]), protocol.Error("c", "m"))]


@st.composite
def hostile_streams(draw) -> bytes:
    """A few honest frames and data frames, then flipped, inserted, cut or a lying length."""
    parts = draw(st.lists(st.sampled_from(HONEST) | st.binary(max_size=512).map(protocol.encode_data),
                          min_size=1, max_size=4))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(1, 5))):
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        op = draw(st.sampled_from(["set", "insert", "truncate", "length"]))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "truncate":
            del data[pos:]
        elif op == "length" and len(data) >= 6:
            data[2:6] = struct.pack(">I", draw(st.sampled_from(
                [0, 1, protocol.MAX_CONTROL + 1, protocol.MAX_DATA + 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)))
    return bytes(data)


@settings(max_examples=200, deadline=None)
@given(hostile_streams())
def test_connection_recv_on_hostile_bytes(data):
    """``wire.Connection.recv`` raises only ProtocolError / ConnectionClosed / TimeoutError."""
    a, b = socket.socketpair()
    try:
        b.sendall(data)
        b.shutdown(socket.SHUT_WR)
        conn = wire.Connection(a, timeout=2)
        for _ in range(64):
            try:
                out = conn.recv(timeout=2)
            except (ProtocolError, wire.ConnectionClosed):
                break
            assert isinstance(out, (Message, DataFrame))
        else:
            raise AssertionError("more frames than bytes could hold")
    finally:
        a.close()
        b.close()

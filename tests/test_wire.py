"""Frames over real sockets: the handshake in every secret combination, timeouts, EOF."""

from __future__ import annotations

import socket
import threading

import pytest

from swift import protocol, wire

SECRET = b"correct horse battery staple"
OTHER = b"incorrect horse battery staple"


def serve_once(secret, results):
    listener = socket.create_server(("127.0.0.1", 0))

    def run():
        sock, _ = listener.accept()
        with wire.Connection(sock, timeout=5) as conn:
            try:
                wire.server_handshake(conn, name="srv", secret=secret)
                results["server"] = "ok"
                msg = conn.recv()
                conn.send(protocol.Pong("srv", 1, 0) if isinstance(msg, protocol.Ping) else
                          protocol.Error("x", "y"))
            except (wire.AuthError, protocol.ProtocolError, wire.ConnectionClosed) as exc:
                results["server"] = f"refused: {exc}"
        listener.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener.getsockname()[1], t


@pytest.mark.parametrize("client,server,ok", [
    (None, None, True), (SECRET, SECRET, True), (None, SECRET, False),
    (SECRET, None, False), (OTHER, SECRET, False), (SECRET, OTHER, False),
])
def test_handshake_combinations(client, server, ok):
    results: dict = {}
    port, t = serve_once(server, results)
    if ok:
        with wire.client_connect("127.0.0.1", port, name="cli", secret=client, timeout=5) as conn:
            conn.send(protocol.Ping())
            assert isinstance(conn.recv(), protocol.Pong)
    else:
        with pytest.raises(wire.AuthError) as exc:
            wire.client_connect("127.0.0.1", port, name="cli", secret=client, timeout=5)
        assert "secret" in str(exc.value)
        for s in (SECRET, OTHER):
            assert s.decode() not in str(exc.value)
    t.join(5)
    assert results["server"] == "ok" if ok else results["server"].startswith("refused")
    if not ok and server is not None:
        assert "secret" in results["server"]


def test_timeout_and_eof():
    a, b = socket.socketpair()
    ca, cb = wire.Connection(a, timeout=0.2), wire.Connection(b, timeout=5)
    with pytest.raises(TimeoutError):
        ca.recv()
    cb.send_data(b"x" * 100)
    frame = ca.recv()
    assert isinstance(frame, protocol.DataFrame) and bytes(frame.payload) == b"x" * 100
    cb.close()
    with pytest.raises(wire.ConnectionClosed):
        ca.recv()
    ca.close()


def test_truncated_frame_is_a_protocol_error():
    a, b = socket.socketpair()
    ca = wire.Connection(a, timeout=1)
    b.sendall(protocol.encode_message(protocol.Ping())[:-1])
    b.close()
    with pytest.raises(protocol.ProtocolError) as exc:
        ca.recv()
    assert exc.value.code == "truncated"
    ca.close()


def test_concurrent_senders_never_interleave():
    a, b = socket.socketpair()
    ca, cb = wire.Connection(a, timeout=5), wire.Connection(b, timeout=5)
    block = bytes(range(256)) * 1024

    def send_data():
        for _ in range(50):
            cb.send_data(block)

    def send_control():
        for i in range(200):
            cb.send(protocol.Keepalive(i))

    threads = [threading.Thread(target=send_data), threading.Thread(target=send_control)]
    for t in threads:
        t.start()
    data = control = 0
    while data < 50 or control < 200:
        frame = ca.recv()
        if isinstance(frame, protocol.DataFrame):
            assert bytes(frame.payload) == block
            data += 1
        else:
            assert isinstance(frame, protocol.Keepalive)
            control += 1
    for t in threads:
        t.join()
    ca.close()
    cb.close()

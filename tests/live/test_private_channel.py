"""The private member channel: with a secret, nobody else on the LAN reads or alters member traffic.

A real job server (in this process, on loopback) fetches from the test origin
for a requester that talks to it through a relay recording every byte, in
both directions. With a shared secret the relay sees TLS records only:
neither the URL, nor a request header's value, nor any 32-byte sample of the
file. Without one it sees all three (so the capture can fail). A relay that
terminates TLS towards both sides with its own certificate cannot complete
the handshake, a wrong secret fails, and a member with a secret refuses a
plain peer with a clear message on both ends.
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import threading
from pathlib import Path

import pytest

from swift import fetchjob, node_server, protocol, wire
from swiftlab.origin import OriginServer, make_file
from swift.sessions import make_session

MiB = 1 << 20
SECRET = secrets.token_hex(16).encode()
OTHER = secrets.token_hex(16).encode()
COOKIE = "session=" + secrets.token_hex(12)  # a header value that must never show


class Relay:
    """A loopback TCP relay recording every byte; ``tls`` makes it terminate TLS on both sides.

    Terminating: towards the client it serves TLS with its own certificate
    (``tls``), towards the server it is a TLS client, and it copies the
    decrypted bytes across (recording them), as a man in the middle would.
    """

    def __init__(self, target_port: int, tls: wire.ServerTLS | None = None):
        self.target_port = target_port
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                if self.tls is not None:
                    client = self.tls.context.wrap_socket(client, server_side=True)
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                    upstream = context.wrap_socket(upstream)
            except (OSError, ssl.SSLError):
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(10)
            while chunk := src.recv(65536):
                with self._lock:
                    self.seen.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def origin(tmp_path):
    root = tmp_path / "origin"
    root.mkdir()
    make_file(root / "private.bin", 2 * MiB, seed=1010)
    with OriginServer(root) as server:
        yield server


def start_node(tmp_path: Path, secret: bytes | None):
    srv = node_server.make_server("127.0.0.1", 0, name="helper", secret=secret, slots=2,
                                  session_factory=lambda: make_session(allow_private=True),
                                  state_dir=tmp_path / "state")
    return srv.start()


def fetch_through(port: int, url: str, size: int, secret: bytes | None) -> bytes:
    """One whole fetch job as a requester, with a Cookie header; the bytes received."""
    with wire.client_connect("127.0.0.1", port, name="requester", secret=secret, timeout=10) as conn:
        assert conn.private == (secret is not None)
        job = fetchjob.RequesterJob(protocol.Fetch(1, url, 0, size, size, None, None, None,
                                                   [["Cookie", COOKIE]]))
        conn.send(job.request())
        out = bytearray(size)
        while True:
            event = job.receive(conn.recv(timeout=10))
            if isinstance(event, fetchjob.Data):
                out[event.offset:event.offset + len(event.payload)] = event.payload
            elif not isinstance(event, fetchjob.KeptAlive):
                assert isinstance(event, fetchjob.Finished), event
                return bytes(out)


@pytest.mark.parametrize("secret", [SECRET, None], ids=["with a secret", "without"])
def test_a_relay_on_the_lan_sees_nothing_of_a_job_only_with_a_secret(tmp_path, origin, secret):
    url = origin.url("/private.bin")
    file = (origin.root / "private.bin").read_bytes()
    srv = start_node(tmp_path, secret)
    relay = Relay(srv.port)
    try:
        assert fetch_through(relay.port, url, len(file), secret) == file
    finally:
        relay.close()
        srv.stop()
    seen = bytes(relay.seen)
    samples = [file[i:i + 32] for i in range(0, len(file) - 32, len(file) // 16)]
    visible = {"the URL": url.encode() in seen,
               "the cookie": COOKIE.encode() in seen,
               "file samples": sum(sample in seen for sample in samples)}
    if secret:
        assert seen[:1] == b"\x16"  # a TLS handshake record, from the first byte on
        assert visible == {"the URL": False, "the cookie": False, "file samples": 0}, visible
    else:
        assert visible == {"the URL": True, "the cookie": True, "file samples": len(samples)}


def test_a_relay_that_terminates_tls_on_both_sides_cannot_complete_the_handshake(tmp_path, origin,
                                                                                 caplog):
    srv = start_node(tmp_path, SECRET)
    relay = Relay(srv.port, tls=wire.ServerTLS.load("node", tmp_path / "relay-state"))
    caplog.set_level(logging.WARNING, logger="swift.server")
    try:
        with pytest.raises(wire.AuthError, match="terminates TLS"):
            wire.client_connect("127.0.0.1", relay.port, name="requester", secret=SECRET, timeout=10)
    finally:
        relay.close()
        srv.stop()
    seen = bytes(relay.seen)
    assert b'"type":"hello"' in seen  # it did read the cleartext ...
    assert b'"type":"auth"' not in seen and b'"type":"ready"' not in seen  # ... and got no further


def test_a_wrong_secret_fails(tmp_path):
    srv = start_node(tmp_path, SECRET)
    try:
        with pytest.raises(wire.AuthError, match="failed to prove"):
            wire.client_connect("127.0.0.1", srv.port, name="stranger", secret=OTHER, timeout=10)
    finally:
        srv.stop()


def test_a_member_with_a_secret_refuses_a_plain_peer_with_a_clear_message_on_both_ends(tmp_path,
                                                                                      caplog):
    caplog.set_level(logging.WARNING, logger="swift.server")
    keyed, plain = start_node(tmp_path, SECRET), start_node(tmp_path, None)
    try:
        with pytest.raises(wire.AuthError, match="requires the shared secret") as plain_client:
            wire.client_connect("127.0.0.1", keyed.port, name="plain", secret=None, timeout=10)
        assert "TLS" in str(plain_client.value)
        with pytest.raises(wire.AuthError, match="does not know the shared secret") as keyed_client:
            wire.client_connect("127.0.0.1", plain.port, name="keyed", secret=SECRET, timeout=10)
        assert "TLS" in str(keyed_client.value)
    finally:
        keyed.stop()
        plain.stop()
    logged = caplog.text
    assert "did not offer the shared secret (it sent plain frames" in logged
    assert "requires a shared secret and this server has none (it speaks TLS" in logged
    for text in (logged, str(plain_client.value), str(keyed_client.value)):
        assert SECRET.decode() not in text


def test_a_members_key_is_made_once_and_readable_by_its_owner_only(tmp_path):
    first = wire.ServerTLS.load("node", tmp_path / "state")
    again = wire.ServerTLS.load("node", tmp_path / "state")
    assert first.binding == again.binding and len(first.binding) == 32
    path = tmp_path / "state" / "node-tls.pem"
    assert path.stat().st_mode & 0o077 == 0 and (tmp_path / "state").stat().st_mode & 0o077 == 0
    path.chmod(0o644)
    with pytest.raises(OSError, match="readable by other users"):
        wire.ServerTLS.load("node", tmp_path / "state")

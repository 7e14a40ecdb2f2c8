"""The handshake state machines, whole conversations over an in-memory pair (no sockets)."""

from __future__ import annotations

import struct

import pytest

from swift import auth, protocol
from swift.auth import AuthError
from swift.handshake import ClientHandshake, ServerHandshake
from swift.protocol import LocalProtocolError, RemoteProtocolError

from tests.connection_pair import ConnectionPair, run_handshake

SECRET = b"s" * 32
OTHER = b"o" * 32
#: a stand-in for the hash of the server's TLS certificate (tls-server-end-point)
BINDING = bytes(range(32))


def converse(client_secret, server_secret, chunk=1 << 20, *, client_binding=BINDING,
             server_binding=BINDING):
    pair = ConnectionPair(chunk)
    client = ClientHandshake(name="alice", secret=client_secret, where="server:1",
                             binding=client_binding if client_secret else None)
    server = ServerHandshake(name="bob", secret=server_secret, peer="client:2",
                             binding=server_binding if server_secret else None)
    return pair, client, server, run_handshake(pair, client, server)


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_without_secrets_hello_and_welcome_make_the_connection_ready(chunk):
    pair, client, server, final = converse(None, None, chunk)
    assert final["client"].done and final["server"].done
    assert pair.sent_by("client") == ["Hello"] and pair.sent_by("server") == ["Welcome"]
    assert server.hello.name == "alice" and client.server_name == "bob"


@pytest.mark.parametrize("chunk", [1, 1 << 20])
def test_with_the_same_secret_both_prove_it_in_four_messages(chunk):
    pair, client, server, final = converse(SECRET, SECRET, chunk)
    assert final["client"].done and final["server"].done
    assert pair.sent_by("client") == ["Hello", "Auth"]
    assert pair.sent_by("server") == ["Welcome", "Ready"]


def test_the_secret_never_crosses_the_wire():
    pair, *_ = converse(SECRET, SECRET)
    wire_bytes = b"".join(protocol.encode_message(m) for _, m in pair.log)
    assert SECRET not in wire_bytes and SECRET.hex().encode() not in wire_bytes


def test_a_wrong_secret_fails_on_both_ends_and_the_client_proves_nothing():
    pair, _, _, final = converse(SECRET, OTHER)
    assert isinstance(final["client"].failure, AuthError)
    assert "failed to prove it knows the shared secret" in str(final["client"].failure)
    assert "Auth" not in pair.sent_by("client")  # it checked the server first
    assert isinstance(final["server"].failure, AuthError)


def test_a_client_without_the_secret_is_refused_with_a_reason_on_both_ends():
    pair, _, _, final = converse(None, SECRET)
    assert "did not offer the shared secret" in str(final["server"].failure)
    assert "requires the shared secret" in str(final["client"].failure)
    assert pair.sent_by("server") == ["Error"]


def test_a_server_without_the_secret_is_not_trusted_and_hears_why():
    _, _, _, final = converse(SECRET, None)
    assert "does not know the shared secret" in str(final["client"].failure)
    server_failure = str(final["server"].failure)
    assert "requires a shared secret and this server has none" in server_failure
    assert "does not have it" in server_failure  # the client's own words


def test_the_server_proof_cannot_be_replayed_as_the_client_proof():
    nonce_c, nonce_s = auth.new_nonce(), auth.new_nonce()
    server = ServerHandshake(name="s", secret=SECRET, peer="p", binding=BINDING, nonce=nonce_s)
    server.receive(protocol.Hello(protocol.PROTOCOL_VERSION, "c", nonce_c))
    replayed = auth.server_proof(SECRET, nonce_c, nonce_s, BINDING)
    step = server.receive(protocol.Auth(replayed))
    assert isinstance(step.failure, AuthError) and step.send[0].code == "auth-failed"


def test_a_client_with_a_valid_proof_from_another_exchange_fails():
    server = ServerHandshake(name="s", secret=SECRET, peer="p", binding=BINDING)
    nonce_c = auth.new_nonce()
    server.receive(protocol.Hello(protocol.PROTOCOL_VERSION, "c", nonce_c))
    old = auth.client_proof(SECRET, nonce_c, auth.new_nonce(), BINDING)  # another server nonce
    assert isinstance(server.receive(protocol.Auth(old)).failure, AuthError)


@pytest.mark.parametrize("first", [protocol.Ping(), protocol.ListPeers(), protocol.DataFrame(b"x")])
def test_anything_but_hello_first_is_refused_as_unexpected(first):
    server = ServerHandshake(name="s", secret=None, peer="p")
    step = server.receive(first)
    assert isinstance(step.failure, RemoteProtocolError) and step.send[0].code == "unexpected"


def test_other_versions_are_refused_both_ways():
    server = ServerHandshake(name="s", secret=None, peer="p")
    step = server.receive(protocol.Hello(2, "c", None))
    assert step.failure.code == "bad-version" and step.send[0].code == "bad-version"
    client = ClientHandshake(name="c", secret=None, where="w")
    client.start()
    step = client.receive(protocol.Welcome(9, "s", None, None))
    assert step.failure.code == "bad-version" and "version 9" in str(step.failure)


def test_a_server_error_during_the_handshake_is_not_an_auth_failure_unless_it_says_so():
    client = ClientHandshake(name="c", secret=None, where="w")
    client.start()
    busy = client.receive(protocol.Error("busy", "too many open connections"))
    assert isinstance(busy.failure, RemoteProtocolError) and "too many" in str(busy.failure)
    client = ClientHandshake(name="c", secret=None, where="w")
    client.start()
    assert isinstance(client.receive(protocol.Error("auth-failed", "no")).failure, AuthError)


def test_something_other_than_auth_after_a_keyed_welcome_is_refused():
    server = ServerHandshake(name="s", secret=SECRET, peer="p", binding=BINDING)
    server.receive(protocol.Hello(protocol.PROTOCOL_VERSION, "c", auth.new_nonce()))
    step = server.receive(protocol.Ping())
    assert step.send[0].code == "auth-unexpected" and step.failure is not None


def test_a_bad_frame_is_answered_with_its_code():
    pair = ConnectionPair()
    pair.send_raw("client", struct.pack(">BBI", 1, 9, 0))
    (error,) = pair.receive("server")
    server = ServerHandshake(name="s", secret=None, peer="p")
    step = server.bad_frame(error)
    assert step.send[0].code == "unknown-kind" and step.failure is error


def test_a_finished_handshake_takes_no_more_messages():
    _, client, server, _ = converse(None, None)
    with pytest.raises(LocalProtocolError):
        server.receive(protocol.Ping())
    with pytest.raises(LocalProtocolError):
        client.receive(protocol.Ready())


def test_a_client_that_leaves_mid_handshake_is_reported():
    server = ServerHandshake(name="s", secret=SECRET, peer="p", binding=BINDING)
    server.receive(protocol.Hello(protocol.PROTOCOL_VERSION, "c", auth.new_nonce()))
    step = server.connection_lost("reset")
    assert isinstance(step.failure, RemoteProtocolError) and "reset" in str(step.failure)


def test_a_relay_that_terminates_tls_on_both_sides_cannot_pass_the_proofs_along():
    """The client sees the relay's certificate, the server its own: different bindings."""
    pair, _, _, final = converse(SECRET, SECRET, client_binding=b"relay-cert-hash" * 2)
    assert isinstance(final["client"].failure, AuthError)
    assert "terminates TLS" in str(final["client"].failure)
    assert "Auth" not in pair.sent_by("client")  # it proved nothing the relay could reuse


def test_a_client_proof_for_another_channel_is_refused():
    nonce_c = auth.new_nonce()
    server = ServerHandshake(name="s", secret=SECRET, peer="p", binding=BINDING)
    welcome = server.receive(protocol.Hello(protocol.PROTOCOL_VERSION, "c", nonce_c)).send[0]
    other_channel = auth.client_proof(SECRET, nonce_c, welcome.nonce, b"x" * 32)
    step = server.receive(protocol.Auth(other_channel))
    assert isinstance(step.failure, AuthError) and step.send[0].code == "auth-failed"


def test_with_a_secret_there_is_no_handshake_without_a_channel_binding():
    with pytest.raises(LocalProtocolError, match="TLS"):
        ClientHandshake(name="c", secret=SECRET, where="w")
    with pytest.raises(LocalProtocolError, match="TLS"):
        ServerHandshake(name="s", secret=SECRET, peer="p", binding=b"")

"""The handshake every connection starts with, as two sans-I/O state machines.

``ClientHandshake`` and ``ServerHandshake`` take the messages the other side
sent and say what to send back; they never touch a socket, a thread or a
clock (``swift.wire`` drives them over a socket, tests/test_handshake.py
over an in-memory pair). The exchange and its cryptography are described in
``swift.auth`` and docs/protocol.md::

    client                                  server
      Hello(nonce_c | None)            ->
                                       <-   Welcome(nonce_s | None, proof_s | None)
      (with a secret: check proof_s)
      Auth(proof_c)                    ->
                                            (check proof_c)
                                       <-   Ready   or   Error(auth-failed)

Rules every path keeps:

* The client checks the server's proof before it proves anything, so it
  never talks to a server that does not know the secret.
* With a secret both proofs cover the TLS channel binding (``binding``), so
  a machine with a secret refuses to start without one: there is no
  fallback to plain frames.
* One side with a secret and the other without is a refusal on both ends,
  each with a message that says which side lacks it; neither side ever
  goes on without the proof the other expects.
* A refusal is an ``Error`` frame to send (where the connection still
  works) and an exception to raise: ``auth.AuthError`` when the other side
  is not a member, ``protocol.RemoteProtocolError`` when it broke the rules.

Each call returns a ``Step``: send ``step.send`` in order, then raise
``step.failure`` if set, else the connection is ready once ``step.done``,
else wait for the next message. After a failure or ``done`` the machine
accepts nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import auth, protocol
from .errors import AuthError
from .protocol import DataFrame, Message, RemoteProtocolError

__all__ = ["AuthError", "ClientHandshake", "ServerHandshake", "Step"]

#: Error codes that mean "not a member" rather than "broken peer".
AUTH_CODES = frozenset({"auth-required", "auth-failed", "auth-unexpected"})
_NO_SECRET_HERE = "this client requires the shared secret and the server does not have it"


@dataclass(frozen=True)
class Step:
    """What the I/O shell does next: send ``send``, then raise ``failure`` or, if ``done``, go on."""

    send: tuple[Message, ...] = ()
    done: bool = False
    failure: Exception | None = None


def _version_text(version: int) -> str:
    return f"protocol version {version}"


class _Machine:
    """Shared bookkeeping: who we are, the secret and the channel binding; a
    handshake ends exactly once, by success or failure."""

    def __init__(self, name: str, secret: bytes | None, binding: bytes | None) -> None:
        _require_binding(secret, binding)
        self.state = "start"
        self.name = name[:protocol.MAX_NAME]
        self.secret = secret
        self.binding = binding or b""

    def _finish(self, step: Step) -> Step:
        self.state = "failed" if step.failure is not None else "done" if step.done else self.state
        return step

    def _fail(self, failure: Exception, *send: Message) -> Step:
        return self._finish(Step(tuple(send), failure=failure))

    def _check_open(self) -> None:
        if self.state in ("done", "failed"):
            raise protocol.LocalProtocolError("unexpected", f"the handshake is {self.state}")


def _require_binding(secret: bytes | None, binding: bytes | None) -> None:
    if secret and not binding:
        # no fallback: with a secret the proofs are only ever made over TLS
        raise protocol.LocalProtocolError("no-channel", "a shared secret needs a TLS channel "
                                                        "binding: member connections run over TLS")


class ClientHandshake(_Machine):
    """The connecting side. ``where`` names the server in messages (its address).

    ``binding``: the TLS channel binding (required with a secret, see
    ``swift.auth``). ``nonce`` is for tests only (default: a fresh random one
    when there is a secret).
    """

    def __init__(self, *, name: str, secret: bytes | None, where: str,
                 binding: bytes | None = None, nonce: str | None = None):
        super().__init__(name, secret, binding)
        self.where = where
        self.nonce = (nonce or auth.new_nonce()) if secret else None
        self.server_name: str | None = None

    def start(self) -> Step:
        """The first step: send Hello."""
        self._check_open()
        self.state = "await-welcome"
        return Step((protocol.Hello(protocol.PROTOCOL_VERSION, self.name, self.nonce),))

    def receive(self, msg: Message | DataFrame) -> Step:
        """Take the server's next message."""
        self._check_open()
        if isinstance(msg, protocol.Error):
            return self._fail(_refusal(msg, self.where))
        if self.state == "await-welcome":
            return self._finish(self._on_welcome(msg))
        if self.state == "await-ready":
            if not isinstance(msg, protocol.Ready):
                return self._fail(RemoteProtocolError(
                    "unexpected", f"{self.where} sent {type(msg).__name__} instead of ready"))
            return self._finish(Step(done=True))
        raise protocol.LocalProtocolError("unexpected", "start() the handshake first")

    def _on_welcome(self, msg: Message | DataFrame) -> Step:
        where = self.where
        if not isinstance(msg, protocol.Welcome):
            return Step(failure=RemoteProtocolError(
                "unexpected", f"{where} answered hello with {type(msg).__name__}"))
        self.server_name = msg.name
        if msg.version != protocol.PROTOCOL_VERSION:
            return Step((protocol.Error("bad-version", f"this client speaks "
                                                       f"{_version_text(protocol.PROTOCOL_VERSION)}"),),
                        failure=RemoteProtocolError(
                            "bad-version", f"{where} speaks {_version_text(msg.version)}, "
                                           f"this client {protocol.PROTOCOL_VERSION}"))
        if not self.secret:
            if msg.proof is not None or msg.nonce is not None:
                return Step((protocol.Error("auth-required", "this client has no shared secret"),),
                            failure=AuthError(f"{where} requires the shared secret; give it "
                                              f"with --secret-file"))
            return Step(done=True)  # no secret on either side: ready after welcome
        assert self.nonce is not None
        if msg.proof is None or msg.nonce is None:
            return Step((protocol.Error("auth-required", _NO_SECRET_HERE),),
                        failure=AuthError(f"{where} does not know the shared secret (start it "
                                          f"with --secret-file), so it is not trusted"))
        if not auth.check(auth.server_proof(self.secret, self.nonce, msg.nonce, self.binding),
                          msg.proof):
            return Step((protocol.Error("auth-failed", "the server's proof does not match this "
                                                       "client's secret and TLS channel"),),
                        failure=AuthError(f"{where} failed to prove it knows the shared secret "
                                          f"(a different secret, or something between us that "
                                          f"terminates TLS?)"))
        self.state = "await-ready"
        return Step((protocol.Auth(auth.client_proof(self.secret, self.nonce, msg.nonce,
                                                     self.binding)),))


def _refusal(error: protocol.Error, where: str) -> Exception:
    """What an Error frame during the handshake means: not a member, or something else."""
    if error.code in AUTH_CODES:
        return AuthError(f"{where} refused us: {error.message}")
    return RemoteProtocolError(error.code, f"{where} refused the connection: {error.message}")


class ServerHandshake(_Machine):
    """The accepting side. ``peer`` names the client in messages (its address).

    ``binding``: the TLS channel binding of this server's own certificate
    (required with a secret). ``hello`` is the client's Hello once received.
    ``nonce`` is for tests only.
    """

    def __init__(self, *, name: str, secret: bytes | None, peer: str,
                 binding: bytes | None = None, nonce: str | None = None):
        super().__init__(name, secret, binding)
        self.peer = peer
        self._nonce = nonce
        self.hello: protocol.Hello | None = None
        self.state = "await-hello"

    def receive(self, msg: Message | DataFrame) -> Step:
        """Take the client's next message."""
        self._check_open()
        if self.state == "await-hello":
            return self._finish(self._on_hello(msg))
        if self.state == "await-refusal":
            why = msg.message if isinstance(msg, protocol.Error) else type(msg).__name__
            return self.connection_lost(why)
        return self._finish(self._on_auth(msg))

    def bad_frame(self, exc: protocol.ProtocolError) -> Step:
        """The client sent something undecodable: tell it why, and fail."""
        self._check_open()
        return self._fail(exc, protocol.Error(exc.code, str(exc)))

    def connection_lost(self, why: str) -> Step:
        """The connection ended (or timed out) before the handshake did."""
        self._check_open()
        if self.state == "await-refusal":
            return self._fail(AuthError(f"the client requires a shared secret and this server "
                                        f"has none (it says: {why})"))
        return self._fail(RemoteProtocolError("truncated", f"{self.peer} left during the "
                                                           f"handshake: {why}"))

    def _on_hello(self, hello: Message | DataFrame) -> Step:
        if not isinstance(hello, protocol.Hello):
            return Step((protocol.Error("unexpected", "a connection must start with hello"),),
                        failure=RemoteProtocolError("unexpected", f"{self.peer} started with "
                                                                  f"{type(hello).__name__}, not hello"))
        if hello.version != protocol.PROTOCOL_VERSION:
            return Step((protocol.Error("bad-version", f"this server speaks "
                                                       f"{_version_text(protocol.PROTOCOL_VERSION)}, "
                                                       f"not {hello.version}"),),
                        failure=RemoteProtocolError("bad-version", f"{self.peer} speaks "
                                                                   f"{_version_text(hello.version)}"))
        self.hello = hello
        if not self.secret:
            welcome = protocol.Welcome(protocol.PROTOCOL_VERSION, self.name, None, None)
            if hello.nonce is not None:
                # the client has a secret and will refuse us: hear its reason, and say so here too
                self.state = "await-refusal"
                return Step((welcome,))
            return Step((welcome,), done=True)
        if hello.nonce is None:
            return Step((protocol.Error("auth-required",
                                        "this server requires the shared secret (--secret-file)"),),
                        failure=AuthError(f"client {self.peer} did not offer the shared secret"))
        self._nonce = self._nonce or auth.new_nonce()
        self.state = "await-auth"
        return Step((protocol.Welcome(protocol.PROTOCOL_VERSION, self.name, self._nonce,
                                      auth.server_proof(self.secret, hello.nonce, self._nonce,
                                                        self.binding)),))

    def _on_auth(self, reply: Message | DataFrame) -> Step:
        assert self.secret and self.hello is not None and self.hello.nonce and self._nonce
        if isinstance(reply, protocol.Error):
            return Step(failure=AuthError(f"client {self.peer} refused us: {reply.message}"))
        if not isinstance(reply, protocol.Auth):
            return Step((protocol.Error("auth-unexpected", "expected auth"),),
                        failure=RemoteProtocolError("unexpected", f"{self.peer} sent "
                                                                  f"{type(reply).__name__}, not auth"))
        if not auth.check(auth.client_proof(self.secret, self.hello.nonce, self._nonce,
                                            self.binding), reply.proof):
            return Step((protocol.Error("auth-failed", "wrong shared secret (or TLS channel)"),),
                        failure=AuthError(f"client {self.peer} failed to prove it knows the "
                                          f"shared secret (a different secret, or something "
                                          f"between us that terminates TLS?)"))
        return Step((protocol.Ready(),), done=True)

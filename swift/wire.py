"""Frames over a socket: the thin I/O shell around ``swift.protocol``.

A ``Connection`` reads whole frames with a deadline and sends frames under a
lock, so a keep-alive thread and a data loop may share it. Data frames are
read straight into a fresh buffer of the announced size (after the header
has been checked against the limits) and sent as header + payload in one
``sendmsg`` call, without joining them into a new bytes object.
"""

from __future__ import annotations

import select
import socket
import threading

from . import auth, protocol
from .auth import AuthError
from .protocol import DataFrame, Message, ProtocolError

__all__ = ["AuthError", "ConnectionClosed", "Connection", "client_connect", "server_handshake",
           "send_error"]


class ConnectionClosed(Exception):
    """The other side closed the connection (or reset it)."""


class Connection:
    def __init__(self, sock: socket.socket, *, timeout: float):
        self.sock = sock
        self._timeout = timeout
        sock.settimeout(timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a socketpair in tests)
        self._send_lock = threading.Lock()
        self._closed = False
        try:
            peer = sock.getpeername()
            self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        except OSError:
            self.peer = "?"

    # -- settings -----------------------------------------------------------------
    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = value
        self.sock.settimeout(value)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- sending ------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        data = protocol.encode_message(msg)
        with self._send_lock:
            self._sendall(data)

    def send_data(self, payload) -> None:
        view = memoryview(payload).cast("B")
        with self._send_lock:
            for start in range(0, max(len(view), 1), protocol.MAX_DATA):
                chunk = view[start:start + protocol.MAX_DATA]
                self._sendmsg(protocol.encode_data_header(len(chunk)), chunk)

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ConnectionClosed(str(exc)) from exc

    def _sendmsg(self, header: bytes, payload: memoryview) -> None:
        try:
            sent = self.sock.sendmsg([header, payload])
            total = len(header) + len(payload)
            if sent < total:  # a partial send: finish the rest plainly
                if sent < len(header):
                    self.sock.sendall(header[sent:])
                    self.sock.sendall(payload)
                else:
                    self.sock.sendall(payload[sent - len(header):])
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise ConnectionClosed(str(exc)) from exc

    # -- receiving ----------------------------------------------------------------
    def readable(self, timeout: float = 0) -> bool:
        if self._closed:
            return True
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
        except (OSError, ValueError):
            return True  # closed underneath us: let recv report it
        return bool(ready)

    def recv(self, timeout: float | None = None) -> Message | DataFrame:
        """The next frame; TimeoutError if none starts within ``timeout``."""
        if self._closed:
            raise ConnectionClosed("connection is closed")
        wait = self._timeout if timeout is None else timeout
        if not self.readable(wait):
            raise TimeoutError(f"no frame within {wait:g} s")
        header = self._read_exact(protocol.HEADER_SIZE, at_frame_start=True)
        kind, length = protocol.check_header(bytes(header))
        payload = self._read_exact(length, at_frame_start=False)
        if kind == protocol.KIND_DATA:
            return DataFrame(payload)  # a bytearray: no copy
        return protocol.decode_message(payload)

    def _read_exact(self, n: int, *, at_frame_start: bool):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                r = self.sock.recv_into(view[got:], n - got)
            except socket.timeout:
                if at_frame_start and got == 0:
                    raise TimeoutError("no frame in time") from None
                raise ProtocolError("truncated", "the peer stopped in the middle of a frame") from None
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
                raise ConnectionClosed(str(exc)) from exc
            except OSError as exc:
                if self._closed:
                    raise ConnectionClosed("connection closed locally") from exc
                raise
            if r == 0:
                if at_frame_start and got == 0:
                    raise ConnectionClosed("the other side closed the connection")
                raise ProtocolError("truncated", "connection closed in the middle of a frame")
            got += r
        return buf

    # -- closing ----------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def send_error(conn: Connection, code: str, message: str) -> None:
    """Best effort: tell the other side why we are closing."""
    try:
        conn.send(protocol.Error(code, message[:1000]))
    except Exception:  # noqa: BLE001 - the connection may be gone already
        pass


_AUTH_CODES = {"auth-required", "auth-failed", "auth-unexpected"}


def client_connect(host: str, port: int, *, name: str, secret: bytes | None, timeout: float,
                   source_address: str | None = None) -> Connection:
    """Connect and complete the handshake; the caller owns the returned connection."""
    sock = socket.create_connection((host, port), timeout=timeout,
                                    source_address=(source_address, 0) if source_address else None)
    conn = Connection(sock, timeout=timeout)
    try:
        nonce_c = auth.new_nonce() if secret else None
        conn.send(protocol.Hello(protocol.PROTOCOL_VERSION, name[:protocol.MAX_NAME], nonce_c))
        reply = conn.recv()
        if isinstance(reply, protocol.Error):
            if reply.code in _AUTH_CODES:
                raise AuthError(f"{host}:{port} refused us: {reply.message}")
            raise ProtocolError(reply.code, f"{host}:{port} refused the connection: {reply.message}")
        if not isinstance(reply, protocol.Welcome):
            raise ProtocolError("unexpected", f"{host}:{port} answered the handshake with "
                                              f"{type(reply).__name__}")
        if secret:
            assert nonce_c is not None
            if reply.proof is None or not auth.valid_nonce(reply.nonce):
                send_error(conn, "auth-required", "this client requires the shared secret")
                raise AuthError(f"{host}:{port} does not know the shared secret "
                                f"(start it with --secret-file)")
            if not auth.check(auth.server_proof(secret, nonce_c, reply.nonce), reply.proof):
                send_error(conn, "auth-failed", "wrong shared secret")
                raise AuthError(f"{host}:{port} failed to prove the shared secret (a different secret?)")
            conn.send(protocol.Auth(auth.client_proof(secret, nonce_c, reply.nonce)))
            final = conn.recv()
            if isinstance(final, protocol.Error):
                raise AuthError(f"{host}:{port} refused us: {final.message}")
            if not isinstance(final, protocol.Ready):
                raise ProtocolError("unexpected", f"{host}:{port} sent {type(final).__name__} "
                                                  f"instead of ready")
        elif reply.proof is not None:
            # the server has a secret but let us in without one: not a swift server we know
            raise AuthError(f"{host}:{port} asks for a shared secret; give one with --secret-file")
        return conn
    except BaseException:
        conn.close()
        raise


def server_handshake(conn: Connection, *, name: str, secret: bytes | None) -> protocol.Hello:
    """Server side of the handshake; raises (after an Error frame) if the client is refused."""
    hello = conn.recv()
    if not isinstance(hello, protocol.Hello):
        send_error(conn, "unexpected", "a connection must start with hello")
        raise ProtocolError("unexpected", f"first frame was {type(hello).__name__}, not hello")
    if hello.version != protocol.PROTOCOL_VERSION:
        send_error(conn, "bad-version", f"this server speaks protocol version {protocol.PROTOCOL_VERSION}")
        raise ProtocolError("bad-version", f"client speaks protocol version {hello.version}")
    if not secret:
        conn.send(protocol.Welcome(protocol.PROTOCOL_VERSION, name[:protocol.MAX_NAME], None, None))
        if hello.nonce is not None:
            # the client has a secret and will refuse us: hear it, and say so here too
            reply = conn.recv()
            message = reply.message if isinstance(reply, protocol.Error) else type(reply).__name__
            raise AuthError(f"client requires a shared secret and this server has none ({message})")
        return hello
    if hello.nonce is None:
        send_error(conn, "auth-required", "this server requires the shared secret (--secret-file)")
        raise AuthError("client did not offer the shared secret")
    if not auth.valid_nonce(hello.nonce):
        send_error(conn, "bad-field", "malformed nonce")
        raise ProtocolError("bad-field", "malformed nonce in hello")
    nonce_s = auth.new_nonce()
    conn.send(protocol.Welcome(protocol.PROTOCOL_VERSION, name[:protocol.MAX_NAME], nonce_s,
                               auth.server_proof(secret, hello.nonce, nonce_s)))
    reply = conn.recv()
    if isinstance(reply, protocol.Error):
        raise AuthError(f"client refused us: {reply.message}")
    if not isinstance(reply, protocol.Auth):
        send_error(conn, "auth-unexpected", "expected auth")
        raise ProtocolError("unexpected", f"expected auth, got {type(reply).__name__}")
    if not auth.check(auth.client_proof(secret, hello.nonce, nonce_s), reply.proof):
        send_error(conn, "auth-failed", "wrong shared secret")
        raise AuthError("client failed to prove the shared secret")
    conn.send(protocol.Ready())
    return hello

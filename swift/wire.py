"""Frames over a socket: the thin I/O shell around ``swift.protocol``.

A ``Connection`` sends whole frames under a lock, so a keep-alive thread and
a data loop may share one, and receives them with a deadline. The rules:

* The socket is switched to non-blocking mode and every wait is our own
  ``poll`` with a deadline (``poll``, unlike ``select``, works for any
  descriptor number). So a reader's per-call timeout never disturbs a
  sender in another thread, and a read costs one syscall when data is
  already there. Do not use ``conn.sock`` for blocking I/O afterwards.
* Receiving: one reader at a time. ``recv(timeout)`` waits at most
  ``timeout`` for a *whole* frame (so a peer trickling one byte a second
  cannot hold a reader forever) and raises ``TimeoutError`` otherwise. A
  frame cut short by a timeout is kept and completed by the next ``recv``:
  a timeout never desynchronises the stream.
* Data frames are read straight into a fresh buffer of the announced size
  (after the header passed the limits) and handed out without a copy.
  Sending writes header + payload with one ``sendmsg`` and no joined copy.
  One connection pair moves several GB/s over loopback.
* A send that fails half-way leaves a partial frame on the wire: the
  connection is then shut down and every later send raises
  ``ConnectionClosed``, rather than letting garbage follow.

The handshake (``client_connect`` / ``server_handshake``) is described in
``swift.auth`` and docs/protocol.md.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time

from . import auth, protocol
from .auth import AuthError
from .protocol import DataFrame, Message, ProtocolError

__all__ = ["AuthError", "ConnectionClosed", "Connection", "client_connect", "client_handshake",
           "server_handshake", "send_error"]

log = logging.getLogger(__name__)

_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ConnectionClosed(Exception):
    """The other side closed the connection (or reset it), or it was closed here."""


def _wait(sock: socket.socket, timeout: float, *, write: bool = False) -> bool:
    """True when ``sock`` can be read (data, EOF, an error) or written within ``timeout``."""
    timeout = max(0.0, timeout)
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN | select.POLLPRI)
        return bool(poller.poll(timeout * 1000))
    rlist, wlist = ([], [sock]) if write else ([sock], [])  # pragma: no cover - no poll()
    return any(select.select(rlist, wlist, rlist + wlist, timeout))  # pragma: no cover


def _describe(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(peer, tuple):
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer) or "local"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection:
    """A framed connection over a connected stream socket (TCP or a socketpair)."""

    def __init__(self, sock: socket.socket, *, timeout: float):
        self.sock = sock
        self._timeout = timeout
        sock.setblocking(False)  # every wait is ours, with a deadline: see _wait
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.peer = _describe(sock)
        self._send_lock = threading.Lock()
        self._send_broken: str | None = None
        self._closed = False
        # the frame being received: header bytes, then its payload
        self._head = bytearray(protocol.HEADER_SIZE)
        self._head_got = 0
        self._kind = 0
        self._body: bytearray | None = None
        self._body_got = 0
        self._read_error: ProtocolError | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.peer}{' closed' if self._closed else ''}>"

    # -- settings -----------------------------------------------------------------
    @property
    def timeout(self) -> float:
        """Default wait for ``recv`` and the limit for sending one frame."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = value

    @property
    def closed(self) -> bool:
        return self._closed

    # -- sending ------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Send one control message (ProtocolError if it breaks the limits)."""
        self._send_frame([protocol.encode_message(msg)])

    def send_data(self, payload: bytes | bytearray | memoryview) -> None:
        """Send ``payload`` as data frames of at most ``MAX_DATA`` bytes (none if empty)."""
        view = memoryview(payload).cast("B")
        for start in range(0, len(view), protocol.MAX_DATA):
            chunk = view[start:start + protocol.MAX_DATA]
            self._send_frame([protocol.encode_data_header(len(chunk)), chunk])

    def _send_frame(self, parts: list) -> None:
        with self._send_lock:
            if self._closed:
                raise ConnectionClosed(f"connection to {self.peer} is closed")
            if self._send_broken:
                raise ConnectionClosed(self._send_broken)
            sent = 0
            deadline = time.monotonic() + self._timeout
            try:
                while parts:
                    try:
                        n = self.sock.sendmsg(parts)
                    except BlockingIOError:
                        if not _wait(self.sock, deadline - time.monotonic(), write=True):
                            if time.monotonic() >= deadline:
                                raise TimeoutError from None
                        continue
                    sent += n
                    parts = _advance(parts, n)
            except TimeoutError:
                if sent:
                    self._break(f"sending to {self.peer} timed out inside a frame")
                raise TimeoutError(f"sending to {self.peer} took over {self._timeout:g} s") from None
            except _GONE as exc:
                self._break(f"{self.peer} closed the connection")
                raise ConnectionClosed(f"{self.peer} closed the connection ({exc.strerror})") from exc
            except (OSError, ValueError) as exc:  # ValueError: polling a closed socket
                if self._closed:
                    raise ConnectionClosed(f"connection to {self.peer} is closed") from exc
                if sent:
                    self._break(f"sending to {self.peer} failed inside a frame: {exc}")
                raise

    def _break(self, why: str) -> None:
        """A partial frame went out: nothing more may follow it."""
        self._send_broken = why
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- receiving ----------------------------------------------------------------
    def readable(self, timeout: float = 0) -> bool:
        """True if ``recv`` has something to work on now (a frame, EOF or an error)."""
        if self._closed or self._read_error is not None:
            return True
        try:
            return _wait(self.sock, timeout)
        except (OSError, ValueError):
            return True  # closed underneath us: let recv report it

    def recv(self, timeout: float | None = None) -> Message | DataFrame:
        """The next whole frame within ``timeout`` seconds (default: the connection's).

        Raises TimeoutError, ConnectionClosed (EOF, reset, closed here) or
        ProtocolError (bad input; after a bad header the stream is unusable
        and every later call raises it again).
        """
        if self._closed:
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        if self._read_error is not None:
            raise self._read_error
        wait = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while self._head_got < protocol.HEADER_SIZE:
            view = memoryview(self._head)[self._head_got:]
            self._head_got += self._recv_into(view, deadline, wait)
        if self._body is None:
            try:
                self._kind, length = protocol.check_header(self._head)
            except ProtocolError as exc:
                self._read_error = exc
                raise
            self._body = bytearray(length)
            self._body_got = 0
        body = self._body
        while self._body_got < len(body):
            self._body_got += self._recv_into(memoryview(body)[self._body_got:], deadline, wait)
        kind = self._kind
        self._head_got, self._body, self._body_got = 0, None, 0
        if kind == protocol.KIND_DATA:
            return DataFrame(body)  # a bytearray nobody else holds: no copy
        return protocol.decode_message(body)

    def _recv_into(self, view: memoryview, deadline: float, wait: float) -> int:
        while True:
            try:
                n = self.sock.recv_into(view)
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                try:
                    ready = _wait(self.sock, remaining)
                except (OSError, ValueError) as exc:
                    raise ConnectionClosed(f"connection to {self.peer} is closed") from exc
                if not ready and remaining <= 0:
                    where = "inside a frame" if self._head_got else "for a frame"
                    raise TimeoutError(f"waited {wait:g} s {where} from {self.peer}") from None
                continue
            except _GONE as exc:
                raise ConnectionClosed(f"{self.peer} reset the connection") from exc
            except OSError as exc:
                if self._closed:
                    raise ConnectionClosed(f"connection to {self.peer} is closed") from exc
                raise
            if n:
                return n
            if self._head_got == 0:
                raise ConnectionClosed(f"{self.peer} closed the connection")
            self._read_error = ProtocolError("truncated",
                                             f"{self.peer} closed the connection inside a frame")
            raise self._read_error

    # -- closing ------------------------------------------------------------------
    def close(self) -> None:
        """Shut down and close the socket; safe to call more than once, from any thread."""
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

    def __exit__(self, *exc: object) -> None:
        self.close()


def _advance(parts: list, n: int) -> list:
    """What is left of ``parts`` after ``n`` bytes of them were sent."""
    out = []
    for part in parts:
        size = len(part)
        if n >= size:
            n -= size
            continue
        out.append(memoryview(part)[n:] if n else part)
        n = 0
    return out


def send_error(conn: Connection, code: str, message: str) -> None:
    """Best effort: tell the other side why we are closing. Never raises."""
    try:
        conn.send(protocol.Error(code or "error", message))
    except Exception as exc:  # noqa: BLE001 - the connection may be gone already
        log.debug("could not send error %r to %s: %s", code, conn.peer, exc)


# -- handshake ------------------------------------------------------------------------------------
_AUTH_CODES = {"auth-required", "auth-failed", "auth-unexpected"}
_NO_SECRET_HERE = "this client requires the shared secret and the server does not have it"


def client_connect(host: str, port: int, *, name: str, secret: bytes | None, timeout: float,
                   source_address: str | None = None) -> Connection:
    """Connect to a swift server and complete the handshake within ``timeout``.

    The caller owns (and must close) the returned connection. Raises
    AuthError (secret mismatch; the message says which way),
    ConnectionRefusedError, TimeoutError, ProtocolError (the server refused
    for another reason or spoke nonsense) or another OSError.
    """
    where = _address(host, port)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source_address, 0) if source_address else None)
    except ConnectionRefusedError:
        raise ConnectionRefusedError(f"{where} refused the connection "
                                     f"(is a swift server listening there?)") from None
    except TimeoutError:
        raise TimeoutError(f"connecting to {where} took over {timeout:g} s") from None
    except OSError as exc:
        raise _reworded(exc, f"cannot connect to {where}: {exc.strerror or exc}") from None
    conn = Connection(sock, timeout=timeout)
    try:
        client_handshake(conn, name=name, secret=secret, timeout=deadline - time.monotonic(),
                         where=where)
        return conn
    except BaseException:
        conn.close()
        raise


def _reworded(exc: OSError, message: str) -> OSError:
    """The same kind of error, with a message that names the address."""
    try:
        return type(exc)(message)
    except TypeError:  # pragma: no cover - an exotic subclass
        return OSError(message)


def _refused(error: protocol.Error, where: str) -> None:
    """Raise what an Error frame during the handshake means: not a member, or something else."""
    if error.code in _AUTH_CODES:
        raise AuthError(f"{where} refused us: {error.message}")
    raise ProtocolError(error.code, f"{where} refused the connection: {error.message}")


def client_handshake(conn: Connection, *, name: str, secret: bytes | None,
                     timeout: float | None = None, where: str | None = None) -> None:
    """Client side of the handshake on an already connected ``conn``.

    ``timeout`` bounds the whole exchange (default: the connection's);
    ``where`` names the server in messages (default: its address). Raises
    like ``client_connect``; the caller closes ``conn`` on failure.
    """
    where = where or conn.peer
    deadline = time.monotonic() + (conn.timeout if timeout is None else timeout)

    def receive() -> Message | DataFrame:
        try:
            return conn.recv(timeout=deadline - time.monotonic())
        except TimeoutError:
            raise TimeoutError(f"{where} did not complete the handshake in time") from None

    nonce_c = auth.new_nonce() if secret else None
    conn.send(protocol.Hello(protocol.PROTOCOL_VERSION, name[:protocol.MAX_NAME], nonce_c))
    reply = receive()
    if isinstance(reply, protocol.Error):
        _refused(reply, where)
    if not isinstance(reply, protocol.Welcome):
        raise ProtocolError("unexpected", f"{where} answered hello with {type(reply).__name__}")
    if reply.version != protocol.PROTOCOL_VERSION:
        send_error(conn, "bad-version", f"this client speaks version {protocol.PROTOCOL_VERSION}")
        raise ProtocolError("bad-version", f"{where} speaks protocol version {reply.version}, "
                                           f"this client {protocol.PROTOCOL_VERSION}")
    if not secret:
        if reply.proof is not None or reply.nonce is not None:
            send_error(conn, "auth-required", "this client has no shared secret")
            raise AuthError(f"{where} requires the shared secret; give it with --secret-file")
        return  # no secret on either side: ready after welcome
    assert nonce_c is not None
    if reply.proof is None or reply.nonce is None:
        send_error(conn, "auth-required", _NO_SECRET_HERE)
        raise AuthError(f"{where} does not know the shared secret (start it with --secret-file), "
                        f"so it is not trusted")
    if not auth.check(auth.server_proof(secret, nonce_c, reply.nonce), reply.proof):
        send_error(conn, "auth-failed", "the server's proof does not match this client's secret")
        raise AuthError(f"{where} failed to prove it knows the shared secret (a different secret?)")
    conn.send(protocol.Auth(auth.client_proof(secret, nonce_c, reply.nonce)))
    final = receive()
    if isinstance(final, protocol.Error):
        _refused(final, where)
    if not isinstance(final, protocol.Ready):
        raise ProtocolError("unexpected", f"{where} sent {type(final).__name__} instead of ready")


def server_handshake(conn: Connection, *, name: str, secret: bytes | None) -> protocol.Hello:
    """Server side of the handshake, within the connection's timeout per frame.

    Returns the client's Hello. On refusal it sends an Error frame (where the
    connection still works) and raises AuthError or ProtocolError;
    ConnectionClosed and TimeoutError pass through. The caller closes.
    """
    hello = _server_recv(conn)
    if not isinstance(hello, protocol.Hello):
        send_error(conn, "unexpected", "a connection must start with hello")
        raise ProtocolError("unexpected", f"{conn.peer} started with {type(hello).__name__}, "
                                          f"not hello")
    if hello.version != protocol.PROTOCOL_VERSION:
        send_error(conn, "bad-version", f"this server speaks protocol version "
                                        f"{protocol.PROTOCOL_VERSION}, not {hello.version}")
        raise ProtocolError("bad-version", f"{conn.peer} speaks protocol version {hello.version}")
    short_name = name[:protocol.MAX_NAME]
    if not secret:
        conn.send(protocol.Welcome(protocol.PROTOCOL_VERSION, short_name, None, None))
        if hello.nonce is not None:
            # the client has a secret and will refuse us: hear its reason, and say so here too
            try:
                reply = _server_recv(conn)
                why = reply.message if isinstance(reply, protocol.Error) else type(reply).__name__
            except (ConnectionClosed, TimeoutError, ProtocolError) as exc:
                why = str(exc)
            raise AuthError(f"the client requires a shared secret and this server has none "
                            f"(it says: {why})")
        return hello
    if hello.nonce is None:
        send_error(conn, "auth-required", "this server requires the shared secret (--secret-file)")
        raise AuthError(f"client {conn.peer} did not offer the shared secret")
    nonce_s = auth.new_nonce()
    conn.send(protocol.Welcome(protocol.PROTOCOL_VERSION, short_name, nonce_s,
                               auth.server_proof(secret, hello.nonce, nonce_s)))
    reply = _server_recv(conn)
    if isinstance(reply, protocol.Error):
        raise AuthError(f"client {conn.peer} refused us: {reply.message}")
    if not isinstance(reply, protocol.Auth):
        send_error(conn, "auth-unexpected", "expected auth")
        raise ProtocolError("unexpected", f"{conn.peer} sent {type(reply).__name__}, not auth")
    if not auth.check(auth.client_proof(secret, hello.nonce, nonce_s), reply.proof):
        send_error(conn, "auth-failed", "wrong shared secret")
        raise AuthError(f"client {conn.peer} failed to prove it knows the shared secret "
                        f"(a different secret?)")
    conn.send(protocol.Ready())
    return hello


def _server_recv(conn: Connection) -> Message | DataFrame:
    try:
        return conn.recv()
    except ProtocolError as exc:
        send_error(conn, exc.code, str(exc))
        raise

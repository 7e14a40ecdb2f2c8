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
* All framing is ``protocol.FrameDecoder``, the same parser the fuzz tests
  drive: ``recv_into(decoder.buffer())`` then ``decoder.advance(n)``. So a
  data frame is read straight into a fresh buffer of the announced size
  (after the header passed the limits) and handed out without a copy.
  Sending writes header + payload with one ``sendmsg`` and no joined copy.
  One plain connection pair moves about 3 GB/s over loopback.
* A send that fails half-way leaves a partial frame on the wire: the
  connection is then shut down and every later send raises
  ``ConnectionClosed``, rather than letting garbage follow.
* With a shared secret the connection runs TLS 1.3 (the private member
  channel: ``start_tls_client`` / ``start_tls_server`` / ``accept``), and
  TLS is sans-I/O too: an ``ssl.SSLObject`` over two memory BIOs, while the
  socket I/O above stays ours. So ciphertext is read ``RAW_CHUNK`` bytes at
  a time (an ``SSLSocket`` reads each 16 KiB record with two syscalls of
  its own: twice the CPU per received byte, measured), every wait keeps
  its deadline, and a shutdown never races the TLS state. The SSL object
  is shared by a reader and a sender thread, so every call on it holds
  ``_TlsState.lock`` (waits never do). Encrypting moves the TLS record
  sequence on, so a frame counts as partial (and a failure poisons the
  connection) from its first encrypted byte. Buffers are bounded by
  ``RAW_CHUNK`` and ``TLS_CHUNK``, never by the file.

The handshake (``client_connect`` / ``accept`` / ``server_handshake``) is
the state machine of ``swift.handshake``, driven here over the socket; its
rules are there and in docs/protocol.md.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import auth, handshake, protocol
from .addresses import format_hostport
from .errors import AuthError, ConnectionClosed
from .protocol import DataFrame, Message, ProtocolError

__all__ = ["AuthError", "ConnectionClosed", "Connection", "ServerTLS", "accept", "client_connect",
           "client_handshake", "server_handshake", "send_error", "start_tls_client",
           "start_tls_server"]

log = logging.getLogger(__name__)

#: the peer is gone (TLS: it closed without or with close_notify)
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

#: Ciphertext read from the socket at once: four full TLS records per syscall (an
#: SSLSocket makes two syscalls per record), in a buffer each TLS connection keeps:
#: 64 connections hold 4 MiB.
RAW_CHUNK = 64 * 1024
#: Plaintext encrypted at once when sending: bounds the ciphertext held during a send.
TLS_CHUNK = 256 * 1024


class _TlsState:
    """TLS without a socket: an ``ssl.SSLObject`` between two memory BIOs."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side)
        self.lock = threading.Lock()  # one SSL object, two threads: every call on it holds this
        self.raw = bytearray(RAW_CHUNK)  # ciphertext from the socket (one reader at a time)


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
        return format_hostport(peer[0], peer[1])
    return str(peer) or "local"


class Connection:
    """A framed connection over a connected stream socket (TCP or a socketpair), plain or TLS.

    TLS connections come from ``start_tls_client`` / ``start_tls_server``;
    ``binding`` is then the TLS channel binding. ``private`` becomes True
    once a member proved the shared secret over that TLS channel.
    """

    def __init__(self, sock: socket.socket, *, timeout: float, tls: _TlsState | None = None):
        self.sock = sock
        self._timeout = timeout
        self._tls = tls
        self.binding: bytes | None = None
        #: True when this connection runs over TLS with a verified member: the
        #: only kind that may carry secrets (cookies, credentials) to a peer
        self.private = False
        self._frame_sent = 0  # bytes of the frame being sent that may be on the wire
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
        self._decoder = protocol.FrameDecoder()  # the frame being received; its errors stick
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
            self._frame_sent = 0
            deadline = time.monotonic() + self._timeout
            try:
                if self._tls is None:
                    self._sock_send(parts, deadline)
                else:
                    self._tls_send(parts, deadline)
            except TimeoutError:
                if self._frame_sent:
                    self._break(f"sending to {self.peer} timed out inside a frame")
                raise TimeoutError(f"sending to {self.peer} took over {self._timeout:g} s") from None
            except _GONE as exc:
                self._break(f"{self.peer} closed the connection")
                raise ConnectionClosed(f"{self.peer} closed the connection ({exc.strerror})") from exc
            except (OSError, ValueError) as exc:  # ValueError: polling a closed socket
                if self._closed:
                    raise ConnectionClosed(f"connection to {self.peer} is closed") from exc
                if self._frame_sent:
                    self._break(f"sending to {self.peer} failed inside a frame: {exc}")
                raise

    def _tls_send(self, parts: list, deadline: float) -> None:
        tls = self._tls
        assert tls is not None
        for part in parts:
            view = memoryview(part).cast("B")
            for start in range(0, len(view), TLS_CHUNK):
                with tls.lock:
                    tls.obj.write(view[start:start + TLS_CHUNK])
                    ciphertext = tls.outgoing.read()
                self._frame_sent = max(self._frame_sent, 1)  # the record sequence moved on
                self._sock_send([ciphertext], deadline)

    def _sock_send(self, parts: list, deadline: float) -> None:
        """Write all of ``parts`` to the socket by ``deadline`` (TimeoutError otherwise)."""
        while parts:
            try:
                n = self.sock.sendmsg(parts)
            except BlockingIOError:
                if not _wait(self.sock, deadline - time.monotonic(), write=True):
                    if time.monotonic() >= deadline:
                        raise TimeoutError from None
                continue
            self._frame_sent += n
            parts = _advance(parts, n)

    def _break(self, why: str) -> None:
        """A partial frame went out: nothing more may follow it."""
        self._send_broken = why
        shutdown(self.sock)

    # -- receiving ----------------------------------------------------------------
    def readable(self, timeout: float = 0) -> bool:
        """True if ``recv`` has something to work on now (a frame, EOF or an error)."""
        if self._closed or self._read_error is not None:
            return True
        try:
            if self._tls is not None:
                with self._tls.lock:  # bytes received already, which poll() cannot see
                    if self._tls.obj.pending() or self._tls.incoming.pending:
                        return True
            return _wait(self.sock, timeout)
        except (OSError, ValueError):
            return True  # closed underneath us: let recv report it

    def recv(self, timeout: float | None = None) -> Message | DataFrame:
        """The next whole frame within ``timeout`` seconds (default: the connection's).

        Raises TimeoutError, ConnectionClosed (EOF, reset, closed here) or
        RemoteProtocolError (bad input; after a bad header the stream is
        unusable and every later call raises it again).
        """
        if self._closed:
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        if self._read_error is not None:
            raise self._read_error
        wait = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        frame = None
        try:
            while frame is None:
                frame = self._decoder.advance(self._recv_into(self._decoder.buffer(), deadline, wait))
        except ProtocolError as exc:
            self._read_error = exc
            raise
        return protocol.parse_frame(frame)

    def _recv_into(self, view: memoryview, deadline: float, wait: float) -> int:
        """Fill a prefix of ``view`` with stream bytes; the count. EOF raises (see ``recv``)."""
        if self._tls is None:
            n = self._sock_recv_into(view, deadline, wait)
        else:
            n = self._tls_recv_into(view, deadline, wait)
        if n:
            return n
        if not self._decoder.pending:
            raise ConnectionClosed(f"{self.peer} closed the connection")
        try:
            self._decoder.eof()
        except ProtocolError as exc:
            raise protocol.RemoteProtocolError(
                "truncated", f"{self.peer} closed the connection inside a frame") from exc
        raise AssertionError("eof() inside a frame must raise")  # pragma: no cover

    def _tls_recv_into(self, view: memoryview, deadline: float, wait: float) -> int:
        """Decrypted bytes into ``view``; 0 at the end of the stream."""
        tls = self._tls
        assert tls is not None
        while True:
            with tls.lock:
                try:
                    return tls.obj.read(len(view), view)
                except ssl.SSLWantReadError:
                    pass  # a whole record is not there yet
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return 0
                except ssl.SSLError as exc:  # a record that fails to decrypt: altered or forged
                    raise protocol.RemoteProtocolError(
                        "tls", f"TLS record from {self.peer} refused: {_tls_reason(exc)}") from None
            n = self._sock_recv_into(memoryview(tls.raw), deadline, wait)
            with tls.lock:
                if n:
                    tls.incoming.write(memoryview(tls.raw)[:n])
                else:
                    tls.incoming.write_eof()

    def _sock_recv_into(self, view: memoryview, deadline: float, wait: float) -> int:
        """Bytes from the socket into ``view`` by ``deadline``; 0 at EOF."""
        while True:
            try:
                return self.sock.recv_into(view)
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                try:
                    ready = _wait(self.sock, remaining)
                except (OSError, ValueError) as exc:
                    raise ConnectionClosed(f"connection to {self.peer} is closed") from exc
                if not ready and remaining <= 0:
                    where = "inside a frame" if self._decoder.pending else "for a frame"
                    raise TimeoutError(f"waited {wait:g} s {where} from {self.peer}") from None
            except _GONE as exc:
                raise ConnectionClosed(f"{self.peer} reset the connection") from exc
            except OSError as exc:
                if self._closed:
                    raise ConnectionClosed(f"connection to {self.peer} is closed") from exc
                raise

    def _tls_handshake(self, deadline: float, where: str) -> None:
        """Run the TLS handshake over the socket by ``deadline``; SSLError if it fails."""
        tls = self._tls
        assert tls is not None
        while True:
            try:
                tls.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            flight = tls.outgoing.read()
            if flight:
                self._sock_send([flight], deadline)
            if done:
                return
            try:
                n = self._sock_recv_into(memoryview(tls.raw), deadline, deadline - time.monotonic())
            except TimeoutError:
                raise TimeoutError(f"the TLS handshake with {where} took too long") from None
            if n:
                tls.incoming.write(memoryview(tls.raw)[:n])
            else:
                tls.incoming.write_eof()

    # -- closing ------------------------------------------------------------------
    def close(self) -> None:
        """Shut down and close the socket; safe to call more than once, from any thread."""
        if self._closed:
            return
        self._closed = True
        shutdown(self.sock)
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shutdown(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways, waking any thread that waits on it; never raises.

    For TLS too this is the TCP shutdown: the TLS layer then sees the end of
    the stream.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


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


# -- the private channel: TLS with a secret (nobody else on the LAN reads or alters member frames) --
#: The first byte of a TLS connection (a handshake record, RFC 8446 section 5.1);
#: a swift frame starts with its version, 1. A server tells the two apart by it.
TLS_HANDSHAKE_RECORD = 0x16

_PLAIN_REFUSAL = ("this server requires the shared secret (--secret-file); with it every "
                  "connection runs over TLS")


@dataclass(frozen=True)
class ServerTLS:
    """A server's TLS context and the channel binding of its certificate."""

    context: ssl.SSLContext
    binding: bytes

    @classmethod
    def load(cls, role: str, state_dir: Path | None = None) -> "ServerTLS":
        """This member's identity for ``role`` (made at first start), ready to serve TLS.

        Raises ``identity.IdentityError`` (an OSError) with what to do.
        """
        from . import identity

        ident = identity.load_or_create(role, state_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        # no session tickets: nothing to resume (a handshake costs a millisecond), and
        # after the handshake only frames arrive, so ``readable`` never wakes for a record
        # that holds no frame bytes
        context.num_tickets = 0
        try:
            context.load_cert_chain(ident.path)
        except ssl.SSLError as exc:
            raise identity.IdentityError(f"{ident.path} holds no usable TLS key ({_tls_reason(exc)}); "
                                         f"remove it to make a new one") from None
        return cls(context, ident.binding)


_client_context: ssl.SSLContext | None = None


def _tls_client_context() -> ssl.SSLContext:
    """TLS 1.3, any certificate: the membership proof, bound to the certificate, is the check."""
    global _client_context
    if _client_context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # see above: the proof covers the certificate's hash
        _client_context = context
    return _client_context


def start_tls_client(sock: socket.socket, *, timeout: float, where: str | None = None) -> Connection:
    """TLS over a connected ``sock`` as the client; the Connection, with the server's binding.

    Takes ``sock`` over (closes it on failure). A server that does not
    answer TLS has no shared secret: AuthError, saying so.
    """
    where = where or _describe(sock)
    deadline = time.monotonic() + timeout
    conn = Connection(sock, timeout=timeout, tls=_TlsState(_tls_client_context(), server_side=False))
    try:
        conn._tls_handshake(deadline, where)
        der = conn._tls.obj.getpeercert(binary_form=True)  # type: ignore[union-attr]
        conn.binding = auth.tls_server_end_point(der or b"")
    except ValueError:
        conn.close()
        raise AuthError(f"{where} sent no readable TLS certificate") from None
    except (ssl.SSLError, ConnectionError, ConnectionClosed) as exc:
        conn.close()
        raise AuthError(f"{where} does not know the shared secret (it does not speak TLS: "
                        f"{_tls_reason(exc)}; start it with --secret-file), so it is not "
                        f"trusted") from None
    except BaseException:
        conn.close()
        raise
    return conn


def start_tls_server(sock: socket.socket, tls: ServerTLS, *, timeout: float) -> Connection:
    """TLS over an accepted ``sock`` as the server; takes ``sock`` over (closes it on failure)."""
    where = _describe(sock)
    deadline = time.monotonic() + timeout
    conn = Connection(sock, timeout=timeout, tls=_TlsState(tls.context, server_side=True))
    try:
        conn._tls_handshake(deadline, where)
    except ssl.SSLError as exc:
        conn.close()
        raise protocol.RemoteProtocolError("tls", f"TLS handshake with {where} failed: "
                                                  f"{_tls_reason(exc)}") from None
    except BaseException:
        conn.close()
        raise
    conn.binding = tls.binding
    return conn


def _tls_reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or exc.__class__.__name__


def _first_byte(sock: socket.socket, deadline: float) -> int:
    """The first byte the client sent, left in the socket (MSG_PEEK)."""
    sock.setblocking(False)
    while True:
        try:
            head = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            if not _wait(sock, deadline - time.monotonic()) and time.monotonic() >= deadline:
                raise TimeoutError(f"{_describe(sock)} sent nothing") from None
            continue
        except _GONE as exc:
            raise ConnectionClosed(f"{_describe(sock)} reset the connection") from exc
        if not head:
            raise ConnectionClosed(f"{_describe(sock)} closed the connection")
        return head[0]


def accept(sock: socket.socket, *, name: str, secret: bytes | None, tls: ServerTLS | None,
           timeout: float) -> tuple[Connection, protocol.Hello]:
    """Server side of a new connection: the channel, then the handshake, within ``timeout``.

    With a secret the channel is TLS (``tls`` is required) and a client
    sending plain frames is refused with an ``auth-required`` error frame
    it can read; without one, a client speaking TLS (it has a secret) is
    refused. Returns the
    connection (the caller closes it) and the client's Hello; raises
    AuthError, ProtocolError, ConnectionClosed, TimeoutError or OSError
    after closing what it opened.
    """
    deadline = time.monotonic() + timeout
    peer = _describe(sock)
    speaks_tls = _first_byte(sock, deadline) == TLS_HANDSHAKE_RECORD
    if secret and tls is None:
        raise protocol.LocalProtocolError("no-channel", "a server with a secret needs its TLS identity")
    if secret and speaks_tls:
        assert tls is not None
        conn = start_tls_server(sock, tls, timeout=max(0.0, deadline - time.monotonic()))
    else:
        conn = Connection(sock, timeout=max(0.0, deadline - time.monotonic()))
        if secret:
            with contextlib.suppress(ConnectionClosed, TimeoutError, ProtocolError, OSError):
                conn.recv()  # its hello: closing with it unread would reset the connection
            send_error(conn, "auth-required", _PLAIN_REFUSAL)
            conn.close()
            raise AuthError(f"client {peer} did not offer the shared secret (it sent plain frames; "
                            f"with a secret every connection runs over TLS)")
        if speaks_tls:
            with contextlib.suppress(OSError):
                sock.recv(65536)  # its TLS hello: closing with it unread would reset the connection
            send_error(conn, "auth-required", "this server has no shared secret; a client that "
                                              "speaks TLS has one (start the server with --secret-file)")
            conn.close()
            raise AuthError(f"the client requires a shared secret and this server has none "
                            f"({peer} speaks TLS; start this server with --secret-file to let it in)")
    try:
        conn.timeout = max(0.0, deadline - time.monotonic())
        hello = server_handshake(conn, name=name, secret=secret)
    except BaseException:
        conn.close()
        raise
    return conn, hello


# -- handshake: the socket side of swift.handshake -------------------------------------------------
def client_connect(host: str, port: int, *, name: str, secret: bytes | None, timeout: float,
                   source_address: str | None = None) -> Connection:
    """Connect to a swift server and complete the handshake within ``timeout``.

    The caller owns (and must close) the returned connection. Raises
    AuthError (secret mismatch; the message says which way),
    ConnectionRefusedError, TimeoutError, ProtocolError (the server refused
    for another reason or spoke nonsense) or another OSError.
    """
    where = format_hostport(host, port)
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
    if secret:  # a member's connections run over TLS, never plain (no fallback)
        conn = start_tls_client(sock, timeout=max(0.0, deadline - time.monotonic()), where=where)
        conn.timeout = timeout
    else:
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


def client_handshake(conn: Connection, *, name: str, secret: bytes | None,
                     timeout: float | None = None, where: str | None = None) -> None:
    """Client side of the handshake on an already connected ``conn``.

    ``timeout`` bounds the whole exchange (default: the connection's);
    ``where`` names the server in messages (default: its address). Raises
    like ``client_connect``; the caller closes ``conn`` on failure.
    """
    where = where or conn.peer
    deadline = time.monotonic() + (conn.timeout if timeout is None else timeout)
    machine = handshake.ClientHandshake(name=name, secret=secret, where=where, binding=conn.binding)
    step = machine.start()
    while True:
        _perform(conn, step)
        if step.done:
            conn.private = bool(secret)  # a member proved the secret over this TLS channel
            return
        try:
            msg = conn.recv(timeout=deadline - time.monotonic())
        except TimeoutError:
            raise TimeoutError(f"{where} did not complete the handshake in time") from None
        step = machine.receive(msg)


def _perform(conn: Connection, step: handshake.Step) -> None:
    """Send what a handshake step says; raise its failure (the error frames are best effort)."""
    if step.failure is None:
        for msg in step.send:
            conn.send(msg)
        return
    for msg in step.send:
        if isinstance(msg, protocol.Error):
            send_error(conn, msg.code, msg.message)
        else:  # pragma: no cover - a failing step sends only errors
            conn.send(msg)
    raise step.failure


def server_handshake(conn: Connection, *, name: str, secret: bytes | None) -> protocol.Hello:
    """Server side of the handshake, within the connection's timeout per frame.

    Returns the client's Hello. On refusal it sends an Error frame (where the
    connection still works) and raises AuthError or ProtocolError;
    ConnectionClosed and TimeoutError pass through. The caller closes.
    """
    machine = handshake.ServerHandshake(name=name, secret=secret, peer=conn.peer,
                                        binding=conn.binding)
    while True:
        try:
            msg = conn.recv()
        except ProtocolError as exc:
            step = machine.bad_frame(exc)
        except (ConnectionClosed, TimeoutError) as exc:
            if machine.state != "await-refusal":
                raise
            step = machine.connection_lost(str(exc))
        else:
            step = machine.receive(msg)
        _perform(conn, step)
        if step.done:
            assert machine.hello is not None
            conn.private = bool(secret)
            return machine.hello

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
  One connection pair moves several GB/s over loopback.
* A send that fails half-way leaves a partial frame on the wire: the
  connection is then shut down and every later send raises
  ``ConnectionClosed``, rather than letting garbage follow.

The handshake (``client_connect`` / ``server_handshake``) is the state
machine of ``swift.handshake``, driven here over the socket; its rules are
there and in docs/protocol.md.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time

from . import handshake, protocol
from .auth import AuthError
from .protocol import DataFrame, Message, ProtocolError

__all__ = ["AuthError", "ConnectionClosed", "Connection", "client_connect", "client_handshake",
           "hostport", "server_handshake", "send_error"]

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
        return hostport(peer[0], peer[1])
    return str(peer) or "local"


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:8000``)."""
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
                    where = "inside a frame" if self._decoder.pending else "for a frame"
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
            if not self._decoder.pending:
                raise ConnectionClosed(f"{self.peer} closed the connection")
            try:
                self._decoder.eof()
            except ProtocolError as exc:
                raise protocol.RemoteProtocolError(
                    "truncated", f"{self.peer} closed the connection inside a frame") from exc
            raise AssertionError("eof() inside a frame must raise")  # pragma: no cover

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


# -- handshake: the socket side of swift.handshake -------------------------------------------------
def client_connect(host: str, port: int, *, name: str, secret: bytes | None, timeout: float,
                   source_address: str | None = None) -> Connection:
    """Connect to a swift server and complete the handshake within ``timeout``.

    The caller owns (and must close) the returned connection. Raises
    AuthError (secret mismatch; the message says which way),
    ConnectionRefusedError, TimeoutError, ProtocolError (the server refused
    for another reason or spoke nonsense) or another OSError.
    """
    where = hostport(host, port)
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


def client_handshake(conn: Connection, *, name: str, secret: bytes | None,
                     timeout: float | None = None, where: str | None = None) -> None:
    """Client side of the handshake on an already connected ``conn``.

    ``timeout`` bounds the whole exchange (default: the connection's);
    ``where`` names the server in messages (default: its address). Raises
    like ``client_connect``; the caller closes ``conn`` on failure.
    """
    where = where or conn.peer
    deadline = time.monotonic() + (conn.timeout if timeout is None else timeout)
    machine = handshake.ClientHandshake(name=name, secret=secret, where=where)
    step = machine.start()
    while True:
        _perform(conn, step)
        if step.done:
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
    machine = handshake.ServerHandshake(name=name, secret=secret, peer=conn.peer)
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
            return machine.hello

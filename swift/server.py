"""A threaded TCP server for swift's framed protocol, shared by discovery and nodes.

``socketserver.ThreadingTCPServer`` gives each connection a thread; on its own
that lets any client on the LAN pin a thread per idle socket. This subclass
adds what a daemon facing a LAN needs:

- a bound on open connections: past it a new connection gets an ``Error``
  frame ("busy") and is closed at once instead of a thread;
- the private channel and the protocol handshake before any request is
  looked at: with a shared secret, TLS with this member's own key
  (``ServerTLS``) and the mutual challenge-response bound to it; without
  one, plain frames and the version check (``wire.accept``);
- an idle timeout: a connection that sends nothing for that long is closed;
- ownership of every connection: ``stop()`` closes the listening socket and
  every open connection, then joins the handler threads with a deadline.

A bad frame from one client ends that client's connection (after an error
frame where possible) and nothing else: the server keeps serving.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Callable

from . import protocol, wire

log = logging.getLogger(__name__)

#: How long a client may take to complete the handshake (milliseconds on a
#: LAN). Silent connections hold a slot this long; the per-address share
#: below keeps one flooding machine from holding them all.
HANDSHAKE_TIMEOUT = 10.0


class FramedServer(socketserver.ThreadingTCPServer):
    """Accepts connections, performs the handshake, then calls ``serve_connection``."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], *, name: str, secret: bytes | None,
                 idle_timeout: float, max_connections: int,
                 serve_connection: Callable[["FramedServer", wire.Connection], None],
                 tls: wire.ServerTLS | None = None):
        """``tls`` is required with a ``secret`` (``wire.ServerTLS.load(role)``)."""
        if secret and tls is None:
            raise ValueError("a server with a shared secret needs its TLS identity")
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.name = name
        self.secret = secret
        self.tls = tls
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._serve_connection = serve_connection
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._per_ip: dict[str, int] = {}
        self._handlers: set[threading.Thread] = set()  # type: ignore[assignment]
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        super().__init__(address, socketserver.BaseRequestHandler, bind_and_activate=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    # -- connection bookkeeping -------------------------------------------------
    def process_request(self, request, client_address):  # type: ignore[override]
        ip = client_address[0]
        with self._lock:
            from_ip = self._per_ip.get(ip, 0)
            # one address may hold at most a quarter of the slots: a single
            # flooding machine cannot lock everyone else out
            full = (len(self._open) >= self.max_connections or self.stopping.is_set()
                    or from_ip >= max(8, self.max_connections // 4))
            if not full:
                self._open.add(request)
                self._per_ip[ip] = from_ip + 1
        if full:
            log.warning("refusing connection from %s: %d connections open",
                        client_address[0], self.max_connections)
            self._refuse(request)
            return
        thread = threading.Thread(target=self._run, args=(request, client_address),
                                  name=f"{self.name}-conn", daemon=True)
        with self._lock:
            self._handlers.add(thread)
        thread.start()

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.settimeout(0.5)
            request.sendall(protocol.encode_message(
                protocol.Error(protocol.FetchCode.BUSY, "too many open connections; try again later")))
        except OSError:
            pass
        self.shutdown_request(request)

    def _run(self, request: socket.socket, client_address) -> None:
        try:
            try:
                conn, _ = wire.accept(request, name=self.name, secret=self.secret, tls=self.tls,
                                      timeout=HANDSHAKE_TIMEOUT)
            except (wire.AuthError, protocol.ProtocolError) as exc:
                log.warning("handshake with %s failed: %s", client_address[0], exc)
                return
            except (wire.ConnectionClosed, TimeoutError, OSError) as exc:
                log.debug("handshake with %s ended: %s", client_address[0], exc)
                return
            with conn:
                conn.timeout = self.idle_timeout
                self._serve_connection(self, conn)
        except (wire.ConnectionClosed, OSError) as exc:
            log.debug("connection from %s ended: %s", client_address[0], exc)
        except Exception:  # a bug must not take the daemon down
            log.exception("error serving %s", client_address[0])
        finally:
            with self._lock:
                self._open.discard(request)
                left = self._per_ip.get(client_address[0], 1) - 1
                if left > 0:
                    self._per_ip[client_address[0]] = left
                else:
                    self._per_ip.pop(client_address[0], None)
                self._handlers.discard(threading.current_thread())
            self.shutdown_request(request)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> "FramedServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"{self.name}-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every open connection, join the threads."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout)
        self.server_close()
        with self._lock:
            sockets = list(self._open)
            threads = list(self._handlers)
        for sock in sockets:
            wire.shutdown(sock)
        for thread in threads:
            thread.join(timeout / max(1, len(threads)))

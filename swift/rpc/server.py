"""The node's RPC port: JSON-RPC over HTTP POST and WebSocket at ``/jsonrpc``, the page at ``/``.

Rules:

* Every request passes :func:`swift.rpc.policy.check_request` first (origin,
  host, content type, size); a refusal is answered with its status and a
  JSON-RPC error body, and no method runs.
* The JSON-RPC itself is :class:`swift.rpc.jsonrpc.Dispatcher` over
  :class:`swift.rpc.aria2.Aria2`; this module only moves bytes. An error
  answer has status 400, as aria2's has; a result 200.
* WebSocket framing is ``wsproto``'s (the handshake's accept token too); each
  connection has its own thread (the handler's) that reads, and any thread
  may send under the connection's lock. Notifications go to every open
  WebSocket; at most :data:`MAX_SOCKETS` are open at once.
* The server owns its threads and sockets: :meth:`RpcServer.stop` shuts the
  accept loop down, closes every open connection (so their threads end) and
  the listening socket, within its deadline.
* The page is three static files shipped in the package (``static/``), with
  a Content-Security-Policy that lets them load nothing from elsewhere.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from ..addresses import format_hostport
from .aria2 import UNSUPPORTED, Aria2
from .jsonrpc import INVALID_REQUEST, Dispatcher, RpcError, notification
from .policy import MAX_MESSAGE, Refusal, check_request

__all__ = ["RpcServer", "DEFAULT_PORT"]

log = logging.getLogger(__name__)

#: aria2's ``--rpc-listen-port`` default.
DEFAULT_PORT = 6800
#: Seconds a connection may stay silent between requests (HTTP keep-alive), or
#: take to send one request: a page polls every second or two.
IDLE_TIMEOUT = 30.0
#: Seconds between a WebSocket reader's looks at the stop flag.
WS_POLL = 0.5
#: Most WebSocket connections open at once: a few pages and front ends; each holds a thread.
MAX_SOCKETS = 64
#: Most connections open at once (each holds a thread); one more is closed at once.
#: A page keeps one or two, a front end a few: 128 is far beyond a user's needs.
MAX_CONNECTIONS = 128
#: The page's files, by path: (file in ``static/``, content type).
PAGE_FILES = {"/": ("page.html", "text/html; charset=utf-8"),
              "/page.js": ("page.js", "text/javascript; charset=utf-8"),
              "/page.css": ("page.css", "text/css; charset=utf-8")}
#: The page loads only its own files and talks only to this server.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self' ws://{host}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HOST_CHARS = re.compile(r"[A-Za-z0-9.:\[\]-]{1,300}")
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                   "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _WebSocket:
    """One open WebSocket: wsproto's state and the socket. wsproto's ``Connection`` is
    not thread-safe: every use of it (receive, events, send) holds the lock."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.conn = Connection(ConnectionType.SERVER)
        self.lock = threading.Lock()

    def receive(self, data: bytes) -> list:
        """Feed what arrived; the events it completed."""
        with self.lock:
            self.conn.receive_data(data)
            return list(self.conn.events())

    def send(self, event: Any) -> None:
        with self.lock:
            if self.conn.state is not ConnectionState.OPEN and not isinstance(event, CloseConnection):
                return
            self.sock.sendall(self.conn.send(event))

    def close(self, code: int = 1001, reason: str = "") -> None:
        try:
            self.send(CloseConnection(code=code, reason=reason))
        except Exception:  # already closed or half-open: nothing left to say
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple, owner: "RpcServer"):
        self.owner = owner
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        with self.sockets_lock:
            full = len(self.open_sockets) >= MAX_CONNECTIONS
            if not full:
                self.open_sockets.add(request)
        if full:
            log.warning("rpc: %d connections open; refused one from %s", MAX_CONNECTIONS,
                        client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # a client's reset is no error of ours
        log.debug("RPC connection from %s ended", client_address, exc_info=True)


class RpcServer:
    """aria2's JSON-RPC and the live page for a node.

    ``host``/``port``: where to listen (``port`` 0: any free one, then
    :attr:`port`); ``secret``: the ``--rpc-secret`` token (None: none);
    ``listen_all``: answer to any ``Host`` name (see :mod:`swift.rpc.policy`);
    ``allowed_origins``: other origins a browser may call from. The port is
    bound here (OSError if it cannot be), so a node can refuse to start
    before it joins the pool; :meth:`start` serves a ``NodeApp``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 secret: str | None = None, listen_all: bool = False,
                 allowed_origins: frozenset[str] | set[str] = frozenset()):
        self.listen_all = listen_all
        self.allowed_origins = frozenset(allowed_origins)
        self._secret = secret
        self.aria2: Aria2 | None = None
        self.dispatcher = Dispatcher({}, secret)
        self._sockets: set[_WebSocket] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, port), self)
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)

    def start(self, app: Any) -> "RpcServer":
        """Serve ``app`` (a ``NodeApp``) on a thread of its own."""
        self.aria2 = Aria2(app, notify=self.broadcast)
        self.dispatcher = Dispatcher(self.aria2.methods(), self._secret, unsupported=UNSUPPORTED)
        self.aria2.attach()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rpc-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stop accepting, close every connection and the port; within ``timeout`` seconds."""
        self._stopping.set()
        if self.aria2 is not None:
            self.aria2.detach()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout)
        with self._lock:
            sockets = list(self._sockets)
        for ws in sockets:
            ws.close()
        with self._httpd.sockets_lock:
            open_sockets = list(self._httpd.open_sockets)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    # -- notifications ---------------------------------------------------------------
    def broadcast(self, method: str, params: list) -> None:
        """Send a notification to every open WebSocket (from any thread)."""
        text = notification(method, params)
        with self._lock:
            sockets = list(self._sockets)
        for ws in sockets:
            try:
                ws.send(TextMessage(data=text))
            except OSError:
                self._forget(ws)

    def _remember(self, ws: _WebSocket) -> bool:
        with self._lock:
            if len(self._sockets) >= MAX_SOCKETS:
                return False
            self._sockets.add(ws)
            return True

    def _forget(self, ws: _WebSocket) -> None:
        with self._lock:
            self._sockets.discard(ws)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "swift-rpc"
    #: The headers and the body go out in two writes: with Nagle's algorithm the body
    #: waits for the client's delayed ACK, 40 ms per call on a kept-alive connection.
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("rpc %s: %s", self.address_string(), format % args)

    @property
    def owner(self) -> RpcServer:
        return self.server.owner

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {**_COMMON_HEADERS, "Content-Type": content_type,
                            "Content-Length": str(len(body)), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _cors(self) -> dict:
        origin = self.headers.get("Origin")
        if origin and origin in self.owner.allowed_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                    "Access-Control-Allow-Headers": "Content-Type",
                    "Access-Control-Allow-Methods": "POST, GET, OPTIONS"}
        return {}

    def _refuse(self, refusal: Refusal) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": None,
                           "error": RpcError(refusal.message, INVALID_REQUEST).as_dict()}).encode()
        self.close_connection = True  # an unread body must not be taken for the next request
        self._send(refusal.status, body, "application/json", {"Connection": "close"})

    def _refused(self, *, page: bool = False) -> bool:
        """Refuse the request if the policy says so. ``page``: one of the page's files, which
        holds no data (a link from another site may open it; it cannot be framed)."""
        headers = self._headers()
        if page:
            headers = {k: v for k, v in headers.items() if k not in ("origin", "sec-fetch-site")}
        refusal = check_request(self.command, headers, listen_all=self.owner.listen_all,
                                allowed_origins=self.owner.allowed_origins)
        if refusal is not None:
            log.info("rpc: refused %s %s from %s: %s", self.command, self.path[:100],
                     self.client_address[0], refusal.message)
            self._refuse(refusal)
            return True
        return False

    # -- methods ---------------------------------------------------------------------
    def do_OPTIONS(self) -> None:
        if self._refused():
            return
        self._send(204, b"", "text/plain", self._cors())

    def do_POST(self) -> None:
        if self._refused():
            return
        if self.path.split("?", 1)[0] != "/jsonrpc":
            self.close_connection = True
            self._refuse(Refusal(404, "JSON-RPC is at /jsonrpc"))
            return
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return
        answer = self.owner.dispatcher.handle_obj(body)
        if answer is None:  # notifications only
            self._send(204, b"", "application/json", self._cors())
            return
        failed = isinstance(answer, dict) and "error" in answer
        self._send(400 if failed else 200, json.dumps(answer).encode(), "application/json",
                   self._cors())

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if self._refused(page=path in PAGE_FILES):
            return
        if path == "/jsonrpc":
            if self.headers.get("Upgrade", "").lower() == "websocket":
                self._websocket()
            else:
                self._refuse(Refusal(405, "JSON-RPC over GET is not taken here: POST it to "
                                          "/jsonrpc, or open a WebSocket there"))
            return
        page = PAGE_FILES.get(path)
        if page is None:
            self._refuse(Refusal(404, f"nothing at {path[:100]!r}: the page is at /, "
                                      f"JSON-RPC at /jsonrpc"))
            return
        name, content_type = page
        host = self.headers["Host"].strip()
        if not _HOST_CHARS.fullmatch(host):  # never echo anything else into a header
            host = "127.0.0.1"
        extra = {"Content-Security-Policy": CSP.format(host=host)} if name.endswith(".html") else {}
        self._send(200, _static(name), content_type, extra)

    # -- WebSocket -------------------------------------------------------------------
    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        if self.headers.get("Sec-WebSocket-Version") != "13" or not key:
            self._refuse(Refusal(400, "a WebSocket handshake needs Sec-WebSocket-Version: 13 "
                                      "and a Sec-WebSocket-Key"))
            return
        ws = _WebSocket(self.connection)
        if not self.owner._remember(ws):
            self._refuse(Refusal(503, f"too many WebSockets open (at most {MAX_SOCKETS})"))
            return
        try:
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode())
            self.end_headers()
            self.wfile.flush()
            self._websocket_loop(ws)
        except OSError:
            pass
        finally:
            self.owner._forget(ws)
            self.close_connection = True

    def _websocket_loop(self, ws: _WebSocket) -> None:
        self.connection.settimeout(WS_POLL)
        parts: list[str] = []
        size = 0
        while not self.owner._stopping.is_set():
            try:
                data = self.connection.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return
            for event in ws.receive(data):
                if isinstance(event, TextMessage):
                    size += len(event.data)
                    if size > MAX_MESSAGE:
                        ws.close(1009, f"a message of more than {MAX_MESSAGE} bytes")
                        return
                    parts.append(event.data)
                    if event.message_finished:
                        text, parts, size = "".join(parts), [], 0
                        answer = self.owner.dispatcher.handle(text)
                        if answer is not None:
                            ws.send(TextMessage(data=answer))
                elif isinstance(event, BytesMessage):
                    ws.close(1003, "JSON-RPC messages are text")
                    return
                elif isinstance(event, Ping):
                    ws.send(event.response())
                elif isinstance(event, CloseConnection):
                    ws.send(event.response())
                    return
                elif isinstance(event, Message):
                    continue

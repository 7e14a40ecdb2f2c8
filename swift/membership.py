"""A node's side of discovery: register, heartbeat, unregister, list peers.

Every request opens a fresh short connection: discovery may restart at any
time, and a fresh connection per heartbeat re-registers with the new one
without any reconnect logic. The heartbeat thread also refreshes the list of
peers, so a node whose discovery is down keeps working with the peers it
last knew.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from . import protocol, wire

log = logging.getLogger(__name__)


class DiscoveryError(Exception):
    """Discovery could not be reached or refused the request."""


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    name: str = ""
    slots: int = 2

    @property
    def key(self) -> str:
        return wire.hostport(self.host, self.port)


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` → (host, port); ValueError if malformed."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    value = int(port) if port else default_port
    if not 0 < value < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, value


class DiscoveryClient:
    def __init__(self, host: str, port: int, *, name: str, secret: bytes | None,
                 timeout: float = 5.0):
        self.host, self.port = host, port
        self.name = name
        self.secret = secret
        self.timeout = timeout

    @property
    def address(self) -> str:
        return wire.hostport(self.host, self.port)

    def request(self, msg: object) -> object:
        try:
            with wire.client_connect(self.host, self.port, name=self.name, secret=self.secret,
                                     timeout=self.timeout) as conn:
                conn.send(msg)
                reply = conn.recv()
        except wire.AuthError as exc:
            raise DiscoveryError(f"discovery at {self.address} refused us: {exc}") from exc
        except (OSError, TimeoutError, wire.ConnectionClosed, protocol.ProtocolError) as exc:
            raise DiscoveryError(f"discovery at {self.address} is unreachable: {exc}") from exc
        if isinstance(reply, protocol.Error):
            raise DiscoveryError(f"discovery at {self.address}: {reply.message}")
        return reply

    def list_peers(self) -> list[protocol.PeerInfo]:
        reply = self.request(protocol.ListPeers())
        if not isinstance(reply, protocol.Peers):
            raise DiscoveryError(f"discovery at {self.address} sent {type(reply).__name__}")
        return list(reply.peers)


class Membership:
    """Keeps this node registered while it runs; owns the heartbeat thread."""

    def __init__(self, client: DiscoveryClient, *, host: str, port: int, name: str,
                 slots: int, interval: float = 3.0):
        self.client = client
        self.me = Peer(host, port, name, slots)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._known: list[Peer] = []
        self.registered = False

    def start(self) -> "Membership":
        self._beat(first=True)
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self, first: bool = False) -> None:
        me = self.me
        try:
            reply = self.client.request(protocol.Heartbeat(me.host, me.port, me.name, me.slots))
            if isinstance(reply, protocol.Ok) and reply.lease:
                # renew well inside the lease discovery grants
                self.interval = max(0.2, min(self.interval, reply.lease / 3))
            if not self.registered:
                log.info("registered with discovery at %s as %s", self.client.address, me.key)
            self.registered = True
            self._remember(self.client.list_peers())
        except DiscoveryError as exc:
            if self.registered or first:
                log.warning("%s; working with the %d peers last known", exc, len(self.known_peers()))
            self.registered = False

    def _remember(self, infos: list[protocol.PeerInfo]) -> None:
        with self._lock:
            self._known = [Peer(i.host, i.port, i.name, i.slots) for i in infos]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def known_peers(self) -> list[Peer]:
        with self._lock:
            return list(self._known)

    def peers(self) -> tuple[list[Peer], str | None]:
        """Fresh peers from discovery, else the last known ones with a notice."""
        try:
            self._remember(self.client.list_peers())
            return self.known_peers(), None
        except DiscoveryError as exc:
            return self.known_peers(), f"{exc}; using the {len(self.known_peers())} peers last known"

    def stop(self, unregister: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.client.timeout * 3)
        if unregister:
            try:
                self.client.request(protocol.Unregister(self.me.host, self.me.port))
                log.info("unregistered from discovery")
            except DiscoveryError as exc:
                log.warning("could not unregister: %s", exc)

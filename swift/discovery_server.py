"""Discovery: who is alive on the LAN, as soft state.

Nodes register their reachable ``host:port`` with a lease and renew it with
heartbeats; a node that stops renewing (killed, unplugged) expires after the
lease. A heartbeat from an unknown node registers it, so a restarted
discovery (which keeps nothing on disk) knows every live node again within
one heartbeat interval. Discovery never touches file data.

``Registry`` is the pure core (time is passed in); ``DiscoveryServer`` is the
thin socket shell around it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import protocol, server, wire

log = logging.getLogger(__name__)

#: A node that has not renewed for this long is gone. Nodes heartbeat every
#: third of it, so two lost heartbeats in a row are survived.
DEFAULT_LEASE = 9.0
#: Upper bound on registered nodes: a LAN has dozens, not thousands.
MAX_NODES = 1024


@dataclass
class Entry:
    host: str
    port: int
    name: str
    slots: int
    registered: float
    expires: float


class Registry:
    """The set of live nodes; every method takes ``now`` (monotonic seconds)."""

    def __init__(self, lease: float = DEFAULT_LEASE, max_nodes: int = MAX_NODES):
        self.lease = lease
        self.max_nodes = max_nodes
        self._nodes: dict[tuple[str, int], Entry] = {}

    def renew(self, host: str, port: int, name: str, slots: int, now: float) -> bool:
        """Register or renew; False if the registry is full and the node is new."""
        self.expire(now)
        key = (host, port)
        entry = self._nodes.get(key)
        if entry is None:
            if len(self._nodes) >= self.max_nodes:
                return False
            self._nodes[key] = Entry(host, port, name, slots, now, now + self.lease)
            log.info("node %s (%s) joined", wire.hostport(host, port), name)
        else:
            entry.name, entry.slots, entry.expires = name, slots, now + self.lease
        return True

    def remove(self, host: str, port: int) -> bool:
        gone = self._nodes.pop((host, port), None) is not None
        if gone:
            log.info("node %s left", wire.hostport(host, port))
        return gone

    def expire(self, now: float) -> None:
        for key in [k for k, e in self._nodes.items() if e.expires <= now]:
            log.info("node %s expired", wire.hostport(*key))
            del self._nodes[key]

    def live(self, now: float) -> list[protocol.PeerInfo]:
        self.expire(now)
        return [protocol.PeerInfo(e.host, e.port, e.name, e.slots, round(now - e.registered, 3))
                for e in sorted(self._nodes.values(), key=lambda e: (e.host, e.port))]


def fitting_peers(peers: list[protocol.PeerInfo]) -> protocol.Peers:
    """A Peers answer that fits in one control frame, longest-registered nodes first.

    A crowd of nodes with long names could otherwise make the list too big to
    send, and then nobody could list anyone.
    """
    peers = sorted(peers, key=lambda p: -p.age)
    while True:
        msg = protocol.Peers(peers)
        try:
            if len(protocol.encode_message(msg)) <= protocol.MAX_CONTROL:
                return msg
        except protocol.ProtocolError:
            pass  # too large to encode at all: trim as well
        log.warning("peer list trimmed from %d entries to fit one frame", len(peers))
        peers = peers[: max(0, len(peers) * 9 // 10)]


class DiscoveryService:
    """Answers discovery requests on framed connections."""

    def __init__(self, registry: Registry, clock=time.monotonic):
        self.registry = registry
        self.clock = clock
        self._lock = threading.Lock()

    def answer(self, msg: object) -> object:
        now = self.clock()
        with self._lock:
            if isinstance(msg, (protocol.Register, protocol.Heartbeat)):
                if not self.registry.renew(msg.host, msg.port, msg.name, msg.slots, now):
                    return protocol.Error("full", "discovery is tracking too many nodes")
                return protocol.Ok(self.registry.lease)
            if isinstance(msg, protocol.Unregister):
                self.registry.remove(msg.host, msg.port)
                return protocol.Ok(None)
            if isinstance(msg, protocol.ListPeers):
                return fitting_peers(self.registry.live(now))
            if isinstance(msg, protocol.Ping):
                return protocol.Pong("discovery", 0, len(self.registry.live(now)))
        return protocol.Error("unexpected", f"discovery does not handle {type(msg).__name__}")

    def serve_connection(self, srv: server.FramedServer, conn: wire.Connection) -> None:
        while not srv.stopping.is_set():
            try:
                msg = conn.recv()
            except TimeoutError:
                return  # idle: close
            except protocol.ProtocolError as exc:
                wire.send_error(conn, exc.code, str(exc))
                return
            if isinstance(msg, protocol.DataFrame):
                wire.send_error(conn, "unexpected", "discovery takes no data frames")
                return
            reply = self.answer(msg)
            conn.send(reply)
            if isinstance(reply, protocol.Error):
                return


def make_server(host: str, port: int, *, secret: bytes | None, lease: float = DEFAULT_LEASE,
                idle_timeout: float = 30.0, max_connections: int = 256,
                state_dir: Path | None = None) -> server.FramedServer:
    """Discovery's server; with a ``secret`` it serves TLS only, with its own key from
    ``state_dir`` (default: ``identity.state_dir()``), made at first start."""
    service = DiscoveryService(Registry(lease))
    tls = wire.ServerTLS.load("discovery", state_dir) if secret else None
    srv = server.FramedServer((host, port), name="discovery", secret=secret, tls=tls,
                              idle_timeout=idle_timeout, max_connections=max_connections,
                              serve_connection=service.serve_connection)
    srv.service = service  # type: ignore[attr-defined]
    return srv

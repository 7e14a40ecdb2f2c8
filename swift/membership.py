"""A node's side of discovery: register, heartbeat, unregister, list peers.

Every request opens a fresh short connection: discovery may restart at any
time, and a fresh connection per heartbeat re-registers with the new one
without any reconnect logic. The heartbeat thread also refreshes the list of
peers, so a node whose discovery is down keeps working with the peers it
last knew.

A node that found its discovery by mDNS (or looked for one and found none)
looks again when discovery stops answering (``rediscover``, from
``swift.mdns``): after :data:`REDISCOVER_AFTER` failed heartbeats in a row,
at most every :data:`REDISCOVER_EVERY` seconds. So the start order of the
machines does not matter, and a discovery that comes back on another
machine is followed: soft state on both sides. A node whose address was
taken from the route towards its old discovery (``locate``) takes it again
towards the new one, so it is not registered by an address (loopback, when
it started with the fallback) that peers cannot reach.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from . import protocol, wire
from .addresses import format_hostport
from .errors import DiscoveryError

log = logging.getLogger(__name__)

#: Failed heartbeats in a row before a node looks for its discovery again: one
#: lost heartbeat is a hiccup, two mean discovery is gone (as its lease says too).
REDISCOVER_AFTER = 2
#: Seconds between two looks: each is one multicast query on the LAN (30 nodes
#: looking make 3 small packets a second) and up to ``mdns.BROWSE_WAIT`` of the
#: heartbeat thread's time.
REDISCOVER_EVERY = 10.0


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    name: str = ""
    slots: int = 2

    @property
    def key(self) -> str:
        return format_hostport(self.host, self.port)


class DiscoveryClient:
    def __init__(self, host: str, port: int, *, name: str, secret: bytes | None,
                 timeout: float = 5.0):
        self.host, self.port = host, port
        self.name = name
        self.secret = secret
        self.timeout = timeout

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)

    def request(self, msg: object) -> object:
        try:
            with wire.client_connect(self.host, self.port, name=self.name, secret=self.secret,
                                     timeout=self.timeout) as conn:
                conn.send(msg)
                reply = conn.recv()
        except wire.AuthError as exc:
            # the handshake's message starts with the address it was talking to: said once
            text = str(exc)
            rest = text.removeprefix(f"{self.address} ")
            if rest == text:
                said = f"discovery at {self.address} refused us: {text}"
            elif rest.startswith(("refused", "requires")):  # it refused us
                said = f"discovery at {self.address} {rest}"
            else:  # we refused it: it could not prove it is a member
                said = f"discovery at {self.address} was refused: it {rest}"
            raise DiscoveryError(said) from exc
        except (OSError, TimeoutError, wire.ConnectionClosed, protocol.ProtocolError) as exc:
            text = str(exc)  # "HOST:PORT refused the connection ...": the address said once
            rest = text.removeprefix(f"{self.address} ")
            raise DiscoveryError(f"discovery at {self.address} is unreachable: "
                                 f"{text if rest == text else 'it ' + rest}") from exc
        if isinstance(reply, protocol.Error):
            raise DiscoveryError(f"discovery at {self.address}: {reply.message}")
        return reply

    def list_peers(self) -> list[protocol.PeerInfo]:
        reply = self.request(protocol.ListPeers())
        if not isinstance(reply, protocol.Peers):
            raise DiscoveryError(f"discovery at {self.address} sent {type(reply).__name__}")
        return list(reply.peers)


class PeerLookup:
    """One ``ListPeers`` query, started at once in a thread it owns, so that a
    ``get`` asks discovery while it probes the origin instead of before.

    :meth:`peers` waits for the answer (at most the client's timeouts, and
    not past ``stop``), says once through ``notice`` why the download goes
    alone when it does, and returns the peers (the same list on every call).
    """

    #: Seconds between two looks at ``stop`` while waiting for the answer.
    POLL = 0.1

    def __init__(self, client: DiscoveryClient, notice: Callable[[str], None]):
        self.client = client
        self._notice = notice
        self._found: list[Peer] | None = None
        self._why: str | None = None
        self._answered = threading.Event()
        self._result: list[Peer] | None = None
        self._thread = threading.Thread(target=self._query, name="peer-lookup", daemon=True)
        self._thread.start()

    def _query(self) -> None:
        try:
            self._found = [Peer(i.host, i.port, i.name, i.slots) for i in self.client.list_peers()]
        except DiscoveryError as exc:
            self._why = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the download waiting
            self._why = f"asking discovery at {self.client.address} failed: {exc}"
        finally:
            self._answered.set()

    def peers(self, stop: threading.Event | None = None) -> list[Peer]:
        """The live peers; [] (with a notice) if discovery could not tell."""
        if self._result is not None:
            return list(self._result)
        # connect, TLS and the reply each have the client's timeout; one more for slack
        deadline = time.monotonic() + 4 * self.client.timeout
        while not self._answered.wait(self.POLL):
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                break
        if stop is not None and stop.is_set() and not self._answered.is_set():
            return []  # cancelled while waiting: say nothing, decide nothing
        if not self._answered.is_set():
            self._why = f"discovery at {self.client.address} did not answer"
        found = self._found if self._answered.is_set() else None
        if found is None:
            self._notice(f"{self._why}: downloading alone with several connections")
        elif not found:
            self._notice("no peers known: downloading alone with several connections")
        self._result = found or []
        return list(self._result)

    def close(self, timeout: float = 1.0) -> None:
        """Wait briefly for the query's thread (it ends by its own timeouts anyway)."""
        self._thread.join(timeout)


class Membership:
    """Keeps this node registered while it runs; owns the heartbeat thread."""

    def __init__(self, client: DiscoveryClient, *, host: str, port: int, name: str,
                 slots: int, interval: float = 3.0,
                 rediscover: Callable[[], tuple[str, int] | None] | None = None,
                 locate: Callable[[str], str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self._rediscover = rediscover
        self._locate = locate
        self._clock = clock
        self._failures = 0
        self._looked_at: float | None = None
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
            self._failures = 0
            self._remember(self.client.list_peers())
        except DiscoveryError as exc:
            if self.registered or first:
                log.warning("%s; working with the %d peers last known", exc, len(self.known_peers()))
            self.registered = False
            self._failures += 1
            if self._look_again():
                self._beat()

    def _look_again(self) -> bool:
        """After failed heartbeats, ask ``rediscover`` where discovery is now; True if it
        names another one, which this node then uses."""
        now = self._clock()
        if (self._rediscover is None or self._failures < REDISCOVER_AFTER or self._stop.is_set()
                or (self._looked_at is not None and now - self._looked_at < REDISCOVER_EVERY)):
            return False
        self._looked_at = now
        try:
            found = self._rediscover()
        except Exception as exc:  # noqa: BLE001 - the heartbeat thread must go on
            log.warning("looking for discovery again failed: %s", exc)
            return False
        if found is None or found == (self.client.host, self.client.port):
            return False
        old = self.client.address
        self.client.host, self.client.port = found
        if self._locate is not None:
            self.me = replace(self.me, host=self._locate(found[0]))
        log.warning("discovery at %s does not answer; using discovery at %s (found by mDNS), "
                    "as %s", old, self.client.address, self.me.key)
        return True

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

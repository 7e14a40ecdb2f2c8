"""Discovery announced and found on the LAN by mDNS: the I/O shell around :mod:`swift.dnssd`.

``Announcer`` is owned by a running discovery: it announces ``_swift._tcp``
with the pool's TXT record while discovery runs and withdraws it (DNS-SD
"goodbye" records, TTL 0) and closes its sockets on stop. :func:`browse`
is what a node started without ``--discovery`` does: listen for at most
:data:`BROWSE_WAIT` seconds and take the announcement :func:`dnssd.choose`
picks. :func:`resolve_discovery` is the whole rule for the command line,
with the one line that says which discovery a node uses and why;
:class:`BrowsingClient` runs it inside a ``get``'s peer lookup, and
:class:`Rediscovery` again when a node's discovery stops answering.

Rules:

* **Soft state only.** The announcement lives exactly as long as the
  discovery process (a crashed one ages out of every cache with the
  records' TTL); nothing is written to disk, nothing is remembered by a node
  beyond the address it picked at start.
* **Never on loopback, never a traceback.** mDNS runs on the machine's IPv4
  interfaces other than loopback (``ifaddr``, a dependency of ``zeroconf``).
  A discovery bound to a loopback address is not announced (no other
  machine could reach it). No interface, no multicast route, a missing
  ``zeroconf`` package or any failure of it is one line (a log line for
  the discovery, the node's notice) and the programs go on as without mDNS.
* **Loaded on use.** ``zeroconf`` and ``ifaddr`` are imported only when a
  program announces or browses, so ``--help`` and every command that names
  its discovery start as fast as before.
* **A claim is checked.** Anyone may announce anything, the public
  fingerprint included: :func:`pick` takes the first fitting candidate that
  answers as a discovery (with a secret, after the mutual proof of it).
* **Bounded.** Browsing stops at :data:`BROWSE_WAIT`, or :data:`SETTLE`
  after the first fitting answer; at most :data:`MAX_CHECKS` candidates are
  asked, :data:`CHECK_TIMEOUT` each; the announcer's stop withdraws and
  closes within about a quarter second.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from . import dnssd
from .addresses import format_hostport

log = logging.getLogger(__name__)

#: Seconds a node browses before it falls back to the default discovery. A
#: browser's first query goes out 20-120 ms after it starts and responders
#: answer within 20-120 ms (RFC 6762 sections 5.2 and 6); zeroconf sends a
#: second query about a second later, in case the first was lost. 2.5 s
#: covers both rounds and a busy machine. Measured in the namespace lab: a bare
#: browsing script found the discovery 0.17-0.23 s after it started; node.py
#: printed it 0.5-1.1 s after its start (interpreter and imports included),
#: on the shared two-core machine under a load of 6-12.
BROWSE_WAIT = 2.5
#: Seconds to go on listening after the first fitting answer, so that every
#: discovery of the pool is seen before one is chosen: all responders answer
#: one query within 100 ms of each other (RFC 6762 section 6's 20-120 ms),
#: and a busy machine may add as much again.
SETTLE = 0.25
#: Seconds one announcement's SRV, TXT and address records may take to
#: resolve (they usually come with the first answer, from the cache).
RESOLVE_TIMEOUT = 1.0
#: Fitting candidates a node asks before it stops asking (see :func:`pick`).
MAX_CHECKS = 3
#: Seconds to connect to a candidate and hear it answer a ping: a LAN round
#: trip is a millisecond, the TLS handshake and the proofs with a secret a few.
CHECK_TIMEOUT = 1.0
#: Where a node goes when no discovery is named or found: today's default.
FALLBACK = ("127.0.0.1", 5000)


NOT_INSTALLED = "the zeroconf package is missing: install requirements.txt"


class MdnsUnavailable(Exception):
    """mDNS cannot run here (no interface, no multicast, no zeroconf); the message says why."""


def _quiet_library() -> None:
    """zeroconf logs socket failures with tracebacks; swift says them in one line instead
    (they stay visible with ``-vv``, when swift's own logging is at DEBUG)."""
    level = logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.CRITICAL
    logging.getLogger("zeroconf").setLevel(level)


def lan_interfaces() -> list[tuple[str, int]]:
    """This machine's IPv4 addresses other than loopback, with their prefix lengths.

    MdnsUnavailable if ``ifaddr`` (installed with ``zeroconf``) is missing.
    """
    try:
        import ifaddr
    except ImportError:
        raise MdnsUnavailable(NOT_INSTALLED) from None
    try:
        adapters = ifaddr.get_adapters()
    except Exception as exc:  # noqa: BLE001 - OSError mostly: no interfaces to read
        raise MdnsUnavailable(f"cannot list the network interfaces: {_why(exc)}") from None
    found: list[tuple[str, int]] = []
    for adapter in adapters:
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                found.append((ip.ip, ip.network_prefix))
    return found


def _zeroconf(addresses: list[str]):
    """A Zeroconf instance on ``addresses`` (IPv4 only); MdnsUnavailable on any failure."""
    _quiet_library()
    try:
        from zeroconf import IPVersion, Zeroconf
    except ImportError:
        raise MdnsUnavailable(NOT_INSTALLED) from None
    if not addresses:
        raise MdnsUnavailable("no network interface besides loopback")
    try:
        return Zeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
    except Exception as exc:  # noqa: BLE001 - OSError mostly; any failure is "no mDNS here"
        raise MdnsUnavailable(f"cannot open mDNS sockets: {_why(exc)}") from None


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# -- the discovery's side ---------------------------------------------------------------------
class Announcer:
    """Announces one discovery while it runs; :meth:`stop` withdraws it and closes.

    ``host`` is the address discovery listens on (a wildcard announces every
    LAN address), ``port`` its port, ``pool`` and ``fp`` what
    :func:`dnssd.txt_record` writes. Registration (its probe for a name
    conflict takes about 1.7 s) runs as a task on zeroconf's own event
    loop, so discovery serves at once, and a stop during the probe cancels
    it instead of waiting for it (a blocking ``register_service`` would
    hold the stop for a second more).
    """

    def __init__(self, host: str, port: int, pool: str, fp: str | None, *,
                 machine: str, started: float):
        self.host, self.port, self.pool, self.fp = host, port, pool, fp
        self.machine = machine
        self.started = started
        self._zc = None
        self._info = None
        self._registering = None  # the registration's concurrent.futures.Future
        self._stopping = threading.Event()
        self.announced = threading.Event()

    def start(self) -> "Announcer":
        """Open the mDNS sockets and register in the background; MdnsUnavailable if it cannot."""
        if self.host in ("", "0.0.0.0", "::"):
            addresses = [ip for ip, _ in lan_interfaces()]
        else:
            try:
                addr = ipaddress.ip_address(self.host)
            except ValueError:
                addr = None
            if self.host == "localhost" or (addr is not None and addr.is_loopback):
                raise MdnsUnavailable("it listens on loopback only, which no other machine can reach")
            if addr is None or addr.version != 4:
                raise MdnsUnavailable(f"it listens on {self.host}, and announcements name IPv4 "
                                      f"addresses only; give nodes --discovery")
            addresses = [self.host]
        self._zc = _zeroconf(addresses)
        try:
            import socket

            from zeroconf import ServiceInfo
            name = dnssd.instance_name(self.pool, self.machine, self.port)
            self._info = ServiceInfo(
                dnssd.SERVICE_TYPE, f"{name}.{dnssd.SERVICE_TYPE}",
                addresses=[socket.inet_aton(a) for a in addresses], port=self.port,
                properties=dnssd.txt_record(self.pool, self.fp, self.started),
                server=f"{_label(f'swift-{addresses[0]}-{self.port}')}.local.")
        except Exception as exc:  # noqa: BLE001 - a bad name or address: one line
            self._close()
            raise MdnsUnavailable(f"cannot build the announcement: {_why(exc)}") from None
        import asyncio
        self._registering = asyncio.run_coroutine_threadsafe(self._register(), self._zc.loop)
        self._registering.add_done_callback(self._registered)
        return self

    async def _register(self) -> None:
        announcing = await self._zc.async_register_service(self._info, allow_name_change=True)
        await announcing

    def _registered(self, future) -> None:
        if future.cancelled() or self._stopping.is_set():
            return
        exc = future.exception()
        if exc is not None:  # said in one line, discovery goes on
            log.warning("mDNS: could not announce this discovery (%s); nodes need "
                        "--discovery HOST:PORT", _why(exc))
            return
        self.announced.set()
        log.info("announced by mDNS as %r (pool %s%s)", self._info.name.split("._swift")[0],
                 self.pool, ", with the secret's fingerprint" if self.fp else "")

    def stop(self) -> None:
        """Withdraw the announcement (goodbye records) and close the sockets. Idempotent."""
        self._stopping.set()
        if self._zc is None:
            return
        if self._registering is not None:
            self._registering.cancel()  # still probing: nothing to withdraw yet
        if self.announced.is_set():
            try:
                self._zc.unregister_service(self._info)
                log.info("mDNS announcement withdrawn")
            except Exception as exc:  # noqa: BLE001 - stopping anyway
                log.debug("mDNS: withdrawing failed: %s", _why(exc))
        self._close()

    def _close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is not None:
            try:
                zc.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("mDNS: closing failed: %s", _why(exc))


def _label(text: str) -> str:
    """A host label for the SRV target, letters, digits and ``-`` only.

    Built from the announced address and port, which are unique on a LAN:
    never the machine's own ``HOST.local``, whose records belong to the
    system's mDNS responder (Avahi, Bonjour) and list other addresses.
    """
    clean = "".join(c if c.isascii() and c.isalnum() else "-" for c in text).strip("-")
    return clean[:63] or "swift-discovery"


def announce(host: str, port: int, pool: str, secret: bytes | None, *, machine: str | None = None,
             started: float | None = None) -> Announcer | None:
    """Start announcing a discovery (``machine``: its name in the announcement, default
    the host name); None (after one log line saying why) if it cannot."""
    import socket
    try:
        return Announcer(host, port, pool, dnssd.fingerprint(secret),
                         machine=socket.gethostname() if machine is None else machine,
                         started=time.time() if started is None else started).start()
    except MdnsUnavailable as exc:
        log.info("not announced by mDNS: %s", exc)
        return None


# -- the node's side ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Browse:
    """What one browse saw: every swift announcement it could read, and the one chosen."""

    seen: list[dnssd.Announcement]
    chosen: dnssd.Announcement | None
    seconds: float


def browse(pool: str, fp: str | None, *, wait: float = BROWSE_WAIT, settle: float = SETTLE,
           clock: Callable[[], float] = time.monotonic) -> Browse:
    """Browse ``_swift._tcp`` for at most ``wait`` seconds (``settle`` after the first fitting
    answer); MdnsUnavailable if mDNS cannot run here."""
    interfaces = lan_interfaces()
    zc = _zeroconf([ip for ip, _ in interfaces])
    networks = [f"{ip}/{prefix}" for ip, prefix in interfaces]
    started = clock()
    try:
        from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange
        pending: list[str] = []
        gone: set[str] = set()
        changed = threading.Event()
        lock = threading.Lock()

        def on_change(zeroconf, service_type, name, state_change) -> None:
            with lock:
                if state_change is ServiceStateChange.Removed:
                    gone.add(name)
                else:
                    gone.discard(name)
                    pending.append(name)
            changed.set()

        browser = ServiceBrowser(zc, dnssd.SERVICE_TYPE, handlers=[on_change])
        seen: dict[str, dnssd.Announcement] = {}
        deadline = started + wait
        settling = False
        try:
            while True:
                now = clock()
                if now >= deadline:
                    break
                changed.wait(min(0.05, deadline - now))
                changed.clear()
                with lock:
                    names, pending[:] = list(dict.fromkeys(pending)), []
                    for name in gone:
                        seen.pop(name, None)
                for name in names:
                    info = ServiceInfo(dnssd.SERVICE_TYPE, name)
                    left = max(0.0, deadline - clock())
                    if not info.request(zc, int(1000 * min(RESOLVE_TIMEOUT, left))):
                        continue
                    try:
                        seen[name] = dnssd.parse_announcement(
                            name, info.properties or {}, info.parsed_addresses(), info.port, networks)
                    except ValueError as exc:
                        log.debug("mDNS: skipped %s", exc)
                if not settling and dnssd.choose(seen.values(), pool, fp) is not None:
                    deadline = min(deadline, clock() + settle)  # opens once
                    settling = True
        finally:
            browser.cancel()
        found = list(seen.values())
        return Browse(found, dnssd.choose(found, pool, fp), clock() - started)
    except MdnsUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a library failure: one line, not a traceback
        raise MdnsUnavailable(f"browsing failed: {_why(exc)}") from None
    finally:
        try:
            zc.close()
        except Exception:  # noqa: BLE001
            pass


def check_discovery(host: str, port: int, secret: bytes | None) -> str | None:
    """None if a swift discovery answers a ping at ``host:port`` (with a secret: after
    the mutual proof of it); else the one line that says why not."""
    from . import protocol
    from .membership import DiscoveryClient, DiscoveryError
    client = DiscoveryClient(host, port, name="swift-mdns-check", secret=secret, timeout=CHECK_TIMEOUT)
    try:
        reply = client.request(protocol.Ping())
    except DiscoveryError as exc:
        return str(exc)
    if not (isinstance(reply, protocol.Pong) and reply.name == "discovery"):
        return f"{client.address} answered, but not as a discovery"
    return None


@dataclass(frozen=True)
class Pick:
    """The discovery :func:`pick` took (None: none fits), whether it answered, and why
    each candidate asked before it did not."""

    chosen: dnssd.Announcement | None
    answered: bool
    passed: list[str]


def pick(seen: list[dnssd.Announcement], pool: str, secret: bytes | None) -> Pick:
    """The discovery to use among what a browse saw.

    An announcement is only a claim (anyone may copy the public fingerprint),
    so the fitting ones are asked in :func:`dnssd.rank`'s order, at most
    :data:`MAX_CHECKS` of them, and the first that answers as a discovery
    (with a secret: proves it holds it) is taken. If none answers, the first
    is taken all the same: the pool's discovery may be starting, and the
    heartbeats will reach it when it is up.
    """
    ranked = dnssd.rank(seen, pool, dnssd.fingerprint(secret))
    passed: list[str] = []
    for candidate in ranked[:MAX_CHECKS]:
        why = check_discovery(candidate.host, candidate.port, secret)
        if why is None:
            return Pick(candidate, True, passed)
        passed.append(why)
    return Pick(ranked[0] if ranked else None, False, passed)


class Rediscovery:
    """What a node that browsed at start calls when its discovery stops answering
    (``membership.Membership``'s ``rediscover``): the address of the pool's discovery
    now, or None (nothing found, or mDNS unavailable: said once in the log)."""

    def __init__(self, pool: str, secret: bytes | None, wait: float = BROWSE_WAIT):
        self.pool, self.secret, self.wait = pool, secret, wait
        self._said = False

    def __call__(self) -> tuple[str, int] | None:
        try:
            seen = browse(self.pool, dnssd.fingerprint(self.secret), wait=self.wait).seen
            chosen = pick(seen, self.pool, self.secret).chosen
        except MdnsUnavailable as exc:
            if not self._said:
                log.warning("mDNS is unavailable here (%s): cannot look for discovery again", exc)
                self._said = True
            return None
        return (chosen.host, chosen.port) if chosen is not None else None


class BrowsingClient:
    """A ``membership.DiscoveryClient`` for a ``get`` without ``--discovery``: the browse
    happens on first use, in ``membership.PeerLookup``'s thread, so it runs while the
    origin is probed instead of before. The line naming the discovery goes to ``notice``.
    """

    def __init__(self, *, pool: str, secret: bytes | None, enabled: bool, name: str,
                 notice: Callable[[str], None], timeout: float = 5.0):
        self.pool, self.secret, self.enabled, self.name = pool, secret, enabled, name
        self.timeout = timeout
        self._notice = notice
        self._client = None

    @property
    def address(self) -> str:
        return self._client.address if self._client is not None else f"the discovery of pool {self.pool}"

    def list_peers(self):
        """The live peers, as ``DiscoveryClient.list_peers`` (DiscoveryError the same way)."""
        if self._client is None:
            from .membership import DiscoveryClient
            where, line = resolve_discovery(None, "", pool=self.pool, secret=self.secret,
                                            enabled=self.enabled)
            self._notice(line)
            self._client = DiscoveryClient(*where, name=self.name, secret=self.secret,
                                           timeout=self.timeout)
        return self._client.list_peers()


def resolve_discovery(given: tuple[str, int] | None, source: str, *, pool: str,
                      secret: bytes | None, enabled: bool,
                      wait: float = BROWSE_WAIT) -> tuple[tuple[str, int], str]:
    """The discovery a node uses, and the one line that says which and why.

    ``given``: the address from ``--discovery`` or ``$SWIFT_DISCOVERY``
    (``source`` names which), used as it is; None: browse for ``pool``
    (unless ``enabled`` is False), else :data:`FALLBACK`.
    """
    if given is not None:
        return given, f"using discovery at {format_hostport(*given)} (from {source})"
    fallback = format_hostport(*FALLBACK)
    advice = "on a network without multicast, give --discovery HOST:PORT"
    if not enabled:
        return FALLBACK, f"using discovery at {fallback} (the default; mDNS is off)"
    try:
        result = browse(pool, dnssd.fingerprint(secret), wait=wait)
    except MdnsUnavailable as exc:
        return FALLBACK, f"mDNS is unavailable here ({exc}): using discovery at {fallback}; {advice}"
    taken = pick(result.seen, pool, secret)
    chosen = taken.chosen
    if chosen is not None:
        others = len(result.seen) - 1
        more = f"; {others} other announcement{'s' if others != 1 else ''} seen" if others else ""
        if not taken.answered:
            more += f"; it does not answer yet: {taken.passed[0]}"
        elif taken.passed:
            n = len(taken.passed)
            more += f"; passed over {n} that did not answer as a discovery of the pool"
        return (chosen.host, chosen.port), (
            f"using discovery at {format_hostport(chosen.host, chosen.port)} "
            f"(found by mDNS: pool {pool}{more})")
    why = dnssd.explain_miss(result.seen, pool, dnssd.fingerprint(secret))
    return FALLBACK, (f"no discovery of pool {pool} answered mDNS within {wait:g} s"
                      f"{f' ({why})' if why else ''}: using discovery at {fallback}; {advice}")
